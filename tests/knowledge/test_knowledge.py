"""The knowledge file: exact round trips, atomic saves, and a clear error for every bad file."""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import pytest
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lightning_semvec
from lightning_semvec.functional import semantic_similarity
from lightning_semvec.knowledge import (
    FORMAT_VERSION,
    KNOWLEDGE_SUFFIX,
    METADATA_KEY,
    KnowledgeFileError,
    LayerKnowledge,
    StaticKnowledge,
)


def make_knowledge() -> StaticKnowledge:
    generator = torch.Generator().manual_seed(0)
    conv = torch.randn(6, 4, generator=generator)
    conv[0, 0] = -0.0  # the sign of zero must survive
    conv[1, 1] = 1e-45  # and subnormals
    conv[2, 2] = 3.0e38
    return StaticKnowledge.from_vectors(
        {
            "features.3": conv,
            "encoder/block.0": torch.randn(5, 3, generator=generator).double(),
            "fc": torch.randn(10, 8, generator=generator),
        },
        similarity={"features.3": "pearson", "encoder/block.0": "cosine", "fc": "pearson"},
        reduction={"features.3": "positions", "encoder/block.0": "mean", "fc": "mean"},
        neuron_dim={"features.3": 1, "encoder/block.0": -1, "fc": 1},
        source_model="tests.Teacher",
        training_steps=1234,
        class_names=[f"class {i} é" for i in range(10)],
        extra={"dataset": "CIFAR-100", "note": "ünïcode ✓"},
    )


@pytest.fixture
def knowledge() -> StaticKnowledge:
    return make_knowledge()


@pytest.fixture
def good_file(tmp_path: Path, knowledge: StaticKnowledge) -> Path:
    return knowledge.save(tmp_path / f"teacher{KNOWLEDGE_SUFFIX}")


def read_parts(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str], dict]:
    """Tensors, raw header metadata and our JSON document of a knowledge file (for tampering)."""
    tensors = safetensors.torch.load_file(str(path))
    with safetensors.safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
    return tensors, metadata, json.loads(metadata[METADATA_KEY])


def write_parts(path: Path, tensors: dict, metadata: dict | None, document: dict | None = None) -> Path:
    if document is not None:
        metadata = {**(metadata or {}), METADATA_KEY: json.dumps(document)}
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)
    return path


def int_bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32)


# --------------------------------------------------------------------------- round trip


def test_round_trip_preserves_everything_bit_exactly(good_file: Path, knowledge: StaticKnowledge) -> None:
    loaded = StaticKnowledge.load(good_file)
    assert loaded == knowledge
    assert loaded.layer_names == ["features.3", "encoder/block.0", "fc"]
    for name in knowledge.layer_names:
        original, restored = knowledge[name], loaded[name]
        assert restored.vectors.dtype == torch.float32
        assert restored.vectors.device.type == "cpu"
        assert restored.vectors.is_contiguous()
        assert torch.equal(int_bits(restored.vectors), int_bits(original.vectors))
        assert (restored.similarity, restored.reduction, restored.neuron_dim) == (
            original.similarity,
            original.reduction,
            original.neuron_dim,
        )
    assert torch.signbit(loaded.vectors("features.3")[0, 0])
    assert loaded.source_model == "tests.Teacher"
    assert loaded.training_steps == 1234
    assert loaded.class_names == knowledge.class_names
    assert loaded.extra == {"dataset": "CIFAR-100", "note": "ünïcode ✓"}
    assert loaded.format_version == FORMAT_VERSION
    assert loaded.package_version == lightning_semvec.__version__


def test_saving_twice_gives_identical_bytes(tmp_path: Path, knowledge: StaticKnowledge) -> None:
    first = knowledge.save(tmp_path / "a.semvec.safetensors").read_bytes()
    second = StaticKnowledge.load(tmp_path / "a.semvec.safetensors").save(tmp_path / "b").read_bytes()
    assert first == second


