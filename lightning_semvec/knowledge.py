"""The portable knowledge file: a teacher's semantic vectors plus what is needed to use them.

A knowledge file is a `safetensors <https://huggingface.co/docs/safetensors>`_ file. Each
layer's ``(N, d)`` float32 vectors are stored under the tensor key ``vectors/<layer name>``;
everything else (per-layer options, the teacher's class, the class names, versions) is one
JSON document under the key ``"lightning_semvec"`` of the safetensors header metadata.
Loading only parses that header and reads raw float32 buffers: a knowledge file never runs
code, so it is safe to load from anyone. Pickles (``torch.save`` checkpoints) are refused,
never unpickled.
"""

from __future__ import annotations

import json
import os
import secrets
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import safetensors
import safetensors.torch
import torch
from torch import Tensor

import lightning_semvec
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.functional.similarity import SIMILARITY_KINDS, semantic_similarity
from lightning_semvec.neurons import REDUCTIONS

__all__ = [
    "FORMAT_VERSION",
    "KNOWLEDGE_SUFFIX",
    "KnowledgeFileError",
    "LayerKnowledge",
    "METADATA_KEY",
    "StaticKnowledge",
    "TENSOR_PREFIX",
]

#: Version of the knowledge file layout this module writes and the newest it can read.
FORMAT_VERSION = 1
#: The suggested file name ending, e.g. ``resnet32x4.semvec.safetensors``.
KNOWLEDGE_SUFFIX = ".semvec.safetensors"
#: The safetensors header metadata key holding our JSON document.
METADATA_KEY = "lightning_semvec"
#: Tensor keys are ``TENSOR_PREFIX + layer name``.
TENSOR_PREFIX = "vectors/"

# safetensors refuses headers above 100 MB; a larger length means this is not a safetensors file.
_MAX_HEADER_BYTES = 100_000_000
# How a torch checkpoint begins: a zip archive (torch.save since 1.6) or a raw pickle stream.
_PICKLE_MAGICS = (b"PK\x03\x04", b"\x80")
_EXPORT_HINT = (
    "Write knowledge files with `semvec export` or SemanticVectorCallback.export_knowledge(), "
    "or from tensors with StaticKnowledge.from_vectors(...).save(path)."
)

T = TypeVar("T")


class KnowledgeFileError(SemvecValueError):
    """A file is not a valid knowledge file; the message says what is wrong and what to do."""


class _KnowledgeSource(Protocol):
    """What :meth:`StaticKnowledge.from_callback` reads from a ``SemanticVectorCallback``."""

    @property
    def semantic_vectors(self) -> Mapping[str, Tensor]: ...

    @property
    def similarity(self) -> str: ...

    @property
    def readouts(self) -> Mapping[str, Any]: ...

    @property
    def source_model(self) -> str | None: ...

    @property
    def training_steps(self) -> int: ...

    @property
    def class_names(self) -> list[str] | None: ...


