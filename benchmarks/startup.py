"""Start-up time of the ``semvec`` commands against ``import lightning.pytorch``, side by side.

Each command runs ``--reps`` times in a fresh interpreter, interleaved with the others (so a
busy spell of the machine touches all alike); the table gives the median wall time, its range
and the ratio to the Lightning import measured in the same run. Target (issue 20): ``semvec
--help`` at most half of ``import lightning.pytorch``.

    python benchmarks/startup.py --reps 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# a misspelt command answers with usage and exit status 2; every other command must succeed
EXPECTED_STATUS = {"semvec fitt (misspelt)": 2}


def commands(knowledge: Path, out: Path) -> dict[str, list[str]]:
    semvec = [sys.executable, "-m", "lightning_semvec"]
    return {
        "import lightning.pytorch": [sys.executable, "-c", "import lightning.pytorch"],
        "semvec --help": [*semvec, "--help"],
        "semvec fitt (misspelt)": [*semvec, "fitt"],
        "semvec report --help": [*semvec, "report", "--help"],
        "semvec export --help": [*semvec, "export", "--help"],
        "semvec embed --help": [*semvec, "embed", "--help"],
        "semvec report K OUT": [*semvec, "report", str(knowledge), str(out)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        knowledge = Path(tmp) / "k.semvec.safetensors"
        subprocess.run([sys.executable, "-c", "import torch; from lightning_semvec import StaticKnowledge; "
                        f"StaticKnowledge.from_vectors({{'fc': torch.randn(10, 4)}}).save({str(knowledge)!r})"],
                       check=True)
        table = commands(knowledge, Path(tmp) / "report")
        times: dict[str, list[float]] = {name: [] for name in table}
        status: dict[str, set[int]] = {name: set() for name in table}
        for _ in range(args.reps):
            for name, argv in table.items():
                start = time.perf_counter()
                done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
                times[name].append(time.perf_counter() - start)
                status[name].add(done.returncode)
                if done.returncode != EXPECTED_STATUS.get(name, 0):  # a failing command is no timing
                    raise SystemExit(f"{name} exited {done.returncode}:\n{done.stderr.decode()[-2000:]}")
    base = statistics.median(times["import lightning.pytorch"])
    print(f"{'command':<28}{'median (s)':>11}{'range (s)':>16}{'vs Lightning':>14}{'exit':>6}")
    for name, values in times.items():
        median = statistics.median(values)
        exits = ",".join(str(code) for code in sorted(status[name]))
        print(f"{name:<28}{median:>11.2f}{f'{min(values):.2f} to {max(values):.2f}':>16}{median / base:>14.2f}{exits:>6}")


if __name__ == "__main__":
    main()
