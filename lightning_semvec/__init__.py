"""lightning_semvec: semantic vectors for the neurons of any Lightning model.

The entry points are here; each folder holds one concept:

.. code-block:: text

    callback/     SemanticVectorCallback: hooks, DDP gather, update, checkpoint state, .ckpt export
    vectors/      SemanticVectors: the learnable vectors of several layers and their step
    capture/      which layers (resolve_layers), what a neuron is (NeuronReadout), the hooks
    analysis/     AnalysisOptions, validation analysis, per-layer metrics, figures, export
    embedding/    embed_neurons and embed_models: post-hoc vectors at the optimum
    knowledge/    StaticKnowledge and the knowledge file (safetensors, safe to load)
    distillation/ StudentModule, StaticDistillationModule, TeacherDistillationModule
    projector/    TensorBoard Embedding Projector files
    report/       the offline HTML report
    functional/   pure tensor functions: similarities, losses, the metrics' math
    metrics/      torchmetrics Metrics built on functional/
    data/, models/  embedded datasets and models for the demo, examples and tests
    cli/          the ``semvec`` command line (library code never imports it)
    _utils/       argument checks, the logging-step rule, once-only warnings, the model guard

Names are imported on first use (PEP 562), so ``import lightning_semvec`` (and ``semvec
--help``) does not import torch or Lightning until something needs them.

Example:
    >>> import lightning_semvec
    >>> lightning_semvec.SemanticVectorCallback.__name__
    'SemanticVectorCallback'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lightning_semvec._graveyard import install_moved_module_aliases

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "AnalysisOptions": "lightning_semvec.analysis.options",
    "KnowledgeFileError": "lightning_semvec.knowledge",
    "NeuronReadout": "lightning_semvec.capture.readout",
    "SemanticFidelity": "lightning_semvec.metrics",
    "SemanticVectorCallback": "lightning_semvec.callback",
    "SemanticVectors": "lightning_semvec.vectors",
    "SemvecError": "lightning_semvec.errors",
    "StaticDistillationModule": "lightning_semvec.distillation",
    "StaticKnowledge": "lightning_semvec.knowledge",
    "StudentModule": "lightning_semvec.distillation",
    "TeacherDistillationModule": "lightning_semvec.distillation",
    "embed_models": "lightning_semvec.embedding",
    "embed_neurons": "lightning_semvec.embedding",
    "resolve_layers": "lightning_semvec.capture.layers",
    "write_embedding": "lightning_semvec.projector",
    "write_report": "lightning_semvec.report",
}

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

if TYPE_CHECKING:
    from lightning_semvec.analysis.options import AnalysisOptions
    from lightning_semvec.callback import SemanticVectorCallback
    from lightning_semvec.capture.layers import resolve_layers
    from lightning_semvec.capture.readout import NeuronReadout
    from lightning_semvec.distillation import (
        StaticDistillationModule,
        StudentModule,
        TeacherDistillationModule,
    )
    from lightning_semvec.embedding import embed_models, embed_neurons
    from lightning_semvec.errors import SemvecError
    from lightning_semvec.knowledge import KnowledgeFileError, StaticKnowledge
    from lightning_semvec.metrics import SemanticFidelity
    from lightning_semvec.projector import write_embedding
    from lightning_semvec.report import write_report
    from lightning_semvec.vectors import SemanticVectors


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_semvec' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


install_moved_module_aliases()