@dataclass(frozen=True, eq=False)
class LayerKnowledge:
    """The semantic vectors of one layer's neurons and how that layer was read.

    Args:
        name: the layer's dotted module name in the teacher (e.g. ``"fc"``).
        vectors: ``(N, d)`` floating tensor, one row per neuron. It is stored as a detached,
            contiguous float32 copy on the CPU.
        similarity: the activation similarity the vectors were aligned to,
            ``"pearson"`` or ``"cosine"``.
        reduction: how the layer's output became samples, ``"mean"`` or ``"positions"``.
        neuron_dim: the axis of the layer's output that holds the neurons (``1`` or ``-1``).

    Raises:
        ValueError: on an empty name, a tensor that is not 2-D with at least one neuron and
            one dimension, non-finite values, or an unknown similarity or reduction.
        TypeError: on a non-tensor or non-floating ``vectors``.
    """

    name: str
    vectors: Tensor
    similarity: str = "pearson"
    reduction: str = "mean"
    neuron_dim: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"A layer name must be a non-empty string, got {self.name!r}.")
        object.__setattr__(self, "vectors", _checked_vectors(self.name, self.vectors))
        _check_choice(self.name, "similarity", self.similarity, SIMILARITY_KINDS)
        _check_choice(self.name, "reduction", self.reduction, REDUCTIONS)
        if not _is_int(self.neuron_dim) or self.neuron_dim == 0:
            raise ValueError(
                f"Layer {self.name!r}: neuron_dim must be a non-zero int (1 for (B, C, ...) "
                f"outputs, -1 for (B, T, N)), got {self.neuron_dim!r}."
            )

    @property
    def num_neurons(self) -> int:
        """N, the number of neurons (rows of :attr:`vectors`)."""
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        """d, the length of each semantic vector (columns of :attr:`vectors`)."""
        return int(self.vectors.shape[1])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LayerKnowledge):
            return NotImplemented
        return (
            self.name == other.name
            and self.similarity == other.similarity
            and self.reduction == other.reduction
            and self.neuron_dim == other.neuron_dim
            and _bit_equal(self.vectors, other.vectors)
        )

    __hash__ = None  # type: ignore[assignment]  # holds a mutable tensor

    def __repr__(self) -> str:
        return (
            f"LayerKnowledge(name={self.name!r}, vectors={self.num_neurons}x{self.dim}, "
            f"similarity={self.similarity!r}, reduction={self.reduction!r}, "
            f"neuron_dim={self.neuron_dim})"
        )


