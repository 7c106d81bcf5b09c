"""Which modules to read: dotted names, glob patterns or module objects, resolved once."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn

from lightning_semvec.errors import SemvecTypeError, SemvecValueError

LayerSpec = str | nn.Module


def matches_pattern(pattern: str, name: str) -> bool:
    """Match a dotted name segment by segment: ``*`` and ``?`` stay inside one segment,
    ``**`` spans any number of segments (as in file paths)."""
    pattern_parts, name_parts = pattern.split("."), name.split(".")

    def match(p: int, n: int) -> bool:
        if p == len(pattern_parts):
            return n == len(name_parts)
        if pattern_parts[p] == "**":
            return any(match(p + 1, k) for k in range(n, len(name_parts) + 1))
        return n < len(name_parts) and fnmatch.fnmatchcase(name_parts[n], pattern_parts[p]) and match(
            p + 1, n + 1
        )

    return match(0, 0)


def _is_pattern(spec: str) -> bool:
    return any(ch in spec for ch in "*?[")


def example_pattern(model: nn.Module) -> str:
    """A glob pattern that matches some of ``model``'s layers, for examples in error messages.

    The first submodule (in ``named_modules`` order) with a leaf child gives ``"<its name>.*"``;
    a model whose only leaves are its own children gives ``"*"``.

    Example:
        >>> net = nn.Sequential(nn.Sequential(nn.Linear(4, 8), nn.ReLU()), nn.Linear(8, 2))
        >>> example_pattern(net)
        '0.*'
        >>> example_pattern(nn.Sequential(nn.Linear(4, 2)))
        '*'
    """
    for name, module in model.named_modules():
        if name and any(next(child.children(), None) is None for child in module.children()):
            return f"{name}.*"
    return "*"


def layer_spec_list(layers: Any, example: str = "*") -> list[LayerSpec]:
    """``layers`` (one spec or an iterable of them) as a list; a clear error for anything else
    (``None``, a number), which ``list()`` would meet with a bare ``TypeError``."""
    if isinstance(layers, (str, nn.Module)):
        return [layers]
    if not isinstance(layers, Iterable):
        raise SemvecTypeError(
            "layers must be a module name, a glob pattern, a module or a list of them, e.g. "
            f"layers=[{example!r}], got {type(layers).__name__}: {layers!r}.")
    return list(layers)


def resolve_layers(model: nn.Module, layers: LayerSpec | Sequence[LayerSpec]) -> dict[str, nn.Module]:
    """Resolve layer specifications to ``{dotted name: module}``, in the model's module order.

    Args:
        model: the module whose submodules are searched (usually the ``LightningModule``).
        layers: one spec or a list of them. A spec is an exact dotted name
            (``"classifier.2"``), a glob pattern (``"features.*"``, ``"layer?.*.conv2"``;
            ``*`` stays inside one dotted segment, ``**`` spans several) or a module object.

    Raises:
        ValueError: on an empty list, a name or pattern that matches nothing (the message
            names the closest existing modules), or a module that is not part of ``model``.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> list(resolve_layers(net, ["0", "*"]))
        ['0', '1', '2']
    """
    specs = layer_spec_list(layers, example_pattern(model))
    if not specs:
        raise SemvecValueError(
            "No layers given: pass at least one module name, glob pattern or module, "
            f"e.g. layers=[{example_pattern(model)!r}]."
        )
    named = [(name, module) for name, module in model.named_modules() if name]
    names = [name for name, _ in named]
    chosen: set[str] = set()
    for spec in specs:
        if isinstance(spec, nn.Module):
            found = [name for name, module in named if module is spec]
            if not found:
                raise SemvecValueError(
                    f"The module {type(spec).__name__} passed in `layers` is not a submodule of "
                    f"{type(model).__name__}; pass a module of the model being trained, or its name."
                )
            chosen.add(found[0])
        elif isinstance(spec, str):
            hits = [n for n in names if matches_pattern(spec, n)] if _is_pattern(spec) else (
                [spec] if spec in names else []
            )
            if not hits:
                close = difflib.get_close_matches(spec, names, n=5, cutoff=0.4)
                hint = f" Closest module names: {', '.join(close)}." if close else ""
                sample = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
                raise SemvecValueError(
                    f"Layer {spec!r} matches no module of {type(model).__name__}.{hint} "
                    f"Existing names start with: {sample}. Use dotted names as in "
                    f"model.named_modules(), or glob patterns such as {example_pattern(model)!r}."
                )
            chosen.update(hits)
        else:
            raise SemvecValueError(
                f"Each layer must be a module name, a glob pattern or an nn.Module; got "
                f"{type(spec).__name__}: {spec!r}."
            )
    return {name: module for name, module in named if name in chosen}


def module_dict_key(name: str) -> str:
    """A dotted layer name as an ``nn.ModuleDict`` key (keys cannot hold dots); reversible.

    Example:
        >>> module_dict_key("net.fc%1"), layer_name_of_key(module_dict_key("net.fc%1"))
        ('net%2Efc%251', 'net.fc%1')
    """
    return name.replace("%", "%25").replace(".", "%2E")


def layer_name_of_key(key: str) -> str:
    """The layer name :func:`module_dict_key` made ``key`` from."""
    return key.replace("%2E", ".").replace("%25", "%")
