"""Static distillation against a plain student and the teacher-run baselines, on digits.

What it does, in one process on the CPU:

1. Trains a teacher (``SmallCNN(width=32, hidden=128)``) on scikit-learn's digits upscaled
   to 16x16, with a :class:`~lightning_semvec.SemanticVectorCallback` on its logits
   (``net.classifier.3``) and penultimate (``net.classifier.2``) layers, and exports the
   knowledge file; the static students get only that file.
2. Trains the same small student architecture (``SmallCNN(width=8, hidden=32)`` by default)
   with each method, for every seed, with the same initialisation per seed, epochs,
   optimizer and data order: ``plain`` (task loss only), ``kd``, ``rkd``, ``sp``, ``cc``,
   ``pkt`` (the teacher runs on every batch; their usual weights), the static forms and a
   label-smoothing control (see ``KNOWN_METHODS`` and ``--methods``).
3. Prints a markdown table (mean +- std test accuracy over seeds, the paired difference to
   the plain student, and each method's median training-step time over the plain
   student's, timed in the same run with the order of the methods rotating between seeds)
   and writes it into a marked section of ``--output``, leaving the rest of that file alone.

The runs recorded in ``docs/results.md`` (each 2 to 8 minutes on 2 CPU cores)::

    python benchmarks/distillation_benchmark.py --seeds 5 --epochs 30 --output docs/results.md --section main
    python benchmarks/distillation_benchmark.py --seeds 5 --epochs 30 --output docs/results.md \
        --section variants --methods static_w10,static_cosine,...   # see docs/results.md
    python benchmarks/distillation_benchmark.py --seeds 5 --epochs 30 --student-width 4 \
        --student-hidden 16 --output docs/results.md --section tiny_student \
        --methods static,static_w0.1,soft_targets

Smoke mode (seconds; used by ``tests/test_benchmarks_smoke.py``)::

    python benchmarks/distillation_benchmark.py --quick --output /tmp/results.md
"""

from __future__ import annotations

import argparse
import functools
import gc
import logging
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from lightning_semvec import (
    SemanticVectorCallback,
    StaticDistillationModule,
    StaticKnowledge,
    StudentModule,
    TeacherDistillationModule,
)
from lightning_semvec.data import DigitsDataModule
from lightning_semvec.models import ImageClassifier, SmallCNN, cosine_schedule

TEACHER_LOGITS = "net.classifier.3"
TEACHER_PENULTIMATE = "net.classifier.2"
STUDENT_LOGITS = "classifier.3"
STUDENT_HIDDEN = "classifier.1"  # the Linear before the ReLU: its width is known
STUDENT_PENULTIMATE = "classifier.2"


@dataclass
class Config:
    """Everything a run depends on; printed at the top of the results."""

    seeds: int = 5
    epochs: int = 30
    teacher_epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-2
    upscale: int = 2
    teacher_width: int = 32
    teacher_hidden: int = 128
    student_width: int = 8
    student_hidden: int = 32
    vector_dim: int = 16
    threads: int = 1
    limit_train_batches: int | float = 1.0
    limit_test_batches: int | float = 1.0
    methods: list[str] = field(default_factory=list)


class StepTimer(pl.Callback):
    """Wall and CPU time of every training step: forward, backward and optimizer step.

    The CPU time (``time.thread_time``; torch runs on this one thread here) is what the step
    costs whatever else the machine runs; the wall time is what a user waits.
    """

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._start = (0.0, 0.0)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._start = (time.perf_counter(), time.thread_time())

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.thread_time() - self._start[1])

    @staticmethod
    def _median(values: list[float]) -> float:
        # The first steps pay for allocations and lazy set-up; leave them out when possible.
        return statistics.median(values[5:] if len(values) > 10 else values)

    def median_wall(self) -> float:
        return self._median(self.wall)

    def median_cpu(self) -> float:
        return self._median(self.cpu)


def make_trainer(config: Config, epochs: int, callbacks: list[pl.Callback] | None = None) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        limit_train_batches=config.limit_train_batches,
        limit_test_batches=config.limit_test_batches,
        callbacks=callbacks or [],
        deterministic=False,
    )


def make_data(config: Config) -> DigitsDataModule:
    return DigitsDataModule(batch_size=config.batch_size, upscale=config.upscale, seed=0)


