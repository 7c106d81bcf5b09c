"""The best ``d``-dimensional semantic vectors of a fixed activation similarity.

For one layer and a data set the activation similarity ``S`` is fixed, and the vectors' best
fit is a rank-``d`` problem (``docs/method.md``, "The best the vectors can do"):

- :func:`eigen_initial_vectors`: the rows of ``V_d Lambda_d^(1/2)`` (top ``d`` eigenpairs),
  normalised, the natural start;
- :func:`refine_vectors`: L-BFGS on the alignment loss from there, in the vectors' own form
  (unit rows), dense from ``S`` or factorised from ``S ~ F.T F`` (never ``N x N``);
- :func:`nystrom_eigenpairs`: the top eigenpairs of a positive semi-definite ``S`` from a
  sketch ``Y = S Omega`` (``O(N k)`` memory), for layers too wide for ``S`` itself.

Pure tensor functions: :class:`~lightning_semvec.metrics.SketchedSimilarity` streams the sketch
and :func:`lightning_semvec.embed_neurons` owns the passes over the data.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_semvec._utils.checks import check_int
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.functional.alignment import alignment_loss_factorized
from lightning_semvec.functional.neuron_statistics import best_rank_d_vectors
from lightning_semvec.functional.similarity import normalize_vectors

__all__ = [
    "dense_alignment_loss",
    "eigen_initial_vectors",
    "nystrom_eigenpairs",
    "optimal_vectors",
    "refine_vectors",
]

#: L-BFGS iterations of :func:`refine_vectors` by default: the eigen start is close, and
#: fidelity stops moving well before this on the layers measured (``docs/performance.md``).
DEFAULT_REFINE_STEPS = 200


def _check_alive(alive: Tensor, n: int) -> Tensor:
    if not isinstance(alive, Tensor) or alive.dtype != torch.bool or alive.shape != (n,):
        got = tuple(alive.shape) if isinstance(alive, Tensor) else type(alive).__name__
        raise SemvecValueError(f"alive must be a ({n},) bool tensor, got {got}.")
    return alive


def eigen_initial_vectors(
    eigenvalues: Tensor, eigenvectors: Tensor, dim: int, alive: Tensor | None = None
) -> Tensor:
    """Unit rows of ``V_d sqrt(max(lambda_d, 0))`` from eigenpairs in decreasing order.

    Args:
        eigenvalues: ``(k,)``, largest first, ``k >= dim``.
        eigenvectors: ``(N, k)``, one column per eigenvalue.
        dim: ``d``.
        alive: optional ``(N,)`` bool; dead neurons get zero vectors.

    Returns:
        ``(N, d)`` float32 with unit rows (zero rows for dead neurons and for neurons the top
        ``d`` eigenvectors do not reach).

    Example:
        >>> values = torch.tensor([4.0, 1.0])
        >>> vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
        >>> eigen_initial_vectors(values, vectors, 2)
        tensor([[1.0000, 0.0000],
                [0.0000, 1.0000],
                [0.8321, 0.5547]])
    """
    k = eigenvalues.shape[0]
    check_int("dim", dim, 1, k, hint=f"({k} eigenpairs).")
    top = eigenvectors[:, :dim]
    # A sign per column (each column's largest entry positive): the same vectors whatever
    # sign the eigensolver returned, on every process and device.
    largest = top.gather(0, top.abs().argmax(dim=0, keepdim=True))
    top = top * torch.where(largest < 0, -1.0, 1.0).to(top.dtype)
    scaled = top * eigenvalues[:dim].clamp_min(0.0).sqrt()
    if alive is not None:
        scaled = scaled * _check_alive(alive, eigenvectors.shape[0]).unsqueeze(1)
    return normalize_vectors(scaled.to(torch.float64))


def dense_alignment_loss(unit_vectors: Tensor, similarity: Tensor, alive: Tensor) -> Tensor:
    """Mean over alive pairs ``i != j`` of ``(u_i . u_j - S[i, j])**2`` from the full ``S``.

    Equal to :func:`~lightning_semvec.functional.alignment_loss_dense` when ``S = Z.T Z``,
    without rebuilding ``S`` from activations at every step.

    Args:
        unit_vectors: ``(N, d)`` row-normalised vectors (differentiable).
        similarity: ``(N, N)`` activation similarity, diagonal 1 for alive neurons.
        alive: ``(N,)`` bool.

    Example:
        >>> s = torch.tensor([[1.0, 0.5], [0.5, 1.0]])
        >>> u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> dense_alignment_loss(u, s, torch.tensor([True, True])).item()
        0.25
    """
    mask = alive.to(unit_vectors.dtype).unsqueeze(1)
    u = unit_vectors * mask
    difference = (u @ u.T - similarity.to(u.dtype)) * (mask * mask.T)
    difference = difference - torch.diag_embed(difference.diagonal())
    n = alive.sum().to(u.dtype)
    return difference.square().sum() / (n * (n - 1.0)).clamp_min(1.0)


def refine_vectors(
    initial: Tensor,
    alive: Tensor,
    *,
    similarity: Tensor | None = None,
    factor: Tensor | None = None,
    steps: int = DEFAULT_REFINE_STEPS,
) -> Tensor:
    """Minimise the alignment loss over unit-row vectors by L-BFGS, from ``initial``.

    Exactly one of ``similarity`` (the ``(N, N)`` matrix: dense loss) and ``factor`` (a
    ``(k, N)`` ``F`` with ``S ~ F.T F``: factorised loss, ``O(N (k + d))`` memory) is given.
    The diagonal does not depend on the vectors (unit rows), so a factor whose diagonal is not
    exactly 1 changes the loss by a constant only.

    Args:
        initial: ``(N, d)`` starting vectors (for example :func:`eigen_initial_vectors`).
        alive: ``(N,)`` bool; dead neurons take no part and keep their initial rows.
        similarity: ``(N, N)`` activation similarity.
        factor: ``(k, N)`` factor of the activation similarity.
        steps: L-BFGS iterations at most (``0`` returns ``initial`` normalised).

    Returns:
        ``(N, d)`` float32 unit rows (zero rows stay zero).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> target = normalize_vectors(torch.randn(8, 2, generator=g))
        >>> s = target @ target.T
        >>> alive = torch.ones(8, dtype=torch.bool)
        >>> start = normalize_vectors(torch.randn(8, 2, generator=g))
        >>> fitted = refine_vectors(start, alive, similarity=s, steps=100)
        >>> dense_alignment_loss(fitted, s, alive).item() < 1e-6
        True
    """
    if (similarity is None) == (factor is None):
        raise SemvecValueError("Pass exactly one of similarity (N, N) and factor (k, N).")
    n = initial.shape[0]
    _check_alive(alive, n)
    check_int("steps", steps, 0)
    if similarity is not None and similarity.shape != (n, n):
        raise SemvecValueError(f"similarity must be ({n}, {n}), got {tuple(similarity.shape)}.")
    if factor is not None and (factor.ndim != 2 or factor.shape[1] != n):
        raise SemvecValueError(f"factor must be (k, {n}), got {tuple(factor.shape)}.")
    start = normalize_vectors(initial)
    if steps == 0 or int(alive.sum()) < 2:
        return start
    with torch.inference_mode(False), torch.enable_grad():  # also inside a Trainer's loop
        vectors = _lbfgs(start, alive.nonzero().squeeze(1), similarity, factor, steps)
    if not bool(torch.isfinite(vectors).all()):  # never worse than the start
        return start
    result = start.clone()
    result[alive.nonzero().squeeze(1)] = vectors
    return result


def _lbfgs(
    start: Tensor, keep: Tensor, similarity: Tensor | None, factor: Tensor | None, steps: int
) -> Tensor:
    """The refined unit rows of the neurons ``keep`` (gradients on; inference tensors copied)."""
    vectors = start[keep].clone().requires_grad_(True)
    every = torch.ones(keep.numel(), dtype=torch.bool, device=start.device)
    if similarity is not None:
        target = similarity[keep][:, keep].float().clone()

        def loss_of(u: Tensor) -> Tensor:
            return dense_alignment_loss(u, target, every)
    else:
        assert factor is not None  # the caller passes exactly one of similarity and factor
        target = factor[:, keep].float().clone()

        def loss_of(u: Tensor) -> Tensor:
            return alignment_loss_factorized(target, u, every, constant_term=False)

    optimizer = torch.optim.LBFGS(  # a shorter history for wide (factorised) layers: memory
        [vectors], lr=1.0, max_iter=steps, history_size=10 if factor is None else 5,
        line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12,
    )
    best: list[Any] = [float("inf"), normalize_vectors(vectors.detach())]  # [loss, unit vectors]

    def closure() -> Tensor:
        optimizer.zero_grad()
        unit = normalize_vectors(vectors)
        loss = loss_of(unit)
        value = float(loss.detach())
        if value < best[0]:  # the best finite iterate: a line search can overshoot
            best[0], best[1] = value, unit.detach().clone()
        loss.backward()
        return loss

    try:
        optimizer.step(closure)
    except RuntimeError:  # a step of non-finite size at an exact optimum (zero curvature)
        pass
    return best[1]


def optimal_vectors(
    similarity: Tensor, alive: Tensor, dim: int, steps: int = DEFAULT_REFINE_STEPS
) -> Tensor:
    """The best ``d``-dimensional unit vectors of an ``(N, N)`` activation similarity.

    Eigen start (:func:`~lightning_semvec.functional.neuron_statistics.best_rank_d_vectors` of
    the alive neurons' block, rows normalised), then :func:`refine_vectors` on the dense loss.

    Args:
        similarity: ``(N, N)``, e.g. from :class:`~lightning_semvec.metrics.ActivationSimilarity`.
        alive: ``(N,)`` bool; dead neurons get zero vectors.
        dim: ``d``, ``1 <= d <= number of alive neurons``.
        steps: L-BFGS iterations of the refinement.

    Returns:
        ``(N, d)`` float32.

    Example:
        >>> from lightning_semvec.functional import activation_similarity
        >>> acts = torch.randn(200, 3, generator=torch.Generator().manual_seed(0)) @ torch.randn(
        ...     3, 10, generator=torch.Generator().manual_seed(1))
        >>> s = activation_similarity(acts)
        >>> alive = torch.ones(10, dtype=torch.bool)
        >>> vectors = optimal_vectors(s, alive, dim=3)
        >>> dense_alignment_loss(vectors, s, alive).item() < 1e-4
        True
    """
    n = similarity.shape[0]
    _check_alive(alive, n)
    keep = alive.nonzero().squeeze(1)
    check_int("dim", dim, 1, max(int(keep.numel()), 1), hint=f"({keep.numel()} alive neurons).")
    initial = torch.zeros(n, dim, dtype=torch.float32, device=similarity.device)
    best = best_rank_d_vectors(similarity[keep][:, keep], dim)
    scales = torch.linalg.vector_norm(best, dim=0)  # sqrt of the eigenvalues
    unit_columns = best / scales.clamp_min(torch.finfo(best.dtype).tiny)  # 0 columns stay 0
    initial[keep] = eigen_initial_vectors(scales.square(), unit_columns, dim).to(initial)
    return refine_vectors(initial, alive, similarity=similarity, steps=steps)


def nystrom_eigenpairs(test_matrix: Tensor, sketch: Tensor) -> tuple[Tensor, Tensor]:
    """Top eigenpairs of a PSD ``S`` from ``Y = S Omega`` (Nystrom, Tropp et al. 2017, Alg. 3).

    ``S ~ Y (Omega.T Y)^+ Y.T``, computed stably with a small shift, in the inputs' floating
    dtype (float32 halves the memory of a wide layer's ``(N, k)`` matrices). For a
    correlation matrix whose spectrum decays this is close to the best rank-``k``
    approximation, and a power pass (``Omega`` = an orthonormal basis of the last ``Y``)
    makes it closer.

    Args:
        test_matrix: ``(N, k)`` ``Omega``, full column rank.
        sketch: ``(N, k)`` ``Y = S Omega``.

    Returns:
        ``(eigenvalues, eigenvectors)``: ``(k,)`` non-negative, largest first, and ``(N, k)``
        orthonormal columns, float64.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> basis = torch.linalg.qr(torch.randn(50, 3, generator=g, dtype=torch.float64))[0]
        >>> s = basis @ torch.diag(torch.tensor([5.0, 2.0, 1.0], dtype=torch.float64)) @ basis.T
        >>> omega = torch.randn(50, 6, generator=g, dtype=torch.float64)
        >>> values, _ = nystrom_eigenpairs(omega, s @ omega)
        >>> [round(v, 6) for v in values[:4].tolist()]
        [5.0, 2.0, 1.0, 0.0]
    """
    if test_matrix.ndim != 2 or test_matrix.shape != sketch.shape:
        raise SemvecValueError(
            "test_matrix and sketch must both be (N, k), got "
            f"{tuple(test_matrix.shape)} and {tuple(sketch.shape)}."
        )
    k = test_matrix.shape[1]
    if test_matrix.shape[0] < k:  # fewer (alive) neurons than columns: S has at most N pairs
        values, vectors = nystrom_eigenpairs(test_matrix[:, : test_matrix.shape[0]],
                                             sketch[:, : sketch.shape[0]])
        return _padded_pairs(values, vectors, k)
    dtype = torch.promote_types(test_matrix.dtype, sketch.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float64
    omega, r = torch.linalg.qr(test_matrix.to(dtype))
    # Y R^-1 = S Q: the sketch of the orthonormalised test matrix (then shifted in place;
    # wide layers keep only a few (N, k) matrices alive at once).
    y = torch.linalg.solve_triangular(r, sketch.to(dtype), upper=True, left=False)
    shift = torch.finfo(dtype).eps * max(float(torch.linalg.matrix_norm(y)), 1e-30)
    shift *= y.shape[0] ** 0.5
    y_shifted = y.add_(omega, alpha=shift)
    core = omega.T @ y_shifted
    del omega
    core = (core + core.T) / 2.0
    values, vectors = torch.linalg.eigh(core)
    keep = values > values.max().clamp_min(0.0) * 1e-12
    factor = y_shifted @ (vectors[:, keep] / values[keep].sqrt())  # S ~ factor factor.T
    del y, y_shifted
    u, sigma, _ = torch.linalg.svd(factor, full_matrices=False)
    eigenvalues = (sigma.square() - shift).clamp_min(0.0)
    return _padded_pairs(eigenvalues, u, k)


def _padded_pairs(values: Tensor, vectors: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``k`` eigenpairs: the given ones, then zero pairs (a rank-deficient core)."""
    pad = k - vectors.shape[1]
    if pad <= 0:
        return values, vectors
    return (torch.cat([values, values.new_zeros(pad)]),
            torch.cat([vectors, vectors.new_zeros(vectors.shape[0], pad)], dim=1))
