"""The knowledge document: per-neuron statistics in the file, version 1 files, the marker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

from lightning_semvec.knowledge import (
    KNOWLEDGE_MARKER,
    METADATA_KEY,
    KnowledgeFileError,
    LayerKnowledge,
    StaticKnowledge,
)


def statistics(n: int = 4, c: int = 3) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {
        "mean_activation": torch.rand(n, generator=generator),
        "dead": torch.tensor([False, True] + [False] * (n - 2)),
        "class_means": torch.rand(c, n, generator=generator),
        "class_counts": torch.tensor([5.0, 0.0, 2.0])[:c],
        "selectivity": torch.rand(n, generator=generator),
        "preferred_class": torch.arange(n) % c,
    }


def with_statistics() -> StaticKnowledge:
    return StaticKnowledge.from_vectors(
        {"fc": torch.randn(4, 2), "conv": torch.randn(5, 2)},
        statistics={"fc": statistics()},
        class_names=["a", "b", "c"],
    )


def test_statistics_round_trip_through_the_file(tmp_path: Path) -> None:
    knowledge = with_statistics()
    loaded = StaticKnowledge.load(knowledge.save(tmp_path / "k.semvec.safetensors"))
    assert loaded == knowledge
    stats = loaded.statistics("fc")
    assert stats["dead"].dtype == torch.bool and stats["preferred_class"].dtype == torch.int64
    assert torch.equal(stats["class_means"], statistics()["class_means"])
    assert loaded.statistics("conv") == {}
    tensors = safetensors.torch.load_file(tmp_path / "k.semvec.safetensors")
    assert "statistics/fc/selectivity" in tensors and "vectors/conv" in tensors


def test_documents_with_other_statistics_are_not_equal() -> None:
    a = with_statistics()
    b = StaticKnowledge.from_document(a.to_document())
    assert a == b
    document = a.to_document()
    document["layers"][0]["statistics"]["dead"] = torch.ones(4, dtype=torch.bool)
    assert StaticKnowledge.from_document(document) != a


def test_version_1_files_still_load(tmp_path: Path) -> None:
    """A file as lightning_semvec 0.1.0 wrote it: no marker, no statistics, version 1."""
    vectors = torch.randn(3, 2)
    document = {
        "format_version": 1, "package_version": "0.1.0", "source_model": "Net",
        "training_steps": 7, "class_names": None, "extra": {},
        "layers": [{"name": "fc", "tensor": "vectors/fc", "num_neurons": 3, "dim": 2,
                    "similarity": "pearson", "reduction": "mean", "neuron_dim": 1}],
    }
    path = tmp_path / "old.semvec.safetensors"
    safetensors.torch.save_file({"vectors/fc": vectors}, path,
                                metadata={METADATA_KEY: json.dumps(document)})
    loaded = StaticKnowledge.load(path)
    assert torch.equal(loaded.vectors("fc"), vectors)
    assert loaded.format_version == 1 and loaded.training_steps == 7
    assert loaded.statistics("fc") == {}


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("mean_activation", torch.zeros(5), r"mean_activation.*shape \(5,\).*N=4"),
        ("class_means", torch.zeros(2, 4), r"class_means.*C=3"),
        ("loudness", torch.zeros(4), "unknown statistics"),
        ("dead", [0, 1, 0, 0], "must be a tensor"),
    ],
)
def test_bad_statistics_are_refused(key: str, value: object, match: str) -> None:
    stats: dict = {"class_counts": torch.ones(3), key: value}
    with pytest.raises((ValueError, TypeError), match=match):
        LayerKnowledge("fc", torch.ones(4, 2), statistics=stats)


def test_statistics_for_a_layer_without_vectors() -> None:
    with pytest.raises(ValueError, match=r"statistics name layers \['fc2'\]"):
        StaticKnowledge.from_vectors({"fc": torch.ones(4, 2)}, statistics={"fc2": statistics()})


def test_a_statistic_with_the_wrong_dtype_in_the_file(tmp_path: Path) -> None:
    path = with_statistics().save(tmp_path / "k.semvec.safetensors")
    tensors = safetensors.torch.load_file(path)
    with safetensors.safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    tensors["statistics/fc/dead"] = tensors["statistics/fc/dead"].float()
    safetensors.torch.save_file(tensors, path, metadata=metadata)
    with pytest.raises(KnowledgeFileError, match=r"statistics/fc/dead.*expected bool"):
        StaticKnowledge.load(path)


def test_a_statistic_tensor_without_its_entry_is_an_orphan(tmp_path: Path) -> None:
    path = with_statistics().save(tmp_path / "k.semvec.safetensors")
    tensors = safetensors.torch.load_file(path)
    with safetensors.safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    document = json.loads(metadata[METADATA_KEY])
    del document["layers"][0]["statistics"]["selectivity"]
    safetensors.torch.save_file(tensors, path, metadata={METADATA_KEY: json.dumps(document)})
    with pytest.raises(KnowledgeFileError, match="statistics/fc/selectivity.*no layer entry"):
        StaticKnowledge.load(path)


def test_the_document_carries_the_marker_and_refuses_garbage() -> None:
    document = with_statistics().to_document()
    assert document["format"] == KNOWLEDGE_MARKER
    with pytest.raises(KnowledgeFileError, match="the checkpoint has invalid"):
        StaticKnowledge.from_document({**document, "layers": [{"name": "fc"}]},
                                      source="the checkpoint")
    with pytest.raises(KnowledgeFileError, match="not a knowledge document"):
        StaticKnowledge.from_document(["layers"], source="x")  # type: ignore[arg-type]
