"""Fidelity of semantic vectors: do they reproduce the held-out activation similarity?"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import rank_zero_warn

from lightning_semvec.functional.neuron_statistics import (
    best_rank_d_vectors,
    neighbour_agreement,
    similarity_from_moments,
    spearman_upper_triangle,
)
from lightning_semvec.functional.similarity import check_similarity_kind, semantic_similarity
from lightning_semvec.functional.neuron_statistics import check_activation_matrix


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return value


class SemanticFidelity(Metric):
    """Spearman's rho and neighbour agreement between held-out ``S_act`` and ``S_sem``.

    ``update`` streams the first two moments of a layer's activations over a held-out set
    (any number of batches, any number of processes); ``compute`` builds the activation
    similarity of the whole set from them (Pearson by default, as in training), takes the
    semantic similarity of the vectors given by :meth:`set_vectors`, and compares the two over
    the neurons that are alive on the whole set:

    - ``"spearman"``: Spearman's rho between the pairs ``i < j`` of both matrices
      (random vectors give about 0; see :meth:`upper_bound` for the best ``d``-dim fit);
    - ``"neighbour_agreement"``: mean over neurons of ``|kNN_act(i) ∩ kNN_sem(i)| / k``
      (random vectors give about ``k / (n - 1)``).

    Wide layers: when ``num_neurons > max_neurons`` a fixed random subset of ``max_neurons``
    neurons is drawn once from ``torch.Generator().manual_seed(seed)`` (the same on every
    process), kept in :attr:`neuron_indices` (sorted), and only those neurons are tracked,
    so the state never exceeds ``max_neurons**2`` float64 numbers (32 MiB at 2048).

    The vectors are not a metric state: they are a detached snapshot set with
    :meth:`set_vectors` (or the ``vectors`` argument), kept across :meth:`reset`, and should be
    the same on every process (as the semantic vectors callback keeps them). Setting new vectors
    clears torchmetrics' cached ``compute`` result.

    Args:
        num_neurons: ``N``, the layer's number of neurons (columns of the activations).
        similarity: activation similarity, ``"pearson"`` (default) or ``"cosine"``.
        max_neurons: most neurons tracked (at least 3); wider layers are subsampled.
        k: neighbours per neuron for neighbour agreement, ``1 <= k < min(N, max_neurons)``.
        seed: seed of the subset of neurons for wide layers.
        vectors: optional ``(N, d)`` semantic vectors, as with :meth:`set_vectors`.
        kwargs: passed to :class:`torchmetrics.Metric` (``sync_on_compute``, ...).

    States (all summed across processes, except ``max_abs``, reduced by max):
        ``count`` (), ``sums`` (n,), ``outer`` (n, n), ``max_abs`` (n,), float64, with
        ``n = min(num_neurons, max_neurons)``.

    Note:
        Under DDP, :meth:`compute`, :meth:`compute_similarity` and :meth:`upper_bound` gather
        the states, so every process must call them together. ``forward`` (calling the metric
        on a batch) needs vectors too; prefer ``update`` and ``compute``.

        The states are float64 because Pearson moments cancel: ``sum(a**2) - sum(a)**2 / M``
        keeps about ``1e-16`` of the magnitude in float64 but ``3e-4`` in float32, enough to
        make a constant neuron look alive. ``set_dtype(torch.float32)`` works (for a device
        without float64, such as MPS) at that cost.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> latent = torch.randn(512, 3, generator=g)
        >>> acts = latent @ torch.randn(3, 40, generator=g)  # 40 neurons driven by 3 factors
        >>> fidelity = SemanticFidelity(num_neurons=40, k=5)
        >>> for batch in acts.split(128):
        ...     fidelity.update(batch)
        >>> s_act, alive = fidelity.compute_similarity()
        >>> s_act.shape, bool(alive.all())
        (torch.Size([40, 40]), True)
        >>> fidelity.set_vectors(best_rank_d_vectors(s_act, 3))
        >>> result = fidelity.compute()
        >>> sorted(result), result["spearman"].item() > 0.99
        (['neighbour_agreement', 'spearman'], True)
        >>> fidelity.set_vectors(torch.randn(40, 3, generator=g))
        >>> abs(fidelity.compute()["spearman"].item()) < 0.2
        True
    """

    is_differentiable = False
    higher_is_better = True
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
        k: int = 5,
        seed: int = 0,
        vectors: Tensor | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_neurons = _check_int("num_neurons", num_neurons, 3)
        check_similarity_kind(similarity)
        self.similarity = similarity
        self.max_neurons = _check_int("max_neurons", max_neurons, 3)
        tracked = min(num_neurons, max_neurons)
        self.k = _check_int("k", k, 1)
        if k >= tracked:
            raise ValueError(
                f"k must be smaller than the number of tracked neurons "
                f"min(num_neurons, max_neurons) = {tracked}, got k = {k}."
            )
        self.seed = seed
        if num_neurons > max_neurons:
            generator = torch.Generator().manual_seed(seed)
            indices = torch.randperm(num_neurons, generator=generator)[:max_neurons].sort().values
        else:
            indices = torch.arange(num_neurons)
        # a plain attribute, not a buffer: ``set_dtype`` would turn a buffer into floats
        self._neuron_indices = indices

        f64 = torch.float64
        self.add_state("count", torch.zeros((), dtype=f64), dist_reduce_fx="sum")
        self.add_state("sums", torch.zeros(tracked, dtype=f64), dist_reduce_fx="sum")
        self.add_state("outer", torch.zeros(tracked, tracked, dtype=f64), dist_reduce_fx="sum")
        self.add_state("max_abs", torch.zeros(tracked, dtype=f64), dist_reduce_fx="max")
        self._vectors: Tensor | None = None
        if vectors is not None:
            self.set_vectors(vectors)

    @property
    def neuron_indices(self) -> Tensor:
        """``(n,)`` int64 (CPU), the sorted indices of the tracked neurons in ``[0, N)``."""
        return self._neuron_indices

    @property
    def num_tracked(self) -> int:
        """Number of neurons tracked, ``n = min(num_neurons, max_neurons)``."""
        return int(self._neuron_indices.numel())

    @property
    def vectors(self) -> Tensor | None:
        """The ``(N, d)`` float32 snapshot of the vectors given to :meth:`set_vectors`."""
        return self._vectors

    def set_vectors(self, vectors: Tensor) -> None:
        """Give the ``(num_neurons, d)`` semantic vectors to compare with (a detached copy).

        Vectors for all ``N`` neurons are expected even when only a subset is tracked. Clears
        the cached result of :meth:`compute`.
        """
        if not isinstance(vectors, Tensor) or vectors.ndim != 2:
            shape = tuple(vectors.shape) if isinstance(vectors, Tensor) else type(vectors)
            raise ValueError(f"vectors must be a (neurons, dim) tensor, got {shape}.")
        if vectors.shape[0] != self.num_neurons or vectors.shape[1] < 1:
            raise ValueError(
                f"vectors must be ({self.num_neurons}, d) with d >= 1 for this layer of "
                f"{self.num_neurons} neurons, got {tuple(vectors.shape)}."
            )
        self._vectors = vectors.detach().to(torch.float32).clone()
        self._computed = None

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

    @contextmanager
    def _synced(self) -> Iterator[None]:
        """Gather the states across processes unless ``compute`` already did."""
        if self._is_synced:
            yield
            return
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn,
            should_sync=self._to_sync,
            should_unsync=self._should_unsync,
        ):
            yield

    def _similarity(self) -> tuple[Tensor, Tensor]:
        return similarity_from_moments(
            self.count,
            self.sums,
            self.outer,
            self.max_abs,
            self.similarity,  # type: ignore[arg-type]
        )

    def compute_similarity(self) -> tuple[Tensor, Tensor]:
        """The streamed activation similarity of the tracked neurons over all data seen.

        Returns:
            ``(similarity, alive)``: ``(n, n)`` float32 (dead neurons' rows and columns zero,
            diagonal 1 for alive ones) and ``(n,)`` bool, in the order of ``neuron_indices``.
        """
        with self._synced():
            similarity, alive = self._similarity()
        return similarity.to(torch.float32), alive

    def _alive_indices(self, alive: Tensor, needed: int, what: str) -> Tensor | None:
        index = alive.nonzero().squeeze(1)
        if index.numel() < needed:
            rank_zero_warn(
                f"SemanticFidelity: only {index.numel()} of {alive.numel()} tracked neurons are "
                f"alive on the data seen; {what} needs {needed}, returning NaN.",
                UserWarning,
            )
            return None
        return index

    def compute(self) -> dict[str, Tensor]:
        """``{"spearman": rho, "neighbour_agreement": agreement}`` over alive tracked neurons.

        Each value is a float32 scalar, NaN when too few neurons are alive (3 for Spearman,
        ``k + 1`` for neighbour agreement) or, for Spearman, when either matrix is constant.

        Raises:
            RuntimeError: if no vectors were given (see :meth:`set_vectors`).
        """
        if self._vectors is None:
            raise RuntimeError(
                "SemanticFidelity needs the semantic vectors: call metric.set_vectors(vectors) "
                "(or pass vectors=...) before compute()."
            )
        s_act, alive = self._similarity()
        index = self._neuron_indices.to(self._vectors.device)
        vectors = self._vectors.index_select(0, index).to(s_act.device)
        nan = torch.tensor(float("nan"), device=s_act.device)
        result = {"spearman": nan, "neighbour_agreement": nan.clone()}
        index = self._alive_indices(alive, 3, "Spearman's rho")
        if index is not None:
            s_act = s_act[index][:, index]
            s_sem = semantic_similarity(vectors[index]).to(s_act.dtype)
            result["spearman"] = spearman_upper_triangle(s_act, s_sem)
            if index.numel() > self.k:
                result["neighbour_agreement"] = neighbour_agreement(s_act, s_sem, self.k)
            else:
                self._alive_indices(alive, self.k + 1, "neighbour agreement")
        return {name: value.to(torch.float32) for name, value in result.items()}

    def upper_bound(self, dim: int) -> Tensor:
        """Spearman's rho reached by the best rank-``dim`` vectors of the streamed ``S_act``.

        The vectors are :func:`~lightning_semvec.functional.neuron_statistics.best_rank_d_vectors`
        of the activation similarity restricted to the alive tracked neurons, scored exactly as
        :meth:`compute` scores learned vectors (normalised, then ranked). A reference for
        ``d``-dimensional vectors rather than a strict bound: ranks are not what the fit
        optimises, and learned vectors may occasionally score a little higher.

        Args:
            dim: ``d``, the semantic dimension, ``1 <= dim <= number of alive neurons``.

        Returns:
            A float32 scalar (NaN when fewer than 3 neurons are alive).
        """
        _check_int("dim", dim, 1)
        with self._synced():
            s_act, alive = self._similarity()
        index = self._alive_indices(alive, 3, "the upper bound")
        if index is None:
            return torch.tensor(float("nan"), device=s_act.device)
        s_act = s_act[index][:, index]
        if dim > index.numel():
            raise ValueError(
                f"dim must be an integer with 1 <= dim <= {index.numel()} (alive tracked "
                f"neurons), got {dim!r}."
            )
        best = best_rank_d_vectors(s_act, dim)
        s_sem = semantic_similarity(best).to(s_act.dtype)
        return spearman_upper_triangle(s_act, s_sem).to(torch.float32)
