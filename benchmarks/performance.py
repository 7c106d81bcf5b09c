"""The one benchmark entry point: what our code costs, as ratios over the same work without it.

    python benchmarks/performance.py                  # full run, writes docs/performance-table.md
    python benchmarks/performance.py --quick          # smoke run (1 repetition, few steps)
    python benchmarks/performance.py --only linear    # cases whose name contains "linear"

Time: for each repetition, the baseline and the variant are fitted one after the other in one
fresh subprocess (in alternating order from one repetition to the next), so that what differs
between processes (allocator state, core placement) cancels out of their ratio. Step time is
the median per-step wall time after warm-up steps (for ``demo_cnn``, of the means of blocks of
10 steps); cases with short steps time several times the asked number of steps (``scale`` in
``CASES``). A ratio is the median over repetitions, and its range is shown. Memory: each
variant also runs alone in a subprocess, and its peak resident memory (``ru_maxrss``) minus the
baseline's is what our code adds. Cases:

- ``demo_cnn``: the demo CNN (``SmallCNN(width=16, hidden=64)``) on 8 x 8 digits-sized inputs,
  batch 64, callback on ``net.features.*`` and the logits; updating at every step (default)
  and every 10th step (``every_n_steps=10``).
- ``cnn4_28x28``: a 4-layer CNN (convolutions of 16, 32, 32 and 64 channels, two max-pools)
  on 28 x 28 inputs, batch 128, the four convolutions and the logits hooked; updating at every
  step.
- ``resnet20_32x32``: CIFAR ResNet-20 at 32 x 32, batch 128, every stage output and the logits.
- ``linear_<N>``: one ``Linear(256, N)`` layer, N = 1,024 ... 65,536, d = 32, batch 128.
- ``distill``: a ``SmallCNN(width=8)`` student at 32 x 32, batch 128: static distillation, KD
  and RKD (with a ``SmallCNN(width=32)`` teacher, about 16 times the student's conv compute)
  over the plain student.
- ``epoch_end``: the callback's validation-epoch work (statistics, fidelity, projector files,
  figures) on the demo CNN over 270 validation digits, over the same validation without it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LINEAR_WIDTHS = (1024, 4096, 16384, 65536)
CASES: dict[str, dict[str, Any]] = {
    # Step times of this case are means over blocks of 10 steps (then the median over blocks),
    # so that the every-10th-step variant's cost is spread over the steps it covers.
    "demo_cnn": dict(baseline="plain", variants=["callback", "callback_every_10"],
                     block=10, scale=10),
    "cnn4_28x28": dict(baseline="plain", variants=["callback"], scale=2),
    "resnet20_32x32": dict(baseline="plain", variants=["callback"]),
    **{f"linear_{n}": dict(baseline="plain", variants=["callback"], width=n,
                           scale=max(1, 16384 // n)) for n in LINEAR_WIDTHS},
    "distill": dict(baseline="plain", variants=["static", "kd", "rkd"], scale=5),
    "epoch_end": dict(baseline="plain", variants=["callback"]),
}


def _build(case: str, variant: str) -> tuple[Any, Any, list[Any], dict[str, Any]]:
    """Model, data loader, callbacks and extra Trainer arguments for one run."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_semvec import (
        SemanticVectorCallback,
        StaticDistillationModule,
        StaticKnowledge,
    )
    from lightning_semvec.distillation import TeacherDistillationModule
    from lightning_semvec.models import ImageClassifier, SmallCNN, resnet20

    torch.manual_seed(0)
    spec = CASES[case]
    callbacks: list[Any] = []
    trainer_args: dict[str, Any] = {"limit_val_batches": 0}

    def loader(shape: tuple[int, ...], batch: int, classes: int = 10) -> DataLoader:
        x = torch.randn(batch * 4, *shape)
        return DataLoader(TensorDataset(x, torch.randint(0, classes, (x.shape[0],))),
                          batch_size=batch, shuffle=True)

    if case in ("demo_cnn", "epoch_end"):
        model = ImageClassifier(SmallCNN(1, 10, width=16, hidden=64))
        layers = ["net.features.*", "net.classifier.3"]
        if case == "epoch_end":
            from lightning_semvec.data import DigitsDataModule

            data = DigitsDataModule(batch_size=64)
            data.setup("fit")
            train = data.train_dataloader()
            trainer_args = {"val_dataloaders": data.val_dataloader(), "limit_train_batches": 2}
        else:
            train = loader((1, 8, 8), 64)
        if variant == "callback":
            callbacks.append(SemanticVectorCallback(layers=layers, dim=16))
        elif variant == "callback_every_10":
            callbacks.append(SemanticVectorCallback(layers=layers, dim=16, every_n_steps=10))
        return model, train, callbacks, trainer_args
    if case == "cnn4_28x28":
        net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
        model = ImageClassifier(net)
        if variant != "plain":
            callbacks.append(SemanticVectorCallback(
                layers=["net.0", "net.2", "net.5", "net.7", "net.12"], dim=16, analysis=None))
        return model, loader((1, 28, 28), 128), callbacks, trainer_args
    if case == "resnet20_32x32":
        model = ImageClassifier(resnet20(num_classes=10), in_channels=3)
        if variant == "callback":
            callbacks.append(SemanticVectorCallback(
                layers=["net.layer1", "net.layer2", "net.layer3", "net.fc"], dim=32,
                analysis=None))
        return model, loader((3, 32, 32), 128), callbacks, trainer_args
    if case.startswith("linear_"):
        class Wide(nn.Module):
            def __init__(self, width: int) -> None:
                super().__init__()
                self.wide = nn.Linear(256, width)
                self.head = nn.Linear(width, 10)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.head(torch.relu(self.wide(x)))

        model = ImageClassifier(Wide(spec["width"]))
        if variant == "callback":
            callbacks.append(SemanticVectorCallback(layers="net.wide", dim=32, analysis=None))
        return model, loader((256,), 128), callbacks, trainer_args
    # distill
    student = SmallCNN(3, 10, width=8, hidden=32)
    if variant == "plain":
        model = ImageClassifier(student, in_channels=3)
    elif variant == "static":
        knowledge = StaticKnowledge.from_vectors({"net.classifier.3": torch.randn(10, 16)},
                                                 class_names=[str(i) for i in range(10)])
        model = StaticDistillationModule(student=student, knowledge=knowledge,
                                         layer_map={"classifier.3": "net.classifier.3"})
    else:
        teacher = SmallCNN(3, 10, width=32, hidden=128)
        model = TeacherDistillationModule(
            student=student, teacher=teacher, num_classes=10, method=variant,
            student_feature_layer="classifier.2", teacher_feature_layer="classifier.2")
    return model, loader((3, 32, 32), 128), callbacks, trainer_args


