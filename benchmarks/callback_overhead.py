"""Cost of SemanticVectorCallback: training-step time with it over without, and the peak memory
it adds, measured side by side in one run.

    python benchmarks/callback_overhead.py            # full run (about 2-3 minutes on 2 cores)
    python benchmarks/callback_overhead.py --quick    # smoke run

Each (case, variant, repetition) runs in a fresh subprocess, variants interleaved, so that the
peak resident memory (ru_maxrss) of a run with the callback can be compared with one without:
their difference is what the callback adds. Step time is the median of per-step wall times
after warm-up steps; the ratio reported is the median over repetitions of with / without.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

CASES: dict[str, dict[str, Any]] = {
    # A small CNN at CIFAR size: both conv stages' outputs (after ReLU) and the logits.
    "small_cnn_32x32": dict(
        kind="cnn", batch=128, layers=["net.features.1", "net.features.3", "net.classifier.3"]
    ),
    # One Linear layer of 16,384 neurons, d = 32, batch 128.
    "linear_16384": dict(kind="linear", batch=128, width=16384, layers=["net.wide"]),
}


def _worker(case: str, with_callback: bool, steps: int, warmup: int) -> dict[str, float]:
    import lightning.pytorch as pl
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_semvec import SemanticVectorCallback
    from lightning_semvec.models import ImageClassifier, SmallCNN

    spec = CASES[case]
    torch.manual_seed(0)
    if spec["kind"] == "cnn":
        net: nn.Module = SmallCNN(in_channels=3, num_classes=10, width=32, hidden=128)
        x = torch.randn(spec["batch"] * 4, 3, 32, 32)
    else:
        class Wide(nn.Module):
            def __init__(self, width: int) -> None:
                super().__init__()
                self.wide = nn.Linear(256, width)
                self.head = nn.Linear(width, 10)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.head(torch.relu(self.wide(x)))

        net = Wide(spec["width"])
        x = torch.randn(spec["batch"] * 4, 256)
    y = torch.randint(0, 10, (x.shape[0],))
    model = ImageClassifier(net, num_classes=10, lr=1e-3)
    loader = DataLoader(TensorDataset(x, y), batch_size=spec["batch"], shuffle=True)

    times: list[float] = []

    class StepTimer(pl.Callback):
        def on_train_batch_start(self, *args: Any) -> None:
            self.start = time.perf_counter()

        def on_train_batch_end(self, *args: Any) -> None:
            times.append(time.perf_counter() - self.start)

    callbacks: list[pl.Callback] = [StepTimer()]
    if with_callback:
        # Hooks run inside the step, and the vector update in on_train_batch_end: the timer,
        # placed first, ends after the callback's update (callbacks run in list order).
        callbacks = [SemanticVectorCallback(layers=spec["layers"], dim=32), StepTimer()]
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=warmup + steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
    )
    trainer.fit(model, loader)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"step_s": statistics.median(times[warmup:]), "peak_mib": peak_mib}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 repetition of 4 steps")
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "WITH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = _worker(args.worker[0], args.worker[1] == "1", args.steps, args.warmup)
        print("RESULT " + json.dumps(result))
        return
    if args.quick:
        args.reps, args.steps, args.warmup = 1, 4, 1
    rows = []
    for case in CASES:
        runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for _ in range(args.reps):
            for with_callback in (False, True):
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", case, "1" if with_callback else "0",
                     "--steps", str(args.steps), "--warmup", str(args.warmup)],
                    capture_output=True, text=True, check=True,
                ).stdout
                line = next(l for l in out.splitlines() if l.startswith("RESULT "))
                runs[with_callback].append(json.loads(line[7:]))
        ratios = [w["step_s"] / o["step_s"] for o, w in zip(runs[False], runs[True])]
        added = [w["peak_mib"] - o["peak_mib"] for o, w in zip(runs[False], runs[True])]
        rows.append((case, statistics.median(o["step_s"] for o in runs[False]) * 1e3,
                     statistics.median(w["step_s"] for w in runs[True]) * 1e3,
                     statistics.median(ratios), statistics.median(added)))
    print(f"{'case':<18} {'step ms (off)':>14} {'step ms (on)':>13} {'ratio':>7} {'added peak MiB':>15}")
    for case, off, on, ratio, added in rows:
        print(f"{case:<18} {off:>14.2f} {on:>13.2f} {ratio:>7.3f} {added:>15.1f}")


if __name__ == "__main__":
    main()