def evaluate_accuracy(trainer: pl.Trainer, module: pl.LightningModule, data: DigitsDataModule) -> float:
    results = trainer.test(module, datamodule=data, verbose=False)
    return float(results[0]["test/acc"])


def train_teacher(config: Config, out_dir: Path) -> tuple[nn.Module, Path, float]:
    pl.seed_everything(1000, verbose=False)
    net = SmallCNN(1, 10, width=config.teacher_width, hidden=config.teacher_hidden)
    teacher = ImageClassifier(net, num_classes=10, optimizer=functools.partial(torch.optim.Adam, lr=config.lr),
                              lr_scheduler=cosine_schedule(config.teacher_epochs))
    semvec = SemanticVectorCallback(layers=[TEACHER_LOGITS, TEACHER_PENULTIMATE], dim=config.vector_dim)
    data = make_data(config)
    trainer = make_trainer(config, config.teacher_epochs, [semvec])
    trainer.fit(teacher, datamodule=data)
    accuracy = evaluate_accuracy(trainer, teacher, data)
    path = semvec.export_knowledge(out_dir / "teacher.semvec.safetensors")
    return teacher.net.eval(), path, accuracy


def student_net(config: Config) -> nn.Module:
    return SmallCNN(1, 10, width=config.student_width, hidden=config.student_hidden)


class LabelSmoothingStudent(StudentModule):
    """A control: uniform label smoothing, to tell class-similarity targets from mere softening."""

    def __init__(self, student: nn.Module, smoothing: float, **kwargs: Any) -> None:
        super().__init__(student, num_classes=10, **kwargs)
        self.smoothing = smoothing

    def task_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, targets, label_smoothing=self.smoothing)


def method_builders(
    config: Config, teacher: nn.Module, knowledge: StaticKnowledge
) -> dict[str, Callable[[], StudentModule]]:
    """Every method by name: a function building a fresh student module (after seeding)."""
    common: dict[str, Any] = dict(optimizer=functools.partial(torch.optim.Adam, lr=config.lr),
                                  lr_scheduler=cosine_schedule(config.epochs))

    def teacher_run(method: str, **kwargs: Any) -> Callable[[], StudentModule]:
        def build() -> StudentModule:
            features = {} if method == "kd" else dict(
                student_feature_layer=STUDENT_PENULTIMATE, teacher_feature_layer="classifier.2"
            )
            return TeacherDistillationModule(
                student_net(config), teacher, num_classes=10, method=method, **features, **common, **kwargs
            )

        return build

    def static(layer_map: dict[str, str], **kwargs: Any) -> Callable[[], StudentModule]:
        def build() -> StudentModule:
            return StaticDistillationModule(student_net(config), knowledge, layer_map, **common, **kwargs)

        return build

    logits = {STUDENT_LOGITS: TEACHER_LOGITS}
    penultimate = {STUDENT_PENULTIMATE: TEACHER_PENULTIMATE}
    hidden_width = {STUDENT_PENULTIMATE: config.student_hidden}  # a ReLU: its width is not on it
    tau = SOFT_TARGET_TEMPERATURE
    return {
        "plain": lambda: StudentModule(student_net(config), num_classes=10, **common),
        "kd": teacher_run("kd"),
        "rkd": teacher_run("rkd"),
        "sp": teacher_run("sp"),
        "cc": teacher_run("cc"),
        "pkt": teacher_run("pkt"),
        # The paper's form: the logit layer's similarity, weight 1, Pearson.
        "static": static(logits, weight=1.0),
        # The same with a tenth of the weight: the best static form we found.
        "static_w0.1": static(logits, weight=0.1),
        # Our extension alone: static soft targets from the logit layer's vectors.
        "soft_targets": static({}, soft_targets=1.0, soft_target_temperature=tau),
        # The control: uniform label smoothing with the same mass off the true class.
        "label_smoothing": lambda: LabelSmoothingStudent(
            student_net(config), matched_smoothing(knowledge, tau, 1.0), **common
        ),
        # Explored variants, one change each from "static" or "soft_targets".
        "static_w10": static(logits, weight=10.0),
        "static_cosine": static(logits, weight=1.0, similarity="cosine"),
        "static_penultimate": static(penultimate, weight=1.0, student_widths=hidden_width),
        "static_both": static({**logits, **penultimate}, weight=1.0, student_widths=hidden_width),
        "static+soft_targets": static(logits, weight=1.0, soft_targets=1.0, soft_target_temperature=tau),
        "static_w0.1+soft_targets": static(
            logits, weight=0.1, soft_targets=1.0, soft_target_temperature=tau
        ),
        "soft_targets_t0.1": static({}, soft_targets=1.0, soft_target_temperature=0.1),
        "soft_targets_t1": static({}, soft_targets=1.0, soft_target_temperature=1.0),
        "label_smoothing_t1": lambda: LabelSmoothingStudent(
            student_net(config), matched_smoothing(knowledge, 1.0, 1.0), **common
        ),
    }


