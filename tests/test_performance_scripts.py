"""The performance scripts run (tiny sizes) and the GPU check refuses cleanly without CUDA."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# Each test starts a benchmark script in a fresh interpreter (tens of seconds on 2 cores).
pytestmark = pytest.mark.slow


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=900,
                          cwd=cwd, env={"SEMVEC_BENCH_DIR": str(cwd), "PATH": "/usr/bin:/bin"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_check_refuses_without_cuda(tmp_path):
    done = run(str(ROOT / "benchmarks" / "gpu_check.py"), cwd=tmp_path)
    assert done.returncode == 2
    assert "no CUDA device is visible" in done.stderr


def test_gpu_check_runs_its_cpu_smoke_path(tmp_path):
    out = tmp_path / "gpu.json"
    done = run(str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu-smoke", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["device"].startswith("cpu") and results["precision"]["bf16-mixed"]["finite_vectors"]
    resnet = results["resnet50_callback"]
    assert {"ratio_on", "ratio_on_throughput", "host_syncs_in_update"} <= set(resnet)
    assert set(results["distillation"]) == {"plain_step_ms", "static_over_plain", "kd_over_plain"}


def test_performance_quick_writes_a_table(tmp_path):
    out = tmp_path / "table.md"
    done = run(str(ROOT / "benchmarks" / "performance.py"), "--quick", "--only", "linear_1024",
               "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    assert "| linear_1024 | callback |" in text and "cores" in text


def test_performance_rejects_an_unknown_case(tmp_path):
    done = run(str(ROOT / "benchmarks" / "performance.py"), "--only", "nothing", cwd=tmp_path)
    assert done.returncode == 2 and "matches no case" in done.stderr


def test_update_profile_prints_its_parts(tmp_path):
    done = run(str(ROOT / "benchmarks" / "profile_update.py"), "--steps", "3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    for part in ("readout hooks", "gradients (1 call(s)", "optimizer step", "rest (gather"):
        assert part in done.stdout, part
