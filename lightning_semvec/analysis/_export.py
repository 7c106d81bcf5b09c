"""Writing an analysed epoch through a ``TensorBoardLogger``: projector files and figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from lightning_semvec._utils.warning_cache import WarningCache
from lightning_semvec.analysis.layer_analysis import LayerResult
from lightning_semvec.analysis.projector_export import write_projector
from lightning_semvec.functional.similarity import (
    semantic_similarity as _semantic_similarity,
)

if TYPE_CHECKING:
    import lightning.pytorch as pl

__all__ = ["log_figures", "tensorboard_logger_of", "write_projector_and_figures"]


def tensorboard_logger_of(trainer: pl.Trainer, messages: WarningCache) -> TensorBoardLogger | None:
    """The first ``TensorBoardLogger`` among the trainer's loggers, or ``None`` (and a one-time
    note through ``messages``)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger
    messages.note(
        "no-tensorboard",
        f"{messages.owner}: no TensorBoardLogger among the trainer's loggers, so the "
        "Embedding Projector export and the figures are skipped (fidelity is still logged).",
    )
    return None


def write_projector_and_figures(
    logger: TensorBoardLogger,
    vectors: Mapping[str, Tensor],
    results: Mapping[str, LayerResult],
    step: int,
    class_names: Sequence[str] | None,
    *,
    projector: bool,
    figures: bool,
    figure_max_neurons: int,
    messages: WarningCache,
) -> None:
    """Write every layer's projector files and/or figures for ``step`` (global rank 0 only).

    ``vectors`` are ``{layer: (N, d) CPU tensor}``; ``results`` the last analysed validation of
    each layer (a layer without one gets no statistics, images or activation heatmap). The
    projector part is :func:`~lightning_semvec.analysis.projector_export.write_projector`.
    """
    experiment = logger.experiment  # creates the event file, so TensorBoard lists the run
    if projector:
        write_projector(logger.log_dir, vectors, results, step, class_names, messages)
    if figures:
        for name, layer_vectors in vectors.items():
            log_figures(experiment, name, layer_vectors, results.get(name), step, class_names,
                        figure_max_neurons)
    experiment.flush()


def log_figures(
    experiment: Any,
    name: str,
    vectors: Tensor,
    result: LayerResult | None,
    step: int,
    class_names: Sequence[str] | None,
    figure_max_neurons: int,
) -> None:
    """Add one layer's similarity heatmaps and PCA map to a TensorBoard ``SummaryWriter``."""
    from lightning_semvec._utils.indices import evenly_spaced
    from lightning_semvec.analysis.figures import pca_map, similarity_heatmaps

    if result is not None and result.activation_similarity is not None:
        ids, s_act = result.similarity_ids, result.activation_similarity
        title = f"{name}: step {step} (activations: validation at step {result.step})"
    else:
        ids, s_act = evenly_spaced(vectors.shape[0], figure_max_neurons), None
        title = f"{name}: step {step}"
    assert ids is not None
    figure = similarity_heatmaps(_semantic_similarity(vectors[ids]), s_act, neuron_ids=ids,
                                 title=title)
    experiment.add_figure(f"semvec/{name}/similarity", figure, global_step=step, close=True)
    stats = result.statistics if result is not None else {}
    figure = pca_map(vectors, stats.get("preferred_class"), class_names,
                     stats.get("dead"), title=f"{name}: semantic vectors, PCA (step {step})")
    experiment.add_figure(f"semvec/{name}/pca", figure, global_step=step, close=True)
