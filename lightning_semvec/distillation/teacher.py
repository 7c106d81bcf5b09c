"""The teacher-run baselines: a frozen teacher runs on every batch (KD, RKD, SP, CC, PKT).

The methods: ``docs/method.md#baselines-that-need-the-teacher-on-every-batch``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from typing_extensions import override

from lightning_semvec._utils.checks import check_choice, check_number
from lightning_semvec.distillation.capture import exact_layer
from lightning_semvec.distillation.student import DistillationTerm, StudentModule
from lightning_semvec.errors import SemvecTypeError, SemvecValueError
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
from lightning_semvec.models.optimizers import DEFAULT_OPTIMIZER

__all__ = ["CC_WEIGHT", "DEFAULT_TEACHER_WEIGHTS", "TeacherDistillationModule", "TeacherMethod"]

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
_TEACHER_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "rkd": rkd_loss, "sp": sp_loss, "cc": cc_loss, "pkt": pkt_loss,
}


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
        optimizer, lr_scheduler, **deprecated: as in
            :class:`~lightning_semvec.models.ImageClassifier` (default Adam, ``lr=1e-3``).

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
        optimizer: OptimizerCallable = DEFAULT_OPTIMIZER,
        lr_scheduler: LRSchedulerCallable | None = None,
        **deprecated: Any,
    ) -> None:
        super().__init__(student, num_classes, optimizer=optimizer, lr_scheduler=lr_scheduler,
                         **deprecated)
        if not isinstance(teacher, nn.Module):
            raise SemvecTypeError(f"teacher must be an nn.Module, got {type(teacher).__name__}.")
        self.method: TeacherMethod = check_choice("method", method, get_args(TeacherMethod))
        self.temperature = check_number("temperature", temperature, positive=True)
        self.weight = (
            DEFAULT_TEACHER_WEIGHTS[method] if weight is None
            else check_number("weight", weight, minimum=0.0)
        )
        teacher.requires_grad_(False)
        teacher.eval()
        self.teacher = teacher
        self.student_feature_layer = student_feature_layer
        self.teacher_feature_layer = teacher_feature_layer
        if method != "kd":
            if student_feature_layer is None or teacher_feature_layer is None:
                raise SemvecValueError(
                    f"method={method!r} compares penultimate features: pass "
                    "student_feature_layer and teacher_feature_layer (module names relative to "
                    "the student and the teacher)."
                )
            self.capture_layer(
                exact_layer(student, student_feature_layer, "student", "student_feature_layer"),
                "student:features",
            )
            self.capture_layer(
                exact_layer(teacher, teacher_feature_layer, "teacher", "teacher_feature_layer"),
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
