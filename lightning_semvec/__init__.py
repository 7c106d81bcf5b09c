"""lightning_semvec: semantic vectors for the neurons of any Lightning model."""

__version__ = "0.1.0"

from lightning_semvec.callback import SemanticVectorCallback
from lightning_semvec.layers import resolve_layers
from lightning_semvec.neurons import NeuronReadout

__all__ = ["NeuronReadout", "SemanticVectorCallback", "__version__", "resolve_layers"]

from lightning_semvec.distillation import (  # noqa: E402
    StaticDistillationModule,
    StudentModule,
    TeacherDistillationModule,
)
from lightning_semvec.knowledge import StaticKnowledge  # noqa: E402

__all__ += [
    "StaticDistillationModule",
    "StaticKnowledge",
    "StudentModule",
    "TeacherDistillationModule",
]

from lightning_semvec.projector import write_embedding  # noqa: E402
from lightning_semvec.report import write_report  # noqa: E402

__all__ += ["write_embedding", "write_report"]
