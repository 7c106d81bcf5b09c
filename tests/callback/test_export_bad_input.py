"""`semvec export` on bad input: each case is one line `semvec export: error: ...`, exit 2.

Run in-process through `lightning_semvec.cli._main.main`, as a user would type the command. The
checkpoint is a real one, written by a Trainer with ModelCheckpoint; the sharded one is laid out
as Lightning's ModelParallelStrategy / FSDPStrategy write it (see `_save_sharded`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from tiny_models import TinyConvNet, trainer_kwargs

from lightning_semvec import AnalysisOptions, SemanticVectorCallback, StaticKnowledge
from lightning_semvec.cli._main import main

OUT = "k.semvec.safetensors"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint a Trainer wrote with the callback on `classifier.2` (1 epoch, CPU)."""
    folder = tmp_path_factory.mktemp("trained")
    pl.seed_everything(0, verbose=False)
    semvec = SemanticVectorCallback(
        layers=["classifier.2"], dim=4, analysis=AnalysisOptions(projector=False, figures=False)
    )
    saver = ModelCheckpoint(dirpath=folder, filename="good")
    trainer = pl.Trainer(
        callbacks=[semvec, saver], **trainer_kwargs(max_epochs=1, enable_checkpointing=True)
    )
    trainer.fit(TinyConvNet())
    return folder / "good.ckpt"


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current folder, so that messages show short relative paths."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def export_error(capsys: pytest.CaptureFixture[str], *argv: object) -> str:
    """Run `semvec export ARGV`; assert exit 2 and one error line, no traceback; return it."""
    code = main(["export", *map(str, argv)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("semvec export: error: ")
    return lines[0]


def edited(trained: Path, out: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the checkpoint whose callback state `edit` changed, as a user editing it."""
    checkpoint = torch.load(trained, weights_only=True)
    (key,) = (k for k in checkpoint["callbacks"] if k.startswith("SemanticVectorCallback"))
    edit(checkpoint["callbacks"][key])
    torch.save(checkpoint, out)
    return out


def test_a_truncated_checkpoint(trained, here, capsys):
    data = trained.read_bytes()
    Path("cut.ckpt").write_bytes(data[: len(data) // 2])
    line = export_error(capsys, "cut.ckpt", OUT)
    assert f"cut.ckpt is truncated ({len(data) // 2} bytes;" in line
    assert "Copy or save it again" in line


def test_a_text_file(here, capsys):
    Path("notes.ckpt").write_text("hello, this is not a checkpoint\n")
    line = export_error(capsys, "notes.ckpt", OUT)
    assert "notes.ckpt is not a PyTorch checkpoint: it is a text file" in line
    assert "Pass the .ckpt that ModelCheckpoint or trainer.save_checkpoint wrote." in line


def test_an_empty_file_lists_the_other_checkpoints(trained, here, capsys):
    Path("empty.ckpt").touch()
    Path("other.ckpt").write_bytes(trained.read_bytes())
    line = export_error(capsys, "empty.ckpt", OUT)
    assert "empty.ckpt is empty (0 bytes): the save was interrupted" in line
    assert line.endswith("checkpoints in .: other.ckpt.")


@pytest.mark.parametrize("checkpoint", ["missing.ckpt", "cut.ckpt"])
def test_an_output_path_that_is_a_folder_is_refused_before_reading(checkpoint, here, capsys):
    """Checked first: a missing or damaged checkpoint is not even looked at."""
    Path("cut.ckpt").write_bytes(b"PK\x03\x04 cut short")
    Path("out").mkdir()
    line = export_error(capsys, checkpoint, "out")
    assert line == (
        "semvec export: error: The output out is a folder: give the knowledge file's path, "
        "such as out/teacher.semvec.safetensors."
    )


def test_an_output_folder_that_does_not_exist_is_refused_before_reading(here, capsys):
    line = export_error(capsys, "missing.ckpt", "nope/k.semvec.safetensors")
    assert line == (
        "semvec export: error: Cannot write nope/k.semvec.safetensors: the folder nope does not "
        "exist. Create it first."
    )


def _drop_vectors(state: dict[str, Any]) -> None:
    del state["knowledge"]["layers"][0]["vectors"]


def _layers_as_dict(state: dict[str, Any]) -> None:
    state["knowledge"]["layers"] = {"classifier.2": state["knowledge"]["layers"][0]}


def _layer_as_tensor(state: dict[str, Any]) -> None:
    state["knowledge"]["layers"][0] = torch.zeros(3, 4)


def _statistics_as_tensor(state: dict[str, Any]) -> None:
    state["knowledge"]["layers"][0]["statistics"] = torch.zeros(3)


def _vectors_as_text(state: dict[str, Any]) -> None:
    state["knowledge"]["layers"][0]["vectors"] = "0.1 0.2"


def _legacy_readouts_as_list(state: dict[str, Any]) -> None:
    # lightning_semvec 0.1's layout: vectors beside the metadata.
    state.clear()
    state.update({"vectors": {"fc": torch.eye(3)}, "knowledge": {"readouts": ["fc"]}})


@pytest.mark.parametrize(
    "edit, message",
    [
        (_drop_vectors, "layer entry 0 ('classifier.2') has no 'vectors'."),
        (_layers_as_dict, "the knowledge's 'layers' must be a list of layer entries, got dict."),
        (_layer_as_tensor, "layer entry 0 must be a mapping, got Tensor."),
        (_statistics_as_tensor,
         "the 'statistics' of layer entry 0 ('classifier.2') must be a mapping, got Tensor."),
        (_vectors_as_text, "The vectors of layer 'classifier.2' must be a tensor, got str."),
        (_legacy_readouts_as_list, "'knowledge' 'readouts' must be a mapping, got list."),
    ],
)
def test_a_hand_edited_state(edit, message, trained, here, capsys):
    line = export_error(capsys, edited(trained, here / "edited.ckpt", edit), OUT)
    assert "edited.ckpt (SemanticVectorCallback" in line and message in line


def test_callbacks_that_are_not_a_mapping(here, capsys):
    torch.save({"state_dict": {}, "callbacks": ["SemanticVectorCallback"]}, "odd.ckpt")
    line = export_error(capsys, "odd.ckpt", OUT)
    assert "odd.ckpt holds no semantic vector callback state (its callback states: [])" in line


def test_a_torch_file_that_is_not_a_lightning_checkpoint(here, capsys):
    torch.save({"weight": torch.ones(2)}, "weights.pt")
    line = export_error(capsys, "weights.pt", OUT)
    assert "weights.pt is a torch file but not a Lightning checkpoint" in line
    assert "its keys are ['weight']" in line


def test_a_knowledge_file_given_as_the_checkpoint(here, capsys):
    StaticKnowledge.from_vectors({"fc": torch.eye(3)}).save("teacher.semvec.safetensors")
    line = export_error(capsys, "teacher.semvec.safetensors", OUT)
    assert "teacher.semvec.safetensors is a safetensors file, not a Lightning checkpoint" in line


def test_objects_that_need_trust_give_one_line_not_torchs_page(trained, here, capsys):
    checkpoint = torch.load(trained, weights_only=True)
    checkpoint["hyper_parameters"] = {"args": argparse.Namespace(lr=0.1)}
    torch.save(checkpoint, "custom.ckpt")
    line = export_error(capsys, "custom.ckpt", OUT)
    assert "Unsupported global: GLOBAL argparse.Namespace." in line
    assert line.endswith("pass --trust-checkpoint (trust_checkpoint=True).")
    assert main(["export", "custom.ckpt", OUT, "--trust-checkpoint"]) == 0


def test_a_missing_checkpoint_lists_those_next_to_it(trained, here, capsys):
    runs = Path("checkpoints")
    runs.mkdir()
    for name, mtime in (("epoch=0-step=6.ckpt", 1_000), ("epoch=1-step=12.ckpt", 2_000)):
        (runs / name).write_bytes(trained.read_bytes())
        os.utime(runs / name, (mtime, mtime))
    line = export_error(capsys, runs / "last.ckpt", OUT)
    assert line == (
        "semvec export: error: No checkpoint at checkpoints/last.ckpt; checkpoints in "
        "checkpoints: epoch=1-step=12.ckpt, epoch=0-step=6.ckpt."
    )
    assert "There is no *.ckpt in" in export_error(capsys, "nothing.ckpt", OUT)
    line = export_error(capsys, "lightning_logs", OUT)  # a folder, not there
    assert "No checkpoint at lightning_logs" in line


def test_a_folder_given_as_the_checkpoint_lists_the_checkpoints_in_it(trained, here, capsys):
    inner = Path("lightning_logs/version_0/checkpoints")
    inner.mkdir(parents=True)
    (inner / "epoch=0-step=6.ckpt").write_bytes(trained.read_bytes())
    line = export_error(capsys, "lightning_logs", OUT)
    assert line == (
        "semvec export: error: lightning_logs is a folder, not a checkpoint; checkpoints in it: "
        "version_0/checkpoints/epoch=0-step=6.ckpt."
    )


def _save_sharded(checkpoint: dict[str, Any], path: Path, metadata: bool = True) -> None:
    """What ``ModelParallelStrategy.save_checkpoint`` (and FSDPStrategy with
    ``state_dict_type="sharded"``) does with a distributed checkpoint, on one CPU process: the
    model's and optimizers' state go to ``torch.distributed.checkpoint`` shards, the rest
    (callback states included) to ``meta.pt``, which rank 0 writes with ``torch.save``."""
    from torch.distributed.checkpoint import save

    path.mkdir()
    checkpoint = dict(checkpoint)
    converted = {"state_dict": checkpoint.pop("state_dict")}
    converted.update({
        f"optimizer_{idx}": state
        for idx, state in enumerate(checkpoint.pop("optimizer_states", []))
    })
    save(converted, checkpoint_id=path)
    if metadata:
        torch.save(checkpoint, path / "meta.pt")


def test_a_sharded_checkpoint_folder_exports_from_its_meta_pt(trained, here, capsys):
    _save_sharded(torch.load(trained, weights_only=True), here / "sharded.ckpt")
    assert {p.suffix for p in Path("sharded.ckpt").iterdir()} >= {".distcp", ".pt"}
    assert main(["export", "sharded.ckpt", OUT]) == 0, capsys.readouterr().err
    assert main(["export", str(trained), "single.semvec.safetensors"]) == 0
    sharded, single = StaticKnowledge.load(OUT), StaticKnowledge.load("single.semvec.safetensors")
    assert sharded["classifier.2"].vectors.equal(single["classifier.2"].vectors)
    assert sharded.extra["exported_from"] == "sharded.ckpt"


def test_a_sharded_checkpoint_folder_without_meta_pt(trained, here, capsys):
    checkpoint = torch.load(trained, weights_only=True)
    _save_sharded(checkpoint, here / "sharded.ckpt", metadata=False)
    line = export_error(capsys, "sharded.ckpt", OUT)
    assert "sharded.ckpt holds torch.distributed.checkpoint shards but no meta.pt" in line
    assert "copy meta.pt from rank 0's machine into the folder" in line
    assert "python -m lightning.pytorch.utilities.consolidate_checkpoint sharded.ckpt" in line