#: The soft-target temperature of the main table (the best of 0.1, 0.2, 0.3, 0.5, 1 in our runs).
SOFT_TARGET_TEMPERATURE = 0.5
DEFAULT_METHODS = [
    "plain", "kd", "rkd", "sp", "cc", "pkt", "static", "static_w0.1", "soft_targets", "label_smoothing"
]
#: Every name ``--methods`` accepts (the keys of :func:`method_builders`).
KNOWN_METHODS = [
    *DEFAULT_METHODS,
    "static_w10",
    "static_cosine",
    "static_penultimate",
    "static_both",
    "static+soft_targets",
    "static_w0.1+soft_targets",
    "soft_targets_t0.1",
    "soft_targets_t1",
    "label_smoothing_t1",
]


def matched_smoothing(knowledge: StaticKnowledge, tau: float, weight: float) -> float:
    """The label-smoothing ``eps`` that puts as much mass off the true class as soft targets do.

    ``CE + w * KL(q || p)`` has the gradient of a cross-entropy with the target
    ``(onehot + w q) / (1 + w)``, whose mass off the true class is ``w (1 - q_yy) / (1 + w)``
    (averaged over classes); ``label_smoothing=eps`` leaves ``eps * 9 / 10`` off it.
    """
    q = torch.softmax(knowledge.semantic_similarity(TEACHER_LOGITS) / tau, dim=1)
    off = weight * (1.0 - float(q.diagonal().mean())) / (1.0 + weight)
    return off * 10 / 9


@dataclass
class Result:
    accuracies: list[float] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    step_cpu_times: list[float] = field(default_factory=list)


