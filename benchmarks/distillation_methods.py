"""The students of ``distillation_benchmark.py``: every method and control by name.

Each entry of :func:`method_builders` builds a fresh student module (called after seeding,
so the same seed gives every method the same initialisation). Three families:

- the plain student and the teacher-run baselines (KD, RKD, SP, CC, PKT): the teacher
  runs on every batch;
- static forms, which read only a knowledge file;
- controls with no teacher in them: the same static forms fed knowledge whose teacher
  part is removed (rows shuffled, random vectors, an untrained teacher's knowledge through
  the same export path, class scores shuffled off the true class), uniform label smoothing
  and Tf-KD_reg (Yuan et al., CVPR 2020: a hand-made teacher distribution).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_semvec import (
    StaticDistillationModule,
    StaticKnowledge,
    StudentModule,
    TeacherDistillationModule,
)
from lightning_semvec.distillation.soft_targets import plan_soft_targets
from lightning_semvec.distillation.student import DistillationTerm
from lightning_semvec.models import cosine_schedule

TEACHER_LOGITS = "net.classifier.3"
TEACHER_PENULTIMATE = "net.classifier.2"
STUDENT_LOGITS = "classifier.3"
STUDENT_PENULTIMATE = "classifier.2"

#: Static soft targets from the teacher's mean logits per class: the form the library
#: defaults to (chosen on pilot seeds 100-104, apart from the reported seeds 0-9).
CLASS_SOFT_TARGETS: dict[str, Any] = dict(soft_targets=1.0, soft_target_temperature=8.0,
                                          soft_target_source="class_means")
#: Static soft targets from the logit vectors' semantic similarity (the 0.1 extension).
SIMILARITY_SOFT_TARGETS: dict[str, Any] = dict(soft_targets=1.0, soft_target_temperature=0.5,
                                               soft_target_source="similarity")
#: Tf-KD_reg (Yuan et al. 2020, their code's form): the target ``softmax(p_d / T)`` of
#: ``p_d`` = ``a`` on the true class and ``(1 - a) / (K - 1)`` elsewhere; loss
#: ``(1 - alpha) CE + alpha * m * KLDiv(mean over elements)``.
TFKD: dict[str, float] = dict(correct=0.99, temperature=20.0, alpha=0.1, multiplier=100.0)


class LabelSmoothingStudent(StudentModule):
    """Control: uniform label smoothing (torch's ``cross_entropy(label_smoothing=eps)``)."""

    def __init__(self, student: nn.Module, num_classes: int, smoothing: float, **kwargs: Any) -> None:
        super().__init__(student, num_classes=num_classes, **kwargs)
        self.smoothing = smoothing

    def task_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=self.smoothing)


class TfKDRegStudent(StudentModule):
    """Control: Tf-KD_reg, a teacher-free hand-made distribution (no teacher, no knowledge)."""

    def __init__(self, student: nn.Module, num_classes: int, correct: float, temperature: float, alpha: float,
                 multiplier: float, **kwargs: Any) -> None:
        super().__init__(student, num_classes=num_classes, **kwargs)
        self.correct, self.temperature = correct, temperature
        self.alpha, self.multiplier = alpha, multiplier

    def task_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return (1.0 - self.alpha) * F.cross_entropy(logits, targets)

    def distillation_losses(self, inputs: Tensor, targets: Tensor, logits: Tensor,
                            captured: Any) -> dict[str, DistillationTerm]:
        k = logits.shape[1]
        hand_made = torch.full_like(logits, (1.0 - self.correct) / (k - 1))
        hand_made.scatter_(1, targets[:, None], self.correct)
        soft = torch.softmax(hand_made / self.temperature, dim=1)
        loss = F.kl_div(F.log_softmax(logits.float(), dim=1), soft, reduction="mean")
        return {"tfkd_loss": DistillationTerm(loss, self.alpha * self.multiplier)}


def _replace_layer(knowledge: StaticKnowledge, layer: str, **changes: Any) -> StaticKnowledge:
    layers = dict(knowledge.layers)
    layers[layer] = dataclasses.replace(layers[layer], **changes)
    return dataclasses.replace(knowledge, layers=layers)


def shuffled_rows(knowledge: StaticKnowledge, layer: str, seed: int) -> StaticKnowledge:
    """Control: the layer's vectors with their rows (neurons) permuted."""
    generator = torch.Generator().manual_seed(seed)
    vectors = knowledge.vectors(layer)
    return _replace_layer(knowledge, layer, vectors=vectors[torch.randperm(len(vectors), generator=generator)])


