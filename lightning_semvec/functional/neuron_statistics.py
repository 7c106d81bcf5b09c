"""The math behind the evaluation metrics: fidelity, neighbour agreement, class selectivity.

Pure tensor functions (no Lightning, no state); :mod:`lightning_semvec.metrics` owns the
streamed state around them. Shapes use ``M`` for samples, ``N`` for neurons, ``C`` for
classes and ``d`` for the semantic dimension.

- :func:`spearman_upper_triangle`: Spearman's rho between the pairs ``i < j`` of two
  ``(N, N)`` similarity matrices (fidelity, ``docs/method.md#do-the-vectors-mean-something``).
- :func:`neighbour_agreement`: how many of each neuron's ``k`` nearest neighbours two
  similarity matrices share.
- :func:`class_selectivity`: the selectivity index of Morcos et al. (2018) and the preferred
  class of every neuron (signed activations shifted up by their minimum).
- :func:`best_rank_d_vectors`: the ``d``-dimensional vectors whose Gram matrix best fits a
  similarity matrix (Eckart-Young), the reference that learned vectors are compared with.
- :func:`similarity_from_moments` and :func:`alive_from_moments`: the activation similarity
  and the dead-neuron mask from streamed sums, equal to :func:`activation_similarity` and
  :func:`standardize_activations` on the concatenated data.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lightning_semvec._utils.checks import check_int
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.functional.similarity import (
    DEAD_ABSOLUTE_TOLERANCE,
    DEAD_RELATIVE_TOLERANCE,
    SimilarityKind,
    check_similarity_kind,
)


def _check_square_pair(a: Tensor, b: Tensor, names: tuple[str, str]) -> int:
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise SemvecValueError(f"{names[0]} must be a square (N, N) matrix, got {tuple(a.shape)}.")
    if b.shape != a.shape:
        raise SemvecValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}."
        )
    return a.shape[0]


def _result_dtype(*tensors: Tensor) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype if dtype.is_floating_point else torch.get_default_dtype()


def average_ranks(values: Tensor) -> Tensor:
    """Ranks ``1..P`` of a 1-D tensor, ties given the mean of their ranks (float64).

    Matches ``scipy.stats.rankdata(values, method="average")``. Written here rather than
    taken from ``torchmetrics`` because its ``_rank_data`` sums tied ranks in int32, which
    overflows once a tie group holds more than about 65,000 entries, as the upper triangle of
    a ``2048 x 2048`` matrix with many equal entries can.

    Args:
        values: ``(P,)`` real tensor without NaN.

    Returns:
        ``(P,)`` float64 ranks, on the device of ``values``.

    Example:
        >>> average_ranks(torch.tensor([10.0, 20.0, 20.0, 5.0])).tolist()
        [2.0, 3.5, 3.5, 1.0]
    """
    if values.ndim != 1:
        raise SemvecValueError(f"values must be 1-D, got shape {tuple(values.shape)}.")
    sorted_values, order = torch.sort(values)
    _, counts = torch.unique_consecutive(sorted_values, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)  # 1-based rank of each group's last member
    group_ranks = ends - (counts.to(torch.float64) - 1.0) / 2.0
    ranks = torch.empty(values.shape[0], dtype=torch.float64, device=values.device)
    ranks[order] = group_ranks.repeat_interleave(counts)
    return ranks


def spearman_upper_triangle(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rho between the strict upper-triangle entries of two ``(N, N)`` matrices.

    The ``N (N - 1) / 2`` pairs ``i < j`` of each matrix are ranked (ties share their mean
    rank) and the Pearson correlation of the ranks is returned; the diagonal is ignored.
    Ranking and sums are done in float64.

    Args:
        a: ``(N, N)`` matrix, for example the activation similarity. ``N >= 3``.
        b: ``(N, N)`` matrix, for example the semantic similarity.

    Returns:
        A scalar in ``[-1, 1]`` (the promoted floating dtype of the inputs). NaN when either
        triangle is constant (the correlation is undefined) or holds a non-finite value.

    Raises:
        ValueError: if the matrices are not square, differ in shape, or ``N < 3``.

    Example:
        >>> a = torch.tensor([[1.0, 0.9, 0.1], [0.9, 1.0, 0.5], [0.1, 0.5, 1.0]])
        >>> round(spearman_upper_triangle(a, a**3).item(), 4)  # monotone: same ranks
        1.0
        >>> round(spearman_upper_triangle(a, -a).item(), 4)
        -1.0
    """
    n = _check_square_pair(a, b, ("a", "b"))
    if n < 3:
        raise SemvecValueError(f"Spearman's rho needs at least 3 neurons (3 pairs), got N = {n}.")
    rows, cols = torch.triu_indices(n, n, offset=1, device=a.device)
    x = a[rows, cols].to(torch.float64)
    y = b.to(a.device)[rows, cols].to(torch.float64)
    finite = torch.isfinite(x).all() & torch.isfinite(y).all()
    rx = average_ranks(x)
    ry = average_ranks(y)
    rx = rx - rx.mean()
    ry = ry - ry.mean()
    rho = (rx * ry).sum() / torch.sqrt((rx * rx).sum() * (ry * ry).sum())  # 0/0 -> NaN
    rho = torch.where(finite, rho.clamp(-1.0, 1.0), torch.full_like(rho, float("nan")))
    return rho.to(_result_dtype(a, b))


