"""Every script in examples/ runs end to end with ``--smoke`` (a few batches, no download).

Each script runs in this process as ``python examples/<name>.py --smoke ...`` would run it
(``runpy`` with ``__name__ == "__main__"`` and that ``sys.argv``), which saves the seconds a
fresh interpreter spends importing torch and Lightning. The scripts seed every RNG and set
``PL_GLOBAL_SEED``; they are put back afterwards so that other tests are unaffected. The runs
use one intra-op thread: on a busy two-core machine (CI shares it with other jobs) two threads
made the tiny convolutions of the CIFAR smoke run some fifteen times slower, not faster.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import runpy
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets

from lightning_semvec import StaticKnowledge

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@contextlib.contextmanager
def _global_state_kept() -> Iterator[None]:
    environ = dict(os.environ)
    python_rng, numpy_rng = random.getstate(), np.random.get_state()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.random.fork_rng():
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            random.setstate(python_rng)
            np.random.set_state(numpy_rng)
            os.environ.clear()
            os.environ.update(environ)


def run_example(name: str, *args: str) -> str:
    """Run ``examples/<name>`` as a script; return what it printed. It must exit with 0."""
    path = EXAMPLES / name
    argv, sys.argv = sys.argv, [str(path), *args]
    out = io.StringIO()
    try:
        with _global_state_kept(), contextlib.redirect_stdout(out):
            with pytest.raises(SystemExit) as exit_info:
                runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv = argv
    assert exit_info.value.code == 0, out.getvalue()
    return out.getvalue()


@pytest.fixture(scope="module")
def digits_knowledge(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The first example's knowledge file (the second example distils from it) and output."""
    out = tmp_path_factory.mktemp("examples_out")
    printed = run_example("add_callback_to_your_trainer.py", "--smoke", "--out", str(out))
    return out / "digits_teacher.semvec.safetensors", printed


def test_every_example_has_a_smoke_test():
    tested = {"add_callback_to_your_trainer.py", "subclass_distillation_module.py",
              "cifar100_static_vs_kd_vs_rkd.py", "open_in_tensorboard.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_add_callback_to_your_trainer(digits_knowledge):
    path, printed = digits_knowledge
    assert "classifier  vectors (10, 8)" in printed and "features.3  vectors (32, 8)" in printed
    assert "digit: the digit whose logit neuron is most similar" in printed
    knowledge = StaticKnowledge.load(path)
    assert knowledge.layer_names == ["features.1", "features.3", "classifier"]
    assert knowledge.class_names == [str(d) for d in range(10)]


def test_subclass_distillation_module(digits_knowledge):
    path, _ = digits_knowledge
    printed = run_example("subclass_distillation_module.py", "--smoke", "--knowledge", str(path))
    assert "Linear(in_features=16, out_features=32, bias=False)" in printed
    assert "val/static_loss/classifier" in printed and "val/static_loss/features.3" in printed
    assert "Student test accuracy:" in printed


def test_subclass_distillation_module_without_knowledge(tmp_path, capsys):
    path = EXAMPLES / "subclass_distillation_module.py"
    main = runpy.run_path(str(path))["main"]
    assert main(["--knowledge", str(tmp_path / "missing.semvec.safetensors")]) == 2
    assert "add_callback_to_your_trainer.py" in capsys.readouterr().err


def test_cifar100_static_vs_kd_vs_rkd(tmp_path):
    checksums = datasets.CIFAR100.train_list, datasets.CIFAR100.test_list, datasets.CIFAR100.meta
    printed = run_example("cifar100_static_vs_kd_vs_rkd.py", "--smoke", "--out", str(tmp_path))
    assert "resnet20 -> resnet8x4 on CIFAR-100" in printed
    for method in ("static", "kd", "rkd"):
        assert f"  {method} " in printed
    knowledge = StaticKnowledge.load(tmp_path / "resnet20.semvec.safetensors")
    assert knowledge["net.fc"].num_neurons == 100 and len(knowledge.class_names) == 100
    # the fake data's checksums were only in force during the run
    assert (datasets.CIFAR100.train_list, datasets.CIFAR100.test_list,
            datasets.CIFAR100.meta) == checksums


def test_cifar100_without_its_files_names_this_scripts_download_flag(tmp_path, capsys):
    """Not the datamodule's `--data.download true`, which this script does not take."""
    path = EXAMPLES / "cifar100_static_vs_kd_vs_rkd.py"
    argv, sys.argv = sys.argv, [str(path), "--data-dir", str(tmp_path / "data"),
                                "--out", str(tmp_path / "out")]
    try:
        with _global_state_kept(), pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv = argv
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "CIFAR-100 files not found in" in err and "Pass --download to fetch them" in err
    assert "--data.download" not in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_open_in_tensorboard(tmp_path, recwarn):
    printed = run_example("open_in_tensorboard.py", "--smoke", "--out", str(tmp_path))
    # The example uses no deprecated argument of ours (write_report's log_dir was one).
    assert not [str(w.message) for w in recwarn if issubclass(w.category, FutureWarning)
                and w.filename.endswith("open_in_tensorboard.py")]
    assert f"tensorboard --logdir {tmp_path}" in printed
    run = tmp_path / "digits" / "version_0"
    assert list(run.glob("events.out.tfevents.*")) and (run / "projector_config.pbtxt").is_file()
    assert StaticKnowledge.load(run / "digits.semvec.safetensors")["net.classifier.3"].dim == 8
    assert "Offline report:" in printed and (tmp_path / "report" / "index.html").is_file()
