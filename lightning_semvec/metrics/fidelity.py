"""Fidelity of semantic vectors: do they reproduce the held-out activation similarity?"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_semvec._utils.checks import check_int
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.functional.fidelity import fidelity_upper_bound, semantic_fidelity
from lightning_semvec.metrics.activation_similarity import ActivationSimilarity


class SemanticFidelity(ActivationSimilarity):
    """Spearman's rho and neighbour agreement between held-out ``S_act`` and ``S_sem``.

    An :class:`ActivationSimilarity` (same ``update``, states and wide-layer subset) whose
    ``compute`` scores semantic vectors against the streamed similarity with
    :func:`~lightning_semvec.functional.fidelity.semantic_fidelity`, over the neurons that are
    alive on the whole set:

    - ``"spearman"``: Spearman's rho between the pairs ``i < j`` of both matrices
      (random vectors give about 0; see :meth:`upper_bound` for the best ``d``-dim fit);
    - ``"neighbour_agreement"``: mean over neurons of ``|kNN_act(i) ∩ kNN_sem(i)| / k``
      (random vectors give about ``k / (n - 1)``).

    The vectors are not a metric state: they are a detached snapshot set with
    :meth:`set_vectors` (or the ``vectors`` argument), kept across :meth:`reset`, and should be
    the same on every process (as the semantic vectors callback keeps them). Because the result
    depends on them, ``compute`` is not cached (torchmetrics' ``compute_with_cache`` is off).

    Args:
        num_neurons: ``N``, the layer's number of neurons (columns of the activations).
        similarity: activation similarity, ``"pearson"`` (default) or ``"cosine"``.
        max_neurons: most neurons tracked (at least 3); wider layers are subsampled.
        k: neighbours per neuron for neighbour agreement, ``1 <= k < min(N, max_neurons)``.
        seed: seed of the subset of neurons for wide layers.
        vectors: optional ``(N, d)`` semantic vectors, as with :meth:`set_vectors`.
        kwargs: passed to :class:`torchmetrics.Metric` (``sync_on_compute``, ...), except
            ``compute_with_cache=True``.

    Note:
        Under DDP, :meth:`compute`, :meth:`compute_similarity` and :meth:`upper_bound` each
        gather the states for their own use and restore the local ones after (torchmetrics'
        ``sync_context``), so every process must call them together, and calling one after
        the other counts every sample once. ``forward`` (calling the metric on a batch) needs
        vectors too; prefer ``update`` and ``compute``.

    Example:
        >>> from lightning_semvec.functional.neuron_statistics import best_rank_d_vectors
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

    higher_is_better = True

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
        check_int("num_neurons", num_neurons, 3)
        check_int("max_neurons", max_neurons, 3)
        tracked = min(num_neurons, max_neurons)
        check_int("k", k, 1)
        if k >= tracked:
            raise SemvecValueError(
                f"k must be smaller than the number of tracked neurons "
                f"min(num_neurons, max_neurons) = {tracked}, got k = {k}."
            )
        if kwargs.pop("compute_with_cache", False):
            raise SemvecValueError(
                "SemanticFidelity cannot cache compute(): its result depends on the vectors "
                "given by set_vectors, which torchmetrics' cache does not see. Leave "
                "compute_with_cache out."
            )
        super().__init__(
            num_neurons, similarity, max_neurons, seed, compute_with_cache=False, **kwargs
        )
        self.k = k
        self._vectors: Tensor | None = None
        if vectors is not None:
            self.set_vectors(vectors)

    @property
    def vectors(self) -> Tensor | None:
        """The ``(N, d)`` float32 snapshot of the vectors given to :meth:`set_vectors`."""
        return self._vectors

    def set_vectors(self, vectors: Tensor) -> None:
        """Give the ``(num_neurons, d)`` semantic vectors to compare with (a detached copy).

        Vectors for all ``N`` neurons are expected even when only a subset is tracked.
        """
        if not isinstance(vectors, Tensor) or vectors.ndim != 2:
            shape = tuple(vectors.shape) if isinstance(vectors, Tensor) else type(vectors)
            raise SemvecValueError(f"vectors must be a (neurons, dim) tensor, got {shape}.")
        if vectors.shape[0] != self.num_neurons or vectors.shape[1] < 1:
            raise SemvecValueError(
                f"vectors must be ({self.num_neurons}, d) with d >= 1 for this layer of "
                f"{self.num_neurons} neurons, got {tuple(vectors.shape)}."
            )
        self._vectors = vectors.detach().to(torch.float32).clone()

    def _synced_similarity(self) -> tuple[Tensor, Tensor]:
        """The float64 similarity of the whole set, gathered as ``compute`` gathers it."""
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn,
            process_group=self.process_group,
            should_sync=self.sync_on_compute,
        ):
            return self._similarity_of_states()

    def compute_similarity(self) -> tuple[Tensor, Tensor]:
        """The streamed activation similarity of the tracked neurons over all data seen.

        What :meth:`ActivationSimilarity.compute` returns, whatever the vectors.

        Returns:
            ``(similarity, alive)``: ``(n, n)`` float32 (dead neurons' rows and columns zero,
            diagonal 1 for alive ones) and ``(n,)`` bool, in the order of ``neuron_indices``.
        """
        similarity, alive = self._synced_similarity()
        return similarity.to(torch.float32), alive

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]  # a dict of scores, not the base class's (similarity, alive)
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
        # torchmetrics' compute wrapper has gathered the states around this call
        s_act, alive = self._similarity_of_states()
        index = self.neuron_indices.to(self._vectors.device)
        vectors = self._vectors.index_select(0, index)
        scores = semantic_fidelity(s_act, alive, vectors, k=self.k)
        return {name: value.to(torch.float32) for name, value in scores.items()}

    def upper_bound(self, dim: int) -> Tensor:
        """Spearman's rho reached by the best rank-``dim`` vectors of the streamed ``S_act``.

        See :func:`~lightning_semvec.functional.fidelity.fidelity_upper_bound`: the vectors
        are :func:`~lightning_semvec.functional.neuron_statistics.best_rank_d_vectors` of the
        activation similarity of the alive tracked neurons, scored as :meth:`compute` scores
        learned vectors.

        Args:
            dim: ``d``, the semantic dimension, ``1 <= dim <= number of alive neurons``.

        Returns:
            A float32 scalar (NaN when fewer than 3 neurons are alive).
        """
        check_int("dim", dim, 1)  # before the gather: a bad dim must not cost a collective
        s_act, alive = self._synced_similarity()
        return fidelity_upper_bound(s_act, alive, dim).to(torch.float32)
