"""Reading neurons out of a module's output: any output shape to a ``(samples, neurons)`` matrix."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_semvec.capture.layers import matches_pattern
from lightning_semvec.errors import SemvecTypeError, SemvecValueError

Reduction = Literal["mean", "positions"]
REDUCTIONS: tuple[str, ...] = ("mean", "positions")
OutputSelector = int | str | Callable[[Any], Tensor] | None


@dataclass(frozen=True)
class NeuronReadout:
    """How one layer's output becomes ``(M, N)`` activations (``docs/method.md``, "Neurons and their activations").

    Args:
        reduction: for outputs with more than two axes, ``"mean"`` averages every axis
            other than the batch and neuron axes (one sample per input), ``"positions"``
            makes every position (pixel, token) a sample.
        neuron_dim: the axis holding the neurons: ``1`` for ``(B, C, H, W)`` conv outputs
            (default), ``-1`` for ``(B, T, N)`` sequence outputs.
        select_output: how to pick the tensor when the module returns a tuple, list or dict:
            an index, a key, or a callable taking the output and returning a tensor.

    Example:
        >>> NeuronReadout().read(torch.ones(4, 3, 5, 5)).shape
        torch.Size([4, 3])
        >>> NeuronReadout(reduction="positions").read(torch.ones(4, 3, 5, 5)).shape
        torch.Size([100, 3])
        >>> NeuronReadout(neuron_dim=-1, reduction="positions").read(torch.ones(2, 7, 6)).shape
        torch.Size([14, 6])
    """

    reduction: Reduction = "mean"
    neuron_dim: int = 1
    select_output: OutputSelector = None

    def __post_init__(self) -> None:
        if self.reduction not in REDUCTIONS:
            raise SemvecValueError(
                f"Unknown reduction {self.reduction!r}: use 'mean' (average over positions) "
                "or 'positions' (every position is a sample)."
            )
        if self.neuron_dim == 0:
            raise SemvecValueError("neuron_dim=0 is the batch axis; neurons lie on axis 1 or -1.")

    def select(self, output: Any, layer: str = "layer") -> Tensor:
        """Pick the activation tensor out of a module's output."""
        selected = output
        if self.select_output is not None:
            try:
                if callable(self.select_output):
                    selected = self.select_output(output)
                else:
                    selected = output[self.select_output]
            except (IndexError, KeyError, TypeError) as err:
                raise SemvecValueError(
                    f"select_output={self.select_output!r} could not pick a tensor out of the "
                    f"output of {layer!r} ({_describe(output)}): {err}."
                ) from err
        if not isinstance(selected, Tensor):
            first = selected[0] if isinstance(selected, (tuple, list)) and selected else None
            sequence = isinstance(first, Tensor) and first.ndim == 3  # an RNN's (B, T, N) or (T, B, N)
            options = "{'select_output': 0, 'neuron_dim': -1}" if sequence else "{'select_output': 0}"
            hint = (" Its first item is a sequence of shape " + str(tuple(first.shape)) + ": neurons "
                    "on the last axis (neuron_dim=-1), and the batch must be axis 0, so build an "
                    "nn.LSTM/GRU/RNN with batch_first=True (by default it gives (T, B, N))."
                    if sequence and first is not None else "")
            raise SemvecTypeError(
                f"Layer {layer!r} returned {_describe(selected)}, not a tensor. Tell the callback "
                "which tensor holds the neurons with select_output: an index for a tuple "
                "(e.g. select_output=0), a key for a dict, or a callable returning the tensor; "
                "per layer with layer_options={'" + layer + "': " + options + "}." + hint
            )
        return selected

    def read(
        self,
        output: Any,
        layer: str = "layer",
        detach: bool = True,
        copy: bool = False,
        neurons: Tensor | None = None,
    ) -> Tensor:
        """``output`` -> ``(M, N)`` float32 activations.

        Args:
            output: the module's output (a tensor, or a tuple/dict picked by ``select_output``).
            layer: the layer's name, for error messages.
            detach: cut the result from the autograd graph (the default, for observers such
                as the callback); ``False`` keeps it differentiable, for losses that train
                the network through its activations (static distillation of a student).
            copy: return memory the output does not share, so that a later in-place op on the
                output (``nn.ReLU(inplace=True)``, ``out += identity``) cannot change what was
                read. A mean over positions, a neuron subset or a float cast copy anyway; only
                a result that would alias the output is cloned.
            neurons: ``(K,)`` indices: read only these neurons (taken before any reduction,
                so only their values are copied), giving ``(M, K)``.

        Example:
            >>> x = torch.ones(2, 3, 4, 4, requires_grad=True)
            >>> NeuronReadout().read(x).requires_grad, NeuronReadout().read(x, detach=False).requires_grad
            (False, True)
            >>> y = torch.zeros(2, 3)
            >>> kept = NeuronReadout().read(y, copy=True)
            >>> _ = y.add_(1.0)  # an in-place op after the layer
            >>> kept.sum().item()
            0.0
        """
        x = self.select(output, layer)
        if detach:
            x = x.detach()
        if not (x.is_floating_point()):
            raise SemvecTypeError(f"Layer {layer!r} returned a {x.dtype} tensor; neurons need floats.")
        if x.ndim < 2:
            raise SemvecValueError(
                f"Layer {layer!r} returned shape {tuple(x.shape)}; expected (batch, neurons, ...)."
            )
        neuron_dim = 1 if x.ndim == 2 else self.neuron_dim % x.ndim
        if neuron_dim == 0:
            raise SemvecValueError(f"neuron_dim={self.neuron_dim} points at the batch axis of {layer!r}.")
        source = x
        if neurons is not None:
            x = x.index_select(neuron_dim, neurons)
        if x.ndim == 2:
            result = x.float()
        elif self.reduction == "mean":
            # Reduce in place of the layout (no movedim copy): the kept axes are batch, neurons.
            dims = tuple(d for d in range(1, x.ndim) if d != neuron_dim)
            dtype = None if x.dtype == torch.float32 else torch.float32
            result = x.mean(dim=dims, dtype=dtype)
        else:
            result = x.movedim(neuron_dim, -1).reshape(-1, x.shape[neuron_dim]).float()
        copied = neurons is not None or x.dtype != torch.float32 or (x.ndim > 2 and self.reduction == "mean")
        if copy and _may_alias(result, source, copied=copied):
            result = result.clone()
        return result

    def num_neurons(self, output: Any, layer: str = "layer") -> int:
        """``N``, the number of neurons in ``output`` (the size of its neuron axis)."""
        x = self.select(output, layer)
        if x.ndim < 2:
            raise SemvecValueError(
                f"Layer {layer!r} returned shape {tuple(x.shape)}; expected (batch, neurons, ...)."
            )
        return int(x.shape[1 if x.ndim == 2 else self.neuron_dim % x.ndim])

