"""``AnalysisOptions``: what :class:`~lightning_semvec.SemanticVectorCallback` does with validation data.

One composed option of the callback (``analysis=AnalysisOptions(...)``, or ``None`` for no
validation-time work at all), which LightningCLI exposes as ``--semvec.analysis.<field>``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor

from lightning_semvec._utils.checks import check_callable, check_choice, check_int
from lightning_semvec.errors import SemvecTypeError, SemvecValueError

__all__ = ["FIGURE_SCHEDULES", "PROJECTOR_IMAGES", "AnalysisOptions", "FigureSchedule", "LabelFn",
           "ProjectorImages"]

ProjectorImages = Literal["off", "top1", "grid"]
PROJECTOR_IMAGES: tuple[str, ...] = ("off", "top1", "grid")
FigureSchedule = Literal["end", "epoch"]
#: When the figures are drawn: ``"end"`` once, at the end of ``fit``; ``"epoch"`` at every
#: analysed epoch as well (about 0.2 to 0.5 s per layer on a CPU: matplotlib's drawing).
FIGURE_SCHEDULES: tuple[str, ...] = ("end", "epoch")
LabelFn = Callable[[Any], "Tensor | None"]


@dataclass(frozen=True)
class AnalysisOptions:
    """Options of the validation-time analysis: statistics, fidelity, projector, figures.

    When a validation epoch is due (every ``log_every_n_epochs`` of ``fit``; never during the
    sanity check), the callback reads its layers in eval mode and streams, per layer,
    :class:`~lightning_semvec.metrics.NeuronActivationStatistics`,
    :class:`~lightning_semvec.metrics.SemanticFidelity` and, for images, the top-activating
    inputs; it logs ``semvec/<layer>/fidelity`` and ``semvec/<layer>/neighbour_agreement`` and
    writes the projector files and figures through the ``TensorBoardLogger``. The statistics
    of the last analysed epoch go into the exported knowledge.

    Args:
        log_every_n_epochs: analyse every this many epochs' validation (and export once more
            at the end of ``fit``).
        projector: write each layer's vectors to TensorBoard's Embedding Projector (needs a
            ``TensorBoardLogger`` among the trainer's loggers).
        projector_images: the picture of each neuron in the projector: ``"top1"`` (default)
            the validation input that activates it most, ``"grid"`` its ``projector_top_k``
            best inputs in a small grid, ``"off"`` none. Used for image inputs only
            (``batch[0]`` of shape ``(B, C, H, W)``, ``C`` in ``{1, 3}``).
        projector_top_k: inputs per neuron for ``projector_images="grid"``.
        thumbnail_size: largest side of one input's thumbnail in pixels; wide layers get
            smaller ones so that the sprite fits TensorBoard's 8192-pixel limit.
        figures: log figures to TensorBoard (``semvec/<layer>/similarity``: semantic vs
            activation similarity heatmaps; ``semvec/<layer>/pca``: PCA map of the vectors):
            ``"end"`` (default, or ``True``) once at the end of ``fit``, of the final vectors
            and the last analysed epoch's activation similarity; ``"epoch"`` at every analysed
            epoch too (drawing costs about 0.2 to 0.5 s per layer on a CPU); ``False`` none.
        figure_max_neurons: the heatmaps show at most this many neurons (evenly spaced).
        fidelity_max_neurons: :class:`~lightning_semvec.metrics.SemanticFidelity` tracks a
            fixed random subset of this many neurons of wider layers.
        fidelity_k: neighbours per neuron for the neighbour agreement.
        class_names: names of the classes, shown in the projector and stored with the
            knowledge; taken from ``trainer.datamodule.class_names`` when not given.
        num_classes: number of classes of the labels; taken from ``class_names``,
            ``trainer.datamodule.num_classes`` or ``pl_module.num_classes`` when not given.
            Without it the projector leaves the preferred class and selectivity empty.
        label_fn: takes a validation batch and returns its ``(B,)`` integer labels (or
            ``None``); by default ``batch[1]`` of a ``(x, y, ...)`` tuple or list with
            integer ``y``.
        finish_vectors: at the end of ``fit``, refine the vectors to the best fit of the
            activation similarity of the last analysed validation pass, when that pass saw the
            final network (``docs/trained-model.md``): vectors learned in a few hundred steps
            are far from it. Layers wider than ``fidelity_max_neurons`` keep theirs. The
            fidelity logged at that pass was measured before.

    Example:
        >>> AnalysisOptions(projector_images="grid", figures=False).images_per_neuron
        9
        >>> AnalysisOptions().figure_schedule, AnalysisOptions(figures=True).figure_schedule
        ('end', 'end')
        >>> AnalysisOptions(projector_images="tiles")
        Traceback (most recent call last):
        ...
        lightning_semvec.errors.SemvecValueError: Unknown projector_images 'tiles': use one of 'off', 'top1', ...
    """

    log_every_n_epochs: int = 1
    projector: bool = True
    projector_images: ProjectorImages = "top1"
    projector_top_k: int = 9
    thumbnail_size: int = 32
    figures: bool | FigureSchedule = "end"
    figure_max_neurons: int = 128
    fidelity_max_neurons: int = 2048
    fidelity_k: int = 5
    class_names: Sequence[str] | None = None
    num_classes: int | None = None
    label_fn: LabelFn | None = None
    finish_vectors: bool = True

    def __post_init__(self) -> None:
        check_int("log_every_n_epochs", self.log_every_n_epochs, 1,
                  hint="To turn validation-time analysis off, pass analysis=None.")
        check_choice(
            "projector_images", self.projector_images, PROJECTOR_IMAGES,
            hint="'top1' is the input that activates each neuron most, 'grid' its "
            "projector_top_k best inputs.",
        )
        if not isinstance(self.figures, bool):
            check_choice("figures", self.figures, FIGURE_SCHEDULES,
                         hint="Or True (the same as 'end') or False for no figures.")
        for name, minimum in (
            ("projector_top_k", 1),
            ("thumbnail_size", 1),
            ("figure_max_neurons", 2),
            ("fidelity_max_neurons", 3),
            ("fidelity_k", 1),
        ):
            check_int(name, getattr(self, name), minimum)
        if self.num_classes is not None:
            check_int("num_classes", self.num_classes, 2, hint="Or None to find it.")
        if self.class_names is not None:
            if isinstance(self.class_names, str) or not all(
                isinstance(c, str) for c in self.class_names
            ):
                raise SemvecTypeError(
                    f"class_names must be a list of strings or None, got {self.class_names!r}."
                )
            object.__setattr__(self, "class_names", list(self.class_names))
        if self.num_classes is not None and self.class_names is not None:
            if len(self.class_names) != self.num_classes:
                raise SemvecValueError(
                    f"class_names has {len(self.class_names)} names but num_classes is "
                    f"{self.num_classes}: give one name per class, or only one of the two."
                )
        if self.label_fn is not None:
            check_callable("label_fn", self.label_fn,
                           "a callable taking a batch and returning (B,) integer labels")

    @property
    def figure_schedule(self) -> FigureSchedule | None:
        """``"end"``, ``"epoch"`` or ``None`` (no figures), whichever form ``figures`` took."""
        if self.figures is True:
            return "end"
        return self.figures or None

    @property
    def images_per_neuron(self) -> int:
        """Inputs kept per neuron for the projector's pictures (0: none)."""
        if not self.projector:
            return 0  # the images are only shown in the projector
        return {"off": 0, "top1": 1, "grid": self.projector_top_k}[self.projector_images]
