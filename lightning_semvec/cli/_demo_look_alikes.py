"""What the demo prints about the teacher's logit neurons: the characters it finds alike, held
against what it actually confuses on the fonts it never saw."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassConfusionMatrix

from lightning_semvec.functional.agreement import (
    SimilarityAgreement,
    similarity_agreement,
    symmetric_confusion,
)

# The report holds every layer against its class profiles the same way (and TOP_PAIRS is the
# pairs in the look-alike table and in the overlap with the most confused pairs, there too).
from lightning_semvec.report._agreement import TOP_PAIRS, profile_agreement

__all__ = ["TOP_PAIRS", "agreement_summary", "confusion_matrix", "look_alike_table", "profile_agreement"]


@torch.no_grad()
def confusion_matrix(network: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], num_classes: int) -> Tensor:
    """``(C, C)`` counts of the network's predictions (columns) for each true class (rows).

    The network is put in eval mode for the pass and back in its mode after.
    """
    metric = MulticlassConfusionMatrix(num_classes=num_classes)
    was_training = network.training
    network.eval()
    try:
        for images, labels in batches:
            metric.update(network(images).argmax(dim=1), labels)
    finally:
        network.train(was_training)
    return metric.compute()


def look_alike_table(
    similarity: Tensor, names: Sequence[str], confusion: Tensor, top: int = TOP_PAIRS
) -> tuple[str, SimilarityAgreement]:
    """The ``top`` pairs of logit neurons with the most similar vectors, each with how often the
    network mistook one character for the other on held-out data; and the agreement between
    the two over all pairs (:func:`~lightning_semvec.functional.agreement.similarity_agreement`).

    Args:
        similarity: ``(C, C)`` semantic similarity of the logit neurons (neuron ``i`` is class
            ``i``).
        names: the ``C`` class names.
        confusion: ``(C, C)`` confusion counts on held-out data (rows: true class).
        top: pairs listed.
    """
    mistaken = symmetric_confusion(confusion)
    agreement = similarity_agreement(similarity, mistaken, top_k=top)
    confused = {tuple(p) for p in agreement.reference_pairs.tolist()}
    lines = [f"{'pair':<8}{'vectors':>8}{'mistaken':>10}   (the cosine of the two logit neurons' vectors; how often",
             f"{'':<29}one was taken for the other on the unseen fonts; * among the {top} most mistaken)"]
    for i, j in agreement.top_pairs.tolist():
        mark = " *" if (i, j) in confused else ""
        lines.append(f"{names[i] + ' / ' + names[j]:<8}{similarity[i, j].item():>+8.2f}"
                     f"{100 * mistaken[i, j].item():>9.1f}%{mark}")
    return "\n".join(lines), agreement


def agreement_summary(agreement: SimilarityAgreement, what: str) -> str:
    """One sentence: the rank correlation and the top-pair overlap against chance."""
    return (f"{what}: Spearman {agreement.spearman:+.2f} over {agreement.pairs} pairs; "
            f"{round(agreement.top_overlap * agreement.top_k)} of the top {agreement.top_k} pairs shared "
            f"(chance: {agreement.chance_overlap * agreement.top_k:.2f}).")
