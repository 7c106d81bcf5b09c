"""Finishing learned vectors: the best fit of an activation similarity, turned to face them.

Vectors learned online get few steps; at the end of training they can be moved to the best fit
of the final network's activation similarity (:func:`finished_vectors`). The refinement runs
both from them and from the eigen start and keeps the lower loss; the result is rotated onto
the learned vectors (orthogonal Procrustes: cosine similarities do not change), so that the
last point of the projector's history sits where the training run left each neuron, moved
only as much as the fit needs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_semvec.functional.optimal_embedding import (
    DEFAULT_REFINE_STEPS,
    dense_alignment_loss,
    optimal_vectors,
    refine_vectors,
)
from lightning_semvec.functional.similarity import normalize_vectors

__all__ = ["finished_vectors", "procrustes_rotation"]


def procrustes_rotation(source: Tensor, target: Tensor) -> Tensor:
    """The ``(d, d)`` orthogonal ``R`` that minimises ``||source @ R - target||_F``.

    Example:
        >>> rotation = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
        >>> points = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 2.0]])
        >>> torch.allclose(procrustes_rotation(points, points @ rotation), rotation, atol=1e-6)
        True
    """
    u, _, vh = torch.linalg.svd(source.T.double() @ target.double())
    return (u @ vh).to(source.dtype)


def finished_vectors(
    current: Tensor, similarity: Tensor, alive: Tensor, steps: int = DEFAULT_REFINE_STEPS
) -> Tensor:
    """``current`` vectors moved to the best fit of ``similarity``, rotated to face them.

    Args:
        current: ``(N, d)`` learned vectors.
        similarity: ``(N, N)`` activation similarity of the final network.
        alive: ``(N,)`` bool; dead neurons keep their current (normalised) vectors.
        steps: L-BFGS iterations of each refinement.

    Returns:
        ``(N, d)`` float32 unit rows, on the device of ``similarity``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> truth = normalize_vectors(torch.randn(12, 3, generator=g))
        >>> s, alive = truth @ truth.T, torch.ones(12, dtype=torch.bool)
        >>> learned = truth + 0.3 * torch.randn(12, 3, generator=g)
        >>> finished = finished_vectors(learned, s, alive)
        >>> dense_alignment_loss(finished, s, alive).item() < 1e-6
        True
    """
    start = normalize_vectors(current.to(similarity.device))
    dim, alive_count = start.shape[1], int(alive.sum())
    if alive_count < 2:
        return start
    candidates = [refine_vectors(start, alive, similarity=similarity, steps=steps)]
    if dim <= alive_count:
        candidates.append(optimal_vectors(similarity, alive, dim, steps))
    losses = [dense_alignment_loss(c, similarity, alive).item() for c in candidates]
    finite = [i for i, loss in enumerate(losses) if torch.isfinite(candidates[i]).all()
              and loss == loss]
    if not finite:
        return start
    best = candidates[min(finite, key=lambda i: losses[i])]
    keep = alive.nonzero().squeeze(1)
    rotation = procrustes_rotation(best[keep], start[keep])
    result = start.clone()
    result[keep] = best[keep] @ rotation
    return result if bool(torch.isfinite(result).all()) else start
