"""Smoke runs of the benchmark scripts in their --quick mode (seconds each)."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Each test starts a benchmark script in a fresh interpreter (tens of seconds on 2 cores).
pytestmark = pytest.mark.slow


def test_distillation_benchmark_quick(tmp_path: Path) -> None:
    output = tmp_path / "results.md"
    completed = subprocess.run(
        [
            sys.executable, str(ROOT / "benchmarks" / "distillation_benchmark.py"), "--quick",
            "--output", str(output), "--workdir", str(tmp_path), "--json", str(tmp_path / "run.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    table = output.read_text()
    assert "Command: `python benchmarks/distillation_benchmark.py --quick" in table
    for method in ("plain", "kd", "rkd", "sp", "cc", "pkt", "static", "static_shuffled", "static_random",
                   "static_untrained", "class_soft_targets", "class_soft_targets_untrained",
                   "label_smoothing", "tfkd_reg"):
        assert f"| {method} |" in table, method
    assert "[95 % CI]" in table
    # Each static form is set against its no-teacher controls, with a paired interval.
    assert re.search(r"\| class_soft_targets \| tfkd_reg \| [+-]\d+\.\d\d \[[+-]", table), table
    for name in ("teacher", "untrained"):
        assert (tmp_path / f"{name}.semvec.safetensors").exists()
    # The untrained teacher's knowledge went through the same export path, class statistics too.
    from lightning_semvec import StaticKnowledge

    untrained = StaticKnowledge.load(tmp_path / "untrained.semvec.safetensors")
    assert "class_means" in untrained.statistics("net.classifier.3")
    # The tables again from the saved numbers, without running anything.
    again = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "distillation_benchmark.py"), "--from-json",
         str(tmp_path / "run.json")], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert table.split("| method |", 1)[1].split("<!--")[0].strip() in again.stdout


def test_distillation_benchmark_quick_on_glyphs(tmp_path: Path) -> None:
    methods = "plain,kd,static_both,static_penultimate_shuffled,class_soft_targets,label_smoothing_matched"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "distillation_benchmark.py"), "--data", "glyphs", "--quick",
         "--methods", methods, "--workdir", str(tmp_path), "--output", str(tmp_path / "results.md")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "LIGHTNING_SEMVEC_CACHE": str(tmp_path / "cache")},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    table = (tmp_path / "results.md").read_text()
    assert "- Teacher: PooledCNN(width=32, hidden=64), 227,838 parameters" in table
    assert "1860 images of the 6 held-out fonts" in table and "on 1860 training images" in table
    for method in methods.split(","):
        assert f"| {method} |" in table, method
    # The penultimate pair is set against its own shuffled control.
    assert "| static_both | static_penultimate_shuffled |" in table


def test_projector_benchmark_compares_the_png_encoder_with_pillow_on_digits_and_noise(
    tmp_path: Path,
) -> None:
    completed = subprocess.run(
        [
            sys.executable, str(ROOT / "benchmarks" / "projector_benchmark.py"),
            "--neurons", "64", "--dim", "4", "--repeats", "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "write_embedding: median" in completed.stdout
    for sprite in ("noise", "digits"):  # both ratios in one run
        assert any(line.split()[:1] == [sprite] and line.endswith("x faster")
                   for line in completed.stdout.splitlines()), (sprite, completed.stdout)


def test_embedding_benchmark_quick(tmp_path: Path) -> None:
    output = tmp_path / "embedding.md"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "embedding_benchmark.py"), "--quick",
         "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    table = output.read_text()
    assert "Command: `python benchmarks/embedding_benchmark.py --quick`" in table
    assert "| steps | layer | N | online | finished | post hoc | optimum (held out) |" in table
    for step in (20, 40):
        assert f"| {step} | `net.classifier.2` | 128 |" in table, step
    for width in ("1,024", "4,096"):
        assert f"| {width} |" in table, width


def _comparison_module() -> ModuleType:
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    return importlib.import_module("comparison_benchmark")


def test_comparison_measures_on_known_cases() -> None:
    import copy

    import numpy as np
    import torch

    from lightning_semvec.models import PooledCNN

    comparison = _comparison_module()
    # A neuron's best teacher match: the same signal up to an affine map; a dead neuron is left
    # out, and a constant teacher neuron is nobody's match.
    g = np.random.default_rng(0)
    x, y = g.normal(size=200), g.normal(size=200)
    teacher = np.stack([x, y, np.full(200, 3.0)], axis=1)
    student = np.stack([2 * y + 1, x + 0.5 * y, np.zeros(200)], axis=1)
    matched = comparison.matched_correlation(student, teacher)
    assert (matched["alive_student"], matched["alive_teacher"]) == (2, 2)
    assert matched["match"][:2] == [1, 0] and matched["match"][2] == -1
    assert abs(matched["best"][0] - 1) < 1e-12 and np.isnan(matched["best"][2])
    expected = np.corrcoef(x + 0.5 * y, x)[0, 1]
    assert abs(matched["best"][1] - expected) < 1e-12
    assert abs(matched["mean"] - (1 + expected) / 2) < 1e-12
    # A network against itself with its logits permuted: CKA 1 on every layer (a permutation is
    # orthogonal), every neuron matched with correlation 1 to its own counterpart, and at the
    # logits neuron i pairs with teacher neuron i only where the permutation leaves it.
    torch.manual_seed(0)
    net = PooledCNN(1, 6, width=4, hidden=32)
    order = torch.tensor([1, 0, 2, 5, 3, 4])
    twin = copy.deepcopy(net)
    logits, twin_logits = net.get_submodule("classifier.3"), twin.get_submodule("classifier.3")
    assert isinstance(logits, torch.nn.Linear) and isinstance(twin_logits, torch.nn.Linear)
    with torch.no_grad():
        twin_logits.weight.copy_(logits.weight[order])
        twin_logits.bias.copy_(logits.bias[order])
    # Smooth random images: white noise leaves a freshly initialised network's logits nearly constant.
    images = torch.nn.functional.interpolate(torch.randn(100, 1, 8, 8), size=32, mode="bilinear")
    labels = torch.randint(0, 6, (100,))
    layers = comparison.LAYERS["glyphs"]
    result = comparison.compare(net, twin, layers, images, labels, batch=32)
    cka = np.array(result["cka"])
    assert cka.shape == (5, 5) and result["cka_batches"] == 4
    assert np.allclose(np.diagonal(cka), 1.0, atol=1e-6), np.diagonal(cka)
    for name in layers:
        assert abs(result["matched"][name]["mean"] - 1) < 1e-6, name
    assert result["matched"]["classifier.3"]["match"] == order.tolist()
    with torch.no_grad():
        outputs = net(images).double().numpy()
    expected_same = [np.corrcoef(outputs[:, order[i]], outputs[:, i])[0, 1] for i in range(6)]
    same = np.array(result["same_index"]["per_neuron"])
    assert np.allclose(same, expected_same, atol=1e-6) and abs(same[2] - 1) < 1e-6, same
    assert abs(result["same_index"]["mean"] - np.mean(expected_same)) < 1e-6
    assert result["own_accuracy"] == int((twin(images).argmax(1) == labels).sum()) / 100


def test_comparison_benchmark_quick_trains_the_distillation_benchmarks_students(tmp_path: Path) -> None:
    methods = "plain,class_soft_targets+static_w0.1,kd,class_soft_targets+static_w0.1_shuffled"
    # The distillation benchmark's own run of these students, then the comparison on its teacher.
    distill = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "distillation_benchmark.py"), "--quick", "--methods", methods,
         "--workdir", str(tmp_path), "--json", str(tmp_path / "distill.json")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert distill.returncode == 0, distill.stderr[-3000:]
    script = str(ROOT / "benchmarks" / "comparison_benchmark.py")
    argv = [sys.executable, script, "--data", "digits", "--quick", "--workdir", str(tmp_path),
            "--json", str(tmp_path / "run.json"), "--reference-json", str(tmp_path / "distill.json")]
    output = tmp_path / "results.md"
    completed = subprocess.run([*argv, "--output", str(output)], capture_output=True, text=True, timeout=300,
                               cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "reusing the teachers of" in completed.stdout  # the distillation benchmark's teacher
    table = output.read_text()
    assert table.startswith("<!-- benchmark:comparison:begin -->\nCommand: `python benchmarks/comparison_benchmark.py")
    for method in methods.split(","):  # the very students of the distillation benchmark
        assert f"{method}: 2 of 2 seeds equal to the saved run (largest difference 0.00 points)" in table, method
    for layer in ("features.1", "features.4", "classifier.2", "classifier.3",
                  "classifier.3 (neuron i vs teacher neuron i)"):
        assert f"\n| {layer} | " in table, layer
    assert table.count("| static − plain [95 % CI] | KD − plain [95 % CI] | static − KD [95 % CI] "
                       "| static − static, shuffled [95 % CI] |") == 2
    assert re.search(r"\| [+-]\d\.\d{3} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\] \|", table), table
    import json

    record = json.loads((tmp_path / "run.json").read_text())
    for seed in ("0", "1"):
        for method in methods.split(","):
            run = record["runs"][seed][method]
            assert len(run["cka"]) == 4 and all(len(r) == 4 for r in run["cka"])
            assert set(run["matched"]) == {"features.1", "features.4", "classifier.2", "classifier.3"}
    # Run again: every student is already saved, nothing is trained, the same table comes out.
    again = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "seed 1: every method already in" in again.stdout
    assert not re.search(r"^seed \d +\S+: test acc", again.stdout, flags=re.M), again.stdout
    body = table.split("Command:", 1)[1].split("<!--")[0]
    assert body.split("`", 2)[2] in again.stdout  # all but the command line
    # And from the saved numbers alone.
    saved = subprocess.run([sys.executable, script, "--from-json", str(tmp_path / "run.json"),
                            "--reference-json", str(tmp_path / "distill.json")],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert saved.returncode == 0, saved.stderr[-3000:]
    assert body.strip() in saved.stdout
