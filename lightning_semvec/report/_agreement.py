"""How far a layer's vectors explain what the network does, in numbers and plain sentences.

A layer's semantic similarity (the cosine of its neurons' vectors) is held against a reference
over all pairs of its alive neurons, with
:func:`~lightning_semvec.functional.agreement.similarity_agreement` (Spearman rank correlation
over the pairs, and the overlap of the :data:`TOP_PAIRS` most similar pairs with the
reference's highest, against chance):

- every layer whose knowledge carries ``class_means``: how alike its neurons' class profiles
  are (:func:`profile_agreement`);
- the logits (the most telling layer with one neuron per class), when the caller gives the
  network's confusion on held-out data: how often it mistakes one class for the other
  (:func:`confusion_agreement`, :func:`checked_confusion`).

Each comparison gets a verdict by :data:`AGREEMENT_RULE`, so the page says where the vectors
explain and where they do not from its own numbers.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_semvec.errors import SemvecTypeError, SemvecValueError
from lightning_semvec.functional.agreement import (
    SimilarityAgreement,
    class_profile_similarity,
    similarity_agreement,
    symmetric_confusion,
)
from lightning_semvec.knowledge import StaticKnowledge
from lightning_semvec.report._neighbours import class_aligned, class_names_of

__all__ = [
    "AGREEMENT_RULE",
    "TOP_PAIRS",
    "Agreement",
    "agreement_sentence",
    "checked_confusion",
    "confusion_agreement",
    "explanation_block",
    "logits_layer",
    "profile_agreement",
    "profiles_of",
    "verdict",
]

#: Pairs in the top-pair overlap (and in the demo's look-alike table).
TOP_PAIRS = 15
# The verdict's thresholds (AGREEMENT_RULE says them in words).
_EXPLAIN_SPEARMAN, _PARTLY_SPEARMAN, _CHANCE_P = 0.4, 0.2, 0.01

#: The verdict rule in words, for the report's "About this file" section.
AGREEMENT_RULE = (
    f"The vectors explain a reference when the rank correlation over all pairs (Spearman) is at "
    f"least {_EXPLAIN_SPEARMAN} and their {TOP_PAIRS} most alike pairs share more pairs with the "
    f"reference's {TOP_PAIRS} highest than chance gives (drawing {TOP_PAIRS} pairs at random "
    f"shares as many or more with probability below {_CHANCE_P}, hypergeometric); they explain "
    f"it in part when one of the two holds or the Spearman correlation is at least "
    f"{_PARTLY_SPEARMAN}; otherwise they do not explain it."
)


@dataclass(frozen=True)
class Agreement:
    """One layer's vectors held against one reference.

    Attributes:
        layer: the layer's name.
        reference: ``"confusion"`` (the network's held-out mistakes) or ``"profiles"`` (its
            alive neurons' class profiles).
        result: the numbers, or ``None`` when there are too few pairs (or no mistakes).
        neurons: the neurons compared (alive ones).
        matrix: the ``(N, N)`` reference (symmetric confusion rates or profile correlation).
    """

    layer: str
    reference: str
    result: SimilarityAgreement | None
    neurons: int
    matrix: Tensor


def _alive(knowledge: StaticKnowledge, layer: str) -> Tensor:
    stats = knowledge.statistics(layer)
    n = knowledge[layer].num_neurons
    return ~stats["dead"].bool() if "dead" in stats else torch.ones(n, dtype=torch.bool)


def profile_agreement(knowledge: StaticKnowledge, layer: str, top: int = TOP_PAIRS) -> SimilarityAgreement | None:
    """Agreement of a layer's semantic similarity with its alive neurons' class profiles (the
    ``class_means`` the knowledge file carries); ``None`` without them or with too few alive
    neurons (fewer than ``top`` pairs).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> means = torch.randn(5, 8, generator=g)
        >>> knowledge = StaticKnowledge.from_vectors(
        ...     {"fc": means.T}, statistics={"fc": {"class_means": means}})
        >>> round(profile_agreement(knowledge, "fc", top=5).spearman, 2) > 0.5
        True
    """
    entry = knowledge.layers[layer]
    if "class_means" not in entry.statistics:
        return None
    profiles = class_profile_similarity(entry.statistics["class_means"])
    alive = ~torch.isnan(profiles.diagonal()) & _alive(knowledge, layer)
    pairs = int(alive.sum()) * (int(alive.sum()) - 1) // 2
    if pairs < max(3, top):
        return None
    return similarity_agreement(knowledge.semantic_similarity(layer), profiles, top_k=top, keep=alive)


def logits_layer(knowledge: StaticKnowledge, ranked: Sequence[str]) -> str | None:
    """The first of the ``ranked`` layer names with one neuron per class (neuron ``i`` is class
    ``i``: the logits), or ``None``."""
    for name in ranked:
        names = class_names_of(knowledge.class_names, knowledge[name].num_classes)
        if class_aligned(knowledge[name].num_neurons, names):
            return name
    return None


def checked_confusion(
    confusion: object, knowledge: StaticKnowledge, ranked: Sequence[str]
) -> tuple[str, Tensor] | None:
    """``(logits layer, float64 CPU copy)`` of a caller's ``(C, C)`` confusion counts, ``None``
    for ``None``, or a one-line error: not a real tensor, not square, negative or not finite,
    no layer with one neuron per class, or ``C`` not that layer's class count."""
    if confusion is None:
        return None
    if not isinstance(confusion, Tensor) or confusion.dtype == torch.bool or confusion.is_complex():
        what = type(confusion).__name__ if not isinstance(confusion, Tensor) else f"a {confusion.dtype} tensor"
        raise SemvecTypeError(
            f"confusion must be a (C, C) tensor of counts (rows: true class, columns: prediction), got {what}."
        )
    shape = tuple(confusion.shape)
    if confusion.dim() != 2 or shape[0] != shape[1] or shape[0] < 2:
        raise SemvecValueError(
            f"confusion must be a square (C, C) matrix of counts with C >= 2 (rows: true class, "
            f"columns: prediction), got shape {shape}."
        )
    counts = confusion.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()):
        raise SemvecValueError(
            "confusion must hold finite counts >= 0 (held-out predictions per true class); it has "
            f"{int((~torch.isfinite(counts) | (counts < 0)).sum())} negative or non-finite entries."
        )
    layer = logits_layer(knowledge, ranked)
    if layer is None:
        raise SemvecValueError(
            "confusion was given, but no learned layer of the knowledge file has one neuron per "
            "class (the logits) to hold it against; leave confusion out."
        )
    classes = knowledge[layer].num_neurons
    if shape[0] != classes:
        raise SemvecValueError(
            f"confusion is {shape[0]} x {shape[0]}, but the logits layer {layer!r} has {classes} "
            f"classes: pass the {classes} x {classes} confusion of the network that was exported."
        )
    return layer, counts


