"""What a first `semvec fit` / `semvec distill` shows: short defaults, a summary at the end,
help named after the command, and one line for a misspelt option."""

import re

import pytest

from lightning_semvec.cli._lightning import (
    DEFAULT_LOG_EVERY_N_EPOCHS,
    DEFAULT_MAX_EPOCHS,
    DISTILL_MAX_EPOCHS,
)
from lightning_semvec.cli._main import main

TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
        "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"]


@pytest.mark.parametrize("command", ["fit", "distill"])
def test_default_run_is_short(command, capsys):
    epochs = {"fit": DEFAULT_MAX_EPOCHS, "distill": DISTILL_MAX_EPOCHS}[command]
    assert epochs <= 30  # Lightning's own default is 1000
    assert main([command, "--print_config"]) == 0
    config = capsys.readouterr().out
    assert re.search(rf"^  max_epochs: {epochs}$", config, re.M)
    # 20 batches an epoch on the digits: curves get a point every 5 steps, not 4 in all.
    assert re.search(r"^  log_every_n_steps: 5$", config, re.M)
    if command == "fit":  # projector snapshots every 5 epochs and at the end, not every epoch
        assert re.search(rf"^    log_every_n_epochs: {DEFAULT_LOG_EVERY_N_EPOCHS}$", config, re.M)
        assert DEFAULT_LOG_EVERY_N_EPOCHS > 1


def test_fit_ends_with_a_summary_and_next_commands(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", *TINY, "--semvec.dim", "4", "--semvec.analysis.projector", "false",
                 "--semvec.analysis.figures", "false", "--knowledge", "k.semvec.safetensors"]) == 0
    out = capsys.readouterr().out
    checkpoint = next(tmp_path.glob("lightning_logs/version_0/checkpoints/*.ckpt"))
    assert "semvec fit: done, 1 epoch (2 steps)." in out
    assert re.search(r"validation: .*val/acc \d", out)
    assert "logs:        lightning_logs/version_0\n" in out
    assert f"checkpoint:  {checkpoint.relative_to(tmp_path)}\n" in out
    assert "knowledge:   k.semvec.safetensors\n" in out
    assert "  semvec report k.semvec.safetensors report/\n" in out
    assert "  tensorboard --logdir lightning_logs/version_0" in out


def test_fit_without_knowledge_suggests_export(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", *TINY, "--semvec.dim", "4", "--semvec.analysis", "null"]) == 0
    out = capsys.readouterr().out
    checkpoint = next(tmp_path.glob("lightning_logs/version_0/checkpoints/*.ckpt"))
    assert f"  semvec export {checkpoint.relative_to(tmp_path)} teacher.semvec.safetensors\n" in out
    assert "  semvec report teacher.semvec.safetensors report/\n" in out


@pytest.mark.parametrize("command", ["fit", "distill"])
def test_help_is_named_after_the_command_and_keeps_line_breaks(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: semvec {command} [options]\n")
    assert "--trainer.max_epochs 50" in out.split("options:")[0]  # start-here paragraph on top
    examples = out.split("examples:\n")[1]
    assert examples.startswith(f"  semvec {command} ")
    assert "\\\n" in examples  # continued lines stay continued
    assert "--trainer.max_epochs 50" in examples
    # The package's groups before the Trainer's 400 lines.
    assert out.index("Customize every aspect of training") > out.index("  --model ")


@pytest.mark.parametrize(
    "command, argv, suggestion",
    [
        ("fit", ["--semvec.dimm", "4"], "`--semvec.dim`"),
        ("fit", ["--model.num_clases", "3"], "`--model.num_classes`"),
        ("fit", ["--knowlege", "k"], "`--knowledge`"),
        ("fit", ["--config", "fit.yaml"], "`--semvec.dim`"),
        ("distill", ["--trainer.max_epoks", "3"], "`--trainer.max_epochs`"),
    ],
)
def test_misspelt_option_is_one_line_with_a_suggestion(
    command, argv, suggestion, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fit.yaml").write_text("semvec:\n  dims: 4\n")
    assert main([command, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"semvec {command}: error: unknown option `--")
    assert err.endswith(f"did you mean {suggestion}?")
    assert "\n" not in err and "usage" not in err


def test_wrong_value_names_the_key_without_usage(capsys):
    assert main(["fit", "--trainer.max_epochs", "many"]) == 2
    err = capsys.readouterr().err
    assert err.startswith('semvec fit: error: Parser key "trainer.max_epochs"')
    assert "(options: semvec fit --help)" in err and "usage" not in err


def test_export_examples_name_a_checkpoint_that_default_checkpointing_writes(capsys):
    """ModelCheckpoint writes last.ckpt only with save_last=True: the examples must not use it."""
    from pathlib import Path

    assert main(["export", "--help"]) == 0
    help_text = capsys.readouterr().out
    docs = (Path(__file__).resolve().parents[2] / "docs" / "knowledge-file.md").read_text()
    for text in (help_text, docs):
        commands = re.findall(r"semvec export \S+", text)
        assert commands and not any("last.ckpt" in c for c in commands), commands
        assert any(re.search(r"epoch=\d+-step=\d+\.ckpt", c) for c in commands), commands


def test_fit_and_distill_take_the_glyphs_by_short_name_and_their_62_classes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    glyphs = ["--data", "glyphs", "--data.samples_per_glyph", "1", "--data.val_samples_per_glyph", "1",
              "--data.test_samples_per_glyph", "1", "--data.cache_dir", str(tmp_path / "cache")]
    # No --model.num_classes: the default ImageClassifier takes the data's 62 classes.
    assert main(["fit", *glyphs, *TINY, "--semvec.dim", "4", "--semvec.analysis.projector", "false",
                 "--semvec.analysis.figures", "false", "--knowledge", "k.semvec.safetensors"]) == 0
    from lightning_semvec import StaticKnowledge

    knowledge = StaticKnowledge.load(tmp_path / "k.semvec.safetensors")
    assert knowledge.class_names[:3] == ["0", "1", "2"] and len(knowledge.class_names) == 62
    capsys.readouterr()
    assert main(["distill", "--data=glyphs", *glyphs[2:], *TINY, "--model.knowledge", "k.semvec.safetensors",
                 "--model.student", "lightning_semvec.models.PooledCNN", "--model.student.num_classes", "62",
                 "--model.student.width", "4", "--model.layer_map", "{classifier.3: net.classifier.3}"]) == 0
    assert "semvec distill: done, 1 epoch (2 steps)." in capsys.readouterr().out
    # A number the user names is kept, and the data module says it does not fit.
    assert main(["fit", *glyphs, *TINY, "--model.num_classes", "10"]) != 0
    assert "has 62 classes but ImageClassifier has num_classes=10" in capsys.readouterr().err
