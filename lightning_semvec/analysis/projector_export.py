"""One export of the callback to TensorBoard's projector: every layer, then the entry it opens on.

Each layer is written by :func:`~lightning_semvec.projector.write_embedding` with its
neurons' metadata, thumbnails and, when its neurons have a preferred class, a bookmark that
colours them by it in a 2-D PCA (:func:`class_bookmarks`); a layer wider than the projector
shows (:data:`~lightning_semvec.projector.MAX_PROJECTOR_POINTS`) is written as evenly spaced
neurons, and one message says so. Then the layer the projector should open on (the most
telling among those it could open first, :func:`opening_layer`) is listed once more as
``(latest) <layer>:<step>`` (:func:`~lightning_semvec.projector.write_latest_entry`), and the
menu is pruned to each layer's newest entry plus the
:data:`~lightning_semvec.projector.DEFAULT_HISTORY` newest earlier ones
(:func:`~lightning_semvec.projector.prune_history`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_semvec._utils.indices import evenly_spaced
from lightning_semvec._utils.warning_cache import WarningCache
from lightning_semvec.analysis.layer_analysis import LayerResult
from lightning_semvec.projector import (
    DEFAULT_HISTORY,
    categorical_column,
    color_bookmark,
    neuron_metadata,
    prune_history,
    tile_images,
    write_embedding,
    write_latest_entry,
)
from lightning_semvec.projector import writer as projector_writer

__all__ = ["CLASS_COLUMNS", "DEAD_GREY", "class_bookmarks", "dead_tiles_grey", "opening_layer",
           "write_projector"]

#: The metadata columns a class bookmark colours by, in order of preference: the class names
#: (a legend of names) when the projector takes them, else the class index.
CLASS_COLUMNS = ("preferred_class", "preferred_class_id")
#: The value of every pixel of a dead neuron's thumbnails: a plain mid-grey tile. Its "top"
#: inputs are ties at zero, whichever came first (the same character on every dead neuron).
DEAD_GREY = 96


def write_projector(
    log_dir: str,
    vectors: Mapping[str, Tensor],
    results: Mapping[str, LayerResult],
    step: int,
    class_names: Sequence[str] | None,
    messages: WarningCache,
) -> None:
    """Write every layer's projector entry for ``step`` and the ``(latest)`` entry, then
    prune the menu to each layer's newest entry and
    :data:`~lightning_semvec.projector.DEFAULT_HISTORY` earlier ones.

    ``vectors`` are ``{layer: (N, d) CPU tensor}`` in the hooked order; ``results`` the last
    analysed validation of each layer (a layer without one gets no statistics or images).
    """
    written = {}
    for name, layer_vectors in vectors.items():
        result = results.get(name)
        count = layer_vectors.shape[0]
        limit = projector_writer.MAX_PROJECTOR_POINTS
        ids = evenly_spaced(count, limit)
        if count > limit:
            messages.note(
                f"projector-subsampled-{name}",
                f"{messages.owner}: {name} has {count:,} neurons, more than the "
                f"{limit:,} points TensorBoard's projector shows, so its projector entries "
                f"hold {len(ids):,} evenly spaced neurons (the 'neuron' column gives each "
                "one's index); the knowledge file keeps them all.",
            )
        sprite = None
        if result is not None and result.thumbnails is not None:
            sprite = tile_images(dead_tiles_grey(result.thumbnails[ids],
                                                 result.statistics.get("dead"), ids))
        metadata = neuron_metadata(
            name,
            count,
            result.statistics if result is not None else None,
            class_names,
            neuron_ids=ids,
        )
        shown = layer_vectors[ids]
        written[name] = write_embedding(log_dir, name, shown, step, metadata, sprite,
                                        bookmarks=class_bookmarks(metadata, tuple(shown.shape)))
    if written:
        write_latest_entry(log_dir, written[opening_layer(vectors, results)])
        prune_history(log_dir, list(vectors), DEFAULT_HISTORY)


def dead_tiles_grey(thumbnails: Tensor, dead: Tensor | None, ids: Tensor) -> Tensor:
    """``thumbnails`` ``(n, k, 3, t, t)`` of the neurons ``ids``, those ``dead`` (a ``(N,)``
    bool over all the layer's neurons, or ``None``) turned plain :data:`DEAD_GREY` (a copy).

    Example:
        >>> import torch
        >>> thumbs = torch.full((2, 1, 3, 2, 2), 255, dtype=torch.uint8)
        >>> out = dead_tiles_grey(thumbs, torch.tensor([False, True]), torch.arange(2))
        >>> out[:, 0, 0, 0, 0].tolist()
        [255, 96]
    """
    if dead is None:
        return thumbnails
    marked = dead.to(device="cpu", dtype=torch.bool)[ids.cpu()]
    if not bool(marked.any()):
        return thumbnails
    out = thumbnails.clone()
    out[marked] = DEAD_GREY
    return out


def class_bookmarks(metadata: Mapping[str, Any], shape: tuple[int, ...]) -> list[dict[str, Any]]:
    """The bookmark "2-D PCA, coloured by preferred class" of a layer's entry, when its
    neurons have a preferred class the projector can colour by (else none).

    Example:
        >>> from lightning_semvec.projector import neuron_metadata
        >>> import torch
        >>> stats = {"preferred_class": torch.tensor([0, 1, 1])}
        >>> [b["label"] for b in class_bookmarks(neuron_metadata("fc", 3, stats), (3, 2))]
        ['2-D PCA, coloured by preferred class']
        >>> class_bookmarks(neuron_metadata("fc", 3), (3, 2))
        []
    """
    found = categorical_column(metadata, CLASS_COLUMNS)
    if found is None:
        return []
    column, force = found
    return [color_bookmark(column, (int(shape[0]), int(shape[1])), force_categorical=force,
                           label="2-D PCA, coloured by preferred class")]


def opening_layer(vectors: Mapping[str, Tensor], results: Mapping[str, LayerResult]) -> str:
    """The layer whose entry the projector should open on.

    TensorBoard's projector opens an entry of the most points first (see
    :mod:`lightning_semvec.projector.opening`), so the choice is among the widest layers
    (counted up to :data:`~lightning_semvec.projector.MAX_PROJECTOR_POINTS`): the one whose
    vectors agree best with its activations (highest fidelity, Spearman), the last hooked
    one when none has a fidelity.

    Example:
        >>> import torch
        >>> opening_layer({"conv": torch.zeros(8, 2), "fc": torch.zeros(8, 2),
        ...                "logits": torch.zeros(3, 2)}, {})
        'fc'
    """
    limit = projector_writer.MAX_PROJECTOR_POINTS
    widest = max(min(v.shape[0], limit) for v in vectors.values())
    candidates = [name for name, v in vectors.items() if min(v.shape[0], limit) == widest]

    def fidelity(name: str) -> float:
        result = results.get(name)
        value = None if result is None or result.fidelity is None else result.fidelity["spearman"]
        return value if value is not None and math.isfinite(value) else -math.inf

    best = max(fidelity(name) for name in candidates)
    return [name for name in candidates if fidelity(name) == best][-1]