def confusion_agreement(
    knowledge: StaticKnowledge, layer: str, counts: Tensor, top: int = TOP_PAIRS
) -> Agreement:
    """The logits' semantic similarity against the network's symmetrised held-out confusion
    (:func:`~lightning_semvec.functional.agreement.symmetric_confusion`) over the pairs of
    alive classes; no result with fewer than ``top`` pairs or no mistake among them."""
    mistaken = symmetric_confusion(counts)
    alive = _alive(knowledge, layer)
    keep = alive[:, None] & alive[None, :]
    pairs = int(alive.sum()) * (int(alive.sum()) - 1) // 2
    result = None
    if pairs >= max(3, top) and bool((mistaken[keep] > 0).any()):
        result = similarity_agreement(knowledge.semantic_similarity(layer), mistaken, top_k=top, keep=alive)
    return Agreement(layer, "confusion", result, int(alive.sum()), mistaken)


def profiles_of(knowledge: StaticKnowledge, layer: str) -> Agreement | None:
    """:func:`profile_agreement` of ``layer`` as an :class:`Agreement`; ``None`` without
    ``class_means``."""
    stats = knowledge.statistics(layer)
    if "class_means" not in stats:
        return None
    profiles = class_profile_similarity(stats["class_means"])
    alive = int((~torch.isnan(profiles.diagonal()) & _alive(knowledge, layer)).sum())
    return Agreement(layer, "profiles", profile_agreement(knowledge, layer), alive, profiles)


def _shared(result: SimilarityAgreement) -> int:
    return round(result.top_overlap * result.top_k)


def verdict(result: SimilarityAgreement | None) -> str:
    """``"explain"``, ``"explain in part"`` or ``"do not explain"`` by :data:`AGREEMENT_RULE`
    (``""`` without a result).

    Example:
        >>> from lightning_semvec.functional.agreement import SimilarityAgreement
        >>> none = torch.zeros(0, 2, dtype=torch.long)
        >>> verdict(SimilarityAgreement(0.5, 0.4, 0.01, 15, 1500, none, none))
        'explain'
        >>> verdict(SimilarityAgreement(0.1, 0.0, 0.01, 15, 1500, none, none))
        'do not explain'
    """
    if result is None:
        return ""
    from scipy.stats import hypergeom  # imported here: `semvec report --help` loads torch alone

    # P(a random draw of top_k of the pairs shares >= shared with the reference's top_k)
    shared = _shared(result)
    beats_chance = float(hypergeom.sf(shared - 1, result.pairs, result.top_k, result.top_k)) < _CHANCE_P
    rank = result.spearman if math.isfinite(result.spearman) else -math.inf
    if rank >= _EXPLAIN_SPEARMAN and beats_chance:
        return "explain"
    if rank >= _PARTLY_SPEARMAN or beats_chance:
        return "explain in part"
    return "do not explain"


def _chip(text: str) -> str:
    return f'<span class="chip">{html.escape(text)}</span>'