def test_file_is_a_plain_safetensors_file_with_documented_layout(good_file: Path) -> None:
    tensors, _metadata, document = read_parts(good_file)
    assert set(tensors) == {"vectors/features.3", "vectors/encoder/block.0", "vectors/fc"}
    assert document["format_version"] == FORMAT_VERSION
    assert [entry["name"] for entry in document["layers"]] == ["features.3", "encoder/block.0", "fc"]
    assert document["layers"][2] == {
        "name": "fc",
        "tensor": "vectors/fc",
        "num_neurons": 10,
        "dim": 8,
        "similarity": "pearson",
        "reduction": "mean",
        "neuron_dim": 1,
        "learned": True,
    }


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_saved_file_honours_the_umask(tmp_path: Path, knowledge: StaticKnowledge) -> None:
    old = os.umask(0o022)
    try:
        path = knowledge.save(tmp_path / "k.semvec.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_header_length_starting_with_pickle_byte_still_loads(tmp_path: Path) -> None:
    # 0x80 opens a pickle, but may as well be the low byte of a valid header length.
    vectors = {"fc": torch.ones(2, 2)}
    for pad in range(0, 264, 8):  # the header is padded to 8 bytes, so this meets every length
        path = StaticKnowledge.from_vectors(vectors, extra={"pad": "x" * pad}).save(tmp_path / "k")
        if path.read_bytes()[0] == 0x80:
            break
    else:  # pragma: no cover
        pytest.fail("no padding gave a header length with low byte 0x80")
    assert StaticKnowledge.load(path).extra["pad"] == "x" * pad


finite_floats = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.text(min_size=1, max_size=20),
    shape=st.tuples(st.integers(1, 5), st.integers(1, 4)),
    data=st.data(),
)
def test_round_trip_property(tmp_path: Path, name: str, shape: tuple[int, int], data: st.DataObject) -> None:
    values = data.draw(st.lists(finite_floats, min_size=shape[0] * shape[1], max_size=shape[0] * shape[1]))
    vectors = torch.tensor(values, dtype=torch.float32).reshape(shape)
    knowledge = StaticKnowledge.from_vectors({name: vectors}, class_names=[name])
    loaded = StaticKnowledge.load(knowledge.save(tmp_path / "prop.semvec.safetensors"))
    assert loaded == knowledge
    assert torch.equal(int_bits(loaded.vectors(name)), int_bits(vectors))


# --------------------------------------------------------------------------- access


def test_access_and_similarity(knowledge: StaticKnowledge) -> None:
    assert len(knowledge) == 3 and "fc" in knowledge and list(knowledge) == knowledge.layer_names
    fc = knowledge["fc"]
    assert isinstance(fc, LayerKnowledge)
    assert (fc.num_neurons, fc.dim) == (10, 8)
    assert knowledge.vectors("fc") is fc.vectors
    sim = knowledge.semantic_similarity("fc")
    assert sim.shape == (10, 10)
    assert torch.equal(sim, semantic_similarity(fc.vectors))


def test_unknown_layer_names_the_available_ones(knowledge: StaticKnowledge) -> None:
    with pytest.raises(KeyError, match=r"'conv9'.*features\.3.*fc"):
        knowledge["conv9"]


def test_repr_summarises_layers(knowledge: StaticKnowledge) -> None:
    text = repr(knowledge)
    assert "tests.Teacher" in text and "1234" in text
    assert "'fc': 10 neurons x 8 dims (pearson, mean)" in text
    assert "'encoder/block.0': 5 neurons x 3 dims (cosine, mean)" in text


# --------------------------------------------------------------------------- building


def test_from_vectors_copies_to_cpu_float32() -> None:
    source = torch.ones(3, 2, dtype=torch.float64, requires_grad=True)
    knowledge = StaticKnowledge.from_vectors({"fc": source})
    with torch.no_grad():
        source.mul_(5)
    stored = knowledge.vectors("fc")
    assert stored.dtype == torch.float32 and not stored.requires_grad
    assert torch.equal(stored, torch.ones(3, 2))
    assert knowledge.extra == {} and knowledge.class_names is None and knowledge.training_steps == 0


