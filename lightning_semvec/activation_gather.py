"""Gathering a training step's activations from every process, so every process steps its
vectors on the same global batch (and holds the same vectors as a one-process run on it)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import lightning.pytorch as pl
import torch
from torch import Tensor

from lightning_semvec.semantic_vectors import group_key

__all__ = ["gather_activations", "gather_rows"]


def gather_rows(
    pl_module: pl.LightningModule, world_size: int, activations: Tensor
) -> tuple[Tensor, Tensor | None]:
    """All processes' ``(M_p, N)`` rows, stacked, and their ``(sum M_p,)`` 0/1 weights.

    Processes may hold different numbers of rows (the last batch of an epoch, a layer called
    on a per-rank-sized input): each pads to the longest with zero rows of weight 0, which the
    alignment loss ignores. One process: the rows as they are and ``None``.
    """
    if world_size == 1:
        return activations, None
    num = activations.shape[0]
    sizes = pl_module.all_gather(torch.tensor(num, device=activations.device))
    longest = int(sizes.max())  # the only host sync, and only under several processes
    weights = torch.ones(num, device=activations.device)
    if longest > num:
        pad = longest - num
        activations = torch.cat([activations, activations.new_zeros(pad, activations.shape[1])])
        weights = torch.cat([weights, weights.new_zeros(pad)])
    gathered = pl_module.all_gather(activations).reshape(-1, activations.shape[1])
    return gathered, pl_module.all_gather(weights).reshape(-1)


def gather_activations(
    pl_module: pl.LightningModule,
    world_size: int,
    activations: Mapping[str, Tensor],
    warn_once: Callable[[str, str], None],
) -> tuple[dict[str, Tensor], dict[str, Tensor | None]]:
    """``({layer: global (M, N) activations}, {layer: row weights})`` for one step.

    Layers of one :func:`~lightning_semvec.semantic_vectors.group_key` (the same on every
    process: widths agree and rows differ alike) travel in one gather, side by side. A layer
    with fewer than 2 global rows is left out, with a one-time warning.
    """
    device = pl_module.device
    groups: dict[tuple[int, bool], list[str]] = {}
    for name, acts in activations.items():
        groups.setdefault(group_key(acts), []).append(name)
    gathered: dict[str, Tensor] = {}
    weights: dict[str, Tensor | None] = {}
    for members in groups.values():
        parts = [activations[n].to(device) for n in members]
        rows, row_weights = gather_rows(
            pl_module, world_size, torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        )
        if rows.shape[0] < 2:
            for name in members:
                warn_once(
                    f"small:{name}",
                    f"SemanticVectorCallback: a training batch gave layer {name!r} only "
                    f"{rows.shape[0]} sample; similarity needs at least 2, so the step was "
                    "skipped (use a batch size of 2 or more).",
                )
            continue
        start = 0
        for name, part in zip(members, parts):
            gathered[name] = rows[:, start : start + part.shape[1]]
            weights[name] = row_weights
            start += part.shape[1]
    return gathered, weights
