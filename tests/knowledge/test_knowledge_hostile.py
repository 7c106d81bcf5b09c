"""Knowledge files from anyone: every hostile file is a KnowledgeFileError naming it, quickly.

The fuzz test mutates a valid file (header bytes, header length, the JSON of the header and
of the knowledge document); the explicit tests pin one case each, with its message.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lightning_semvec
from lightning_semvec.knowledge import (
    FORMAT_VERSION,
    METADATA_KEY,
    KnowledgeFileError,
    StaticKnowledge,
    header_checks,
)


def base_knowledge() -> StaticKnowledge:
    return StaticKnowledge.from_vectors(
        {"fc": torch.arange(6.0).reshape(3, 2), "conv": torch.ones(2, 4)},
        statistics={"fc": {"class_counts": torch.ones(3), "class_means": torch.ones(3, 3),
                           "dead": torch.tensor([False, True, False])}},
        class_names=["a", "b", "c"],
        source_model="Teacher",
        training_steps=5,
    )


def split_file(data: bytes) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """(safetensors header, knowledge document, tensor bytes) of a file's bytes."""
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    return header, json.loads(header["__metadata__"][METADATA_KEY]), data[8 + header_len :]


def join_file(header: dict[str, Any] | bytes, data: bytes, length: int | None = None) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


@pytest.fixture(scope="module")
def valid_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return base_knowledge().save(tmp_path_factory.mktemp("base") / "k.semvec.safetensors").read_bytes()


def with_document(valid: bytes, edit: Any = None, raw: str | None = None) -> bytes:
    """A file whose document is edited by ``edit(document)``, or replaced by the text ``raw``."""
    header, document, data = split_file(valid)
    if edit is not None:
        edit(document)
    header["__metadata__"][METADATA_KEY] = raw if raw is not None else json.dumps(document)
    return join_file(header, data)


def refused(path: Path, data: bytes, match: str) -> KnowledgeFileError:
    path.write_bytes(data)
    with pytest.raises(KnowledgeFileError, match=match) as info:
        StaticKnowledge.load(path)
    assert repr(str(path)) in str(info.value), "the message names the file"
    assert len(str(info.value)) < 1000, "the message stays short whatever the file holds"
    return info.value


# --------------------------------------------------------------------------- the fuzz test

_WORDS = ["fc", "conv", "vectors/fc", "statistics/fc/dead", "F32", "BOOL", "I64", "F64",
          "pearson", "mean", "positions", "__metadata__", METADATA_KEY, "layers", ""]
_SCALARS = (
    st.none() | st.booleans() | st.sampled_from(_WORDS) | st.text(max_size=6)
    | st.integers(-3, 12) | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
)
_JSON = st.recursive(
    _SCALARS,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(st.sampled_from(_WORDS) | st.text(max_size=4), kids, max_size=4)
    ),
    max_leaves=8,
)
# JSON text that json.dumps cannot make: deep nesting, huge integers, non-standard constants,
# repeated keys, lone surrogates.
_RAW = (
    st.sampled_from([10, 990, 1000, 5000, 100_000]).map(lambda n: "[" * n + "]" * n)
    | st.integers(1, 3000).map(lambda n: '{"a":' * n + "1" + "}" * n)
    | st.integers(19, 6000).map(lambda n: "9" * n)
    | st.sampled_from(["NaN", "-Infinity", "1e400", '{"a": 1, "a": 2}', '"\\ud800"', "-0", "1.0"])
)


@st.composite
def _mutated(draw: st.DrawFn, tree: Any, raws: list[str]) -> Any:
    """``tree`` with one value replaced, deleted or added somewhere (raw JSON text goes into
    ``raws`` and a marker string into the tree)."""
    tree = copy.deepcopy(tree)
    parent, key, node = None, None, tree
    # Below the root mostly (replacing the whole tree is one case among many).
    while isinstance(node, (dict, list)) and node and (parent is None or draw(st.integers(0, 2)) > 0):
        parent, key = node, draw(st.sampled_from(list(node) if isinstance(node, dict) else range(len(node))))
        node = node[key]
    action = draw(st.sampled_from(["set", "raw", "delete", "add"]))
    if action == "raw":
        raws.append(draw(_RAW))
        value: Any = f"@@raw{len(raws) - 1}@@"
    else:
        value = draw(_JSON)
    if action == "add" and isinstance(node, dict):
        node[draw(st.sampled_from(_WORDS) | st.text(max_size=4))] = value
    elif action == "add" and isinstance(node, list):
        node.append(value)
    elif action == "delete" and parent is not None:
        del parent[key]
    elif parent is None:
        tree = value
    else:
        parent[key] = value
    return tree


def _dumps(tree: Any, raws: list[str]) -> str:
    text = json.dumps(tree)
    for i, raw in enumerate(raws):
        text = text.replace(f'"@@raw{i}@@"', raw)
    return text


