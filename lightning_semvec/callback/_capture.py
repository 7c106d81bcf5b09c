"""``LayerCapture``: what the callback's forward hooks keep during one training step or one
validation batch. One capture path for both: the callback opens a capture for the phase
(a training step that can update, an analysed validation epoch) and its hooks add to it,
whatever mode each module is in (a frozen backbone kept in eval mode during fit counts)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_semvec._utils.warning_cache import WarningCache
from lightning_semvec.capture.readout import NeuronReadout
from lightning_semvec.errors import SemvecValueError

__all__ = ["LayerCapture"]

NeuronSubset = Callable[[int, int, torch.device], "Tensor | None"]


class LayerCapture:
    """The ``(M, N)`` activations of the named layers, kept as the forward runs.

    Args:
        names: the layers to keep.
        step: the training step (seeds the neuron subsets of wide layers).
        neuron_subset: ``(N, step, device) -> indices or None``; a layer with a subset keeps
            only those neurons, taken in the hook so the full output can go as soon as autograd
            is done with it (a 65,536-neuron layer costs memory for its subset alone).
        messages: the owner's once-only messages.

    Example:
        >>> import torch
        >>> from lightning_semvec._utils.warning_cache import WarningCache
        >>> capture = LayerCapture(["fc"], messages=WarningCache("SemanticVectorCallback"))
        >>> capture.wants("fc"), capture.wants("conv")
        (True, False)
        >>> readout = NeuronReadout()
        >>> capture.add("fc", torch.ones(4, 3), readout); capture.add("fc", torch.zeros(2, 3), readout, call=1)
        >>> capture.activations("fc").shape
        torch.Size([6, 3])
    """

    def __init__(
        self,
        names: Sequence[str],
        *,
        step: int = 0,
        neuron_subset: NeuronSubset | None = None,
        messages: WarningCache,
    ) -> None:
        self.step = step
        self.neuron_subset = neuron_subset
        self.messages = messages
        self.chunks: dict[str, list[Tensor]] = {name: [] for name in names}
        self.widths: dict[str, int] = {}  # full widths, before any neuron subset
        self.subsets: dict[str, Tensor] = {}  # this step's neuron subset of each wide layer

    def wants(self, name: str) -> bool:
        """Whether calls of layer ``name`` are kept."""
        return name in self.chunks

    def add(self, name: str, output: Any, readout: NeuronReadout, *, call: int = 0) -> None:
        """Keep one call's ``(M, N)`` activations, read from the layer's ``output``.

        What is kept never shares memory with the output (a later in-place op on it, such as
        ``ReLU(inplace=True)`` or ``out += identity``, cannot change it); a wide layer's subset
        is read directly, copying only its neurons. Several calls per forward are stacked as
        samples (with a one-time warning): ``call`` is this call's index in the forward, as
        the :class:`~lightning_semvec.capture.hooks.ForwardHookManager` counted it. Raised
        inside the forward, before any backward, so a bad layer choice changes nothing.
        """
        width = readout.num_neurons(output, name)
        chunks = self.chunks[name]
        first = self.widths.setdefault(name, width)
        if call:
            if first != width:
                raise SemvecValueError(
                    f"Layer {name!r} is called more than once per forward with different widths "
                    f"({first} and {width} neurons), so its neurons are not one set. This "
                    "happens with a module reused in several places (a shared nn.ReLU, say): "
                    "hook a module used once, or give each use its own module."
                )
            self.messages.warn(
                f"calls:{name}",
                f"{self.messages.owner}: layer {name!r} is called more than once per forward; "
                "its calls are stacked as extra samples. If the calls are different places in "
                "the network (a shared activation module), hook modules used once instead.",
            )
        subset = None
        if self.neuron_subset is not None:
            subset = self.subsets.get(name)
            if subset is None:
                device = readout.select(output, name).device
                subset = self.neuron_subset(width, self.step, device)
                if subset is not None:
                    self.subsets[name] = subset
        chunks.append(readout.read(output, name, copy=True, neurons=subset))

    def activations(self, name: str) -> Tensor:
        """All kept calls of ``name`` as one ``(M, N)`` (or ``(M, K)`` subset) tensor."""
        chunks = self.chunks[name]
        return torch.cat(chunks) if len(chunks) > 1 else chunks[0]

    def take(self) -> dict[str, list[Tensor]]:
        """Hand over what was kept and start empty (for the next validation batch)."""
        chunks = self.chunks
        self.chunks = {name: [] for name in chunks}
        self.widths = {}
        return chunks
