"""Validation-time analysis of semantic vectors: per-layer statistics, fidelity, top inputs.

:class:`~lightning_semvec.SemanticVectorCallback` owns the Lightning hooks and the state; this
module holds what it does with a validation epoch: deciding whether the epoch is analysed,
reading labels and images out of a batch, streaming each layer's metrics
(:class:`LayerAnalysis`, computed into a :class:`LayerResult`), and writing the projector files
and figures through a ``TensorBoardLogger``. The functions take the options they need as
arguments, not the callback.

Example:
    >>> import torch
    >>> batch = (torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 1]))
    >>> labels_of_batch(batch, label_fn=None, num_classes=3, notify=print).tolist()
    [0, 1, 2, 1]
    >>> images_of_batch(batch, notify=print).shape
    torch.Size([4, 3, 8, 8])
    >>> analysis = LayerAnalysis.create("fc", num_neurons=5, images_per_neuron=0,
    ...     device=torch.device("cpu"), num_classes=3, similarity="pearson",
    ...     fidelity_max_neurons=2048, fidelity_k=2, seed=0, thumbnail_size=32)
    >>> analysis.update(torch.randn(4, 5), batch[1], None, {})
    >>> result = analysis.compute(torch.randn(5, 2), step=7, figures=False,
    ...     figure_max_neurons=128)
    >>> sorted(result.fidelity), result.statistics["class_counts"].tolist()
    (['neighbour_agreement', 'spearman'], [1.0, 2.0, 1.0])
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

from lightning_semvec.functional.similarity import SimilarityKind
from lightning_semvec.functional.similarity import semantic_similarity as _semantic_similarity
from lightning_semvec.metrics import NeuronActivationStatistics, SemanticFidelity
from lightning_semvec.metrics.top_activating_inputs import TopActivatingInputs
from lightning_semvec.projector import (
    neuron_metadata,
    sprite_thumbnail_size,
    tile_images,
    to_thumbnails,
    write_embedding,
)

if TYPE_CHECKING:
    import lightning.pytorch as pl

LabelFn = Callable[[Any], "Tensor | None"]
Notify = Callable[[str, str], None]
"""Called with ``(key, message)`` for a one-time message (the callback's ``_info_once``)."""

_CLASS_STATISTICS = ("class_means", "class_counts", "selectivity", "preferred_class")


def is_int_at_least(value: Any, minimum: int) -> bool:
    """Whether ``value`` is an ``int`` (not a ``bool``) of at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def is_label_tensor(value: Any) -> bool:
    """Whether ``value`` looks like a batch's labels: a ``(B,)`` integer (not bool) tensor."""
    return (
        isinstance(value, Tensor)
        and value.ndim == 1
        and not value.is_floating_point()
        and not value.is_complex()
        and value.dtype != torch.bool
    )


def analysis_due(trainer: pl.Trainer, log_every_n_epochs: int | None) -> bool:
    """Whether this validation epoch is analysed: every ``log_every_n_epochs`` epochs of
    ``fit``, never during the sanity check, never when ``log_every_n_epochs`` is ``None``."""
    return (
        log_every_n_epochs is not None
        and not trainer.sanity_checking
        and trainer.state.fn == TrainerFn.FITTING
        and (trainer.current_epoch + 1) % log_every_n_epochs == 0
    )


def find_num_classes(
    trainer: pl.Trainer,
    pl_module: pl.LightningModule,
    num_classes: int | None,
    class_names: Sequence[str] | None,
) -> int | None:
    """The number of classes: ``num_classes`` if given, else the first integer >= 2 among
    ``len(class_names)``, ``trainer.datamodule.num_classes``, ``pl_module.num_classes`` and
    ``pl_module.hparams["num_classes"]``; ``None`` when none is known."""
    if num_classes is not None:
        return num_classes
    hparams = getattr(pl_module, "hparams", None) or {}
    for candidate in (
        len(class_names) if class_names else None,
        getattr(trainer.datamodule, "num_classes", None),
        getattr(pl_module, "num_classes", None),
        hparams.get("num_classes") if isinstance(hparams, Mapping) else None,
    ):
        if is_int_at_least(candidate, 2):
            return int(candidate)  # type: ignore[arg-type]
    return None


def labels_of_batch(
    batch: Any, label_fn: LabelFn | None, num_classes: int | None, notify: Notify
) -> Tensor | None:
    """A validation batch's ``(B,)`` integer labels, or ``None``.

    Taken from ``label_fn(batch)`` when given, else ``batch[1]`` of a ``(x, y, ...)`` tuple or
    list with integer ``y``. ``notify`` gets a one-time message when there are no labels or the
    number of classes is unknown.

    Raises:
        TypeError: ``label_fn`` returned something other than a ``(B,)`` integer tensor or
            ``None``.
        ValueError: the labels lie outside ``[0, num_classes)``.
    """
    if label_fn is not None:
        labels = label_fn(batch)
        if labels is not None and not is_label_tensor(labels):
            got = (
                f"shape {tuple(labels.shape)} of dtype {labels.dtype}"
                if isinstance(labels, Tensor)
                else type(labels).__name__
            )
            raise TypeError(
                "label_fn must return the batch's labels as a (B,) integer tensor, or None; "
                f"got {got}."
            )
    elif isinstance(batch, (tuple, list)) and len(batch) >= 2 and is_label_tensor(batch[1]):
        labels = batch[1]
    else:
        labels = None
    if labels is None:
        notify(
            "no-labels",
            "SemanticVectorCallback: a validation batch carries no integer labels (none at "
            "batch[1], or label_fn returned None), so the projector shows no preferred class "
            "or selectivity; pass a label_fn that picks them out of the batch.",
        )
    elif num_classes is None:
        notify(
            "no-num-classes",
            "SemanticVectorCallback: the number of classes is unknown, so the projector "
            "shows no preferred class or selectivity; pass num_classes or class_names.",
        )
    elif labels.numel():
        low, high = torch.stack([labels.min(), labels.max()]).tolist()  # one host sync
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"SemanticVectorCallback: validation labels lie in [{low}, {high}], outside "
                f"[0, {num_classes}) for num_classes={num_classes}. Pass num_classes (or "
                "class_names) matching the labels, or a label_fn that returns class indices."
            )
    return labels


