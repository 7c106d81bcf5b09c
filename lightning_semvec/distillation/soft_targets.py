"""Class-level soft targets from a knowledge file: one target distribution per class.

Static soft targets give a sample of class ``y`` the distribution
``softmax(scores[y] / temperature)``, the same for every sample of that class: no
sample-by-sample guidance, and the teacher is never run. The scores come from one teacher
layer with a neuron per class (the logits), read from the knowledge in one of two ways
(:data:`SOFT_TARGET_SOURCES`):

- ``"similarity"``: the semantic similarity of the layer's vectors, ``(C, C)`` in
  ``[-1, 1]``: which logit neurons fire together over the data.
- ``"class_means"``: the teacher's mean logits per class on held-out data, the
  ``class_means`` statistic ``(C, C)`` of the layer (row ``y``: the mean logit of every
  class over the validation samples of class ``y``). ``softmax(class_means[y] / T)`` is
  a class-level version of Hinton's soft targets.
- ``"auto"`` (the default of :class:`~lightning_semvec.StaticDistillationModule`):
  ``"class_means"`` when the knowledge carries them, else no soft targets, with a warning
  that says why.

Each source has its own default temperature (:data:`DEFAULT_TEMPERATURES`), the best of the
measured ones in ``docs/results.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from lightning_semvec._utils.checks import check_choice, check_number
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.knowledge import StaticKnowledge

__all__ = [
    "DEFAULT_TEMPERATURES",
    "SOFT_TARGET_SOURCES",
    "SoftTargetPlan",
    "SoftTargetSource",
    "pick_soft_target_layer",
    "plan_soft_targets",
    "soft_target_scores",
]

SoftTargetSource = Literal["auto", "similarity", "class_means"]
SOFT_TARGET_SOURCES: tuple[str, ...] = ("auto", "similarity", "class_means")
#: The temperature of each source when none is given: similarities lie in ``[-1, 1]``, mean
#: logits spread over tens of units.
DEFAULT_TEMPERATURES: dict[str, float] = {"similarity": 0.5, "class_means": 8.0}


@dataclass(frozen=True)
class SoftTargetPlan:
    """What the soft-target term will use: ``probs`` ``(C, C)`` (row ``y``: the targets of
    class ``y``) or ``None`` (no term), and a ``note`` to warn with when ``"auto"`` left it off."""

    layer: str | None = None
    source: str | None = None
    temperature: float | None = None
    probs: Tensor | None = None
    note: str | None = None


def pick_soft_target_layer(
    knowledge: StaticKnowledge, layer_map: Mapping[str, str], chosen: str | None, num_classes: int
) -> str:
    """``chosen``, or the first teacher layer of ``layer_map`` then of the knowledge with one
    neuron per class; a ``SemvecValueError`` that says what the knowledge has otherwise."""
    if chosen is not None:
        if chosen not in knowledge:
            raise SemvecValueError(
                f"soft_target_layer {chosen!r} is not a layer of the knowledge "
                f"({knowledge.layer_names})."
            )
        if knowledge[chosen].num_neurons != num_classes:
            raise SemvecValueError(
                f"soft_target_layer {chosen!r} has {knowledge[chosen].num_neurons} neurons; "
                f"soft targets need one neuron per class ({num_classes})."
            )
        return chosen
    for layer in list(layer_map.values()) + knowledge.layer_names:
        if layer in knowledge and knowledge[layer].num_neurons == num_classes:
            return layer
    raise SemvecValueError(
        f"Soft targets need a teacher layer with one neuron per class ({num_classes}), "
        "such as the logits; the knowledge has "
        + ", ".join(f"{k.name!r} ({k.num_neurons})" for k in knowledge.layers.values())
        + ". Export the teacher's logit layer or set soft_targets=0."
    )


def plan_soft_targets(
    knowledge: StaticKnowledge,
    layer_map: Mapping[str, str],
    layer: str | None,
    num_classes: int,
    weight: float,
    source: str,
    temperature: float | None,
) -> SoftTargetPlan:
    """Resolve the soft-target options of :class:`~lightning_semvec.StaticDistillationModule`.

    An explicit ``source`` that cannot be met is an error; ``"auto"`` falls back to no soft
    targets with a ``note`` (a teacher exported without validation statistics, or without
    its logit layer).

    Example:
        >>> knowledge = StaticKnowledge.from_vectors({"logits": torch.eye(3)})
        >>> plan_soft_targets(knowledge, {}, None, 3, 1.0, "auto", None).probs is None
        True
        >>> plan_soft_targets(knowledge, {}, None, 3, 1.0, "similarity", None).probs.shape
        torch.Size([3, 3])
    """
    check_choice("soft_target_source", source, SOFT_TARGET_SOURCES)
    if temperature is not None:
        check_number("soft_target_temperature", temperature, positive=True)
    if weight == 0:
        return SoftTargetPlan()
    if source == "auto":
        explicit = layer is not None  # a layer the user named must be right
        try:
            layer = pick_soft_target_layer(knowledge, layer_map, layer, num_classes)
        except SemvecValueError as error:
            if explicit:
                raise
            return SoftTargetPlan(note=f"StaticDistillationModule: no soft targets: {error}")
        if "class_means" not in knowledge.statistics(layer):
            return SoftTargetPlan(note=(
                "StaticDistillationModule: no soft targets: the knowledge has no class statistics "
                f"for layer {layer!r} (the teacher's callback ran no validation analysis with "
                "labels). Export the knowledge after a validation pass to have them, pass "
                "soft_target_source='similarity', or soft_targets=0 to silence this."))
        try:
            scores = soft_target_scores(knowledge, layer, "class_means")
        except SemvecValueError as error:  # e.g. a validation pass that missed some classes
            return SoftTargetPlan(note=f"StaticDistillationModule: no soft targets: {error}")
        source = "class_means"
    else:
        layer = pick_soft_target_layer(knowledge, layer_map, layer, num_classes)
        if source == "similarity" and not knowledge[layer].learned:
            raise SemvecValueError(
                f"soft_target_source='similarity' reads the vectors of layer {layer!r}, which "
                "learned nothing (learned=False in the knowledge: its vectors are a random "
                "start): use soft_target_source='class_means' or another layer.")
        scores = soft_target_scores(knowledge, layer, source)  # type: ignore[arg-type]  # 'auto' resolved above
    tau = DEFAULT_TEMPERATURES[source] if temperature is None else float(temperature)
    return SoftTargetPlan(layer, source, tau, torch.softmax(scores / tau, dim=1))


def soft_target_scores(knowledge: StaticKnowledge, layer: str, source: Literal["similarity", "class_means"]) -> Tensor:
    """The ``(C, C)`` scores whose row ``y``, over a temperature, gives class ``y``'s targets.

    Args:
        knowledge: the teacher's knowledge.
        layer: a layer of ``knowledge`` with one neuron per class.
        source: ``"similarity"`` or ``"class_means"`` (see the module's docstring).

    Returns:
        float32 ``(C, C)`` scores (not yet divided by a temperature).

    Raises:
        SemvecValueError: ``"class_means"`` for a layer whose knowledge has no class
            statistics, or a class with no validation samples.

    Example:
        >>> knowledge = StaticKnowledge.from_vectors({"logits": torch.eye(3)})
        >>> soft_target_scores(knowledge, "logits", "similarity").shape
        torch.Size([3, 3])
    """
    if source == "similarity":
        return knowledge.semantic_similarity(layer).float()
    statistics = knowledge.statistics(layer)
    means = statistics.get("class_means")
    if means is None:
        raise SemvecValueError(
            f"soft_target_source='class_means' needs the teacher's mean logits per class, but "
            f"the knowledge has no class statistics for layer {layer!r}. Export the knowledge "
            "from a callback whose validation analysis ran with labels (the default "
            "AnalysisOptions, with a validation loader and class labels), or use "
            "soft_target_source='similarity'."
        )
    counts = statistics.get("class_counts")
    if counts is not None and bool((counts <= 0).any()):
        missing = [int(c) for c in torch.nonzero(counts <= 0).flatten()]
        raise SemvecValueError(
            f"The knowledge's class statistics of layer {layer!r} saw no validation samples of "
            f"classes {missing}, so they have no mean logits: export the teacher's knowledge "
            "after a validation pass that holds every class, or use "
            "soft_target_source='similarity'."
        )
    return means.float()