@st.composite
def hostile_files(draw: st.DrawFn, valid: bytes) -> bytes:
    """The bytes of a valid knowledge file, mutated: its JSON (document and header), its
    header bytes, its header length, its tensor bytes."""
    header, document, data = split_file(valid)
    # Mostly JSON mutations: they reach the checks past the header's first bytes.
    kind = draw(st.sampled_from(["document"] * 4 + ["header"] * 2 + ["bytes", "random"]))
    if kind == "random":
        text = draw(st.binary(max_size=300))
    elif kind == "bytes":
        text_array = bytearray(json.dumps(header).encode())
        for _ in range(draw(st.integers(1, 4))):
            text_array[draw(st.integers(0, len(text_array) - 1))] = draw(st.integers(0, 255))
        text = bytes(text_array)
    else:
        raws: list[str] = []
        if kind == "document":
            for _ in range(draw(st.integers(1, 3))):
                document = draw(_mutated(document, raws))
            header["__metadata__"][METADATA_KEY] = _dumps(document, raws)
            raws = []
        else:
            header = draw(_mutated(header, raws))
        text = _dumps(header, raws).encode()
    # Mostly the true length and tensor bytes, so that the JSON gets parsed and checked.
    length = draw(st.sampled_from(["true"] * 6 + ["near", "any"]))
    if length == "true":
        length = len(text)
    elif length == "near":
        length = max(0, len(text) + draw(st.integers(-9, 9)))
    else:
        length = draw(st.integers(0, 2**64 - 1))
    tail = draw(st.sampled_from(["keep"] * 6 + ["cut", "extend"]))
    if tail == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif tail == "extend":
        data += draw(st.binary(min_size=1, max_size=16))
    return struct.pack("<Q", length) + text + data


@pytest.mark.timeout(120)
@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_any_file_loads_or_is_a_knowledge_file_error(tmp_path: Path, valid_bytes: bytes, data: st.DataObject) -> None:
    path = tmp_path / "fuzzed.semvec.safetensors"
    path.write_bytes(data.draw(hostile_files(valid_bytes)))
    try:
        loaded = StaticKnowledge.load(path)
    except KnowledgeFileError as err:
        assert repr(str(path)) in str(err) or str(path) in str(err)
        return
    # Whatever was accepted is valid knowledge: it saves and loads back the same (save stamps
    # the current format and package versions, whatever the file said).
    again = StaticKnowledge.load(loaded.save(tmp_path / "again.semvec.safetensors"))
    assert again == dataclasses.replace(
        loaded, format_version=FORMAT_VERSION, package_version=lightning_semvec.__version__
    )


# --------------------------------------------------------------------------- one case each


def test_header_nested_100000_deep(tmp_path: Path, valid_bytes: bytes) -> None:
    _, _, data = split_file(valid_bytes)
    deep = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    refused(tmp_path / "k.safetensors", join_file(deep, data), "malformed safetensors header.*nested too deeply")


def test_document_nested_100000_deep(tmp_path: Path, valid_bytes: bytes) -> None:
    raw = '{"format_version": 2, "layers": ' + "[" * 100_000 + "]" * 100_000 + "}"
    refused(tmp_path / "k.safetensors", with_document(valid_bytes, raw=raw), "metadata is not valid JSON.*nested too deeply")


@pytest.mark.parametrize("where", ["header", "document"])
def test_5000_digit_integer(tmp_path: Path, valid_bytes: bytes, where: str) -> None:
    header, document, data = split_file(valid_bytes)
    huge = "9" * 5000
    if where == "header":
        text = json.dumps(header).replace('"data_offsets": [0, ', f'"data_offsets": [{huge}, ', 1)
        assert huge in text
        file = join_file(text.encode(), data)
    else:
        file = with_document(valid_bytes, raw=json.dumps(document).replace('"training_steps": 5', f'"training_steps": {huge}'))
    refused(tmp_path / "k.safetensors", file, "5000-digit integer")


@pytest.mark.parametrize("shape", [(0, 2), (3, 0), (0, 0)])
def test_zero_size_vectors(tmp_path: Path, valid_bytes: bytes, shape: tuple[int, int]) -> None:
    header, document, data = split_file(valid_bytes)
    begin = header["vectors/fc"]["data_offsets"][0]
    header["vectors/fc"].update(shape=list(shape), data_offsets=[begin, begin])
    counts = f'"num_neurons": {shape[0]}, "dim": {shape[1]}'
    header["__metadata__"][METADATA_KEY] = json.dumps(document).replace('"num_neurons": 3, "dim": 2', counts)
    refused(tmp_path / "k.safetensors", join_file(header, data), "at least one neuron and one dimension")


def test_zero_classes_in_the_statistics() -> None:
    with pytest.raises(ValueError, match=r"C=0 classes \(at least one class\)"):
        StaticKnowledge.from_vectors({"fc": torch.ones(3, 2)},
                                     statistics={"fc": {"class_counts": torch.ones(0)}})


@pytest.mark.timeout(10)
def test_named_pipe_is_refused_without_blocking(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe.semvec.safetensors"
    os.mkfifo(pipe)  # opening it for reading would block until someone writes
    with pytest.raises(KnowledgeFileError, match="is a named pipe, not a regular file"):
        StaticKnowledge.load(pipe)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KnowledgeFileError, match="is a directory, not a regular file"):
        StaticKnowledge.load(tmp_path)


