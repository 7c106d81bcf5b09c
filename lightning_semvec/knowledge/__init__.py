"""The portable knowledge: a teacher's semantic vectors plus what is needed to use them.

- :class:`StaticKnowledge` and :class:`LayerKnowledge` (``static_knowledge.py``,
  ``layer_knowledge.py``): the knowledge in memory, and its one document
  (:meth:`StaticKnowledge.to_document` / :meth:`StaticKnowledge.from_document`).
- ``safetensors_file.py``: the knowledge file. Each layer's ``(N, d)`` float32 vectors are the
  tensor ``vectors/<layer name>``, its optional per-neuron statistics
  ``statistics/<layer name>/<statistic>``; the rest of the document is JSON under the
  safetensors header metadata key ``"lightning_semvec"``. Loading only parses that header
  and reads raw buffers: a knowledge file never runs code, so it is safe to load from anyone.
  Pickles (``torch.save`` checkpoints) are refused, never unpickled.
- ``header_checks.py`` and ``document_checks.py``: the checks that make that true for hostile
  files (pipes, absurd lengths, deep or huge JSON, sizes that do not add up) and documents
  (class names against class statistics); every failure is a :class:`KnowledgeFileError`
  naming the file.
"""

from lightning_semvec.knowledge.layer_knowledge import NEURON_STATISTICS, LayerKnowledge
from lightning_semvec.knowledge.safetensors_file import (
    FORMAT_VERSION,
    KNOWLEDGE_SUFFIX,
    METADATA_KEY,
    STATISTICS_PREFIX,
    TENSOR_PREFIX,
    KnowledgeFileError,
    read_knowledge_document,
    write_knowledge_file,
)
from lightning_semvec.knowledge.static_knowledge import (
    KNOWLEDGE_MARKER,
    StaticKnowledge,
)

__all__ = [
    "FORMAT_VERSION",
    "KNOWLEDGE_MARKER",
    "KNOWLEDGE_SUFFIX",
    "METADATA_KEY",
    "NEURON_STATISTICS",
    "STATISTICS_PREFIX",
    "TENSOR_PREFIX",
    "KnowledgeFileError",
    "LayerKnowledge",
    "StaticKnowledge",
    "read_knowledge_document",
    "write_knowledge_file",
]
