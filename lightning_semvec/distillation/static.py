"""Static distillation: a student learns from a teacher's saved semantic vectors alone.

The student layers of ``layer_map`` are paired with teacher layers of a knowledge file; a
learnable linear map joins pairs of different widths. The teacher network is never built,
loaded or run. The method: ``docs/method.md#static-knowledge-distillation``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lightning_semvec._utils.checks import check_choice, check_int, check_number, is_int
from lightning_semvec.capture.layers import module_dict_key
from lightning_semvec.capture.readout import NeuronReadout
from lightning_semvec.distillation.capture import exact_layer
from lightning_semvec.distillation.soft_targets import (
    SoftTargetSource,
    plan_soft_targets,
)
from lightning_semvec.distillation.student import DistillationTerm, StudentModule
from lightning_semvec.errors import SemvecTypeError, SemvecValueError
from lightning_semvec.functional.alignment import (
    ALIGNMENT_FORMS,
    AlignmentForm,
    alignment_loss,
)
from lightning_semvec.functional.similarity import SimilarityKind, check_similarity_kind
from lightning_semvec.knowledge import StaticKnowledge
from lightning_semvec.models.optimizers import DEFAULT_OPTIMIZER

__all__ = ["StaticDistillationModule"]


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
        if is_int(value):
            return value
    if isinstance(module, nn.LayerNorm) and module.normalized_shape:
        return int(module.normalized_shape[-1])
    return None


def _output_width(student: Any) -> int | None:
    """The output width of a network whose last module (in definition order) is a
    ``Linear``-like layer, such as a classifier's head; ``None`` otherwise."""
    if not isinstance(student, nn.Module):
        return None
    leaves = [m for m in student.modules() if not list(m.children())]
    return _module_width(leaves[-1]) if leaves else None


