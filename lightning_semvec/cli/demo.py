"""The embedded demo: scikit-learn's handwritten digits, no download needed.

Run it with ``semvec demo`` (or ``python -m lightning_semvec.cli.demo``, the same command). Each run
writes a new folder ``<out>/version_N`` (``N`` one more than the largest there, as Lightning
numbers its log folders), so an earlier run's files are never replaced:

.. code-block:: text

    <out>/version_N/teacher/                  TensorBoard logs of the teacher (with projector)
    <out>/version_N/plain_student/            TensorBoard logs of the plain student
    <out>/version_N/static_student/           TensorBoard logs of the static student
    <out>/version_N/demo.semvec.safetensors   the knowledge file
    <out>/version_N/report/index.html         the offline report

It announces each of its three trainings before it starts, then

1. trains a teacher CNN on the digits with :class:`~lightning_semvec.SemanticVectorCallback` on
   its conv stages and logits, logging to TensorBoard, and exports the knowledge file;
2. trains the same small student twice, plain and statically distilled from the knowledge file
   alone (the teacher is not used);
3. prints a table (accuracy and time of each), what the logit neurons learned (for each digit,
   the digits whose neurons it resembles most), the TensorBoard command and the report's path.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_semvec._utils.checks import check_int
from lightning_semvec.analysis.options import AnalysisOptions
from lightning_semvec.callback.semantic_vector_callback import SemanticVectorCallback
from lightning_semvec.data import DigitsDataModule
from lightning_semvec.distillation import StaticDistillationModule
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.knowledge import StaticKnowledge
from lightning_semvec.models import ImageClassifier, SmallCNN, cosine_schedule

DEMO_LAYERS = ["net.features.*", "net.classifier.3"]
LOGITS_LAYER = "net.classifier.3"
STUDENTS = ("plain student", "static student")


@dataclass
class DemoResult:
    """What the demo produced: the callback, test accuracies, times and where files went."""

    callback: SemanticVectorCallback
    test_accuracy: float
    log_dir: Path
    knowledge_path: Path
    seconds: float
    students: dict[str, tuple[float, float]] | None = None  # name: (test accuracy, seconds)
    report_path: Path | None = None


def run_demo(
    out_dir: str | Path = "semvec_runs",
    epochs: int = 10,
    dim: int = 8,
    seed: int = 0,
    progress_bar: bool = True,
) -> DemoResult:
    """Train the demo CNN on the digits with the callback; return the callback and paths.

    Writes ``<out_dir>/teacher/`` (TensorBoard logs) and ``<out_dir>/demo.semvec.safetensors``,
    replacing files of those names: :func:`main` gives it a new :func:`next_version_folder`.

    Args:
        out_dir: folder for the TensorBoard logs and the knowledge file.
        epochs: training epochs (10 take about 16 s of CPU time).
        dim: size of each semantic vector.
        seed: seed for data split, model and vectors.
        progress_bar: show Lightning's progress bars.
    """
    check_int("epochs", epochs, 1)
    start = time.perf_counter()
    out = Path(out_dir)
    pl.seed_everything(seed, verbose=False)
    data = DigitsDataModule(batch_size=64, seed=seed)
    model = ImageClassifier(SmallCNN(in_channels=1, num_classes=10, width=16, hidden=64),
                            optimizer=functools.partial(torch.optim.Adam, lr=1e-2))
    # Projector and fidelity every 5 epochs and at the end (figures: at the end) suffice.
    # A run shorter than that is analysed at its last epoch, so the projector shows classes.
    semvec = SemanticVectorCallback(layers=DEMO_LAYERS, dim=dim, lr=0.05, seed=seed,
                                    analysis=AnalysisOptions(log_every_n_epochs=min(5, epochs)))
    logger = TensorBoardLogger(save_dir=str(out), name="", version="teacher")
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, logger=logger, callbacks=[semvec],
        enable_checkpointing=False, enable_progress_bar=progress_bar, log_every_n_steps=5,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    test_accuracy = float(trainer.test(model, datamodule=data, verbose=False)[0]["test/acc"])
    knowledge_path = semvec.export_knowledge(out / "demo.semvec.safetensors")
    return DemoResult(semvec, test_accuracy, Path(logger.log_dir), knowledge_path,
                      time.perf_counter() - start)


def train_student(
    name: str,
    knowledge_path: str | Path,
    out_dir: str | Path = "semvec_runs",
    epochs: int = 30,
    seed: int = 0,
    progress_bar: bool = True,
) -> tuple[float, float]:
    """Train the small student, ``"plain student"`` or ``"static student"``; return
    ``(test accuracy, seconds)``. Logs to ``<out_dir>/plain_student`` or ``static_student``.

    The static student sees only the knowledge file: its logits' similarity on each batch is
    pulled towards the teacher's semantic similarity of the logit neurons. Both start from the
    same weights and see the same batches (same seed).
    """
    if name not in STUDENTS:
        raise SemvecValueError(f"name must be one of {list(STUDENTS)}, got {name!r}.")
    start = time.perf_counter()
    pl.seed_everything(seed, verbose=False)
    data = DigitsDataModule(batch_size=64, seed=seed)
    student = SmallCNN(in_channels=1, num_classes=10, width=4, hidden=16)
    optimization: dict[str, Any] = {"optimizer": functools.partial(torch.optim.Adam, lr=1e-2),
                    "lr_scheduler": cosine_schedule(epochs)}
    if name == "plain student":
        module: pl.LightningModule = ImageClassifier(student, **optimization)
    else:
        module = StaticDistillationModule(
            student=student, knowledge=StaticKnowledge.load(knowledge_path),
            # The module's defaults: weight 0.1 on the logits' similarity and the teacher's
            # class-level soft targets (docs/results.md measures them against controls).
            layer_map={"classifier.3": LOGITS_LAYER}, **optimization,
        )
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs,
        logger=TensorBoardLogger(save_dir=str(out_dir), name="", version=name.replace(" ", "_")),
        enable_checkpointing=False, enable_progress_bar=progress_bar, log_every_n_steps=5,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)
    accuracy = float(trainer.test(module, datamodule=data, verbose=False)[0]["test/acc"])
    return accuracy, time.perf_counter() - start


def train_students(
    knowledge_path: str | Path,
    out_dir: str | Path = "semvec_runs",
    epochs: int = 30,
    seed: int = 0,
    progress_bar: bool = True,
) -> dict[str, tuple[float, float]]:
    """Train the small student plain and statically distilled; ``{name: (accuracy, seconds)}``
    (see :func:`train_student`)."""
    return {name: train_student(name, knowledge_path, out_dir, epochs, seed, progress_bar)
            for name in STUDENTS}


def next_version_folder(out_dir: str | Path) -> Path:
    """Create and return ``<out_dir>/version_N``, ``N`` one more than the largest there (0 first).

    The folder is claimed with an exclusive ``mkdir``, so two demos started together get
    different folders and neither replaces the other's files.

    Raises:
        SemvecValueError: ``out_dir`` (or a folder above it) is a file.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     print(next_version_folder(tmp).name, next_version_folder(tmp).name)
        version_0 version_1
    """
    out = Path(out_dir)
    blocking = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise SemvecValueError(
            f"Cannot write the demo's runs into {out}: {blocking} is a file, not a folder. "
            "Pass --out with a folder (it is created if needed)."
        )
    out.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in out.iterdir()
             if p.is_dir() and (m := re.fullmatch(r"version_(\d+)", p.name))]
    version = max(taken, default=-1) + 1
    while True:
        try:
            (out / f"version_{version}").mkdir()
            return out / f"version_{version}"
        except FileExistsError:  # another run claimed it (or a file of that name): next one
            version += 1


def describe_logit_neurons(callback: SemanticVectorCallback, top: int = 2) -> str:
    """A table: for each class neuron of the logits, its most similar class neurons."""
    similarity = callback.semantic_similarity(LOGITS_LAYER)
    names = callback.class_names or [str(i) for i in range(similarity.shape[0])]
    lines = ["digit  most similar neurons (semantic similarity)"]
    for i, name in enumerate(names):
        row = similarity[i].clone()
        row[i] = -float("inf")
        values, indices = torch.topk(row, top)
        pairs = ", ".join(f"{names[j]} ({v:+.2f})" for v, j in zip(values.tolist(), indices.tolist()))
        lines.append(f"{name:>5}  {pairs}")
    return "\n".join(lines)


def _stage(number: int, title: str, *lines: str) -> None:
    """Print a stage header before its training starts (flushed, so it precedes the bars)."""
    print(f"\n[{number}/3] {title}", *(f"      {line}" for line in lines), sep="\n", flush=True)


def main(
    epochs: int = 10,
    out_dir: str = "semvec_runs",
    progress_bar: bool = True,
    student_epochs: int = 30,
) -> DemoResult:
    """Run the whole demo (teacher, knowledge file, two students, report) and print a summary.

    ``semvec demo`` takes its options from this signature. Each run writes a new folder
    ``<out_dir>/version_N`` (see :func:`next_version_folder`); earlier runs are kept.

    Args:
        epochs: teacher epochs.
        out_dir: output folder; each run adds a ``version_N`` folder with the TensorBoard
            logs, the knowledge file and the report.
        progress_bar: show Lightning's progress bars.
        student_epochs: epochs of each student (with a cosine schedule): a 4-channel student
            is noisy over a few epochs, and 30 take about 8 s of CPU time.

    Raises:
        SemvecValueError: ``epochs`` or ``student_epochs`` is not an integer >= 1, or
            ``out_dir`` is a file. Nothing is written then.
    """
    check_int("epochs", epochs, 1)
    check_int("student_epochs", student_epochs, 1)
    run_dir = next_version_folder(out_dir)
    print(f"semvec demo: three trainings on scikit-learn's 8x8 digits, written to {run_dir}"
          f" (earlier runs are kept). At the end: their test accuracies, what the logit "
          f"neurons learned, and where the files are.", flush=True)
    _stage(1, f"Teacher: SmallCNN(width=16, hidden=64), {_epochs(epochs)}, with "
           "SemanticVectorCallback learning 8-d vectors",
           f"for {' and '.join(DEMO_LAYERS)}; then it exports the knowledge file.")
    result = run_demo(out_dir=run_dir, epochs=epochs, progress_bar=progress_bar)
    print(f"      teacher: test accuracy {result.test_accuracy:.3f}, {result.seconds:.0f} s; "
          f"knowledge file {result.knowledge_path}", flush=True)
    result.students = {}
    for number, name, what in (
        (2, "plain student", "trained alone"),
        (3, "static student", "distilled from the knowledge file alone (the teacher is not "
         "loaded): the module's defaults, weight 0.1 on the logits' similarity and the teacher's "
         "class-level soft targets"),
    ):
        _stage(number, f"{name.capitalize()}: SmallCNN(width=4, hidden=16), "
               f"{_epochs(student_epochs)}, {what}.")
        result.students[name] = train_student(
            name, result.knowledge_path, run_dir, student_epochs, progress_bar=progress_bar
        )
        accuracy, seconds = result.students[name]
        print(f"      {name}: test accuracy {accuracy:.3f}, {seconds:.0f} s", flush=True)
    from lightning_semvec.report.html import write_report

    result.report_path = write_report(result.knowledge_path, run_dir / "report")
    rows = [("teacher (with callback)", result.test_accuracy, result.seconds)]
    rows += [(name, acc, secs) for name, (acc, secs) in result.students.items()]
    print()
    print(f"{'model':<26}{'test accuracy':>14}{'time (s)':>10}")
    for name, accuracy, seconds in rows:
        print(f"{name:<26}{accuracy:>14.3f}{seconds:>10.1f}")
    print()
    print("Semantic vectors learned: " + ", ".join(
        f"{name} {tuple(v.shape)}" for name, v in result.callback.semantic_vectors.items()))
    print(describe_logit_neurons(result.callback))
    print()
    print(f"Knowledge file: {result.knowledge_path}")
    print(f"Report: {result.report_path}")
    print(f"TensorBoard logs: {run_dir} (teacher, plain_student, static_student)")
    print(f"  see them with:  tensorboard --logdir {run_dir}")
    return result


def _epochs(count: int) -> str:
    return f"{count} epoch" if count == 1 else f"{count} epochs"


if __name__ == "__main__":
    import sys

    from lightning_semvec.cli._main import main as semvec

    sys.exit(semvec(["demo", *sys.argv[1:]]))
