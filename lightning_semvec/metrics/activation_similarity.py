"""The activation similarity of a held-out set, streamed over batches and processes."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_semvec._utils.checks import check_int
from lightning_semvec.functional.neuron_statistics import (
    check_activation_matrix,
    similarity_from_moments,
)
from lightning_semvec.functional.similarity import SimilarityKind, check_similarity_kind


class ActivationSimilarity(Metric):
    """Streams the ``(n, n)`` activation similarity of a fixed subset of a layer's neurons.

    ``update`` adds the first two moments of a batch of activations; ``compute`` turns the
    moments of all data seen (every batch, every process) into the activation similarity,
    Pearson by default as in training, or cosine. The result equals
    :func:`~lightning_semvec.functional.similarity.activation_similarity` of the concatenated
    data restricted to the tracked neurons, to float precision.

    Wide layers: when ``num_neurons > max_neurons`` a fixed random subset of ``max_neurons``
    neurons is drawn once from ``torch.Generator().manual_seed(seed)`` (the same on every
    process), kept in :attr:`neuron_indices` (sorted), and only those neurons are tracked,
    so the state never exceeds ``max_neurons**2`` float64 numbers (32 MiB at 2048).

    Args:
        num_neurons: ``N >= 2``, the layer's number of neurons (columns of the activations).
        similarity: ``"pearson"`` (default) or ``"cosine"``.
        max_neurons: most neurons tracked (at least 2); wider layers are subsampled.
        seed: seed of the subset of neurons for wide layers.
        kwargs: passed to :class:`torchmetrics.Metric` (``sync_on_compute``, ...).

    States (summed across processes, except ``max_abs``, reduced by max):
        ``count`` (), ``sums`` (n,), ``outer`` (n, n), ``max_abs`` (n,), float64, with
        ``n = min(num_neurons, max_neurons)``.

    Note:
        Under DDP, :meth:`compute` gathers the states (torchmetrics' ``sync_on_compute``), so
        every process must call it, and each gets the similarity of the whole set.

        The states are float64 because Pearson moments cancel: ``sum(a**2) - sum(a)**2 / M``
        keeps about ``1e-16`` of the magnitude in float64 but ``3e-4`` in float32, enough to
        make a constant neuron look alive. ``set_dtype(torch.float32)`` works (for a device
        without float64, such as MPS) at that cost.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> acts = torch.randn(256, 3, generator=g) @ torch.randn(3, 6, generator=g)
        >>> acts[:, 2] = 1.0  # a constant neuron is dead
        >>> metric = ActivationSimilarity(num_neurons=6)
        >>> for batch in acts.split(100):
        ...     metric.update(batch)
        >>> similarity, alive = metric.compute()
        >>> similarity.shape, alive.tolist()
        (torch.Size([6, 6]), [True, True, False, True, True, True])
        >>> from lightning_semvec.functional import activation_similarity
        >>> torch.allclose(similarity, activation_similarity(acts), atol=1e-5)
        True
    """

    is_differentiable = False
    higher_is_better: bool | None = None
    full_state_update = False

    count: Tensor
    sums: Tensor
    outer: Tensor
    max_abs: Tensor

    def __init__(
        self,
        num_neurons: int,
        similarity: str = "pearson",
        max_neurons: int = 2048,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        # two at least: a similarity is between neurons (and torchmetrics squeezes 1-element
        # results to scalars, which would lose the (1, 1) shape)
        check_int("num_neurons", num_neurons, 2)
        check_similarity_kind(similarity)
        check_int("max_neurons", max_neurons, 2)
        check_int("seed", seed)
        super().__init__(**kwargs)
        self.num_neurons = num_neurons
        self.similarity: SimilarityKind = cast(SimilarityKind, similarity)  # checked by check_similarity_kind above
        self.max_neurons = max_neurons
        self.seed = seed
        if num_neurons > max_neurons:
            generator = torch.Generator().manual_seed(seed)
            indices = torch.randperm(num_neurons, generator=generator)[:max_neurons].sort().values
        else:
            indices = torch.arange(num_neurons)
        # a plain attribute, not a buffer: ``set_dtype`` would turn a buffer into floats
        self._neuron_indices = indices

        tracked = int(indices.numel())
        f64 = torch.float64
        self.add_state("count", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("sums", torch.zeros(tracked, dtype=f64), dist_reduce_fx="sum")
        self.add_state("outer", torch.zeros(tracked, tracked, dtype=f64), dist_reduce_fx="sum")
        self.add_state("max_abs", torch.zeros(tracked, dtype=f64), dist_reduce_fx="max")

    @property
    def neuron_indices(self) -> Tensor:
        """``(n,)`` int64 (CPU), the sorted indices of the tracked neurons in ``[0, N)``."""
        return self._neuron_indices

    @property
    def num_tracked(self) -> int:
        """Number of neurons tracked, ``n = min(num_neurons, max_neurons)``."""
        return int(self._neuron_indices.numel())

    def update(self, activations: Tensor) -> None:
        """Add a batch of ``(M, num_neurons)`` activations (any real dtype; float64 sums)."""
        check_activation_matrix(activations, self.num_neurons)
        if activations.shape[0] == 0:
            return
        x = activations.detach()
        if self.num_tracked < self.num_neurons:
            x = x.index_select(1, self._neuron_indices.to(x.device))
        x = x.to(self.outer.dtype)
        self.count += x.shape[0]
        self.sums += x.sum(dim=0)
        self.outer += x.T @ x
        self.max_abs = torch.maximum(self.max_abs, x.abs().amax(dim=0))

    def _similarity_of_states(self) -> tuple[Tensor, Tensor]:
        """The similarity (in the states' dtype, float64) and alive mask of the current states;
        gathered states when called inside a synced ``compute``."""
        return similarity_from_moments(
            self.count,
            self.sums,
            self.outer,
            self.max_abs,
            self.similarity,
        )

    def compute(self) -> tuple[Tensor, Tensor]:
        """The activation similarity of the tracked neurons over all data seen.

        Returns:
            ``(similarity, alive)``: ``(n, n)`` float32 (dead neurons' rows and columns zero,
            diagonal 1 for alive ones) and ``(n,)`` bool, in the order of
            :attr:`neuron_indices`.
        """
        similarity, alive = self._similarity_of_states()
        return similarity.to(torch.float32), alive
