"""``SemanticVectorCallback``: learn a semantic vector per neuron while any LightningModule trains."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lightning_semvec._utils.checks import check_int
from lightning_semvec._utils.deprecation import DEFER_REMOVED, accept_removed_keywords
from lightning_semvec._utils.warning_cache import WarningCache
from lightning_semvec.analysis._export import exported_statistics, fidelity_extra
from lightning_semvec.analysis._validation import ValidationAnalysis
from lightning_semvec.analysis.options import AnalysisOptions
from lightning_semvec.callback._capture import LayerCapture
from lightning_semvec.callback._state import (
    CHECKPOINT_STATE_VERSION,
    knowledge_of_parts,
    matching_state,
    vector_state_of,
)
from lightning_semvec.callback._unlearned import unlearned_layers, warn_of_unlearned_layers
from lightning_semvec.callback._update import update_vectors
from lightning_semvec.callback.checkpoint import check_output_path
from lightning_semvec.capture.hooks import ForwardHookManager
from lightning_semvec.capture.knowledge import model_class_path
from lightning_semvec.capture.layers import LayerSpec, layer_spec_list, resolve_layers
from lightning_semvec.capture.readout import (
    NeuronReadout,
    OutputSelector,
    Reduction,
    layer_readout,
    layer_readouts,
)
from lightning_semvec.errors import SemvecTypeError, SemvecValueError
from lightning_semvec.functional.alignment import DENSE_MAX_NEURONS, AlignmentForm
from lightning_semvec.functional.similarity import SimilarityKind
from lightning_semvec.functional.similarity import (
    semantic_similarity as _semantic_similarity,
)
from lightning_semvec.knowledge import StaticKnowledge
from lightning_semvec.vectors.semantic_vectors import OptimizerCallable, SemanticVectors

__all__ = ["SemanticVectorCallback"]


class SemanticVectorCallback(Callback):
    """Learn a small semantic vector for every neuron of the chosen layers, as the model trains.

    Forward hooks read the named layers' outputs on the training steps that update (detached,
    so the model's own training is untouched: the same seed gives the same weights with or
    without this callback). Every ``every_n_steps`` optimizer steps, the vectors
    (:attr:`vectors`, a :class:`~lightning_semvec.SemanticVectors` module: ``(N, d)`` float32
    per layer) take one step of their own optimizer on the alignment loss between the batch's
    activation similarity and the vectors' cosine similarity (``docs/method.md``, "Learning
    them"). Under DDP the activations of all processes are gathered first, so every process
    holds the same vectors, equal to a one-process run on the global batch.

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
            parameters and returns a ``torch.optim.Optimizer`` (like LightningCLI's
            ``OptimizerCallable``).
        lr: learning rate of a named optimizer.
        form: alignment loss form, ``"auto"`` (by size; never an ``N x N`` matrix for wide
            layers), ``"dense"`` or ``"factorized"``.
        seed: seeds the vectors' initialisation (a private generator: the global RNG, and so
            the model's training, is never touched).
        max_neurons_per_step: for very wide layers, each update uses a fresh random subset of
            this many neurons (the same on every process, taken in the hook): the loss over the
            subset's pairs is an unbiased estimate of the loss over all pairs, and time and
            memory fall by ``N / K``. Default 4096; ``None`` uses every neuron of every layer.
        analysis: the validation-time analysis (statistics, fidelity, projector, figures):
            an :class:`~lightning_semvec.AnalysisOptions`, or ``None`` for none at all.
        deprecated: ``defer_update`` (removed in 0.2: the update on a worker thread measured
            slower than the synchronous one on every case) is accepted with a warning and has
            no effect; any other keyword is a ``TypeError``.

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
        optimizer: str | OptimizerCallable = "adam",
        lr: float = 1e-2,
        form: AlignmentForm = "auto",
        seed: int = 0,
        max_neurons_per_step: int | None = DENSE_MAX_NEURONS,
        analysis: AnalysisOptions | None = AnalysisOptions(),  # noqa: B008 (frozen)
        **deprecated: Any,
    ) -> None:
        super().__init__()
        accept_removed_keywords(deprecated, "SemanticVectorCallback", {"defer_update": DEFER_REMOVED})
        layers = layer_spec_list(layers, "net.features.*")
        if not layers:
            raise SemvecValueError(
                "SemanticVectorCallback needs at least one layer: pass module names, glob "
                "patterns or modules as in model.named_modules(), e.g. layers=['net.features.*'] "
                "for an ImageClassifier."
            )
        if analysis is not None and not isinstance(analysis, AnalysisOptions):
            raise SemvecTypeError(
                "analysis must be an AnalysisOptions (e.g. AnalysisOptions(figures=False)) or "
                f"None to turn validation-time analysis off, got {type(analysis).__name__}."
            )
        self.layer_specs = layers
        self.every_n_steps = check_int("every_n_steps", every_n_steps, 1)
        self.default_readout = NeuronReadout(reduction, neuron_dim, select_output)
        self.layer_options = {key: dict(value) for key, value in (layer_options or {}).items()}
        #: The vectors and their optimizer (a :class:`~lightning_semvec.SemanticVectors`).
        self.vectors = SemanticVectors(
            dim, similarity=similarity, form=form, optimizer=optimizer, lr=lr, seed=seed,
            max_neurons_per_step=max_neurons_per_step,
        )
        self.analysis_options = analysis
        self.readouts: dict[str, NeuronReadout] = {}
        self.source_model: str | None = None
        self.training_steps = 0
        self._modules: dict[str, nn.Module] = {}
        self._hooks = ForwardHookManager(who="SemanticVectorCallback")
        self._capture: LayerCapture | None = None
        self._last_seen_step: int | None = None
        self._batch_start_step = 0
        self._steps_per_batch = 1  # the most optimizer steps one batch has taken (manual optimization)
        self._datamodule_class_names: list[str] | None = None
        self._loaded: StaticKnowledge | None = None  # metadata of a restored checkpoint
        self._messages = WarningCache("SemanticVectorCallback")
        self._global_rank = 0
        self._analysis = (
            ValidationAnalysis(analysis, similarity, seed, self._messages) if analysis is not None else None
        )

    # ----------------------------------------------------------------- public views
    @property
    def dim(self) -> int:
        """``d``, the length of each semantic vector."""
        return self.vectors.dim

    @property
    def similarity(self) -> SimilarityKind:
        """The activation similarity the vectors model."""
        return self.vectors.similarity

    @property
    def state_key(self) -> str:
        """Names this callback's state in a checkpoint: its layer specs and ``dim``; a module
        object by its resolved name once ``fit`` set the callback up (before: class and id)."""
        specs = [s if isinstance(s, str) else self._module_name(s) for s in self.layer_specs]
        return self._generate_state_key(layers=specs, dim=self.dim)

    def _module_name(self, module: nn.Module) -> str:
        names = [name for name, candidate in self._modules.items() if candidate is module]
        return names[0] if names else f"{type(module).__name__}@{id(module):x}"

    @property
    def layer_names(self) -> list[str]:
        """The resolved layer names (known from the start of ``fit``)."""
        return list(self._modules)

    @property
    def class_names(self) -> list[str] | None:
        """Class names stored with the knowledge: ``analysis.class_names`` if given, else those
        of the datamodule of the latest ``fit`` (or of a restored checkpoint)."""
        if self.analysis_options is not None and self.analysis_options.class_names is not None:
            return list(self.analysis_options.class_names)
        if self._datamodule_class_names is not None:
            return list(self._datamodule_class_names)
        return self._loaded.class_names if self._loaded is not None else None

    @property
    def semantic_vectors(self) -> dict[str, Tensor]:
        """``{layer: (N, d) float32 tensor}``: detached CPU copies of the learned vectors
        (a ``RuntimeError`` before the callback has seen a training step)."""
        if not self.vectors.layer_names:
            raise RuntimeError(
                "No semantic vectors yet: they are created on the first training step. Run "
                "trainer.fit(...) with this callback first (or restore it from a checkpoint)."
            )
        return self.vectors.vectors()

    def semantic_similarity(self, layer: str) -> Tensor:
        """The ``(N, N)`` cosine similarity of one layer's vectors (``S_sem``)."""
        self.semantic_vectors  # noqa: B018 (the clear error before any training)
        return _semantic_similarity(self.vectors[layer].detach().cpu())

    def skipped_steps(self) -> dict[str, int]:
        """How many updates were skipped per layer (NaN/Inf activations, < 2 alive neurons)."""
        return self.vectors.skipped_steps()

    @property
    def fidelity(self) -> dict[str, dict[str, float]]:
        """``{layer: {"spearman": rho, "neighbour_agreement": a}}`` of the last analysed
        validation (layers of 3 or more neurons; NaN when too few neurons were alive)."""
        results = self._analysis.results if self._analysis is not None else {}
        return {n: dict(r.fidelity) for n, r in results.items() if r.fidelity is not None}

    @property
    def neuron_statistics(self) -> dict[str, dict[str, Tensor]]:
        """``{layer: statistics}`` of the last analysed validation (CPU tensors), those of
        :class:`~lightning_semvec.metrics.NeuronActivationStatistics` (class statistics only
        when labels and the number of classes are known); after a resume, until the next
        analysed epoch, those stored in the checkpoint."""
        stats = {n: layer.statistics for n, layer in (self._loaded.layers if self._loaded else {}).items()}
        if self._analysis is not None:
            stats.update({n: r.statistics for n, r in self._analysis.results.items()})
        return {name: dict(values) for name, values in stats.items() if values}

    def to_knowledge(self) -> StaticKnowledge:
        """The vectors, their metadata and the last validation statistics as knowledge.

        With each layer's ``top_inputs`` and held-out ``"fidelity/<layer>"`` (``extra``).

        Raises:
            RuntimeError: before the callback has seen a training step.
        """
        vectors = self.semantic_vectors
        loaded = self._loaded
        readouts = {
            name: self.readouts.get(name)
            or (NeuronReadout(cast(Reduction, loaded[name].reduction), loaded[name].neuron_dim)
                if loaded is not None and name in loaded else self._readout_for(name))
            for name in vectors
        }
        results = self._analysis.results if self._analysis is not None else {}
        statistics = exported_statistics(
            {n: st for n, st in self.neuron_statistics.items() if n in vectors}, results)
        knowledge = knowledge_of_parts(
            vectors, readouts, statistics,
            self.class_names, similarity=self.similarity, training_steps=self.training_steps,
            source_model=self.source_model or (loaded.source_model if loaded else None),
            messages=self._messages, unlearned=unlearned_layers(self.vectors, loaded),
        )
        knowledge.extra.update(fidelity_extra(results, vectors, loaded.extra if loaded else {}))
        return knowledge

    def export_knowledge(self, path: str | Path, overwrite: bool = False) -> Path:
        """Save the learned vectors, metadata and statistics to a safetensors knowledge file.

        Only global rank 0 writes (atomically: a failed write leaves any file there as it
        was); every rank returns the path.

        Args:
            path: the file to write (``.semvec.safetensors`` is the suggested ending).
            overwrite: replace a file already at ``path``; by default that is an error, raised
                before anything is written.

        Example:
            ``semvec.export_knowledge("teacher.semvec.safetensors")``
        """
        path = check_output_path(path, overwrite)
        knowledge = self.to_knowledge()
        if self._global_rank == 0:
            knowledge.save(path)
        return path

    # ----------------------------------------------------------------- Lightning hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._hooks.remove_all()
        self._global_rank = trainer.global_rank
        # Step accounting belongs to one fit: a checkpoint restores it after setup, and a new
        # Trainer starts its own (a callback reused by a second Trainer must not carry it over).
        self._last_seen_step = None
        self._steps_per_batch = 1
        self._modules = resolve_layers(pl_module, self.layer_specs)
        self.readouts = layer_readouts(self._modules, self.default_readout, self.layer_options)
        self.source_model = model_class_path(pl_module)
        datamodule = trainer.datamodule  # type: ignore[attr-defined]  # set by Lightning's data connector, not declared on Trainer
        names = getattr(datamodule, "class_names", None)
        self._datamodule_class_names = list(names) if names is not None else None
        if self._analysis is not None:
            self._analysis.setup(trainer, pl_module, self.class_names)
        for name, module in self._modules.items():
            self._hooks.add(name, module, self._on_layer_output)

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        listing = ", ".join(f"{name} ({type(m).__name__})" for name, m in self._modules.items())
        rank_zero_info(f"SemanticVectorCallback: learning {self.dim}-d vectors for {listing}.")
        self.vectors.to(pl_module.device)
        if self._last_seen_step is None:
            self._last_seen_step = trainer.global_step

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = self._batch_start_step = trainer.global_step
        self._hooks.new_forward()
        # Read the layers only when this batch's optimizer steps can reach a multiple of
        # every_n_steps: a batch may take one step per optimizer, and under manual optimization
        # as many as the most seen so far.
        ahead = max(1, len(trainer.optimizers), self._steps_per_batch)
        if (step + ahead) // self.every_n_steps > step // self.every_n_steps:
            self._capture = LayerCapture(
                list(self._modules), step=step, neuron_subset=self.vectors.neuron_subset,
                messages=self._messages,
            )
        else:
            self._capture = None

    @override
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        capture, self._capture = self._capture, None
        step, last = trainer.global_step, self._last_seen_step
        if last is None or step == last:
            return  # no optimizer step happened (gradient accumulation): nothing to do yet
        self._last_seen_step = step
        self._steps_per_batch = max(self._steps_per_batch, step - self._batch_start_step)
        # Update when this batch's steps reached a multiple of every_n_steps (several steps
        # per batch under manual optimization may step over the multiple itself).
        if step // self.every_n_steps == last // self.every_n_steps or capture is None:
            return
        # The layers this process did not run are just absent: skipping the update here would
        # leave the other processes waiting in a collective (the gather agrees on what to skip).
        activations = {n: capture.activations(n) for n in self._modules if capture.chunks.get(n)}
        self._update(trainer, pl_module, activations, capture)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Once an epoch, not a step: the check reads the counters on the host.
        warn_of_unlearned_layers(unlearned_layers(self.vectors, self._loaded), self.vectors, self._messages)

    @override
    def on_validation_epoch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> None:
        self._capture = None
        if self._analysis is None:
            return
        widths = {n: self.vectors[n].shape[0] for n in self._modules if n in self.vectors}
        names = self._analysis.start_epoch(trainer, pl_module, widths)
        if names:
            self._capture = LayerCapture(names, messages=self._messages)

    @override
    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._hooks.new_forward()

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
        if self._capture is None or self._analysis is None:
            return
        self._analysis.update(batch, self._capture.take())

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._capture = None
        if self._analysis is not None:
            vectors = {n: self.vectors[n] for n in self.vectors.layer_names}
            self._analysis.end_epoch(trainer, pl_module, vectors, self.class_names)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._analysis is not None and self.vectors.layer_names:
            self._analysis.end_fit(trainer, self.vectors, self.class_names)  # may finish them

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._hooks.remove_all()
            self._capture = None
            if self._analysis is not None:
                self._analysis.layers = None

    @override
    def state_dict(self) -> dict[str, Any]:
        if not self.vectors.layer_names:
            return {}
        return {
            "state_version": CHECKPOINT_STATE_VERSION,
            # The vectors live once, in the knowledge document that `semvec export` reads.
            "knowledge": self.to_knowledge().to_document(),
            "semantic_vectors": {
                key: value for key, value in self.vectors.state_dict().items()
                if not key.endswith(".vectors")
            },
            "last_seen_step": self._last_seen_step,
        }

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Runs before load_state_dict, with the whole checkpoint: when it holds no state under
        # this callback's key (other layers or dim), resume what matches and say what does not.
        callbacks = trainer.callbacks  # type: ignore[attr-defined]  # set by Lightning's callback connector
        claimed = {cb.state_key for cb in callbacks if cb is not self}
        state, message = matching_state(
            checkpoint.get("callbacks") or {}, self.state_key, claimed, self.layer_names, self.dim
        )
        if state is not None:
            self.vectors.load_state_dict(state)
        if message is not None:
            rank_zero_warn(message)

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        knowledge, vector_state, last_seen_step = vector_state_of(state_dict)
        dims = {layer.dim for layer in knowledge.layers.values()}
        if dims != {self.dim}:
            raise SemvecValueError(
                f"The checkpoint's semantic vectors have dim={min(dims)}, this callback "
                f"has dim={self.dim}: use the same dim to resume."
            )
        # Runs before the model is on its device: on_fit_start moves the vectors there.
        self.vectors.load_state_dict(vector_state)
        self._loaded = knowledge
        self._last_seen_step = last_seen_step
        self.training_steps = knowledge.training_steps

    # ----------------------------------------------------------------- internals
    def _readout_for(self, name: str) -> NeuronReadout:
        return layer_readout(name, self.default_readout, self.layer_options)

    def _on_layer_output(self, name: str, output: Any, call: int) -> None:
        """Every layer's hook: keep ``output`` when this phase captures ``name`` (the calls
        inside backward never reach here)."""
        capture = self._capture
        # Any mode: a frozen backbone kept in eval mode during fit is learned from too.
        if capture is not None and capture.wants(name):
            capture.add(name, output, self.readouts[name], call=call)

    def _update(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        activations: dict[str, Tensor],
        capture: LayerCapture,
    ) -> None:
        """Gather this step's activations from every process and step the vectors."""
        if update_vectors(trainer, pl_module, self.vectors, list(self._modules), activations,
                          capture, messages=self._messages):
            self.training_steps = trainer.global_step
