"""One projector tensor for a joint knowledge: every model's neurons as points of one space.

The neurons of a knowledge file of :func:`~lightning_semvec.embed_models` live in one space, so
TensorBoard's projector can show them together: one entry (tag ``"joint"``) holding every
layer's vectors, with the usual per-neuron columns
(:func:`~lightning_semvec.projector.neuron_metadata`) and a ``model`` column, by which "Color by"
paints each model's points apart. Layer names in the labels and the ``layer`` column keep their
model (``"student/net.classifier.1 #3"``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lightning_semvec._utils.indices import evenly_spaced
from lightning_semvec.knowledge import StaticKnowledge
from lightning_semvec.knowledge.joint_space import joint_models
from lightning_semvec.projector import (
    MAX_PROJECTOR_POINTS,
    METADATA_COLUMNS,
    EmbeddingEntry,
    neuron_metadata,
    write_embedding,
)

__all__ = ["JOINT_METADATA_COLUMNS", "write_joint_projector"]

#: The joint entry's metadata columns: the label, the model, then the per-neuron columns.
JOINT_METADATA_COLUMNS: tuple[str, ...] = ("label", "model", *METADATA_COLUMNS[1:])


def write_joint_projector(
    log_dir: str | os.PathLike[str], knowledge: StaticKnowledge, step: int = 0, tag: str = "joint"
) -> EmbeddingEntry | None:
    """Write every model's neurons of a joint knowledge as one projector entry.

    Args:
        log_dir: the projector's run directory (``tensorboard --logdir <log_dir>``).
        knowledge: a knowledge of :func:`~lightning_semvec.embed_models`.
        step: the entry's step.
        tag: the entry's name.

    Returns:
        The entry written (``(N_total, d)`` points, columns :data:`JOINT_METADATA_COLUMNS`),
        or ``None`` for a knowledge that is not a joint one (nothing is written). More points
        than :data:`~lightning_semvec.projector.MAX_PROJECTOR_POINTS` are written as evenly
        spaced ones, with a warning.

    Example:
        >>> import tempfile
        >>> from lightning_semvec.projector import read_embedding_metadata
        >>> knowledge = StaticKnowledge.from_vectors(
        ...     {"a/fc": torch.eye(3), "b/fc": torch.eye(3)}, extra={"joint/models": '["a", "b"]'})
        >>> with tempfile.TemporaryDirectory() as run:
        ...     entry = write_joint_projector(run, knowledge)
        ...     read_embedding_metadata(run, entry)["model"]
        ['a', 'a', 'a', 'b', 'b', 'b']
    """
    models = joint_models(knowledge)
    if models is None:
        return None
    columns: dict[str, list[Any]] = {name: [] for name in JOINT_METADATA_COLUMNS}
    for model, layers in models.items():
        for layer in layers:
            neurons = knowledge[layer].num_neurons
            metadata = neuron_metadata(layer, neurons, knowledge.statistics(layer) or None,
                                       knowledge.class_names)
            metadata["model"] = [model] * neurons
            for name in JOINT_METADATA_COLUMNS:
                columns[name].append(metadata[name])
    layer_names = [layer for layers in models.values() for layer in layers]
    vectors = torch.cat([knowledge[layer].vectors for layer in layer_names])
    ids = evenly_spaced(vectors.shape[0], MAX_PROJECTOR_POINTS)
    if ids.numel() < vectors.shape[0]:
        warnings.warn(
            f"The joint space has {vectors.shape[0]:,} neurons, more than the "
            f"{MAX_PROJECTOR_POINTS:,} points TensorBoard's projector shows: its entry holds "
            f"{ids.numel():,} evenly spaced ones (the knowledge file keeps them all).",
            stacklevel=2)
    metadata = {name: _joined(parts)[ids.numpy()] for name, parts in columns.items()}
    return write_embedding(log_dir, tag, vectors[ids], step, metadata)


def _joined(parts: Sequence[Any]) -> np.ndarray:
    """One column from the layers' parts: numbers stay numbers when every layer has them."""
    if all(isinstance(part, np.ndarray) for part in parts):
        return np.concatenate(parts)
    return np.array([value if isinstance(value, str) else f"{value:.6g}"
                     for part in parts for value in list(part)], dtype=object)
