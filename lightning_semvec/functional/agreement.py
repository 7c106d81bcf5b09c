"""Does the vectors' neighbour structure agree with what the network does? Pure tensor functions.

Two references a semantic similarity can be held against:

- :func:`symmetric_confusion`: how often the network mistakes class ``i`` for ``j`` or ``j`` for
  ``i`` on held-out data, from a confusion matrix (for the logits, whose neuron ``i`` is class
  ``i``);
- :func:`class_profile_similarity`: how alike two neurons' mean activations over the classes
  are (for any layer whose per-class means the knowledge file carries).

:func:`similarity_agreement` compares a similarity with a reference over the pairs of neurons:
the Spearman rank correlation over all pairs, and the overlap of the ``k`` most similar pairs
with the ``k`` pairs the reference ranks highest (against the overlap that chance gives).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from lightning_semvec._utils.checks import check_int
from lightning_semvec.errors import SemvecValueError

__all__ = [
    "SimilarityAgreement",
    "class_profile_similarity",
    "similarity_agreement",
    "symmetric_confusion",
]


class SimilarityAgreement(NamedTuple):
    """How a similarity agrees with a reference over pairs of neurons (see
    :func:`similarity_agreement`).

    Attributes:
        spearman: rank correlation over all pairs ``i < j`` of the kept neurons, in ``[-1, 1]``.
        top_overlap: the fraction of the ``top_k`` most similar pairs that are also among the
            reference's ``top_k`` highest pairs, in ``[0, 1]``.
        chance_overlap: the fraction expected by chance, ``top_k / pairs``.
        top_k: the number of pairs compared.
        pairs: the number of pairs ``i < j``.
        top_pairs: ``(top_k, 2)`` int64, the most similar pairs ``(i, j)`` with ``i < j``,
            most similar first (indices into the full matrix).
        reference_pairs: ``(top_k, 2)`` int64, the reference's highest pairs, highest first.
    """

    spearman: float
    top_overlap: float
    chance_overlap: float
    top_k: int
    pairs: int
    top_pairs: Tensor
    reference_pairs: Tensor


def symmetric_confusion(confusion: Tensor) -> Tensor:
    """The symmetrised rate at which a classifier mistakes one class for another.

    Each row of the confusion counts is divided by its sum (the rate of predicting ``j`` for
    an input of class ``i``), then ``(R + R^T) / 2``; the diagonal (correct answers) is set to
    0. Classes with no inputs have a zero row.

    Args:
        confusion: ``(C, C)`` counts, rows the true class, columns the prediction (as
            ``torchmetrics``' ``MulticlassConfusionMatrix`` returns them).

    Returns:
        ``(C, C)`` float64, symmetric, zero diagonal.

    Example:
        >>> counts = torch.tensor([[8, 2, 0], [1, 9, 0], [0, 0, 10]])
        >>> symmetric_confusion(counts)[0].tolist()
        [0.0, 0.15000000000000002, 0.0]
    """
    if confusion.dim() != 2 or confusion.shape[0] != confusion.shape[1]:
        raise SemvecValueError(
            f"confusion must be a square (C, C) matrix of counts, got shape {tuple(confusion.shape)}."
        )
    counts = confusion.to(torch.float64)
    if bool((counts < 0).any()) or not bool(torch.isfinite(counts).all()):
        raise SemvecValueError("confusion must hold finite counts >= 0 (rows: true class, columns: prediction).")
    rates = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
    symmetric = (rates + rates.T) / 2
    symmetric.fill_diagonal_(0.0)
    return symmetric


def class_profile_similarity(class_means: Tensor) -> Tensor:
    """Pearson correlation between neurons' class profiles (mean activation per class).

    Args:
        class_means: ``(C, N)`` mean activation of each neuron on the inputs of each class (a
            knowledge file's ``class_means`` statistic); rows of classes never seen (NaN) are
            dropped.

    Returns:
        ``(N, N)`` float64 in ``[-1, 1]``; a neuron whose profile is flat (dead, or the same
        for every class) has NaN in its row and column.

    Example:
        >>> means = torch.tensor([[1.0, 2.0, 0.0], [2.0, 4.0, 1.0], [3.0, 6.0, 0.0]])
        >>> round(class_profile_similarity(means)[0, 1].item(), 6)
        1.0
    """
    if class_means.dim() != 2:
        raise SemvecValueError(f"class_means must be (classes, neurons), got shape {tuple(class_means.shape)}.")
    means = class_means.to(torch.float64)
    means = means[~torch.isnan(means).any(dim=1)]
    if means.shape[0] < 2:
        raise SemvecValueError("class_means needs at least 2 classes seen (rows without NaN) for a profile.")
    centred = means - means.mean(dim=0)
    norms = centred.norm(dim=0)
    unit = centred / norms.where(norms > 1e-12, torch.full_like(norms, float("nan")))
    return (unit.T @ unit).clamp(-1.0, 1.0)


def similarity_agreement(
    similarity: Tensor, reference: Tensor, top_k: int = 10, keep: Tensor | None = None
) -> SimilarityAgreement:
    """How well a similarity between neurons agrees with a reference, over pairs ``i < j``.

    Pairs where either matrix is NaN are left out (a dead neuron's profile), as are neurons
    outside ``keep``. Ties (many zero confusions) get their mean rank in the Spearman
    correlation; the reference's top pairs are taken in order of value, ties by index.

    Args:
        similarity: ``(N, N)`` symmetric, e.g. the semantic similarity of a layer's vectors.
        reference: ``(N, N)`` symmetric, e.g. :func:`symmetric_confusion` of the logits or
            :func:`class_profile_similarity` of a layer.
        top_k: pairs compared in the overlap (at least 1, at most the number of pairs).
        keep: optional ``(N,)`` bool, the neurons to compare (e.g. the alive ones).

    Returns:
        A :class:`SimilarityAgreement`.

    Example:
        >>> sim = torch.tensor([[1.0, 0.9, 0.1], [0.9, 1.0, 0.2], [0.1, 0.2, 1.0]])
        >>> ref = torch.tensor([[0.0, 0.3, 0.0], [0.3, 0.0, 0.1], [0.0, 0.1, 0.0]])
        >>> result = similarity_agreement(sim, ref, top_k=1)
        >>> round(result.spearman, 3), result.top_overlap, result.top_pairs.tolist()
        (1.0, 1.0, [[0, 1]])
    """
    if similarity.dim() != 2 or similarity.shape[0] != similarity.shape[1] or similarity.shape != reference.shape:
        raise SemvecValueError(
            "similarity and reference must be square matrices of the same shape (N, N), got "
            f"{tuple(similarity.shape)} and {tuple(reference.shape)}."
        )
    n = similarity.shape[0]
    rows, cols = torch.triu_indices(n, n, offset=1)
    a = similarity.to(torch.float64)[rows, cols]
    b = reference.to(torch.float64)[rows, cols]
    valid = ~(torch.isnan(a) | torch.isnan(b))
    if keep is not None:
        if keep.shape != (n,) or keep.dtype != torch.bool:
            raise SemvecValueError(f"keep must be a bool tensor of shape ({n},), got {keep.dtype} {tuple(keep.shape)}.")
        valid &= keep[rows] & keep[cols]
    rows, cols, a, b = rows[valid], cols[valid], a[valid], b[valid]
    pairs = int(a.numel())
    if pairs < 3:
        raise SemvecValueError(f"similarity_agreement needs at least 3 valid pairs of neurons, got {pairs}.")
    check_int("top_k", top_k, 1)
    if top_k > pairs:
        raise SemvecValueError(f"top_k must be at most the number of valid pairs ({pairs}), got {top_k}.")
    # imported here: torchmetrics brings torchvision and matplotlib, which `semvec report
    # --help` and `semvec export` do not load (tests/cli/test_cli_startup.py)
    from torchmetrics.functional import spearman_corrcoef

    spearman = float(spearman_corrcoef(a, b)) if a.std() > 0 and b.std() > 0 else float("nan")
    top = torch.argsort(a, descending=True, stable=True)[:top_k]
    ref_top = torch.argsort(b, descending=True, stable=True)[:top_k]
    overlap = len(set(top.tolist()) & set(ref_top.tolist())) / top_k
    return SimilarityAgreement(
        spearman=spearman,
        top_overlap=overlap,
        chance_overlap=top_k / pairs,
        top_k=top_k,
        pairs=pairs,
        top_pairs=torch.stack([rows[top], cols[top]], dim=1),
        reference_pairs=torch.stack([rows[ref_top], cols[ref_top]], dim=1),
    )