def random_vectors(knowledge: StaticKnowledge, layer: str, seed: int) -> StaticKnowledge:
    """Control: random unit vectors of the same shape."""
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(knowledge.vectors(layer).shape, generator=generator)
    return _replace_layer(knowledge, layer, vectors=F.normalize(vectors, dim=1))


def shuffled_class_means(knowledge: StaticKnowledge, layer: str, seed: int) -> StaticKnowledge:
    """Control: each class's mean logits with the off-class entries permuted.

    The true class keeps its score and the row keeps its spread (so the targets are as soft),
    but which classes resemble which is gone.
    """
    generator = torch.Generator().manual_seed(seed)
    statistics = dict(knowledge.statistics(layer))
    means = statistics["class_means"].clone()
    for row in range(means.shape[0]):
        off = [c for c in range(means.shape[1]) if c != row]
        order = torch.randperm(len(off), generator=generator)
        means[row, off] = means[row, off][order]
    statistics["class_means"] = means
    return _replace_layer(knowledge, layer, statistics=statistics)


def shuffled_both(knowledge: StaticKnowledge, layer: str, seed: int) -> StaticKnowledge:
    """Control of the defaults: the vectors' rows and the class means' off-class entries shuffled."""
    return shuffled_class_means(shuffled_rows(knowledge, layer, seed), layer, seed + 10_000)


def matched_smoothing(knowledge: StaticKnowledge, options: dict[str, Any], num_classes: int) -> float:
    """The label-smoothing ``eps`` with as much mass off the true class as the soft targets.

    ``CE + w * KL(q || p)`` has the gradient of a cross-entropy with the target
    ``(onehot + w q) / (1 + w)``, whose mass off the true class is ``w (1 - q_yy) / (1 + w)``
    (averaged over classes); ``label_smoothing=eps`` leaves ``eps * (K - 1) / K`` off it.
    """
    weight = options["soft_targets"]
    q = plan_soft_targets(knowledge, {}, None, num_classes, weight, options["soft_target_source"],
                          options["soft_target_temperature"]).probs
    assert q is not None, "the knowledge gives no soft targets"
    off = weight * (1.0 - float(q.diagonal().mean())) / (1.0 + weight)
    return off * num_classes / (num_classes - 1)


