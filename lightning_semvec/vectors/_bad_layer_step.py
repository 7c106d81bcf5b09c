"""One optimizer step of the semantic vectors that leaves a layer whose batch was bad exactly as
it was (vectors and optimizer state), on the CPU and, without a host sync, on accelerators."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["step_skipping_bad_layers"]


def step_skipping_bad_layers(
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    gradients: list[Tensor],
    ok: Tensor,
    sync_free: bool,
) -> list[bool] | None:
    """One optimizer step; a layer whose ``ok`` flag is False keeps its vectors and state.

    On the CPU the ``(L,)`` flags are read on the host (free there): a bad layer simply gets
    no gradient, which every optimizer skips. On an accelerator (``sync_free``) that read
    would stall the pipeline, so every layer is snapshotted and a bad one restored with
    ``torch.where``. Returns the host flags, or ``None`` on the sync-free path.
    """
    if not sync_free:
        flags = [bool(f) for f in ok.tolist()]
        for param, grad, good in zip(params, gradients, flags):
            param.grad = grad if good else None
        optimizer.step()
        for param in params:
            param.grad = None
        return flags
    snapshot = [(p.detach().clone(), _state_tensors(optimizer, p)) for p in params]
    for param, grad in zip(params, gradients):
        param.grad = grad
    optimizer.step()
    with torch.no_grad():
        for i, (param, (old_param, old_state)) in enumerate(zip(params, snapshot)):
            param.grad = None
            keep = ok[i]
            param.copy_(torch.where(keep, param, old_param))
            for key, value in optimizer.state[param].items():
                # A step counter kept on the host (non-fused optimizers on a GPU run) is
                # left as is: moving the flag there would cost a sync for a detail.
                if isinstance(value, Tensor) and value.device == keep.device:
                    before = old_state.get(key, torch.zeros_like(value))
                    value.copy_(torch.where(keep, value, before))
    return None


def _state_tensors(optimizer: torch.optim.Optimizer, param: nn.Parameter) -> dict[str, Tensor]:
    return {
        key: value.detach().clone()
        for key, value in optimizer.state.get(param, {}).items()
        if isinstance(value, Tensor)
    }