def neighbour_agreement(s_act: Tensor, s_sem: Tensor, k: int = 5) -> Tensor:
    """Mean over neurons of ``|kNN_act(i) ∩ kNN_sem(i)| / k``.

    A neuron's ``k`` nearest neighbours are the ``k`` other neurons with the largest signed
    similarity to it in that matrix (the neuron itself is never its own neighbour). Exact ties
    at the ``k``-th place are broken arbitrarily by ``torch.topk``. Random vectors give about
    ``k / (N - 1)``; identical neighbourhoods give 1.

    Args:
        s_act: ``(N, N)`` similarity, for example the activation similarity.
        s_sem: ``(N, N)`` similarity, for example the semantic similarity.
        k: neighbours per neuron, ``1 <= k < N``.

    Returns:
        A scalar in ``[0, 1]`` (the promoted floating dtype of the inputs).

    Raises:
        ValueError: if the matrices are not square or differ in shape, or ``k`` is out of range.

    Example:
        >>> s_act = torch.tensor([[1.0, 0.9, 0.1, 0.0],
        ...                       [0.9, 1.0, 0.2, 0.1],
        ...                       [0.1, 0.2, 1.0, 0.8],
        ...                       [0.0, 0.1, 0.8, 1.0]])
        >>> neighbour_agreement(s_act, s_act, k=1).item()
        1.0
        >>> s_sem = s_act[[1, 0, 3, 2]][:, [1, 0, 3, 2]]  # swap neurons 0<->1 and 2<->3
        >>> neighbour_agreement(s_act, s_sem, k=1).item()  # nearest neighbour: same pairs
        1.0
    """
    n = _check_square_pair(s_act, s_sem, ("s_act", "s_sem"))
    check_int("k", k, 1, n - 1, hint=f"(N = {n} neurons, self excluded).")
    eye = torch.eye(n, dtype=torch.bool, device=s_act.device)
    act = s_act.masked_fill(eye, float("-inf"))
    sem = s_sem.to(s_act.device).masked_fill(eye, float("-inf"))
    knn_act = act.topk(k, dim=1).indices
    knn_sem = sem.topk(k, dim=1).indices
    member = torch.zeros(n, n, dtype=torch.bool, device=s_act.device)
    member.scatter_(1, knn_act, True)
    shared = member.gather(1, knn_sem).sum(dim=1).to(torch.float64)
    return (shared / k).mean().to(_result_dtype(s_act, s_sem))