def run(config: Config, out_dir: Path) -> tuple[dict[str, Result], float, float]:
    torch.set_num_threads(config.threads)
    start = time.perf_counter()
    teacher, knowledge_path, teacher_accuracy = train_teacher(config, out_dir)
    knowledge = StaticKnowledge.load(knowledge_path)  # the static students see only this file
    builders = method_builders(config, teacher, knowledge)
    assert list(builders) == KNOWN_METHODS, "keep KNOWN_METHODS in step with method_builders"
    results = {m: Result() for m in config.methods}
    data = make_data(config)
    for seed in range(config.seeds):
        # Rotate the order each seed, so that a slow spell of the machine, or a process that
        # slows as it ages, does not always hit the same methods' step times.
        shift = seed % len(config.methods)
        for method in config.methods[shift:] + config.methods[:shift]:
            gc.collect()
            pl.seed_everything(seed, verbose=False)
            module = builders[method]()
            timer = StepTimer()
            trainer = make_trainer(config, config.epochs, [timer])
            trainer.fit(module, datamodule=data)
            accuracy = evaluate_accuracy(trainer, module, data)
            results[method].accuracies.append(accuracy)
            results[method].step_times.append(timer.median_wall())
            results[method].step_cpu_times.append(timer.median_cpu())
            print(
                f"seed {seed} {method:>20}: test acc {accuracy:.4f}, median step "
                f"{1e3 * timer.median_wall():.2f} ms wall, {1e3 * timer.median_cpu():.2f} ms CPU",
                flush=True,
            )
    return results, teacher_accuracy, time.perf_counter() - start


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def format_table(config: Config, results: dict[str, Result], teacher_accuracy: float, seconds: float, command: str) -> str:
    """The run's settings and one row per method; ``plain`` is the reference of the last two columns."""
    plain = results["plain"]
    lines = [
        "| method | test accuracy (%), mean ± std | Δ vs plain, same seed (points) "
        "| step time / plain (wall) | step time / plain (CPU) |",
        "|---|---|---|---|---|",
    ]
    for method, result in results.items():
        mean, std = _mean_std(result.accuracies)
        d_mean, d_std = _mean_std([100 * (a - p) for a, p in zip(result.accuracies, plain.accuracies)])
        wall = statistics.median(t / p for t, p in zip(result.step_times, plain.step_times))
        cpu = statistics.median(t / p for t, p in zip(result.step_cpu_times, plain.step_cpu_times))
        delta = "—" if method == "plain" else f"{d_mean:+.2f} ± {d_std:.2f}"
        lines.append(
            f"| {method} | {100 * mean:.2f} ± {100 * std:.2f} | {delta} | {wall:.2f}× | {cpu:.2f}× |"
        )
    plain_ms = 1e3 * statistics.median(plain.step_times)
    plain_cpu_ms = 1e3 * statistics.median(plain.step_cpu_times)
    header = [
        f"Command: `{command}`",
        "",
        f"- Teacher: SmallCNN(width={config.teacher_width}, hidden={config.teacher_hidden}), "
        f"{config.teacher_epochs} epochs, test accuracy {100 * teacher_accuracy:.2f}%.",
        f"- Students: SmallCNN(width={config.student_width}, hidden={config.student_hidden}), "
        f"{config.seeds} seeds (the seed fixes the student's initialisation, the same for every "
        f"method), {config.epochs} epochs, Adam lr {config.lr} with a cosine schedule, batch "
        f"{config.batch_size}; digits at {8 * config.upscale}x{8 * config.upscale} "
        "(1257 train / 270 test images); accuracy of the last epoch's weights.",
        f"- Step time: median time of a training step (forward, backward, optimizer) per run, "
        f"divided by the plain student's of the same seed, median over seeds (the order of the "
        f"methods rotates from seed to seed); wall clock and "
        f"the thread's CPU time (robust to other load on the machine). Plain: {plain_ms:.2f} ms "
        f"wall, {plain_cpu_ms:.2f} ms CPU; {config.threads} torch thread(s).",
        f"- Wall time of the whole run: {seconds / 60:.1f} min.",
        "",
    ]
    return "\n".join(header + lines) + "\n"


def write_section(path: Path, section: str, text: str) -> None:
    """Put ``text`` between this section's markers in ``path``, keeping everything else."""
    begin, end = f"<!-- benchmark:{section}:begin -->", f"<!-- benchmark:{section}:end -->"
    block = f"{begin}\n{text}{end}\n"
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        before, rest = old.split(begin, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        new = before + block + ("\n" + after if after else "")
    else:
        new = old + ("\n" if old and not old.endswith("\n") else "") + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30, help="student epochs")
    parser.add_argument("--teacher-epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--student-width", type=int, default=8)
    parser.add_argument("--student-hidden", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help="comma-separated; 'plain' is always run. Known: " + ", ".join(KNOWN_METHODS),
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (seconds)")
    parser.add_argument("--output", type=Path, default=None, help="markdown file for the table")
    parser.add_argument(
        "--section", default="main", help="name of the marked section of --output to replace"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the knowledge file goes (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    config = Config(
        seeds=args.seeds,
        epochs=args.epochs,
        teacher_epochs=args.teacher_epochs,
        lr=args.lr,
        student_width=args.student_width,
        student_hidden=args.student_hidden,
        threads=args.threads,
        methods=[m.strip() for m in args.methods.split(",") if m.strip()],
    )
    unknown = [m for m in config.methods if m not in KNOWN_METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {', '.join(KNOWN_METHODS)}")
    if args.quick:
        config.seeds, config.epochs, config.teacher_epochs = 1, 1, 1
        config.limit_train_batches, config.limit_test_batches = 3, 2
    if "plain" not in config.methods:
        config.methods.insert(0, "plain")
    return config, args


def main(argv: list[str] | None = None) -> str:
    config, args = parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")  # the frozen teacher
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        results, teacher_accuracy, seconds = run(config, workdir)
    command = " ".join(["python benchmarks/distillation_benchmark.py", *(sys.argv[1:] if argv is None else argv)])
    table = format_table(config, results, teacher_accuracy, seconds, command)
    print(table)
    if args.output is not None:
        write_section(args.output, args.section, table)
    return table


if __name__ == "__main__":
    main()
