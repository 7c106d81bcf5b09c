"""The knowledge file on disk: a safetensors file whose header carries the knowledge document.

Each layer's ``(N, d)`` float32 vectors are the tensor ``vectors/<layer>``; its optional
statistics are ``statistics/<layer>/<name>``. Everything else is the knowledge document
(:meth:`~lightning_semvec.StaticKnowledge.to_document`) with each tensor replaced by its key,
as JSON under the header metadata key ``"lightning_semvec"``. Reading parses that header and
raw buffers only, never a pickle, and checks every entry against the tensor it names before
anything is loaded (the header itself is checked in
:mod:`~lightning_semvec.knowledge.header_checks`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
from torch import Tensor

import lightning_semvec
from lightning_semvec._utils.checks import is_int
from lightning_semvec._utils.files import temporary_sibling
from lightning_semvec.capture.readout import REDUCTIONS
from lightning_semvec.errors import SemvecFileNotFoundError, SemvecWriteError
from lightning_semvec.functional.similarity import SIMILARITY_KINDS
from lightning_semvec.knowledge.header_checks import (
    KnowledgeFileError,
    parse_json,
    read_header,
    short,
    short_text,
)
from lightning_semvec.knowledge.layer_knowledge import (
    MAX_NEURON_DIM,
    NEURON_STATISTICS,
    neuron_dim_is_valid,
)

__all__ = [
    "FORMAT_VERSION",
    "KNOWLEDGE_SUFFIX",
    "METADATA_KEY",
    "STATISTICS_PREFIX",
    "TENSOR_PREFIX",
    "KnowledgeFileError",
    "read_knowledge_document",
    "write_knowledge_file",
]

#: Version of the knowledge file layout this module writes and the newest it can read.
#: Version 2 adds optional per-neuron statistics and the document marker; version 1 files load.
FORMAT_VERSION = 2
#: The suggested file name ending, e.g. ``resnet32x4.semvec.safetensors``.
KNOWLEDGE_SUFFIX = ".semvec.safetensors"
#: The safetensors header metadata key holding our JSON document.
METADATA_KEY = "lightning_semvec"
#: Tensor keys of the vectors are ``TENSOR_PREFIX + layer name``.
TENSOR_PREFIX = "vectors/"
#: Tensor keys of the statistics are ``STATISTICS_PREFIX + layer name + "/" + statistic``.
STATISTICS_PREFIX = "statistics/"

_SAFETENSORS_DTYPES = {"F32": "float32", "BOOL": "bool", "I64": "int64", "U8": "uint8"}
EXPORT_HINT = (
    "Write knowledge files with `semvec export` or SemanticVectorCallback.export_knowledge(), "
    "or from tensors with StaticKnowledge.from_vectors(...).save(path)."
)


def write_knowledge_file(document: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a knowledge document (tensors inside) to ``path``, atomically.

    The file is first written in full to a temporary file next to ``path`` and then renamed
    over it, so an interrupted or failed save leaves any existing file untouched.
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise SemvecFileNotFoundError(
            f"Cannot save knowledge to {str(path)!r}: the folder {str(folder)!r} does not "
            "exist. Create it first."
        )
    tensors: dict[str, Tensor] = {}
    entries = []
    for layer in document["layers"]:
        entry = {k: v for k, v in layer.items() if k not in ("vectors", "statistics")}
        entry["tensor"] = TENSOR_PREFIX + layer["name"]
        tensors[entry["tensor"]] = layer["vectors"]
        if layer.get("statistics"):
            entry["statistics"] = {}
            for key, value in layer["statistics"].items():
                tensor_key = f"{STATISTICS_PREFIX}{layer['name']}/{key}"
                entry["statistics"][key] = tensor_key
                tensors[tensor_key] = value
        entries.append(entry)
    header_document = {**document, "layers": entries}
    # One metadata key only: safetensors writes the metadata in hash-map order, so a second
    # key would make the bytes of identical saves differ.
    data = safetensors.torch.save(tensors, metadata={METADATA_KEY: json.dumps(header_document)})
    tmp = temporary_sibling(folder / path.name)
    try:
        # os.open with 0o666 honours the umask, unlike a temporary file (always 0600):
        # a knowledge file is meant to be shared.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise SemvecWriteError(
            f"Cannot write {path}: {err.strerror or err} (a full or read-only disk?); any file "
            "that was there is unchanged: free some space or write elsewhere.") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_knowledge_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The knowledge document of a file, with its tensors loaded in place of their keys.

    Raises:
        FileNotFoundError: no file at ``path``.
        KnowledgeFileError: not a regular file (a pipe, a directory), not a safetensors file
            (a pickle, say), truncated, a malformed or oversized header, no lightning_semvec
            metadata, a newer or unknown format version, or metadata and tensors that
            disagree.
    """
    path = Path(path)
    header = read_header(path)
    document = _read_document(path, header)
    wanted = _check_layer_entries(path, document, header)
    try:
        with safetensors.safe_open(str(path), framework="pt", device="cpu") as handle:
            loaded = {key: handle.get_tensor(key) for key in wanted}
    except safetensors.SafetensorError as err:
        raise KnowledgeFileError(
            f"{str(path)!r} is not a readable safetensors file: {err}. The file may be "
            f"damaged; export the knowledge again. {EXPORT_HINT}"
        ) from err
    for entry in document["layers"]:
        entry["vectors"] = loaded[entry.pop("tensor")]
        entry["statistics"] = {k: loaded[v] for k, v in (entry.get("statistics") or {}).items()}
    return document


