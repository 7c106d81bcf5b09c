"""Writing an analysed epoch out: through a ``TensorBoardLogger`` (projector files and
figures), and into the exported knowledge (statistics, top-activating inputs, fidelity)."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from lightning_semvec._utils.warning_cache import WarningCache
from lightning_semvec.analysis.layer_analysis import LayerResult
from lightning_semvec.analysis.projector_export import write_projector
from lightning_semvec.functional.similarity import (
    semantic_similarity as _semantic_similarity,
)
from lightning_semvec.knowledge.layer_knowledge import TOP_INPUTS_MAX_PIXELS

if TYPE_CHECKING:
    import lightning.pytorch as pl

__all__ = [
    "MIN_TOP_INPUT_SIZE",
    "exported_statistics",
    "exported_top_inputs",
    "fidelity_extra",
    "log_figures",
    "tensorboard_logger_of",
    "write_projector_and_figures",
]

#: The smallest thumbnail side the export shrinks ``top_inputs`` to before it keeps fewer
#: inputs per neuron: at 8 pixels a glyph or a face is hard to make out.
MIN_TOP_INPUT_SIZE = 16


def exported_top_inputs(
    thumbnails: Tensor, max_pixels: int = TOP_INPUTS_MAX_PIXELS
) -> Tensor | None:
    """A layer's ``(N, K, 3, S, S)`` uint8 top-activating thumbnails, bounded for the
    knowledge file: at most ``max_pixels`` pixels ``N * K * S**2``.

    Over the bound, the thumbnails are first shrunk (area averaging) down to
    :data:`MIN_TOP_INPUT_SIZE` pixels a side, then only the best ``K' < K`` inputs per neuron
    are kept; ``None`` when not even one 1-pixel input per neuron fits.

    Returns:
        ``(N, K', 3, S', S')`` uint8 with ``K' <= K`` and ``S' <= S``, best input first.

    Example:
        >>> thumbs = torch.zeros(2048, 9, 3, 32, 32, dtype=torch.uint8)
        >>> exported_top_inputs(thumbs).shape  # 2048 * 2 * 16**2 = 2**20 pixels
        torch.Size([2048, 2, 3, 16, 16])
        >>> exported_top_inputs(torch.zeros(62, 9, 3, 32, 32, dtype=torch.uint8)).shape
        torch.Size([62, 9, 3, 32, 32])
    """
    n, k, _, size, _ = thumbnails.shape
    fits = math.isqrt(max_pixels // (n * k))
    if fits < min(size, MIN_TOP_INPUT_SIZE):
        side = min(size, MIN_TOP_INPUT_SIZE)
        k = min(k, max_pixels // (n * side * side))
        if k == 0:
            k, fits = 1, math.isqrt(max_pixels // n)
            if fits == 0:
                return None
        else:
            fits = math.isqrt(max_pixels // (n * k))
    side = min(size, fits)
    kept = thumbnails[:, :k]
    if side < size:
        flat = kept.reshape(n * k, *kept.shape[2:]).float()
        flat = torch.nn.functional.interpolate(flat, size=(side, side), mode="area")
        kept = flat.round().clamp(0, 255).to(torch.uint8).reshape(n, k, -1, side, side)
    return kept.contiguous()


def exported_statistics(
    statistics: Mapping[str, Mapping[str, Tensor]], results: Mapping[str, LayerResult]
) -> dict[str, dict[str, Tensor]]:
    """The per-layer statistics of the exported knowledge: ``statistics`` (``{layer:
    {statistic: tensor}}``) plus each analysed layer's top-activating inputs as
    ``top_inputs`` (:func:`exported_top_inputs`) when its last analysed epoch kept images.

    Example:
        >>> exported_statistics({"fc": {"dead": torch.zeros(3, dtype=torch.bool)}}, {})
        {'fc': {'dead': tensor([False, False, False])}}
    """
    out = {name: dict(values) for name, values in statistics.items()}
    for name, result in results.items():
        if name not in out or result.thumbnails is None:
            continue
        top = exported_top_inputs(result.thumbnails)
        if top is not None:
            out[name]["top_inputs"] = top
    return out


def fidelity_extra(
    results: Mapping[str, LayerResult],
    layers: Collection[str],
    previous: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``{"fidelity/<layer>": Spearman}`` of each of ``layers``' last analysed validation
    epoch (the held-out fidelity that ``semvec/<layer>/fidelity`` logged), for the knowledge's
    ``extra``; layers without a fidelity or with a NaN one are left out. ``previous``: the
    ``extra`` of a loaded knowledge (a resumed run), whose fidelity stands for layers not
    analysed since.

    Example:
        >>> fidelity_extra({}, ["fc"], {"fidelity/fc": "0.900000", "dataset": "digits"})
        {'fidelity/fc': '0.900000'}
    """
    kept = {key: value for key, value in (previous or {}).items()
            if key.startswith("fidelity/") and key.removeprefix("fidelity/") in layers}
    kept.update({
        f"fidelity/{name}": f"{result.fidelity['spearman']:.6f}"
        for name, result in results.items()
        if name in layers and result.fidelity is not None
        and not math.isnan(result.fidelity["spearman"])
    })
    return kept


def tensorboard_logger_of(
    trainer: pl.Trainer, messages: WarningCache | None
) -> TensorBoardLogger | None:
    """The first ``TensorBoardLogger`` among the trainer's loggers, or ``None`` (and a one-time
    note through ``messages``, unless it is ``None``)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger
    if messages is not None:
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