def fit_timed(
    case: str, variant: str, max_steps: int, logger: bool = True,
    patch: Callable[[Any], None] | None = None,
) -> tuple[list[float], list[float]]:
    """Fit one (case, variant) in this process: seconds of every training step and validation.

    ``patch`` is called with the callbacks list before fitting (``profile_update.py`` wraps
    the callback's parts with timers through it).
    """
    import lightning.pytorch as pl

    model, train, callbacks, trainer_args = _build(case, variant)
    if patch is not None:
        patch(callbacks)
    times: list[float] = []
    validation: list[float] = []

    class Timer(pl.Callback):
        # Placed after our callbacks, so each interval ends after their work.
        def on_train_batch_start(self, *args: Any) -> None:
            self.start = time.perf_counter()

        def on_train_batch_end(self, *args: Any) -> None:
            times.append(time.perf_counter() - self.start)

        def on_validation_start(self, *args: Any) -> None:
            self.val_start = time.perf_counter()

        def on_validation_end(self, *args: Any) -> None:
            validation.append(time.perf_counter() - self.val_start)

    val_loader = trainer_args.pop("val_dataloaders", None)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=max_steps, max_epochs=1 if case == "epoch_end" else None,
        logger=pl.loggers.TensorBoardLogger(os.environ.get("SEMVEC_BENCH_DIR", "/tmp/semvec_bench"))
        if logger else False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, callbacks=[*callbacks, Timer()], **trainer_args,
    )
    trainer.fit(model, train, val_loader)
    return times, validation


