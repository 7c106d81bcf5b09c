"""The `semvec` command line, run as a user would (in-process, tiny sizes)."""

import functools
import os

import pytest
import torch

from lightning_semvec import StaticKnowledge
from lightning_semvec.callback import checkpoint as checkpoint_export
from lightning_semvec.cli import demo
from lightning_semvec.cli._main import main
from lightning_semvec.report import html as report

TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
        "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"]


@pytest.fixture
def fitted(tmp_path, monkeypatch):
    """`semvec fit` with the defaults (demo CNN, digits), exporting a knowledge file. The
    vectors are not finished, so that the checkpoint (written before the end of fit, where
    finishing happens: docs/callback.md) holds the same vectors as the knowledge file."""
    monkeypatch.chdir(tmp_path)
    code = main(["fit", *TINY, "--semvec.dim", "4", "--semvec.analysis.projector", "false",
                 "--semvec.analysis.figures", "false", "--semvec.analysis.finish_vectors",
                 "false", "--knowledge", "k.semvec.safetensors"])
    assert code == 0
    return tmp_path


def test_fit_exports_knowledge_and_checkpoint_exports_the_same(fitted):
    knowledge = StaticKnowledge.load(fitted / "k.semvec.safetensors")
    assert knowledge["net.classifier.3"].vectors.shape == (10, 4)
    assert knowledge.class_names == [str(i) for i in range(10)]
    checkpoint = next(fitted.glob("lightning_logs/version_0/checkpoints/*.ckpt"))
    # --trust-checkpoint alone, as the argparse command line took it.
    assert main(["export", str(checkpoint), str(fitted / "e.semvec.safetensors"),
                 "--trust-checkpoint"]) == 0
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
    # No log folder: the validation statistics travel in the knowledge file.
    assert main(["report", "k.semvec.safetensors", "report"]) == 0
    page = (fitted / "report" / "index.html").read_text()
    assert "<th>preferred class</th>" in page and "<th>dead</th>" in page
    assert "Report:" in capsys.readouterr().out
    # A folder that holds a report is replaced only when asked, as a whole.
    (fitted / "report" / "notes.txt").write_text("mine")
    assert main(["report", "k.semvec.safetensors", "report"]) == 2
    assert "report holds files (another run's output?): pass overwrite=True (on the command line " \
        "--overwrite)" in capsys.readouterr().err
    assert (fitted / "report" / "notes.txt").exists() and (fitted / "report" / "index.html").read_text() == page
    # The old --logdir spelling still parses; the folder is no longer read.
    with pytest.warns(FutureWarning, match="deprecated and ignored"):
        assert main(["report", "k.semvec.safetensors", "report", "--logdir", "lightning_logs", "--overwrite"]) == 0
    assert not (fitted / "report" / "notes.txt").exists() and (fitted / "report" / "index.html").exists()
    assert [p.name for p in fitted.iterdir() if p.name.startswith(".report.")] == []


