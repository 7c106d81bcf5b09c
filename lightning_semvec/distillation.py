"""Training a student: alone, from a teacher's static knowledge, or from a teacher run per batch.

Three LightningModules share one small base:

- :class:`StudentModule` trains a student network on its task (cross-entropy by default)
  with accuracy metrics, a configurable optimizer and hook capture. With no distillation
  term it is the plain baseline.
- :class:`StaticDistillationModule` adds the static term of METHOD.md section 5: on every
  batch the activation similarity of chosen student layers is pulled towards the semantic
  similarity of the paired teacher layers, read from a knowledge file. The teacher is never
  built, loaded or run.
- :class:`TeacherDistillationModule` runs a frozen teacher on every batch for the
  relation-based baselines of METHOD.md section 6 (KD, RKD, SP, CC, PKT).

All three are made to be subclassed; :meth:`StudentModule.task_loss` and
``configure_optimizers`` are the usual places to override.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from lightning_semvec.functional.alignment import ALIGNMENT_FORMS, AlignmentForm, alignment_loss
from lightning_semvec.functional.relational_distillation import (
    KD_TEMPERATURE,
    PKT_WEIGHT,
    SP_WEIGHT,
    cc_loss,
    kd_loss,
    pkt_loss,
    rkd_loss,
    sp_loss,
)
from lightning_semvec.functional.similarity import SimilarityKind, check_similarity_kind
from lightning_semvec.knowledge import StaticKnowledge
from lightning_semvec.models.optimizers import OptimizerName, adam_or_sgd
from lightning_semvec.layers import resolve_layers
from lightning_semvec.neurons import NeuronReadout

__all__ = [
    "DEFAULT_TEACHER_WEIGHTS",
    "DistillationTerm",
    "StaticDistillationModule",
    "StudentModule",
    "TeacherDistillationModule",
]

TeacherMethod = Literal["kd", "rkd", "sp", "cc", "pkt"]

#: Weight of the correlation-congruence loss in the usual CIFAR-100 setting (the CRD
#: benchmark's RepDistiller scripts use 0.02).
CC_WEIGHT = 0.02
#: The weight each teacher-run method gets unless told otherwise: KD 1 (its ``T**2`` factor
#: already scales it), RKD 1 (its distance 25 and angle 50 weights are inside
#: :func:`~lightning_semvec.functional.relational_distillation.rkd_loss`), SP 3000, CC 0.02,
#: PKT 30000, as in the usual CIFAR-100 setting.
DEFAULT_TEACHER_WEIGHTS: dict[str, float] = {
    "kd": 1.0,
    "rkd": 1.0,
    "sp": SP_WEIGHT,
    "cc": CC_WEIGHT,
    "pkt": PKT_WEIGHT,
}
_TEACHER_LOSSES = {"rkd": rkd_loss, "sp": sp_loss, "cc": cc_loss, "pkt": pkt_loss}


class DistillationTerm(NamedTuple):
    """One term of the objective: the unweighted ``loss`` (logged) and its ``weight``."""

    loss: Tensor
    weight: float


# ----------------------------------------------------------------------------- hook capture


class _OutputCapture:
    """Records module outputs, by key, while :meth:`recording` is active.

    The hooks are ``functools.partial`` objects around a bound method of this plain object,
    so a module holding them can be pickled (``ddp_spawn``) and deep-copied: the copy's hooks
    record into the copy's capture.
    """

    def __init__(self) -> None:
        self.active = False
        self.outputs: dict[str, list[Any]] = {}

    def record(self, key: str, module: nn.Module, inputs: Any, output: Any) -> None:
        if self.active:
            self.outputs.setdefault(key, []).append(output)

    def attach(self, module: nn.Module, key: str) -> RemovableHandle:
        return module.register_forward_hook(functools.partial(self.record, key))

    @contextmanager
    def recording(self) -> Iterator[dict[str, list[Any]]]:
        """Record during the block; everything recorded is dropped when it ends."""
        self.outputs = {}
        self.active = True
        try:
            yield self.outputs
        finally:
            self.active = False
            self.outputs = {}


def _exact_layer(root: nn.Module, name: object, owner: str, argument: str) -> nn.Module:
    """The submodule called exactly ``name``; the error names the closest existing ones."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{argument}: layer names must be non-empty strings, got {name!r}.")
    modules = dict(root.named_modules())
    if name in modules:
        return modules[name]
    try:
        matches = resolve_layers(root, name)
    except ValueError as err:
        raise ValueError(f"{argument}: no layer {name!r} in the {owner}. {err}") from None
    raise ValueError(
        f"{argument}: {name!r} is a pattern (it matches {list(matches)[:5]}); name exactly one "
        f"layer of the {owner}."
    )