@pytest.mark.parametrize(
    ("vectors", "error", "match"),
    [
        ({}, ValueError, "non-empty"),
        ({"fc": torch.ones(4)}, ValueError, r"\(neurons, dim\)"),
        ({"fc": torch.ones(2, 3, 4)}, ValueError, r"\(neurons, dim\)"),
        ({"fc": torch.ones(0, 3)}, ValueError, r"\(neurons, dim\)"),
        ({"fc": torch.ones(2, 3, dtype=torch.int64)}, TypeError, "floating"),
        ({"fc": [[1.0]]}, TypeError, "tensor"),
        ({"fc": torch.tensor([[1.0, float("nan")]])}, ValueError, "NaN or Inf"),
        ({"fc": torch.tensor([[1.0, float("inf")]])}, ValueError, "NaN or Inf"),
        ({"fc": torch.tensor([[1e300]], dtype=torch.float64)}, ValueError, "NaN or Inf"),
        ({"": torch.ones(2, 2)}, ValueError, "name"),
    ],
)
def test_from_vectors_rejects_bad_vectors(vectors: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        StaticKnowledge.from_vectors(vectors)


def test_from_vectors_rejects_bad_options() -> None:
    vectors = {"a": torch.ones(2, 2), "b": torch.ones(3, 2)}
    with pytest.raises(ValueError, match="unknown similarity 'dot'"):
        StaticKnowledge.from_vectors(vectors, similarity="dot")
    with pytest.raises(ValueError, match="unknown reduction"):
        StaticKnowledge.from_vectors(vectors, reduction={"a": "mean", "b": "max"})
    with pytest.raises(ValueError, match=r"misses layers \['b'\]"):
        StaticKnowledge.from_vectors(vectors, similarity={"a": "cosine"})
    with pytest.raises(ValueError, match=r"unknown layers \['c'\]"):
        StaticKnowledge.from_vectors(vectors, neuron_dim={"a": 1, "b": 1, "c": 1})
    with pytest.raises(ValueError, match="neuron_dim"):
        StaticKnowledge.from_vectors(vectors, neuron_dim=0)
    with pytest.raises(ValueError, match="training_steps"):
        StaticKnowledge.from_vectors(vectors, training_steps=-1)
    with pytest.raises(TypeError, match="extra"):
        StaticKnowledge.from_vectors(vectors, extra={"steps": 3})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="class_names"):
        StaticKnowledge.from_vectors(vectors, class_names="cat")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- saving


