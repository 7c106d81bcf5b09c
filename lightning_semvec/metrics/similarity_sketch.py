"""A randomized sketch of a wide layer's activation similarity, streamed over batches and
processes: the top eigenpairs of ``S`` in ``O(N (d + p))`` memory, never ``N x N``."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_semvec._utils.checks import check_int
from lightning_semvec.functional.neuron_statistics import (
    alive_from_moments,
    check_activation_matrix,
)
from lightning_semvec.functional.optimal_embedding import nystrom_eigenpairs
from lightning_semvec.functional.similarity import SimilarityKind, check_similarity_kind

__all__ = ["SketchedSimilarity"]

#: Neurons cast to float64 at once while a batch is added (bounds the float64 copy).
_BLOCK = 4096


class SketchedSimilarity(Metric):
    """Streams ``Y = S Omega`` for a layer's activation similarity ``S``, never forming ``S``.

    With ``A`` the ``(M, N)`` activations of every batch seen, ``update`` adds the moments
    (count, sums, sums of squares, largest magnitude) and ``A.T (A W)`` for the current test
    matrix ``W`` (``(N, k)``); ``compute`` centres and scales that product into ``Y = S Omega``
    with ``Omega = D^(1/2) W`` (``D`` the neurons' centred squared norms) and returns the
    Nystrom eigenpairs of ``S`` (:func:`~lightning_semvec.functional.optimal_embedding.nystrom_eigenpairs`).
    A power pass over the same data with :meth:`power_test_matrix` (then :meth:`reset`) makes
    them closer to the exact ones. States are sums, so under DDP each process adds its share
    and every process computes the same result.

    Memory: the ``(N, k)`` float64 product and test matrix, ``16 N k`` bytes (21 MiB each for
    ``N = 65,536``, ``k = 40``), plus ``(M, 4096)`` float32 temporaries of each batch. The
    products of a batch are float32 (their rounding is ``1e-7`` of the batch's term); the
    moments, the sums of products and everything after are float64.

    Args:
        num_neurons: ``N >= 3``.
        rank: ``k``, columns of the test matrix (the semantic dimension plus oversampling).
        similarity: ``"pearson"`` (default) or ``"cosine"``.
        seed: seeds the first (Gaussian) test matrix, the same on every process.
        kwargs: passed to :class:`torchmetrics.Metric`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> acts = torch.randn(500, 3, generator=g) @ torch.randn(3, 40, generator=g)
        >>> sketch = SketchedSimilarity(num_neurons=40, rank=8)
        >>> sketch.update(acts)
        >>> values, vectors, alive = sketch.compute()
        >>> from lightning_semvec.functional import activation_similarity
        >>> exact = torch.linalg.eigvalsh(activation_similarity(acts).double()).flip(0)[:3].float()
        >>> torch.allclose(values[:3], exact, rtol=1e-5), values[3:].abs().max().item() < 1e-3
        (True, True)
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    count: Tensor
    sums: Tensor
    sums_sq: Tensor
    max_abs: Tensor
    product: Tensor
    test_matrix: Tensor

    def __init__(
        self,
        num_neurons: int,
        rank: int,
        similarity: str = "pearson",
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        check_int("num_neurons", num_neurons, 3)
        check_int("rank", rank, 1, num_neurons, hint=f"(N = {num_neurons} neurons).")
        check_similarity_kind(similarity)
        super().__init__(**kwargs)
        self.num_neurons, self.rank = num_neurons, rank
        self.similarity: SimilarityKind = cast(SimilarityKind, similarity)  # checked by check_similarity_kind above
        generator = torch.Generator().manual_seed(check_int("seed", seed))
        f64 = torch.float64
        # A buffer, not a state: it follows .to() but is not reset or summed across processes.
        self.register_buffer(
            "test_matrix", torch.randn(num_neurons, rank, generator=generator, dtype=f64),
            persistent=False,
        )
        self.add_state("count", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("sums", torch.zeros(num_neurons, dtype=f64), dist_reduce_fx="sum")
        self.add_state("sums_sq", torch.zeros(num_neurons, dtype=f64), dist_reduce_fx="sum")
        self.add_state("max_abs", torch.zeros(num_neurons, dtype=f64), dist_reduce_fx="max")
        self.add_state("product", torch.zeros(num_neurons, rank, dtype=f64), dist_reduce_fx="sum")

    def set_dtype(self, dst_type: str | torch.dtype) -> Metric:
        """The states and the test matrix stay float64 (Pearson moments cancel in float32)."""
        return self

    def update(self, activations: Tensor) -> None:
        """Add a batch of ``(M, num_neurons)`` activations (any real dtype)."""
        check_activation_matrix(activations, self.num_neurons)
        if activations.shape[0] == 0:
            return
        x = activations.detach()
        if x.dtype != torch.float32:
            x = x.float()
        w = self.test_matrix.to(torch.float32)  # (N, k): small next to a batch
        projected = x.new_zeros(x.shape[0], self.rank)
        # Blocks of neurons: the temporaries stay (M, 4096) whatever N. Products in float32
        # (their rounding is 1e-7 of each batch's term), sums of the moments in float64.
        for start in range(0, self.num_neurons, _BLOCK):
            block = x[:, start : start + _BLOCK]
            projected += block @ w[start : start + _BLOCK]
            self.sums[start : start + _BLOCK] += block.sum(dim=0, dtype=torch.float64)
            self.sums_sq[start : start + _BLOCK] += block.square().sum(dim=0, dtype=torch.float64)
            self.max_abs[start : start + _BLOCK] = torch.maximum(
                self.max_abs[start : start + _BLOCK], block.abs().amax(dim=0).double()
            )
        for start in range(0, self.num_neurons, _BLOCK):
            self.product[start : start + _BLOCK] += x[:, start : start + _BLOCK].T @ projected
        self.count += x.shape[0]

    def _scaled_sketch(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(Omega, Y, alive, inverse norms)`` of the current (gathered) states; ``Y`` and
        ``Omega`` are new ``(N, k)`` tensors, the only two made (memory)."""
        kind = self.similarity
        alive = alive_from_moments(self.count, self.sums, self.sums_sq, self.max_abs, kind)
        if kind == "pearson":
            centred_sq = self.sums_sq - self.sums.square() / self.count.clamp_min(1.0)
            sketch = torch.addr(self.product, self.sums, self.sums @ self.test_matrix,
                                alpha=-1.0 / float(self.count.clamp_min(1.0)))
        else:
            centred_sq, sketch = self.sums_sq, self.product.clone()
        norms = torch.where(alive, centred_sq.clamp_min(0.0).sqrt(), torch.zeros_like(centred_sq))
        inverse = torch.where(alive, 1.0 / torch.where(alive, norms, torch.ones_like(norms)), 0.0)
        sketch.mul_(inverse.unsqueeze(1))
        omega = self.test_matrix * norms.unsqueeze(1)
        return omega, sketch, alive, inverse

    def _nystrom_inputs(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(Omega, Y, alive)`` in float32 for the Nystrom step: centred and scaled in float64,
        then halved (the eigenpairs need no more; a wide layer's peak memory does)."""
        omega, sketch, alive, _ = self._scaled_sketch()
        sketch = sketch.float()
        return omega.float(), sketch, alive

    def compute(self) -> tuple[Tensor, Tensor, Tensor]:
        """The top eigenpairs of the activation similarity over all data seen.

        Returns:
            ``(eigenvalues, eigenvectors, alive)``: ``(k,)`` float32 largest first,
            ``(N, k)`` float32 orthonormal columns (zero rows for dead neurons) and ``(N,)``
            bool.
        """
        omega, sketch, alive = self._nystrom_inputs()
        if bool(alive.all()):  # no copies of the alive rows
            values, vectors = nystrom_eigenpairs(omega, sketch)
            return values, vectors, alive
        values, vectors = nystrom_eigenpairs(omega[alive], sketch[alive])
        full = vectors.new_zeros(self.num_neurons, vectors.shape[1])
        full[alive] = vectors
        return values, full, alive

    def power_test_matrix(self) -> Tensor:
        """The test matrix of a power pass: ``D^(-1/2) Q`` with ``Q`` an orthonormal basis of
        the current ``Y``, so that the next pass sketches ``S Q``. Call after the pass's
        updates (it gathers under DDP), then :meth:`set_test_matrix` and :meth:`reset`."""
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn, process_group=self.process_group,
            should_sync=self.sync_on_compute,
        ):
            _, sketch, _, inverse = self._scaled_sketch()
        basis = torch.linalg.qr(sketch)[0]
        return basis * inverse.unsqueeze(1)

    def set_test_matrix(self, test_matrix: Tensor) -> None:
        """Use ``test_matrix`` (``(N, k)``) for the next updates."""
        if test_matrix.shape != self.test_matrix.shape:
            raise ValueError(
                f"test_matrix must be {tuple(self.test_matrix.shape)}, got {tuple(test_matrix.shape)}."
            )
        self.test_matrix = test_matrix.to(self.test_matrix)
