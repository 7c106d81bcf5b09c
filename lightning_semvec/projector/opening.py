"""Which embedding TensorBoard's projector opens first, and the entry that makes it the latest.

TensorBoard (2.21) has no setting for the tensor its projector opens. Its frontend
(``tensorboard/plugins/projector/tf_projector_plugin/projector_binary.js``, the data panel)
lists a run's embeddings of 2-D shape with more than one point and dimension, sorted

1. entries with a metadata file first,
2. entries whose name holds ``/Adagrad`` (optimizer slots) last,
3. more points (``tensor_shape[0]``) first,
4. then by name, ascending,

and opens the first (:func:`projector_open_order` replays this). Entries named
``<tag>:<step:05d>`` therefore open on the *earliest* step of the widest layer. Only the name
is left to choose: :func:`write_latest_entry` lists an entry once more as
``"(latest) <tag>:<step:05d>"`` (``(`` sorts before letters and digits), so among layers of
as many points that one opens first. A wider layer still opens before it; the menu lists all.

The projector reads the config once per TensorBoard process (again only when a TensorFlow
checkpoint appears), so entries written after ``tensorboard`` started show up after a
restart.

Example:
    >>> import torch
    >>> from lightning_semvec.projector import write_embedding, read_projector_config
    >>> run = "memory://semvec-opening-doctest"
    >>> first = write_embedding(run, "fc", torch.eye(3), 1, metadata={"neuron": [0, 1, 2]})
    >>> latest = write_embedding(run, "fc", torch.eye(3), 2, metadata={"neuron": [0, 1, 2]})
    >>> projector_open_order(read_projector_config(run))[0].tensor_name
    'fc:00001'
    >>> _ = write_latest_entry(run, latest)
    >>> projector_open_order(read_projector_config(run))[0].tensor_name
    '(latest) fc:00002'
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import replace

from lightning_semvec.errors import SemvecValueError
from lightning_semvec.projector.config import (
    LATEST_PREFIX,
    EmbeddingEntry,
    load_config,
    merge_entry,
)
from lightning_semvec.projector.storage import LogDir

__all__ = ["LATEST_PREFIX", "projector_open_order", "write_latest_entry"]


def projector_open_order(entries: Iterable[EmbeddingEntry]) -> list[EmbeddingEntry]:
    """The entries TensorBoard's projector lists, in its menu's order (it opens the first).

    Entries it does not list (not ``(N, d)`` with ``N, d > 1``) are left out.

    Example:
        >>> entries = [EmbeddingEntry("b:00001", "t", (5, 2), "m"),
        ...            EmbeddingEntry("a:00001", "t", (5, 2), "m"),
        ...            EmbeddingEntry("wide:00001", "t", (9, 2)),
        ...            EmbeddingEntry("one:00001", "t", (1, 2), "m")]
        >>> [e.tensor_name for e in projector_open_order(entries)]
        ['a:00001', 'b:00001', 'wide:00001']
    """
    listed = [e for e in entries if len(e.tensor_shape) == 2 and min(e.tensor_shape) > 1]
    return sorted(
        listed,
        key=lambda e: (
            not e.metadata_path,
            "/Adagrad" in e.tensor_name,
            -e.tensor_shape[0],
            # JavaScript compares strings by UTF-16 code units; Python by code points.
            e.tensor_name.encode("utf-16-be"),
        ),
    )


def write_latest_entry(log_dir: str | os.PathLike[str], entry: EmbeddingEntry) -> EmbeddingEntry:
    """List ``entry``'s files once more as ``"(latest) <name>"``, replacing an earlier one.

    No file is copied: the new config entry names ``entry``'s files. A run has at most one such
    entry; the previous one is removed, so the name always says which step it shows.

    Args:
        log_dir: the run directory ``entry`` was written to (a path or fsspec URL).
        entry: what :func:`~lightning_semvec.projector.write_embedding` returned.

    Returns:
        The new entry.

    Raises:
        ValueError: if ``entry`` is itself a ``(latest)`` entry or is not listed in the config.
            Nothing is written then.

    Example:
        >>> import tempfile, torch
        >>> from lightning_semvec.projector import write_embedding, read_projector_config
        >>> with tempfile.TemporaryDirectory() as run:
        ...     for step in (1, 2):
        ...         latest = write_latest_entry(run, write_embedding(run, "fc", torch.eye(2), step))
        ...     [e.tensor_name for e in read_projector_config(run)]
        ['fc:00001', 'fc:00002', '(latest) fc:00002']
        >>> latest.tensor_path, latest.is_latest
        ('00002/fc/tensors.tsv', True)
    """
    if entry.is_latest:
        raise SemvecValueError(
            f"{entry.tensor_name!r} is a {LATEST_PREFIX.strip()} entry already: pass the entry "
            "write_embedding returned."
        )
    folder = LogDir.open(log_dir)
    config = load_config(folder)
    if not any(e.tensor_name == entry.tensor_name for e in config.embeddings):
        raise SemvecValueError(
            f"{entry.tensor_name!r} is not listed in {folder.url_of('projector_config.pbtxt')!r}:"
            " write it with write_embedding first."
        )
    kept = [e for e in config.embeddings if not e.tensor_name.startswith(LATEST_PREFIX)]
    del config.embeddings[:]
    config.embeddings.extend(kept)
    latest = replace(entry, tensor_name=LATEST_PREFIX + entry.tensor_name)
    merge_entry(folder, config, latest)
    return latest
