import pytest

from lightning_semvec import StaticKnowledge
from lightning_semvec.cli import main


def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "--epochs", "1", "--out", str(tmp_path), "--no-progress-bar"]) == 0
    out = capsys.readouterr().out
    assert "most similar neurons" in out and f"tensorboard --logdir {tmp_path}" in out
    knowledge = StaticKnowledge.load(tmp_path / "demo.semvec.safetensors")
    assert knowledge["net.classifier.3"].vectors.shape == (10, 8)
    assert knowledge.class_names == [str(i) for i in range(10)]
    assert list((tmp_path / "demo" / "version_0").glob("events.out.tfevents.*"))


def test_demo_bad_epochs_is_one_clear_line(tmp_path, capsys):
    assert main(["demo", "--epochs", "0", "--out", str(tmp_path)]) == 2
    assert "epochs must be at least 1" in capsys.readouterr().err


def test_help_lists_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    assert "semvec demo" in capsys.readouterr().out
