"""The alignment loss between a batch's activation similarity and the semantic similarity.

``L = mean over alive pairs i != j of (S_sem[i, j] - S_act[i, j])**2``, in two forms that agree
to float precision:

- dense: builds both ``N x N`` matrices; cheap when ``N`` is small.
- factorised: ``||Z.T Z - E E.T||_F**2 = ||Z Z.T||_F**2 - 2 ||Z E||_F**2 + ||E.T E||_F**2``;
  ``O(M**2 N + M N d + N d**2)`` time and ``O(N (M + d))`` memory, never ``N x N``.

Diagonal entries are 1 in both matrices for alive neurons, so they add nothing; dead neurons
are zeroed in both factors, so they add nothing either. No step needs a host sync.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lightning_semvec.errors import SemvecValueError
from lightning_semvec.functional.similarity import (
    SimilarityKind,
    normalize_vectors,
    standardize_with_finiteness,
)

AlignmentForm = Literal["auto", "dense", "factorized"]
ALIGNMENT_FORMS: tuple[AlignmentForm, ...] = ("auto", "dense", "factorized")

#: Above this many neurons ``"auto"`` never builds an ``N x N`` matrix (64 MiB in float32).
DENSE_MAX_NEURONS = 4096
#: Largest Gram-matrix block built at once when both ``M`` and ``N`` are large.
GRAM_BLOCK_ROWS = 4096


def _pair_count(alive: Tensor) -> Tensor:
    n = alive.sum().to(torch.float32)
    return (n * (n - 1.0)).clamp_min(1.0)


def gram_frobenius_sq(z: Tensor) -> Tensor:
    """``||Z.T Z||_F**2`` (equal to ``||Z Z.T||_F**2``) through the smaller Gram matrix.

    The Gram matrix of the shorter side is built in row blocks of at most
    :data:`GRAM_BLOCK_ROWS`, so memory stays bounded when both sides are large.

    Example:
        >>> z = torch.eye(3)[:, :2]
        >>> gram_frobenius_sq(z).item()
        2.0
    """
    x = z if z.shape[0] <= z.shape[1] else z.T  # rows: the shorter side
    total = x.new_zeros(())
    for start in range(0, x.shape[0], GRAM_BLOCK_ROWS):
        block = x[start : start + GRAM_BLOCK_ROWS] @ x.T
        total = total + block.square().sum()
    return total


def alignment_loss_dense(z: Tensor, unit_vectors: Tensor, alive: Tensor) -> Tensor:
    """Alignment loss from the two ``N x N`` similarity matrices.

    Args:
        z: ``(M, N)`` standardised activations (see ``standardize_activations``).
        unit_vectors: ``(N, d)`` row-normalised semantic vectors.
        alive: ``(N,)`` bool, neurons that take part.

    Returns:
        A scalar float32 tensor (differentiable in ``unit_vectors``).

    Example:
        >>> z = torch.tensor([[0.7071, 0.7071], [-0.7071, -0.7071]])
        >>> e = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> round(alignment_loss_dense(z, e, torch.tensor([True, True])).item(), 4)
        1.0
    """
    mask = alive.to(unit_vectors.dtype).unsqueeze(1)
    e = unit_vectors * mask
    s_act = z.T @ z
    s_sem = e @ e.T
    return (s_sem - s_act).square().sum() / _pair_count(alive)


def alignment_loss_factorized(
    z: Tensor, unit_vectors: Tensor, alive: Tensor, constant_term: bool = True
) -> Tensor:
    """Alignment loss without any ``N x N`` matrix; same arguments and value as the dense form.

    ``||Z Z.T||_F**2`` does not depend on the vectors, so with ``constant_term=False`` it is
    left out (it costs ``O(M**2 N)``, the largest term for wide layers): the result is then the
    loss minus a constant, with the same gradient, for steps whose loss value nobody reads.

    Example:
        >>> z = torch.tensor([[0.7071, 0.7071], [-0.7071, -0.7071]])
        >>> e = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> round(alignment_loss_factorized(z, e, torch.tensor([True, True])).item(), 4)
        1.0
    """
    mask = alive.to(unit_vectors.dtype).unsqueeze(1)
    e = unit_vectors * mask
    act_term = gram_frobenius_sq(z) if constant_term else z.new_zeros(())
    cross_term = (z @ e).square().sum()
    sem_term = (e.T @ e).square().sum()
    total = act_term - 2.0 * cross_term + sem_term
    return (total.clamp_min(0.0) if constant_term else total) / _pair_count(alive)


def choose_alignment_form(
    num_samples: int, num_neurons: int, dim: int
) -> Literal["dense", "factorized"]:
    """Pick the cheaper form: dense only while ``N x N`` is small and cheaper to build.

    Example:
        >>> choose_alignment_form(128, 64, 16), choose_alignment_form(128, 16384, 32)
        ('dense', 'factorized')
    """
    if num_neurons > DENSE_MAX_NEURONS:
        return "factorized"
    dense_cost = num_neurons * num_neurons * (num_samples + dim)
    factorized_cost = min(num_samples, num_neurons) ** 2 * max(num_samples, num_neurons) + (
        num_samples * num_neurons * dim + num_neurons * dim * dim
    )
    return "dense" if dense_cost <= factorized_cost else "factorized"


def alignment_loss(
    activations: Tensor,
    vectors: Tensor,
    kind: SimilarityKind = "pearson",
    form: AlignmentForm = "auto",
    sample_weights: Tensor | None = None,
    constant_term: bool = True,
) -> tuple[Tensor, Tensor]:
    """Alignment loss between a batch's activation similarity and the vectors' similarity.

    Args:
        activations: ``(M, N)`` activations of one layer (any float dtype).
        vectors: ``(N, d)`` semantic vectors (not necessarily normalised).
        kind: activation similarity, ``"pearson"`` (default) or ``"cosine"``.
        form: ``"dense"``, ``"factorized"`` or ``"auto"`` (by size; never ``N x N`` when wide).
        sample_weights: optional ``(M,)`` 0/1 weights marking padding rows.
        constant_term: with ``False`` the factorised form leaves out the term that does not
            depend on ``vectors`` (same gradient, cheaper; the value is then shifted).

    Returns:
        ``(loss, alive)``: a float32 scalar, differentiable in ``vectors``, and the ``(N,)``
        bool mask of neurons alive in this batch. The loss is NaN whenever an activation is
        NaN or Inf, so a caller can skip such a step by testing the loss alone.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> acts, vecs = torch.randn(32, 10), torch.randn(10, 4)
        >>> dense, _ = alignment_loss(acts, vecs, form="dense")
        >>> fact, _ = alignment_loss(acts, vecs, form="factorized")
        >>> torch.allclose(dense, fact, rtol=1e-5)
        True
    """
    if form not in ALIGNMENT_FORMS:
        raise SemvecValueError(f"Unknown alignment form {form!r}: use one of {ALIGNMENT_FORMS}.")
    if activations.ndim != 2 or vectors.ndim != 2 or activations.shape[1] != vectors.shape[0]:
        raise SemvecValueError(
            "activations must be (samples, neurons) and vectors (neurons, dim) with the same "
            f"number of neurons; got {tuple(activations.shape)} and {tuple(vectors.shape)}."
        )
    z, alive, finite = standardize_with_finiteness(activations, kind, sample_weights)
    e = normalize_vectors(vectors)
    if form == "auto":
        form = choose_alignment_form(z.shape[0], z.shape[1], e.shape[1])
    if form == "dense":
        loss = alignment_loss_dense(z, e, alive)
    else:
        loss = alignment_loss_factorized(z, e, alive, constant_term)
    return torch.where(finite, loss, torch.full_like(loss, float("nan"))), alive
