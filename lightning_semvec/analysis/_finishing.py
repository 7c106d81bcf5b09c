"""Finishing the callback's vectors at the end of ``fit``: the best fit of the activation
similarity of the last analysed validation pass, when that pass saw the final network."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from lightning_semvec._utils.warning_cache import WarningCache
from lightning_semvec.analysis.layer_analysis import LayerResult
from lightning_semvec.functional.finishing import finished_vectors
from lightning_semvec.vectors.semantic_vectors import SemanticVectors

__all__ = ["finish_in_place"]


def finish_in_place(
    vectors: SemanticVectors,
    results: Mapping[str, LayerResult],
    step: int,
    messages: WarningCache,
) -> list[str]:
    """Move each layer's vectors to the best fit of its last analysed similarity, in place.

    Only results taken at ``step`` (the final network) with the whole similarity count; every
    process holds the same similarity (gathered) and vectors, so every process gets the same
    result. Returns the layers finished; ``messages`` says why the others were not.
    """
    finished, stale = [], []
    for name in vectors.layer_names:
        result = results.get(name)
        if result is None or result.full_similarity is None:
            continue
        if result.step != step:
            stale.append(name)
            continue
        similarity, alive = result.full_similarity
        parameter = vectors[name]
        moved = finished_vectors(parameter.detach().cpu(), similarity, alive)
        with torch.no_grad():
            parameter.copy_(moved.to(parameter.device))
        finished.append(name)
    if stale:
        messages.note("finish-stale", (
            f"{messages.owner}: the vectors of {stale} were not finished: the last "
            "analysed validation ran before the final step. Analyse the last epoch "
            "(log_every_n_epochs, validation at the end of the last epoch) to finish them."))
    elif finished:
        messages.note("finished", f"{messages.owner}: finished the vectors of {finished} on the "
                           "last validation pass's activation similarity.")
    return finished