def _may_alias(result: Tensor, source: Tensor, *, copied: bool) -> bool:
    """Whether ``result`` may share memory with ``source``. ``copied``: an operation that always
    copies (a subset, a mean, a cast) made it. Inside ``torch.compile`` the answer is from the
    operations alone, since asking for a storage's address breaks the graph (and a graph broken
    in pieces fuses differently, which changes the model's own numbers)."""
    if copied:
        return False
    if torch.compiler.is_compiling():
        return True
    return result.untyped_storage().data_ptr() == source.untyped_storage().data_ptr()


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, dict):
        keys: list[Hashable] = list(value.keys())
        return f"a dict with keys {keys}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"


def layer_readouts(
    modules: Mapping[str, nn.Module], default: NeuronReadout,
    layer_options: Mapping[str, Mapping[str, Any]],
) -> dict[str, NeuronReadout]:
    """The readout of every layer of ``modules`` (:func:`layer_readout`), each checked against
    its module where the module tells how its output is laid out: a recurrent layer
    (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``) has its neurons on the last axis, and its batch on
    axis 0 only with ``batch_first=True``; a readout that would take time steps as neurons, or
    a module that would put them where the batch is read, is an error before any data is
    read.

    Example:
        >>> lstm = nn.LSTM(3, 5, batch_first=True)
        >>> layer_readouts({"lstm": lstm}, NeuronReadout(select_output=0, neuron_dim=-1), {})["lstm"].neuron_dim
        -1
    """
    readouts = {name: layer_readout(name, default, layer_options) for name in modules}
    for name, module in modules.items():
        if isinstance(module, nn.RNNBase):
            _check_recurrent(name, module, readouts[name])
    return readouts


def _check_recurrent(name: str, module: nn.RNNBase, readout: NeuronReadout) -> None:
    kind = type(module).__name__
    fix = ("layer_options={'" + name + "': {'select_output': 0, 'neuron_dim': -1}} with the "
           f"{kind} built with batch_first=True")
    if readout.neuron_dim not in (-1, 2):
        raise SemvecValueError(
            f"Layer {name!r} (nn.{kind}) has its neurons on the last axis of its output, but is "
            f"read with neuron_dim={readout.neuron_dim}, which would take the time steps as "
            f"neurons: read it with {fix}.")
    if not module.batch_first:
        raise SemvecValueError(
            f"Layer {name!r} (nn.{kind}) has batch_first=False, so its output is (T, B, N): "
            "the time steps would be taken as the samples (and the rows would not follow the "
            f"inputs). Build it with batch_first=True, feed it (B, T, F), and read it with {fix}.")


def layer_readout(
    name: str, default: NeuronReadout, layer_options: Mapping[str, Mapping[str, Any]]
) -> NeuronReadout:
    """The readout of layer ``name``: ``default`` with the ``layer_options`` entries whose key
    is ``name`` or a glob pattern matching it (later entries win).

    Example:
        >>> layer_readout("lstm", NeuronReadout(), {"ls*": {"neuron_dim": -1}}).neuron_dim
        -1
    """
    options: dict[str, Any] = {}
    for key, value in layer_options.items():
        if key == name or matches_pattern(key, name):
            options.update(value)
    unknown = set(options) - {"reduction", "neuron_dim", "select_output"}
    if unknown:
        raise SemvecValueError(
            f"Unknown layer_options {sorted(unknown)} for {name!r}: use reduction, "
            "neuron_dim or select_output."
        )
    return NeuronReadout(
        options.get("reduction", default.reduction),
        options.get("neuron_dim", default.neuron_dim),
        options.get("select_output", default.select_output),
    )
