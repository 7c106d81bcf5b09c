"""Linear centred kernel alignment (CKA): how alike two layers' representations are.

Pure tensor functions (no Lightning, no state); :class:`~lightning_semvec.metrics.LinearCKA`
streams them over minibatches and processes. Shapes use ``M`` (or ``m`` for one minibatch)
for samples and ``N`` for a layer's features (neurons); ``L`` layers are compared at once.

Linear CKA (Kornblith et al., 2019) compares the linear Gram matrices ``K = X X^T`` and
``L = Y Y^T`` of the same samples seen by two layers::

    CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))

It is 1 for identical representations, invariant to orthogonal transforms and isotropic
scaling of either layer, but not to arbitrary invertible linear maps.

- :func:`linear_cka`: CKA of two activation matrices, with the biased HSIC of the full batch
  (the usual definition) or the unbiased ``HSIC_1`` estimator.
- :func:`unbiased_hsic`: ``HSIC_1`` of Song et al. (2012) between two ``(m, m)`` Gram matrices.
- :func:`pairwise_unbiased_hsic`: the ``(L, L)`` ``HSIC_1`` between the linear Gram matrices
  of every pair of layers of one minibatch, each Gram computed once.
- :func:`cka_from_hsic`: cross HSIC and self HSIC to the CKA matrix. Sums (or means) of
  minibatch HSICs give the minibatch CKA of Nguyen, Raghu & Kornblith (2021).

A constant layer (no variation over the samples) has no CKA: its entries are NaN.
Everything is computed in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_semvec.errors import SemvecValueError

__all__ = [
    "cka_from_hsic",
    "linear_cka",
    "pairwise_unbiased_hsic",
    "unbiased_hsic",
]

#: ``HSIC_1`` divides by ``n (n - 3)`` and ``(n - 1) (n - 2)``: it needs 4 samples at least.
MIN_UNBIASED_SAMPLES = 4

#: After centring in float64, a column whose largest deviation from its mean is below this
#: fraction of its magnitude is constant up to round-off and set to exactly zero, so that a
#: constant layer gives a self-HSIC of exactly 0 (and a NaN CKA) instead of round-off noise.
CONSTANT_RELATIVE_TOLERANCE = 1e-10


def check_activations(name: str, activations: object) -> Tensor:
    """``activations`` if it is a ``(samples, features)`` floating-point tensor; else a one-line
    :class:`~lightning_semvec.errors.SemvecValueError` naming ``name``.

    Example:
        >>> check_activations("x", torch.zeros(5, 3)).shape
        torch.Size([5, 3])
        >>> check_activations("x", torch.zeros(5, 3, dtype=torch.long))
        Traceback (most recent call last):
        ...
        lightning_semvec.errors.SemvecValueError: x must be a floating-point tensor, got torch.int64: convert it ...
    """
    if not isinstance(activations, Tensor):
        raise SemvecValueError(
            f"{name} must be a (samples, features) tensor, got {type(activations).__name__}."
        )
    if activations.ndim != 2:
        raise SemvecValueError(
            f"{name} must be a 2-D (samples, features) tensor, got shape {tuple(activations.shape)}: "
            "flatten the feature dimensions first (e.g. x.flatten(1))."
        )
    if not activations.is_floating_point():
        raise SemvecValueError(
            f"{name} must be a floating-point tensor, got {activations.dtype}: convert it with "
            ".float() first."
        )
    return activations


def check_same_samples(names: Sequence[str], activations: Sequence[Tensor], minimum: int) -> int:
    """The common number of samples (rows) of ``activations``, checked to be at least
    ``minimum``; one-line errors name the offending entry."""
    samples = activations[0].shape[0]
    for name, tensor in zip(names, activations):
        if tensor.shape[0] != samples:
            raise SemvecValueError(
                f"{name} has {tensor.shape[0]} samples but {names[0]} has {samples}: CKA compares "
                "the activations of the same samples, so every layer needs the same rows."
            )
    if samples < minimum:
        raise SemvecValueError(
            f"{names[0]} has {samples} samples, this needs at least {minimum}"
            + (" (the unbiased HSIC divides by n (n - 3))." if minimum == MIN_UNBIASED_SAMPLES else ".")
        )
    return samples


def _centred_float64(x: Tensor) -> Tensor:
    """``x`` in float64 with centred columns; constant columns exactly zero."""
    x = x.to(torch.float64)
    centred = x - x.mean(dim=0, keepdim=True)
    magnitude = x.abs().amax(dim=0)
    spread = centred.abs().amax(dim=0)
    return torch.where(spread > CONSTANT_RELATIVE_TOLERANCE * magnitude, centred, 0.0)


def _zero_diagonal(k: Tensor) -> Tensor:
    """``k`` with the diagonal of its last two dimensions set to zero (out of place)."""
    return k - torch.diag_embed(torch.diagonal(k, dim1=-2, dim2=-1))


def _hsic1(trace_kl: Tensor, sum_k: Tensor, sum_l: Tensor, ones_kl_ones: Tensor, n: int) -> Tensor:
    """The ``HSIC_1`` formula from its terms (any broadcastable shapes), zero-diagonal ``K, L``::

    (tr(K L) + 1^T K 1 1^T L 1 / ((n - 1)(n - 2)) - 2 / (n - 2) 1^T K L 1) / (n (n - 3))
    """
    return (trace_kl + sum_k * sum_l / ((n - 1) * (n - 2)) - ones_kl_ones * (2.0 / (n - 2))) / (n * (n - 3))


def unbiased_hsic(k: Tensor, l: Tensor) -> Tensor:  # noqa: E741 (the paper's name)
    """The unbiased ``HSIC_1`` estimator (Song et al., 2012) of two Gram matrices.

    With ``K~`` and ``L~`` the Grams with their diagonals set to zero and ``n`` samples::

        HSIC_1 = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n (n-3))

    Unbiased for the population HSIC at every ``n >= 4`` (so it may be slightly negative when
    the true value is near 0). Invariant to shifting the features of a linear kernel.

    Args:
        k: ``(n, n)`` kernel (Gram) matrix of the first representation, floating point.
        l: ``(n, n)`` kernel matrix of the second representation, of the same ``n`` samples.

    Returns:
        0-d float64 tensor (autograd flows through it).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(10, 3, generator=g)
        >>> h = unbiased_hsic(x @ x.T, (2 * x) @ (2 * x).T)  # scaling a kernel scales HSIC
        >>> torch.isclose(h, 4 * unbiased_hsic(x @ x.T, x @ x.T)).item()
        True
    """
    for name, matrix in (("k", k), ("l", l)):
        if not isinstance(matrix, Tensor) or matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            shape = tuple(matrix.shape) if isinstance(matrix, Tensor) else type(matrix).__name__
            raise SemvecValueError(f"{name} must be a square (n, n) Gram matrix tensor, got {shape}.")
        if not matrix.is_floating_point():
            raise SemvecValueError(
                f"{name} must be a floating-point tensor, got {matrix.dtype}: convert it with .float() first."
            )
    if k.shape != l.shape:
        raise SemvecValueError(
            f"k and l must be Grams of the same samples, got shapes {tuple(k.shape)} and {tuple(l.shape)}."
        )
    n = k.shape[0]
    if n < MIN_UNBIASED_SAMPLES:
        raise SemvecValueError(
            f"k has {n} samples, the unbiased HSIC needs at least {MIN_UNBIASED_SAMPLES} (it divides by n (n - 3))."
        )
    k0 = _zero_diagonal(k.to(torch.float64))
    l0 = _zero_diagonal(l.to(device=k.device, dtype=torch.float64))
    # tr(K L) = sum(K * L^T); 1^T K L 1 = (column sums of K) . (row sums of L)
    return _hsic1((k0 * l0.T).sum(), k0.sum(), l0.sum(), k0.sum(dim=0) @ l0.sum(dim=1), n)


def pairwise_unbiased_hsic(activations: Sequence[Tensor]) -> Tensor:
    """``HSIC_1`` between the linear Grams ``X_i X_i^T`` of every pair of layers of one minibatch.

    Each layer's Gram is computed once, in float64, from its centred activations (``HSIC_1``
    is invariant to the centring; it only removes round-off), and all ``L^2`` pairs come from
    one matrix product. Memory: ``L m^2`` float64 numbers (8 MiB for 4 layers of 512 samples).

    Args:
        activations: ``L >= 1`` floating-point tensors of shape ``(m, N_i)``, the activations
            of the same ``m >= 4`` samples in each layer; widths ``N_i`` may differ.

    Returns:
        ``(L, L)`` float64 symmetric matrix, entry ``(i, j)`` the ``HSIC_1`` of layers ``i``
        and ``j``, equal to ``unbiased_hsic(X_i @ X_i.T, X_j @ X_j.T)``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(32, 5, generator=g), torch.randn(32, 3, generator=g)
        >>> hsic = pairwise_unbiased_hsic([x, y])
        >>> hsic.shape, hsic.dtype
        (torch.Size([2, 2]), torch.float64)
        >>> torch.isclose(hsic[0, 1], unbiased_hsic(x @ x.T, y @ y.T)).item()
        True
    """
    if isinstance(activations, Tensor) or not isinstance(activations, Sequence) or len(activations) == 0:
        raise SemvecValueError(
            "activations must be a non-empty list of (samples, features) tensors, one per layer, got "
            f"{type(activations).__name__}."
        )
    names = [f"activations[{i}]" for i in range(len(activations))]
    for name, tensor in zip(names, activations):
        check_activations(name, tensor)
    n = check_same_samples(names, activations, MIN_UNBIASED_SAMPLES)
    device = activations[0].device
    grams = []
    for tensor in activations:
        centred = _centred_float64(tensor.to(device))
        grams.append(centred @ centred.T)
    grams_zero = _zero_diagonal(torch.stack(grams))  # (L, m, m)
    flat = grams_zero.flatten(1)  # (L, m^2)
    row_sums = grams_zero.sum(dim=2)  # (L, m): K~ 1 (= (1^T K~)^T, the Grams are symmetric)
    sums = row_sums.sum(dim=1)  # (L,): 1^T K~ 1
    hsic = _hsic1(flat @ flat.T, sums[:, None], sums[None, :], row_sums @ row_sums.T, n)
    return (hsic + hsic.T) / 2  # exactly symmetric; the products are up to round-off


def cka_from_hsic(hsic_ab: Tensor, hsic_aa: Tensor, hsic_bb: Tensor) -> Tensor:
    """The CKA matrix ``hsic_ab[i, j] / sqrt(hsic_aa[i] * hsic_bb[j])``.

    Any common positive factor of the three cancels, so sums of minibatch HSICs give the
    same CKA as their means (the minibatch CKA of Nguyen et al., 2021), and the biased HSIC
    may be passed without its ``1 / (n - 1)^2``.

    A layer whose self-HSIC is not positive has no CKA: a constant layer (self-HSIC 0), or,
    with the unbiased estimator on very few samples, a nearly constant one. Its whole row
    (``hsic_aa[i] <= 0``) or column (``hsic_bb[j] <= 0``) is NaN; nothing is raised, so one
    dead layer does not hide the others. Values are not clipped: the unbiased estimate can
    fall slightly outside ``[0, 1]`` on small batches.

    Args:
        hsic_ab: ``(A, B)`` HSIC between layer ``i`` of model A and layer ``j`` of model B (for
            one model, ``(A, A)`` and ``hsic_bb = hsic_aa``).
        hsic_aa: ``(A,)`` self-HSIC of A's layers (``HSIC(K_i, K_i)``).
        hsic_bb: ``(B,)`` self-HSIC of B's layers.

    Returns:
        ``(A, B)`` tensor in the promoted dtype of the inputs (float64 from this module's
        functions), NaN where a self-HSIC is not positive.

    Example:
        >>> hsic = torch.tensor([[4.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
        >>> cka_from_hsic(hsic, hsic.diagonal(), hsic.diagonal())
        tensor([[1.0000, 0.5000,    nan],
                [0.5000, 1.0000,    nan],
                [   nan,    nan,    nan]], dtype=torch.float64)
    """
    for name, tensor, ndim in (("hsic_ab", hsic_ab, 2), ("hsic_aa", hsic_aa, 1), ("hsic_bb", hsic_bb, 1)):
        if not isinstance(tensor, Tensor) or tensor.ndim != ndim or not tensor.is_floating_point():
            shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
            raise SemvecValueError(f"{name} must be a {ndim}-D floating-point tensor, got {shape}.")
    if hsic_ab.shape != (hsic_aa.shape[0], hsic_bb.shape[0]):
        raise SemvecValueError(
            f"hsic_ab must be (A, B) = ({hsic_aa.shape[0]}, {hsic_bb.shape[0]}) to match hsic_aa and "
            f"hsic_bb, got {tuple(hsic_ab.shape)}."
        )
    valid = (hsic_aa > 0)[:, None] & (hsic_bb > 0)[None, :]
    denominator = torch.outer(hsic_aa.clamp_min(0).sqrt(), hsic_bb.clamp_min(0).sqrt())
    # never 1 / 0, even where the result is NaN: that keeps autograd's backward NaN-free
    ratio = hsic_ab / torch.where(valid, denominator, torch.ones_like(denominator))
    return torch.where(valid, ratio, torch.full_like(ratio, float("nan")))


def linear_cka(x: Tensor, y: Tensor, *, unbiased: bool = False) -> Tensor:
    """Linear CKA between two layers' activations of the same samples.

    Biased (default, Kornblith et al. 2019): with column-centred ``Xc`` and ``Yc``::

        CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)

    computed in feature space (``N x N`` products, cheap for ``M >> N``) or, when the batch is
    smaller than the layers are wide, with the equal ``M x M`` Gram form, whichever costs less.

    ``unbiased=True``: the ratio of unbiased ``HSIC_1`` estimates (:func:`unbiased_hsic`) of
    the linear Grams; it needs ``M >= 4`` and may fall slightly outside ``[0, 1]``.

    Args:
        x: ``(M, N1)`` floating-point activations of the first layer (flatten feature maps first).
        y: ``(M, N2)`` activations of the second layer for the same ``M`` samples.
        unbiased: use the unbiased ``HSIC_1`` estimator instead of the biased one.

    Returns:
        0-d float64 tensor (always float64, whatever the inputs' dtype; autograd flows
        through it), NaN if either layer is constant over the samples.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(100, 8, generator=g)
        >>> q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
        >>> round(linear_cka(x, 3 * x @ q).item(), 6)  # rotated and scaled: the same
        1.0
        >>> linear_cka(x, torch.randn(100, 4, generator=g)).item() < 0.2
        True
        >>> linear_cka(x, x, unbiased=True).dtype
        torch.float64
    """
    check_activations("x", x)
    check_activations("y", y)
    if unbiased:
        check_same_samples(("x", "y"), (x, y), MIN_UNBIASED_SAMPLES)
        hsic = pairwise_unbiased_hsic([x, y])
        return cka_from_hsic(hsic[:1, 1:], hsic[:1, 0], hsic[1:, 1])[0, 0]
    samples = check_same_samples(("x", "y"), (x, y), 2)
    xc, yc = _centred_float64(x), _centred_float64(y.to(x.device))
    n1, n2 = x.shape[1], y.shape[1]
    if samples * (n1 + n2) < n1 * n1 + n2 * n2 + n1 * n2:  # Gram form: M x M products
        k, l = xc @ xc.T, yc @ yc.T  # noqa: E741
        cross, self_x, self_y = (k * l).sum(), k.square().sum(), l.square().sum()
    else:  # feature form: tr(K L) = ||Yc^T Xc||_F^2, ||K||_F = ||Xc^T Xc||_F
        cross = (yc.T @ xc).square().sum()
        self_x, self_y = (xc.T @ xc).square().sum(), (yc.T @ yc).square().sum()
    return cka_from_hsic(cross.reshape(1, 1), self_x.reshape(1), self_y.reshape(1))[0, 0]