def _check_positive_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer of at least {minimum}; got {value!r}.")


def _check_weight(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a non-negative number; got {value!r}.")
    return float(value)


# ----------------------------------------------------------------------------- base module


class StudentModule(pl.LightningModule):
    """Train a student network on a classification task; the base of the distillation modules.

    On its own it trains the student alone (the plain baseline). Subclasses add terms to the
    objective by overriding :meth:`distillation_losses`; the objective of a training or
    validation batch is ``task_loss + sum(weight * loss)`` over those terms. Student layers
    whose outputs a subclass needs are hooked with :meth:`capture_layer` (the hooks record
    only inside this module's training and validation steps and keep the graph, so a loss
    on them trains the student).

    Logged (``batch_size`` given explicitly): ``train/loss`` (per step and epoch),
    ``train/acc`` (per epoch), ``train/task_loss`` and one ``train/<term>`` per distillation
    term (unweighted; on the first step and then on the loggers' steps, every
    ``Trainer(log_every_n_steps)``, since they are diagnostics); the same
    under ``val/`` (per epoch); ``test/task_loss`` and ``test/acc`` (no distillation terms at
    test time). Accuracies are top-1 (torchmetrics
    ``MulticlassAccuracy`` with ``average="micro"``).

    No hyperparameters are saved automatically: a subclass whose ``__init__`` takes no
    arguments reloads with ``Student.load_from_checkpoint(path)``. Call
    ``self.save_hyperparameters(...)`` in your subclass if you want them.

    Args:
        student: the network, mapping inputs ``(B, ...)`` to logits ``(B, num_classes)``.
            Stored as ``self.student``; its layer names are relative to it.
        num_classes: number of classes (at least 2).
        lr: learning rate.
        weight_decay: L2 weight decay.
        optimizer: ``"adam"`` (Adam) or ``"sgd"`` (SGD, momentum 0.9).
        max_epochs: if given, a cosine schedule takes the learning rate from ``lr`` to 0 over
            this many epochs (stepped per epoch).

    Shapes:
        batches are ``(inputs, targets)`` with ``targets (B,)`` int64 class indices.

    Example:
        >>> import lightning.pytorch as pl
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> data = DataLoader(TensorDataset(torch.randn(32, 6), torch.randint(0, 3, (32,))),
        ...                   batch_size=8)
        >>> module = StudentModule(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)),
        ...                        num_classes=3)
        >>> trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False,
        ...     enable_progress_bar=False, enable_model_summary=False)
        >>> trainer.fit(module, data)
        >>> sorted(k for k in trainer.callback_metrics if not k.endswith(("_step", "_epoch")))
        ['train/acc', 'train/loss', 'train/task_loss']
    """

    def __init__(
        self,
        student: nn.Module,
        num_classes: int,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: OptimizerName = "adam",
        max_epochs: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(student, nn.Module):
            raise TypeError(f"student must be an nn.Module, got {type(student).__name__}.")
        _check_positive_int("num_classes", num_classes, minimum=2)
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"lr must be a positive number; got {lr!r}.")
        _check_weight("weight_decay", weight_decay)
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd'; got {optimizer!r}.")
        if max_epochs is not None:
            _check_positive_int("max_epochs", max_epochs)
        self.student = student
        self.num_classes = num_classes
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.optimizer_name: OptimizerName = optimizer
        self.max_epochs = max_epochs
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self._capture = _OutputCapture()
        self._hook_handles: list[RemovableHandle] = []
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ overridable API
    def forward(self, inputs: Tensor) -> Tensor:
        """The student's logits ``(B, num_classes)``."""
        return self.student(inputs)

    def task_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The student's own task loss; cross-entropy by default. Override to change it.

        Args:
            logits: ``(B, num_classes)`` student logits.
            targets: ``(B,)`` int64 class indices.
        """
        return F.cross_entropy(logits, targets)

    def distillation_losses(
        self,
        inputs: Tensor,
        targets: Tensor,
        logits: Tensor,
        captured: Mapping[str, list[Any]],
    ) -> dict[str, DistillationTerm]:
        """The extra terms of the objective for one batch; none in the base class.

        Called inside the training and validation steps, while the hooks registered by
        :meth:`capture_layer` record (so running another network here records its hooked
        layers too). Raise here, never later: an error leaves the model unchanged.

        Args:
            inputs: the batch's inputs.
            targets: ``(B,)`` class indices.
            logits: ``(B, num_classes)`` student logits (with their graph).
            captured: ``{key: [outputs]}`` of the hooked layers, one entry per call of the
                layer during this step.

        Returns:
            ``{name: DistillationTerm(loss, weight)}``; ``name`` is logged as
            ``<stage>/<name>``.
        """
        return {}

    def capturing(self) -> AbstractContextManager[dict[str, list[Any]]]:
        """A context in which the hooked layers record: yields ``{key: [outputs]}``.

        The training and validation steps use it; it is public so that
        :meth:`distillation_losses` can be called by hand (tests, debugging). What was
        recorded is dropped when the block ends.
        """
        return self._capture.recording()

    def capture_layer(self, module: nn.Module, key: str) -> None:
        """Hook ``module`` so that its outputs appear as ``captured[key]`` during steps.

        The outputs keep their graph (not detached). Hooks stay for the module's life and
        cost nothing outside this module's steps.
        """
        self._hook_handles.append(self._capture.attach(module, key))

    # ------------------------------------------------------------------ Lightning hooks
    @override
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train", self.train_acc)

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "val", self.val_acc)

    @override
    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "test", self.test_acc)

    @override
    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Class probabilities ``(B, num_classes)`` of a batch (``inputs`` or ``(inputs, ...)``)."""
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(inputs).softmax(dim=-1)

    @override
    def configure_optimizers(self) -> Any:
        # Frozen parameters (a teacher's) stay out of the optimizer.
        params = [p for p in self.parameters() if p.requires_grad]
        return adam_or_sgd(params, self.optimizer_name, self.lr, self.weight_decay, self.max_epochs)

    # ------------------------------------------------------------------ internals
    def _step(self, batch: Any, stage: str, metric: MulticlassAccuracy) -> Tensor:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError(
                f"{type(self).__name__} expects batches (inputs, targets); got "
                f"{type(batch).__name__}."
            )
        inputs, targets = batch[0], batch[1]
        terms: dict[str, DistillationTerm] = {}
        with self.capturing() as captured:
            logits = self(inputs)
            self._check_logits(logits, targets)
            if stage != "test":
                terms = self.distillation_losses(inputs, targets, logits, captured)
        task = self.task_loss(logits, targets)
        total = task
        for term in terms.values():
            total = total + term.weight * term.loss
        batch_size = int(targets.shape[0])
        on_step, sync = stage == "train", stage != "train"
        log = functools.partial(
            self.log, on_step=on_step, on_epoch=True, batch_size=batch_size, sync_dist=sync
        )
        metric(logits.detach(), targets)
        if stage == "test":
            log(f"{stage}/task_loss", task)
        else:
            if stage != "train" or self._is_logging_step():
                # In training the task loss and the terms are diagnostics: logged on the
                # logger's steps only, so a step costs one ``log`` call (the total), as the
                # plain student's does; each call is a fraction of a millisecond of Python.
                on_epoch = stage != "train"
                log(f"{stage}/task_loss", task.detach(), on_epoch=on_epoch)
                for name, term in terms.items():
                    log(f"{stage}/{name}", term.loss.detach(), on_epoch=on_epoch)
            log(f"{stage}/loss", total, prog_bar=True)
        self.log(f"{stage}/acc", metric, on_step=False, on_epoch=True, prog_bar=stage != "train")
        return total

    def _is_logging_step(self) -> bool:
        """The first step and those on which the trainer's loggers write step metrics."""
        if self._trainer is None:
            return True
        every = max(int(self.trainer.log_every_n_steps), 1)
        return self.global_step == 0 or (self.global_step + 1) % every == 0

    def _check_logits(self, logits: Any, targets: Any) -> None:
        if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[1] != self.num_classes:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(
                f"The student returned {shape}; expected logits of shape (batch, "
                f"num_classes={self.num_classes})."
            )
        if not isinstance(targets, Tensor) or targets.shape != logits.shape[:1]:
            shape = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
            raise ValueError(
                f"Targets must be (batch,) class indices matching the logits "
                f"{tuple(logits.shape)}; got {shape}."
            )

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)

    @staticmethod
    def _zero_like_graph(x: Tensor) -> Tensor:
        """A zero that keeps ``x`` in the graph, so every parameter still gets a gradient
        (DDP requires it) when a term is skipped."""
        return x.sum() * 0.0

    @staticmethod
    def _single_output(captured: Mapping[str, list[Any]], key: str, what: str) -> Any:
        outputs = captured.get(key, [])
        if len(outputs) != 1:
            raise RuntimeError(
                f"The {what} was called {len(outputs)} times in this step; it must be called "
                "exactly once per forward pass. Check the layer name."
            )
        return outputs[0]


