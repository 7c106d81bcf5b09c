"""TensorBoard Embedding Projector files for semantic vectors, written so nothing is lost.

``SummaryWriter.add_embedding`` keeps the projector's list of embeddings in memory and rewrites
``projector_config.pbtxt`` from it on every call, so a resumed run (a new writer) erases the
entries of the runs before it. :func:`write_embedding` writes the same files in TensorBoard's
own layout instead, and *merges* with the config already on disk:

.. code-block:: text

    <log_dir>/projector_config.pbtxt          embeddings { tensor_name tensor_path ... }
    <log_dir>/<step:05d>/<tag>/tensors.tsv    one row per point, tab separated
    <log_dir>/<step:05d>/<tag>/metadata.tsv   a header row, then one row per point
    <log_dir>/<step:05d>/<tag>/sprite.png     one thumbnail per point, in a square grid
    <log_dir>/<step:05d>/<tag>/bookmarks.txt  saved views of the projector (JSON), optional

The tensor of an entry is named ``"<tag>:<step:05d>"``, as ``add_embedding`` names it; an entry
written again under the same name replaces the old one. ``log_dir`` is a local path or an
fsspec URL (``s3://``, ``gs://``, ...), as ``TensorBoardLogger`` accepts.

The modules: ``writer`` (:func:`write_embedding`), ``reader`` (reading entries back),
``config`` (the ``projector_config.pbtxt`` entries and their merge), ``opening`` (which entry
TensorBoard opens first, and the ``(latest)`` entry), ``history`` (a bounded menu: each
layer's newest entry and a few earlier ones), ``bookmarks`` (a saved view that colours the
points by preferred class), ``metadata`` (the per-neuron columns), ``sprites`` (thumbnails, the
sprite grid and its PNG encoder) and ``storage`` (local or fsspec log directories). The metric
that picks each neuron's top inputs is :class:`~lightning_semvec.metrics.TopActivatingInputs`.

Example:
    >>> import tempfile, torch
    >>> with tempfile.TemporaryDirectory() as run:
    ...     entry = write_embedding(run, "fc", torch.eye(2), metadata=neuron_metadata("fc", 2))
    ...     read_embedding_metadata(run, entry)["neuron"]
    ['0', '1']
"""

from __future__ import annotations

from typing import Any

from lightning_semvec.projector.bookmarks import (
    bookmarks_json,
    categorical_column,
    color_bookmark,
)
from lightning_semvec.projector.config import (
    CONFIG_FILENAME,
    LATEST_PREFIX,
    EmbeddingEntry,
)
from lightning_semvec.projector.history import DEFAULT_HISTORY, prune_history
from lightning_semvec.projector.metadata import (
    METADATA_COLUMNS,
    neuron_label,
    neuron_metadata,
)
from lightning_semvec.projector.opening import projector_open_order, write_latest_entry
from lightning_semvec.projector.reader import (
    read_embedding_bookmarks,
    read_embedding_metadata,
    read_embedding_tensor,
    read_projector_config,
)
from lightning_semvec.projector.sprites import (
    MAX_SPRITE_SIDE,
    encode_png,
    make_sprite,
    sprite_thumbnail_size,
    tile_images,
    to_thumbnails,
)
from lightning_semvec.projector.writer import MAX_PROJECTOR_POINTS, write_embedding

__all__ = [
    "CONFIG_FILENAME",
    "DEFAULT_HISTORY",
    "LATEST_PREFIX",
    "MAX_PROJECTOR_POINTS",
    "MAX_SPRITE_SIDE",
    "METADATA_COLUMNS",
    "EmbeddingEntry",
    "bookmarks_json",
    "categorical_column",
    "color_bookmark",
    "encode_png",
    "make_sprite",
    "neuron_label",
    "neuron_metadata",
    "projector_open_order",
    "prune_history",
    "read_embedding_bookmarks",
    "read_embedding_metadata",
    "read_embedding_tensor",
    "read_projector_config",
    "sprite_thumbnail_size",
    "tile_images",
    "to_thumbnails",
    "write_embedding",
    "write_latest_entry",
]


def __getattr__(name: str) -> Any:
    # TopActivatingInputs was defined here and documented here (docs/api.md, the callback's
    # docstring) before it moved to lightning_semvec.metrics; old imports keep working. Imported
    # on first use because lightning_semvec.metrics imports this package's sprites module.
    if name == "TopActivatingInputs":
        from lightning_semvec.metrics.top_activating_inputs import TopActivatingInputs

        return TopActivatingInputs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
