"""Which layer says the most: the order in which the report shows a knowledge file's layers.

The rule (:data:`RANKING_RULE`, printed at the end of every report): each learned layer scores

    score = mean class selectivity x max(fidelity, 0)

where *fidelity* is the layer's held-out fidelity stored in the file (``extra["fidelity/<layer>"]``:
the Spearman correlation between the vectors' similarity and the activation similarity of the
last analysed validation epoch; in-sample for files of ``embed_neurons``) and *mean class
selectivity* the mean of ``selectivity`` over all the layer's neurons, a dead neuron counting 0
(it says nothing: a layer of 64 neurons of which 45 are dead says less than its 19 alive ones
alone would suggest). A factor the file does not hold is left out of the product; a layer with
neither has no score. Layers are shown by
score, highest first, then those without one; ties keep the file's order. A layer whose neurons
respond to classes (high selectivity) and whose vectors say how they co-fire (high fidelity)
comes first: usually the logits.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from lightning_semvec.knowledge import StaticKnowledge

__all__ = ["RANKING_RULE", "LayerScore", "rank_layers"]

#: The ranking rule in words, for the report's "About this file" section.
RANKING_RULE = (
    "Layers are shown in order of score = mean class selectivity (over all neurons, a dead one "
    "counting 0) x "
    "max(fidelity, 0), highest first; fidelity is the layer's held-out fidelity stored in the "
    "file (Spearman correlation of semantic and activation similarity: on the validation data "
    "for files the callback exported, in-sample for embedded files). A factor the file does not hold is left "
    "out; layers with neither come last, in file order."
)


@dataclass(frozen=True)
class LayerScore:
    """One learned layer's place in the report.

    Attributes:
        name: the layer's name.
        slug: its anchor and figure-file prefix (file position and a safe, bounded name).
        neurons: ``N``.
        dead: dead neurons, or ``None`` when the file does not say.
        fidelity: the stored fidelity, or NaN.
        selectivity: mean class selectivity of its neurons (dead ones count 0), or NaN.
        score: the ranking score, or NaN (no fidelity and no selectivity).
    """

    name: str
    slug: str
    neurons: int
    dead: int | None
    fidelity: float
    selectivity: float
    score: float


def _stored_fidelity(knowledge: StaticKnowledge, name: str) -> float:
    """``extra["fidelity/<name>"]`` as a finite float, NaN when absent or unreadable."""
    try:
        value = float(knowledge.extra.get(f"fidelity/{name}", "nan"))
    except ValueError:  # free-form metadata: a file may hold anything there
        return math.nan
    return value if math.isfinite(value) else math.nan


def _mean_selectivity(knowledge: StaticKnowledge, name: str) -> float:
    """Mean selectivity over the neurons, dead ones counting 0; values outside ``[0, 1]``
    (older files) are left out. NaN without any value."""
    stats = knowledge.statistics(name)
    if "selectivity" not in stats:
        return math.nan
    values = stats["selectivity"]
    keep = (values >= 0) & (values <= 1 + 1e-6)  # older files hold values outside: meaningless
    if "dead" in stats:
        values = values.masked_fill(stats["dead"], 0.0)
        keep |= stats["dead"]
    return float(values[keep].clamp(max=1.0).mean()) if bool(keep.any()) else math.nan


def rank_layers(knowledge: StaticKnowledge) -> list[LayerScore]:
    """The learned layers of ``knowledge``, most telling first (the module's rule).

    Example:
        >>> import torch
        >>> knowledge = StaticKnowledge.from_vectors(
        ...     {"conv": torch.randn(4, 2), "fc": torch.randn(3, 2)},
        ...     statistics={"conv": {"selectivity": torch.full((4,), 0.1)},
        ...                 "fc": {"selectivity": torch.full((3,), 0.5)}},
        ...     extra={"fidelity/conv": "0.9", "fidelity/fc": "0.8"})
        >>> [(s.name, round(s.score, 2)) for s in rank_layers(knowledge)]
        [('fc', 0.4), ('conv', 0.09)]
    """
    scores = []
    for position, name in enumerate(knowledge.layer_names):
        if not knowledge[name].learned:
            continue  # its vectors are their random start (the page's facts name it)
        stats = knowledge.statistics(name)
        fidelity = _stored_fidelity(knowledge, name)
        selectivity = _mean_selectivity(knowledge, name)
        kept_fidelity = math.nan if math.isnan(fidelity) else max(fidelity, 0.0)
        factors = [f for f in (selectivity, kept_fidelity) if not math.isnan(f)]
        score = math.prod(factors) if factors else math.nan
        # The position keeps names apart; 80 characters keep a file name within every file
        # system's limit, however long the layer's name.
        slug = f"{position:02d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', name)[:80]}"
        dead = int(stats["dead"].sum()) if "dead" in stats else None
        scores.append(LayerScore(name, slug, knowledge[name].num_neurons, dead, fidelity,
                                 selectivity, score))
    # Sorted is stable: ties and unscored layers keep the file's order.
    return sorted(scores, key=lambda s: (math.isnan(s.score), -s.score if s.score == s.score
                                         else 0.0))
