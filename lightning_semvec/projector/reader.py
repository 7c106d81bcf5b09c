"""Reading a run's projector files back: the config's entries, their tensors and metadata.

``log_dir`` is a local path or an fsspec URL, as for
:func:`~lightning_semvec.projector.write_embedding`.

Example:
    >>> import torch
    >>> from lightning_semvec.projector import write_embedding
    >>> _ = write_embedding("memory://semvec-reader-doctest", "fc", torch.eye(2),
    ...                     metadata={"neuron": [0, 1], "dead": ["alive", "dead"]})
    >>> (entry,) = read_projector_config("memory://semvec-reader-doctest")
    >>> read_embedding_tensor("memory://semvec-reader-doctest", entry).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    >>> read_embedding_metadata("memory://semvec-reader-doctest", entry)["dead"]
    ['alive', 'dead']
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import numpy as np

from lightning_semvec.projector.config import EmbeddingEntry, entries_of, load_config
from lightning_semvec.projector.storage import LogDir

__all__ = [
    "read_embedding_bookmarks",
    "read_embedding_metadata",
    "read_embedding_tensor",
    "read_projector_config",
]


def read_projector_config(log_dir: str | os.PathLike[str]) -> list[EmbeddingEntry]:
    """The embeddings listed in ``<log_dir>/projector_config.pbtxt`` (``[]`` if there is none).

    Raises:
        ValueError: if the config file is not a valid projector config.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as run:
        ...     read_projector_config(run)
        []
    """
    return entries_of(load_config(LogDir.open(log_dir)))


def read_embedding_tensor(log_dir: str | os.PathLike[str], entry: EmbeddingEntry) -> np.ndarray:
    """The ``(N, d)`` float32 points of an entry of ``log_dir``'s config.

    Raises:
        FileNotFoundError: if the entry's tensor file does not exist.

    Example:
        >>> import tempfile, torch
        >>> from lightning_semvec.projector import write_embedding
        >>> with tempfile.TemporaryDirectory() as run:
        ...     entry = write_embedding(run, "fc", torch.tensor([[0.5, 1.0], [2.0, -3.0]]))
        ...     read_embedding_tensor(run, entry).tolist()
        [[0.5, 1.0], [2.0, -3.0]]
    """
    data = LogDir.open(log_dir).read_bytes(entry.tensor_path)
    return np.loadtxt(io.BytesIO(data), delimiter="\t", dtype=np.float32, ndmin=2)


def read_embedding_metadata(
    log_dir: str | os.PathLike[str], entry: EmbeddingEntry
) -> dict[str, list[str]]:
    """The metadata columns ``{name: N strings}`` of an entry (``{}`` if it has none).

    A file without a tab in its first line is one header-less column, named ``"label"``.

    Raises:
        FileNotFoundError: if the entry names a metadata file that does not exist.

    Example:
        >>> import tempfile, torch
        >>> from lightning_semvec.projector import write_embedding
        >>> with tempfile.TemporaryDirectory() as run:
        ...     entry = write_embedding(run, "fc", torch.zeros(2, 3),
        ...                             metadata={"neuron": [0, 1], "dead": ["alive", "dead"]})
        ...     read_embedding_metadata(run, entry)
        {'neuron': ['0', '1'], 'dead': ['alive', 'dead']}
    """
    if not entry.metadata_path:
        return {}
    lines = LogDir.open(log_dir).read_bytes(entry.metadata_path).decode("utf-8").splitlines()
    if not lines:
        return {}
    if "\t" not in lines[0]:
        return {"label": lines}
    header = lines[0].split("\t")
    rows = [line.split("\t") for line in lines[1:]]
    return {name: [row[i] if i < len(row) else "" for row in rows] for i, name in enumerate(header)}


def read_embedding_bookmarks(
    log_dir: str | os.PathLike[str], entry: EmbeddingEntry
) -> list[dict[str, Any]]:
    """The saved views of an entry (its ``bookmarks.txt``; ``[]`` if it has none).

    Raises:
        FileNotFoundError: if the entry names a bookmarks file that does not exist.

    Example:
        >>> import tempfile, torch
        >>> from lightning_semvec.projector import color_bookmark, write_embedding
        >>> with tempfile.TemporaryDirectory() as run:
        ...     entry = write_embedding(run, "fc", torch.eye(2), metadata={"neuron": [0, 1]},
        ...                             bookmarks=[color_bookmark("neuron", (2, 2))])
        ...     [b["selectedColorOptionName"] for b in read_embedding_bookmarks(run, entry)]
        ['neuron']
    """
    if not entry.bookmarks_path:
        return []
    return list(json.loads(LogDir.open(log_dir).read_bytes(entry.bookmarks_path)))
