"""Smoke runs of the benchmark scripts in their --quick mode (seconds each)."""

from __future__ import annotations

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
            "--output", str(output), "--workdir", str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    table = output.read_text()
    assert "Command: `python benchmarks/distillation_benchmark.py --quick" in table
    for method in ("plain", "kd", "rkd", "sp", "cc", "pkt", "static", "soft_targets", "label_smoothing"):
        assert f"| {method} |" in table, method
    assert (tmp_path / "teacher.semvec.safetensors").exists()


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
