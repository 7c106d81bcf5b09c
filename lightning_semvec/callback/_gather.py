"""Gathering a training step's activations from every process, so every process steps its
vectors on the same global batch (and holds the same vectors as a one-process run on it).

Under DDP the processes first agree on what they hold: one small gather of a ``(L, 4)`` integer
table, one row per layer in the callback's fixed layer order (see :func:`agree_on_layers`).
Every later decision (which layers to skip, which to gather together, how much to pad, what
to raise) is taken from that table alone, the same on every process, so every process reaches
the same collectives in the same order even when a layer ran on some processes only (a
data-dependent branch, mixture-of-experts routing, an early exit) or with another number of
rows (per-process sequence lengths). One process pays for none of this: no collective, no
host sync.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import lightning.pytorch as pl
import torch
from torch import Tensor

from lightning_semvec._utils.warning_cache import WarningCache
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.functional.alignment import DENSE_MAX_NEURONS

__all__ = ["AgreedLayer", "GatheredStep", "agree_on_layers", "gather_activations"]



@dataclass(frozen=True)
class AgreedLayer:
    """What every process knows of one layer after :func:`agree_on_layers`.

    Attributes:
        rows: rows held by each process, in rank order (0 where the layer did not run).
        columns: the columns each process sends (``K`` for a layer read on a neuron subset).
        width: the layer's full number of neurons ``N``.
    """

    rows: tuple[int, ...]
    columns: int
    width: int


@dataclass
class GatheredStep:
    """One step's global activations, ready for :meth:`SemanticVectors.step`.

    Attributes:
        activations: ``{layer: (M, K) activations}`` of the global batch.
        not_called: the layers that ran on no process (the caller says why, once).
        weights: ``{layer: (M,) 0/1 row weights}``; ``None`` where every row counts.
        subsets: ``{layer: (K,) neuron indices}`` of the layers read on a neuron subset.
        widths: ``{layer: N}``, the full widths (to create vectors on first sight).
    """

    activations: dict[str, Tensor] = field(default_factory=dict)
    not_called: list[str] = field(default_factory=list)
    weights: dict[str, Tensor | None] = field(default_factory=dict)
    subsets: dict[str, Tensor] = field(default_factory=dict)
    widths: dict[str, int] = field(default_factory=dict)


def agree_on_layers(
    pl_module: pl.LightningModule,
    names: Sequence[str],
    activations: Mapping[str, Tensor],
    widths: Mapping[str, int],
) -> dict[str, AgreedLayer]:
    """``{layer: AgreedLayer}`` of the layers that ran on at least one process, in order.

    The one collective of the agreement: each process sends ``(captured, rows, columns, width)``
    per layer of ``names`` (the same list, in the same order, on every process) and reads the
    table back on the host (the one host sync of an update). Every process gets the same answer.

    Args:
        pl_module: the module whose ``all_gather`` spans the processes.
        names: every layer the callback reads, in a fixed order.
        activations: ``{layer: (M, K)}`` of the layers this process ran (others are absent).
        widths: ``{layer: N}``, the full widths of those layers (``K < N`` on a neuron subset).

    Raises:
        SemvecValueError: a layer has different widths on different processes (raised on every
            process, from the same table, so none is left waiting in a collective).
    """
    if not names:  # the same list on every process, so all skip the gather alike
        return {}
    local = [
        (1, *activations[n].shape[:2], widths.get(n, activations[n].shape[1]))
        if n in activations else (0, 0, 0, 0)
        for n in names
    ]
    table = _all_gather_tensor(pl_module, torch.tensor(local, dtype=torch.int64, device=pl_module.device))
    per_rank = table.reshape(-1, len(names), 4).tolist()  # (world_size, L, 4)
    agreed: dict[str, AgreedLayer] = {}
    for i, name in enumerate(names):
        ran = {rank: entries[i] for rank, entries in enumerate(per_rank) if entries[i][0]}
        if not ran:
            continue
        seen = {entry[3] for entry in ran.values()}
        if len(seen) > 1:
            described = ", ".join(f"rank {rank}: {entry[3]}" for rank, entry in ran.items())
            raise SemvecValueError(
                f"SemanticVectorCallback: layer {name!r} has a different number of neurons on "
                f"different processes ({described}), so its neurons are not one set. Hook a "
                "layer whose width is the same on every process (widths that follow the data, "
                "such as a sequence axis read as neurons, need another neuron_dim)."
            )
        first = next(iter(ran.values()))
        rows = tuple(entries[i][1] for entries in per_rank)  # 0 where it did not run
        agreed[name] = AgreedLayer(rows, columns=first[2], width=first[3])
    return agreed


def gather_activations(
    pl_module: pl.LightningModule,
    world_size: int,
    names: Sequence[str],
    activations: Mapping[str, Tensor],
    *,
    subsets: Mapping[str, Tensor],
    widths: Mapping[str, int],
    neuron_subset: Callable[[int], Tensor | None],
    messages: WarningCache,
) -> GatheredStep:
    """The global activations of one update step, the same on every process.

    Args:
        pl_module: the module whose ``all_gather`` spans the processes.
        world_size: the number of processes; 1 takes a path with no collective and no sync.
        names: every layer the callback reads, in a fixed order, the same on every process.
        activations: ``{layer: (M, K)}`` of the layers this process ran in this step.
        subsets: ``{layer: (K,) indices}`` of this process's layers read on a neuron subset.
        widths: ``{layer: N}``, the full widths of this process's layers.
        neuron_subset: ``N -> indices or None``, this step's neuron subset of a layer of ``N``
            neurons (the same on every process), for the layers this process did not run.
        messages: the callback's once-only messages.

    A layer that ran on no process is left out (and listed in ``not_called``); one with fewer
    than 2 rows in all is left out with a one-time warning. Under DDP a process that did not
    run a layer sends zero rows of it, and the shorter shares are padded with zero rows of
    weight 0, which the alignment loss ignores. Layers with the same rows on every process (and
    all narrow or all wide) travel in one gather, side by side: one collective per such group,
    after the one of the agreement.

    Raises:
        SemvecValueError: a layer has different widths on different processes.
    """
    step = GatheredStep()
    if world_size == 1:
        for name in names:
            if name not in activations:
                step.not_called.append(name)
            elif _enough_rows(name, activations[name].shape[0], messages):
                step.activations[name] = activations[name]
                step.weights[name] = None
        step.subsets = {n: s for n, s in subsets.items() if n in step.activations}
        step.widths = {n: w for n, w in widths.items() if n in step.activations}
        return step

    agreed = agree_on_layers(pl_module, names, activations, widths)
    groups: dict[tuple[tuple[int, ...], bool], list[str]] = {}
    for name in names:
        layer = agreed.get(name)
        if layer is None:
            step.not_called.append(name)
        elif _enough_rows(name, sum(layer.rows), messages):
            groups.setdefault((layer.rows, layer.columns <= DENSE_MAX_NEURONS), []).append(name)
    rank = pl_module.global_rank
    for (rows, _), members in groups.items():
        parts = [
            activations[n].to(pl_module.device, torch.float32) if n in activations
            # The readout gives float32, and every process must send one dtype, so a process
            # that did not run a layer sends float32 too.
            else torch.zeros(0, agreed[n].columns, device=pl_module.device)
            for n in members
        ]
        gathered, weights = _gather_group(pl_module, rows, rows[rank], parts)
        start = 0
        for name, part in zip(members, parts):
            step.activations[name] = gathered[:, start : start + part.shape[1]]
            step.weights[name] = weights
            start += part.shape[1]
            step.widths[name] = agreed[name].width
            subset = _subset_of(agreed[name], subsets.get(name), neuron_subset)
            if subset is not None:
                step.subsets[name] = subset
    return step


def _subset_of(
    layer: AgreedLayer, own: Tensor | None, neuron_subset: Callable[[int], Tensor | None]
) -> Tensor | None:
    """A layer's neuron subset for this step: this process's own, or, where this process did
    not run the layer but others read it on a subset, the same subset drawn again."""
    if own is not None or layer.columns == layer.width:
        return own
    return neuron_subset(layer.width)


def _gather_group(
    pl_module: pl.LightningModule, rows: tuple[int, ...], own: int, parts: list[Tensor]
) -> tuple[Tensor, Tensor | None]:
    """One group's ``(world_size x longest, C)`` rows and their 0/1 weights (``None``: no padding).

    ``rows`` are every process's agreed row counts and ``own`` this process's: padding and
    weights follow from them, so the only collective is the gather of the rows themselves.
    """
    acts = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
    longest = max(rows)
    if longest > own:
        acts = torch.cat([acts, acts.new_zeros(longest - own, acts.shape[1])])
    gathered = _all_gather_tensor(pl_module, acts).reshape(-1, acts.shape[1])
    if all(count == longest for count in rows):
        return gathered, None
    counts = torch.tensor(rows, device=gathered.device)
    weights = torch.arange(longest, device=gathered.device) < counts[:, None]
    return gathered, weights.reshape(-1).float()


def _enough_rows(name: str, rows: int, messages: WarningCache) -> bool:
    """Whether ``rows`` global samples can give a similarity (2 or more); warns once if not."""
    if rows >= 2:
        return True
    messages.warn(
        f"small:{name}",
        f"{messages.owner}: a training batch gave layer {name!r} only {rows} sample; "
        "similarity needs at least 2, so the step was skipped (use a batch size of 2 or more).",
    )
    return False


def _all_gather_tensor(pl_module: pl.LightningModule, tensor: Tensor) -> Tensor:
    """``all_gather`` of one tensor: ``(world_size, *shape)``, or ``shape`` in one process.

    ``LightningModule.all_gather`` is typed for collections too; given a tensor it returns one.
    """
    gathered = pl_module.all_gather(tensor)
    assert isinstance(gathered, Tensor)
    return gathered
