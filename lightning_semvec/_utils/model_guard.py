"""``preserved_model``: run a model through a Trainer and leave it exactly as it was."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["preserved_model"]


@contextmanager
def preserved_model(model: nn.Module) -> Iterator[None]:
    """Restore ``model``'s modes, devices and trainer reference on exit.

    A ``Trainer`` moves the module it runs to its device, puts it in eval mode and, for a
    ``LightningModule`` inside another, sets its ``trainer``. On exit, normal or by an
    exception, every submodule gets back its ``training`` flag, every parameter and buffer its
    device (the same tensor objects: an optimizer that holds them still does), and a
    ``LightningModule`` its trainer. Forward hooks are not touched here: the
    :class:`~lightning_semvec.capture.hooks.ForwardHookManager` that added ours removes its own
    handles. Weights are never written to (the passes run under inference mode), so their values
    need no copy.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
        >>> with preserved_model(net):
        ...     _ = net.eval()
        >>> net[1].training
        True
    """
    modules = list(model.modules())
    modes = [module.training for module in modules]
    tensors = [
        (module, name, tensor.device)
        for module in modules
        for store in (module._parameters, module._buffers)
        for name, tensor in store.items()
        if tensor is not None
    ]
    trainers = [(module, module.__dict__.get("_trainer")) for module in modules
                if "_trainer" in module.__dict__]
    try:
        yield
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.training = mode
        with torch.no_grad():
            for module, name, device in tensors:
                tensor = module._parameters.get(name) if name in module._parameters else (
                    module._buffers.get(name))
                if tensor is not None and tensor.device != device:
                    tensor.data = tensor.data.to(device)
        for module, trainer in trainers:
            module.__dict__["_trainer"] = trainer
