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
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lightning_semvec.errors import SemvecValueError
from lightning_semvec.knowledge import StaticKnowledge

__all__ = ["SOFT_TARGET_SOURCES", "SoftTargetSource", "soft_target_scores"]

SoftTargetSource = Literal["similarity", "class_means"]
SOFT_TARGET_SOURCES: tuple[str, ...] = ("similarity", "class_means")


def soft_target_scores(knowledge: StaticKnowledge, layer: str, source: SoftTargetSource) -> Tensor:
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
