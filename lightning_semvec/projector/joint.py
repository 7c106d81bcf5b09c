"""One projector tensor for a joint knowledge: every model's neurons as points of one space.

The neurons of a knowledge file of :func:`~lightning_semvec.embed_models` live in one space, so
TensorBoard's projector can show them together: one entry (tag ``"joint"``) holding every
layer's vectors, with the usual per-neuron columns
(:func:`~lightning_semvec.projector.neuron_metadata`) and a ``model`` column, by which "Color by"
paints each model's points apart. Layer names in the labels and the ``layer`` column keep their
model (``"student/net.classifier.1 #3"``).

Beside it, when the knowledge stores the CKA between its layers, :func:`write_joint_cka` writes
one TensorBoard event file in the same run directory: for the first model and each other one,
the CKA heatmap (the Images tab, ``semvec/joint/cka_<a>_vs_<b>``) and the same values as a table
(the Text tab, ``semvec/joint/cka_<a>_vs_<b>_table``). The projector has no place for an image
or a note of its own; TensorBoard shows all three tabs for the run.
"""

from __future__ import annotations

import io
import os
import re
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lightning_semvec._utils.indices import evenly_spaced
from lightning_semvec.knowledge import StaticKnowledge
from lightning_semvec.knowledge.joint_space import joint_models, stored_cka
from lightning_semvec.projector import (
    MAX_PROJECTOR_POINTS,
    METADATA_COLUMNS,
    EmbeddingEntry,
    neuron_metadata,
    write_embedding,
)
from lightning_semvec.projector.storage import LogDir

__all__ = ["JOINT_METADATA_COLUMNS", "write_joint_cka", "write_joint_projector"]

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
        or ``None`` for a knowledge that is not a joint one (nothing is written). The CKA
        heatmaps and tables go beside it (:func:`write_joint_cka`). More points
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
    entry = write_embedding(log_dir, tag, vectors[ids], step, metadata)
    write_joint_cka(log_dir, knowledge, step)
    return entry


def write_joint_cka(
    log_dir: str | os.PathLike[str], knowledge: StaticKnowledge, step: int = 0
) -> list[str]:
    """Write the CKA between the first model's layers and each other model's as TensorBoard
    summaries: a heatmap image and a Markdown table, in one event file of ``log_dir``.

    The file, ``events.out.tfevents.<step>.lightning_semvec-joint-cka``, is replaced whole by a
    later call of the same step, so writing again adds no second copy.

    Args:
        log_dir: the run directory (a local path or an fsspec URL, as for
            :func:`~lightning_semvec.projector.write_embedding`).
        knowledge: a knowledge of :func:`~lightning_semvec.embed_models`.
        step: the summaries' step.

    Returns:
        The image tags written (the tables' tags add ``"_table"``); empty, and nothing written,
        for a knowledge that is not joint or stores no CKA.

    Raises:
        KnowledgeFileError: the knowledge's stored CKA is malformed.

    Example:
        >>> import tempfile
        >>> from lightning_semvec.knowledge.joint_space import CKA_KEY, cka_record
        >>> cka = cka_record(["a/fc", "b/fc"], torch.tensor([[1.0, 0.7], [0.7, 1.0]]), 3)
        >>> knowledge = StaticKnowledge.from_vectors(
        ...     {"a/fc": torch.eye(3), "b/fc": torch.eye(3)},
        ...     extra={"joint/models": '["a", "b"]', CKA_KEY: cka})
        >>> with tempfile.TemporaryDirectory() as run:
        ...     write_joint_cka(run, knowledge)
        ['semvec/joint/cka_a_vs_b']
    """
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.text.summary_v2 import text_pb

    from lightning_semvec.report._joint_figures import cka_heatmap, png_bytes
    from lightning_semvec.report._joint_reading import CKA_FEATURE_WORDS

    models = joint_models(knowledge)
    cka = stored_cka(knowledge) if models is not None else None
    if models is None or cka is None:
        return []
    folder = LogDir.open(log_dir)
    first, *others = models
    values, tags = [], []
    for other in others:
        block = cka.block(models[first], models[other])
        rows = [layer.partition("/")[2] for layer in models[first]]
        columns = [layer.partition("/")[2] for layer in models[other]]
        figure = cka_heatmap(block, rows, columns, row_title=first, column_title=other,
                             title=f"Linear CKA, {first} vs {other}")
        png = png_bytes(figure)
        width, height = (int(v) for v in figure.canvas.get_width_height())
        tag = f"semvec/joint/cka_{first}_vs_{other}"
        values.append(Summary.Value(tag=tag, image=Summary.Image(
            height=height, width=width, colorspace=4, encoded_image_string=png)))
        values.extend(text_pb(f"{tag}_table", _markdown_table(
            block, rows, columns, first, other, cka.minibatches, CKA_FEATURE_WORDS[cka.features])).value)
        tags.append(tag)
    now = time.time()
    events = [Event(wall_time=now, file_version="brain.Event:2"),
              Event(wall_time=now, step=step, summary=Summary(value=values))]
    folder.replace_bytes(f"events.out.tfevents.{step:010d}.lightning_semvec-joint-cka",
                         b"".join(_record(event.SerializeToString()) for event in events))
    return tags


def _record(data: bytes) -> bytes:
    """One TFRecord (an event file's unit): length, its masked CRC, the data, its masked CRC."""
    from tensorboard.summary.writer.record_writer import RecordWriter

    buffer = io.BytesIO()
    RecordWriter(buffer).write(data)
    return buffer.getvalue()


def _markdown_table(
    cka: torch.Tensor, rows: Sequence[str], columns: Sequence[str], first: str, other: str,
    minibatches: int, features: str,
) -> str:
    """The CKA as a Markdown table for TensorBoard's Text tab."""
    def cell(text: str) -> str:
        return re.sub(r"([|\\`*_])", r"\\\1", text)

    head = f"| layer of {cell(first)} | " + " | ".join(cell(c) for c in columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    body = ["| " + cell(name) + " | " + " | ".join(
        "n/a" if v != v else f"{v:.3f}" for v in row) + " |" for name, row in zip(rows, cka.tolist())]
    note = (f"Linear CKA between the layers of {cell(first)} (rows) and {cell(other)} (columns), "
            f"of {cell(features)}, unbiased minibatch estimator over "
            f"{minibatches} minibatches: 1 for layers alike up to a rotation and a scale, near 0 "
            "for unrelated ones.")
    return "\n".join([note, "", head, rule, *body])


def _joined(parts: Sequence[Any]) -> np.ndarray:
    """One column from the layers' parts: numbers stay numbers when every layer has them."""
    if all(isinstance(part, np.ndarray) for part in parts):
        return np.concatenate(parts)
    return np.array([value if isinstance(value, str) else f"{value:.6g}"
                     for part in parts for value in list(part)], dtype=object)
