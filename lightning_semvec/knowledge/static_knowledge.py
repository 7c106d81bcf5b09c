"""``StaticKnowledge``: a teacher's semantic vectors with their metadata, and its one document.

The knowledge document (:meth:`StaticKnowledge.to_document`) is the only mapping between the
knowledge and anything that stores it: the knowledge file writes it to a safetensors header
(:mod:`~lightning_semvec.knowledge.safetensors_file`), and
:class:`~lightning_semvec.SemanticVectorCallback` keeps it in its checkpoint state, where
``semvec export`` finds it by its ``"format"`` marker.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from torch import Tensor

import lightning_semvec
from lightning_semvec._utils.checks import is_int
from lightning_semvec.errors import SemvecTypeError, SemvecValueError
from lightning_semvec.functional.similarity import semantic_similarity
from lightning_semvec.knowledge.document_checks import (
    checked_class_names,
    layer_entries,
)
from lightning_semvec.knowledge.header_checks import short
from lightning_semvec.knowledge.layer_knowledge import LayerKnowledge
from lightning_semvec.knowledge.safetensors_file import (
    EXPORT_HINT,
    FORMAT_VERSION,
    KnowledgeFileError,
    check_format_version,
    read_knowledge_document,
    write_knowledge_file,
)

__all__ = ["KNOWLEDGE_MARKER", "StaticKnowledge"]

#: The ``"format"`` field of every knowledge document: how a checkpoint's callback state or a
#: file's header is recognised as knowledge, whatever class wrote it.
KNOWLEDGE_MARKER = "lightning_semvec.knowledge"

T = TypeVar("T")

# What checking or converting a bad document value can raise: our checks' errors (ValueError,
# TypeError), a missing key or index, and torch's (RuntimeError) for tensors it cannot copy,
# such as meta tensors.
_BAD_VALUE_ERRORS = (
    TypeError, ValueError, LookupError, AttributeError, ArithmeticError, RuntimeError
)


class _KnowledgeSource(Protocol):
    """What :meth:`StaticKnowledge.from_callback` needs: an object that makes knowledge."""

    def to_knowledge(self) -> StaticKnowledge: ...


@dataclass(eq=False, repr=False)
class StaticKnowledge:
    """A teacher's static knowledge: semantic vectors per layer, with their metadata.

    This is what replaces the teacher in static distillation (``docs/method.md``, "Static
    knowledge distillation"). Build it from a trained
    ``SemanticVectorCallback`` (``callback.to_knowledge()``) or from tensors
    (:meth:`from_vectors`), :meth:`save` it to a ``.semvec.safetensors`` file and
    :meth:`load` it anywhere. Loading never unpickles, so files from anyone are safe.

    Args:
        layers: the layers' knowledge, in order: a mapping ``{name: LayerKnowledge}`` (each
            key equal to its layer's ``name``) or an iterable of :class:`LayerKnowledge`.
        source_model: the teacher model's class qualname, if known.
        training_steps: how many optimizer steps the teacher had trained when the vectors
            were taken.
        class_names: the teacher's class names (the logit neurons), if known.
        extra: free-form ``{str: str}`` metadata (e.g. dataset, run id).
        format_version: the document layout version; set by :meth:`load`, leave the default.
        package_version: the ``lightning_semvec`` version that made the knowledge; set by
            :meth:`load`, leave the default.

    Example:
        >>> import tempfile, os, torch
        >>> knowledge = StaticKnowledge.from_vectors(
        ...     {"fc": torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])},
        ...     source_model="ResNet", class_names=["cat", "dog", "emu"])
        >>> knowledge
        StaticKnowledge(source_model='ResNet', training_steps=0, layers={'fc': 3 neurons x 2 dims (pearson, mean)})
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = os.path.join(tmp, "teacher.semvec.safetensors")
        ...     _ = knowledge.save(path)
        ...     loaded = StaticKnowledge.load(path)
        >>> loaded == knowledge
        True
        >>> loaded["fc"].num_neurons, loaded["fc"].dim
        (3, 2)
        >>> loaded.semantic_similarity("fc").round(decimals=4)
        tensor([[1.0000, 0.7071, 0.0000],
                [0.7071, 1.0000, 0.7071],
                [0.0000, 0.7071, 1.0000]])
    """

    layers: dict[str, LayerKnowledge]
    source_model: str | None = None
    training_steps: int = 0
    class_names: list[str] | None = None
    extra: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    package_version: str = field(default_factory=lambda: lightning_semvec.__version__)

    def __post_init__(self) -> None:
        self.layers = _checked_layers(self.layers)
        if self.source_model is not None and not isinstance(self.source_model, str):
            raise SemvecTypeError(
                f"source_model must be a string or None, got {short(self.source_model)}."
            )
        # An int64 bound: the step count goes into checkpoints and logs as one.
        if not is_int(self.training_steps) or not 0 <= self.training_steps < 2**63:
            raise SemvecValueError(
                "training_steps must be a non-negative int (below 2**63), got "
                f"{short(self.training_steps)}."
            )
        self.class_names = checked_class_names(self.class_names, self.layers)
        extra = {} if self.extra is None else self.extra
        if not isinstance(extra, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in extra.items()
        ):
            raise SemvecTypeError(f"extra must map strings to strings, got {short(self.extra)}.")
        self.extra = dict(extra)
        if not is_int(self.format_version) or self.format_version < 1:
            raise SemvecValueError(
                f"format_version must be a positive int, got {short(self.format_version)}."
            )
        if not isinstance(self.package_version, str):
            raise SemvecTypeError(
                f"package_version must be a string, got {short(self.package_version)}."
            )

    # ------------------------------------------------------------------ access

    @property
    def layer_names(self) -> list[str]:
        """The layers' names, in order."""
        return list(self.layers)

    def __getitem__(self, layer: str) -> LayerKnowledge:
        """The knowledge of one layer; ``KeyError`` names the available layers."""
        try:
            return self.layers[layer]
        except KeyError:
            raise KeyError(
                f"No knowledge for layer {layer!r}; this knowledge has layers {self.layer_names}."
            ) from None

    def __contains__(self, layer: object) -> bool:
        return layer in self.layers

    def __iter__(self) -> Iterator[str]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def vectors(self, layer: str) -> Tensor:
        """The ``(N, d)`` float32 CPU semantic vectors of ``layer`` (the stored tensor, not a
        copy: clone it before changing it in place)."""
        return self[layer].vectors

    def statistics(self, layer: str) -> dict[str, Tensor]:
        """The per-neuron statistics stored for ``layer`` (empty when none were stored); see
        :data:`~lightning_semvec.knowledge.NEURON_STATISTICS` for names and shapes."""
        return dict(self[layer].statistics)

    def semantic_similarity(self, layer: str) -> Tensor:
        """The static view of ``layer``: cosine similarity of its vectors.

        Returns:
            ``(N, N)`` float32 tensor with ones on the diagonal (allocates ``N x N``).
        """
        return semantic_similarity(self[layer].vectors)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StaticKnowledge):
            return NotImplemented
        return (
            list(self.layers.items()) == list(other.layers.items())
            and self.source_model == other.source_model
            and self.training_steps == other.training_steps
            and self.class_names == other.class_names
            and self.extra == other.extra
            and self.format_version == other.format_version
            and self.package_version == other.package_version
        )

    __hash__ = None  # type: ignore[assignment]  # unhashable: __eq__ compares mutable fields

    def __repr__(self) -> str:
        layers = ", ".join(
            f"{k.name!r}: {k.num_neurons} neurons x {k.dim} dims ({k.similarity}, {k.reduction}"
            f"{'' if k.learned else ', not learned'})"
            for k in self.layers.values()
        )
        return (
            f"StaticKnowledge(source_model={self.source_model!r}, "
            f"training_steps={self.training_steps}, layers={{{layers}}})"
        )

    # ------------------------------------------------------------------ building

    @classmethod
    def from_vectors(
        cls,
        vectors: Mapping[str, Tensor],
        *,
        similarity: str | Mapping[str, str] = "pearson",
        reduction: str | Mapping[str, str] = "mean",
        neuron_dim: int | Mapping[str, int] = 1,
        statistics: Mapping[str, Mapping[str, Tensor]] | None = None,
        source_model: str | None = None,
        training_steps: int = 0,
        class_names: list[str] | None = None,
        extra: Mapping[str, str] | None = None,
        learned: bool | Mapping[str, bool] = True,
    ) -> StaticKnowledge:
        """Knowledge from ``{layer name: (N, d) vectors}``.

        Each per-layer option is either one value for every layer or a mapping
        ``{layer name: value}`` that names exactly the layers of ``vectors``.

        Args:
            vectors: ``{name: (N, d) floating tensor}``, in the order the layers should keep.
                Tensors are copied to float32 on the CPU.
            similarity: ``"pearson"`` or ``"cosine"``, the similarity the vectors model.
            reduction: ``"mean"`` or ``"positions"``, how the teacher's layer was read.
            neuron_dim: the neuron axis of the teacher's layer output.
            statistics: optional ``{layer: {statistic: tensor}}`` for some of the layers (see
                :class:`LayerKnowledge`).
            source_model: the teacher model's class qualname.
            training_steps: the teacher's optimizer steps when the vectors were taken.
            class_names: the teacher's class names.
            extra: free-form ``{str: str}`` metadata.
            learned: ``False`` for layers whose vectors learned nothing (see
                :class:`LayerKnowledge`).

        Returns:
            A new :class:`StaticKnowledge`.

        Raises:
            ValueError: no layers, a tensor that is not 2-D or holds NaN/Inf, an unknown
                option value, or a per-layer mapping that misses or invents a layer.
            TypeError: a non-tensor or non-floating tensor.
        """
        if not isinstance(vectors, Mapping) or not vectors:
            raise SemvecValueError(
                "vectors must be a non-empty mapping {layer name: (N, d) tensor}, "
                f"got {vectors!r}."
            )
        names = list(vectors)
        per_layer_similarity = _per_layer("similarity", similarity, names)
        per_layer_reduction = _per_layer("reduction", reduction, names)
        per_layer_neuron_dim = _per_layer("neuron_dim", neuron_dim, names)
        per_layer_learned = _per_layer("learned", learned, names)
        statistics = dict(statistics or {})
        unknown = [name for name in statistics if name not in vectors]
        if unknown:
            raise SemvecValueError(
                f"statistics name layers {unknown} that have no vectors; layers: {names}."
            )
        layers = [
            LayerKnowledge(
                name=name,
                vectors=vectors[name],
                similarity=per_layer_similarity[name],
                reduction=per_layer_reduction[name],
                neuron_dim=per_layer_neuron_dim[name],
                statistics=statistics.get(name) or {},
                learned=per_layer_learned[name],
            )
            for name in names
        ]
        return cls(
            layers={layer.name: layer for layer in layers},
            source_model=source_model,
            training_steps=training_steps,
            class_names=class_names,
            extra=dict(extra) if extra is not None else {},
        )

    @classmethod
    def from_callback(cls, callback: _KnowledgeSource) -> StaticKnowledge:
        """Knowledge from a trained ``SemanticVectorCallback``: ``callback.to_knowledge()``.

        Raises:
            RuntimeError: from the callback, if it has not trained yet.
        """
        return callback.to_knowledge()

    # ------------------------------------------------------------------ the document

    def to_document(self) -> dict[str, Any]:
        """The knowledge as one plain document: JSON-like values and CPU tensors.

        This is what the knowledge file stores (its tensors in safetensors, the rest in the
        header) and what the callback's checkpoint state holds. ``"format"`` is
        :data:`KNOWLEDGE_MARKER`, by which a checkpoint's knowledge is found.

        Example:
            >>> import torch
            >>> knowledge = StaticKnowledge.from_vectors({"fc": torch.ones(3, 2)})
            >>> document = knowledge.to_document()
            >>> document["format"], document["layers"][0]["vectors"].shape
            ('lightning_semvec.knowledge', torch.Size([3, 2]))
            >>> StaticKnowledge.from_document(document) == knowledge
            True
        """
        return {
            "format": KNOWLEDGE_MARKER,
            "format_version": FORMAT_VERSION,
            "package_version": self.package_version,
            "source_model": self.source_model,
            "training_steps": self.training_steps,
            "class_names": self.class_names,
            "extra": dict(self.extra),
            "layers": [
                {
                    "name": layer.name,
                    "num_neurons": layer.num_neurons,
                    "dim": layer.dim,
                    "similarity": layer.similarity,
                    "reduction": layer.reduction,
                    "neuron_dim": layer.neuron_dim,
                    "vectors": layer.vectors,
                    "statistics": dict(layer.statistics),
                    "learned": layer.learned,
                }
                for layer in self.layers.values()
            ],
        }

    @classmethod
    def from_document(cls, document: Mapping[str, Any], source: str = "the document") -> StaticKnowledge:
        """The knowledge a :meth:`to_document` document holds.

        Args:
            document: the document, tensors inside (as in a checkpoint, or as
                :func:`~lightning_semvec.knowledge.read_knowledge_document` returns).
            source: where the document came from, for error messages.

        Raises:
            KnowledgeFileError: the document is not knowledge, comes from a newer version, or
                its values are invalid (the message names ``source`` and what is wrong).
        """
        if not isinstance(document, Mapping):
            raise KnowledgeFileError(f"{source} is not a knowledge document (a mapping). {EXPORT_HINT}")
        check_format_version(document.get("format_version"), dict(document), source)
        try:
            layers = [
                LayerKnowledge(
                    name=entry["name"],
                    vectors=entry["vectors"],
                    similarity=entry["similarity"],
                    reduction=entry["reduction"],
                    neuron_dim=entry["neuron_dim"],
                    statistics=entry.get("statistics") or {},
                    learned=entry.get("learned", True),  # older files have no mark
                )
                for entry in layer_entries(document)
            ]
            return cls(
                layers={layer.name: layer for layer in layers},
                source_model=document.get("source_model"),
                training_steps=document.get("training_steps", 0),
                class_names=document.get("class_names"),
                extra=document.get("extra") or {},
                format_version=document["format_version"],
                package_version=document.get("package_version", "unknown"),
            )
        # Whatever a bad value makes the checks or torch raise (a checkpoint's document may
        # hold any object), never a bug's traceback: the message names the source.
        except _BAD_VALUE_ERRORS as err:
            what = f"missing {err}" if type(err) is KeyError else str(err)
            raise KnowledgeFileError(
                f"{source} has invalid lightning_semvec knowledge: {what} {EXPORT_HINT}"
            ) from err

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the knowledge to a safetensors file, atomically.

        The file is first written in full to a temporary file next to ``path`` and then
        renamed over it, so an interrupted or failed save leaves any existing file
        untouched. The file records the current format version and package version.

        Args:
            path: where to write; ``.semvec.safetensors`` is the suggested ending. The
                folder must exist.

        Returns:
            ``path`` as a :class:`~pathlib.Path`.
        """
        document = self.to_document()
        document["package_version"] = lightning_semvec.__version__
        return write_knowledge_file(document, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StaticKnowledge:
        """Read a knowledge file written by :meth:`save` (or ``semvec export``).

        Only the safetensors header (JSON) and raw buffers are read; nothing is unpickled.
        Every inconsistency is an error, never silently repaired. Files of format version 1
        (no statistics) load too.

        Args:
            path: the ``.semvec.safetensors`` file.

        Returns:
            The :class:`StaticKnowledge`, vectors as ``(N, d)`` float32 CPU tensors.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            KnowledgeFileError: if the file is not a safetensors file (e.g. a pickle or a
                ``torch.save`` checkpoint), is truncated, lacks lightning_semvec metadata, has a
                newer or unknown format version, or its metadata and tensors disagree, or the
                vectors hold NaN/Inf.
        """
        document = read_knowledge_document(path)
        for entry in document["layers"]:
            vectors = entry["vectors"]
            if not bool(vectors.isfinite().all()):
                bad = int((~vectors.isfinite()).any(dim=1).sum())
                raise KnowledgeFileError(
                    f"{str(path)!r}: the vectors of layer {entry['name']!r} hold NaN or Inf "
                    f"({bad} of {vectors.shape[0]} neurons). The teacher's vector training "
                    "diverged; retrain it (e.g. with a lower vector learning rate) and export "
                    "again."
                )
        return cls.from_document(document, source=repr(str(path)))


def _checked_layers(
    layers: Mapping[str, LayerKnowledge] | Iterable[LayerKnowledge],
) -> dict[str, LayerKnowledge]:
    if isinstance(layers, Mapping):
        for key, layer in layers.items():
            if not isinstance(layer, LayerKnowledge):
                raise SemvecTypeError(f"layers[{key!r}] must be a LayerKnowledge, got {layer!r}.")
            if key != layer.name:
                raise SemvecValueError(
                    f"layers[{key!r}] holds the knowledge of layer {layer.name!r}."
                )
        checked = dict(layers)
    else:
        checked = {}
        for layer in layers:
            if not isinstance(layer, LayerKnowledge):
                raise SemvecTypeError(f"Expected LayerKnowledge items, got {layer!r}.")
            if layer.name in checked:
                raise SemvecValueError(f"Layer {layer.name!r} appears twice.")
            checked[layer.name] = layer
    if not checked:
        raise SemvecValueError("StaticKnowledge needs at least one layer.")
    return checked


def _per_layer(option: str, value: T | Mapping[str, T], names: list[str]) -> dict[str, T]:
    if not isinstance(value, Mapping):
        return {name: value for name in names}
    missing = [name for name in names if name not in value]
    unknown = [name for name in value if name not in names]
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"misses layers {missing}")
        if unknown:
            problems.append(f"names unknown layers {unknown}")
        raise SemvecValueError(
            f"The per-layer {option} mapping {' and '.join(problems)}; it must name exactly "
            f"the layers {names}."
        )
    return {name: value[name] for name in names}
