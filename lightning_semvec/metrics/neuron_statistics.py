"""Per-neuron statistics over a labelled set: means, class means, selectivity, dead neurons."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_semvec._utils.checks import check_int
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.functional.neuron_statistics import (
    alive_from_moments,
    check_activation_matrix,
    class_selectivity,
)


class NeuronActivationStatistics(Metric):
    """Streams class-conditional activation statistics of one layer's neurons.

    ``update(activations, labels)`` adds per-class sums and counts, the overall sum, sum of
    squares, largest magnitude and smallest value (float64). ``compute()`` returns a dict:

    - ``"mean_activation"`` ``(N,)``: mean over all samples seen;
    - ``"class_means"`` ``(C, N)``: mean over the samples of each class (NaN rows for classes
      with no sample);
    - ``"class_counts"`` ``(C,)``: samples seen per class;
    - ``"selectivity"`` ``(N,)``: class selectivity index (Morcos et al., 2018) over the
      classes that had samples, in ``[0, 1]``, see
      :func:`~lightning_semvec.functional.neuron_statistics.class_selectivity`. A neuron whose
      activations go below 0 (logits, pre-ReLU layers) gets the index of its activations
      shifted up by their minimum; non-negative ones get Morcos et al.'s index unchanged. NaN
      if fewer than two classes had samples;
    - ``"preferred_class"`` ``(N,)`` int64: the class with the largest mean (for a dead
      neuron, whose class means are all equal, it says nothing: the report leaves it empty);
    - ``"dead"`` ``(N,)`` bool: neurons that never varied over the data seen (zero variance,
      same tolerance as the alignment loss's dead-neuron mask).

    Float outputs are float32. All states are summed across processes (``max_abs`` by max,
    ``minimum`` by min), so under DDP each process updates with its share and ``compute()``
    covers the whole set.

    Args:
        num_neurons: ``N``, columns of the activations.
        num_classes: ``C >= 2``, labels lie in ``[0, C)``.
        validate_args: check that labels are in range on every update (one host sync per
            batch); without it an out-of-range label raises inside ``one_hot``.
        kwargs: passed to :class:`torchmetrics.Metric`.

    Example:
        >>> stats = NeuronActivationStatistics(num_neurons=3, num_classes=2)
        >>> acts = torch.tensor([[4.0, 1.0, 2.0], [2.0, 1.0, 2.0], [0.0, 3.0, 2.0]])
        >>> stats.update(acts, torch.tensor([0, 0, 1]))
        >>> out = stats.compute()
        >>> out["class_means"].tolist()
        [[3.0, 1.0, 2.0], [0.0, 3.0, 2.0]]
        >>> [round(v, 3) for v in out["selectivity"].tolist()]
        [1.0, 0.5, 0.0]
        >>> signed = NeuronActivationStatistics(num_neurons=2, num_classes=2)
        >>> acts = torch.tensor([[2.0, 1.0], [-2.0, 1.0], [-2.0, 0.0]])  # neuron 0 signed
        >>> signed.update(acts, torch.tensor([0, 1, 1]))
        >>> [round(v, 3) for v in signed.compute()["selectivity"].tolist()]  # neuron 0 on a + 2
        [1.0, 0.333]
        >>> out["preferred_class"].tolist(), out["dead"].tolist()
        ([0, 1, 0], [False, False, True])
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    count: Tensor
    sums: Tensor
    sums_sq: Tensor
    max_abs: Tensor
    minimum: Tensor
    class_sums: Tensor
    class_counts: Tensor

    def __init__(
        self, num_neurons: int, num_classes: int, validate_args: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.num_neurons = check_int("num_neurons", num_neurons, 1)
        self.num_classes = check_int("num_classes", num_classes, 2)
        self.validate_args = validate_args
        f64 = torch.float64
        self.add_state("count", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("sums", torch.zeros(num_neurons, dtype=f64), dist_reduce_fx="sum")
        self.add_state("sums_sq", torch.zeros(num_neurons, dtype=f64), dist_reduce_fx="sum")
        self.add_state("max_abs", torch.zeros(num_neurons, dtype=f64), dist_reduce_fx="max")
        self.add_state(
            "minimum", torch.full((num_neurons,), float("inf"), dtype=f64), dist_reduce_fx="min"
        )
        self.add_state(
            "class_sums", torch.zeros(num_classes, num_neurons, dtype=f64), dist_reduce_fx="sum"
        )
        self.add_state("class_counts", torch.zeros(num_classes, dtype=f64), dist_reduce_fx="sum")

    def update(self, activations: Tensor, labels: Tensor) -> None:
        """Add ``(M, N)`` activations (any real dtype) with their ``(M,)`` integer labels."""
        check_activation_matrix(activations, self.num_neurons)
        if not isinstance(labels, Tensor) or labels.shape != (activations.shape[0],):
            shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels)
            raise SemvecValueError(
                f"labels must be a ({activations.shape[0]},) tensor, one per sample, got {shape}."
            )
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise SemvecValueError(f"labels must be integer class indices, got dtype {labels.dtype}.")
        if activations.shape[0] == 0:
            return
        if self.validate_args:
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= self.num_classes:
                raise SemvecValueError(
                    f"labels must lie in [0, {self.num_classes}), got values in [{low}, {high}]."
                )
        x = activations.detach().to(self.sums.dtype)
        one_hot = torch.nn.functional.one_hot(labels.long(), self.num_classes).to(x.dtype)
        self.count += x.shape[0]
        self.sums += x.sum(dim=0)
        self.sums_sq += (x * x).sum(dim=0)
        self.max_abs = torch.maximum(self.max_abs, x.abs().amax(dim=0))
        self.minimum = torch.minimum(self.minimum, x.amin(dim=0))
        self.class_sums += one_hot.T @ x
        self.class_counts += one_hot.sum(dim=0)

    def compute(self) -> dict[str, Tensor]:
        """The statistics described in the class docstring, over all data seen."""
        mean_activation = self.sums / self.count  # NaN before any update
        present = self.class_counts > 0
        class_means = self.class_sums / self.class_counts.unsqueeze(1)
        selectivity, preferred = class_selectivity(
            class_means, present=present, minimum=self.minimum
        )
        alive = alive_from_moments(self.count, self.sums, self.sums_sq, self.max_abs, "pearson")
        return {
            "mean_activation": mean_activation.to(torch.float32),
            "class_means": class_means.to(torch.float32),
            "class_counts": self.class_counts.to(torch.float32),
            "selectivity": selectivity.to(torch.float32),
            "preferred_class": preferred,
            "dead": ~alive,
        }