@pytest.fixture
def small_knowledge(tmp_path, monkeypatch):
    """A knowledge file `k.semvec.safetensors` of one 3-neuron layer, in the current folder."""
    monkeypatch.chdir(tmp_path)
    return StaticKnowledge.from_vectors({"fc": torch.eye(3)}).save(tmp_path / "k.semvec.safetensors")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bogus"], "semvec: error: unknown command 'bogus'"),
        (["export", "missing.ckpt", "out.semvec.safetensors"],
         "semvec export: error: No checkpoint at missing.ckpt"),
        (["report", "missing.semvec.safetensors", "out"],
         "semvec report: error: Knowledge file 'missing.semvec.safetensors' does not exist"),
        (["report", "k.semvec.safetensors", "out", "--neighbours", "-1"],
         "semvec report: error: neighbours must be an integer >= 0, got -1."),
        (["report", "k.semvec.safetensors", "out", "--max-heatmap-neurons", "0"],
         "semvec report: error: max_heatmap_neurons must be an integer >= 1, got 0."),
        (["report", "k.semvec.safetensors", "out", "--max-table-rows", "-1"],
         "semvec report: error: max_table_rows must be an integer >= 0, got -1."),
        (["report", "bad.semvec.safetensors", "out"],
         "semvec report: error: 'bad.semvec.safetensors' is truncated"),
        (["distill", *TINY, "--model.knowledge", "bad.semvec.safetensors",
          "--model.student", "lightning_semvec.models.SmallCNN",
          "--model.layer_map", "{classifier.3: net.classifier.3}"],
         "semvec distill: error: 'bad.semvec.safetensors' is truncated"),
        (["fit", "--semvec.dim", "0", *TINY], "semvec fit: error: dim must be an integer >= 2"),
        (["demo", "--epochs", "0"], "semvec demo: error: epochs must be an integer >= 1, got 0."),
        (["demo", "--student-epochs", "0"],
         "semvec demo: error: student_epochs must be an integer >= 1, got 0."),
        (["demo", "--out", "k.semvec.safetensors"],
         "semvec demo: error: Cannot write the demo's runs into k.semvec.safetensors: "
         "k.semvec.safetensors is a file, not a folder."),
    ],
)
def test_bad_input_gives_one_clear_line(argv, message, small_knowledge, capsys):
    (small_knowledge.parent / "bad.semvec.safetensors").write_bytes(b"junk")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--epochs", "three"], 'Parser key "epochs"'),
        (["report", "k.semvec.safetensors"], "out_dir"),
        (["export", "a.ckpt", "b", "--trust-checkpoint", "maybe"], "trust_checkpoint"),
    ],
)
def test_bad_arguments_exit_2_with_usage(argv, message, small_knowledge, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "usage: semvec" in err


def test_an_unknown_option_is_one_line_that_points_at_help(capsys):
    assert main(["demo", "--unknown", "1"]) == 2
    err = capsys.readouterr().err
    assert err == "semvec demo: error: unknown option `--unknown`: see semvec demo --help\n"


def _checkpoint_with_states(path, *keys):
    state = {"vectors": {"fc": torch.eye(3)}, "training_steps": 1}
    torch.save({"callbacks": {key: state for key in keys}}, path)
    return path


def test_export_chooses_among_several_callbacks_with_key(tmp_path, capsys):
    checkpoint = _checkpoint_with_states(
        tmp_path / "two.ckpt", "SemanticVectorCallback{'a': 1}", "SemanticVectorCallback{'a': 2}"
    )
    out = str(tmp_path / "k.semvec.safetensors")
    assert main(["export", str(checkpoint), out]) == 2
    assert "holds several callbacks" in capsys.readouterr().err
    assert main(["export", str(checkpoint), out, "--key", "nope"]) == 2
    assert "No callback state 'nope'" in capsys.readouterr().err
    assert main(["export", str(checkpoint), out, "--key", "SemanticVectorCallback{'a': 2}"]) == 0
    assert StaticKnowledge.load(out).extra["state_key"] == "SemanticVectorCallback{'a': 2}"


@pytest.mark.parametrize("error", [RuntimeError, TypeError, KeyError, ValueError])
@pytest.mark.parametrize(
    "argv, module, function",
    [
        (["report", "k.semvec.safetensors", "out"], report, "rank_layers"),
        (["report", "k.semvec.safetensors", "out"], report, "similarity_heatmaps"),
        (["export", "model.ckpt", "out.semvec.safetensors"], checkpoint_export,
         "semantic_vector_states"),
    ],
)
def test_a_library_bug_keeps_its_traceback(
    argv, module, function, error, small_knowledge, monkeypatch
):
    """Only SemvecError is the user's fault: any other exception propagates out of main."""
    _checkpoint_with_states(small_knowledge.parent / "model.ckpt", "SemanticVectorCallback")

    def bug(*args, **kwargs):
        raise error("a bug in the library")

    monkeypatch.setattr(module, function, bug)
    with pytest.raises(error, match="a bug in the library"):
        main(argv)


def test_demo_options_keep_their_argparse_spellings(monkeypatch):
    """`semvec demo` passes each spelling to demo.main (recorded, not run: it takes a minute)."""
    calls = []

    @functools.wraps(demo.main)  # the same signature and docstring, so the same options
    def record(**kwargs):
        calls.append(kwargs)

    monkeypatch.setattr(demo, "main", record)
    assert main(["demo", "--epochs", "3", "--student-epochs", "4", "--out", "runs",
                 "--no-progress-bar"]) == 0
    assert main(["demo", "--student_epochs=5", "--out_dir=other", "--progress_bar", "false"]) == 0
    assert main(["demo"]) == 0
    assert calls == [
        {"epochs": 3, "out_dir": "runs", "progress_bar": False, "student_epochs": 4},
        {"epochs": 6, "out_dir": "other", "progress_bar": False, "student_epochs": 5},
        {"epochs": 6, "out_dir": "semvec_runs", "progress_bar": True, "student_epochs": 30},
    ]


def test_export_of_a_checkpoint_without_the_callback(tmp_path, capsys):
    import torch

    torch.save({"state_dict": {}, "callbacks": {}}, tmp_path / "plain.ckpt")
    assert main(["export", str(tmp_path / "plain.ckpt"), str(tmp_path / "k")]) == 2
    assert "holds no semantic vector callback state (its callback states: [])" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("command", ["fit", "distill", "demo", "report", "export", "embed"])
def test_every_command_has_help_with_examples(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"semvec {command}" in out
    if command in ("demo", "report", "export", "embed"):  # options from docstrings: no reST
        assert "``" not in out and ":func:" not in out


def test_report_help_offers_no_option_a_command_line_cannot_fill(capsys):
    """write_report's confusion is a tensor: the Python API takes it, the command line does not."""
    assert main(["report", "--help"]) == 0
    assert "confusion" not in capsys.readouterr().out


def test_top_level_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("fit", "distill", "demo", "report", "export"))


def test_no_knowledge_file_is_replaced_unless_asked(fitted, capsys):
    """`semvec export`, `semvec fit --knowledge` and `export_knowledge` refuse an existing file
    (before any work), leave it as it was, and replace it with --overwrite / overwrite=True."""
    existing = fitted / "k.semvec.safetensors"
    before = existing.read_bytes()
    checkpoint = str(next(fitted.glob("lightning_logs/version_0/checkpoints/*.ckpt")))
    capsys.readouterr()
    assert main(["export", checkpoint, str(existing), "--trust-checkpoint"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "k.semvec.safetensors exists: pass overwrite=True (on the command line --overwrite) to "
        "replace it, or write to another path.")
    # The fit's own knowledge file: refused before training (no new log folder).
    assert main(["fit", *TINY, "--semvec.dim", "4", "--knowledge", "k.semvec.safetensors"]) == 2
    assert "k.semvec.safetensors exists" in capsys.readouterr().err
    assert not (fitted / "lightning_logs" / "version_1").exists()
    assert existing.read_bytes() == before
    assert main(["export", checkpoint, str(existing), "--trust-checkpoint", "--overwrite"]) == 0
    StaticKnowledge.load(existing)


def test_export_knowledge_refuses_an_existing_file_and_clears_a_killed_writes_temporary(tmp_path):
    import lightning.pytorch as pl
    from tiny_models import QUIET, data, mlp

    from lightning_semvec import SemanticVectorCallback
    from lightning_semvec.errors import SemvecFileExistsError
    from lightning_semvec.models import ImageClassifier

    semvec = SemanticVectorCallback(layers=["net.1"], dim=4, analysis=None)
    pl.Trainer(max_epochs=1, limit_train_batches=2, callbacks=[semvec], **QUIET).fit(
        ImageClassifier(mlp(0), num_classes=4), data())
    path = tmp_path / "k.semvec.safetensors"
    path.write_bytes(b"not mine")
    with pytest.raises(SemvecFileExistsError, match="k.semvec.safetensors exists: pass overwrite=True"):
        semvec.export_knowledge(path)
    assert path.read_bytes() == b"not mine"
    # A write killed half-way left its temporary (named after its process, which is gone);
    # a live process's temporary is another write in progress and stays.
    dead, live = tmp_path / ".k.semvec.safetensors.999999999.ab12cd34.tmp", \
        tmp_path / f".k.semvec.safetensors.{os.getpid()}.ab12cd34.tmp"
    dead.write_bytes(b"half"), live.write_bytes(b"half")
    semvec.export_knowledge(path, overwrite=True)
    assert StaticKnowledge.load(path)["net.1"].vectors.shape[1] == 4
    assert not dead.exists() and live.exists()


def test_a_full_disk_during_export_is_one_line_and_keeps_the_old_file(fitted, capsys, monkeypatch):
    existing = fitted / "k.semvec.safetensors"
    before = existing.read_bytes()
    checkpoint = str(next(fitted.glob("lightning_logs/version_0/checkpoints/*.ckpt")))

    def full(fd: int) -> None:  # the disk filled up: the written data cannot reach it
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    capsys.readouterr()
    # Before: a raw OSError traceback.
    assert main(["export", checkpoint, str(existing), "--trust-checkpoint", "--overwrite"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("semvec export: error: Cannot write ")
    assert "No space left on device (a full or read-only disk?); any file that was there is unchanged" in error
    monkeypatch.undo()
    assert existing.read_bytes() == before
    assert [p.name for p in fitted.iterdir() if p.name.endswith(".tmp")] == []