def _pairs(pairs: Sequence[tuple[int, int]], names: Sequence[str], values: Tensor, percent: bool) -> str:
    def value(i: int, j: int) -> str:
        v = float(values[i, j])
        return f"{100 * v:.1f}%" if percent else f"{v:+.2f}"

    return ", ".join(f'{_chip(names[i])}/{_chip(names[j])} <span class="sim">{value(i, j)}</span>'
                     for i, j in pairs)


def agreement_sentence(agreement: Agreement, names: Sequence[str], *, where: bool = False) -> str:
    """A paragraph in plain words: the numbers, the verdict and, with ``where``, the pairs
    where the vectors and the reference agree and the reference's pairs the vectors miss
    (``names``: the layer's short neuron names)."""
    a, result = agreement, agreement.result
    confusion = a.reference == "confusion"
    if result is None:
        what = "the network's mistakes on held-out data" if confusion else (
            f"its {a.neurons} alive neurons' class profiles")
        enough = a.neurons * (a.neurons - 1) // 2 >= TOP_PAIRS
        why = ("it made no mistake between alive classes" if confusion and enough
               else f"{a.neurons} alive neurons give fewer than {TOP_PAIRS} pairs")
        return (f'<p class="explain" data-reference="{a.reference}">Against {what}: not measured '
                f"({why}).</p>")
    rank = (f"Spearman {result.spearman:+.2f}" if math.isfinite(result.spearman)
            else "no rank correlation (the reference is constant)")
    reference = ("how often the network confuses two classes on held-out data" if confusion
                 else f"how alike the class profiles of two of its {a.neurons} alive neurons are")
    high = "most confused" if confusion else "with the most alike profiles"
    text = (f"<b>The vectors {verdict(result)} {_says(a)}:</b> {rank} between how alike two "
            f"vectors are and {reference} ({result.pairs} pairs); {_shared(result)} of the "
            f"{result.top_k} most alike pairs are among the {result.top_k} {high} (chance: "
            f"{result.chance_overlap * result.top_k:.2f}).")
    if where:
        top = [tuple(p) for p in result.top_pairs.tolist()]
        ref = [tuple(p) for p in result.reference_pairs.tolist()]
        both = [p for p in ref if p in set(top)]
        missed = [p for p in ref if p not in set(top)]
        agree = "alike and often confused" if confusion else "alike vectors and profiles"
        miss = ("often confused, yet not among the most alike" if confusion
                else "alike profiles, yet not among the most alike vectors")
        if both:
            text += f" Where they explain: {agree}: {_pairs(both, names, a.matrix, confusion)}."
        if missed:
            more = f" and {len(missed) - 8} more" if len(missed) > 8 else ""
            text += f" Where they do not: {miss}: {_pairs(missed[:8], names, a.matrix, confusion)}{more}."
    return (f'<p class="explain" data-reference="{a.reference}" data-spearman="{result.spearman!r}" '
            f'data-shared="{_shared(result)}" data-pairs="{result.pairs}">{text}</p>')


def _says(agreement: Agreement) -> str:
    return ("which classes the network confuses" if agreement.reference == "confusion"
            else "which neurons respond to the same classes")


def explanation_block(
    agreements: dict[str, list[Agreement]],
    lead: str,
    lead_names: Sequence[str],
    slugs: dict[str, str],
    *,
    logits_without_confusion: bool,
) -> str:
    """The first screen's answer to "do the vectors explain what the network does?": the
    ``lead`` layer's comparisons in full (its confusion with the pairs where the vectors
    explain and where they do not), then one line per other layer, linked to its section
    (``slugs``: anchors by layer name). ``""`` when nothing was measured."""
    lines = []
    for a in agreements.get(lead, []):
        lines.append(agreement_sentence(a, lead_names, where=a.reference == "confusion"))
    others = []
    for name, found in agreements.items():
        for a in found:
            if name == lead or a.result is None:
                continue
            r = a.result
            rank = f"Spearman {r.spearman:+.2f}" if math.isfinite(r.spearman) else "no rank correlation"
            others.append(
                f'<li><a href="#{slugs[name]}">{html.escape(name)}</a>: the vectors {verdict(r)} '
                f"{_says(a)} ({rank} over {r.pairs} pairs; {_shared(r)} of the top {r.top_k} "
                f"pairs shared, chance {r.chance_overlap * r.top_k:.2f}).</li>")
    if not lines and not others:
        return ""
    if logits_without_confusion:
        lines.append('<p class="small">Give the network\'s held-out confusion '
                     "(<code>write_report(..., confusion=...)</code>) to hold the logits against "
                     "its mistakes.</p>")
    listed = f'<ul class="others">{"".join(others)}</ul>' if others else ""
    return (f'<div class="explain" id="explain"><h3>Do the vectors explain what the network '
            f'does?</h3>{"".join(lines)}{listed}</div>')
