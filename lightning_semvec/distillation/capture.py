"""Recording chosen layers' outputs during a training step, and finding those layers by name.

Example:
    >>> import torch
    >>> from torch import Tensor, nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    >>> capture = OutputCapture()
    >>> handle = capture.attach(exact_layer(net, "1", "student", "layer_map"), "relu")
    >>> _ = net(torch.zeros(2, 3))  # outside ``recording``: nothing is kept
    >>> with capture.recording() as outputs:
    ...     _ = net(torch.zeros(2, 3))
    ...     [tuple(out.shape) for out in outputs["relu"]]
    [(2, 4)]
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lightning_semvec.capture.hooks import ForwardHookManager
from lightning_semvec.capture.layers import resolve_layers
from lightning_semvec.errors import SemvecValueError

__all__ = ["OutputCapture", "exact_layer", "owned_copy"]


class OutputCapture:
    """Records module outputs, by key, while :meth:`recording` is active.

    The hooks go through the package's one
    :class:`~lightning_semvec.capture.hooks.ForwardHookManager` (``hooks``), which skips the
    recomputations inside backward; what it registers holds ``functools.partial`` objects
    around a bound method of this plain object, so a module holding them can be pickled
    (``ddp_spawn``) and deep-copied: the copy's hooks record into the copy's capture. The
    outputs keep their graph (not detached) and are copies, never aliases of what the network
    goes on to modify in place. Every call of a hooked module while recording is kept, in
    order (its caller decides what several calls mean).

    Args:
        who: names the owner in errors.
    """

    def __init__(self, who: str = "distillation") -> None:
        self.active = False
        self.outputs: dict[str, list[Any]] = {}
        self.hooks = ForwardHookManager(who=who)

    def record(self, transform: Callable[[Any], Any] | None, key: str, output: Any, call: int) -> None:
        """The hook: keeps ``transform(output)`` (or a copy of ``output``) under ``key`` while
        recording."""
        if self.active:
            kept = transform(output) if transform is not None else owned_copy(output)
            self.outputs.setdefault(key, []).append(kept)

    def attach(
        self, module: nn.Module, key: str, transform: Callable[[Any], Any] | None = None
    ) -> RemovableHandle:
        """Hook ``module`` so that its outputs are recorded under ``key``.

        ``transform`` turns an output into what is kept, at hook time (a readout that copies,
        say); it must not return memory the output shares. By default the output's tensors
        are cloned (their graph kept): a later in-place op on the output, such as
        ``ReLU(inplace=True)`` or ``out += identity`` in a ResNet block, would otherwise
        change what was recorded.
        """
        return self.hooks.add(key, module, functools.partial(self.record, transform))

    @contextmanager
    def recording(self) -> Iterator[dict[str, list[Any]]]:
        """Record during the block; everything recorded is dropped when it ends."""
        self.outputs = {}
        self.hooks.new_forward()
        self.active = True
        try:
            yield self.outputs
        finally:
            self.active = False
            self.outputs = {}


def owned_copy(output: Any) -> Any:
    """``output`` with every tensor in it cloned (tuples, lists and dicts followed)."""
    if isinstance(output, Tensor):
        return output.clone()
    if isinstance(output, (tuple, list)):
        return type(output)(owned_copy(item) for item in output)
    if isinstance(output, dict):
        return {key: owned_copy(value) for key, value in output.items()}
    return output


def exact_layer(root: nn.Module, name: object, owner: str, argument: str) -> nn.Module:
    """The submodule of ``root`` called exactly ``name``; the error names the closest ones.

    Args:
        root: the network (student or teacher).
        name: a module name as in ``root.named_modules()``; patterns are refused.
        owner: ``"student"`` or ``"teacher"``, for messages.
        argument: the argument that named the layer, for messages.
    """
    if not isinstance(name, str) or not name:
        raise SemvecValueError(f"{argument}: layer names must be non-empty strings, got {name!r}.")
    modules = dict(root.named_modules())
    if name in modules:
        return modules[name]
    try:
        matches = resolve_layers(root, name)
    except ValueError as err:
        raise SemvecValueError(f"{argument}: no layer {name!r} in the {owner}. {err}") from None
    raise SemvecValueError(
        f"{argument}: {name!r} is a pattern (it matches {list(matches)[:5]}); name exactly one "
        f"layer of the {owner}."
    )
