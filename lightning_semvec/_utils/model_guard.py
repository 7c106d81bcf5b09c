"""``preserved_model``: run a model through a Trainer and leave it exactly as it was."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["preserved_model"]


@contextmanager
def preserved_model(model: nn.Module) -> Iterator[None]:
    """Restore ``model``'s modes, devices, forward hooks and trainer reference on exit.

    A ``Trainer`` moves the module it runs to its device, puts it in eval mode and, for a
    ``LightningModule`` inside another, sets its ``trainer``; the forward hooks that read it
    are ours. On exit, normal or by an exception, every submodule gets back its ``training``
    flag, every parameter and buffer its device (the same tensor objects: an optimizer that
    holds them still does), every module exactly the forward hooks it had, and a
    ``LightningModule`` its trainer. Weights are never written to (the passes run under
    inference mode), so their values need no copy.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
        >>> with preserved_model(net):
        ...     _ = net.eval()
        ...     _ = net[0].register_forward_hook(lambda *args: None)
        >>> net[1].training, len(net[0]._forward_hooks)
        (True, 0)
    """
    modules = list(model.modules())
    modes = [module.training for module in modules]
    hooks = [
        (dict(module._forward_hooks), dict(module._forward_pre_hooks)) for module in modules
    ]
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
        for module, mode, (forward, pre) in zip(modules, modes, hooks, strict=True):
            module.training = mode
            for store, saved in ((module._forward_hooks, forward), (module._forward_pre_hooks, pre)):
                for key in [key for key in store if key not in saved]:
                    del store[key]
        with torch.no_grad():
            for module, name, device in tensors:
                tensor = module._parameters.get(name) if name in module._parameters else (
                    module._buffers.get(name))
                if tensor is not None and tensor.device != device:
                    tensor.data = tensor.data.to(device)
        for module, trainer in trainers:
            module.__dict__["_trainer"] = trainer
