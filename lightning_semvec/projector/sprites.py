"""The projector's sprite: one thumbnail per point, laid out in a square grid, saved as PNG.

The callback turns each neuron's top validation inputs into thumbnails (:func:`to_thumbnails`),
tiles a neuron's ``k`` thumbnails into one image (:func:`tile_images`), lays the neurons out in
a grid (:func:`make_sprite`) and encodes it (:func:`encode_png`). :func:`sprite_thumbnail_size`
picks a thumbnail side small enough for a wide layer.

Example:
    >>> thumbs = to_thumbnails(torch.rand(5, 1, 8, 8), 4)          # (5, 3, 4, 4) uint8
    >>> cells = tile_images(thumbs.unsqueeze(1))                   # one image per neuron
    >>> sprite = make_sprite(cells.numpy())                        # 3 x 3 grid of 4 x 4 cells
    >>> sprite.shape, encode_png(sprite)[:4]
    ((12, 12, 3), b'\\x89PNG')
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_semvec._utils.checks import check_int
from lightning_semvec.errors import SemvecValueError

__all__ = [
    "MAX_SPRITE_SIDE",
    "encode_png",
    "make_sprite",
    "sprite_thumbnail_size",
    "tile_images",
    "to_thumbnails",
]

#: The projector draws the sprite as one WebGL texture; 8192 pixels a side is the safe limit.
MAX_SPRITE_SIDE = 8192
# Keeps the thumbnails of one layer (k per neuron, 3 channels, uint8) below this many bytes.
_THUMBNAIL_BUDGET_BYTES = 128 * 2**20


def sprite_thumbnail_size(num_neurons: int, images_per_neuron: int = 1, max_size: int = 32) -> int:
    """Side of each thumbnail so that one layer's sprite and thumbnail store stay bounded.

    The sprite holds ``ceil(sqrt(N))`` cells a side, each a ``g x g`` grid of thumbnails
    (``g = ceil(sqrt(images_per_neuron))``), and must fit :data:`MAX_SPRITE_SIDE`; the
    thumbnails kept while streaming (``N * k * 3 * size**2`` bytes) stay below 128 MiB.

    Example:
        >>> sprite_thumbnail_size(10), sprite_thumbnail_size(16384), sprite_thumbnail_size(16384, 9)
        (32, 32, 17)
    """
    check_int("num_neurons", num_neurons, 1)
    check_int("images_per_neuron", images_per_neuron, 1)
    check_int("max_size", max_size, 1)
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
        raise SemvecValueError(
            f"images must be (B, C, H, W) with C in {{1, 3}}, got {tuple(images.shape)}."
        )
    check_int("size", size, 1)
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
        raise SemvecValueError(f"images must be (N, k, C, t, t), got {tuple(images.shape)}.")
    count, k, channels, height, width = images.shape
    grid = math.ceil(math.sqrt(k))
    if grid * grid > k:
        pad = images.new_zeros(count, grid * grid - k, channels, height, width)
        images = torch.cat([images, pad], dim=1)
    tiled = images.reshape(count, grid, grid, channels, height, width).permute(0, 3, 1, 4, 2, 5)
    return tiled.reshape(count, channels, grid * height, grid * width)


def make_sprite(images: np.ndarray) -> np.ndarray:
    """Lay ``(N, C, h, w)`` images out in a square grid: ``(S*h, S*w, C)``, ``S = ceil(sqrt N)``.

    Floats are taken to lie in ``[0, 1]`` and turned into uint8; empty cells are black.

    Raises:
        ValueError: if the sprite would be larger than :data:`MAX_SPRITE_SIDE` a side.

    Example:
        >>> make_sprite(np.ones((5, 1, 2, 2), dtype=np.uint8)).shape
        (6, 6, 1)
    """
    if images.ndim != 4 or images.shape[0] == 0:
        raise SemvecValueError(f"images must be (N, C, h, w) with N >= 1, got {images.shape}.")
    if images.dtype != np.uint8:
        images = (np.clip(images.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    count, channels, height, width = images.shape
    side = math.ceil(math.sqrt(count))
    if side * max(height, width) > MAX_SPRITE_SIDE:
        raise SemvecValueError(
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

    Written here rather than with Pillow for the callback's large sprites (16,384 thumbnails
    of 32 pixels: 4096 x 4096 x 3 bytes): every row uses the PNG "Up" filter, computed at once
    with numpy (thumbnails are smooth from row to row), where Pillow picks a filter row by row.
    On real thumbnails that is about 2x faster than Pillow at ``compress_level=1`` for the same
    size; the gain is large only on noise. ``python benchmarks/projector_benchmark.py``, 4096 x
    4096 sprites: digits 0.96 s against Pillow's 2.45 s (2.5x), noise 1.18 s against 15 s (13x).
    Data that does not compress (photographs, noise: judged from a sample of the rows) is
    stored uncompressed, about ten times faster than zlib at level 1 for little size.

    Example:
        >>> import io
        >>> from PIL import Image
        >>> pixels = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
        >>> np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(pixels)))), pixels)
        True
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        raise SemvecValueError(
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
    compresses = len(zlib.compress(sample.tobytes(), 1)) < 0.85 * sample.size
    data = zlib.compress(filtered.tobytes(), 1 if compresses else 0)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(payload, zlib.crc32(kind)) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    colour_type = 2 if channels == 3 else 0
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"".join(
        [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", header), chunk(b"IDAT", data), chunk(b"IEND", b"")]
    )
