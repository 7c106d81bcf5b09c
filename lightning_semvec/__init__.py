"""lightning_semvec: semantic vectors for the neurons of any Lightning model."""

from lightning_semvec.analysis_options import AnalysisOptions
from lightning_semvec.callback import SemanticVectorCallback
from lightning_semvec.distillation import (
    StaticDistillationModule,
    StudentModule,
    TeacherDistillationModule,
)
from lightning_semvec.embedding import embed_neurons
from lightning_semvec.errors import SemvecError
from lightning_semvec.joint_embedding import embed_models
from lightning_semvec.knowledge import KnowledgeFileError, StaticKnowledge
from lightning_semvec.layers import resolve_layers
from lightning_semvec.metrics import SemanticFidelity
from lightning_semvec.neurons import NeuronReadout
from lightning_semvec.projector import write_embedding
from lightning_semvec.report import write_report
from lightning_semvec.semantic_vectors import SemanticVectors

__version__ = "0.1.0"

__all__ = [
    "AnalysisOptions",
    "KnowledgeFileError",
    "NeuronReadout",
    "SemanticFidelity",
    "SemanticVectorCallback",
    "SemanticVectors",
    "SemvecError",
    "StaticDistillationModule",
    "StaticKnowledge",
    "StudentModule",
    "TeacherDistillationModule",
    "__version__",
    "embed_models",
    "embed_neurons",
    "resolve_layers",
    "write_embedding",
    "write_report",
]