def images_of_batch(batch: Any, notify: Notify) -> Tensor | None:
    """A validation batch's images: ``batch[0]`` (or the batch itself) when it is a
    ``(B, C, H, W)`` float or uint8 tensor with ``C`` in ``{1, 3}``; else ``None`` (and a
    one-time message through ``notify``)."""
    x = batch[0] if isinstance(batch, (tuple, list)) and len(batch) > 0 else batch
    if (
        isinstance(x, Tensor)
        and x.ndim == 4
        and x.shape[1] in (1, 3)
        and (x.is_floating_point() or x.dtype == torch.uint8)
    ):
        return x
    notify(
        "no-images",
        "SemanticVectorCallback: projector_images needs image inputs (batch[0] of shape "
        "(B, C, H, W) with 1 or 3 channels); these validation inputs are not, so the "
        "projector gets no neuron images.",
    )
    return None


@dataclass
class LayerResult:
    """What one analysed validation epoch found for one layer (CPU tensors)."""

    name: str
    step: int
    statistics: dict[str, Tensor]
    fidelity: dict[str, float] | None
    similarity_ids: Tensor | None  # (n,) neurons shown in the heatmap
    activation_similarity: Tensor | None  # (n, n)
    thumbnails: Tensor | None  # (N, k, 3, t, t) uint8


