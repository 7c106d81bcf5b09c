"""benchmarks/explanation_benchmark.py in its --quick mode: a one-epoch teacher (tens of seconds)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_explanation_benchmark_quick(tmp_path: Path) -> None:
    output = tmp_path / "results.md"
    output.write_text("# Results\n\n<!-- benchmark:explanation:begin -->\nold\n<!-- benchmark:explanation:end -->\n")
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "explanation_benchmark.py"), "--quick", "--permutations", "20",
         "--workdir", str(tmp_path), "--output", str(output)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "LIGHTNING_SEMVEC_CACHE": str(tmp_path / "cache")},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    text = output.read_text()
    assert "old" not in text and text.startswith("# Results")
    rows = [line for line in text.splitlines() if line.startswith("| logits") or line.startswith("| penultimate")]
    assert len(rows) == 8  # per layer: trained, untrained, chance, activation correlation
    for row in rows:
        rho = float(row.split("|")[3].split()[0])
        assert -1.0 <= rho <= 1.0
    # p-values lie in (0, 1], with 20 permutations at least 1/21.
    for p in re.findall(r"\| (\d\.\d{3}), (\d\.\d{3}) \|", text):
        assert all(1 / 21 - 1e-3 <= float(v) <= 1.0 for v in p)
    assert "The 15 pairs the teacher confuses most on the test fonts:" in text