@dataclass(eq=False, repr=False)
class StaticKnowledge:
    """A teacher's static knowledge: semantic vectors per layer, with their metadata.

    This is what replaces the teacher in static distillation (METHOD.md section 5). Build it
    from a trained ``SemanticVectorCallback`` (:meth:`from_callback`) or from tensors
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
        format_version: the file layout version; set by :meth:`load`, leave the default.
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
            raise TypeError(f"source_model must be a string or None, got {self.source_model!r}.")
        if not _is_int(self.training_steps) or self.training_steps < 0:
            raise ValueError(
                f"training_steps must be a non-negative int, got {self.training_steps!r}."
            )
        if self.class_names is not None:
            if isinstance(self.class_names, str) or not all(
                isinstance(c, str) for c in self.class_names
            ):
                raise TypeError(
                    f"class_names must be a list of strings or None, got {self.class_names!r}."
                )
            self.class_names = list(self.class_names)
        extra = {} if self.extra is None else self.extra
        if not isinstance(extra, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in extra.items()
        ):
            raise TypeError(f"extra must map strings to strings, got {self.extra!r}.")
        self.extra = dict(extra)
        if not _is_int(self.format_version) or self.format_version < 1:
            raise ValueError(f"format_version must be a positive int, got {self.format_version!r}.")
        if not isinstance(self.package_version, str):
            raise TypeError(f"package_version must be a string, got {self.package_version!r}.")

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

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        layers = ", ".join(
            f"{k.name!r}: {k.num_neurons} neurons x {k.dim} dims ({k.similarity}, {k.reduction})"
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
        source_model: str | None = None,
        training_steps: int = 0,
        class_names: list[str] | None = None,
        extra: Mapping[str, str] | None = None,
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
            source_model: the teacher model's class qualname.
            training_steps: the teacher's optimizer steps when the vectors were taken.
            class_names: the teacher's class names.
            extra: free-form ``{str: str}`` metadata.

        Returns:
            A new :class:`StaticKnowledge`.

        Raises:
            ValueError: no layers, a tensor that is not 2-D or holds NaN/Inf, an unknown
                option value, or a per-layer mapping that misses or invents a layer.
            TypeError: a non-tensor or non-floating tensor.
        """
        if not isinstance(vectors, Mapping) or not vectors:
            raise ValueError(
                "vectors must be a non-empty mapping {layer name: (N, d) tensor}, "
                f"got {vectors!r}."
            )
        names = list(vectors)
        per_layer_similarity = _per_layer("similarity", similarity, names)
        per_layer_reduction = _per_layer("reduction", reduction, names)
        per_layer_neuron_dim = _per_layer("neuron_dim", neuron_dim, names)
        layers = [
            LayerKnowledge(
                name=name,
                vectors=vectors[name],
                similarity=per_layer_similarity[name],
                reduction=per_layer_reduction[name],
                neuron_dim=per_layer_neuron_dim[name],
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
    def from_callback(
        cls, callback: _KnowledgeSource, *, extra: Mapping[str, str] | None = None
    ) -> StaticKnowledge:
        """Knowledge from a trained ``SemanticVectorCallback``.

        Reads the callback's ``semantic_vectors``, ``similarity``, ``readouts`` (for each
        layer's ``reduction`` and ``neuron_dim``), ``source_model``, ``training_steps`` and
        ``class_names``.

        Args:
            callback: the callback (or any object with those attributes).
            extra: free-form ``{str: str}`` metadata to store alongside.

        Returns:
            A new :class:`StaticKnowledge` holding a CPU float32 copy of the vectors.

        Raises:
            RuntimeError: from the callback, if it has not trained yet.
            ValueError: if a layer with vectors has no readout.
        """
        vectors = dict(callback.semantic_vectors)
        readouts = callback.readouts
        missing = [name for name in vectors if name not in readouts]
        if missing:
            raise ValueError(
                f"The callback has vectors but no readout for layers {missing}; "
                f"its readouts cover {list(readouts)}."
            )
        return cls.from_vectors(
            vectors,
            similarity=callback.similarity,
            reduction={name: readouts[name].reduction for name in vectors},
            neuron_dim={name: readouts[name].neuron_dim for name in vectors},
            source_model=callback.source_model,
            training_steps=callback.training_steps,
            class_names=callback.class_names,
            extra=extra,
        )

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the knowledge to a safetensors file, atomically.

        The file is first written in full to a temporary file next to ``path`` and then
        renamed over it, so an interrupted or failed save leaves any existing file
        untouched. The file records the current :data:`FORMAT_VERSION` and package version.

        Args:
            path: where to write; ``.semvec.safetensors`` is the suggested ending. The
                folder must exist.

        Returns:
            ``path`` as a :class:`~pathlib.Path`.
        """
        path = Path(path)
        folder = path.parent
        if not folder.is_dir():
            raise FileNotFoundError(
                f"Cannot save knowledge to {str(path)!r}: the folder {str(folder)!r} does not "
                "exist. Create it first."
            )
        tensors = {TENSOR_PREFIX + name: layer.vectors for name, layer in self.layers.items()}
        document = {
            "format_version": FORMAT_VERSION,
            "package_version": lightning_semvec.__version__,
            "source_model": self.source_model,
            "training_steps": self.training_steps,
            "class_names": self.class_names,
            "extra": self.extra,
            "layers": [
                {
                    "name": layer.name,
                    "tensor": TENSOR_PREFIX + layer.name,
                    "num_neurons": layer.num_neurons,
                    "dim": layer.dim,
                    "similarity": layer.similarity,
                    "reduction": layer.reduction,
                    "neuron_dim": layer.neuron_dim,
                }
                for layer in self.layers.values()
            ],
        }
        # One metadata key only: safetensors writes the metadata in hash-map order, so a second
        # key would make the bytes of identical saves differ.
        metadata = {METADATA_KEY: json.dumps(document)}
        data = safetensors.torch.save(tensors, metadata=metadata)
        tmp = folder / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            # os.open with 0o666 honours the umask, unlike a temporary file (always 0600):
            # a knowledge file is meant to be shared.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StaticKnowledge:
        """Read a knowledge file written by :meth:`save` (or ``semvec export``).

        Only the safetensors header (JSON) and raw float32 buffers are read; nothing is
        unpickled. Every inconsistency is an error, never silently repaired.

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
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"No knowledge file at {str(path)!r}.")
        header = _read_header(path)
        document = _read_document(path, header)
        entries = _read_layer_entries(path, document, header)
        try:
            with safetensors.safe_open(str(path), framework="pt", device="cpu") as handle:
                loaded = {entry["tensor"]: handle.get_tensor(entry["tensor"]) for entry in entries}
        except safetensors.SafetensorError as err:
            raise KnowledgeFileError(
                f"{str(path)!r} is not a readable safetensors file: {err}. The file may be "
                f"damaged; export the knowledge again. {_EXPORT_HINT}"
            ) from err
        layers = []
        for entry in entries:
            tensor = loaded[entry["tensor"]]
            name = entry["name"]
            if not bool(torch.isfinite(tensor).all()):
                bad = int((~torch.isfinite(tensor)).any(dim=1).sum())
                raise KnowledgeFileError(
                    f"{str(path)!r}: the vectors of layer {name!r} hold NaN or Inf "
                    f"({bad} of {tensor.shape[0]} neurons). The teacher's vector training "
                    "diverged; retrain it (e.g. with a lower vector learning rate) and export "
                    "again."
                )
            layers.append(
                LayerKnowledge(
                    name=name,
                    vectors=tensor,
                    similarity=entry["similarity"],
                    reduction=entry["reduction"],
                    neuron_dim=entry["neuron_dim"],
                )
            )
        try:
            return cls(
                layers={layer.name: layer for layer in layers},
                source_model=document.get("source_model"),
                training_steps=document.get("training_steps", 0),
                class_names=document.get("class_names"),
                extra=document.get("extra") or {},
                format_version=document["format_version"],
                package_version=document.get("package_version", "unknown"),
            )
        except (TypeError, ValueError) as err:
            raise KnowledgeFileError(
                f"{str(path)!r} has invalid lightning_semvec metadata: {err} {_EXPORT_HINT}"
            ) from err


# ---------------------------------------------------------------------- validation helpers


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bit_equal(a: Tensor, b: Tensor) -> bool:
    """Equal shapes, dtypes and bits (so NaN payloads and -0.0 count too)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(torch.equal(a.view(torch.int32), b.view(torch.int32)))


def _check_choice(layer: str, option: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(
            f"Layer {layer!r}: unknown {option} {value!r}; use one of {list(choices)}."
        )


def _checked_vectors(name: str, vectors: object) -> Tensor:
    if not isinstance(vectors, Tensor):
        raise TypeError(
            f"The vectors of layer {name!r} must be a tensor, got {type(vectors).__name__}."
        )
    if not vectors.is_floating_point():
        raise TypeError(
            f"The vectors of layer {name!r} must be floating point, got {vectors.dtype}."
        )
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise ValueError(
            f"The vectors of layer {name!r} must be (neurons, dim) with at least one of each, "
            f"got shape {tuple(vectors.shape)}."
        )
    copy = vectors.detach().to(device="cpu", dtype=torch.float32, copy=True).contiguous()
    if not bool(torch.isfinite(copy).all()):
        raise ValueError(
            f"The vectors of layer {name!r} hold NaN or Inf (after conversion to float32); "
            "the vector training diverged."
        )
    return copy


def _checked_layers(
    layers: Mapping[str, LayerKnowledge] | Iterable[LayerKnowledge],
) -> dict[str, LayerKnowledge]:
    if isinstance(layers, Mapping):
        for key, layer in layers.items():
            if not isinstance(layer, LayerKnowledge):
                raise TypeError(f"layers[{key!r}] must be a LayerKnowledge, got {layer!r}.")
            if key != layer.name:
                raise ValueError(f"layers[{key!r}] holds the knowledge of layer {layer.name!r}.")
        checked = dict(layers)
    else:
        checked = {}
        for layer in layers:
            if not isinstance(layer, LayerKnowledge):
                raise TypeError(f"Expected LayerKnowledge items, got {layer!r}.")
            if layer.name in checked:
                raise ValueError(f"Layer {layer.name!r} appears twice.")
            checked[layer.name] = layer
    if not checked:
        raise ValueError("StaticKnowledge needs at least one layer.")
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
        raise ValueError(
            f"The per-layer {option} mapping {' and '.join(problems)}; it must name exactly "
            f"the layers {names}."
        )
    return {name: value[name] for name in names}


# ---------------------------------------------------------------------- file reading helpers


def _not_safetensors(path: Path, why: str) -> KnowledgeFileError:
    return KnowledgeFileError(
        f"{str(path)!r} is not a safetensors knowledge file ({why}); it may be a pickle/torch "
        "checkpoint (torch.save), which is never unpickled for safety. Export the knowledge "
        "with `semvec export` / SemanticVectorCallback.export_knowledge() and load that file."
    )


def _truncated(path: Path, why: str) -> KnowledgeFileError:
    return KnowledgeFileError(
        f"{str(path)!r} is truncated ({why}): the file was cut short, e.g. by an interrupted "
        "copy or download. Copy or export it again."
    )


def _read_header(path: Path) -> dict[str, Any]:
    """Parse and sanity-check the safetensors header without trusting it."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        # Only a hint for the message: a valid header length may also begin with 0x80.
        looks_pickled = prefix.startswith(_PICKLE_MAGICS)
        if len(prefix) < 8:
            if looks_pickled:
                raise _not_safetensors(path, "it starts like a pickle")
            raise _truncated(path, f"only {size} bytes, less than a safetensors header")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > _MAX_HEADER_BYTES:
            why = "it starts like a pickle or zip archive" if looks_pickled else (
                "its first 8 bytes are not a safetensors header length"
            )
            raise _not_safetensors(path, why)
        if 8 + header_len > size:
            if looks_pickled:
                raise _not_safetensors(
                    path,
                    "it starts like a pickle or zip archive and its header length does not fit "
                    "the file; were it a knowledge file, it would be truncated",
                )
            raise _truncated(
                path, f"the header needs {8 + header_len} bytes but the file has {size}"
            )
        raw = handle.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _not_safetensors(path, "its header is not JSON") from None
    if not isinstance(header, dict):
        raise _not_safetensors(path, "its header is not a JSON object")
    data_end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_int(o) for o in offsets)
        ):
            raise _not_safetensors(path, f"the header entry for {key!r} has no valid data_offsets")
        data_end = max(data_end, offsets[1])
    if 8 + header_len + data_end > size:
        raise _truncated(
            path,
            f"the tensors need {8 + header_len + data_end} bytes but the file has {size}",
        )
    return header