def method_builders(
    student_net: Callable[[], nn.Module],
    teacher: nn.Module,
    knowledge: StaticKnowledge,
    untrained: StaticKnowledge,
    seed: int,
    lr: float,
    epochs: int,
    num_classes: int = 10,
) -> dict[str, Callable[[], StudentModule]]:
    """Every method by name; ``seed`` picks the controls' permutations and random vectors."""
    common: dict[str, Any] = dict(optimizer=functools.partial(torch.optim.Adam, lr=lr),
                                  lr_scheduler=cosine_schedule(epochs))

    def teacher_run(method: str, **options: Any) -> Callable[[], StudentModule]:
        features = {} if method == "kd" else dict(
            student_feature_layer=STUDENT_PENULTIMATE, teacher_feature_layer="classifier.2")
        return lambda: TeacherDistillationModule(student_net(), teacher, num_classes=num_classes,
                                                 method=method, **features, **options, **common)

    # The penultimate layer is a ReLU, whose width the projection cannot read off the module.
    hidden: dict[str, int] = {STUDENT_PENULTIMATE: student_net().get_submodule("classifier.1").out_features}

    def static(source: Callable[[], StaticKnowledge], layer_map: dict[str, str],
               **options: Any) -> Callable[[], StudentModule]:
        options = {"soft_targets": 0.0, **options}  # every term named: library defaults may change
        widths = {layer: hidden[layer] for layer in layer_map if layer in hidden}
        return lambda: StaticDistillationModule(student_net(), source(), layer_map, student_widths=widths,
                                                **common, **options)

    def teacher_knowledge() -> StaticKnowledge:
        return knowledge

    def untrained_knowledge() -> StaticKnowledge:
        return untrained

    def changed(control: Callable[[StaticKnowledge, str, int], StaticKnowledge]) -> Callable[[], StaticKnowledge]:
        return lambda: control(knowledge, TEACHER_LOGITS, seed)

    logits = {STUDENT_LOGITS: TEACHER_LOGITS}
    penultimate = {STUDENT_PENULTIMATE: TEACHER_PENULTIMATE}
    paper = dict(weight=1.0)
    builders: dict[str, Callable[[], StudentModule]] = {
        "plain": lambda: StudentModule(student_net(), num_classes=num_classes, **common),
        **{m: teacher_run(m) for m in ("kd", "rkd", "sp", "cc", "pkt")},
        # The paper's form: the logit layer's similarity, Pearson, weight 1, and its controls.
        "static": static(teacher_knowledge, logits, **paper),
        "static_shuffled": static(changed(shuffled_rows), logits, **paper),
        "static_random": static(changed(random_vectors), logits, **paper),
        "static_untrained": static(untrained_knowledge, logits, **paper),
        # The paper's form on the penultimate layer (through the learnable projection where the
        # widths differ), alone and beside the logits.
        "static_penultimate": static(teacher_knowledge, penultimate, **paper),
        "static_penultimate_shuffled": static(
            lambda: shuffled_rows(knowledge, TEACHER_PENULTIMATE, seed), penultimate, **paper),
        "static_both": static(teacher_knowledge, {**logits, **penultimate}, **paper),
        "static_w0.1": static(teacher_knowledge, logits, weight=0.1),
        "static_w0.1_untrained": static(untrained_knowledge, logits, weight=0.1),
        # Soft targets from the logit vectors' similarity (the 0.1 extension).
        "soft_targets": static(teacher_knowledge, {}, **SIMILARITY_SOFT_TARGETS),
        "soft_targets_shuffled": static(changed(shuffled_rows), {}, **SIMILARITY_SOFT_TARGETS),
        # Class-level soft targets from the teacher's mean logits per class, and controls.
        "class_soft_targets": static(teacher_knowledge, {}, **CLASS_SOFT_TARGETS),
        "class_soft_targets_shuffled": static(
            changed(shuffled_class_means), {}, **CLASS_SOFT_TARGETS),
        "class_soft_targets_untrained": static(untrained_knowledge, {}, **CLASS_SOFT_TARGETS),
        # The library's defaults (static term at weight 0.1 plus class soft targets), and the
        # same fed the untrained teacher's knowledge or the teacher's with both parts shuffled.
        "class_soft_targets+static_w0.1": static(teacher_knowledge, logits, weight=0.1, **CLASS_SOFT_TARGETS),
        "class_soft_targets+static_w0.1_untrained": static(untrained_knowledge, logits, weight=0.1,
                                                          **CLASS_SOFT_TARGETS),
        "class_soft_targets+static_w0.1_shuffled": static(changed(shuffled_both), logits, weight=0.1,
                                                         **CLASS_SOFT_TARGETS),
        # Teacher-free controls.
        "label_smoothing": lambda: LabelSmoothingStudent(student_net(), num_classes, 0.1, **common),
        "label_smoothing_matched": lambda: LabelSmoothingStudent(
            student_net(), num_classes, matched_smoothing(knowledge, CLASS_SOFT_TARGETS, num_classes), **common),
        "tfkd_reg": lambda: TfKDRegStudent(student_net(), num_classes, **TFKD, **common),
    }
    for w in (3.0, 9.0):  # pilot variants of KD: the weight of its term beside the cross-entropy
        builders[f"kd_w{w:g}"] = teacher_run("kd", weight=w)
    builders["kd_t8"] = teacher_run("kd", temperature=8.0)
    for t in (2.0, 4.0, 16.0):  # pilot variants of the class soft targets' temperature and weight
        builders[f"class_soft_targets_t{t:g}"] = static(
            teacher_knowledge, {}, **{**CLASS_SOFT_TARGETS, "soft_target_temperature": t})
    for w in (0.5, 2.0):
        builders[f"class_soft_targets_w{w:g}"] = static(
            teacher_knowledge, {}, **{**CLASS_SOFT_TARGETS, "soft_targets": w})
    return builders


#: The no-teacher controls each teacher form is compared with (besides the shared ones).
CONTROLS: dict[str, list[str]] = {
    "static": ["static_shuffled", "static_random", "static_untrained"],
    "static_penultimate": ["static_penultimate_shuffled"],
    "static_both": ["static_shuffled", "static_penultimate_shuffled"],
    "static_w0.1": ["static_w0.1_untrained"],
    "soft_targets": ["soft_targets_shuffled"],
    "class_soft_targets": ["class_soft_targets_shuffled", "class_soft_targets_untrained"],
    "class_soft_targets+static_w0.1": ["class_soft_targets+static_w0.1_shuffled",
                                       "class_soft_targets+static_w0.1_untrained",
                                       "class_soft_targets_shuffled", "class_soft_targets_untrained"],
}
SHARED_CONTROLS = ["label_smoothing", "label_smoothing_matched", "tfkd_reg"]
