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

The tensor of an entry is named ``"<tag>:<step:05d>"``, as ``add_embedding`` names it; an entry
written again under the same name replaces the old one.

This module also holds what the callback needs to fill the sprite: a torchmetrics metric that
keeps, per neuron, the ``k`` validation inputs that activate it most
(:class:`TopActivatingInputs`), and helpers to turn images into thumbnails and sprites.
"""

from __future__ import annotations

import math
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    "CONFIG_FILENAME",
    "EmbeddingEntry",
    "MAX_SPRITE_SIDE",
    "METADATA_COLUMNS",
    "TopActivatingInputs",
    "encode_png",
    "make_sprite",
    "neuron_metadata",
    "read_embedding_metadata",
    "read_embedding_tensor",
    "read_projector_config",
    "sprite_thumbnail_size",
    "tile_images",
    "to_thumbnails",
    "write_embedding",
]

#: The projector's config file, read by TensorBoard in each run directory.
CONFIG_FILENAME = "projector_config.pbtxt"
#: The projector draws the sprite as one WebGL texture; 8192 pixels a side is the safe limit.
MAX_SPRITE_SIDE = 8192
#: The per-neuron metadata columns written by the callback, in order.
METADATA_COLUMNS: tuple[str, ...] = (
    "layer",
    "neuron",
    "preferred_class",
    "selectivity",
    "mean_activation",
    "dead",
)
# Keeps the thumbnails of one layer (k per neuron, 3 channels, uint8) below this many bytes.
_THUMBNAIL_BUDGET_BYTES = 128 * 2**20
_UNSAFE_FIELD = re.compile(r"[\t\r\n]")


@dataclass(frozen=True)
class EmbeddingEntry:
    """One embedding listed in a ``projector_config.pbtxt`` (paths relative to its folder).

    Attributes:
        tensor_name: ``"<tag>:<step:05d>"``, the name the projector shows.
        tensor_path: the ``tensors.tsv`` file.
        tensor_shape: ``(N, d)`` when known, else ``()``.
        metadata_path: the ``metadata.tsv`` file, or ``""``.
        sprite_path: the ``sprite.png`` file, or ``""``.
        sprite_dim: ``(width, height)`` of one thumbnail in the sprite, or ``()``.

    Example:
        >>> entry = EmbeddingEntry("net.fc:00042", "00042/net.fc/tensors.tsv")
        >>> entry.tag, entry.step
        ('net.fc', 42)
    """

    tensor_name: str
    tensor_path: str
    tensor_shape: tuple[int, ...] = ()
    metadata_path: str = ""
    sprite_path: str = ""
    sprite_dim: tuple[int, ...] = ()

    @property
    def tag(self) -> str:
        """The tag (layer name) part of :attr:`tensor_name`."""
        tag, _, step = self.tensor_name.rpartition(":")
        return tag if tag and step.isdigit() else self.tensor_name

    @property
    def step(self) -> int | None:
        """The global step part of :attr:`tensor_name`, or ``None`` if it has none."""
        tag, _, step = self.tensor_name.rpartition(":")
        return int(step) if tag and step.isdigit() else None


# ---------------------------------------------------------------------------- writing


def write_embedding(
    log_dir: str | os.PathLike[str],
    tag: str,
    vectors: Tensor | np.ndarray,
    global_step: int = 0,
    metadata: Mapping[str, Sequence[Any] | np.ndarray | Tensor] | None = None,
    sprite_images: Tensor | np.ndarray | None = None,
) -> EmbeddingEntry:
    """Write one embedding in TensorBoard's projector format and add it to the config.

    Files go to ``<log_dir>/<global_step:05d>/<tag>/`` (``/`` and ``%`` in the tag are
    %-escaped, as ``SummaryWriter.add_embedding`` does). The entries already listed in
    ``<log_dir>/projector_config.pbtxt`` are kept (an entry of the same tensor name is
    replaced) and the config is replaced atomically.

    Args:
        log_dir: the run directory (a ``TensorBoardLogger``'s ``log_dir``).
        tag: the embedding's name, e.g. the layer name.
        vectors: ``(N, d)`` points, any real dtype (written as float32 text, 7 significant
            digits, formatted by numpy rather than per number in Python).
        global_step: the step, part of the folder and tensor name.
        metadata: optional columns ``{name: N values}``; values are written with ``str``
            (floats with 6 significant digits), tabs and newlines replaced by spaces. One
            column is written without a header row, as the projector expects.
        sprite_images: optional ``(N, C, h, w)`` thumbnails, ``C`` in ``{1, 3}``, uint8 or
            floats in ``[0, 1]``; laid out in a square grid of ``ceil(sqrt(N))`` columns.

    Returns:
        The :class:`EmbeddingEntry` written.

    Raises:
        ValueError: on a vectors tensor that is not 2-D, metadata or sprite of another length
            than ``N``, a sprite larger than :data:`MAX_SPRITE_SIDE` pixels a side, or a
            negative step.

    Example:
        >>> import tempfile, torch
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
        raise ValueError(f"vectors must be (N, d) with N, d >= 1, got shape {matrix.shape}.")
    if isinstance(global_step, bool) or not isinstance(global_step, int) or global_step < 0:
        raise ValueError(f"global_step must be a non-negative int, got {global_step!r}.")
    if not isinstance(tag, str) or not tag:
        raise ValueError(f"tag must be a non-empty string, got {tag!r}.")
    num_points = matrix.shape[0]
    log_dir = Path(log_dir)
    subdir = f"{global_step:05d}/{_encode_tag(tag)}"
    folder = log_dir / subdir
    folder.mkdir(parents=True, exist_ok=True)

    with open(folder / "tensors.tsv", "wb") as handle:
        np.savetxt(handle, matrix, fmt="%.7g", delimiter="\t")

    metadata_path = ""
    if metadata:
        (folder / "metadata.tsv").write_text(_metadata_text(metadata, num_points), "utf-8")
        metadata_path = f"{subdir}/metadata.tsv"

    sprite_path, sprite_dim = "", ()
    if sprite_images is not None:
        images = _as_numpy(sprite_images)
        if images.ndim != 4 or images.shape[0] != num_points or images.shape[1] not in (1, 3):
            raise ValueError(
                f"sprite_images must be (N={num_points}, C, h, w) with C in {{1, 3}}, got "
                f"shape {images.shape}."
            )
        _write_png(make_sprite(images), folder / "sprite.png")
        sprite_path = f"{subdir}/sprite.png"
        sprite_dim = (int(images.shape[3]), int(images.shape[2]))

    entry = EmbeddingEntry(
        tensor_name=f"{tag}:{global_step:05d}",
        tensor_path=f"{subdir}/tensors.tsv",
        tensor_shape=(int(matrix.shape[0]), int(matrix.shape[1])),
        metadata_path=metadata_path,
        sprite_path=sprite_path,
        sprite_dim=sprite_dim,
    )
    _merge_config(log_dir, entry)
    return entry


def _encode_tag(tag: str) -> str:
    return tag.replace("%", "%25").replace("/", "%2f")


def _as_numpy(values: Tensor | np.ndarray | Sequence[Any]) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _metadata_text(columns: Mapping[str, Any], num_points: int) -> str:
    formatted = []
    for name, values in columns.items():
        array = _as_numpy(values)
        if array.ndim != 1 or array.shape[0] != num_points:
            raise ValueError(
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


def make_sprite(images: np.ndarray) -> np.ndarray:
    """Lay ``(N, C, h, w)`` images out in a square grid: ``(S*h, S*w, C)``, ``S = ceil(sqrt N)``.

    Floats are taken to lie in ``[0, 1]`` and turned into uint8; empty cells are black.

    Example:
        >>> make_sprite(np.ones((5, 1, 2, 2), dtype=np.uint8)).shape
        (6, 6, 1)
    """
    if images.dtype != np.uint8:
        images = (np.clip(images.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    count, channels, height, width = images.shape
    side = math.ceil(math.sqrt(count))
    if side * max(height, width) > MAX_SPRITE_SIDE:
        raise ValueError(
            f"A sprite of {count} images of {width}x{height} would be {side * width}x"
            f"{side * height} pixels; TensorBoard's projector draws at most "
            f"{MAX_SPRITE_SIDE}x{MAX_SPRITE_SIDE}. Use smaller thumbnails "
            "(see sprite_thumbnail_size)."
        )
    grid = np.zeros((side * side, channels, height, width), dtype=np.uint8)
    grid[:count] = images
    grid = grid.reshape(side, side, channels, height, width).transpose(0, 3, 1, 4, 2)
    return np.ascontiguousarray(grid.reshape(side * height, side * width, channels))


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of an ``(H, W, C)`` uint8 image, ``C`` 1 (grey) or 3 (RGB).

    Written here rather than with Pillow because a wide layer's sprite is large (16,384
    thumbnails of 32 pixels: 4096 x 4096 x 3 bytes) and Pillow's filter search costs seconds.
    Every row uses the PNG "Up" filter (computed at once with numpy: thumbnails are smooth
    from row to row), then zlib at level 1; when a sample of the rows shows the data does not
    compress (photographs, noise), the rows are stored uncompressed instead, which is about
    ten times faster and costs little size for such data.

    Example:
        >>> import io
        >>> from PIL import Image
        >>> pixels = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
        >>> np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(pixels)))), pixels)
        True
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        raise ValueError(
            f"pixels must be (H, W, C) uint8 with C in {{1, 3}}, got {pixels.dtype} "
            f"{pixels.shape}."
        )
    height, width, channels = pixels.shape
    rows = np.ascontiguousarray(pixels).reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), dtype=np.uint8)
    filtered[:, 0] = 2  # filter type "Up": each byte minus the byte above it, modulo 256
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    # The rows are differences already, so any sample of rows tells how well they compress.
    sample = np.ascontiguousarray(filtered[:: max(1, height // 64)])
    compresses = len(zlib.compress(sample, 1)) < 0.85 * sample.size
    data = zlib.compress(filtered, 1 if compresses else 0)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(payload, zlib.crc32(kind)) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    colour_type = 2 if channels == 3 else 0
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"".join(
        [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", header), chunk(b"IDAT", data), chunk(b"IEND", b"")]
    )


def _write_png(pixels: np.ndarray, path: Path) -> None:
    path.write_bytes(encode_png(pixels))


# ---------------------------------------------------------------------------- the config


def _load_config(path: Path) -> Any:
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    config = ProjectorConfig()
    if path.exists():
        try:
            text_format.Parse(path.read_text("utf-8"), config)
        except text_format.ParseError as err:
            raise ValueError(
                f"{str(path)!r} is not a valid projector config ({err}); fix or remove it."
            ) from err
    return config


def _merge_config(log_dir: Path, entry: EmbeddingEntry) -> None:
    from google.protobuf import text_format

    path = log_dir / CONFIG_FILENAME
    config = _load_config(path)
    kept = [e for e in config.embeddings if e.tensor_name != entry.tensor_name]
    del config.embeddings[:]
    config.embeddings.extend(kept)
    info = config.embeddings.add()
    info.tensor_name = entry.tensor_name
    info.tensor_path = entry.tensor_path
    # A known shape spares TensorBoard reading every tensor file when it lists the config.
    info.tensor_shape.extend(entry.tensor_shape)
    if entry.metadata_path:
        info.metadata_path = entry.metadata_path
    if entry.sprite_path:
        info.sprite.image_path = entry.sprite_path
        info.sprite.single_image_dim.extend(entry.sprite_dim)
    text = text_format.MessageToString(config)
    # Write beside the target, then rename: a reader never sees a half-written config.
    fd, tmp = tempfile.mkstemp(prefix=".projector_config.", dir=log_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_projector_config(log_dir: str | os.PathLike[str]) -> list[EmbeddingEntry]:
    """The embeddings listed in ``<log_dir>/projector_config.pbtxt`` (``[]`` if there is none).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as run:
        ...     read_projector_config(run)
        []
    """
    config = _load_config(Path(log_dir) / CONFIG_FILENAME)
    return [
        EmbeddingEntry(
            tensor_name=e.tensor_name,
            tensor_path=e.tensor_path,
            tensor_shape=tuple(int(s) for s in e.tensor_shape),
            metadata_path=e.metadata_path,
            sprite_path=e.sprite.image_path,
            sprite_dim=tuple(int(s) for s in e.sprite.single_image_dim),
        )
        for e in config.embeddings
    ]


def read_embedding_tensor(log_dir: str | os.PathLike[str], entry: EmbeddingEntry) -> np.ndarray:
    """The ``(N, d)`` float32 points of an entry of ``log_dir``'s config.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as run:
        ...     entry = write_embedding(run, "fc", torch.tensor([[0.5, 1.0], [2.0, -3.0]]))
        ...     read_embedding_tensor(run, entry).tolist()
        [[0.5, 1.0], [2.0, -3.0]]
    """
    return np.loadtxt(Path(log_dir) / entry.tensor_path, delimiter="\t", dtype=np.float32, ndmin=2)


def read_embedding_metadata(
    log_dir: str | os.PathLike[str], entry: EmbeddingEntry
) -> dict[str, list[str]]:
    """The metadata columns ``{name: N strings}`` of an entry (``{}`` if it has none).

    A file without a tab in its first line is one header-less column, named ``"label"``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as run:
        ...     entry = write_embedding(run, "fc", torch.zeros(2, 3),
        ...                             metadata={"neuron": [0, 1], "dead": ["alive", "dead"]})
        ...     read_embedding_metadata(run, entry)
        {'neuron': ['0', '1'], 'dead': ['alive', 'dead']}
    """
    if not entry.metadata_path:
        return {}
    lines = (Path(log_dir) / entry.metadata_path).read_text("utf-8").splitlines()
    if not lines:
        return {}
    if "\t" not in lines[0]:
        return {"label": lines}
    header = lines[0].split("\t")
    rows = [line.split("\t") for line in lines[1:]]
    return {name: [row[i] if i < len(row) else "" for row in rows] for i, name in enumerate(header)}


# ---------------------------------------------------------------------------- neuron metadata


def neuron_metadata(
    layer: str,
    num_neurons: int,
    statistics: Mapping[str, Tensor] | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The projector's metadata columns (:data:`METADATA_COLUMNS`) for one layer's neurons.

    Args:
        layer: the layer name (the ``"layer"`` column).
        num_neurons: ``N``.
        statistics: optional output of
            :class:`~lightning_semvec.metrics.NeuronActivationStatistics` (``(N,)`` tensors
            ``"preferred_class"``, ``"selectivity"``, ``"mean_activation"``, ``"dead"``);
            missing entries give empty fields.
        class_names: names of the classes, shown instead of the preferred class index.

    Returns:
        ``{column: N values}`` in the order of :data:`METADATA_COLUMNS`.

    Example:
        >>> stats = {"preferred_class": torch.tensor([1, 0]),
        ...          "selectivity": torch.tensor([0.5, 0.25]),
        ...          "mean_activation": torch.tensor([1.0, 2.0]),
        ...          "dead": torch.tensor([False, True])}
        >>> columns = neuron_metadata("fc", 2, stats, class_names=["cat", "dog"])
        >>> columns["preferred_class"], columns["dead"]
        (['dog', 'cat'], ['alive', 'dead'])
        >>> neuron_metadata("fc", 2)["selectivity"]
        ['', '']
    """
    stats = dict(statistics or {})
    blank = [""] * num_neurons

    def column(key: str) -> Tensor | None:
        value = stats.get(key)
        if value is None:
            return None
        value = value.detach().cpu()
        if value.shape != (num_neurons,):
            raise ValueError(
                f"statistics[{key!r}] must have shape ({num_neurons},), got {tuple(value.shape)}."
            )
        return value

    preferred = column("preferred_class")
    if preferred is None:
        preferred_text = blank
    elif class_names is not None:
        names = list(class_names)
        preferred_text = [names[i] if 0 <= i < len(names) else str(i) for i in preferred.tolist()]
    else:
        preferred_text = [str(i) for i in preferred.tolist()]
    selectivity = column("selectivity")
    mean = column("mean_activation")
    dead = column("dead")
    return {
        "layer": [layer] * num_neurons,
        "neuron": np.arange(num_neurons),
        "preferred_class": preferred_text,
        "selectivity": blank if selectivity is None else selectivity.double().numpy(),
        "mean_activation": blank if mean is None else mean.double().numpy(),
        "dead": blank if dead is None else ["dead" if d else "alive" for d in dead.tolist()],
    }


# ---------------------------------------------------------------------------- images


def sprite_thumbnail_size(num_neurons: int, images_per_neuron: int = 1, max_size: int = 32) -> int:
    """Side of each thumbnail so that one layer's sprite and thumbnail store stay bounded.

    The sprite holds ``ceil(sqrt(N))`` cells a side, each a ``g x g`` grid of thumbnails
    (``g = ceil(sqrt(images_per_neuron))``), and must fit :data:`MAX_SPRITE_SIDE`; the
    thumbnails kept while streaming (``N * k * 3 * size**2`` bytes) stay below 128 MiB.

    Example:
        >>> sprite_thumbnail_size(10), sprite_thumbnail_size(16384), sprite_thumbnail_size(16384, 9)
        (32, 32, 17)
    """
    if num_neurons < 1 or images_per_neuron < 1 or max_size < 1:
        raise ValueError(
            "num_neurons, images_per_neuron and max_size must be positive, got "
            f"{num_neurons}, {images_per_neuron}, {max_size}."
        )
    grid = math.ceil(math.sqrt(images_per_neuron))
    cells = math.ceil(math.sqrt(num_neurons))
    by_sprite = MAX_SPRITE_SIDE // (cells * grid)
    by_memory = math.isqrt(_THUMBNAIL_BUDGET_BYTES // (num_neurons * images_per_neuron * 3))
    return max(1, min(max_size, by_sprite, by_memory))


def to_thumbnails(images: Tensor, size: int) -> Tensor:
    """``(B, C, H, W)`` images (``C`` in ``{1, 3}``) to ``(B, 3, size, size)`` uint8 thumbnails.

    Each image is resized (area averaging when shrinking, nearest pixels when enlarging, so
    tiny images stay crisp) and stretched to the full 0..255 range by its own minimum and
    maximum, whatever normalisation the data loader applied. Grey images are repeated into
    three channels.

    Example:
        >>> thumbs = to_thumbnails(torch.rand(2, 1, 8, 8), 4)
        >>> thumbs.shape, thumbs.dtype, int(thumbs.max())
        (torch.Size([2, 3, 4, 4]), torch.uint8, 255)
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must be (B, C, H, W) with C in {{1, 3}}, got {tuple(images.shape)}."
        )
    x = images.detach().float()
    height, width = x.shape[-2:]
    mode = "area" if height >= size and width >= size else "nearest"
    x = F.interpolate(x, size=(size, size), mode=mode)
    x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    span = x.amax(dim=(1, 2, 3), keepdim=True) - low
    x = (x - low) / span.clamp_min(1e-12)
    x = (x * 255.0).round().clamp(0, 255).to(torch.uint8)
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x


def tile_images(images: Tensor) -> Tensor:
    """``(N, k, C, t, t)`` to ``(N, C, g*t, g*t)``: each neuron's k images in a ``g x g`` grid.

    ``g = ceil(sqrt(k))``; images fill the grid row by row, best first; empty places are black.

    Example:
        >>> tile_images(torch.zeros(5, 4, 3, 8, 8, dtype=torch.uint8)).shape
        torch.Size([5, 3, 16, 16])
    """
    if images.ndim != 5:
        raise ValueError(f"images must be (N, k, C, t, t), got {tuple(images.shape)}.")
    count, k, channels, height, width = images.shape
    grid = math.ceil(math.sqrt(k))
    if grid * grid > k:
        pad = images.new_zeros(count, grid * grid - k, channels, height, width)
        images = torch.cat([images, pad], dim=1)
    tiled = images.reshape(count, grid, grid, channels, height, width).permute(0, 3, 1, 4, 2, 5)
    return tiled.reshape(count, channels, grid * height, grid * width)


class TopActivatingInputs(Metric):
    """Per neuron, the ``k`` inputs with the largest activation, as thumbnails, streamed.

    ``update(activations, images)`` merges a batch into the running top ``k`` of every neuron
    (activation values and ``(3, size, size)`` uint8 thumbnails, see :func:`to_thumbnails`).
    Under DDP each process keeps its own top ``k``; ``compute`` gathers every process's
    candidates (an ``all_gather``, so every process must call it) and keeps the best ``k``.

    Args:
        num_neurons: ``N``, columns of the activations.
        k: inputs kept per neuron.
        size: side of each thumbnail in pixels (see :func:`sprite_thumbnail_size`).
        kwargs: passed to :class:`torchmetrics.Metric`.

    States:
        ``values`` ``(N, k)`` float32 (``-inf`` where no input was seen yet) and
        ``thumbnails`` ``(N, k, 3, size, size)`` uint8, gathered, not summed, across processes.

    Example:
        >>> top = TopActivatingInputs(num_neurons=2, k=1, size=4)
        >>> images = torch.zeros(3, 1, 8, 8)
        >>> images[:, :, :, 4:] = 1.0  # three images, each dark on the left, bright on the right
        >>> top.update(torch.tensor([[0.0, 5.0], [9.0, 1.0], [3.0, 2.0]]), images)
        >>> out = top.compute()
        >>> out["values"].tolist(), out["thumbnails"].shape
        ([[9.0], [5.0]], torch.Size([2, 1, 3, 4, 4]))
        >>> out["thumbnails"][0, 0, 0, 0].tolist()  # one row of a thumbnail
        [0, 0, 255, 255]
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    values: Tensor
    thumbnails: Tensor

    def __init__(self, num_neurons: int, k: int = 1, size: int = 32, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name, value in (("num_neurons", num_neurons), ("k", k), ("size", size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        self.num_neurons, self.k, self.size = num_neurons, k, size
        self.add_state(
            "values", torch.full((num_neurons, k), float("-inf")), dist_reduce_fx=None
        )
        self.add_state(
            "thumbnails",
            torch.zeros(num_neurons, k, 3, size, size, dtype=torch.uint8),
            dist_reduce_fx=None,
        )

    def update(self, activations: Tensor, images: Tensor) -> None:
        """Merge ``(B, N)`` per-input activations and their images.

        Args:
            activations: ``(B, N)``, one row per input (NaN and Inf never win).
            images: ``(B, C, H, W)`` inputs with ``C`` in ``{1, 3}``, or ``(B, 3, size, size)``
                uint8 thumbnails already made by :func:`to_thumbnails` (so that several
                layers can share them).
        """
        if activations.ndim != 2 or activations.shape[1] != self.num_neurons:
            raise ValueError(
                f"activations must be (B, {self.num_neurons}), got {tuple(activations.shape)}."
            )
        if images.shape[0] != activations.shape[0]:
            raise ValueError(
                f"Got {images.shape[0]} images for {activations.shape[0]} rows of activations."
            )
        if activations.shape[0] == 0:
            return
        ready = images.dtype == torch.uint8 and images.shape[1:] == (3, self.size, self.size)
        thumbs = images if ready else to_thumbnails(images, self.size)
        thumbs = thumbs.to(self.thumbnails.device)
        batch = activations.detach().to(self.values.device, torch.float32).T  # (N, B)
        batch = torch.where(torch.isfinite(batch), batch, torch.full_like(batch, float("-inf")))
        self.values, self.thumbnails = _merge_top(
            self.values, self.thumbnails, batch, thumbs.unsqueeze(0), self.k
        )

    def compute(self) -> dict[str, Tensor]:
        """``{"values": (N, k), "thumbnails": (N, k, 3, size, size)}``, best first.

        Places that never saw an input hold ``-inf`` and black thumbnails.
        """
        values, thumbs = self.values, self.thumbnails
        if values.ndim == 3:  # gathered: (world, N, k) -> (N, world * k), then the best k
            world = values.shape[0]
            values = values.permute(1, 0, 2).reshape(self.num_neurons, world * self.k)
            thumbs = thumbs.permute(1, 0, 2, 3, 4, 5).reshape(
                self.num_neurons, world * self.k, *thumbs.shape[3:]
            )
            empty_v = values[:, :0]
            empty_t = thumbs[:, :0]
            values, thumbs = _merge_top(empty_v, empty_t, values, thumbs, self.k)
        return {"values": values, "thumbnails": thumbs}


def _merge_top(
    values: Tensor, thumbs: Tensor, new_values: Tensor, new_thumbs: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """Best ``k`` of ``values`` ``(N, a)`` and ``new_values`` ``(N, b)`` with their thumbnails.

    ``thumbs`` is ``(N, a, ...)``; ``new_thumbs`` is ``(N, b, ...)`` or ``(1, b, ...)`` when
    the new candidates are the same inputs for every neuron (a batch).
    """
    num, kept = values.shape
    top_values, index = torch.cat([values, new_values], dim=1).topk(k, dim=1)
    from_old = index < kept
    tail = (1,) * (thumbs.ndim - 2)
    if kept > 0:
        old_index = index.clamp(max=kept - 1).view(num, k, *tail).expand(-1, -1, *thumbs.shape[2:])
        old = thumbs.gather(1, old_index)
    else:
        old = None
    new_index = (index - kept).clamp(min=0)
    if new_thumbs.shape[0] == 1:
        new = new_thumbs[0][new_index]
    else:
        new_index = new_index.view(num, k, *tail).expand(-1, -1, *new_thumbs.shape[2:])
        new = new_thumbs.gather(1, new_index)
    if old is None:
        return top_values, new
    return top_values, torch.where(from_old.view(num, k, *tail), old, new)
