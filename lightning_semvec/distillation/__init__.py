"""Training a student: alone, from a teacher's static knowledge, or from a teacher run per batch.

- :class:`StudentModule` (``student.py``): an
  :class:`~lightning_semvec.models.ImageClassifier` whose objective adds distillation terms;
  with none it is the plain baseline.
- :class:`StaticDistillationModule` (``static.py``): the activation similarity of chosen
  student layers is pulled towards the semantic similarity of paired teacher layers, read
  from a knowledge file; the teacher is never built, loaded or run
  (``docs/method.md#static-knowledge-distillation``).
- :class:`TeacherDistillationModule` (``teacher.py``): a frozen teacher runs on every batch
  for the relation-based baselines KD, RKD, SP, CC and PKT
  (``docs/method.md#baselines-that-need-the-teacher-on-every-batch``).
- ``capture.py``: the forward hooks that record student (and teacher) layers during a step.

All three are made to be subclassed; :meth:`StudentModule.task_loss`,
:meth:`StudentModule.distillation_losses` and ``configure_optimizers`` are the usual places
to override.
"""

from lightning_semvec.distillation.static import StaticDistillationModule
from lightning_semvec.distillation.student import DistillationTerm, StudentModule
from lightning_semvec.distillation.teacher import (
    DEFAULT_TEACHER_WEIGHTS,
    TeacherDistillationModule,
)

__all__ = [
    "DEFAULT_TEACHER_WEIGHTS",
    "DistillationTerm",
    "StaticDistillationModule",
    "StudentModule",
    "TeacherDistillationModule",
]