# ----------------------------------------------------------------------------- static


@dataclass(frozen=True)
class _StaticPair:
    student_layer: str
    teacher_layer: str
    buffer: str
    weight: float
    similarity: SimilarityKind
    readout: NeuronReadout
    student_width: int | None
    teacher_width: int
    projection: str | None  # key in self.projections


def _module_width(module: nn.Module) -> int | None:
    """The number of neurons a module's output holds, when its type says so."""
    for attr in ("out_features", "out_channels", "num_features", "embedding_dim"):
        value = getattr(module, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    if isinstance(module, nn.LayerNorm) and module.normalized_shape:
        return int(module.normalized_shape[-1])
    return None


def _safe_key(name: str, taken: set[str]) -> str:
    key = name.replace(".", "_") or "layer"
    candidate, i = key, 1
    while candidate in taken:
        candidate, i = f"{key}_{i}", i + 1
    taken.add(candidate)
    return candidate


class StaticDistillationModule(StudentModule):
    """Static knowledge distillation: a student learns from a teacher's semantic vectors alone.

    Each student layer in ``layer_map`` is paired with a teacher layer of the knowledge.
    On every training (and validation) batch the student layer's activations ``(M, N_s)``
    are read like the teacher's were (the knowledge layer's ``reduction`` and
    ``neuron_dim``), mapped by a learnable linear map ``P: N_s -> N_t`` when the widths
    differ, and the objective adds

        ``weight * mean over alive pairs (S_act^student[i, j] - S_sem^teacher[i, j])**2``

    (:func:`~lightning_semvec.functional.alignment_loss`, in float32 whatever the precision,
    differentiable in the student's activations). The teacher's vectors are persistent
    buffers (saved in checkpoints, moved with the module, never trained); the teacher
    network is never built or loaded. A batch of one sample has no similarity: its static
    term is skipped (zero, with one warning).

    Optionally (``soft_targets > 0``, an extension of ours, METHOD.md section 5) the logit
    layer's class similarity also gives static soft targets: a sample of class ``y`` gets
    ``q = softmax(S_sem[y] / soft_target_temperature)`` and the objective adds
    ``soft_targets * KL(q || softmax(student logits))``.

    Under DDP each process computes the similarity on its own share of the batch (as the
    teacher-run relational losses do); gradients are averaged as usual.

    What to expect (``docs/results.md``): on our digits benchmark the term on the logits at
    ``weight=1`` did not beat the plain student, at ``weight=0.1`` it beat the plain student
    and every teacher-run baseline; the soft targets' gain was matched by plain label
    smoothing. Pearson similarity ignores a neuron's scale, and its gradient grows as the
    neuron's spread shrinks: a very small student can shrink the paired layer's spread until
    the static term drowns the task loss (watch ``train/task_loss``); a smaller ``weight``
    avoids that.

    Logged, besides :class:`StudentModule`'s: ``train/static_loss/<student layer>`` and
    ``train/soft_target_loss`` (unweighted; the same under ``val/``).

    Args:
        student: the student network, inputs to ``(B, num_classes)`` logits.
        knowledge: a :class:`~lightning_semvec.StaticKnowledge` or the path of a knowledge
            file (``.semvec.safetensors``).
        layer_map: ``{student layer: teacher layer}``; student names are relative to
            ``student`` (as in ``student.named_modules()``), teacher names are the
            knowledge's layers. May be empty only when ``soft_targets > 0``.
        weight: the static term's weight ``lambda``, one for every pair or
            ``{student layer: weight}`` naming exactly the keys of ``layer_map``.
        similarity: the student's activation similarity, ``"pearson"`` or ``"cosine"``;
            default: the one the teacher's vectors were aligned to.
        projection: learn ``P`` (``nn.Linear(N_s, N_t, bias=False)``, in
            ``self.projections``) for pairs whose widths differ. If ``False``, differing
            widths are a ``ValueError`` at construction.
        soft_targets: weight of the static soft-target term (0 turns it off).
        soft_target_temperature: ``tau > 0`` of the soft targets; smaller is sharper.
        soft_target_layer: the teacher layer giving the class similarity; default: the
            first layer of ``layer_map``'s values, else of the knowledge, with
            ``num_classes`` neurons.
        student_widths: ``{student layer: N_s}`` for layers whose width cannot be read from
            the module (``out_features``, ``out_channels``, ...), e.g. a ``ReLU``; needed
            only to build a projection or to check widths before training.
        num_classes: number of classes; default: the number of the knowledge's
            ``class_names``.
        lr, weight_decay, optimizer, max_epochs: as in :class:`StudentModule`.
        form: alignment loss form, ``"auto"``, ``"dense"`` or ``"factorized"``.

    Raises:
        ValueError: an unknown student layer (the message names the closest ones), an
            unknown teacher layer (it lists the knowledge's), widths that differ with
            ``projection=False``, an unknown ``num_classes``, or a bad option.

    Example:
        The issue's user code (a full fit; see ``tests/test_distillation.py``)::

            semvec.export_knowledge("teacher.semvec.safetensors")  # after the teacher's fit
            knowledge = StaticKnowledge.load("teacher.semvec.safetensors")
            class Student(StaticDistillationModule):
                def __init__(self):
                    super().__init__(student=SmallNet(), knowledge=knowledge,
                                     layer_map={"fc2": "classifier.2"}, weight=1.0)
            pl.Trainer(max_epochs=20).fit(Student(), datamodule)

        One training step by hand:

        >>> knowledge = StaticKnowledge.from_vectors(
        ...     {"fc": torch.randn(3, 4)}, class_names=["a", "b", "c"])
        >>> module = StaticDistillationModule(
        ...     student=nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)),
        ...     knowledge=knowledge, layer_map={"1": "fc"}, student_widths={"1": 8})
        >>> module.projections["1"]
        Linear(in_features=8, out_features=3, bias=False)
        >>> inputs, targets = torch.randn(16, 6), torch.randint(0, 3, (16,))
        >>> with module.capturing() as captured:
        ...     terms = module.distillation_losses(inputs, targets, module(inputs), captured)
        >>> list(terms), terms["static_loss/1"].loss.requires_grad
        (['static_loss/1'], True)
        >>> [name for name, _ in module.named_buffers()]
        ['teacher_vectors_fc']
    """

    def __init__(
        self,
        student: nn.Module,
        knowledge: StaticKnowledge | str | Path,
        layer_map: Mapping[str, str],
        weight: float | Mapping[str, float] = 1.0,
        similarity: SimilarityKind | None = None,
        projection: bool = True,
        soft_targets: float = 0.0,
        soft_target_temperature: float = 0.5,
        soft_target_layer: str | None = None,
        student_widths: Mapping[str, int] | None = None,
        num_classes: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: OptimizerName = "adam",
        max_epochs: int | None = None,
        form: AlignmentForm = "auto",
    ) -> None:
        if isinstance(knowledge, (str, Path)):
            knowledge = StaticKnowledge.load(knowledge)
        if not isinstance(knowledge, StaticKnowledge):
            raise TypeError(
                "knowledge must be a StaticKnowledge or the path of a knowledge file, got "
                f"{type(knowledge).__name__}."
            )
        num_classes = self._infer_num_classes(knowledge, num_classes)
        super().__init__(student, num_classes, lr, weight_decay, optimizer, max_epochs)
        if not isinstance(layer_map, Mapping):
            raise TypeError(
                "layer_map must be a dict {student layer: teacher layer}, e.g. "
                f"{{'fc2': 'classifier.2'}}; got {type(layer_map).__name__}."
            )
        self.soft_target_weight = _check_weight("soft_targets", soft_targets)
        if not layer_map and self.soft_target_weight == 0:
            raise ValueError(
                "Nothing to distil: layer_map is empty and soft_targets is 0. Pair at least one "
                f"student layer with a teacher layer (the knowledge has {knowledge.layer_names})."
            )
        if similarity is not None:
            check_similarity_kind(similarity)
        if form not in ALIGNMENT_FORMS:
            raise ValueError(f"Unknown form {form!r}: use one of {ALIGNMENT_FORMS}.")
        if not isinstance(projection, bool):
            raise TypeError(f"projection must be True or False, got {projection!r}.")
        self.form: AlignmentForm = form
        self.use_projection = projection
        weights = self._per_pair_weights(weight, list(layer_map))
        widths = dict(student_widths or {})
        unknown_widths = [name for name in widths if name not in layer_map]
        if unknown_widths:
            raise ValueError(
                f"student_widths names layers {unknown_widths} that are not keys of layer_map "
                f"({list(layer_map)})."
            )

        self.projections = nn.ModuleDict()
        self._pairs: list[_StaticPair] = []
        self._teacher_buffers: dict[str, str] = {}  # teacher layer -> buffer name
        taken_buffers: set[str] = set()
        taken_projections: set[str] = set()
        for student_layer, teacher_layer in layer_map.items():
            module = _exact_layer(student, student_layer, "student", "layer_map")
            if not isinstance(teacher_layer, str) or teacher_layer not in knowledge:
                raise ValueError(
                    f"layer_map: the knowledge has no teacher layer {teacher_layer!r} (paired "
                    f"with student layer {student_layer!r}); its layers are "
                    f"{knowledge.layer_names}."
                )
            teacher = knowledge[teacher_layer]
            if teacher_layer not in self._teacher_buffers:
                buffer = _safe_key(f"teacher_vectors_{teacher_layer}", taken_buffers)
                self.register_buffer(buffer, teacher.vectors.clone(), persistent=True)
                self._teacher_buffers[teacher_layer] = buffer
            width = widths.get(student_layer)
            if width is not None:
                _check_positive_int(f"student_widths[{student_layer!r}]", width)
            else:
                width = _module_width(module)
            projection_key = None
            if width is None and projection:
                raise ValueError(
                    f"Cannot tell how many neurons student layer {student_layer!r} "
                    f"({type(module).__name__}) has, which the projection to the teacher's "
                    f"{teacher.num_neurons} needs: pass student_widths={{{student_layer!r}: N}}, "
                    "or pair a layer with out_features/out_channels (e.g. the Linear or Conv "
                    "before it)."
                )
            if width is not None and width != teacher.num_neurons:
                if not projection:
                    raise ValueError(
                        f"Student layer {student_layer!r} has {width} neurons but teacher layer "
                        f"{teacher_layer!r} has {teacher.num_neurons}: set projection=True to "
                        "learn a linear map between them, or pair layers of the same width."
                    )
                projection_key = _safe_key(student_layer, taken_projections)
                self.projections[projection_key] = nn.Linear(width, teacher.num_neurons, bias=False)
            self._pairs.append(
                _StaticPair(
                    student_layer=student_layer,
                    teacher_layer=teacher_layer,
                    buffer=self._teacher_buffers[teacher_layer],
                    weight=weights[student_layer],
                    similarity=similarity or teacher.similarity,  # type: ignore[arg-type]
                    readout=NeuronReadout(teacher.reduction, teacher.neuron_dim),  # type: ignore[arg-type]
                    student_width=width,
                    teacher_width=teacher.num_neurons,
                    projection=projection_key,
                )
            )
            self.capture_layer(module, f"student:{student_layer}")

        self.soft_target_layer: str | None = None
        self.soft_target_temperature = float(soft_target_temperature)
        if self.soft_target_weight > 0:
            if not self.soft_target_temperature > 0:
                raise ValueError(
                    f"soft_target_temperature must be > 0; got {soft_target_temperature!r}."
                )
            layer = self._pick_soft_target_layer(knowledge, layer_map, soft_target_layer)
            self.soft_target_layer = layer
            similarity_matrix = knowledge.semantic_similarity(layer)
            targets = torch.softmax(similarity_matrix / self.soft_target_temperature, dim=1)
            self.register_buffer("soft_target_probs", targets, persistent=True)

    # ------------------------------------------------------------------ public views
    @property
    def layer_map(self) -> dict[str, str]:
        """``{student layer: teacher layer}``."""
        return {pair.student_layer: pair.teacher_layer for pair in self._pairs}

    @property
    def teacher_vectors(self) -> dict[str, Tensor]:
        """``{teacher layer: (N_t, d) buffer}``: the teacher's vectors (not copies)."""
        return {layer: getattr(self, buffer) for layer, buffer in self._teacher_buffers.items()}

    def projection_for(self, student_layer: str) -> nn.Linear | None:
        """The learnable map ``N_s -> N_t`` of a student layer, or ``None`` (same widths)."""
        for pair in self._pairs:
            if pair.student_layer == student_layer:
                return self.projections[pair.projection] if pair.projection else None  # type: ignore[return-value]
        raise KeyError(f"{student_layer!r} is not a student layer of layer_map {self.layer_map}.")

    # ------------------------------------------------------------------ the objective
    @override
    def distillation_losses(
        self,
        inputs: Tensor,
        targets: Tensor,
        logits: Tensor,
        captured: Mapping[str, list[Any]],
    ) -> dict[str, DistillationTerm]:
        terms: dict[str, DistillationTerm] = {}
        for pair in self._pairs:
            terms[f"static_loss/{pair.student_layer}"] = DistillationTerm(
                self._static_loss(pair, captured), pair.weight
            )
        if self.soft_target_weight > 0:
            terms["soft_target_loss"] = DistillationTerm(
                self._soft_target_loss(logits, targets), self.soft_target_weight
            )
        return terms

    def _static_loss(self, pair: _StaticPair, captured: Mapping[str, list[Any]]) -> Tensor:
        outputs = captured.get(f"student:{pair.student_layer}", [])
        if not outputs:
            raise RuntimeError(
                f"Student layer {pair.student_layer!r} (layer_map) was not called in this "
                "forward pass, so it has no activations to distil; pair a layer the student uses."
            )
        chunks = [pair.readout.read(out, pair.student_layer, detach=False) for out in outputs]
        acts = torch.cat(chunks) if len(chunks) > 1 else chunks[0]  # (M, N_s) float32
        expected = pair.student_width
        if expected is not None and acts.shape[1] != expected:
            raise ValueError(
                f"Student layer {pair.student_layer!r} gave {acts.shape[1]} neurons per sample "
                f"(shape {tuple(acts.shape)}), but {expected} were expected; pass "
                "student_widths to say how many it has."
            )
        if pair.projection is not None:
            # The map is part of the float32 similarity computation, not of the autocast model.
            with torch.autocast(acts.device.type, enabled=False):
                acts = self.projections[pair.projection](acts)
        elif acts.shape[1] != pair.teacher_width:
            raise ValueError(
                f"Student layer {pair.student_layer!r} has {acts.shape[1]} neurons but teacher "
                f"layer {pair.teacher_layer!r} has {pair.teacher_width}: set projection=True "
                "or pair layers of the same width."
            )
        if acts.shape[0] < 2:
            self._warn_once(
                f"small:{pair.student_layer}",
                f"StaticDistillationModule: a batch gave student layer {pair.student_layer!r} "
                f"only {acts.shape[0]} sample; similarity needs at least 2, so its static term "
                "was skipped (use a batch size of 2 or more, or drop_last=True).",
            )
            return self._zero_like_graph(acts)
        loss, _ = alignment_loss(acts, getattr(self, pair.buffer), pair.similarity, self.form)
        return loss

    def _soft_target_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        probs: Tensor = self.soft_target_probs  # type: ignore[assignment]
        soft = probs[targets]
        log_student = F.log_softmax(logits.float(), dim=1)
        return F.kl_div(log_student, soft, reduction="batchmean")

    # ------------------------------------------------------------------ validation helpers
    @staticmethod
    def _infer_num_classes(knowledge: StaticKnowledge, num_classes: int | None) -> int:
        names = knowledge.class_names
        if num_classes is None:
            if not names:
                raise ValueError(
                    "num_classes is unknown: the knowledge has no class_names; pass "
                    "num_classes=..."
                )
            return len(names)
        if names and len(names) != num_classes:
            raise ValueError(
                f"num_classes={num_classes} but the knowledge names {len(names)} classes "
                f"({names[:5]}...)."
            )
        return num_classes

    @staticmethod
    def _per_pair_weights(weight: float | Mapping[str, float], names: list[str]) -> dict[str, float]:
        if not isinstance(weight, Mapping):
            value = _check_weight("weight", weight)
            return {name: value for name in names}
        missing = [n for n in names if n not in weight]
        unknown = [n for n in weight if n not in names]
        if missing or unknown:
            raise ValueError(
                f"The weight mapping must name exactly the student layers of layer_map "
                f"{names}; it misses {missing} and names unknown {unknown}."
            )
        return {n: _check_weight(f"weight[{n!r}]", weight[n]) for n in names}

    def _pick_soft_target_layer(
        self, knowledge: StaticKnowledge, layer_map: Mapping[str, str], chosen: str | None
    ) -> str:
        if chosen is not None:
            if chosen not in knowledge:
                raise ValueError(
                    f"soft_target_layer {chosen!r} is not a layer of the knowledge "
                    f"({knowledge.layer_names})."
                )
            if knowledge[chosen].num_neurons != self.num_classes:
                raise ValueError(
                    f"soft_target_layer {chosen!r} has {knowledge[chosen].num_neurons} neurons; "
                    f"soft targets need one neuron per class ({self.num_classes})."
                )
            return chosen
        candidates = list(layer_map.values()) + knowledge.layer_names
        for layer in candidates:
            if layer in knowledge and knowledge[layer].num_neurons == self.num_classes:
                return layer
        raise ValueError(
            f"Soft targets need a teacher layer with one neuron per class ({self.num_classes}), "
            "such as the logits; the knowledge has "
            + ", ".join(f"{k.name!r} ({k.num_neurons})" for k in knowledge.layers.values())
            + ". Export the teacher's logit layer or set soft_targets=0."
        )


# ----------------------------------------------------------------------------- teacher run


class TeacherDistillationModule(StudentModule):
    """The relation-based baselines: a frozen teacher runs on every batch.

    The teacher is kept frozen (``requires_grad=False``, always in eval mode, out of the
    optimizer) and runs under ``torch.no_grad``; it is a submodule, so it follows the
    student's device and is saved in checkpoints (Lightning's warning that some modules are
    in eval mode at the start of training refers to the teacher: intended). The objective adds
    ``weight * loss(student, teacher)`` for one method of
    :mod:`lightning_semvec.functional.relational_distillation`:

    - ``"kd"``: Hinton KD on the logits, temperature ``temperature`` (4).
    - ``"rkd"``, ``"sp"``, ``"cc"``, ``"pkt"``: on the penultimate features, the outputs of
      ``student_feature_layer`` and ``teacher_feature_layer`` (flattened to ``(B, D)``;
      the widths may differ).

    Default weights: :data:`DEFAULT_TEACHER_WEIGHTS`. A batch of one sample skips the
    relational term. Logged, besides :class:`StudentModule`'s: ``train/distill_loss/<method>``
    (unweighted; the same under ``val/``).

    Args:
        student: the student network, inputs to ``(B, num_classes)`` logits.
        teacher: the trained teacher network (or LightningModule), inputs to logits.
        num_classes: number of classes.
        method: ``"kd"``, ``"rkd"``, ``"sp"``, ``"cc"`` or ``"pkt"``.
        weight: the term's weight; default: the method's usual weight.
        student_feature_layer: the student's penultimate layer (name relative to
            ``student``); needed by every method but ``"kd"``.
        teacher_feature_layer: the teacher's penultimate layer (relative to ``teacher``).
        temperature: KD's softening temperature.
        lr, weight_decay, optimizer, max_epochs: as in :class:`StudentModule`.

    Example:
        >>> teacher = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> student = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
        >>> module = TeacherDistillationModule(student, teacher, num_classes=3, method="rkd",
        ...     student_feature_layer="1", teacher_feature_layer="1")
        >>> inputs, targets = torch.randn(8, 6), torch.randint(0, 3, (8,))
        >>> with module.capturing() as captured:
        ...     terms = module.distillation_losses(inputs, targets, module(inputs), captured)
        >>> terms["distill_loss/rkd"].weight, terms["distill_loss/rkd"].loss.requires_grad
        (1.0, True)
        >>> any(p.requires_grad for p in module.teacher.parameters()), module.teacher.training
        (False, False)
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        num_classes: int,
        method: TeacherMethod = "kd",
        weight: float | None = None,
        student_feature_layer: str | None = None,
        teacher_feature_layer: str | None = None,
        temperature: float = KD_TEMPERATURE,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: OptimizerName = "adam",
        max_epochs: int | None = None,
    ) -> None:
        super().__init__(student, num_classes, lr, weight_decay, optimizer, max_epochs)
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be an nn.Module, got {type(teacher).__name__}.")
        if method not in DEFAULT_TEACHER_WEIGHTS:
            raise ValueError(f"Unknown method {method!r}: use one of {list(DEFAULT_TEACHER_WEIGHTS)}.")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0; got {temperature!r}.")
        self.method: TeacherMethod = method
        self.weight = DEFAULT_TEACHER_WEIGHTS[method] if weight is None else _check_weight(
            "weight", weight
        )
        self.temperature = float(temperature)
        teacher.requires_grad_(False)
        teacher.eval()
        self.teacher = teacher
        self.student_feature_layer = student_feature_layer
        self.teacher_feature_layer = teacher_feature_layer
        if method != "kd":
            if student_feature_layer is None or teacher_feature_layer is None:
                raise ValueError(
                    f"method={method!r} compares penultimate features: pass "
                    "student_feature_layer and teacher_feature_layer (module names relative to "
                    "the student and the teacher)."
                )
            self.capture_layer(
                _exact_layer(student, student_feature_layer, "student", "student_feature_layer"),
                "student:features",
            )
            self.capture_layer(
                _exact_layer(teacher, teacher_feature_layer, "teacher", "teacher_feature_layer"),
                "teacher:features",
            )

    @override
    def train(self, mode: bool = True) -> TeacherDistillationModule:
        super().train(mode)
        self.teacher.eval()  # BatchNorm and dropout of the teacher stay in inference mode
        return self

    @override
    def distillation_losses(
        self,
        inputs: Tensor,
        targets: Tensor,
        logits: Tensor,
        captured: Mapping[str, list[Any]],
    ) -> dict[str, DistillationTerm]:
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        name = f"distill_loss/{self.method}"
        if self.method == "kd":
            return {name: DistillationTerm(kd_loss(logits, teacher_logits, self.temperature), self.weight)}
        student_features = self._single_output(
            captured, "student:features", f"student feature layer {self.student_feature_layer!r}"
        )
        teacher_features = self._single_output(
            captured, "teacher:features", f"teacher feature layer {self.teacher_feature_layer!r}"
        )
        if student_features.shape[0] < 2:
            self._warn_once(
                "small",
                f"TeacherDistillationModule: a batch of {student_features.shape[0]} sample; "
                f"{self.method} compares samples, so its term was skipped.",
            )
            return {name: DistillationTerm(self._zero_like_graph(student_features), self.weight)}
        loss = _TEACHER_LOSSES[self.method](student_features, teacher_features)
        return {name: DistillationTerm(loss, self.weight)}
