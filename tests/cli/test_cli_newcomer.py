"""What a newcomer trips on first, fixed: a misspelt option of the small commands is one line
with a suggestion (as in ``semvec fit``), ``semvec fit`` logs no ``hp_metric`` stuck at -1, and
our commands print neither Lightning's litlogger tip nor torch's ``LeafSpec`` deprecation."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lightning_semvec.cli._main import main

TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
        "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
        "--semvec.dim", "4", "--semvec.analysis.projector", "false",
        "--semvec.analysis.figures", "false"]


@pytest.mark.parametrize(
    "argv, line",
    [
        (["demo", "--epoch", "3"], "semvec demo: error: unknown option `--epoch`: did you mean `--epochs`?"),
        (["demo", "--student-epoch", "1"],
         "semvec demo: error: unknown option `--student-epoch`: did you mean `--student-epochs`?"),
        (["demo", "--zzz", "1"], "semvec demo: error: unknown option `--zzz`: see semvec demo --help"),
        (["report", "k.semvec.safetensors", "out", "--max_table_row", "3"],
         "semvec report: error: unknown option `--max_table_row`: did you mean `--max_table_rows`?"),
        (["report", "k.semvec.safetensors", "out", "--logdri", "x"],
         "semvec report: error: unknown option `--logdri`: did you mean `--logdir`?"),
        (["export", "a.ckpt", "b", "--overwrit"],
         "semvec export: error: unknown option `--overwrit`: did you mean `--overwrite`?"),
        (["embed", "a.ckpt", "digits", "fc", "out", "--trust-checkpont"],
         "semvec embed: error: unknown option `--trust-checkpont`: did you mean `--trust-checkpoint`?"),
    ],
)
def test_a_misspelt_option_of_a_small_command_is_one_line_with_a_suggestion(argv, line, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == line + "\n" and captured.out == ""


def test_a_wrong_value_of_a_small_command_keeps_the_usage(capsys):
    """Only unknown options lose the usage: it shows the positional arguments' order."""
    assert main(["report", "k.semvec.safetensors"]) == 2
    assert "usage: semvec report" in capsys.readouterr().err


def _scalar_tags(log_dir: Path) -> list[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return events.Tags()["scalars"]


def test_fit_logs_no_hp_metric_and_keeps_lightnings_log_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", *TINY]) == 0
    tags = _scalar_tags(tmp_path / "lightning_logs" / "version_0")
    assert "hp_metric" not in tags
    assert "semvec/net.classifier.3/fidelity" in tags and "val/acc" in tags
    assert "logs:        lightning_logs/version_0\n" in capsys.readouterr().out
    # --trainer.default_root_dir moves the logs, as with Lightning's own default logger.
    assert main(["fit", *TINY, "--trainer.default_root_dir", "elsewhere"]) == 0
    assert "hp_metric" not in _scalar_tags(tmp_path / "elsewhere" / "lightning_logs" / "version_0")
    assert "logs:        elsewhere/lightning_logs/version_0\n" in capsys.readouterr().out


# One process: a Trainer run as any script runs it (the control: what Lightning prints in this
# environment), then `semvec demo` with its training swapped for the same run (the demo's own
# training takes a minute; the filters are the command's, around whatever it runs), then a real
# `semvec fit`. Markers on stderr split the output.
SCRIPT = textwrap.dedent("""
    import dataclasses, sys
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger
    sys.path.insert(0, {tests!r})
    from tiny_models import TinyConvNet, trainer_kwargs
    from lightning_semvec.cli import _small_commands
    from lightning_semvec.cli._main import main

    def tiny_fit(args=()):
        trainer = pl.Trainer(**trainer_kwargs(logger=TensorBoardLogger("logs"), max_epochs=1,
                                              limit_val_batches=1, num_sanity_val_steps=1))
        trainer.fit(TinyConvNet())

    def mark(name):
        print(f"=== {{name}}", file=sys.stderr, flush=True)
        print(f"=== {{name}}", flush=True)

    mark("control")
    tiny_fit()
    commands = _small_commands.SMALL_COMMANDS
    commands["demo"] = dataclasses.replace(commands["demo"], run=tiny_fit)
    mark("demo")
    assert main(["demo"]) == 0
    mark("fit")
    assert main(["fit", *{tiny!r}]) == 0
    mark("end")
""")


def _sections(text: str) -> dict[str, str]:
    parts = text.split("=== ")
    return {part.split("\n", 1)[0]: part for part in parts[1:]}


def test_our_commands_print_no_litlogger_tip_and_no_leafspec_warning(tmp_path):
    tests = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # as a terminal shows warnings
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(tests=tests, tiny=TINY)], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    err, out = _sections(done.stderr), _sections(done.stdout)
    seen = {name: err[name] + out[name] for name in ("control", "demo", "fit")}
    noise = ("litlogger", "LeafSpec")
    if not all(word in seen["control"] for word in noise):
        pytest.skip(f"this Lightning prints no {noise} on a plain run: nothing to leave out")
    for command in ("demo", "fit"):
        assert not any(word in seen[command] for word in noise), seen[command][-2000:]
    assert "semvec fit: done, 1 epoch" in seen["fit"]  # the command ran and said so


def test_the_readmes_first_block_shows_what_it_computes():
    """Run as a script, a bare expression shows nothing: every expression statement of the
    README's first Python block is a call (print, fit, export), none a value left unused."""
    import ast
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    first = re.search(r"^```python\n(.*?)^```", readme, re.M | re.S).group(1)
    bare = [ast.unparse(node) for node in ast.parse(first).body
            if isinstance(node, ast.Expr) and not isinstance(node.value, ast.Call)]
    assert bare == []
    assert "print({name: tuple(v.shape) for name, v in semvec.semantic_vectors.items()})" in first
