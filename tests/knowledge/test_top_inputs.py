"""The ``top_inputs`` statistic: each neuron's top-activating inputs as uint8 thumbnails, bounded,
exported by the callback with the held-out fidelity, checked strictly when loaded."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from test_knowledge_hostile import join_file, refused, split_file
from tiny_models import TinyConvNet, trainer_kwargs

from lightning_semvec import AnalysisOptions, SemanticVectorCallback
from lightning_semvec.analysis._export import exported_top_inputs, fidelity_extra
from lightning_semvec.analysis.layer_analysis import LayerResult
from lightning_semvec.errors import SemvecTypeError, SemvecValueError
from lightning_semvec.knowledge import StaticKnowledge
from lightning_semvec.knowledge.layer_knowledge import TOP_INPUTS_MAX_PIXELS


def _thumbs(n: int = 3, k: int = 2, channels: int = 3, size: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(n * 100 + k)
    return torch.randint(0, 256, (n, k, channels, size, size), generator=g, dtype=torch.uint8)


def _knowledge(top_inputs: torch.Tensor) -> StaticKnowledge:
    return StaticKnowledge.from_vectors({"fc": torch.randn(3, 2), "conv": torch.ones(2, 4)},
                                        statistics={"fc": {"top_inputs": top_inputs}})


def test_top_inputs_round_trip_through_the_file_and_the_document(tmp_path: Path) -> None:
    for top in (_thumbs(), _thumbs(channels=1)):
        knowledge = _knowledge(top)
        loaded = StaticKnowledge.load(knowledge.save(tmp_path / "k.semvec.safetensors"))
        assert loaded == knowledge and torch.equal(loaded.statistics("fc")["top_inputs"], top)
        assert StaticKnowledge.from_document(knowledge.to_document()) == knowledge


@pytest.mark.parametrize(("value", "error", "match"), [
    (_thumbs().float(), SemvecTypeError, r"dtype torch.float32; expected torch.uint8"),
    (_thumbs(n=2), SemvecValueError, r"shape \(2, 2, 3, 4, 4\); expected \(N, K, Ch, S, S\) with N=3"),
    (_thumbs(channels=2), SemvecValueError, r"Ch 1 or 3 channels"),
    (_thumbs()[..., :3], SemvecValueError, r"shape \(3, 2, 3, 4, 3\)"),
    (_thumbs()[:, :0], SemvecValueError, r"K >= 1 images"),
    (_thumbs()[0], SemvecValueError, r"shape \(2, 3, 4, 4\)"),
])
def test_a_bad_top_inputs_is_a_one_line_error(value: torch.Tensor, error: type, match: str) -> None:
    with pytest.raises(error, match=match) as info:
        _knowledge(value)
    assert "\n" not in str(info.value)


def test_top_inputs_above_the_cap_are_refused() -> None:
    n = TOP_INPUTS_MAX_PIXELS // (2 * 4 * 4) + 1  # one neuron too many for 2 images of 4x4
    top = torch.zeros(n, 2, 1, 4, 4, dtype=torch.uint8)
    with pytest.raises(SemvecValueError, match=f"holds {n * 32} pixels .* at most {TOP_INPUTS_MAX_PIXELS}"):
        StaticKnowledge.from_vectors({"fc": torch.ones(n, 2)}, statistics={"fc": {"top_inputs": top}})
    StaticKnowledge.from_vectors({"fc": torch.ones(n - 1, 2)},  # at the cap: fine
                                 statistics={"fc": {"top_inputs": top[:-1]}})


def test_a_file_with_bad_top_inputs_is_a_knowledge_file_error(tmp_path: Path) -> None:
    valid = _knowledge(_thumbs()).save(tmp_path / "k.semvec.safetensors").read_bytes()
    header, _, data = split_file(valid)
    key = "statistics/fc/top_inputs"
    wrong_dtype = {**header, key: {**header[key], "dtype": "I8"}}
    error = refused(tmp_path / "a.safetensors", join_file(wrong_dtype, data),
                    r"tensor 'statistics/fc/top_inputs' has dtype I8, expected uint8")
    assert "\n" not in str(error)
    # A shape whose bytes do not match the offsets: caught by the header checks (U8: 1 byte).
    wrong_size = {**header, key: {**header[key], "shape": [3, 2, 3, 4, 2]}}
    refused(tmp_path / "b.safetensors", join_file(wrong_size, data),
            r"entry for 'statistics/fc/top_inputs' has shape \[3, 2, 3, 4, 2\] of U8 but data_offsets")


def test_a_file_without_top_inputs_still_loads(tmp_path: Path) -> None:
    older = StaticKnowledge.from_vectors({"fc": torch.randn(3, 2)},
                                         statistics={"fc": {"dead": torch.zeros(3, dtype=torch.bool)}})
    loaded = StaticKnowledge.load(older.save(tmp_path / "k.semvec.safetensors"))
    assert "top_inputs" not in loaded.statistics("fc") and loaded == older


def test_exported_top_inputs_are_bounded_and_keep_the_best_first() -> None:
    thumbs = _thumbs(n=4, k=3, size=8)
    assert torch.equal(exported_top_inputs(thumbs, max_pixels=4 * 3 * 64), thumbs)  # fits as is
    # Too few pixels for three 8x8 inputs, and 8 is already below the 16-pixel floor: the size
    # stays and fewer inputs are kept (384 // (4 * 64) = 1), the best one.
    fewer = exported_top_inputs(thumbs, max_pixels=384)
    assert fewer is not None and torch.equal(fewer, thumbs[:, :1])
    big = torch.zeros(64, 4, 3, 32, 32, dtype=torch.uint8)
    big[:, :, :, :16] = 200  # top half bright
    shrunk = exported_top_inputs(big, max_pixels=64 * 4 * 16 * 16)
    assert shrunk is not None and shrunk.shape == (64, 4, 3, 16, 16) and shrunk.dtype == torch.uint8
    assert int(shrunk[..., :8, :].min()) == 200 and int(shrunk[..., 8:, :].max()) == 0  # area mean
    for n, k, size in ((2048, 9, 32), (2048, 1, 32), (20_000, 2, 16)):  # 10 times the cap
        top = exported_top_inputs(torch.zeros(n, k, 3, size, size, dtype=torch.uint8))
        assert top is not None and n * top.shape[1] * top.shape[3] ** 2 <= TOP_INPUTS_MAX_PIXELS
    assert exported_top_inputs(torch.zeros(TOP_INPUTS_MAX_PIXELS + 1, 1, 3, 2, 2, dtype=torch.uint8)) is None


def test_fidelity_extra_keeps_measured_values_only() -> None:
    def result(spearman: float) -> LayerResult:
        return LayerResult("x", 1, {}, {"spearman": spearman, "neighbour_agreement": 0.5},
                           None, None, None)

    results = {"a": result(0.25), "b": result(math.nan), "c": result(0.5)}
    assert fidelity_extra(results, ["a", "b"], {"fidelity/b": "0.7", "fidelity/z": "0.1"}) == {
        "fidelity/a": "0.250000", "fidelity/b": "0.7"}


def test_the_callback_exports_top_inputs_and_held_out_fidelity(tmp_path: Path) -> None:
    semvec = SemanticVectorCallback(layers=["features.3", "classifier.2"], dim=3, lr=0.1,
                                    analysis=AnalysisOptions(projector_images="grid",
                                                             projector_top_k=4, figures=False))
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(callbacks=[semvec], **trainer_kwargs(
        logger=TensorBoardLogger(tmp_path, name="run"), limit_val_batches=None, max_epochs=1))
    trainer.fit(TinyConvNet())
    knowledge = StaticKnowledge.load(semvec.export_knowledge(tmp_path / "k.semvec.safetensors"))
    assert semvec._analysis is not None
    for name in ("features.3", "classifier.2"):
        top = knowledge.statistics(name)["top_inputs"]
        kept = semvec._analysis.results[name].thumbnails
        assert kept is not None and top.shape == (knowledge[name].num_neurons, 4, 3, 32, 32)
        assert torch.equal(top, kept)
        spearman = semvec.fidelity[name]["spearman"]
        if not math.isnan(spearman):
            assert float(knowledge.extra[f"fidelity/{name}"]) == pytest.approx(spearman, abs=1e-6)