def test_failed_save_keeps_the_old_file(
    tmp_path: Path, good_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = good_file.read_bytes()

    def broken(*args: object, **kwargs: object) -> bytes:
        raise OSError("disk full")

    other = StaticKnowledge.from_vectors({"x": torch.zeros(2, 2)})
    monkeypatch.setattr(safetensors.torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        other.save(good_file)
    assert good_file.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [good_file.name]


def test_save_interrupted_while_writing_keeps_the_old_file_and_no_temp(
    tmp_path: Path, good_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = good_file.read_bytes()

    def broken(fd: int) -> None:
        raise OSError("I/O error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="I/O error"):
        StaticKnowledge.from_vectors({"x": torch.zeros(2, 2)}).save(good_file)
    assert good_file.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [good_file.name]
    assert StaticKnowledge.load(good_file) == make_knowledge()


def test_save_into_missing_folder(tmp_path: Path, knowledge: StaticKnowledge) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        knowledge.save(tmp_path / "nope" / "k.semvec.safetensors")


# --------------------------------------------------------------------------- bad files


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="No knowledge file"):
        StaticKnowledge.load(tmp_path / "absent.semvec.safetensors")


@pytest.mark.parametrize("kind", ["torch_zip", "torch_legacy", "pickle_small", "pickle_big"])
def test_pickles_are_refused_never_unpickled(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / f"{kind}{KNOWLEDGE_SUFFIX}"
    payload = {"fc": torch.randn(4, 3)}
    if kind == "torch_zip":
        torch.save(payload, path)
    elif kind == "torch_legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    elif kind == "pickle_small":
        path.write_bytes(pickle.dumps(1, protocol=5))
    else:
        path.write_bytes(pickle.dumps(list(range(100)), protocol=4))

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a knowledge file must never be unpickled")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    with pytest.raises(KnowledgeFileError, match="not a safetensors knowledge file") as info:
        StaticKnowledge.load(path)
    assert "pickle" in str(info.value) and "semvec export" in str(info.value)


def test_text_file_is_not_a_knowledge_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.semvec.safetensors"
    path.write_text("these are not the vectors you are looking for\n")
    with pytest.raises(KnowledgeFileError, match="not a safetensors knowledge file"):
        StaticKnowledge.load(path)


def test_unparseable_header_is_not_a_knowledge_file(tmp_path: Path) -> None:
    path = tmp_path / "k.semvec.safetensors"
    path.write_bytes((10).to_bytes(8, "little") + b"not json!!")
    with pytest.raises(KnowledgeFileError, match="header is not JSON"):
        StaticKnowledge.load(path)


@pytest.mark.parametrize("keep", [0, 5, 8, 40, "header", "data"])
def test_truncated_file(tmp_path: Path, good_file: Path, keep: int | str) -> None:
    data = good_file.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    cut = {"header": header_end - 1, "data": len(data) - 3}.get(keep, keep)  # type: ignore[arg-type]
    good_file.write_bytes(data[:cut])
    with pytest.raises(KnowledgeFileError, match="truncated"):
        StaticKnowledge.load(good_file)


def test_trailing_garbage_is_rejected(good_file: Path) -> None:
    good_file.write_bytes(good_file.read_bytes() + b"junk")
    with pytest.raises(KnowledgeFileError, match="not a readable safetensors file"):
        StaticKnowledge.load(good_file)


def test_safetensors_without_our_metadata(tmp_path: Path) -> None:
    path = write_parts(tmp_path / "plain.safetensors", {"fc": torch.ones(3, 2)}, {"format": "pt"})
    with pytest.raises(KnowledgeFileError, match="without lightning_semvec metadata") as info:
        StaticKnowledge.load(path)
    assert "from_vectors" in str(info.value)
    path = write_parts(tmp_path / "bare.safetensors", {"fc": torch.ones(3, 2)}, None)
    with pytest.raises(KnowledgeFileError, match="without lightning_semvec metadata"):
        StaticKnowledge.load(path)


def test_metadata_that_is_not_json(good_file: Path) -> None:
    tensors, metadata, _ = read_parts(good_file)
    write_parts(good_file, tensors, {**metadata, METADATA_KEY: "{oops"})
    with pytest.raises(KnowledgeFileError, match="not valid JSON"):
        StaticKnowledge.load(good_file)


def test_newer_format_version_asks_to_upgrade(good_file: Path) -> None:
    tensors, metadata, document = read_parts(good_file)
    document.update(format_version=FORMAT_VERSION + 1, package_version="9.0.0")
    write_parts(good_file, tensors, metadata, document)
    with pytest.raises(KnowledgeFileError, match=f"format version {FORMAT_VERSION + 1}.*9.0.0.*Upgrade lightning_semvec"):
        StaticKnowledge.load(good_file)


@pytest.mark.parametrize("version", [0, -1, "1", 1.0, True, None])
def test_invalid_format_version(good_file: Path, version: object) -> None:
    tensors, metadata, document = read_parts(good_file)
    document["format_version"] = version
    write_parts(good_file, tensors, metadata, document)
    with pytest.raises(KnowledgeFileError, match="invalid knowledge format version"):
        StaticKnowledge.load(good_file)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_or_inf_vectors(good_file: Path, bad: float) -> None:
    tensors, metadata, document = read_parts(good_file)
    tensors["vectors/fc"][3, 1] = bad
    write_parts(good_file, tensors, metadata, document)
    with pytest.raises(KnowledgeFileError, match=r"layer 'fc' hold NaN or Inf \(1 of 10 neurons\)"):
        StaticKnowledge.load(good_file)


def tamper(path: Path, edit) -> None:
    tensors, metadata, document = read_parts(path)
    edit(tensors, document)
    write_parts(path, tensors, metadata, document)


def fc_entry(document: dict) -> dict:
    return next(entry for entry in document["layers"] if entry["name"] == "fc")


CONTRADICTIONS = {
    "neuron count": (
        lambda t, d: fc_entry(d).update(num_neurons=11),
        r"num_neurons=11 in the metadata but its tensor has shape \[10, 8\]",
    ),
    "dim": (lambda t, d: fc_entry(d).update(dim=4), r"dim=4 in the metadata"),
    "layer without tensor": (
        lambda t, d: t.pop("vectors/fc"),
        "layer 'fc' is in the metadata but the file has no tensor 'vectors/fc'",
    ),
    "tensor without layer": (
        lambda t, d: d["layers"].remove(fc_entry(d)),
        r"tensors \['vectors/fc'\] have no layer entry",
    ),
    "stray tensor": (
        lambda t, d: t.update(optimizer=torch.zeros(3)),
        r"tensors \['optimizer'\] have no layer entry",
    ),
    "float64": (
        lambda t, d: t.update({"vectors/fc": t["vectors/fc"].double()}),
        "dtype F64, but knowledge vectors are F32",
    ),
    "float16": (
        lambda t, d: t.update({"vectors/fc": t["vectors/fc"].half()}),
        "dtype F16",
    ),
    "3-D": (
        lambda t, d: t.update({"vectors/fc": t["vectors/fc"].reshape(10, 2, 4)}),
        r"shape \[10, 2, 4\], but knowledge vectors are 2-D",
    ),
    "1-D": (
        lambda t, d: t.update({"vectors/fc": t["vectors/fc"].reshape(80)}),
        "are 2-D",
    ),
    "duplicate layer": (
        lambda t, d: d["layers"].append(dict(fc_entry(d))),
        "layer 'fc' is listed twice",
    ),
    "wrong tensor key": (
        lambda t, d: fc_entry(d).update(tensor="vectors/features.3"),
        "points at tensor 'vectors/features.3'",
    ),
    "no layers": (lambda t, d: d.update(layers=[]), "lists no layers"),
    "bad neuron_dim": (lambda t, d: fc_entry(d).update(neuron_dim=0), "invalid neuron_dim 0"),
    "bad training_steps": (lambda t, d: d.update(training_steps="many"), "training_steps"),
    "bad class_names": (lambda t, d: d.update(class_names=[1, 2]), "class_names"),
}


@pytest.mark.parametrize("case", list(CONTRADICTIONS))
def test_metadata_contradicting_tensors(good_file: Path, case: str) -> None:
    edit, message = CONTRADICTIONS[case]
    tamper(good_file, edit)
    with pytest.raises(KnowledgeFileError, match=message):
        StaticKnowledge.load(good_file)


@pytest.mark.parametrize(("option", "value"), [("similarity", "dot"), ("reduction", "max"), ("similarity", None)])
def test_unknown_similarity_or_reduction(good_file: Path, option: str, value: object) -> None:
    tamper(good_file, lambda t, d: fc_entry(d).update({option: value}))
    with pytest.raises(KnowledgeFileError, match=f"layer 'fc' has unknown {option}") as info:
        StaticKnowledge.load(good_file)
    assert "upgrade" in str(info.value)


def test_knowledge_file_error_is_a_value_error() -> None:
    assert issubclass(KnowledgeFileError, ValueError)