def _fit_once(case: str, variant: str, steps: int, warmup: int) -> float:
    """Median (or block-mean, see ``CASES``) seconds per step of one fit in this process."""
    # Short steps are timed over more of them (``scale``), so that each run lasts long enough
    # for the machine's drift to average out.
    block = CASES[case].get("block", 1)
    steps *= CASES[case].get("scale", 1)
    times, validation = fit_timed(case, variant, -1 if case == "epoch_end" else warmup + steps)
    if case == "epoch_end":
        return statistics.median(validation)
    timed = times[warmup:]
    blocks = [statistics.fmean(timed[i : i + block]) for i in range(0, len(timed) - block + 1, block)]
    return statistics.median(blocks or [statistics.fmean(timed)])


def _worker(case: str, variants: list[str], steps: int, warmup: int, threads: int) -> dict[str, float]:
    """Fit each of ``variants`` in turn in this process: step seconds each, and the peak RSS."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    result = {variant: _fit_once(case, variant, steps, warmup) for variant in variants}
    result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _run(case: str, variants: list[str], steps: int, warmup: int, threads: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", case, ",".join(variants), "--steps", str(steps),
         "--warmup", str(warmup), "--threads", str(threads)],
        capture_output=True, text=True,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{case}/{variants} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, torch {torch.__version__}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 repetition of 3 steps")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads per run (0: torch's default). On a shared "
                        "machine, 1 keeps a busy neighbour from stalling every parallel op")
    parser.add_argument("--only", default=None, help="run the cases whose name contains this")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "performance-table.md"),
                        help="markdown file to write the table to ('-' for none)")
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        case, variants = args.worker
        print("RESULT " + json.dumps(_worker(case, variants.split(","), args.steps, args.warmup, args.threads)))
        return 0
    if args.quick:
        args.reps, args.steps, args.warmup = 1, 3, 1
    cases = [c for c in CASES if args.only is None or args.only in c]
    if not cases:
        parser.error(f"--only {args.only!r} matches no case of {list(CASES)}")
    start = time.perf_counter()
    rows = []
    for case in cases:
        spec = CASES[case]
        base_name = spec["baseline"]
        # Peak memory: one process per variant, alone (ru_maxrss covers the whole process).
        peak = {v: _run(case, [v], args.steps, args.warmup, args.threads)["peak_mib"]
                for v in [base_name, *spec["variants"]]}
        for variant in spec["variants"]:
            # Time: the baseline and the variant fitted in one process, in alternating order,
            # so that what differs between processes (allocator, placement) cancels out.
            pairs = []
            for rep in range(args.reps):
                order = [base_name, variant] if rep % 2 == 0 else [variant, base_name]
                pairs.append(_run(case, order, args.steps, args.warmup, args.threads))
            ratios = [p[variant] / p[base_name] for p in pairs]
            rows.append((case, variant, statistics.median(p[base_name] for p in pairs) * 1e3,
                         statistics.median(p[variant] for p in pairs) * 1e3,
                         statistics.median(ratios), min(ratios), max(ratios),
                         peak[variant] - peak[base_name]))
    header = ("| case | variant | baseline ms | variant ms | ratio | ratio range over repetitions "
              "| added peak MiB |\n|---|---|---|---|---|---|---|\n")
    table = header + "".join(
        f"| {c} | {v} | {b:.2f} | {r:.2f} | {ratio:.3f} | {low:.3f} to {high:.3f} | {added:.1f} |\n"
        for c, v, b, r, ratio, low, high, added in rows
    )
    threads = f"{args.threads} intra-op thread(s)" if args.threads else "torch's default threads"
    text = (f"Machine: {machine()}; {threads}. Repetitions: {args.reps}, {args.steps} timed "
            f"steps after {args.warmup} warm-up steps; took {time.perf_counter() - start:.0f} s.\n"
            f"Command: `python {' '.join(['benchmarks/performance.py', *(argv if argv is not None else sys.argv[1:])])}`\n\n"
            + table)
    print(text)
    if args.out != "-":
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
