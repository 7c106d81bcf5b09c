"""`semvec embed --compare`: a `semvec fit` teacher and its `semvec distill` student, each rebuilt
as its own class, in one space; `--names`, distinguishable sources and the terminal's matching
summary (issue 24)."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

from lightning_semvec import StaticKnowledge
from lightning_semvec.cli._checkpoints import short_error
from lightning_semvec.cli._main import main
from lightning_semvec.cli._matching_summary import cka_table, matching_summary
from lightning_semvec.cli.embed import _distinct_sources, embed_model
from lightning_semvec.knowledge.joint_space import CKA_KEY, cka_record, stored_cka

TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3",
        "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"]
#: Fast embedding options: the digits' validation split, small vectors, the CPU.
FAST = ["--dim", "4", "--split", "val", "--accelerator", "cpu"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """``(teacher, student)``: the checkpoints of `semvec fit` (version_0) and of `semvec
    distill` from its knowledge (version_1), both named ``epoch=0-step=3.ckpt``."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        assert main(["fit", *TINY, "--semvec.dim", "4", "--semvec.analysis.projector", "false",
                     "--semvec.analysis.figures", "false", "--knowledge", "k.semvec.safetensors"]) == 0
        assert main(["distill", *TINY, "--model.knowledge", "k.semvec.safetensors",
                     "--model.student", "lightning_semvec.models.SmallCNN",
                     "--model.student.width", "4", "--model.student.hidden", "16",
                     "--model.layer_map", "{classifier.3: net.classifier.3}"]) == 0
    teacher, student = (next(root.glob(f"lightning_logs/version_{v}/checkpoints/*.ckpt")) for v in (0, 1))
    assert teacher.name == student.name  # the case where the sources must be told apart
    return teacher, student


