"""``ForwardHookManager``: the forward hooks the package puts on a model, in one place.

Modelled on torchdistill's ``ForwardHookManager``: it registers forward hooks on named
modules, owns their handles and removes them all (:meth:`ForwardHookManager.remove_all`, or
on leaving it as a context manager, also when the block raises). It also decides, once for
every user, what a call of a hooked module is:

* a call made inside backward (``torch.utils.checkpoint`` recomputing the forward to get
  its gradients) is not a sample, and never reaches the hook;
* a second call of one module in one forward (a shared activation module, a head run twice)
  is handed to the hook with its call index, or refused, by :data:`SecondCall` policy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from typing_extensions import Self

from lightning_semvec.errors import SemvecValueError

__all__ = ["ForwardHookManager", "LayerHook", "SecondCall", "in_backward"]

#: ``(layer name, output, call index in this forward)``: what a hook is given.
LayerHook = Callable[[str, Any, int], None]
#: ``"count"``: every call reaches the hook with its index; ``"error"``: a second call raises.
SecondCall = Literal["count", "error"]


def in_backward() -> bool:
    """Whether the autograd engine is running a backward on this thread (a forward run now is
    a recomputation, e.g. by ``torch.utils.checkpoint``). Inside ``torch.compile`` it is
    ``False`` without asking the engine (a question dynamo cannot trace, so it would break the
    graph): a compiled forward is traced once, and the compiled backward reruns no Python hook."""
    if torch.compiler.is_compiling():
        return False
    return torch._C._current_graph_task_id() != -1


class ForwardHookManager:
    """Forward hooks on named modules, their handles owned and removed together.

    Args:
        second_call: what a second call of one module in one forward is (:data:`SecondCall`);
            the forward's calls are counted from :meth:`new_forward`.
        who: names the owner in errors.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
        >>> seen = []
        >>> with ForwardHookManager() as hooks:
        ...     _ = hooks.add("1", net[1], lambda name, out, call: seen.append((name, call)))
        ...     _ = net(torch.zeros(2, 3)); _ = net(torch.zeros(2, 3))
        >>> seen, len(net[1]._forward_hooks)
        ([('1', 0), ('1', 1)], 0)
    """

    def __init__(self, *, second_call: SecondCall = "count", who: str = "lightning_semvec") -> None:
        self.second_call: SecondCall = second_call
        self.who = who
        self.handles: list[RemovableHandle] = []
        self.calls: dict[str, int] = {}  # calls of each layer since new_forward

    def add(self, name: str, module: nn.Module, hook: LayerHook) -> RemovableHandle:
        """Hook ``module`` (called ``name``): ``hook(name, output, call)`` on each forward call
        outside backward. The registered hook is a plain object, so a model holding it can be
        pickled (``ddp_spawn``) or deep-copied when ``hook`` can (a ``functools.partial`` of a
        method, say): the copy's hook reports to the copy's manager."""
        handle = module.register_forward_hook(_ForwardHook(self, name, hook))
        self.handles.append(handle)
        return handle

    def called(self, name: str) -> int:
        """The index of this call of ``name`` in the forward, after the :data:`SecondCall`
        policy (``"error"`` raises on a second call)."""
        call = self.calls.get(name, 0)
        if call and self.second_call == "error":
            raise SemvecValueError(
                f"{self.who}: layer {name!r} ran more than once in one forward; choose a "
                "module called once (not a shared one).")
        self.calls[name] = call + 1
        return call

    def new_forward(self) -> None:
        """Start counting calls afresh (a new forward)."""
        self.calls = {}

    def remove_all(self) -> None:
        """Remove every hook this manager registered (the model's own hooks stay)."""
        handles, self.handles = self.handles, []
        for handle in handles:
            handle.remove()
        self.calls = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove_all()


class _ForwardHook:
    """What :meth:`ForwardHookManager.add` registers: skips calls inside backward, counts the
    rest and hands them on."""

    def __init__(self, manager: ForwardHookManager, name: str, hook: LayerHook) -> None:
        self.manager, self.name, self.hook = manager, name, hook

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if in_backward():
            return  # a recomputation inside backward is not a sample
        self.hook(self.name, output, self.manager.called(self.name))