class LayerAnalysis:
    """The metrics one layer streams over one validation epoch."""

    def __init__(
        self,
        name: str,
        statistics: NeuronActivationStatistics,
        fidelity: SemanticFidelity | None,
        top: TopActivatingInputs | None,
        labelled: bool,
    ) -> None:
        self.name = name
        self.statistics = statistics
        self.fidelity = fidelity
        self.top = top
        self.labelled = labelled  # class statistics are reported only if every batch had labels
        self.images_seen = False

    @classmethod
    def create(
        cls,
        name: str,
        num_neurons: int,
        images_per_neuron: int,
        device: torch.device,
        *,
        num_classes: int | None,
        similarity: SimilarityKind,
        fidelity_max_neurons: int,
        fidelity_k: int,
        seed: int,
        thumbnail_size: int,
    ) -> LayerAnalysis:
        """The metrics of a layer of ``num_neurons`` neurons, on ``device``.

        Layers with fewer than 3 neurons get no fidelity; ``images_per_neuron=0`` keeps no
        top-activating inputs. Class statistics need ``num_classes``.
        """
        # Labels are range-checked once per batch (labels_of_batch), not once per layer here.
        statistics = NeuronActivationStatistics(
            num_neurons, num_classes or 2, validate_args=False
        ).to(device)
        fidelity = None
        if num_neurons >= 3:
            tracked = min(num_neurons, fidelity_max_neurons)
            fidelity = SemanticFidelity(
                num_neurons,
                similarity=similarity,
                max_neurons=fidelity_max_neurons,
                k=min(fidelity_k, tracked - 1),
                seed=seed,
            ).to(device)
        top = None
        if images_per_neuron:
            size = sprite_thumbnail_size(num_neurons, images_per_neuron, thumbnail_size)
            top = TopActivatingInputs(num_neurons, images_per_neuron, size).to(device)
        return cls(name, statistics, fidelity, top, labelled=num_classes is not None)

    def update(
        self,
        activations: Tensor,
        labels: Tensor | None,
        images: Tensor | None,
        thumbnails: dict[int, Tensor],
    ) -> None:
        """One captured ``(M, N)`` chunk; ``M`` is ``B`` or ``B * positions`` when aligned.

        ``thumbnails`` caches the batch's thumbnails by size, shared by the layers.
        """
        device = self.statistics.sums.device
        acts = activations.to(device)
        if self.fidelity is not None:
            self.fidelity.update(acts)
        batch = labels.shape[0] if labels is not None else (
            images.shape[0] if images is not None else 0
        )
        per_input = acts.shape[0] // batch if batch and acts.shape[0] % batch == 0 else 0
        if labels is not None and per_input and self.labelled:
            row_labels = labels.to(device=device, dtype=torch.long)
            if per_input > 1:
                row_labels = row_labels.repeat_interleave(per_input)
        else:
            self.labelled = False
            row_labels = torch.zeros(acts.shape[0], dtype=torch.long, device=device)
        self.statistics.update(acts, row_labels)
        if self.top is not None and images is not None and per_input and images.shape[0] == batch:
            per_image = acts if per_input == 1 else acts.view(batch, per_input, -1).mean(dim=1)
            size = self.top.size
            if size not in thumbnails:
                thumbnails[size] = to_thumbnails(images, size)
            self.top.update(per_image, thumbnails[size])
            self.images_seen = True

    def compute(
        self, vectors: Tensor, step: int, *, figures: bool, figure_max_neurons: int
    ) -> LayerResult:
        """Compute every metric; each gathers across processes, so every process calls this.

        ``vectors`` are the layer's ``(N, d)`` semantic vectors; with ``figures`` the result
        keeps the activation similarity of at most ``figure_max_neurons`` neurons for the
        heatmap.
        """
        with warnings.catch_warnings():
            # A process that saw no validation batch still joins the gathers.
            warnings.filterwarnings("ignore", message=".*was called before the ``update``.*")
            statistics = {k: v.detach().cpu() for k, v in self.statistics.compute().items()}
            if not self.labelled:
                statistics = {k: v for k, v in statistics.items() if k not in _CLASS_STATISTICS}
            fidelity = ids = s_act = None
            if self.fidelity is not None:
                self.fidelity.set_vectors(vectors.detach())
                fidelity = {k: float(v) for k, v in self.fidelity.compute().items()}
                if figures:
                    from lightning_semvec.figures import evenly_spaced

                    similarity, _ = self.fidelity.compute_similarity()
                    tracked = self.fidelity.neuron_indices.cpu()
                    pick = evenly_spaced(tracked.numel(), figure_max_neurons)
                    ids, s_act = tracked[pick], similarity.cpu()[pick][:, pick]
            thumbnails = None
            if self.top is not None:
                top = self.top.compute()
                thumbnails = top["thumbnails"].cpu() if self.images_seen else None
        return LayerResult(self.name, step, statistics, fidelity, ids, s_act, thumbnails)


def tensorboard_logger_of(trainer: pl.Trainer, notify: Notify) -> TensorBoardLogger | None:
    """The first ``TensorBoardLogger`` among the trainer's loggers, or ``None`` (and a one-time
    message through ``notify``)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger
    notify(
        "no-tensorboard",
        "SemanticVectorCallback: no TensorBoardLogger among the trainer's loggers, so the "
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
) -> None:
    """Write every layer's projector files and/or figures for ``step`` (global rank 0 only).

    ``vectors`` are ``{layer: (N, d) CPU tensor}``; ``results`` the last analysed validation of
    each layer (a layer without one gets no statistics, images or activation heatmap).
    """
    experiment = logger.experiment  # creates the event file, so TensorBoard lists the run
    for name, layer_vectors in vectors.items():
        result = results.get(name)
        if projector:
            sprite = None
            if result is not None and result.thumbnails is not None:
                sprite = tile_images(result.thumbnails)
            metadata = neuron_metadata(
                name,
                layer_vectors.shape[0],
                result.statistics if result is not None else None,
                class_names,
            )
            write_embedding(logger.log_dir, name, layer_vectors, step, metadata, sprite)
        if figures:
            log_figures(experiment, name, layer_vectors, result, step, class_names,
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
    from lightning_semvec.figures import evenly_spaced, pca_map, similarity_heatmaps

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