def _key_of_0_1(name: str, taken: set[str]) -> str:
    """The state-dict key 0.1 gave a layer (dots to ``_``, ``_1`` on a clash); read only to
    load a 0.1 checkpoint (see ``_load_from_state_dict``)."""
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

    By default the knowledge's class statistics of the teacher's logit layer also give
    class-level soft targets (an extension of ours, ``docs/method.md#static-knowledge-distillation``):
    a sample of class ``y`` gets ``q = softmax(scores[y] / soft_target_temperature)``, the same
    for every sample of the class, and the objective adds
    ``soft_targets * KL(q || softmax(student logits))``. ``scores`` are the teacher's mean
    logits per class on its validation data (``soft_target_source="class_means"``) or the
    logit vectors' semantic similarity (``"similarity"``). A knowledge file without class
    statistics gets no soft targets under the default ``"auto"``, with a warning.

    Under DDP each process computes the similarity on its own share of the batch (as the
    teacher-run relational losses do); gradients are averaged as usual.

    Pearson similarity ignores a neuron's scale, and its gradient grows as the neuron's
    spread shrinks: a very small student can shrink the paired layer's spread until the
    static term drowns the task loss (watch ``train/task_loss``); hence the default weight 0.1
    rather than the paper's 1. What to expect, with controls that have no teacher in them:
    ``docs/results.md``.

    Logged, besides :class:`StudentModule`'s: ``train/static_loss/<student layer>`` and
    ``train/soft_target_loss`` (unweighted; the same under ``val/``).

    Args:
        student: the student network, inputs to ``(B, num_classes)`` logits.
        knowledge: a :class:`~lightning_semvec.StaticKnowledge` or the path of a knowledge
            file (``.semvec.safetensors``).
        layer_map: ``{student layer: teacher layer}``; student names are relative to
            ``student`` (as in ``student.named_modules()``), teacher names are the
            knowledge's layers. May be empty (soft targets only) when the soft targets are on.
        weight: the static term's weight ``lambda``, one for every pair or
            ``{student layer: weight}`` naming exactly the keys of ``layer_map``. The default,
            0.1, never fell below the plain student in ``docs/results.md``; the paper's 1
            collapses small students.
        similarity: the student's activation similarity, ``"pearson"`` or ``"cosine"``;
            default: the one the teacher's vectors were aligned to.
        projection: learn ``P`` (``nn.Linear(N_s, N_t, bias=False)``, in
            ``self.projections``) for pairs whose widths differ. If ``False``, differing
            widths are a ``ValueError`` at construction.
        soft_targets: weight of the static soft-target term (0 turns it off).
        soft_target_temperature: ``tau > 0`` of the soft targets; smaller is sharper;
            default 8 for ``"class_means"``, 0.5 for ``"similarity"``.
        soft_target_layer: the teacher layer giving the class scores; default: the
            first layer of ``layer_map``'s values, else of the knowledge, with
            ``num_classes`` neurons.
        soft_target_source: where the soft targets' class scores come from:
            ``"class_means"`` (the teacher's mean logits per class on its validation data, a
            statistic the knowledge file carries when the callback's analysis ran with
            labels), ``"similarity"`` (the semantic similarity of that layer's vectors, in
            ``[-1, 1]``), or ``"auto"``: ``"class_means"`` when the knowledge has them, else
            no soft targets (with a warning). ``docs/results.md`` has the measurements.
        student_widths: ``{student layer: N_s}`` for layers whose width cannot be read from
            the module (``out_features``, ``out_channels``, ...), e.g. a ``ReLU``; needed
            only to build a projection or to check widths before training.
        num_classes: number of classes; default: the number of the knowledge's
            ``class_names``, else of its class statistics, else the width of the student's
            last layer (``out_features`` of a final ``Linear``).
        form: alignment loss form, ``"auto"``, ``"dense"`` or ``"factorized"``.
        optimizer, lr_scheduler, **deprecated: as in
            :class:`~lightning_semvec.models.ImageClassifier` (default Adam, ``lr=1e-3``).

    Raises:
        ValueError: an unknown student layer (the message names the closest ones), an
            unknown teacher layer (it lists the knowledge's), widths that differ with
            ``projection=False``, an unknown ``num_classes``, or a bad option.

    Example:
        A full fit (as in ``tests/test_distillation.py``)::

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
        weight: float | Mapping[str, float] = 0.1,
        similarity: SimilarityKind | None = None,
        projection: bool = True,
        soft_targets: float = 1.0,
        soft_target_temperature: float | None = None,
        soft_target_layer: str | None = None,
        soft_target_source: SoftTargetSource = "auto",
        student_widths: Mapping[str, int] | None = None,
        num_classes: int | None = None,
        form: AlignmentForm = "auto",
        optimizer: OptimizerCallable = DEFAULT_OPTIMIZER,
        lr_scheduler: LRSchedulerCallable | None = None,
        **deprecated: Any,
    ) -> None:
        if isinstance(knowledge, (str, Path)):
            knowledge = StaticKnowledge.load(knowledge)
        if not isinstance(knowledge, StaticKnowledge):
            raise SemvecTypeError(
                "knowledge must be a StaticKnowledge or the path of a knowledge file, got "
                f"{type(knowledge).__name__}."
            )
        num_classes = self._infer_num_classes(knowledge, student, num_classes)
        super().__init__(student, num_classes, optimizer=optimizer, lr_scheduler=lr_scheduler,
                         **deprecated)
        if not isinstance(layer_map, Mapping):
            raise SemvecTypeError(
                "layer_map must be a dict {student layer: teacher layer}, e.g. "
                f"{{'fc2': 'classifier.2'}}; got {type(layer_map).__name__}."
            )
        self.soft_target_weight = check_number("soft_targets", soft_targets, minimum=0.0)
        if similarity is not None:
            check_similarity_kind(similarity)
        check_choice("form", form, ALIGNMENT_FORMS)
        if not isinstance(projection, bool):
            raise SemvecTypeError(f"projection must be True or False, got {projection!r}.")
        self.form: AlignmentForm = form
        self.use_projection = projection
        weights = self._per_pair_weights(weight, list(layer_map))
        widths = dict(student_widths or {})
        unknown_widths = [name for name in widths if name not in layer_map]
        if unknown_widths:
            raise SemvecValueError(
                f"student_widths names layers {unknown_widths} that are not keys of layer_map "
                f"({list(layer_map)})."
            )

        self.projections = nn.ModuleDict()
        self._pairs: list[_StaticPair] = []
        self._teacher_buffers: dict[str, str] = {}  # teacher layer -> buffer name
        self._keys_of_0_1: dict[str, str] = {}  # 0.1's state-dict key -> this one, where they differ
        taken_buffers: set[str] = set()
        taken_projections: set[str] = set()
        for student_layer, teacher_layer in layer_map.items():
            module = exact_layer(student, student_layer, "student", "layer_map")
            if not isinstance(teacher_layer, str) or teacher_layer not in knowledge:
                raise SemvecValueError(
                    f"layer_map: the knowledge has no teacher layer {teacher_layer!r} (paired "
                    f"with student layer {student_layer!r}); its layers are "
                    f"{knowledge.layer_names}."
                )
            teacher = knowledge[teacher_layer]
            if not teacher.learned:
                raise SemvecValueError(
                    f"layer_map: teacher layer {teacher_layer!r} (paired with student layer "
                    f"{student_layer!r}) learned nothing (learned=False in the knowledge: a "
                    "constant output or one neuron), so its vectors are a random start, not "
                    "knowledge. Pair the student layer with another teacher layer."
                )
            if teacher_layer not in self._teacher_buffers:
                buffer = f"teacher_vectors_{module_dict_key(teacher_layer)}"
                self._rename_of_0_1(_key_of_0_1(f"teacher_vectors_{teacher_layer}", taken_buffers), buffer)
                self.register_buffer(buffer, teacher.vectors.clone(), persistent=True)
                self._teacher_buffers[teacher_layer] = buffer
            width = widths.get(student_layer)
            if width is not None:
                check_int(f"student_widths[{student_layer!r}]", width, 1)
            else:
                width = _module_width(module)
            projection_key = None
            if width is None and projection:
                raise SemvecValueError(
                    f"Cannot tell how many neurons student layer {student_layer!r} "
                    f"({type(module).__name__}) has, which the projection to the teacher's "
                    f"{teacher.num_neurons} needs: pass student_widths={{{student_layer!r}: N}}, "
                    "or pair a layer with out_features/out_channels (e.g. the Linear or Conv "
                    "before it)."
                )
            if width is not None and width != teacher.num_neurons:
                if not projection:
                    raise SemvecValueError(
                        f"Student layer {student_layer!r} has {width} neurons but teacher layer "
                        f"{teacher_layer!r} has {teacher.num_neurons}: set projection=True to "
                        "learn a linear map between them, or pair layers of the same width."
                    )
                projection_key = module_dict_key(student_layer)
                self._rename_of_0_1(f"projections.{_key_of_0_1(student_layer, taken_projections)}.weight",
                                    f"projections.{projection_key}.weight")
                self.projections[projection_key] = nn.Linear(width, teacher.num_neurons, bias=False)
            self._pairs.append(
                _StaticPair(
                    student_layer=student_layer,
                    teacher_layer=teacher_layer,
                    buffer=self._teacher_buffers[teacher_layer],
                    weight=weights[student_layer],
                    similarity=similarity or teacher.similarity,  # type: ignore[arg-type]  # the file's str, checked on load
                    readout=NeuronReadout(teacher.reduction, teacher.neuron_dim),  # type: ignore[arg-type]  # checked on load
                    student_width=width,
                    teacher_width=teacher.num_neurons,
                    projection=projection_key,
                )
            )
            # Read at hook time (a copy), so later in-place ops on the output cannot reach it.
            read = functools.partial(self._pairs[-1].readout.read, layer=student_layer,
                                     detach=False, copy=True)
            self.capture_layer(module, f"student:{student_layer}", read)

        self.soft_target_layer: str | None = None
        self.soft_target_source: str | None = None
        self.soft_target_temperature: float | None = None
        plan = plan_soft_targets(knowledge, layer_map, soft_target_layer, self.num_classes,
                                 self.soft_target_weight, soft_target_source, soft_target_temperature)
        if plan.note:
            rank_zero_warn(plan.note)
        if plan.probs is not None:
            self.soft_target_layer, self.soft_target_source = plan.layer, plan.source
            self.soft_target_temperature = plan.temperature
            self.register_buffer("soft_target_probs", plan.probs, persistent=True)
        else:
            self.soft_target_weight = 0.0
        if not self._pairs and self.soft_target_weight == 0:
            raise SemvecValueError(
                "Nothing to distil: layer_map is empty and there are no soft targets "
                f"({plan.note or 'soft_targets is 0'}). Pair at least one student layer with a "
                f"teacher layer (the knowledge has {knowledge.layer_names})."
            )

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
                return self.projections[pair.projection] if pair.projection else None  # type: ignore[return-value]  # ModuleDict of Linear
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
        acts = torch.cat(outputs) if len(outputs) > 1 else outputs[0]  # (M, N_s) float32
        expected = pair.student_width
        if expected is not None and acts.shape[1] != expected:
            raise SemvecValueError(
                f"Student layer {pair.student_layer!r} gave {acts.shape[1]} neurons per sample "
                f"(shape {tuple(acts.shape)}), but {expected} were expected; pass "
                "student_widths to say how many it has."
            )
        if pair.projection is not None:
            # The map is part of the float32 similarity computation, not of the autocast model.
            with torch.autocast(acts.device.type, enabled=False):
                acts = self.projections[pair.projection](acts)
        elif acts.shape[1] != pair.teacher_width:
            raise SemvecValueError(
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

    def _rename_of_0_1(self, old: str, new: str) -> None:
        if old != new:
            self._keys_of_0_1[old] = new

    @override
    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # 0.1 escaped layer names lossily (dots to "_"); its checkpoints load under today's keys
        for old, new in self._keys_of_0_1.items():
            if prefix + old in state_dict and prefix + new not in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _soft_target_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        probs: Tensor = self.soft_target_probs  # type: ignore[assignment]  # a registered buffer
        soft = probs[targets]
        log_student = F.log_softmax(logits.float(), dim=1)
        return F.kl_div(log_student, soft, reduction="batchmean")

    # ------------------------------------------------------------------ validation helpers
    @staticmethod
    def _infer_num_classes(knowledge: StaticKnowledge, student: Any, num_classes: int | None) -> int:
        """``num_classes`` if given, else the knowledge's class names or class statistics, else
        the width of the student's last layer (its output)."""
        names = knowledge.class_names
        if num_classes is not None:
            if names and len(names) != num_classes:
                raise SemvecValueError(
                    f"num_classes={num_classes} but the knowledge names {len(names)} classes "
                    f"({names[:5]}...)."
                )
            return num_classes
        counts = {k.num_classes for k in knowledge.layers.values() if k.num_classes is not None}
        known = len(names) if names else (counts.pop() if len(counts) == 1 else None)
        output = _output_width(student)
        if known is not None and output is not None and known != output:
            shown = f" {names[:5]}{'...' if len(names) > 5 else ''}" if names else ""
            raise SemvecValueError(
                f"The knowledge is of a {known}-class teacher{shown} but the student's last layer "
                f"({type(student).__name__}) gives {output} outputs: distill into a student with "
                f"{known} outputs, or use knowledge exported from a teacher of this task.")
        if known is not None:
            return known
        if output is not None:
            return output
        raise SemvecValueError(
            "num_classes is unknown: the knowledge has no class names or class statistics, and "
            f"the student's last layer ({type(student).__name__}) does not say its width; pass "
            "num_classes=..."
        )

    @staticmethod
    def _per_pair_weights(weight: float | Mapping[str, float], names: list[str]) -> dict[str, float]:
        if not isinstance(weight, Mapping):
            value = check_number("weight", weight, minimum=0.0)
            return {name: value for name in names}
        missing = [n for n in names if n not in weight]
        unknown = [n for n in weight if n not in names]
        if missing or unknown:
            raise SemvecValueError(
                f"The weight mapping must name exactly the student layers of layer_map "
                f"{names}; it misses {missing} and names unknown {unknown}."
            )
        return {n: check_number(f"weight[{n!r}]", weight[n], minimum=0.0) for n in names}
