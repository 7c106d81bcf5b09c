"""Index helpers shared by the figures, the report and the projector writers."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["evenly_spaced"]


def evenly_spaced(count: int, limit: int) -> Tensor:
    """At most ``limit`` indices spread evenly over ``range(count)`` (all of them if fewer).

    Used to keep wide layers' figures readable and cheap: an ``N x N`` heatmap of 16,384
    neurons is neither.

    Example:
        >>> evenly_spaced(10, 4).tolist(), evenly_spaced(3, 4).tolist()
        ([0, 3, 6, 9], [0, 1, 2])
    """
    if count <= limit:
        return torch.arange(count)
    return torch.linspace(0, count - 1, limit).round().long().unique()
