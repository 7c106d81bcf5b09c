"""The augmentation of :class:`~lightning_semvec.data.GlyphsDataModule`: each sample is a glyph
drawn anew, with its own scale, rotation, shift, stroke width, blur and noise.

Done on whole batches with torch (``affine_grid``/``grid_sample``, pooling, a convolution), drawn
from one ``torch.Generator``, so a split is the same for the same seed on every machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Augmentation", "augment"]


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random changes, each drawn uniformly per sample.

    Args:
        scale: the glyph's size factor range.
        rotation: the largest rotation, in degrees, either way.
        shift: the largest shift, as a fraction of the image side, in each direction.
        stroke: the chance of a thinner and of a thicker stroke (half a 3x3 erosion, or a 3x3
            dilation, on the canvas), each.
        blur: the largest Gaussian blur sigma, in output pixels.
        noise: the largest standard deviation of the added Gaussian noise.
    """

    scale: tuple[float, float] = (0.8, 1.1)
    rotation: float = 12.0
    shift: float = 0.08
    stroke: float = 0.25
    blur: float = 0.8
    noise: float = 0.08


def augment(canvas: Tensor, size: int, generator: torch.Generator, changes: Augmentation | None) -> Tensor:
    """``(N, S, S)`` glyph canvases to ``(N, 1, size, size)`` float32 images in ``[0, 1]``.

    ``changes=None`` only shrinks (the clean glyphs). The canvas is drawn at twice ``size`` or
    more and shrunk by area averaging, so thin strokes keep their grey levels.
    """
    x = canvas.unsqueeze(1)
    n = x.shape[0]
    if changes is not None:
        u = torch.rand(n, 8, generator=generator)
        thin, thick = u[:, 0] < changes.stroke, u[:, 0] > 1 - changes.stroke
        dilated = F.max_pool2d(x, 3, stride=1, padding=1)
        eroded = 0.5 * (x - F.max_pool2d(-x, 3, stride=1, padding=1))  # half an erosion: thin strokes stay
        x = torch.where(thick[:, None, None, None], dilated, torch.where(thin[:, None, None, None], eroded, x))
        low, high = changes.scale
        scale = low + (high - low) * u[:, 1]
        angle = math.radians(changes.rotation) * (2 * u[:, 2] - 1)
        shift = changes.shift * 2 * (2 * u[:, 3:5] - 1)  # affine_grid's units: the side is 2
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    x = F.adaptive_avg_pool2d(x, size)
    if changes is not None:
        x = _blur(x, changes.blur * u[:, 5])
        x = x + changes.noise * u[:, 6, None, None, None] * torch.randn(x.shape, generator=generator)
    return x.clamp_(0.0, 1.0).contiguous()


def _blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Each image blurred by its own Gaussian ``sigma`` (0: unchanged), with a 5x5 kernel."""
    offsets = torch.arange(-2, 3, dtype=x.dtype)
    weights = torch.exp(-offsets[None] ** 2 / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
    weights = weights / weights.sum(dim=1, keepdim=True)  # (N, 5); sigma near 0 puts all on the centre
    kernels = (weights[:, :, None] * weights[:, None, :]).unsqueeze(1)  # (N, 1, 5, 5)
    n = x.shape[0]
    blurred = F.conv2d(x.reshape(1, n, *x.shape[2:]), kernels, padding=2, groups=n)
    return blurred.reshape_as(x)
