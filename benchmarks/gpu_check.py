"""GPU check: correctness under mixed precision and the callback's cost on a CUDA machine.

    python benchmarks/gpu_check.py [--out results.json] [--steps 20]
    python benchmarks/gpu_check.py --cpu-smoke     # the same code paths on the CPU, tiny sizes

On a machine without CUDA it refuses with a clear message (exit status 2), unless asked for
``--cpu-smoke`` (what the tests run: every part at tiny sizes on the CPU, ``bf16-mixed`` for
the mixed precisions; its numbers mean nothing). On a CUDA machine, in under 5 minutes, it

1. trains a small CNN with frozen weights under ``32-true``, ``bf16-mixed`` and ``16-mixed``
   with the callback and checks that no vector or logged loss is NaN/Inf and that the
   mixed-precision semantic similarities stay close to the float32 run's;
2. measures the training-step time of a torchvision ResNet-50 at batch 256 (224 x 224,
   ``bf16-mixed``) with the callback on every stage output and the logits, updating at every
   step, over the same without it (target:
   at most 1.02), both per step (synchronised at step boundaries) and as throughput (the
   timed steps run back to back, one synchronisation at each end); and counts the host
   synchronisations inside the callback's ``on_train_batch_end`` on steps that do not log
   (``torch.cuda.set_sync_debug_mode("warn")``; target: none);
3. measures static distillation's and KD's step time over the plain student's
   (resnet8x4 student, resnet32x4 teacher, CIFAR size, batch 256, ``bf16-mixed``).

Step times are medians of per-step wall times after warm-up, with ``torch.cuda.synchronize``
at step boundaries (the same for every variant); variants alternate, twice each.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
import warnings
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from lightning_semvec import (
    SemanticVectorCallback,
    StaticDistillationModule,
    StaticKnowledge,
)
from lightning_semvec.distillation import TeacherDistillationModule
from lightning_semvec.functional import semantic_similarity
from lightning_semvec.models import ImageClassifier, SmallCNN, resnet8x4, resnet32x4

#: "cuda", or "cpu" under --cpu-smoke.
DEVICE = "cuda"


def synchronize() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


class StepTimer(pl.Callback):
    """Per-step wall time, synchronised with the GPU at both ends of the step; with
    ``per_step=False`` only at the first timed step's start and the last one's end
    (throughput: the GPU may run ahead of the host inside that span)."""

    def __init__(self, warmup: int, per_step: bool = True) -> None:
        self.warmup, self.per_step = warmup, per_step
        self.times: list[float] = []
        self.steps = 0

    def on_train_batch_start(self, *args: Any) -> None:
        if self.per_step or self.steps == self.warmup:
            synchronize()
            self.start = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.steps += 1
        if self.per_step:
            synchronize()
            self.times.append(time.perf_counter() - self.start)

    def on_train_end(self, *args: Any) -> None:
        if not self.per_step:
            synchronize()
            self.times = [(time.perf_counter() - self.start) / (self.steps - self.warmup)]


def gpu_batches(shape: tuple[int, ...], classes: int, count: int, seed: int = 0) -> DataLoader:
    """``count`` steps over two fixed batches that already live on the GPU (no input pipeline)."""
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    made = [
        (torch.randn(shape, device=DEVICE, generator=g),
         torch.randint(0, classes, (shape[0],), device=DEVICE, generator=g))
        for _ in range(2)
    ]
    return DataLoader([made[i % 2] for i in range(count)], batch_size=None)


def trainer(steps: int, precision: str, callbacks: list[pl.Callback]) -> pl.Trainer:
    return pl.Trainer(
        accelerator="gpu" if DEVICE == "cuda" else "cpu", devices=1, precision=precision,
        max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=callbacks, log_every_n_steps=50,
    )


def check_precisions(steps: int, batch: int = 128) -> dict[str, Any]:
    """Frozen CNN (tiny lr), callback under three precisions: finite and close to float32."""
    results: dict[str, Any] = {}
    similarities = {}
    mixed = ("bf16-mixed", "16-mixed") if DEVICE == "cuda" else ("bf16-mixed",)
    for precision in ("32-true", *mixed):
        torch.manual_seed(0)
        model = ImageClassifier(SmallCNN(in_channels=3, num_classes=10, width=32, hidden=128),
                                optimizer=functools.partial(torch.optim.Adam, lr=1e-12))
        semvec = SemanticVectorCallback(layers=["net.features.*", "net.classifier.3"], dim=16,
                                        lr=0.05)
        t = trainer(steps, precision, [semvec])
        t.fit(model, gpu_batches((batch, 3, 32, 32), 10, steps))
        vectors = semvec.semantic_vectors
        finite = all(torch.isfinite(v).all().item() for v in vectors.values())
        logged = {k: float(v) for k, v in t.callback_metrics.items() if k.startswith("semvec/")}
        similarities[precision] = {k: semantic_similarity(v) for k, v in vectors.items()}
        results[precision] = {
            "finite_vectors": finite,
            "finite_logged": all(torch.isfinite(torch.tensor(v)).item() for v in logged.values()),
            "skipped": semvec.skipped_steps(),
        }
    for precision in mixed:
        diffs = [
            (similarities[precision][k] - similarities["32-true"][k]).abs().max().item()
            for k in similarities["32-true"]
        ]
        results[precision]["max_abs_similarity_diff_vs_fp32"] = max(diffs)
    return results


def time_fit(make_module: Any, batches: Any, steps: int, warmup: int, callbacks: Any,
             per_step: bool = True) -> float:
    timer = StepTimer(warmup, per_step)
    t = trainer(warmup + steps, "bf16-mixed", [*callbacks(), timer])
    t.fit(make_module(), batches(warmup + steps))
    return statistics.median(timer.times[warmup:] if per_step else timer.times)


class SyncCounter(pl.Callback):
    """Counts host synchronisations inside the callback's ``on_train_batch_end`` on steps
    that do not log (CUDA's sync debug mode turns each into a warning)."""

    def __init__(self, semvec: SemanticVectorCallback) -> None:
        self.syncs = 0
        original = semvec.on_train_batch_end

        def counted(trainer: pl.Trainer, *args: Any) -> None:
            if DEVICE != "cuda" or (trainer.global_step + 1) % trainer.log_every_n_steps == 0:
                return original(trainer, *args)
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    original(trainer, *args)
            finally:
                torch.cuda.set_sync_debug_mode(0)
            self.syncs += sum("synchroniz" in str(w.message) for w in caught)

        semvec.on_train_batch_end = counted  # type: ignore[method-assign]


def time_resnet50(steps: int, warmup: int, batch: int = 256, size: int = 224,
                  reps: int = 2) -> dict[str, float]:
    from torchvision.models import resnet50

    def module() -> ImageClassifier:
        torch.manual_seed(0)
        return ImageClassifier(resnet50(weights=None, num_classes=1000), num_classes=1000,
                               optimizer=functools.partial(torch.optim.SGD, lr=1e-3, momentum=0.9))

    layers = ["net.layer1", "net.layer2", "net.layer3", "net.layer4", "net.fc"]
    batches = lambda n: gpu_batches((batch, 3, size, size), 1000, n)
    variants = {
        "off": lambda: [],
        "on": lambda: [SemanticVectorCallback(layers=layers, dim=32, analysis=None)],
    }
    times: dict[str, list[float]] = {f"{v}{k}": [] for v in variants for k in ("", "_throughput")}
    for _ in range(reps):
        for name, callbacks in variants.items():
            times[name].append(time_fit(module, batches, steps, warmup, callbacks))
            times[f"{name}_throughput"].append(
                time_fit(module, batches, steps, warmup, callbacks, per_step=False))
    semvec = SemanticVectorCallback(layers=layers, dim=32, analysis=None)
    counter = SyncCounter(semvec)
    trainer(warmup + 4, "bf16-mixed", [semvec]).fit(module(), batches(warmup + 4))
    result = {f"step_ms_{name}": statistics.median(values) * 1e3 for name, values in times.items()}
    for name in ("on",):
        for kind in ("", "_throughput"):
            result[f"ratio_{name}{kind}"] = statistics.median(
                b / a for a, b in zip(times[f"off{kind}"], times[f"{name}{kind}"]))
    result["ratio"] = result["ratio_on"]  # the previous runs' key
    result["host_syncs_in_update"] = counter.syncs
    return result


def time_distillation(steps: int, warmup: int, batch: int = 256, reps: int = 2) -> dict[str, float]:
    knowledge = StaticKnowledge.from_vectors({"fc": torch.randn(100, 32)})
    batches = lambda n: gpu_batches((batch, 3, 32, 32), 100, n)

    def plain() -> pl.LightningModule:
        torch.manual_seed(0)
        return ImageClassifier(resnet8x4(num_classes=100), num_classes=100, in_channels=3)

    def static() -> pl.LightningModule:
        torch.manual_seed(0)
        return StaticDistillationModule(student=resnet8x4(num_classes=100), knowledge=knowledge,
                                        layer_map={"fc": "fc"}, num_classes=100)

    def kd() -> pl.LightningModule:
        torch.manual_seed(0)
        return TeacherDistillationModule(student=resnet8x4(num_classes=100),
                                         teacher=resnet32x4(num_classes=100), num_classes=100,
                                         method="kd")

    times: dict[str, list[float]] = {"plain": [], "static": [], "kd": []}
    for _ in range(reps):
        for name, make in (("plain", plain), ("static", static), ("kd", kd)):
            times[name].append(time_fit(make, batches, steps, warmup, lambda: []))
    plain_ms = statistics.median(times["plain"])
    return {"plain_step_ms": plain_ms * 1e3,
            "static_over_plain": statistics.median(times["static"]) / plain_ms,
            "kd_over_plain": statistics.median(times["kd"]) / plain_ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=8, help="untimed steps per run")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="run every part on the CPU at tiny sizes (a test of the script)")
    args = parser.parse_args(argv)
    global DEVICE
    if args.cpu_smoke:
        DEVICE = "cpu"
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible (torch.cuda.is_available() is False). "
              "Run this on a machine with an NVIDIA GPU; on the CPU use "
              "benchmarks/performance.py instead (or --cpu-smoke to test this script).",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    torch.backends.cudnn.benchmark = True
    smoke = args.cpu_smoke
    results: dict[str, Any] = {
        "device": "cpu (smoke run: the numbers mean nothing)" if smoke else torch.cuda.get_device_name(0),
        "torch": torch.__version__}
    results["precision"] = check_precisions(steps=3 if smoke else 30, batch=8 if smoke else 128)
    results["resnet50_callback"] = (time_resnet50(1, 1, batch=2, size=32, reps=1) if smoke
                                    else time_resnet50(args.steps, args.warmup))
    results["distillation"] = (time_distillation(1, 1, batch=4, reps=1) if smoke
                               else time_distillation(args.steps, args.warmup))
    results["seconds"] = time.perf_counter() - start
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
