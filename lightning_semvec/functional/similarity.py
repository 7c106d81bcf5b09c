"""Neuron similarities: how alike two neurons are, seen from the data or from their vectors.

Pure tensor functions (no Lightning, no state). Shapes use M for samples, N for neurons and
d for the semantic dimension.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lightning_semvec.errors import SemvecValueError

SimilarityKind = Literal["pearson", "cosine"]
SIMILARITY_KINDS: tuple[SimilarityKind, ...] = ("pearson", "cosine")

#: A column whose spread is below this fraction of its magnitude is treated as dead:
#: float32 round-off alone leaves about 1e-7 of the magnitude after centring a constant column.
DEAD_RELATIVE_TOLERANCE = 1e-5
#: A column whose norm is below this absolute value is dead whatever its magnitude.
DEAD_ABSOLUTE_TOLERANCE = 1e-12


def check_similarity_kind(kind: str) -> None:
    """Raise a clear ``ValueError`` unless ``kind`` is a known similarity kind."""
    if kind not in SIMILARITY_KINDS:
        raise SemvecValueError(
            f"Unknown similarity kind {kind!r}: use 'pearson' (centred, the default) or 'cosine'."
        )


def standardize_activations(
    activations: Tensor,
    kind: SimilarityKind = "pearson",
    sample_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Turn a batch of activations into unit columns whose inner products are similarities.

    For ``"pearson"`` each column (neuron) is centred, then scaled to unit length; for
    ``"cosine"`` it is only scaled. The result ``Z`` gives the activation similarity as
    ``Z.T @ Z``. Work is done in float32 whatever the input dtype (mixed precision hooks
    see float16/bfloat16).

    A neuron whose column has (near) zero spread is *dead* for this batch: its column in
    ``Z`` is all zeros and ``alive`` is ``False`` there, so it never divides by zero.

    Args:
        activations: ``(M, N)`` activations, one row per sample, one column per neuron.
        kind: ``"pearson"`` (default) or ``"cosine"``.
        sample_weights: optional ``(M,)`` tensor of 0/1 weights; rows with weight 0 are
            ignored (used for padding when batches are gathered across processes).

    Returns:
        ``(Z, alive)``: ``Z`` is ``(M, N)`` float32 with unit or zero columns, ``alive`` is
        an ``(N,)`` bool tensor.

    Example:
        >>> a = torch.tensor([[1.0, 2.0, 5.0], [2.0, 4.0, 5.0], [3.0, 7.0, 5.0]])
        >>> z, alive = standardize_activations(a)
        >>> alive.tolist()
        [True, True, False]
        >>> round((z.T @ z)[0, 1].item(), 3)
        0.993
    """
    z, alive, _ = standardize_with_finiteness(activations, kind, sample_weights)
    return z, alive


def standardize_with_finiteness(
    activations: Tensor,
    kind: SimilarityKind = "pearson",
    sample_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`standardize_activations` plus a scalar bool tensor: are all activations finite?

    The check rides on the per-column magnitude pass that standardisation makes anyway, so it
    costs no extra pass over the ``(M, N)`` activations and no host sync.
    """
    z, alive, column_finite = standardize_columns(activations, kind, sample_weights)
    return z, alive, column_finite.all()


def standardize_columns(
    activations: Tensor,
    kind: SimilarityKind = "pearson",
    sample_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`standardize_activations` plus an ``(N,)`` bool tensor: is each column finite?

    A column holding a NaN or an Inf comes out of ``Z`` as NaN (and not alive); callers that
    mix several layers' columns use the per-column flag to drop only the layers concerned.

    Example:
        >>> a = torch.tensor([[1.0, float("nan")], [2.0, 0.0], [4.0, 1.0]])
        >>> z, alive, finite = standardize_columns(a)
        >>> alive.tolist(), finite.tolist()
        ([True, False], [True, False])
    """
    check_similarity_kind(kind)
    if activations.ndim != 2:
        raise SemvecValueError(
            f"activations must be (samples, neurons), got shape {tuple(activations.shape)}."
        )
    # Memory matters for wide layers: at most one (M, N) temporary is made (two with
    # sample_weights), and it is scaled in place when no gradient flows through it.
    a = activations.float()
    owned = a is not activations
    weights = None
    if sample_weights is not None:
        weights = sample_weights.to(device=a.device, dtype=a.dtype).unsqueeze(1)
        a, owned = a * weights, True
    # Column reductions: amax + amin, and square().sum() below, are several times faster on the
    # CPU than aminmax and vector_norm over dim 0 (measured on torch 2.14).
    magnitude = torch.maximum(a.amax(dim=0), a.amin(dim=0).neg())
    if kind == "pearson":
        if weights is None:
            a, owned = a - a.mean(dim=0, keepdim=True), True
        else:
            count = weights.sum().clamp_min(1.0)
            a, owned = a - a.sum(dim=0, keepdim=True) / count, True
            a = a.mul_(weights) if not a.requires_grad else a * weights
    # vector_norm's backward is 0 at a zero column where sqrt's would be NaN: keep it for autograd.
    norm = torch.linalg.vector_norm(a, dim=0) if a.requires_grad else a.square().sum(dim=0).sqrt_()
    threshold = magnitude.mul(DEAD_RELATIVE_TOLERANCE * a.shape[0] ** 0.5).add_(DEAD_ABSOLUTE_TOLERANCE)
    alive = norm > threshold
    if a.requires_grad:  # never 1/0 where a gradient flows: its backward would give NaN
        scale = torch.where(alive, 1.0 / torch.where(alive, norm, torch.ones_like(norm)), 0.0)
        z = a * scale
    else:
        scale = torch.where(alive, norm.reciprocal(), 0.0)
        z = a.mul_(scale) if owned else a * scale
    return z, alive, torch.isfinite(magnitude)


def activation_similarity(
    activations: Tensor, kind: SimilarityKind = "pearson"
) -> Tensor:
    """The batch's view: an ``(N, N)`` similarity between neurons from ``(M, N)`` activations.

    Entries lie in ``[-1, 1]``; rows and columns of dead neurons are zero (see
    :func:`standardize_activations`). This allocates ``N x N``; for wide layers use the
    factorised alignment loss instead.

    Example:
        >>> a = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, -1.0]])
        >>> activation_similarity(a).round().tolist()
        [[1.0, -1.0], [-1.0, 1.0]]
    """
    z, _ = standardize_activations(activations, kind)
    return z.T @ z


def normalize_vectors(vectors: Tensor) -> Tensor:
    """Rows of ``vectors`` scaled to unit length (``(N, d)`` in, ``(N, d)`` float32 out).

    Example:
        >>> normalize_vectors(torch.tensor([[3.0, 4.0]]))
        tensor([[0.6000, 0.8000]])
    """
    if vectors.ndim != 2:
        raise SemvecValueError(f"vectors must be (neurons, dim), got shape {tuple(vectors.shape)}.")
    return torch.nn.functional.normalize(vectors.float(), dim=1, eps=1e-12)


def semantic_similarity(vectors: Tensor) -> Tensor:
    """The static view: cosine similarity between semantic vectors, ``(N, d)`` -> ``(N, N)``.

    Example:
        >>> semantic_similarity(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        tensor([[1.0000, 0.7071],
                [0.7071, 1.0000]])
    """
    e = normalize_vectors(vectors)
    return e @ e.T
