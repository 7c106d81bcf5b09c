"""Layers whose vectors learned nothing: every update skipped (a constant output, one neuron).

The callback warns of them once, at an epoch's end, and its knowledge marks them
``learned=False`` (:attr:`~lightning_semvec.knowledge.LayerKnowledge.learned`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lightning_semvec._utils.warning_cache import WarningCache
from lightning_semvec.knowledge import StaticKnowledge
from lightning_semvec.vectors.semantic_vectors import SemanticVectors

__all__ = ["unlearned_layers", "warn_of_unlearned_layers"]


def unlearned_layers(vectors: SemanticVectors, loaded: StaticKnowledge | None) -> list[str]:
    """The layers whose vectors learned nothing: every update skipped since their seeded start
    (:meth:`~lightning_semvec.SemanticVectors.unlearned_layers`), or since they were resumed
    from knowledge that marked them so (and they have not moved)."""
    unlearned = vectors.unlearned_layers()
    if loaded is not None:
        for name in vectors.layer_names:
            if (name not in unlearned and name in loaded and not loaded[name].learned
                    and torch.equal(vectors[name].detach().cpu(), loaded.vectors(name))):
                unlearned.append(name)
    return unlearned


def warn_of_unlearned_layers(names: Sequence[str], vectors: SemanticVectors, messages: WarningCache) -> None:
    """Warn once per layer of ``names`` that skipped every update, saying why and what follows."""
    for name in names:
        width = vectors[name].shape[0]
        why = ("it has one neuron, and a similarity is between two or more" if width == 1 else
               "its output was constant (or not finite) on every step, so fewer than two of its "
               f"{width} neurons varied")
        messages.warn(f"unlearned:{name}", (
            f"{messages.owner}: layer {name!r} learned nothing: every update was skipped because "
            f"{why}. Its vectors are still their random start; the knowledge marks it "
            "learned=False, and the report and static distillation leave it out. Hook a layer "
            "whose neurons vary."))