def _read_document(path: Path, header: dict[str, Any]) -> dict[str, Any]:
    """Our JSON document from the header metadata, with its format version checked."""
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or METADATA_KEY not in metadata:
        raise KnowledgeFileError(
            f"{str(path)!r} is a safetensors file without lightning_semvec metadata, so it is "
            f"not a knowledge file (tensors: {[k for k in header if k != '__metadata__']}). To "
            "turn raw vectors into one, load them with safetensors.torch.load_file and call "
            "StaticKnowledge.from_vectors(vectors, ...).save(path)."
        )
    try:
        document = json.loads(metadata[METADATA_KEY])
    except (TypeError, json.JSONDecodeError) as err:
        raise KnowledgeFileError(
            f"{str(path)!r}: the {METADATA_KEY!r} metadata is not valid JSON ({err}). "
            f"{_EXPORT_HINT}"
        ) from None
    if not isinstance(document, dict):
        raise KnowledgeFileError(
            f"{str(path)!r}: the {METADATA_KEY!r} metadata is not a JSON object. {_EXPORT_HINT}"
        )
    version = document.get("format_version")
    if not _is_int(version) or version < 1:
        raise KnowledgeFileError(
            f"{str(path)!r} has an invalid knowledge format version {version!r}; expected a "
            f"positive int (this lightning_semvec reads versions 1 to {FORMAT_VERSION}). "
            f"{_EXPORT_HINT}"
        )
    if version > FORMAT_VERSION:
        raise KnowledgeFileError(
            f"{str(path)!r} uses knowledge format version {version}, written by "
            f"lightning_semvec {document.get('package_version', '(unknown)')}; this "
            f"lightning_semvec {lightning_semvec.__version__} reads versions up to "
            f"{FORMAT_VERSION}. Upgrade lightning_semvec (pip install -U lightning-semvec)."
        )
    return document


