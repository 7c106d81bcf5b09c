"""A bounded projector menu: the newest entry of every layer, and a few earlier ones.

Each export writes one entry per layer, ``<layer>:<step:05d>``; kept forever, a run of 24
layers exported three times lists 73 tensors (with the ``(latest)`` entry) and its files
grow with every export. :func:`prune_history` keeps, among the entries of the given layers:

* the newest entry of each layer (the one written last), always;
* the ``(latest)`` entry (it lists one of those once more);
* the ``history`` newest of the other, earlier entries;

"Newest" is by write order (an entry written again under its name counts as new), not by
step: a second ``fit`` into the same folder starts again from step 0, and its entries must
not be taken for older than those the first ``fit`` left. So the bound holds however many
runs, restarts and resumes share the folder.

and removes the rest from ``projector_config.pbtxt``, then deletes their files (tensors,
metadata, sprite and bookmarks that no kept entry names). Entries of other tags (written by
other code into the same folder) are left as they are. The config is rewritten first, so an
interrupted prune leaves at worst unlisted files, never a listed entry without its files.

Example:
    >>> import torch
    >>> from lightning_semvec.projector import write_embedding, read_projector_config
    >>> run = "memory://semvec-history-doctest"
    >>> for step in (1, 2, 3, 4):
    ...     for layer in ("conv", "fc"):
    ...         _ = write_embedding(run, layer, torch.eye(2), step)
    >>> [e.tensor_name for e in prune_history(run, ["conv", "fc"], history=2)]
    ['conv:00001', 'fc:00001', 'conv:00002', 'fc:00002']
    >>> [e.tensor_name for e in read_projector_config(run)]
    ['conv:00003', 'fc:00003', 'conv:00004', 'fc:00004']
"""

from __future__ import annotations

import os
from collections.abc import Collection

from lightning_semvec._utils.checks import check_int
from lightning_semvec.projector.config import (
    EmbeddingEntry,
    entries_of,
    load_config,
    save_config,
)
from lightning_semvec.projector.storage import LogDir

__all__ = ["DEFAULT_HISTORY", "prune_history"]

#: Earlier entries the callback keeps besides each layer's newest: with the ``(latest)`` entry,
#: its menu lists at most ``layers + 1 + DEFAULT_HISTORY`` tensors.
DEFAULT_HISTORY = 10


def prune_history(
    log_dir: str | os.PathLike[str], tags: Collection[str], history: int = DEFAULT_HISTORY
) -> list[EmbeddingEntry]:
    """Keep the newest entry of each of ``tags`` and the ``history`` newest earlier ones.

    Args:
        log_dir: the run directory (a path or fsspec URL).
        tags: the layers whose entries are pruned; other entries are kept.
        history: how many earlier entries (of all ``tags`` together) to keep; 0 keeps only
            each layer's newest.

    Returns:
        The entries removed, in write order (nothing is written when there are none).

    Raises:
        ValueError: on a negative ``history`` or an invalid config file.
    """
    check_int("history", history, 0)
    folder = LogDir.open(log_dir)
    config = load_config(folder)
    entries = entries_of(config)
    wanted = set(tags)
    candidates = [
        position for position, e in enumerate(entries)
        if not e.is_latest and e.tag in wanted and e.step is not None
    ]
    # The config lists entries in write order: merge_entry appends, a rewrite moves to the end.
    newest = {entries[position].tag: position for position in candidates}
    earlier = [position for position in candidates if newest[entries[position].tag] != position]
    gone = set(earlier[:max(0, len(earlier) - history)])
    if not gone:
        return []
    removed = [entries[position] for position in sorted(gone)]
    kept = [info for position, info in enumerate(config.embeddings) if position not in gone]
    del config.embeddings[:]
    config.embeddings.extend(kept)
    save_config(folder, config)
    still_named = {path for e in entries_of(config) for path in _files_of(e)}
    folder.remove(path for e in removed for path in _files_of(e) if path not in still_named)
    return removed


def _files_of(entry: EmbeddingEntry) -> list[str]:
    return [p for p in (entry.tensor_path, entry.metadata_path, entry.sprite_path,
                        entry.bookmarks_path) if p]
