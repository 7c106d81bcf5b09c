"""Smoke runs of the benchmark scripts in their --quick mode (seconds each)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

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
