"""Which neuron of one model plays the role of which in another: matching in a joint space.

When the neurons of two models are embedded together (:func:`lightning_semvec.embed_models`),
their vectors live in one space, and a neuron's nearest neuron of the other model by cosine is
the one that rises and falls most like it on the data. :func:`match_neurons` finds it for every
neuron of ``A``, with the activation correlation of the pair when the joint similarity is at
hand, and says whether the match is mutual (each is the other's nearest).

A neuron whose vector is zero (dead: constant on the data) is neither matched nor a match.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from lightning_semvec._utils.checks import check_int
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.functional.similarity import normalize_vectors

__all__ = ["NeuronMatching", "match_neurons"]


class NeuronMatching(NamedTuple):
    """The matches of ``N_A`` neurons of ``A`` among the neurons of ``B``.

    Attributes:
        indices: ``(N_A, k)`` int64, neurons of ``B``, nearest first; ``-1`` where there is
            none (a dead neuron of ``A``, or fewer than ``k`` alive neurons of ``B``).
        cosine: ``(N_A, k)`` float32 cosine of the joint vectors; NaN where there is no match.
        correlation: ``(N_A, k)`` float32 activation similarity of each matched pair (NaN
            where there is no match), or ``None`` when no similarity was given.
        mutual: ``(N_A,)`` bool: ``A``'s neuron is also the nearest neuron of ``A`` to its
            nearest neuron of ``B``.
    """

    indices: Tensor
    cosine: Tensor
    correlation: Tensor | None
    mutual: Tensor


def match_neurons(
    vectors_a: Tensor,
    vectors_b: Tensor,
    similarity_ab: Tensor | None = None,
    k: int = 1,
    chunk: int = 1024,
) -> NeuronMatching:
    """Each neuron of ``A``'s ``k`` nearest neurons of ``B`` by cosine of their joint vectors.

    Computed in row chunks (``O(chunk * max(N_A, N_B))`` memory), so wide layers need no
    ``N_A x N_B`` matrix.

    Args:
        vectors_a: ``(N_A, d)`` vectors of ``A``'s neurons, in the same space as ``B``'s.
        vectors_b: ``(N_B, d)`` vectors of ``B``'s neurons.
        similarity_ab: optional ``(N_A, N_B)`` activation similarity between the neurons of
            ``A`` and ``B`` (the cross block of the joint similarity); gives ``correlation``.
        k: matches per neuron, ``1 <= k``.
        chunk: rows of the cosine matrix built at once.

    Returns:
        :class:`NeuronMatching`.

    Raises:
        SemvecValueError: vectors that are not 2-D of one dimension ``d`` (or have no rows),
            a similarity that is not ``(N_A, N_B)``, ``k < 1`` or ``chunk < 1``.

    Example:
        >>> a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
        >>> b = torch.tensor([[0.1, 1.0], [1.0, 0.2], [0.9, 0.3]])
        >>> matching = match_neurons(a, b)
        >>> matching.indices.squeeze(1).tolist(), matching.mutual.tolist()
        ([1, 0, -1], [True, True, False])
        >>> s = torch.tensor([[0.1, 0.9, 0.8], [0.7, 0.2, 0.3], [0.0, 0.0, 0.0]])
        >>> [round(c, 2) for c in match_neurons(a, b, s).correlation.squeeze(1).tolist()]
        [0.9, 0.7, nan]
    """
    if (vectors_a.ndim != 2 or vectors_b.ndim != 2 or vectors_a.shape[1] != vectors_b.shape[1]
            or 0 in (vectors_a.shape[0], vectors_b.shape[0])):
        raise SemvecValueError(
            "vectors_a and vectors_b must be (N_A, d) and (N_B, d), N_A and N_B at least 1, of "
            "one dimension d, got "
            f"{tuple(vectors_a.shape)} and {tuple(vectors_b.shape)}.")
    n_a, n_b = vectors_a.shape[0], vectors_b.shape[0]
    if similarity_ab is not None and similarity_ab.shape != (n_a, n_b):
        raise SemvecValueError(
            f"similarity_ab must be ({n_a}, {n_b}), got {tuple(similarity_ab.shape)}.")
    check_int("k", k, 1)
    check_int("chunk", chunk, 1)
    unit_a = normalize_vectors(vectors_a.float())
    unit_b = normalize_vectors(vectors_b.float())
    alive_a, alive_b = unit_a.abs().sum(1) > 0, unit_b.abs().sum(1) > 0
    take = min(k, n_b)
    cosine, indices = _nearest(unit_a, unit_b, alive_b, take, chunk)
    none = ~alive_a.unsqueeze(1) | cosine.isnan()
    indices = indices.masked_fill(none, -1)
    cosine = cosine.masked_fill(none, float("nan"))
    back = _nearest(unit_b, unit_a, alive_a, 1, chunk)[1].squeeze(1)  # B's nearest in A
    first = indices[:, 0]
    mutual = (first >= 0) & (back[first.clamp_min(0)] == torch.arange(n_a))
    correlation = None
    if similarity_ab is not None:
        correlation = similarity_ab.float().cpu().gather(1, indices.clamp_min(0))
        correlation = correlation.masked_fill(indices < 0, float("nan"))
    if take < k:  # fewer neurons of B than k: no match in the last columns
        pad = k - take
        indices = torch.cat([indices, indices.new_full((n_a, pad), -1)], dim=1)
        cosine = torch.cat([cosine, cosine.new_full((n_a, pad), float("nan"))], dim=1)
        if correlation is not None:
            correlation = torch.cat(
                [correlation, correlation.new_full((n_a, pad), float("nan"))], dim=1)
    return NeuronMatching(indices, cosine, correlation, mutual)


def _nearest(
    rows: Tensor, candidates: Tensor, alive: Tensor, k: int, chunk: int
) -> tuple[Tensor, Tensor]:
    """``(cosine, indices)``, ``(R, k)`` each, of every row's ``k`` nearest alive candidates
    (CPU); NaN cosine where fewer than ``k`` candidates are alive."""
    rows, candidates, alive = rows.cpu(), candidates.cpu(), alive.cpu()
    values, indices = [], []
    for start in range(0, rows.shape[0], chunk):
        block = rows[start : start + chunk] @ candidates.T
        block[:, ~alive] = float("-inf")  # a dead neuron (zero vector) is nobody's match
        top = block.topk(k, dim=1)
        values.append(top.values)
        indices.append(top.indices)
    if not values:
        return torch.zeros(0, k), torch.zeros(0, k, dtype=torch.long)
    cosine = torch.cat(values)
    return cosine.masked_fill(cosine.isinf(), float("nan")), torch.cat(indices)