_SAFETENSORS_DTYPE_F32 = "F32"


def _read_layer_entries(
    path: Path, document: dict[str, Any], header: dict[str, Any]
) -> list[dict[str, Any]]:
    """The per-layer metadata, each entry checked against the tensor it describes."""

    def fail(problem: str) -> KnowledgeFileError:
        return KnowledgeFileError(
            f"{str(path)!r}: {problem}. The metadata and tensors disagree, so the file was "
            f"edited or damaged; export the knowledge again. {_EXPORT_HINT}"
        )

    entries = document.get("layers")
    if not isinstance(entries, list) or not entries:
        raise fail("the metadata lists no layers")
    tensor_keys = [key for key in header if key != "__metadata__"]
    seen_names: set[str] = set()
    seen_tensors: set[str] = set()
    for entry in entries:
        if not isinstance(entry, dict):
            raise fail(f"a layer entry is not a JSON object: {entry!r}")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise fail(f"a layer entry has no valid name: {entry!r}")
        if name in seen_names:
            raise fail(f"layer {name!r} is listed twice")
        seen_names.add(name)
        # Choices first: an unknown similarity is most likely a file from a newer version.
        for option, choices in (("similarity", SIMILARITY_KINDS), ("reduction", REDUCTIONS)):
            if entry.get(option) not in choices:
                raise KnowledgeFileError(
                    f"{str(path)!r}: layer {name!r} has unknown {option} "
                    f"{entry.get(option)!r}; this lightning_semvec "
                    f"{lightning_semvec.__version__} knows {list(choices)}. If the file comes "
                    "from a newer lightning_semvec, upgrade; otherwise export it again."
                )
        neuron_dim = entry.get("neuron_dim")
        if not _is_int(neuron_dim) or neuron_dim == 0:
            raise fail(f"layer {name!r} has invalid neuron_dim {neuron_dim!r}")
        key = entry.get("tensor", TENSOR_PREFIX + name)
        if key != TENSOR_PREFIX + name:
            raise fail(f"layer {name!r} points at tensor {key!r}, not {TENSOR_PREFIX + name!r}")
        entry["tensor"] = key
        info = header.get(key)
        if not isinstance(info, dict):
            raise fail(f"layer {name!r} is in the metadata but the file has no tensor {key!r}")
        seen_tensors.add(key)
        dtype = info.get("dtype")
        if dtype != _SAFETENSORS_DTYPE_F32:
            raise fail(f"tensor {key!r} has dtype {dtype}, but knowledge vectors are F32 (float32)")
        shape = info.get("shape")
        if not isinstance(shape, list) or len(shape) != 2:
            raise fail(f"tensor {key!r} has shape {shape}, but knowledge vectors are 2-D (N, d)")
        for field_name, actual in (("num_neurons", shape[0]), ("dim", shape[1])):
            claimed = entry.get(field_name)
            if claimed != actual:
                raise fail(
                    f"layer {name!r} has {field_name}={claimed!r} in the metadata but its tensor "
                    f"has shape {shape}"
                )
    orphans = [key for key in tensor_keys if key not in seen_tensors]
    if orphans:
        raise fail(f"tensors {orphans} have no layer entry in the metadata")
    return entries
