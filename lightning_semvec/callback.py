"""``SemanticVectorCallback``: learn a semantic vector per neuron while any LightningModule trains."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from typing_extensions import override

from lightning_semvec.functional.alignment import (
    ALIGNMENT_FORMS,
    DENSE_MAX_NEURONS,
    AlignmentForm,
)
from lightning_semvec.functional.alignment_gradient import alignment_gradients, plan_alignment_runs
from lightning_semvec.functional.similarity import SimilarityKind, check_similarity_kind
from lightning_semvec.functional.similarity import semantic_similarity as _semantic_similarity
from lightning_semvec.layers import LayerSpec, matches_pattern, resolve_layers
from lightning_semvec.neurons import NeuronReadout, OutputSelector, Reduction
from lightning_semvec.validation_analysis import (
    LabelFn,
    LayerAnalysis,
    LayerResult,
    analysis_due,
    find_num_classes,
    images_of_batch,
    is_int_at_least,
    labels_of_batch,
    tensorboard_logger_of,
    write_projector_and_figures,
)

if TYPE_CHECKING:
    from lightning_semvec.knowledge import StaticKnowledge

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
ProjectorImages = Literal["off", "top1", "grid"]
PROJECTOR_IMAGES: tuple[str, ...] = ("off", "top1", "grid")
_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}


class SemanticVectorCallback(Callback):
    """Learn a small semantic vector for every neuron of the chosen layers, as the model trains.

    Forward hooks read the named layers' outputs on the training steps that update (detached,
    so the model's own training is untouched: the same seed gives the same weights with or
    without this callback). Every ``every_n_steps`` optimizer steps, the vectors ``E`` (``(N, d)`` per
    layer, float32) take one step of their own optimizer on the alignment loss between the
    batch's activation similarity and the vectors' cosine similarity (METHOD.md section 4),
    whose gradient is computed in closed form for all layers at once
    (:func:`~lightning_semvec.functional.alignment_gradients`). Under DDP the activations of
    all processes are gathered first, so every process holds the same vectors, equal to a
    one-process run on the global batch.

    Args:
        layers: module names (``"classifier.2"``), glob patterns (``"features.*"``,
            ``"layer?.*.conv2"``; ``*`` stays inside one dotted segment, ``**`` spans several)
            or module objects, relative to the ``LightningModule``.
        dim: size ``d`` of each semantic vector (2 to 64 is typical).
        every_n_steps: update the vectors every this many optimizer steps (gated on
            ``trainer.global_step``, so gradient accumulation does not repeat updates).
        similarity: activation similarity, ``"pearson"`` (default: centred) or ``"cosine"``.
        reduction: for outputs with more than two axes, ``"mean"`` over positions (default)
            or ``"positions"`` (every position is a sample).
        neuron_dim: the axis holding the neurons (``1`` for conv outputs, ``-1`` for
            ``(B, T, N)`` sequence outputs).
        select_output: picks the tensor out of a tuple/dict output: an index, a key or a
            callable.
        layer_options: per-layer overrides of ``reduction``, ``neuron_dim`` and
            ``select_output``, keyed by resolved layer name or glob pattern.
        optimizer: ``"adam"`` (default), ``"adamw"``, ``"sgd"``, or a callable that takes the
            parameters and returns a ``torch.optim.Optimizer``.
        lr: learning rate for a named optimizer.
        form: alignment loss form, ``"auto"`` (by size; never an ``N x N`` matrix for wide
            layers), ``"dense"`` or ``"factorized"``.
        seed: seeds the vectors' initialisation (a private generator: the global RNG, and so
            the model's training, is never touched).
        class_names: names of the classes, stored with the knowledge and shown in the
            projector; taken from ``trainer.datamodule.class_names`` when not given.
        max_neurons_per_step: for very wide layers, each update uses a fresh random subset of
            this many neurons (the same on every process, taken in the hook, so the layer's
            full output is not kept): the loss over the subset's pairs is an unbiased estimate
            of the loss over all pairs, and time and memory fall by ``N / K``. Default 4096, so
            layers of up to 4096 neurons always use every neuron; ``None`` uses every neuron of
            every layer. Neurons left out of a step get no gradient (Adam's momentum still
            moves them a little, as for any dense optimizer).
        log_every_n_epochs: analyse the validation data at the end of every this many
            epochs' validation (and export at the end of ``fit``); ``None`` turns all
            validation-time work off. See "Validation" below.
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
            activation similarity heatmaps; ``semvec/<layer>/pca``: PCA map of the vectors).
        figure_max_neurons: the heatmaps show at most this many neurons (evenly spaced).
        fidelity_max_neurons: :class:`~lightning_semvec.metrics.SemanticFidelity` tracks a
            fixed random subset of this many neurons of wider layers.
        fidelity_k: neighbours per neuron for the neighbour agreement.
        num_classes: number of classes of the labels; taken from ``class_names``,
            ``trainer.datamodule.num_classes`` or ``pl_module.num_classes`` when not given.
            Without it the projector leaves the preferred class and selectivity empty.
        label_fn: takes a validation batch and returns its ``(B,)`` integer labels (or
            ``None``); by default ``batch[1]`` of a ``(x, y, ...)`` tuple or list with
            integer ``y``.

    Validation:
        When a validation epoch is due (every ``log_every_n_epochs``; never during the sanity
        check), the hooks also read the layers in eval mode, and the callback streams, per
        layer, :class:`~lightning_semvec.metrics.NeuronActivationStatistics` (mean
        activation, class means, selectivity, preferred class, dead neurons),
        :class:`~lightning_semvec.metrics.SemanticFidelity` and, for images,
        :class:`~lightning_semvec.projector.TopActivatingInputs`. At the end of the epoch
        every process computes them (they gather across processes: collectives), the
        callback logs ``semvec/<layer>/fidelity`` (Spearman) and
        ``semvec/<layer>/neighbour_agreement``, and global rank 0 writes the projector files
        (:func:`~lightning_semvec.projector.write_embedding`, merged with what earlier runs
        wrote) and the figures through the ``TensorBoardLogger``. At the end of ``fit`` the
        final vectors are exported too, unless that step was just exported. With another
        logger or none, only the scalars are logged (and a one-time message says so).

    Example:
        >>> import lightning.pytorch as pl
        >>> from torch.utils.data import DataLoader
        >>> from lightning.pytorch.demos.boring_classes import BoringModel, RandomDataset
        >>> class Model(BoringModel):  # any LightningModule; this one has a Linear(32, 2) "layer"
        ...     def train_dataloader(self):
        ...         return DataLoader(RandomDataset(32, 64), batch_size=8)
        >>> semvec = SemanticVectorCallback(layers="layer", dim=4)
        >>> trainer = pl.Trainer(max_steps=3, callbacks=[semvec], logger=False,
        ...     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        >>> trainer.fit(Model())
        >>> semvec.semantic_vectors["layer"].shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        layers: LayerSpec | Sequence[LayerSpec],
        dim: int = 16,
        every_n_steps: int = 1,
        similarity: SimilarityKind = "pearson",
        reduction: Reduction = "mean",
        neuron_dim: int = 1,
        select_output: OutputSelector = None,
        layer_options: Mapping[str, Mapping[str, Any]] | None = None,
        optimizer: str | OptimizerFactory = "adam",
        lr: float = 1e-2,
        form: AlignmentForm = "auto",
        seed: int = 0,
        class_names: Sequence[str] | None = None,
        max_neurons_per_step: int | None = DENSE_MAX_NEURONS,
        log_every_n_epochs: int | None = 1,
        projector: bool = True,
        projector_images: ProjectorImages = "top1",
        projector_top_k: int = 9,
        thumbnail_size: int = 32,
        figures: bool = True,
        figure_max_neurons: int = 128,
        fidelity_max_neurons: int = 2048,
        fidelity_k: int = 5,
        num_classes: int | None = None,
        label_fn: LabelFn | None = None,
    ) -> None:
        super().__init__()
        if isinstance(layers, (str, nn.Module)):
            layers = [layers]
        layers = list(layers)
        if not layers:
            raise ValueError(
                "SemanticVectorCallback needs at least one layer: pass module names, glob "
                "patterns or modules, e.g. layers=['features.*', 'classifier.2']."
            )
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer (2 to 64 is typical), got {dim!r}.")
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"every_n_steps must be a positive integer, got {every_n_steps!r}.")
        check_similarity_kind(similarity)
        if form not in ALIGNMENT_FORMS:
            raise ValueError(f"Unknown form {form!r}: use one of {ALIGNMENT_FORMS}.")
        if isinstance(optimizer, str) and optimizer not in _OPTIMIZERS:
            raise ValueError(
                f"Unknown optimizer {optimizer!r}: use one of {sorted(_OPTIMIZERS)} or pass a "
                "callable that takes the parameters and returns a torch.optim.Optimizer."
            )
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr!r}.")
        if max_neurons_per_step is not None and (
            not isinstance(max_neurons_per_step, int) or max_neurons_per_step < 2
        ):
            raise ValueError(
                f"max_neurons_per_step must be None or an integer of at least 2, got "
                f"{max_neurons_per_step!r}."
            )
        if log_every_n_epochs is not None and not is_int_at_least(log_every_n_epochs, 1):
            raise ValueError(
                "log_every_n_epochs must be a positive integer, or None to turn validation-time "
                f"analysis off, got {log_every_n_epochs!r}."
            )
        if projector_images not in PROJECTOR_IMAGES:
            raise ValueError(
                f"Unknown projector_images {projector_images!r}: use 'top1' (the input that "
                "activates each neuron most), 'grid' (its projector_top_k best inputs) or 'off'."
            )
        for arg, value, minimum in (
            ("projector_top_k", projector_top_k, 1),
            ("thumbnail_size", thumbnail_size, 1),
            ("figure_max_neurons", figure_max_neurons, 2),
            ("fidelity_max_neurons", fidelity_max_neurons, 3),
            ("fidelity_k", fidelity_k, 1),
        ):
            if not is_int_at_least(value, minimum):
                raise ValueError(f"{arg} must be an integer >= {minimum}, got {value!r}.")
        if num_classes is not None and not is_int_at_least(num_classes, 2):
            raise ValueError(f"num_classes must be an integer >= 2 or None, got {num_classes!r}.")
        if label_fn is not None and not callable(label_fn):
            raise TypeError(
                "label_fn must be a callable taking a batch and returning (B,) integer labels, "
                f"got {type(label_fn).__name__}."
            )
        self.layer_specs = layers
        self.dim = dim
        self.every_n_steps = every_n_steps
        self.similarity: SimilarityKind = similarity
        self.default_readout = NeuronReadout(reduction, neuron_dim, select_output)
        self.layer_options = {key: dict(value) for key, value in (layer_options or {}).items()}
        self.optimizer = optimizer
        self.lr = lr
        self.form: AlignmentForm = form
        self.seed = seed
        self._class_names = list(class_names) if class_names is not None else None
        self.max_neurons_per_step = max_neurons_per_step
        self.log_every_n_epochs = log_every_n_epochs
        self.projector = bool(projector)
        self.projector_images: ProjectorImages = projector_images
        self.projector_top_k = projector_top_k
        self.thumbnail_size = thumbnail_size
        self.figures = bool(figures)
        self.figure_max_neurons = figure_max_neurons
        self.fidelity_max_neurons = fidelity_max_neurons
        self.fidelity_k = fidelity_k
        self.num_classes = num_classes
        self.label_fn = label_fn

        self.readouts: dict[str, NeuronReadout] = {}
        self.source_model: str | None = None
        self.training_steps = 0
        self._modules: dict[str, nn.Module] = {}
        self._handles: list[RemovableHandle] = []
        self._captured: dict[str, list[Tensor]] = {}
        self._captured_widths: dict[str, int] = {}  # full widths, before any neuron subset
        self._subsets: dict[str, Tensor] = {}  # this step's neuron subset of each wide layer
        self._capture_step = 0
        self._capturing = False
        self._vectors: dict[str, nn.Parameter] = {}
        self._optimizer: torch.optim.Optimizer | None = None
        self._skipped: dict[str, Tensor] = {}
        self._last_loss: dict[str, Tensor] = {}
        self._last_seen_step: int | None = None
        self._pending_state: dict[str, Any] | None = None
        self._warned: set[str] = set()
        self._global_rank = 0
        # Validation-time analysis (see "Validation" in the class docstring).
        self._resolved_num_classes: int | None = None
        self._val_capturing = False
        self._val_captured: dict[str, list[Tensor]] = {}
        self._analysis: dict[str, LayerAnalysis] | None = None
        self._results: dict[str, LayerResult] = {}
        self._exported_step: int | None = None

    # ----------------------------------------------------------------- public views
    @property
    def state_key(self) -> str:
        specs = [s if isinstance(s, str) else type(s).__name__ for s in self.layer_specs]
        return self._generate_state_key(layers=specs, dim=self.dim)

    @property
    def layer_names(self) -> list[str]:
        """The resolved layer names (known from the start of ``fit``)."""
        return list(self._modules)

    @property
    def class_names(self) -> list[str] | None:
        """Class names stored with the knowledge, if known."""
        return self._class_names

    @property
    def semantic_vectors(self) -> dict[str, Tensor]:
        """``{layer: (N, d) float32 tensor}``: detached CPU copies of the learned vectors.

        Raises:
            RuntimeError: before the callback has seen a training step.
        """
        if not self._vectors:
            if self._pending_state is not None:
                return {k: v.clone() for k, v in self._pending_state["vectors"].items()}
            raise RuntimeError(
                "No semantic vectors yet: they are created on the first training step. Run "
                "trainer.fit(...) with this callback first (or restore it from a checkpoint)."
            )
        return {name: p.detach().cpu().clone() for name, p in self._vectors.items()}

    def semantic_similarity(self, layer: str) -> Tensor:
        """The ``(N, N)`` cosine similarity of one layer's vectors (``S_sem``)."""
        vectors = self.semantic_vectors
        if layer not in vectors:
            raise KeyError(f"No vectors for layer {layer!r}; known layers: {list(vectors)}.")
        return _semantic_similarity(vectors[layer])

    def skipped_steps(self) -> dict[str, int]:
        """How many updates were skipped per layer (NaN/Inf activations, < 2 alive neurons)."""
        return {name: int(count.item()) for name, count in self._skipped.items()}

    @property
    def fidelity(self) -> dict[str, dict[str, float]]:
        """``{layer: {"spearman": rho, "neighbour_agreement": a}}`` of the last analysed validation.

        Empty before the first analysed validation epoch; layers with fewer than 3 neurons have
        no fidelity. Values are NaN when too few neurons were alive.
        """
        return {
            name: dict(result.fidelity)
            for name, result in self._results.items()
            if result.fidelity is not None
        }

    @property
    def neuron_statistics(self) -> dict[str, dict[str, Tensor]]:
        """``{layer: statistics}`` of the last analysed validation (CPU tensors).

        The statistics are those of :class:`~lightning_semvec.metrics.NeuronActivationStatistics`
        (``"mean_activation"`` ``(N,)``, ``"dead"`` ``(N,)``, and, when labels and the number
        of classes are known, ``"class_means"`` ``(C, N)``, ``"class_counts"`` ``(C,)``,
        ``"selectivity"`` ``(N,)``, ``"preferred_class"`` ``(N,)``).
        """
        return {name: dict(result.statistics) for name, result in self._results.items()}

    def to_knowledge(self) -> StaticKnowledge:
        """The vectors and their metadata as a :class:`~lightning_semvec.StaticKnowledge`."""
        from lightning_semvec.knowledge import StaticKnowledge

        return StaticKnowledge.from_callback(self)

    def export_knowledge(self, path: str | Path) -> Path:
        """Save the learned vectors and metadata to a safetensors knowledge file.

        Only global rank 0 writes; every rank returns the path.

        Example:
            ``semvec.export_knowledge("teacher.semvec.safetensors")``
        """
        knowledge = self.to_knowledge()
        path = Path(path)
        if self._global_rank == 0:
            knowledge.save(path)
        return path

    # ----------------------------------------------------------------- Lightning hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._remove_hooks()
        self._global_rank = trainer.global_rank
        self._modules = resolve_layers(pl_module, self.layer_specs)
        self.readouts = {name: self._readout_for(name) for name in self._modules}
        self.source_model = f"{type(pl_module).__module__}.{type(pl_module).__qualname__}"
        if self._class_names is None:
            names = getattr(trainer.datamodule, "class_names", None)
            self._class_names = list(names) if names is not None else None
        self._resolved_num_classes = find_num_classes(
            trainer, pl_module, self.num_classes, self._class_names
        )
        for name, module in self._modules.items():
            self._handles.append(module.register_forward_hook(self._make_hook(name)))

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        listing = ", ".join(f"{name} ({type(m).__name__})" for name, m in self._modules.items())
        rank_zero_info(f"SemanticVectorCallback: learning {self.dim}-d vectors for {listing}.")
        if self._pending_state is not None:
            self._restore(self._pending_state, pl_module.device)
        if self._last_seen_step is None:
            self._last_seen_step = trainer.global_step

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._captured = {name: [] for name in self._modules}
        self._captured_widths, self._subsets = {}, {}
        self._capture_step = step = trainer.global_step
        # Read the layers only when this batch's optimizer step(s) can reach an update step.
        ahead = max(1, len(trainer.optimizers))
        self._capturing = any((step + k) % self.every_n_steps == 0 for k in range(1, ahead + 1))

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._capturing = False
        captured, self._captured = self._captured, {}
        widths, subsets = self._captured_widths, self._subsets
        self._captured_widths, self._subsets = {}, {}
        step = trainer.global_step
        if step == self._last_seen_step:
            return  # no optimizer step happened (gradient accumulation): nothing to do yet
        self._last_seen_step = step
        if step % self.every_n_steps != 0:
            return
        activations = {}
        for name, chunks in captured.items():
            if not chunks:
                self._warn_once(
                    f"missing:{name}",
                    f"SemanticVectorCallback: layer {name!r} was not called in this training "
                    "step, so its vectors were not updated.",
                )
                continue
            activations[name] = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
        self._update(trainer, pl_module, activations, widths, subsets)

    @override
    def on_validation_epoch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        self._analysis = None
        if not analysis_due(trainer, self.log_every_n_epochs):
            return
        names = [name for name in self._modules if name in self._vectors]
        if not names:
            return  # no vectors yet (validation before the first update)
        k = {"off": 0, "top1": 1, "grid": self.projector_top_k}[self.projector_images]
        k = k if self.projector else 0  # the images are only shown in the projector
        self._analysis = {
            name: LayerAnalysis.create(
                name,
                self._vectors[name].shape[0],
                k,
                pl_module.device,
                num_classes=self._resolved_num_classes,
                similarity=self.similarity,
                fidelity_max_neurons=self.fidelity_max_neurons,
                fidelity_k=self.fidelity_k,
                seed=self.seed,
                thumbnail_size=self.thumbnail_size,
            )
            for name in names
        }
        self._val_captured = {name: [] for name in names}
        self._val_capturing = True

    @override
    def on_validation_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._analysis is not None:
            self._val_captured = {name: [] for name in self._analysis}

    @override
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._analysis is None:
            return
        captured, self._val_captured = self._val_captured, {n: [] for n in self._analysis}
        labels = self._labels_of(batch)
        wants_images = self.projector and self.projector_images != "off"
        images = images_of_batch(batch, self._info_once) if wants_images else None
        thumbnails: dict[int, Tensor] = {}  # by size: layers of one width share them
        for name, analysis in self._analysis.items():
            for position, chunk in enumerate(captured.get(name, [])):
                analysis.update(chunk, labels, images if position == 0 else None, thumbnails)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        analysis, self._analysis = self._analysis, None
        self._val_capturing = False
        self._val_captured = {}
        if analysis is None:
            return
        step = trainer.global_step
        # Every process computes every metric, in the same order: each one gathers.
        results = {
            name: layer.compute(self._vectors[name], step, figures=self.figures,
                                figure_max_neurons=self.figure_max_neurons)
            for name, layer in analysis.items()
        }
        for result in results.values():
            if result.fidelity is not None:
                for key, metric in (("spearman", "fidelity"), ("neighbour_agreement",) * 2):
                    pl_module.log(
                        f"semvec/{result.name}/{metric}",
                        result.fidelity[key],
                        on_step=False,
                        on_epoch=True,
                        batch_size=1,
                        sync_dist=True,  # equal on every process already; keeps Lightning quiet
                    )
        self._results.update(results)
        if trainer.is_global_zero:
            self._export(trainer, step)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.log_every_n_epochs is None or not self._vectors:
            return
        if trainer.is_global_zero and self._exported_step != trainer.global_step:
            self._export(trainer, trainer.global_step)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._remove_hooks()
            self._captured = {}
            self._capturing = False
            self._analysis = None
            self._val_captured = {}
            self._val_capturing = False

    @override
    def state_dict(self) -> dict[str, Any]:
        if not self._vectors:
            return dict(self._pending_state) if self._pending_state is not None else {}
        return {
            "vectors": {name: p.detach().cpu().clone() for name, p in self._vectors.items()},
            "optimizer": self._optimizer.state_dict() if self._optimizer is not None else None,
            "skipped": {name: c.detach().cpu().clone() for name, c in self._skipped.items()},
            "last_loss": {name: v.detach().cpu().clone() for name, v in self._last_loss.items()},
            "last_seen_step": self._last_seen_step,
            "training_steps": self.training_steps,
            "dim": self.dim,
            # What a knowledge file needs, so `semvec export` can make one from a checkpoint.
            "knowledge": {
                "similarity": self.similarity,
                "readouts": {
                    name: {"reduction": r.reduction, "neuron_dim": r.neuron_dim}
                    for name, r in self.readouts.items()
                },
                "source_model": self.source_model,
                "class_names": self.class_names,
            },
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if state_dict.get("dim") != self.dim:
            raise ValueError(
                f"The checkpoint's semantic vectors have dim={state_dict.get('dim')}, this "
                f"callback has dim={self.dim}: use the same dim to resume."
            )
        # Runs before the model is on its device: keep it until on_fit_start places it.
        self._pending_state = state_dict
        self._last_seen_step = state_dict.get("last_seen_step")
        self.training_steps = state_dict.get("training_steps", 0)

    # ----------------------------------------------------------------- internals
    def _readout_for(self, name: str) -> NeuronReadout:
        options: dict[str, Any] = {}
        for key, value in self.layer_options.items():
            if key == name or matches_pattern(key, name):
                options.update(value)
        unknown = set(options) - {"reduction", "neuron_dim", "select_output"}
        if unknown:
            raise ValueError(
                f"Unknown layer_options {sorted(unknown)} for {name!r}: use reduction, "
                "neuron_dim or select_output."
            )
        base = self.default_readout
        return NeuronReadout(
            options.get("reduction", base.reduction),
            options.get("neuron_dim", base.neuron_dim),
            options.get("select_output", base.select_output),
        )

    def _make_hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        readout = self.readouts[name]

        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if self._capturing and module.training:
                self._capture(name, readout.read(output, name))
            elif self._val_capturing and not module.training and name in self._val_captured:
                chunks, acts = self._val_captured[name], readout.read(output, name)
                first_width = chunks[0].shape[1] if chunks else acts.shape[1]
                _check_repeated_call(chunks, first_width, acts.shape[1], name, self._warn_once)
                chunks.append(acts)

        return hook

    def _capture(self, name: str, activations: Tensor) -> None:
        """Keep one training call's ``(M, N)`` activations; only this step's subset if wide.

        Taking the subset here lets the layer's full output go as soon as autograd is done
        with it, so a 65,536-neuron layer costs memory for its subset alone.
        """
        width = activations.shape[1]
        chunks = self._captured[name]
        _check_repeated_call(
            chunks, self._captured_widths.setdefault(name, width), width, name, self._warn_once
        )
        if self.max_neurons_per_step is not None and width > self.max_neurons_per_step:
            subset = self._subsets.get(name)
            if subset is None:
                subset = self._neuron_subset(width, self._capture_step, activations.device)
                self._subsets[name] = subset
            activations = activations.index_select(1, subset)
        chunks.append(activations)

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)

    def _info_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_info(message)

    # ----------------------------------------------------------------- validation internals
    def _labels_of(self, batch: Any) -> Tensor | None:
        """The batch's ``(B,)`` integer labels or ``None`` (see :func:`labels_of_batch`)."""
        return labels_of_batch(batch, self.label_fn, self._resolved_num_classes, self._info_once)

    def _export(self, trainer: pl.Trainer, step: int) -> None:
        """Write the projector files and figures of every layer (global rank 0 only)."""
        if not (self.projector or self.figures):
            return
        logger = tensorboard_logger_of(trainer, self._info_once)
        if logger is None:
            return
        write_projector_and_figures(
            logger,
            self.semantic_vectors,
            self._results,
            step,
            self._class_names,
            projector=self.projector,
            figures=self.figures,
            figure_max_neurons=self.figure_max_neurons,
        )
        self._exported_step = step

    def _init_vectors(self, name: str, num_neurons: int, device: torch.device) -> nn.Parameter:
        generator = torch.Generator().manual_seed(self.seed + zlib.crc32(name.encode()))
        values = torch.randn(num_neurons, self.dim, generator=generator)
        return nn.Parameter(values.to(device))

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = list(self._vectors.values())
        if callable(self.optimizer):
            return self.optimizer(params)
        # One kernel for all layers on CUDA. Not on the CPU: there the fused kernel made spawned
        # DDP processes abort at exit ("terminate called without an active exception", about
        # one run in six of tests/test_callback_ddp.py), for about 0.1 ms per update saved.
        fused = torch.__version__ >= (2, 4) and all(p.device.type == "cuda" for p in params)
        return _OPTIMIZERS[self.optimizer](params, lr=self.lr, **({"fused": True} if fused else {}))

    def _restore(self, state: dict[str, Any], device: torch.device) -> None:
        self._vectors = {
            name: nn.Parameter(v.to(device=device, dtype=torch.float32))
            for name, v in state["vectors"].items()
        }
        self._skipped = {n: c.to(device) for n, c in state.get("skipped", {}).items()}
        self._last_loss = {n: v.to(device) for n, v in state.get("last_loss", {}).items()}
        self._optimizer = self._make_optimizer()
        if state.get("optimizer") is not None:
            self._optimizer.load_state_dict(state["optimizer"])
        self._pending_state = None

    def _materialize(self, widths: dict[str, int], device: torch.device) -> None:
        """Create the vectors of layers seen for the first time (``widths``: name to ``N``)."""
        created = False
        for name in self._modules:
            if name in self._vectors or name not in widths:
                continue
            self._vectors[name] = self._init_vectors(name, widths[name], device)
            self._skipped[name] = torch.zeros((), dtype=torch.int64, device=device)
            self._last_loss[name] = torch.zeros((), device=device)
            created = True
        if created:
            # Keep the optimizer's state of layers it already knew (a layer seen late joins).
            old = self._optimizer
            self._optimizer = self._make_optimizer()
            if old is not None:
                for p in old.state:
                    self._optimizer.state[p] = old.state[p]
        for name, p in self._vectors.items():
            if name in widths and p.shape[0] != widths[name]:
                raise ValueError(
                    f"Layer {name!r} now has {widths[name]} neurons but its "
                    f"semantic vectors have {p.shape[0]} (from a checkpoint or an earlier step)."
                )

    @staticmethod
    def _step_skipping_bad_layers(
        optimizer: torch.optim.Optimizer, params: list[nn.Parameter], gradients: list[Tensor],
        ok: Tensor, sync_free: bool,
    ) -> list[bool] | None:
        """One optimizer step; a layer whose ``ok`` flag is False keeps its vectors and state.

        On the CPU the ``(L,)`` flags are read on the host (free there): a bad layer simply gets
        no gradient, which every optimizer skips. On an accelerator (``sync_free``) that read
        would stall the pipeline, so every layer is snapshotted and a bad one restored with
        ``torch.where``. Returns the host flags, or ``None`` on the sync-free path.
        """
        if not sync_free:
            flags = [bool(f) for f in ok.tolist()]
            for param, grad, good in zip(params, gradients, flags):
                param.grad = grad if good else None
            optimizer.step()
            for param in params:
                param.grad = None
            return flags
        snapshot = [(p.detach().clone(), _state_tensors(optimizer, p)) for p in params]
        for param, grad in zip(params, gradients):
            param.grad = grad
        optimizer.step()
        with torch.no_grad():
            for i, (param, (old_param, old_state)) in enumerate(zip(params, snapshot)):
                param.grad = None
                good = ok[i]
                param.copy_(torch.where(good, param, old_param))
                for key, value in optimizer.state[param].items():
                    # A step counter kept on the host (non-fused optimizers on a GPU run) is
                    # left as is: moving the flag there would cost a sync for a detail.
                    if isinstance(value, Tensor) and value.device == good.device:
                        before = old_state.get(key, torch.zeros_like(value))
                        value.copy_(torch.where(good, value, before))
        return None

    def _neuron_subset(self, num_neurons: int, step: int, device: torch.device) -> Tensor | None:
        """Indices of this step's neurons, or ``None`` for all.

        Drawn from a generator seeded by (seed, step): the same on every process and after a
        resume, with no generator state to save or to send to spawned processes.
        """
        if self.max_neurons_per_step is None or num_neurons <= self.max_neurons_per_step:
            return None
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        chosen = torch.randperm(num_neurons, generator=generator)
        return chosen[: self.max_neurons_per_step].to(device, non_blocking=True)

    def _gather(
        self, pl_module: pl.LightningModule, world_size: int, activations: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """All processes' activations, padded to one length with 0-weight rows."""
        if world_size == 1:
            return activations, None
        num = activations.shape[0]
        sizes = pl_module.all_gather(torch.tensor(num, device=activations.device))
        longest = int(sizes.max())  # the only host sync, and only under several processes
        weights = torch.ones(num, device=activations.device)
        if longest > num:
            pad = longest - num
            activations = torch.cat([activations, activations.new_zeros(pad, activations.shape[1])])
            weights = torch.cat([weights, weights.new_zeros(pad)])
        gathered = pl_module.all_gather(activations).reshape(-1, activations.shape[1])
        return gathered, pl_module.all_gather(weights).reshape(-1)

    def _update(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        activations: dict[str, Tensor],
        widths: dict[str, int],
        subsets: dict[str, Tensor],
    ) -> None:
        """One step of every layer's vectors from this training step's activations.

        Layers whose activations have the same number of rows are gathered (under DDP) and
        standardised together, and the narrow ones share one block-diagonal gradient
        computation (:func:`~lightning_semvec.functional.alignment_gradients`): on a small CNN
        that is one set of operations for all layers, not one per layer.
        """
        device = pl_module.device
        logging = _logs_this_step(trainer)
        groups: dict[tuple[int, bool], list[str]] = {}
        for name, acts in activations.items():
            # Same key on every process (widths agree; rows differ alike), so the gathers match.
            groups.setdefault((acts.shape[0], acts.shape[1] <= DENSE_MAX_NEURONS), []).append(name)
        gathered: list[tuple[list[str], Tensor, Tensor | None]] = []
        for members in groups.values():
            parts = [activations[n].to(device) for n in members]
            acts, weights = self._gather(
                pl_module, trainer.world_size, torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
            )
            if acts.shape[0] < 2:
                for name in members:
                    self._warn_once(
                        f"small:{name}",
                        f"SemanticVectorCallback: a training batch gave layer {name!r} only "
                        f"{acts.shape[0]} sample; similarity needs at least 2, so the step was "
                        "skipped (use a batch size of 2 or more).",
                    )
                continue
            gathered.append((members, acts, weights))
        self._materialize({n: widths[n] for members, _, _ in gathered for n in members}, device)
        names: list[str] = []
        gradients: list[Tensor] = []
        losses: list[Tensor] = []
        ok_flags: list[Tensor] = []
        for members, acts, weights in gathered:
            vectors = [
                self._vectors[n].detach() if n not in subsets
                else self._vectors[n].detach().index_select(0, subsets[n]) for n in members
            ]
            for form, columns, layers in _split_by_form(self.form, acts, vectors, self.dim):
                out = alignment_gradients(
                    columns, [vectors[i] for i in layers], self.similarity, form, weights, logging
                )
                names.extend(members[i] for i in layers)
                gradients.extend(out.gradients)
                ok_flags.append(out.ok)
                if out.losses is not None:
                    losses.append(out.losses)
        if not names:
            return
        assert self._optimizer is not None
        params = [self._vectors[n] for n in names]
        gradients = [
            g if n not in subsets else torch.zeros_like(p).index_copy_(0, subsets[n], g)
            for n, p, g in zip(names, params, gradients)
        ]
        ok = torch.cat(ok_flags) if len(ok_flags) > 1 else ok_flags[0]
        flags = self._step_skipping_bad_layers(
            self._optimizer, params, gradients, ok, sync_free=device.type != "cpu"
        )
        self.training_steps = trainer.global_step
        if flags is not None:  # host flags: count skips only when there are any
            for name, good in zip(names, flags):
                if not good:
                    self._skipped[name] += 1
        else:
            for name, good in zip(names, ok.unbind()):
                self._skipped[name] += (~good).to(torch.int64)
        if logging:
            values = torch.cat(losses) if len(losses) > 1 else losses[0]
            for name, loss, good in zip(names, values.unbind(), ok.unbind()):
                self._last_loss[name] = torch.where(good, loss, self._last_loss[name])
                pl_module.log(f"semvec/{name}/align_loss", self._last_loss[name], on_step=True,
                              on_epoch=False, batch_size=1)
                pl_module.log(f"semvec/{name}/skipped_steps", self._skipped[name].float(),
                              on_step=True, on_epoch=False, batch_size=1)


def _split_by_form(
    form: str, activations: Tensor, vectors: list[Tensor], dim: int
) -> list[tuple[str, Tensor, list[int]]]:
    """``(form, activation columns, layer indices)`` for each call (see ``plan_alignment_runs``)."""
    sizes = [v.shape[0] for v in vectors]
    runs = plan_alignment_runs(activations.shape[0], sizes, dim, form)
    if len(runs) == 1:
        return [(runs[0][0], activations, runs[0][1])]
    starts = [0]
    for size in sizes:
        starts.append(starts[-1] + size)
    pieces = [[activations[:, starts[i] : starts[i + 1]] for i in layers] for _, layers in runs]
    return [
        (kind, columns[0] if len(columns) == 1 else torch.cat(columns, dim=1), layers)
        for (kind, layers), columns in zip(runs, pieces)
    ]


def _check_repeated_call(
    chunks: list[Tensor], first_width: int, width: int, name: str,
    warn_once: Callable[[str, str], None],
) -> None:
    """Check one more call of a hooked module; several calls per forward are stacked as samples.

    Raised inside the forward (before any backward), so a bad layer choice changes nothing.
    """
    if chunks:
        if first_width != width:
            raise ValueError(
                f"Layer {name!r} is called more than once per forward with different widths "
                f"({first_width} and {width} neurons), so its neurons are "
                "not one set. This happens with a module reused in several places (a shared "
                "nn.ReLU, say): hook a module used once, or give each use its own module."
            )
        warn_once(
            f"calls:{name}",
            f"SemanticVectorCallback: layer {name!r} is called more than once per forward; its "
            "calls are stacked as extra samples. If the calls are different places in the "
            "network (a shared activation module), hook modules used once instead.",
        )


def _logs_this_step(trainer: pl.Trainer) -> bool:
    """Whether the Trainer sends this step's metrics to its loggers (``log_every_n_steps``).

    ``self.log`` costs about a millisecond of Python per call, so values are only handed over on
    the steps the loggers actually write.
    """
    every = trainer.log_every_n_steps
    return every > 0 and (trainer.global_step % every == 0 or trainer.should_stop)


def _state_tensors(optimizer: torch.optim.Optimizer, param: nn.Parameter) -> dict[str, Tensor]:
    return {
        key: value.detach().clone()
        for key, value in optimizer.state.get(param, {}).items()
        if isinstance(value, Tensor)
    }
