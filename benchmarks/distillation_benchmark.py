"""Static distillation against the plain student, teacher-run baselines and no-teacher controls.

Two settings (``--data``): ``digits`` (scikit-learn's 8x8 digits, 10 classes, ``SmallCNN``),
where a teacher's knowledge turned out not to matter, and ``glyphs`` (``GlyphsDataModule``: 62
characters from matplotlib's fonts, tested on 6 held-out fonts, ``PooledCNN`` teacher of
width 32 and student of width 8 and hidden 32 on 30 images a class), where it does. The
setting fixes the networks and the defaults of the options left out (``SETTINGS``).

What it does, in one process on the CPU (the digits' numbers; the glyphs' in ``SETTINGS``):

1. Trains a teacher (``SmallCNN(width=32, hidden=128)``) on scikit-learn's digits upscaled
   to 16x16 (all 1,257 training images), with a
   :class:`~lightning_semvec.SemanticVectorCallback` on its logits (``net.classifier.3``)
   and penultimate layer, whose validation analysis stores the per-class statistics; exports
   the knowledge file. Does the same for an *untrained* teacher (same architecture and
   initialisation, learning rate 0): its knowledge goes through the same export path.
2. Trains one student architecture with each method of ``--methods`` (names and what they
   are: ``distillation_methods.py``) for every seed: the seed fixes the student's
   initialisation, the controls' permutations and, with ``--train-size``, which stratified
   subset of the training images the student sees; the data order is the same for every
   method. Static students read only the knowledge file.
3. Prints two markdown tables and writes them into a marked section of ``--output``:
   accuracy of the last epoch's weights per method, with the paired difference to the plain
   student and its 95 % confidence interval (Student's t over seeds), and the step time over
   the plain student's, measured in the same run (the methods' order rotates with the seed);
   then, for each static form, its paired difference to each control with no teacher in it.
   ``--json`` keeps every run's accuracy and step time.

The runs recorded in ``docs/results.md`` (300 optimizer steps per student: 60 epochs of 300
images, 15 of 1,257; 10 to 90 minutes each on the shared 2-core machine), all with
``--seeds 10 --workdir work`` so that they share one teacher, each with ``--json NAME.json``,
then one table per setting from their saved numbers::

    python benchmarks/distillation_benchmark.py --seeds 10 --workdir work --train-size 300 --epochs 60 \
        --methods plain,kd,static,static_shuffled,static_random,static_untrained,static_w0.1,\
    class_soft_targets,class_soft_targets_shuffled,class_soft_targets_untrained,label_smoothing,tfkd_reg \
        --json small.json
    python benchmarks/distillation_benchmark.py ... --methods plain,class_soft_targets+static_w0.1 --json d_small.json
    python benchmarks/distillation_benchmark.py ... --methods plain,class_soft_targets+static_w0.1_untrained,\
    class_soft_targets+static_w0.1_shuffled --json c_small.json
    python benchmarks/distillation_benchmark.py --from-json small.json d_small.json c_small.json \
        --output docs/results.md --section small

and the same with ``--student-width 4 --student-hidden 16`` (section ``small_tiny``), and
without ``--train-size`` at ``--epochs 15`` (sections ``full`` and ``full_tiny``; the methods
each table lists). The exact commands head each table.

The glyphs (about 75 minutes as two processes in parallel on the shared 2-core machine, sharing one
teacher; the table's "wall time" adds the two)::

    python benchmarks/distillation_benchmark.py --data glyphs --seeds 10 --workdir glyphs \
        --methods plain,kd,kd_t8,rkd,sp,cc,pkt,label_smoothing,tfkd_reg --json teacher_run.json &
    python benchmarks/distillation_benchmark.py --data glyphs --seeds 10 --workdir glyphs \
        --methods plain,static,static_shuffled,...,class_soft_targets+static_w0.1_untrained --json static.json
    python benchmarks/distillation_benchmark.py --from-json teacher_run.json static.json \
        --output docs/results.md --section glyphs

(the second process's full method list heads the table in ``docs/results.md``; start the
second once the first has written ``glyphs/teachers.json``, or both train the teacher).

Pilot runs that chose the class soft targets' temperature and weight used ``--first-seed 100``
(seeds apart from the reported ones). Smoke mode (seconds; ``tests/test_benchmarks_smoke.py``)::

    python benchmarks/distillation_benchmark.py --quick --output /tmp/results.md
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import logging
import math
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from scipy import stats
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distillation_methods import (
    CONTROLS,
    SHARED_CONTROLS,
    TEACHER_LOGITS,
    TEACHER_PENULTIMATE,
    method_builders,
)

from lightning_semvec import AnalysisOptions, SemanticVectorCallback, StaticKnowledge
from lightning_semvec.data import DigitsDataModule, GlyphsDataModule
from lightning_semvec.models import ImageClassifier, PooledCNN, SmallCNN, cosine_schedule

DEFAULT_METHODS = [
    "plain", "kd", "rkd", "sp", "cc", "pkt",
    "static", "static_shuffled", "static_random", "static_untrained",
    "soft_targets", "soft_targets_shuffled",
    "class_soft_targets", "class_soft_targets_shuffled", "class_soft_targets_untrained",
    "label_smoothing", "label_smoothing_matched", "tfkd_reg",
]


@dataclass(frozen=True)
class Setting:
    """What a data set fixes: its classes, sizes, networks and the defaults of its runs."""

    num_classes: int
    train_images: int
    test_images: int
    description: str  # what the images are and which test set is scored
    network: type[nn.Module]
    defaults: dict[str, Any]


SETTINGS: dict[str, Setting] = {
    "digits": Setting(10, 1257, 270, "scikit-learn's digits at 16x16 (upscaled 2x); test: 270 images",
                      SmallCNN, dict(epochs=30, teacher_epochs=30, lr=1e-2, teacher_width=32, teacher_hidden=128,
                                     student_width=8, student_hidden=32, train_size=None)),
    "glyphs": Setting(62, 19840, 1860, "GlyphsDataModule's 62 characters at 32x32 from matplotlib's fonts; "
                      "test: 1860 images of the 6 held-out fonts",
                      PooledCNN, dict(epochs=30, teacher_epochs=8, lr=3e-3, teacher_width=32, teacher_hidden=64,
                                      student_width=8, student_hidden=32, train_size=1860)),
}


@dataclass
class Config:
    """Everything a run depends on; printed at the top of the results."""

    seeds: int = 10
    first_seed: int = 0
    epochs: int = 30
    teacher_epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-2
    upscale: int = 2
    teacher_width: int = 32
    teacher_hidden: int = 128
    student_width: int = 8
    student_hidden: int = 32
    train_size: int | None = None
    vector_dim: int = 16
    threads: int = 1
    limit_train_batches: int | float = 1.0
    limit_test_batches: int | float = 1.0
    methods: list[str] = field(default_factory=list)
    data: str = "digits"

    @property
    def setting(self) -> Setting:
        return SETTINGS[self.data]

    def teacher_net(self) -> nn.Module:
        return self.setting.network(1, self.setting.num_classes, width=self.teacher_width, hidden=self.teacher_hidden)

    def student_net(self) -> nn.Module:
        return self.setting.network(1, self.setting.num_classes, width=self.student_width, hidden=self.student_hidden)


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




def make_trainer(config: Config, epochs: int, callbacks: list[pl.Callback] | None = None,
                 validate: bool = False) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=1.0 if validate else 0,
        limit_train_batches=config.limit_train_batches, limit_test_batches=config.limit_test_batches,
        callbacks=callbacks or [], deterministic=False,
    )


def stratified_subset(dataset: TensorDataset, size: int, seed: int) -> TensorDataset:
    """``size`` images of ``dataset``, as many of each class as its share, chosen by ``seed``."""
    images, labels = dataset.tensors
    keep, _ = train_test_split(np.arange(len(labels)), train_size=size, stratify=labels.numpy(), random_state=seed)
    keep = torch.from_numpy(np.sort(keep))
    return TensorDataset(images[keep], labels[keep])


class TrainingSubset:
    """A data module's training split cut to a stratified subset of ``train_size`` images chosen
    by ``subset_seed`` (mixed in before the data module's class)."""

    def __init__(self, train_size: int | None, subset_seed: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.train_size, self.subset_seed = train_size, subset_seed

    def setup(self, stage: str | None = None) -> None:
        full = self.train_dataset is None  # type: ignore[attr-defined]
        super().setup(stage)  # type: ignore[misc]
        if full and self.train_size is not None and self.train_dataset is not None:  # type: ignore[attr-defined]
            self.train_dataset = stratified_subset(self.train_dataset, self.train_size, self.subset_seed)


class DigitsSubset(TrainingSubset, DigitsDataModule):
    """The digits, the training split cut to ``train_size`` images."""


class GlyphsSubset(TrainingSubset, GlyphsDataModule):
    """The glyphs of seed 0 (one font split and one set of draws for teacher and students),
    the training split cut to ``train_size`` images."""


def make_data(config: Config, train_size: int | None = None, subset_seed: int = 0) -> pl.LightningDataModule:
    if config.data == "glyphs":
        return GlyphsSubset(train_size, subset_seed, batch_size=config.batch_size, seed=0)
    return DigitsSubset(train_size, subset_seed, batch_size=config.batch_size, upscale=config.upscale, seed=0)


def evaluate_accuracy(trainer: pl.Trainer, module: pl.LightningModule, data: pl.LightningDataModule) -> float:
    results = trainer.test(module, datamodule=data, verbose=False)
    return float(results[0]["test/acc"])


def train_teacher(config: Config, path: Path, trained: bool = True) -> tuple[nn.Module, float]:
    """Fit the teacher (or, with ``trained=False``, run its epochs at learning rate 0) with the
    callback on, validate so that the class statistics are stored, and export the knowledge."""
    pl.seed_everything(1000, verbose=False)
    net = config.teacher_net()
    lr = config.lr if trained else 0.0
    teacher = ImageClassifier(net, num_classes=config.setting.num_classes, optimizer=functools.partial(torch.optim.Adam, lr=lr),
                              lr_scheduler=cosine_schedule(config.teacher_epochs))
    analysis = AnalysisOptions(log_every_n_epochs=config.teacher_epochs, projector=False, figures=False)
    semvec = SemanticVectorCallback(layers=[TEACHER_LOGITS, TEACHER_PENULTIMATE], dim=config.vector_dim,
                                    analysis=analysis)
    data = make_data(config)
    trainer = make_trainer(config, config.teacher_epochs, [semvec], validate=True)
    trainer.fit(teacher, datamodule=data)
    accuracy = evaluate_accuracy(trainer, teacher, data)
    semvec.export_knowledge(path)
    return teacher.net.eval(), accuracy


def teachers_of(config: Config, out_dir: Path) -> tuple[nn.Module, float, float]:
    """The trained teacher and both knowledge files in ``out_dir``: made there once, reused by
    later runs with the same ``--workdir`` and teacher settings (a run of each setting of
    ``docs/results.md`` then sees the very same teacher)."""
    settings = {k: getattr(config, k) for k in ("data", "teacher_epochs", "teacher_width", "teacher_hidden",
                                                "lr", "upscale", "batch_size", "vector_dim")}
    record, weights = out_dir / "teachers.json", out_dir / "teacher.pt"
    net = config.teacher_net()
    if record.exists() and weights.exists() and json.loads(record.read_text())["settings"] == settings:
        saved = json.loads(record.read_text())
        net.load_state_dict(torch.load(weights, weights_only=True))
        print(f"reusing the teachers of {out_dir}", flush=True)
        return net.eval(), saved["teacher"], saved["untrained"]
    teacher, accuracy = train_teacher(config, out_dir / "teacher.semvec.safetensors")
    _, untrained = train_teacher(config, out_dir / "untrained.semvec.safetensors", trained=False)
    torch.save(teacher.state_dict(), weights)
    record.write_text(json.dumps({"settings": settings, "teacher": accuracy, "untrained": untrained}))
    return teacher, accuracy, untrained


@dataclass
class Result:
    accuracies: list[float] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    step_cpu_times: list[float] = field(default_factory=list)


def train_student(config: Config, data: pl.LightningDataModule, build: Callable[[], pl.LightningModule],
                  seed: int) -> tuple[pl.LightningModule, float, StepTimer]:
    """One student: seeded with ``seed`` before it is built (its initialisation), trained for
    ``config.epochs`` on ``data`` and tested; returns the trained module, its test accuracy and
    its step times. The same ``data`` object serves every method of a seed."""
    gc.collect()
    pl.seed_everything(seed, verbose=False)
    module = build()
    timer = StepTimer()
    trainer = make_trainer(config, config.epochs, [timer])
    trainer.fit(module, datamodule=data)
    accuracy = evaluate_accuracy(trainer, module, data)
    return module, accuracy, timer


def run(config: Config, out_dir: Path) -> tuple[dict[str, Result], dict[str, float], float]:
    torch.set_num_threads(config.threads)
    start = time.perf_counter()
    teacher, teacher_accuracy, untrained_accuracy = teachers_of(config, out_dir)
    # The static students see only these files.
    knowledge = StaticKnowledge.load(out_dir / "teacher.semvec.safetensors")
    untrained = StaticKnowledge.load(out_dir / "untrained.semvec.safetensors")
    results = {m: Result() for m in config.methods}
    for index in range(config.seeds):
        seed = config.first_seed + index
        data = make_data(config, config.train_size, subset_seed=seed)
        builders = method_builders(config.student_net, teacher, knowledge, untrained, seed, config.lr,
                                   config.epochs, config.setting.num_classes)
        # Rotate the order each seed, so that a slow spell of the machine does not always hit
        # the same methods' step times.
        shift = index % len(config.methods)
        for method in config.methods[shift:] + config.methods[:shift]:
            _, accuracy, timer = train_student(config, data, builders[method], seed)
            result = results[method]
            result.accuracies.append(accuracy)
            result.step_times.append(timer.median_wall())
            result.step_cpu_times.append(timer.median_cpu())
            print(f"seed {seed} {method:>32}: test acc {accuracy:.4f}, median step "
                  f"{1e3 * timer.median_wall():.2f} ms wall, {1e3 * timer.median_cpu():.2f} ms CPU", flush=True)
    teachers = {"teacher": teacher_accuracy, "untrained": untrained_accuracy}
    return results, teachers, time.perf_counter() - start


def paired(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Mean of ``a - b`` in points and its 95 % confidence interval (Student's t)."""
    diffs = [100 * (x - y) for x, y in zip(a, b)]
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(diffs) - 1)) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def _delta(a: list[float], b: list[float]) -> str:
    mean, low, high = paired(a, b)
    return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"


def format_table(config: Config, results: dict[str, Result], teachers: dict[str, float], seconds: float,
                 command: str) -> str:
    """The run's settings, one row per method, then each static form against its controls."""
    plain = results["plain"]
    lines = ["| method | test accuracy (%), mean ± std | Δ vs plain, paired (points) [95 % CI] "
             "| step time / plain (wall) | step time / plain (CPU) |", "|---|---|---|---|---|"]
    for method, result in results.items():
        accs = [100 * a for a in result.accuracies]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        delta = "—" if method == "plain" else _delta(result.accuracies, plain.accuracies)
        wall = statistics.median(t / p for t, p in zip(result.step_times, plain.step_times))
        cpu = statistics.median(t / p for t, p in zip(result.step_cpu_times, plain.step_cpu_times))
        lines.append(f"| {method} | {statistics.fmean(accs):.2f} ± {std:.2f} | {delta} | {wall:.2f}× | {cpu:.2f}× |")
    against = ["", "What the teacher adds: each static form minus each control with no teacher in it "
               "(same seeds; points, [95 % CI]).", "",
               "| static form | control | Δ form − control |", "|---|---|---|"]
    rows = 0
    for form, own in CONTROLS.items():
        for control in own + SHARED_CONTROLS:
            if form in results and control in results:
                against.append(f"| {form} | {control} | {_delta(results[form].accuracies, results[control].accuracies)} |")
                rows += 1
    setting = config.setting
    size = config.train_size or setting.train_images
    network = setting.network.__name__
    teacher_params = sum(p.numel() for p in config.teacher_net().parameters())
    student_params = sum(p.numel() for p in config.student_net().parameters())
    header = [
        f"Command: `{command}`", "",
        f"- Data: {setting.description}.",
        f"- Teacher: {network}(width={config.teacher_width}, hidden={config.teacher_hidden}), "
        f"{teacher_params:,} parameters, {config.teacher_epochs} epochs on all "
        f"{setting.train_images} training images, test accuracy "
        f"{100 * teachers['teacher']:.2f}% (the untrained teacher of the controls: "
        f"{100 * teachers['untrained']:.2f}%).",
        f"- Students: {network}(width={config.student_width}, hidden={config.student_hidden}), "
        f"{student_params:,} parameters, seeds {config.first_seed}..{config.first_seed + config.seeds - 1} "
        f"(a seed fixes the student's initialisation, the controls' randomness and the training "
        f"subset, the same for every method; the data order is the same for every method), "
        f"{config.epochs} epochs on {size} training images, Adam lr {config.lr} with a cosine "
        f"schedule, batch {config.batch_size}; test accuracy of the last epoch's weights.",
        f"- Step time: median training step (forward, backward, optimizer) of a run over the plain "
        f"student's of the same seed, median over seeds; plain: "
        f"{1e3 * statistics.median(plain.step_times):.2f} ms wall, "
        f"{1e3 * statistics.median(plain.step_cpu_times):.2f} ms CPU, {config.threads} torch thread(s).",
        f"- Wall time of the whole run: {seconds / 60:.1f} min." if math.isfinite(seconds) else
        "- Wall time: not recorded.", "",
    ]
    return "\n".join(header + lines + (against if rows else [])) + "\n"


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
    parser.add_argument("--data", choices=sorted(SETTINGS), default="digits",
                        help="the setting; it fixes the networks and the defaults of the options left out")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0, help="pilot runs use 100")
    parser.add_argument("--epochs", type=int, default=None, help="student epochs (30 on both)")
    parser.add_argument("--teacher-epochs", type=int, default=None, help="digits 30, glyphs 8")
    parser.add_argument("--lr", type=float, default=None, help="digits 1e-2, glyphs 3e-3")
    parser.add_argument("--teacher-width", type=int, default=None)
    parser.add_argument("--teacher-hidden", type=int, default=None)
    parser.add_argument("--student-width", type=int, default=None, help="8 on both")
    parser.add_argument("--student-hidden", type=int, default=None, help="32 on both")
    parser.add_argument("--train-size", type=int, default=None,
                        help="student's training images (digits: all 1257; glyphs: 1860, 30 a class)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help="comma-separated; 'plain' is always run (see distillation_methods.py)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (seconds)")
    parser.add_argument("--output", type=Path, default=None, help="markdown file for the tables")
    parser.add_argument("--section", default="main", help="name of the marked section of --output to replace")
    parser.add_argument("--json", type=Path, default=None, help="file for every run's numbers")
    parser.add_argument("--workdir", type=Path, default=None, help="where the knowledge files go (default: a temp dir)")
    parser.add_argument("--from-json", type=Path, nargs="+", default=None,
                        help="write the tables of earlier runs' --json files (same setting, other "
                             "methods: merged; the plain runs must agree) instead of running")
    args = parser.parse_args(argv)
    setting = SETTINGS[args.data]
    chosen = {name: getattr(args, name) for name in setting.defaults if getattr(args, name) is not None}
    config = Config(seeds=args.seeds, first_seed=args.first_seed, threads=args.threads, data=args.data,
                    methods=[m.strip() for m in args.methods.split(",") if m.strip()],
                    **{**setting.defaults, **chosen})
    known = list(method_builders(lambda: SmallCNN(1, 10, width=2, hidden=2), nn.Identity(),
                                 None, None, 0, 1e-3, 1))  # type: ignore[arg-type]
    unknown = [m for m in config.methods if m not in known]
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {', '.join(known)}")
    classes = setting.num_classes
    if config.train_size is not None and not 2 * classes <= config.train_size < setting.train_images:
        parser.error(f"--train-size must be between {2 * classes} (two images a class) and "
                     f"{setting.train_images - 1} on {args.data}")
    if args.quick:
        config.seeds, config.epochs, config.teacher_epochs = 2, 1, 1
        config.limit_train_batches, config.limit_test_batches = 3, 2
    if "plain" not in config.methods:
        config.methods.insert(0, "plain")
    return config, args


def merged_runs(paths: list[Path]) -> tuple[Config, dict[str, Result], dict[str, float], float, str]:
    """The runs of several ``--json`` files of one setting as one: methods in order of first
    appearance; every file's plain runs must be the same numbers (runs are deterministic)."""
    config = teachers = None
    results: dict[str, Result] = {}
    seconds, commands = 0.0, []
    for path in paths:
        saved = json.loads(path.read_text())
        this = {k: v for k, v in saved["config"].items() if k != "methods"}
        if config is None:
            config, teachers = this, saved["teachers"]
        elif this != config or saved["teachers"] != teachers:
            raise SystemExit(f"{path} is another setting: {this} vs {config}")
        for method, numbers in saved["results"].items():
            result = Result(**numbers)
            if method in results and results[method].accuracies != result.accuracies:
                raise SystemExit(f"{path}: its {method} runs differ from an earlier file's")
            results.setdefault(method, result)
        seconds += saved.get("seconds", math.nan)
        commands.append(saved["command"])
    assert config is not None and teachers is not None
    merged = Config(**config, methods=list(results))
    return merged, results, teachers, seconds, "` + `".join(commands)


def main(argv: list[str] | None = None) -> str:
    config, args = parse_args(argv)
    if args.from_json:
        config, results, teachers, seconds, command = merged_runs(args.from_json)
        table = format_table(config, results, teachers, seconds, command)
        print(table)
        if args.output is not None:
            write_section(args.output, args.section, table)
        return table
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    for message in (".*does not have many workers.*", ".*LeafSpec.*", ".*module\\(s\\) in eval mode.*"):
        warnings.filterwarnings("ignore", message)
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        results, teachers, seconds = run(config, workdir)
    command = " ".join(["python benchmarks/distillation_benchmark.py", *(sys.argv[1:] if argv is None else argv)])
    table = format_table(config, results, teachers, seconds, command)
    print(table)
    if args.output is not None:
        write_section(args.output, args.section, table)
    if args.json is not None:
        args.json.write_text(json.dumps({"config": asdict(config), "teachers": teachers, "command": command,
                                         "seconds": seconds,
                                         "results": {m: asdict(r) for m, r in results.items()}}, indent=1))
    return table


if __name__ == "__main__":
    main()