def _read_document(path: Path, header: dict[str, Any]) -> dict[str, Any]:
    """Our JSON document from the header metadata, with its format version checked."""
    metadata = header.get("__metadata__") or {}
    if METADATA_KEY not in metadata:
        tensors = [k for k in header if k != "__metadata__"]
        raise KnowledgeFileError(
            f"{str(path)!r} is a safetensors file without lightning_semvec metadata, so it is "
            f"not a knowledge file (tensors: {short(tensors)}). To "
            "turn raw vectors into one, load them with safetensors.torch.load_file and call "
            "StaticKnowledge.from_vectors(vectors, ...).save(path)."
        )
    try:
        document = parse_json(metadata[METADATA_KEY])
    except ValueError as err:
        raise KnowledgeFileError(
            f"{str(path)!r}: the {METADATA_KEY!r} metadata is not valid JSON ({err}). "
            f"{EXPORT_HINT}"
        ) from None
    if not isinstance(document, dict):
        raise KnowledgeFileError(
            f"{str(path)!r}: the {METADATA_KEY!r} metadata is not a JSON object. {EXPORT_HINT}"
        )
    check_format_version(document.get("format_version"), document, str(path))
    return document


def check_format_version(version: Any, document: dict[str, Any], source: str) -> None:
    """Refuse an invalid or newer knowledge format version, saying what to do."""
    if not is_int(version) or version < 1:
        raise KnowledgeFileError(
            f"{source!r} has an invalid knowledge format version {short(version)}; expected a "
            f"positive int (this lightning_semvec reads versions 1 to {FORMAT_VERSION}). "
            f"{EXPORT_HINT}"
        )
    if version > FORMAT_VERSION:
        raise KnowledgeFileError(
            f"{source!r} uses knowledge format version {short(version)}, written by "
            f"lightning_semvec {short(document.get('package_version', '(unknown)'))}; this "
            f"lightning_semvec {lightning_semvec.__version__} reads versions up to "
            f"{FORMAT_VERSION}. Upgrade lightning_semvec (pip install -U lightning-semvec)."
        )