def class_selectivity(
    class_means: Tensor,
    eps: float = 1e-7,
    *,
    present: Tensor | None = None,
    minimum: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Class selectivity index (Morcos et al., 2018) and preferred class of every neuron.

    ``SI = (mu_max - mu_rest) / (mu_max + mu_rest + eps)`` where ``mu_max`` is a neuron's
    largest class-conditional mean activation and ``mu_rest`` the mean of its other classes'
    means. The index is defined for non-negative (post-ReLU) activations, where it lies in
    ``[0, 1]``: 0 for a neuron that responds equally to every class, 1 for one that responds
    to a single class only. A neuron that is zero everywhere gets 0.

    Signed activations (logits, pre-ReLU layers) need ``minimum``, each neuron's smallest
    activation over the data: where it is negative, the index is computed on the activations
    shifted up by it (``a - min(a)``, so the smallest becomes 0), which keeps it in ``[0, 1]``.
    Non-negative neurons are not shifted, so post-ReLU layers keep Morcos et al.'s index.
    Without ``minimum``, negative means give an unbounded index that means nothing.

    Args:
        class_means: ``(C, N)`` mean activation of each neuron over the samples of each class,
            ``C >= 2``.
        eps: added to the denominator.
        present: optional ``(C,)`` bool mask of classes to consider (for example classes that
            had samples); the others are ignored, their means may be NaN. If fewer than two
            classes are present, every index is NaN.
        minimum: optional ``(N,)`` smallest activation of each neuron over the samples the
            means were taken on.

    Returns:
        ``(selectivity, preferred_class)``: ``(N,)`` floating and ``(N,)`` int64 (the argmax
        over the considered classes).

    Raises:
        ValueError: on a wrong shape, fewer than two classes, or a ``present`` mask or
            ``minimum`` of the wrong shape.

    Example:
        >>> means = torch.tensor([[4.0, 1.0, 0.0],
        ...                       [0.0, 1.0, 0.0],
        ...                       [2.0, 1.0, 0.0]])  # 3 classes, 3 neurons
        >>> si, preferred = class_selectivity(means)
        >>> [round(v, 4) for v in si.tolist()], preferred.tolist()
        ([0.6, 0.0, 0.0], [0, 0, 0])
        >>> logits = torch.tensor([[3.0], [-1.0], [-1.0]])  # signed: smallest activation -3
        >>> round(class_selectivity(logits, minimum=torch.tensor([-3.0]))[0].item(), 4)
        0.5
    """
    if class_means.ndim != 2:
        raise SemvecValueError(
            f"class_means must be (classes, neurons), got shape {tuple(class_means.shape)}."
        )
    num_classes = class_means.shape[0]
    if num_classes < 2:
        raise SemvecValueError(f"Class selectivity needs at least 2 classes, got {num_classes}.")
    means = class_means if class_means.is_floating_point() else class_means.float()
    if minimum is not None:
        if minimum.shape != (means.shape[1],):
            raise SemvecValueError(
                f"minimum must be ({means.shape[1]},), one per neuron, got shape "
                f"{tuple(minimum.shape)}."
            )
        means = means - minimum.to(device=means.device, dtype=means.dtype).clamp(max=0.0)
    if present is None:
        mu_max, preferred = means.max(dim=0)
        mu_rest = (means.sum(dim=0) - mu_max) / (num_classes - 1)
        return (mu_max - mu_rest) / (mu_max + mu_rest + eps), preferred
    if present.shape != (num_classes,):
        raise SemvecValueError(
            f"present must be a ({num_classes},) bool mask, got shape {tuple(present.shape)}."
        )
    keep = present.to(device=means.device, dtype=torch.bool).unsqueeze(1)
    mu_max, preferred = means.masked_fill(~keep, float("-inf")).max(dim=0)
    rest_count = keep.sum().to(means.dtype) - 1.0
    mu_max = torch.where(rest_count >= 1.0, mu_max, torch.full_like(mu_max, float("nan")))
    mu_rest = (means.masked_fill(~keep, 0.0).sum(dim=0) - mu_max) / rest_count.clamp_min(1.0)
    return (mu_max - mu_rest) / (mu_max + mu_rest + eps), preferred


def best_rank_d_vectors(similarity: Tensor, dim: int) -> Tensor:
    """The ``(N, d)`` vectors ``V`` whose Gram matrix ``V V^T`` best fits ``similarity``.

    ``V = U_d sqrt(max(lambda_d, 0))`` from the ``d`` largest eigenpairs of the symmetric
    part of ``similarity`` (computed in float64). For a positive semi-definite matrix such as
    a Pearson or cosine activation similarity, ``V V^T`` is the best rank-``d`` approximation
    in Frobenius norm (Eckart-Young). Used as the reference for fidelity: learned vectors of
    dimension ``d`` are compared with what the best ``d``-dimensional fit reaches. It is a
    reference, not a strict bound on Spearman's rho, which measures ranks and is taken after
    the vectors are normalised. Columns come in decreasing eigenvalue order; each column's
    sign is arbitrary.

    Args:
        similarity: ``(N, N)`` real matrix.
        dim: ``d``, with ``1 <= d <= N``.

    Returns:
        ``(N, d)`` tensor in the floating dtype of ``similarity``.

    Raises:
        ValueError: if the matrix is not square or ``dim`` is out of range.

    Example:
        >>> v = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
        >>> fit = best_rank_d_vectors(v @ v.T, 2)
        >>> torch.allclose(fit @ fit.T, v @ v.T, atol=1e-6)
        True
    """
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise SemvecValueError(
            f"similarity must be a square (N, N) matrix, got {tuple(similarity.shape)}."
        )
    n = similarity.shape[0]
    check_int("dim", dim, 1, n, hint=f"(N = {n} neurons).")
    s = similarity.to(torch.float64)
    eigenvalues, eigenvectors = torch.linalg.eigh((s + s.T) / 2.0)  # ascending
    top_values = eigenvalues[-dim:].flip(0).clamp_min(0.0)
    top_vectors = eigenvectors[:, -dim:].flip(1)
    out_dtype = similarity.dtype if similarity.is_floating_point() else torch.get_default_dtype()
    return (top_vectors * top_values.sqrt()).to(out_dtype)


def _centred_norm_sq(
    count: Tensor, sums: Tensor, sums_sq: Tensor, kind: SimilarityKind
) -> Tensor:
    if kind == "pearson":
        return (sums_sq - sums * sums / count.clamp_min(1.0)).clamp_min(0.0)
    return sums_sq.clamp_min(0.0)


def alive_from_moments(
    count: Tensor,
    sums: Tensor,
    sums_sq: Tensor,
    max_abs: Tensor,
    kind: SimilarityKind = "pearson",
) -> Tensor:
    """Neurons that varied (``"pearson"``) or were non-zero (``"cosine"``) over streamed data.

    The same rule as :func:`~lightning_semvec.functional.similarity.standardize_activations`
    applied to all the data seen: a neuron is dead when its centred (or, for cosine, raw)
    column norm is below ``DEAD_RELATIVE_TOLERANCE * max|a| * sqrt(M) + DEAD_ABSOLUTE_TOLERANCE``.
    Keep the sums in float64: in float32 the cancellation in ``sum(a**2) - sum(a)**2 / M``
    leaves about ``3e-4`` of the magnitude, which would make constant neurons look alive.

    Args:
        count: scalar, number of samples ``M``.
        sums: ``(N,)`` sum of each neuron's activations.
        sums_sq: ``(N,)`` sum of their squares.
        max_abs: ``(N,)`` largest absolute activation.
        kind: ``"pearson"`` (default) or ``"cosine"``.

    Returns:
        ``(N,)`` bool, ``True`` for alive neurons. All dead when ``count`` is 0.

    Example:
        >>> a = torch.tensor([[1.0, 5.0], [3.0, 5.0]], dtype=torch.float64)
        >>> alive_from_moments(torch.tensor(2.0), a.sum(0), (a * a).sum(0), a.abs().amax(0))
        tensor([ True, False])
    """
    check_similarity_kind(kind)
    count = torch.as_tensor(count, dtype=sums.dtype, device=sums.device)
    norm = _centred_norm_sq(count, sums, sums_sq, kind).sqrt()
    scale = max_abs * count.clamp_min(0.0).sqrt()
    return norm > (DEAD_RELATIVE_TOLERANCE * scale + DEAD_ABSOLUTE_TOLERANCE)


def similarity_from_moments(
    count: Tensor,
    sums: Tensor,
    outer: Tensor,
    max_abs: Tensor,
    kind: SimilarityKind = "pearson",
) -> tuple[Tensor, Tensor]:
    """The ``(N, N)`` activation similarity of streamed data from its first two moments.

    With ``A`` the ``(M, N)`` concatenation of every batch seen, the arguments are
    ``M``, ``A.sum(0)``, ``A.T @ A`` and ``A.abs().amax(0)``; these add up over batches and
    processes. The result equals ``activation_similarity(A, kind)`` to float precision:
    Pearson correlation (``"pearson"``) or cosine (``"cosine"``) between neurons, rows and
    columns of dead neurons zero, diagonal 1 for alive neurons. Pass float64 moments.

    Args:
        count: scalar, number of samples ``M``.
        sums: ``(N,)`` column sums.
        outer: ``(N, N)`` sum of outer products ``A.T @ A``.
        max_abs: ``(N,)`` largest absolute activation per neuron.
        kind: ``"pearson"`` (default) or ``"cosine"``.

    Returns:
        ``(similarity, alive)``: ``(N, N)`` in the dtype of ``outer`` and ``(N,)`` bool.

    Example:
        >>> from lightning_semvec.functional.similarity import activation_similarity
        >>> a = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 2.0], [2.0, -1.0, 2.0]])
        >>> s, alive = similarity_from_moments(
        ...     torch.tensor(3.0), a.sum(0), a.T @ a, a.abs().amax(0))
        >>> torch.allclose(s, activation_similarity(a), atol=1e-6), alive.tolist()
        (True, [True, True, False])
    """
    check_similarity_kind(kind)
    n = sums.shape[0]
    if sums.ndim != 1 or outer.shape != (n, n) or max_abs.shape != (n,):
        raise SemvecValueError(
            "Expected sums (N,), outer (N, N) and max_abs (N,), got "
            f"{tuple(sums.shape)}, {tuple(outer.shape)} and {tuple(max_abs.shape)}."
        )
    count = torch.as_tensor(count, dtype=outer.dtype, device=outer.device)
    if kind == "pearson":
        cov = outer - torch.outer(sums, sums) / count.clamp_min(1.0)
    else:
        cov = outer
    alive = alive_from_moments(count, sums, outer.diagonal(), max_abs, kind)
    norm = _centred_norm_sq(count, sums, outer.diagonal(), kind).sqrt()
    inv = torch.where(alive, 1.0 / torch.where(alive, norm, torch.ones_like(norm)), 0.0)
    similarity = (cov * inv.unsqueeze(0) * inv.unsqueeze(1)).clamp(-1.0, 1.0)
    similarity.diagonal().copy_(alive.to(similarity.dtype))
    return similarity, alive


def check_activation_matrix(activations: Any, num_neurons: int) -> None:
    """Raise a clear ``ValueError`` unless ``activations`` is a ``(samples, num_neurons)`` tensor.

    Example:
        >>> check_activation_matrix(torch.zeros(4, 3), 3)
        >>> check_activation_matrix(torch.zeros(4, 2), 3)
        Traceback (most recent call last):
        ...
        lightning_semvec.errors.SemvecValueError: activations have 2 neurons, the metric was built for 3.
    """
    if not isinstance(activations, Tensor) or activations.ndim != 2:
        shape = tuple(activations.shape) if isinstance(activations, Tensor) else type(activations)
        raise SemvecValueError(f"activations must be a (samples, neurons) tensor, got {shape}.")
    if activations.shape[1] != num_neurons:
        raise SemvecValueError(
            f"activations have {activations.shape[1]} neurons, the metric was built for "
            f"{num_neurons}."
        )
