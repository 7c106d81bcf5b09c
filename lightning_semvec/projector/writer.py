"""Writing one embedding in TensorBoard's projector layout, merged with the run's config.

:func:`write_embedding` writes the files ``SummaryWriter.add_embedding`` writes, in the same
layout, but adds the entry to the ``projector_config.pbtxt`` already on disk instead of
rewriting it (see :mod:`lightning_semvec.projector.config`). Every input is checked and
every file's content prepared before the first byte is written, so a bad argument leaves the
log directory as it was.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from lightning_semvec._utils.checks import check_int
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.projector.bookmarks import bookmarks_json
from lightning_semvec.projector.config import (
    LATEST_PREFIX,
    EmbeddingEntry,
    load_config,
    merge_entry,
)
from lightning_semvec.projector.sprites import encode_png, make_sprite
from lightning_semvec.projector.storage import LogDir

__all__ = ["MAX_PROJECTOR_POINTS", "metadata_tsv", "write_embedding"]

#: TensorBoard's projector asks its server for the first 100,000 rows of a tensor and of its
#: metadata (``num_rows=1e5`` in its frontend) and shows no more.
MAX_PROJECTOR_POINTS = 100_000

_UNSAFE_FIELD = re.compile(r"[\t\r\n]")


def write_embedding(
    log_dir: str | os.PathLike[str],
    tag: str,
    vectors: Tensor | np.ndarray,
    global_step: int = 0,
    metadata: Mapping[str, Sequence[Any] | np.ndarray | Tensor] | None = None,
    sprite_images: Tensor | np.ndarray | None = None,
    bookmarks: Sequence[Mapping[str, Any]] | None = None,
) -> EmbeddingEntry:
    """Write one embedding in TensorBoard's projector format and add it to the config.

    Files go to ``<log_dir>/<global_step:05d>/<tag>/`` (``/`` and ``%`` in the tag are
    %-escaped, as ``SummaryWriter.add_embedding`` does). The entries already listed in
    ``<log_dir>/projector_config.pbtxt`` are kept (an entry of the same tensor name is
    replaced) and the config is replaced atomically on a local disk.

    Args:
        log_dir: the run directory (a ``TensorBoardLogger``'s ``log_dir``): a local path or
            an fsspec URL such as ``s3://bucket/run`` (its fsspec package must be installed).
        tag: the embedding's name, e.g. the layer name.
        vectors: ``(N, d)`` points, any real dtype (written as float32 text, 7 significant
            digits, formatted by numpy rather than per number in Python); ``N`` at most
            :data:`MAX_PROJECTOR_POINTS`, all the projector shows.
        global_step: the step, part of the folder and tensor name.
        metadata: optional columns ``{name: N values}``; values are written with ``str``
            (floats with 6 significant digits), tabs and newlines replaced by spaces. One
            column is written without a header row, as the projector expects.
        sprite_images: optional ``(N, C, h, w)`` thumbnails, ``C`` in ``{1, 3}``, uint8 or
            floats in ``[0, 1]``; laid out in a square grid of ``ceil(sqrt(N))`` columns.
        bookmarks: optional saved views of the projector (its ``State`` objects, e.g.
            :func:`~lightning_semvec.projector.bookmarks.color_bookmark`), written as
            ``bookmarks.txt`` and listed in its "Bookmarks" panel.

    Returns:
        The :class:`~lightning_semvec.projector.EmbeddingEntry` written.

    Raises:
        ValueError: on a vectors tensor that is not 2-D or has more than
            :data:`MAX_PROJECTOR_POINTS` rows, an empty tag (or one starting with
            ``"(latest) "``, kept for :func:`~lightning_semvec.projector.write_latest_entry`),
            metadata or sprite of another length than ``N``, a sprite larger than
            :data:`~lightning_semvec.projector.MAX_SPRITE_SIDE` pixels a side, a negative step,
            an existing config that is not valid, or a ``log_dir`` URL whose fsspec filesystem
            is not installed. Nothing is written then.
        TypeError: if ``log_dir`` is not a path or URL string.

    Example:
        >>> import tempfile, torch
        >>> from lightning_semvec.projector import read_projector_config
        >>> with tempfile.TemporaryDirectory() as run:
        ...     _ = write_embedding(run, "fc", torch.eye(3), global_step=1,
        ...                         metadata={"neuron": [0, 1, 2], "label": ["a", "b", "c"]})
        ...     entry = write_embedding(run, "fc", torch.ones(3, 2), global_step=2)
        ...     [e.tensor_name for e in read_projector_config(run)]
        ['fc:00001', 'fc:00002']
        >>> entry.tensor_shape
        (3, 2)
    """
    matrix = _as_numpy(vectors).astype(np.float32, copy=False)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise SemvecValueError(
            f"vectors must be (N, d) with N, d >= 1, got shape {matrix.shape}."
        )
    if matrix.shape[0] > MAX_PROJECTOR_POINTS:
        raise SemvecValueError(
            f"vectors has {matrix.shape[0]:,} rows, but TensorBoard's projector shows at most "
            f"{MAX_PROJECTOR_POINTS:,} points: write a subset (e.g. vectors[ids] with "
            "lightning_semvec.analysis.figures.evenly_spaced) and say which in the metadata."
        )
    check_int("global_step", global_step, 0)
    if not isinstance(tag, str) or not tag or tag.startswith(LATEST_PREFIX):
        raise SemvecValueError(
            f"tag must be a non-empty string not starting with {LATEST_PREFIX!r}, got {tag!r}."
        )
    num_points = matrix.shape[0]
    folder = LogDir.open(log_dir)
    config = load_config(folder)
    subdir = f"{global_step:05d}/{_encode_tag(tag)}"
    files = {f"{subdir}/tensors.tsv": _tensors_tsv(matrix)}
    if metadata:
        files[f"{subdir}/metadata.tsv"] = metadata_tsv(metadata, num_points).encode("utf-8")
    sprite_dim: tuple[int, ...] = ()
    if sprite_images is not None:
        images = _as_numpy(sprite_images)
        if images.ndim != 4 or images.shape[0] != num_points or images.shape[1] not in (1, 3):
            raise SemvecValueError(
                f"sprite_images must be (N={num_points}, C, h, w) with C in {{1, 3}}, got "
                f"shape {images.shape}."
            )
        files[f"{subdir}/sprite.png"] = encode_png(make_sprite(images))
        sprite_dim = (int(images.shape[3]), int(images.shape[2]))
    if bookmarks:
        if not all(isinstance(b, Mapping) for b in bookmarks):  # a dict: its keys, strings
            raise SemvecValueError(
                "bookmarks must be a list of projector views (dicts, e.g. from "
                f"lightning_semvec.projector.bookmarks.color_bookmark), got {bookmarks!r:.80}."
            )
        files[f"{subdir}/bookmarks.txt"] = bookmarks_json(bookmarks)

    entry = EmbeddingEntry(
        tensor_name=f"{tag}:{global_step:05d}",
        tensor_path=f"{subdir}/tensors.tsv",
        tensor_shape=(int(matrix.shape[0]), int(matrix.shape[1])),
        metadata_path=f"{subdir}/metadata.tsv" if metadata else "",
        sprite_path=f"{subdir}/sprite.png" if sprite_images is not None else "",
        sprite_dim=sprite_dim,
        bookmarks_path=f"{subdir}/bookmarks.txt" if bookmarks else "",
    )
    merge_entry(folder, config, entry, files)  # all files and the config, or none of them
    return entry


def metadata_tsv(columns: Mapping[str, Any], num_points: int) -> str:
    """The text of a ``metadata.tsv``: a header row (unless one column), then a row per point.

    Example:
        >>> metadata_tsv({"neuron": [0, 1], "score": [0.5, 1 / 3]}, 2).splitlines()
        ['neuron\\tscore', '0\\t0.5', '1\\t0.333333']
    """
    formatted = []
    for name, values in columns.items():
        array = _as_numpy(values)
        if array.ndim != 1 or array.shape[0] != num_points:
            raise SemvecValueError(
                f"Metadata column {name!r} must hold one value per point ({num_points}), got "
                f"shape {array.shape}."
            )
        if array.dtype.kind == "f":
            text = np.char.mod("%.6g", array)
        elif array.dtype.kind in "iub":
            text = array.astype(str)
        else:
            text = np.array([_UNSAFE_FIELD.sub(" ", str(v)) for v in array.tolist()], dtype=str)
        formatted.append(text)
    rows = ["\t".join(row) for row in zip(*(col.tolist() for col in formatted))]
    if len(columns) > 1:  # a single column has no header row in the projector's format
        rows.insert(0, "\t".join(_UNSAFE_FIELD.sub(" ", str(name)) for name in columns))
    return "\n".join(rows) + "\n"


def _tensors_tsv(matrix: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savetxt(buffer, matrix, fmt="%.7g", delimiter="\t")
    return buffer.getvalue()


#: Longest folder name a tag becomes (file systems allow 255 bytes a name).
_MAX_FOLDER_BYTES = 120


def _encode_tag(tag: str) -> str:
    """The folder of ``tag``: ``%``, ``/`` and control characters (a NUL byte, which no file
    system takes) %-escaped; a name too long for a file system cut, with a hash of the whole
    tag so that two long tags stay apart.

    Example:
        >>> _encode_tag("net/fc%1"), _encode_tag("a\\x00b"), len(_encode_tag("x" * 10_000))
        ('net%2ffc%251', 'a%00b', 113)
    """
    encoded = re.sub(r"[%/\x00-\x1f\x7f]", lambda m: f"%{ord(m.group()):02x}", tag)
    if len(encoded.encode("utf-8")) <= _MAX_FOLDER_BYTES:
        return encoded
    digest = hashlib.sha256(tag.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    head = encoded.encode("utf-8")[:100].decode("utf-8", "ignore")
    return f"{head}~{digest}"


def _as_numpy(values: Tensor | np.ndarray | Sequence[Any]) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)