def _check_layer_entries(
    path: Path, document: dict[str, Any], header: dict[str, Any]
) -> list[str]:
    """Check every layer entry against the tensors it names; returns the keys to load."""

    def fail(problem: str) -> KnowledgeFileError:
        return KnowledgeFileError(
            f"{str(path)!r}: {problem}. The metadata and tensors disagree, so the file was "
            f"edited or damaged; export the knowledge again. {EXPORT_HINT}"
        )

    def tensor_info(key: str, what: str) -> dict[str, Any]:
        info = header.get(key) if isinstance(key, str) else None
        if not isinstance(info, dict) or key == "__metadata__":
            raise fail(f"{what} is in the metadata but the file has no tensor {short(key)}")
        wanted.append(key)
        return info

    entries = document.get("layers")
    if not isinstance(entries, list) or not entries:
        raise fail("the metadata lists no layers")
    wanted: list[str] = []
    seen_names: set[str] = set()
    for entry in entries:
        if not isinstance(entry, dict):
            raise fail(f"a layer entry is not a JSON object: {short(entry)}")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise fail(f"a layer entry has no valid name: {short(entry)}")
        if name in seen_names:
            raise fail(f"layer {short(name)} is listed twice")
        seen_names.add(name)
        # Choices first: an unknown similarity is most likely a file from a newer version.
        for option, choices in (("similarity", SIMILARITY_KINDS), ("reduction", REDUCTIONS)):
            if entry.get(option) not in choices:
                raise KnowledgeFileError(
                    f"{str(path)!r}: layer {short(name)} has unknown {option} "
                    f"{short(entry.get(option))}; this lightning_semvec "
                    f"{lightning_semvec.__version__} knows {list(choices)}. If the file comes "
                    "from a newer lightning_semvec, upgrade; otherwise export it again."
                )
        neuron_dim = entry.get("neuron_dim")
        if not neuron_dim_is_valid(neuron_dim):
            raise fail(
                f"layer {short(name)} has invalid neuron_dim {short(neuron_dim)} (a non-zero "
                f"integer in [-{MAX_NEURON_DIM}, {MAX_NEURON_DIM}])"
            )
        if not isinstance(entry.get("learned", True), bool):
            raise fail(f"layer {short(name)} has learned={short(entry['learned'])}, not true or false")
        key = entry.setdefault("tensor", TENSOR_PREFIX + name)
        if key != TENSOR_PREFIX + name:
            raise fail(
                f"layer {short(name)} points at tensor {short(key)}, not "
                f"{short(TENSOR_PREFIX + name)}"
            )
        info = tensor_info(key, f"layer {short(name)}")
        if info["dtype"] != "F32":
            raise fail(
                f"tensor {short(key)} has dtype {short_text(info['dtype'])}, but knowledge vectors "
                "are F32 (float32)"
            )
        shape = info["shape"]  # a list of non-negative ints: read_header checked it
        if len(shape) != 2:
            raise fail(
                f"tensor {short(key)} has shape {short(shape)}, but knowledge vectors are 2-D "
                "(N, d)"
            )
        if 0 in shape:
            raise fail(
                f"tensor {short(key)} has shape {shape}, but a layer needs at least one neuron "
                "and one dimension"
            )
        for field_name, actual in (("num_neurons", shape[0]), ("dim", shape[1])):
            # is_int: 3.0 == 3 and True == 1 in Python, but neither is a count.
            if not is_int(entry.get(field_name)) or entry[field_name] != actual:
                raise fail(
                    f"layer {short(name)} has {field_name}={short(entry.get(field_name))} in "
                    f"the metadata but its tensor has shape {shape}"
                )
        statistics = entry.get("statistics") or {}
        if not isinstance(statistics, dict):
            raise fail(f"layer {short(name)} has statistics {short(statistics)}, not a JSON object")
        for stat, stat_key in statistics.items():
            if stat not in NEURON_STATISTICS:
                raise fail(f"layer {short(name)} has an unknown statistic {short(stat)}")
            if stat_key != f"{STATISTICS_PREFIX}{name}/{stat}":
                raise fail(
                    f"statistic {stat!r} of layer {short(name)} points at tensor {short(stat_key)}"
                )
            expected = str(NEURON_STATISTICS[stat][0]).removeprefix("torch.")
            what = f"statistic {stat!r} of layer {short(name)}"
            dtype = tensor_info(stat_key, what)["dtype"]
            if _SAFETENSORS_DTYPES.get(dtype) != expected:
                raise fail(
                    f"tensor {short(stat_key)} has dtype {short_text(dtype)}, expected {expected}"
                )
    # A set: with a list, a header of 100,000s of tensors would take quadratic time here.
    listed = set(wanted)
    orphans = [key for key in header if key != "__metadata__" and key not in listed]
    if orphans:
        raise fail(f"tensors {short(orphans)} have no layer entry in the metadata")
    return wanted
