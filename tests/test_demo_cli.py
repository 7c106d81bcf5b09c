"""The `semvec` command line, run as a user would (in-process, tiny sizes)."""

import pytest

from lightning_semvec import StaticKnowledge
from lightning_semvec.cli import main

TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
        "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"]


@pytest.fixture
def fitted(tmp_path, monkeypatch):
    """`semvec fit` with the defaults (demo CNN, digits), exporting a knowledge file."""
    monkeypatch.chdir(tmp_path)
    code = main(["fit", *TINY, "--semvec.dim", "4", "--semvec.analysis.projector", "false",
                 "--semvec.analysis.figures", "false", "--knowledge", "k.semvec.safetensors"])
    assert code == 0
    return tmp_path


def test_fit_exports_knowledge_and_checkpoint_exports_the_same(fitted):
    knowledge = StaticKnowledge.load(fitted / "k.semvec.safetensors")
    assert knowledge["net.classifier.3"].vectors.shape == (10, 4)
    assert knowledge.class_names == [str(i) for i in range(10)]
    checkpoint = next(fitted.glob("lightning_logs/version_0/checkpoints/*.ckpt"))
    assert main(["export", str(checkpoint), str(fitted / "e.semvec.safetensors")]) == 0
    exported = StaticKnowledge.load(fitted / "e.semvec.safetensors")
    for name in knowledge.layer_names:
        assert exported[name].vectors.equal(knowledge[name].vectors)
        assert exported[name].reduction == knowledge[name].reduction
        assert exported[name].similarity == knowledge[name].similarity
    assert exported.class_names == knowledge.class_names


def test_distill_from_the_knowledge_file(fitted):
    code = main(["distill", *TINY, "--model.knowledge", "k.semvec.safetensors",
                 "--model.student", "lightning_semvec.models.SmallCNN",
                 "--model.student.width", "4", "--model.student.hidden", "16",
                 "--model.layer_map", "{classifier.3: net.classifier.3}"])
    assert code == 0
    assert list(fitted.glob("lightning_logs/version_1/checkpoints/*.ckpt"))


def test_report_from_the_knowledge_file(fitted, capsys):
    assert main(["report", "k.semvec.safetensors", "report"]) == 0
    assert (fitted / "report" / "index.html").is_file()
    assert "Report:" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bogus"], "unknown command 'bogus'"),
        (["export", "missing.ckpt", "out.semvec.safetensors"], "No checkpoint at missing.ckpt"),
        (["report", "missing.semvec.safetensors", "out"], "missing.semvec.safetensors"),
        (["fit", "--semvec.dim", "0", *TINY], "dim must be an integer >= 1"),
        (["demo", "--epochs", "0"], "epochs must be at least 1"),
        (["demo", "--student-epochs", "0"], "student_epochs must be at least 1"),
    ],
)
def test_bad_arguments_give_one_clear_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_export_of_a_checkpoint_without_the_callback(tmp_path, capsys):
    import torch

    torch.save({"state_dict": {}, "callbacks": {}}, tmp_path / "plain.ckpt")
    assert main(["export", str(tmp_path / "plain.ckpt"), str(tmp_path / "k")]) == 2
    assert "no SemanticVectorCallback state" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["fit", "distill", "demo", "report", "export"])
def test_every_command_has_help_with_examples(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"semvec {command}" in out


def test_top_level_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("fit", "distill", "demo", "report", "export"))