def test_class_names_as_a_json_object(tmp_path: Path, valid_bytes: bytes) -> None:
    file = with_document(valid_bytes, lambda d: d.update(class_names={"a": 0, "b": 1, "c": 2}))
    refused(tmp_path / "k.safetensors", file, r"class_names must be a list of strings or None, got dict")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d["layers"][0].update(neuron_dim=10**30), r"a 31-digit integer; no field of a knowledge file has more than 20"),
        (lambda d: d["layers"][0].update(neuron_dim=10**19), r"invalid neuron_dim 10{19} \(a non-zero integer in \[-64, 64\]\)"),
        (lambda d: d["layers"][0].update(num_neurons=3.0), r"num_neurons=3.0 in the metadata"),
        (lambda d: d["layers"][0].update(dim=2.0), r"dim=2.0 in the metadata"),  # 2.0 == 2
        (lambda d: d.update(training_steps=2**63), r"training_steps must be a non-negative int \(below 2\*\*63\)"),
    ],
    ids=["neuron_dim 10**30", "neuron_dim 10**19", "num_neurons 3.0", "dim 2.0", "training_steps 2**63"],
)
def test_absurd_integers(tmp_path: Path, valid_bytes: bytes, edit: Any, match: str) -> None:
    refused(tmp_path / "k.safetensors", with_document(valid_bytes, edit), match)


def test_more_class_names_than_classes(tmp_path: Path, valid_bytes: bytes) -> None:
    file = with_document(valid_bytes, lambda d: d.update(class_names=list("abcdefgh")))
    refused(tmp_path / "k.safetensors", file, "class_names has 8 names but the class statistics of layer 'fc' have C=3")
    with pytest.raises(ValueError, match="class_names has 2 names"):
        StaticKnowledge.from_vectors({"fc": torch.ones(3, 2)}, class_names=["a", "b"],
                                     statistics={"fc": {"class_counts": torch.ones(3)}})


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ('{"format_version": 2, "format_version": 3}', "repeats the key 'format_version'"),
        ('{"format_version": NaN}', "holds NaN, which is not JSON"),
    ],
)
def test_json_that_python_accepts_but_the_standard_does_not(
    tmp_path: Path, valid_bytes: bytes, raw: str, match: str
) -> None:
    refused(tmp_path / "k.safetensors", with_document(valid_bytes, raw=raw), match)


def test_tensor_entry_whose_size_contradicts_its_offsets(tmp_path: Path, valid_bytes: bytes) -> None:
    header, _, data = split_file(valid_bytes)
    header["vectors/fc"]["shape"] = [3, 1]  # 12 bytes, but the offsets span 24
    refused(tmp_path / "k.safetensors", join_file(header, data),
            r"entry for 'vectors/fc' has shape \[3, 1\] of F32 but data_offsets .* span 24 bytes")


def test_oversized_header_is_not_parsed(tmp_path: Path, valid_bytes: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(header_checks, "MAX_HEADER_BYTES", 100)
    refused(tmp_path / "k.safetensors", valid_bytes, r"-byte safetensors header, more than the 100 bytes")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(layers={"fc": 1}), r"'layers' must be a non-empty list"),
        (lambda d: d["layers"].append(torch.ones(2)), "a layer entry must be a mapping"),
        (lambda d: d["layers"][0].pop("similarity"), r"misses \['similarity'\]"),
        (lambda d: d["layers"][0].update(vectors=torch.ones(3, 2, device="meta")), "meta"),
    ],
    ids=["layers as a dict", "a tensor entry", "a missing key", "meta vectors"],
)
def test_from_document_names_its_source_whatever_the_bad_value(edit: Any, match: str) -> None:
    document = base_knowledge().to_document()
    edit(document)
    with pytest.raises(KnowledgeFileError, match=f"the checkpoint has invalid lightning_semvec knowledge: .*{match}"):
        StaticKnowledge.from_document(document, source="the checkpoint")


@pytest.mark.parametrize("value", [0, "false", None, [False]])
def test_a_learned_mark_that_is_not_a_bool(tmp_path: Path, valid_bytes: bytes, value: Any) -> None:
    refused(tmp_path / "k.safetensors", with_document(valid_bytes, lambda d: d["layers"][0].update(learned=value)),
            r"has learned=.*, not true or false")
    with pytest.raises(lightning_semvec.errors.SemvecTypeError, match="learned must be True or False"):
        dataclasses.replace(base_knowledge().layers[base_knowledge().layer_names[0]], learned=value)


def test_a_file_without_the_learned_mark_loads_as_learned(tmp_path: Path, valid_bytes: bytes) -> None:
    def drop(document: dict[str, Any]) -> None:
        for entry in document["layers"]:
            del entry["learned"]

    path = tmp_path / "old.safetensors"
    path.write_bytes(with_document(valid_bytes, drop))
    assert all(layer.learned for layer in StaticKnowledge.load(path).layers.values())