def test_a_teacher_and_its_distilled_student_in_one_space(runs, tmp_path, capsys):
    teacher, student = runs
    out = tmp_path / "out"
    # Before: "does not rebuild as ImageClassifier (Error(s) in loading state_dict for
    # ImageClassifier:)". The student's layers default to the teacher's, read in its network.
    assert main(["embed", str(teacher), "digits", "net.features.2,net.classifier.1", str(out),
                 "--compare", str(student), "--names", "teacher,student",
                 "--max_matching_rows", "3", *FAST]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    path = out / "teacher-vs-student.semvec.safetensors"
    assert f"Knowledge file: {path}" in printed
    knowledge = StaticKnowledge.load(path)
    assert knowledge.layer_names == ["teacher/net.features.2", "teacher/net.classifier.1",
                                     "student/student.features.2", "student/student.classifier.1"]
    assert knowledge["student/student.classifier.1"].vectors.shape == (16, 4)  # hidden=16
    assert knowledge.extra["embedded_from"] == "version_0/checkpoints/epoch=0-step=3.ckpt"
    assert knowledge.extra["compared_with"] == "version_1/checkpoints/epoch=0-step=3.ckpt"
    assert "student: lightning_semvec.distillation.student.StudentModule" in knowledge.source_model
    # The summary: a heading, then per layer pair a count line and at most 3 ranked rows and
    # one "... N more" line.
    lines = printed.splitlines()
    start = lines.index("Matching teacher → student (each neuron of teacher with its nearest neuron "
                        "of student in the joint space, by correlation):")
    summary = lines[start + 1:lines.index(f"Knowledge file: {path}")]
    # First the CKA between the layers, as stored in the file.
    cka = stored_cka(knowledge)
    assert cka is not None and cka.minibatches >= 1
    assert cka.features == "flattened"  # by default, as the field compares layers
    assert summary[0] == ("  Linear CKA between the layers (rows: teacher, columns: student; "
                          f"{cka.minibatches} minibatches; each layer's whole output per input, "
                          "flattened):")
    assert summary[1].split() == ["student.features.2", "student.classifier.1"]
    block = cka.block(knowledge.layer_names[:2], knowledge.layer_names[2:])
    for line, layer, values in zip(summary[2:4], ["net.features.2", "net.classifier.1"], block.tolist()):
        assert line.split() == [layer, *(f"{v:.3f}" for v in values)], line
    assert block[1, 1] > block[0, 1]  # the student's classifier is most like the teacher's
    summary = summary[4:]
    if any(line.startswith("  Hubs: ") for line in summary):  # hubs come last, explained
        hubs = next(i for i, line in enumerate(summary) if line.startswith("  Hubs: "))
        assert all(re.match(r"    student neuron student\.\S+ #\d+ is the best match of \d+ teacher "
                            "neurons: it carries what they share", line) for line in summary[hubs + 1:])
        summary = summary[:hubs]
    pairs = [i for i, line in enumerate(summary) if re.match(r"  teacher/net\.\S+ → student/student\.\S+: ", line)]
    assert pairs and summary[pairs[0]].startswith("  teacher/net.features.2 → student/student.")
    matched = 0
    for begin, end in zip(pairs, [*pairs[1:], len(summary)]):
        found = re.search(r": (\d+) of (32|64) neurons matched there, mean correlation (-?[01]\.\d{3}), (\d+) "
                          "mutual$", summary[begin])
        assert found, summary[begin]
        matched += int(found.group(1))
        rows = [line for line in summary[begin + 1:end] if not line.startswith("    ... ")]
        assert 1 <= len(rows) <= 3 and all(re.match(r"    +\d+\. #\d+ → #\d+: correlation .*, class \d → \d", r)
                                           for r in rows), rows  # the digits' classes: 0 to 9
        assert len(summary[begin + 1:end]) - len(rows) == (int(found.group(1)) > 3)
    dead = sum(int(m.group(1)) for m in (re.search(r": (\d+) of \d+ neurons are dead", line) for line in summary) if m)
    assert matched + dead == 32 + 64
    assert "Matching: teacher → student" in (out / "report" / "index.html").read_text()


def test_embed_model_takes_the_student_layers_and_the_classes_by_name(runs, tmp_path, capsys):
    teacher, student = runs
    path = embed_model(str(teacher), "digits", "net.classifier.3", str(tmp_path / "out"), dim=3,
                       split="val", accelerator="cpu", compare=str(student),
                       compare_layers="student.classifier.1",
                       compare_model_class="lightning_semvec.distillation.StaticDistillationModule",
                       model_class="lightning_semvec.models.ImageClassifier", max_matching_rows=0)
    assert path.name == "version_0-vs-version_1.semvec.safetensors"
    assert StaticKnowledge.load(path).layer_names == ["version_0/net.classifier.3",
                                                      "version_1/student.classifier.1"]
    summary = capsys.readouterr().out.splitlines()
    pair = [line for line in summary if line.startswith("  version_0/net.classifier.3 → ")]
    assert pair and not [line for line in summary if re.match(r" +\d+\. #", line)]  # 0 rows


def test_a_distilled_student_alone_is_rebuilt_as_what_wrote_it(runs, tmp_path):
    _, student = runs
    assert main(["embed", str(student), "digits", "student.classifier.1", str(tmp_path / "out"), *FAST]) == 0
    # Named after its run (lightning_logs/version_1), not "epoch=0-step=3" as every run's is.
    knowledge = StaticKnowledge.load(tmp_path / "out" / "version_1.semvec.safetensors")
    assert knowledge.layer_names == ["student.classifier.1"] and knowledge.training_steps == 3


def test_the_knowledge_file_is_named_after_the_run_the_file_or_names(runs, tmp_path, capsys):
    teacher, _ = runs
    away = tmp_path / "teacher-final.ckpt"  # outside a run folder: its own name says most
    shutil.copy(teacher, away)
    for source, extra, name in ((teacher, [], "version_0"), (away, [], "teacher-final"),
                                (teacher, ["--names", "my.teacher"], "my.teacher")):
        out = tmp_path / f"out-{name}"
        assert main(["embed", str(source), "digits", "net.classifier.3", str(out), *extra,
                     *FAST]) == 0, capsys.readouterr().err
        assert f"Knowledge file: {out / f'{name}.semvec.safetensors'}" in capsys.readouterr().out
        assert [p.name for p in out.glob("*.semvec.safetensors")] == [f"{name}.semvec.safetensors"]
    assert main(["embed", str(teacher), "digits", "net.classifier.3", str(tmp_path / "o"),
                 "--names", "a,b"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and (
        "--names 'a,b': 2 names; without --compare give one name (it names the knowledge file), of "
        "letters") in error
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--names", "teacher"], "--names 'teacher': 1 name; give two different names, comma-separated"),
        (["--names", "a,b,c"], "--names 'a,b,c': 3 names;"),
        (["--names", "same,same"], "--names 'same,same': both are 'same';"),
        (["--names", "teacher,"], "--names 'teacher,': '' is not a name;"),
        (["--names", "teacher,../x"], "--names 'teacher,../x': '../x' is not a name;"),
        (["--names", "a/b,c"], "--names 'a/b,c': 'a/b' is not a name;"),
        (["--max_matching_rows", "-1"], "max_matching_rows must be an integer >= 0, got -1."),
        (["--compare_model_class", "lightning_semvec.models.ImageClassifier"],
         "epoch=0-step=3.ckpt does not rebuild as ImageClassifier (Error(s) in loading state_dict for "
         "ImageClassifier: missing keys net.features.0.weight, net.features.0.bias, net.features.2.weight, "
         "... (8 in all); unexpected keys "),
        (["--compare_layers", "classifier.1"],
         "--compare_layers: Layer 'classifier.1' matches no module of StudentModule. Closest module "
         "names: student.classifier.1"),
        (["--compare_layers", " , "], "--compare_layers is empty"),
    ],
)
def test_bad_compare_options_are_one_line_and_write_nothing(runs, tmp_path, capsys, extra, message):
    teacher, student = runs
    out = tmp_path / "out"
    assert main(["embed", str(teacher), "digits", "net.classifier.1", str(out), "--compare", str(student),
                 *extra, *FAST]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("semvec embed: error: ") and len(error.splitlines()) == 1, error
    assert message in error
    assert not out.exists()


def test_compare_options_without_compare_are_one_line(runs, tmp_path, capsys):
    teacher, _ = runs
    assert main(["embed", str(teacher), "digits", "net.classifier.1", str(tmp_path / "out"),
                 "--compare_weights", "w.pt", "--compare_layers", "x"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and (
        "--compare_weights, --compare_layers go with --compare (the second model)") in error
    assert not (tmp_path / "out").exists()


def test_a_student_away_from_its_run_folder_says_where_its_config_belongs(runs, tmp_path, capsys):
    _, student = runs
    alone = tmp_path / "student.ckpt"
    shutil.copy(student, alone)
    assert main(["embed", str(alone), "digits", "student.classifier.1", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and (
        f"{alone} was written by StaticDistillationModule (semvec distill), which saves no "
        "hyperparameters: its student network is rebuilt from the config.yaml") in error


def test_a_run_config_naming_a_module_outside_the_package_is_refused_before_importing_it(
        runs, tmp_path, capsys):
    _, student = runs
    run = tmp_path / "version_9"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(student, run / "checkpoints" / "s.ckpt")
    (run / "config.yaml").write_text("model:\n  student:\n    class_path: this.Nothing\n")
    sys.modules.pop("this", None)
    assert main(["embed", str(run / "checkpoints" / "s.ckpt"), "digits", "student.classifier.1",
                 str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert "this" not in sys.modules and "Beautiful is better" not in captured.out
    error = captured.err.strip()
    assert len(error.splitlines()) == 1 and (
        f"{run / 'config.yaml'} names 'this.Nothing' to import (model.student.class_path); without "
        "--trust-checkpoint only lightning_semvec, torchvision, torch and the --model_class you name") in error


def test_sources_with_one_file_name_are_told_apart_by_their_folders(tmp_path):
    a, b = tmp_path / "run_a" / "checkpoints" / "x.ckpt", tmp_path / "run_b" / "checkpoints" / "x.ckpt"
    for path in (a, b):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
    assert _distinct_sources((str(a), None), (str(b), None)) == (
        "run_a/checkpoints/x.ckpt", "run_b/checkpoints/x.ckpt")
    assert _distinct_sources((str(a), None), (str(tmp_path / "y.ckpt"), None)) == ("x.ckpt", "y.ckpt")
    assert _distinct_sources(("resnet18", str(a)), ("resnet18", str(b))) == (
        "resnet18 (run_a/checkpoints/x.ckpt)", "resnet18 (run_b/checkpoints/x.ckpt)")
    assert _distinct_sources((str(a), None), (str(a), None)) == ("x.ckpt", "x.ckpt")  # one file twice


def test_the_summary_is_per_layer_pair_bounded_and_names_dead_neurons():
    # a/fc's 5 neurons match b/fc's, a/fc's last is dead; a/conv's 1 neuron matches b/conv's.
    a_fc = torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0.8, 0.3, 0], [0.7, 0.5, 0], [0, 0, 0]])
    extra = {"joint/models": '["a", "b"]', "joint/matching/a/b": (
        '{"neuron":[0,0,0,0,-1,1],"correlation":[0.9,0.8,0.7,0.6,null,0.5]}')}
    knowledge = StaticKnowledge.from_vectors(
        {"a/fc": a_fc, "a/conv": torch.tensor([[0.0, 0, 1]]),
         "b/fc": torch.tensor([[1.0, 0, 0]]), "b/conv": torch.tensor([[0.0, 0, 1]])}, extra=extra)
    assert matching_summary(knowledge, 3) == [
        "Matching a → b (each neuron of a with its nearest neuron of b in the joint space, by correlation):",
        "  a/fc → b/fc: 4 of 5 neurons matched there, mean correlation 0.750, 1 mutual",
        "    1. #0 → #0: correlation 0.900, cosine 1.000, mutual",
        "    2. #1 → #0: correlation 0.800, cosine 0.994",
        "    ... 1 more",
        "    4. #3 → #0: correlation 0.600, cosine 0.814",
        "  a/fc: 1 of 5 neurons are dead (zero vectors), not matched",
        "  a/conv → b/conv: 1 of 1 neurons matched there, mean correlation 0.500, 1 mutual",
        "    1. #0 → #0: correlation 0.500, cosine 1.000, mutual",
    ]
    assert len(matching_summary(knowledge, 0)) == 4
    assert matching_summary(StaticKnowledge.from_vectors({"fc": torch.eye(2)}), 5) == []


def test_torch_load_state_dict_errors_keep_what_is_wrong_on_one_line():
    err = RuntimeError('Error(s) in loading state_dict for M:\n\tMissing key(s) in state_dict: "a". \n\t'
                       'size mismatch for b: copying a param with shape [2] from checkpoint.')
    assert short_error(err) == ("Error(s) in loading state_dict for M: missing keys a; size mismatch for b: "
                                "copying a param with shape [2] from checkpoint.")
    assert short_error(RuntimeError("")) == "RuntimeError"
    assert len(short_error(RuntimeError("x" * 1000))) == 240


def test_the_summary_prints_the_cka_classes_and_hubs():
    e = torch.eye(3)
    vectors = {"a/fc": torch.stack([e[0] + 0.01 * k * e[2] for k in range(5)] + [e[1]]),
               "b/fc": torch.stack([e[0], e[1], e[2], -e[0]])}
    cka = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    knowledge = StaticKnowledge.from_vectors(
        vectors, class_names=["cat", "dog", "emu"],
        statistics={"a/fc": {"preferred_class": torch.tensor([0, 0, 1, 0, 0, 2])},
                    "b/fc": {"preferred_class": torch.tensor([0, 1, 2, 1])}},
        extra={"joint/models": '["a", "b"]', CKA_KEY: cka_record(["a/fc", "b/fc"], cka, 9)})
    lines = matching_summary(knowledge, 2)
    assert lines[:4] == [
        "Matching a → b (each neuron of a with its nearest neuron of b in the joint space, by cosine):",
        "  Linear CKA between the layers (rows: a, columns: b; 9 minibatches; each layer's whole "
        "output per input, flattened):",
        "           fc",
        "    fc  0.800",
    ]
    assert lines[5] == "    1. #0 → #0: cosine 1.000, mutual, class cat → cat, hub (best match of 5)"
    assert lines[-2].startswith("  Hubs: A hub is a neuron of b that is the best match of more than 3 "
                                "neurons of a and of more than 3 times the 1.5 ")
    assert lines[-1] == ("    b neuron fc #0 is the best match of 5 a neurons: it carries what they "
                         "share, so its matches are not one-to-one.")


def test_a_wide_cka_table_numbers_its_columns():
    columns = [f"student.features.block{i}.conv" for i in range(5)]
    lines = cka_table(torch.full((1, 5), 0.5), ["net.fc"], columns)
    assert lines[0].split() == ["[1]", "[2]", "[3]", "[4]", "[5]"]
    assert lines[1].split() == ["net.fc", *["0.500"] * 5]
    assert lines[2] == "columns: " + ", ".join(f"[{i + 1}] {c}" for i, c in enumerate(columns))
    assert max(len(line) for line in lines[:2]) <= 100
