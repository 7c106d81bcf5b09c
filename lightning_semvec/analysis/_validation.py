"""``ValidationAnalysis``: the callback's validation-time work, from epoch start to export.

:class:`~lightning_semvec.SemanticVectorCallback` captures its layers' eval-mode outputs and
hands them here; this object decides whether an epoch is analysed, streams each layer's
metrics (:class:`~lightning_semvec.analysis.layer_analysis.LayerAnalysis`), logs the fidelity, keeps
the results (their statistics go into the exported knowledge) and writes the projector files
and figures (:mod:`~lightning_semvec.analysis._export`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
from torch import Tensor

from lightning_semvec._utils.warning_cache import WarningCache
from lightning_semvec.analysis._export import (
    tensorboard_logger_of,
    write_projector_and_figures,
)
from lightning_semvec.analysis._finishing import finish_in_place
from lightning_semvec.analysis._text_card import TEXT_TAG, reading_guide
from lightning_semvec.analysis.batches import (
    analysis_due,
    find_num_classes,
    images_of_batch,
    labels_of_batch,
)
from lightning_semvec.analysis.layer_analysis import LayerAnalysis, LayerResult
from lightning_semvec.analysis.options import AnalysisOptions
from lightning_semvec.functional.similarity import SimilarityKind
from lightning_semvec.vectors.semantic_vectors import SemanticVectors

__all__ = ["ValidationAnalysis"]


class ValidationAnalysis:
    """Analyses the validation epochs that ``options`` asks for.

    Args:
        options: what to analyse and write.
        similarity: the activation similarity of the vectors (the fidelity uses the same).
        seed: seeds the fidelity's neuron subsets of wide layers.
        messages: the owner's once-only messages (the callback's).
    """

    def __init__(
        self,
        options: AnalysisOptions,
        similarity: SimilarityKind,
        seed: int,
        messages: WarningCache,
    ) -> None:
        self.options = options
        self.similarity: SimilarityKind = similarity
        self.seed = seed
        self.messages = messages
        self.num_classes: int | None = None
        self.layers: dict[str, LayerAnalysis] | None = None  # during an analysed epoch only
        self.results: dict[str, LayerResult] = {}
        self.exported_step: int | None = None
        #: The log folders that have the text card (:mod:`~lightning_semvec.analysis._text_card`).
        self.card_written: set[str] = set()

    def setup(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, class_names: Sequence[str] | None
    ) -> None:
        """Find the number of classes of this ``fit``."""
        self.num_classes = find_num_classes(
            trainer, pl_module, self.options.num_classes, class_names
        )

    def start_epoch(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, widths: Mapping[str, int]
    ) -> list[str]:
        """Start streaming if this epoch is analysed; returns the layers to capture (none if
        not). ``widths``: ``{layer: N}`` of the layers that have vectors."""
        self.layers = None
        if not widths or not analysis_due(trainer, self.options.log_every_n_epochs):
            return []
        options = self.options
        self.layers = {
            name: LayerAnalysis.create(
                name,
                width,
                options.images_per_neuron,
                pl_module.device,
                num_classes=self.num_classes,
                similarity=self.similarity,
                fidelity_max_neurons=options.fidelity_max_neurons,
                fidelity_k=options.fidelity_k,
                seed=self.seed,
                thumbnail_size=options.thumbnail_size,
            )
            for name, width in widths.items()
        }
        return list(self.layers)

    def update(self, batch: Any, captured: Mapping[str, list[Tensor]]) -> None:
        """Stream one validation batch: ``captured`` holds each layer's ``(M, N)`` chunks."""
        if self.layers is None:
            return
        labels = labels_of_batch(batch, self.options.label_fn, self.num_classes, self.messages)
        images = images_of_batch(batch, self.messages) if self.options.images_per_neuron else None
        thumbnails: dict[int, Tensor] = {}  # by size: layers of one width share them
        for name, analysis in self.layers.items():
            for position, chunk in enumerate(captured.get(name, [])):
                analysis.update(chunk, labels, images if position == 0 else None, thumbnails)

    def end_epoch(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        vectors: Mapping[str, Tensor],
        class_names: Sequence[str] | None,
    ) -> None:
        """Compute, log and (on global rank 0) write what the epoch found.

        Every process computes every metric, in the same order: each one gathers.
        """
        layers, self.layers = self.layers, None
        if layers is None:
            return
        step = trainer.global_step
        schedule = self.options.figure_schedule
        results = {
            # The heatmaps' similarity is kept whenever figures are drawn: "end" draws them
            # from the last analysed epoch.
            name: layer.compute(vectors[name], step, figures=schedule is not None,
                                figure_max_neurons=self.options.figure_max_neurons,
                                keep_similarity=self.options.finish_vectors)
            for name, layer in layers.items()
        }
        for result in results.values():
            if result.fidelity is None:
                continue
            for key, metric in (("spearman", "fidelity"), ("neighbour_agreement",) * 2):
                pl_module.log(
                    f"semvec/{result.name}/{metric}",
                    result.fidelity[key],
                    on_step=False,
                    on_epoch=True,
                    batch_size=1,
                    sync_dist=True,  # equal on every process already; keeps Lightning quiet
                )
        self.results.update(results)
        if trainer.is_global_zero:
            self.export(trainer, {n: v.detach().cpu() for n, v in vectors.items()}, step,
                        class_names, figures=schedule == "epoch")

    def end_fit(
        self, trainer: pl.Trainer, vectors: SemanticVectors, class_names: Sequence[str] | None
    ) -> None:
        """Finish the vectors (``options.finish_vectors``, on every process), then export the
        final ones (rank 0 only): the projector's last point, unless this step was just
        exported with these vectors; the figures with ``figures="end"`` (with ``"epoch"``,
        when this step has none yet)."""
        step = trainer.global_step
        finished = self.options.finish_vectors and finish_in_place(
            vectors, self.results, step, self.messages)
        if not (vectors.layer_names and trainer.is_global_zero):
            return
        fresh = self.exported_step != step
        schedule = self.options.figure_schedule
        figures = schedule == "end" or (schedule == "epoch" and fresh)
        if fresh or finished or figures:
            self.export(trainer, vectors.vectors(), step, class_names,
                        projector=fresh or bool(finished), figures=figures)

    def export(
        self,
        trainer: pl.Trainer,
        vectors: Mapping[str, Tensor],
        step: int,
        class_names: Sequence[str] | None,
        *,
        projector: bool = True,
        figures: bool = True,
    ) -> None:
        """Write the projector files (unless ``projector=False``) and figures (unless
        ``figures=False``) of every layer at ``step``, as far as the options allow; at the
        first export into a log folder, the text card that says how to read them."""
        options = self.options
        projector = projector and options.projector
        figures = figures and options.figure_schedule is not None
        # With nothing else to write the card still explains the scalars, without the note
        # that the projector and the figures are skipped for want of a TensorBoardLogger.
        logger = tensorboard_logger_of(trainer, self.messages if projector or figures else None)
        if logger is None:
            return
        if logger.log_dir not in self.card_written:
            logger.experiment.add_text(TEXT_TAG, reading_guide(vectors, options), global_step=step)
            self.card_written.add(logger.log_dir)
        write_projector_and_figures(
            logger,
            vectors,
            self.results,
            step,
            class_names,
            projector=projector,
            figures=figures,
            figure_max_neurons=options.figure_max_neurons,
            messages=self.messages,
        )
        if projector or figures:
            self.exported_step = step
