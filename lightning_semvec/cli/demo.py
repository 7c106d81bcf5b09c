"""The embedded demo: 62 characters drawn from the fonts inside matplotlib, no download needed.

Run it with ``semvec demo`` (or ``python -m lightning_semvec.cli.demo``, the same command). Each run
writes a new folder ``<out>/version_N`` (``N`` one more than the largest there, as Lightning
numbers its log folders), so an earlier run's files are never replaced:

.. code-block:: text

    <out>/version_N/teacher/                  TensorBoard logs of the teacher (with projector)
    <out>/version_N/plain_student/            TensorBoard logs of the plain student
    <out>/version_N/static_student/           TensorBoard logs of the static student
    <out>/version_N/kd_student/               TensorBoard logs of the KD student
    <out>/version_N/demo.semvec.safetensors   the knowledge file
    <out>/version_N/report/index.html         the offline report

The task is :class:`~lightning_semvec.data.GlyphsDataModule`'s (``0-9A-Za-z`` at 24x24, tested
on 6 fonts no network sees in training), where a teacher's knowledge of which characters look
alike matters (``docs/results.md``). It announces each of its four trainings before it starts,
then

1. trains a teacher CNN with :class:`~lightning_semvec.SemanticVectorCallback` on its last
   conv stage, penultimate layer and logits, logging to TensorBoard, and exports the knowledge
   file;
2. trains the same small student on 30 images a class three ways: plain; statically distilled
   from the knowledge file alone (the teacher is not used); and, for scale, with knowledge
   distillation (the teacher run on every batch);
3. prints the headline (the three students' accuracy on the unseen fonts), a table of the four
   runs, the characters whose logit neurons have the most similar vectors beside how often the
   teacher mistook one for the other on the unseen fonts (and how well the two agree over all
   pairs), the TensorBoard command and the report's path.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn

from lightning_semvec._utils.checks import check_int
from lightning_semvec.analysis.options import AnalysisOptions
from lightning_semvec.callback.semantic_vector_callback import SemanticVectorCallback
from lightning_semvec.cli._demo_look_alikes import (
    agreement_summary,
    confusion_matrix,
    look_alike_table,
    profile_agreement,
)
from lightning_semvec.data import GlyphsDataModule
from lightning_semvec.distillation import StaticDistillationModule, TeacherDistillationModule
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.functional.agreement import SimilarityAgreement
from lightning_semvec.knowledge import StaticKnowledge
from lightning_semvec.models import ImageClassifier, PooledCNN, cosine_schedule

DEMO_LAYERS = ["net.features.8", "net.classifier.2", "net.classifier.3"]
LOGITS_LAYER = "net.classifier.3"
PENULTIMATE_LAYER = "net.classifier.2"
STUDENTS = ("plain student", "static student", "KD student")
#: The glyph set of the demo: 5,952 training images by default (16 fonts x 62 characters x 6 draws), 992
#: validation and 744 test images (6 held-out fonts x 62 x 2), at 24x24. Rendered in about 3 s
#: the first time, then read from the cache (``GlyphsDataModule``).
GLYPHS: dict[str, Any] = {"samples_per_glyph": 6, "val_samples_per_glyph": 1,
                          "test_samples_per_glyph": 2, "image_size": 24}
#: Training images per character for the students (a stratified subset of the teacher's).
STUDENT_PER_CLASS = 30
#: Torch threads while the demo trains, at most: on the 2-core development machine a student's
#: training step (PooledCNN(8, 32), batch 64) took 10.6 ms with 2 threads against 20.9 ms with 1
#: (the tiny 8x8-digits CNN of the old demo was the other way round); beyond 2 was not measured.
DEMO_THREADS = 2
#: Top-activating validation inputs kept per neuron of the teacher (projector grid, report cards).
DEMO_TOP_INPUTS = 4
#: Epochs between a student's validation passes (its TensorBoard val curves get a point each).
STUDENT_VAL_EVERY = 10
_LR = 3e-3


@dataclass
class DemoResult:
    """What the demo produced: the teacher's callback and accuracy, the students, the teacher's
    confusion on the unseen fonts, and where the files went."""

    callback: SemanticVectorCallback
    test_accuracy: float
    log_dir: Path
    knowledge_path: Path
    seconds: float
    teacher: ImageClassifier | None = None
    confusion: Tensor | None = None  # (62, 62) counts on the test fonts: rows true, columns predicted
    students: dict[str, tuple[float, float]] | None = None  # name: (test accuracy, seconds)
    report_path: Path | None = None
    look_alikes: SimilarityAgreement | None = None


def glyph_data(seed: int = 0, train_per_class: int | None = None) -> GlyphsDataModule:
    """The demo's :class:`GlyphsDataModule` (:data:`GLYPHS`), all training images or
    ``train_per_class`` of each character."""
    return GlyphsDataModule(batch_size=64, seed=seed, train_per_class=train_per_class, **GLYPHS)


def _trainer(out_dir: str | Path, version: str, epochs: int, progress_bar: bool, **kwargs: Any) -> pl.Trainer:
    logger = TensorBoardLogger(save_dir=str(out_dir), name="", version=version, default_hp_metric=False)
    return pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=logger,
                      enable_checkpointing=False, enable_progress_bar=progress_bar,
                      log_every_n_steps=10, enable_model_summary=False, **kwargs)


def run_demo(
    out_dir: str | Path = "semvec_runs",
    epochs: int = 6,
    dim: int = 16,
    seed: int = 0,
    progress_bar: bool = True,
    data: GlyphsDataModule | None = None,
) -> DemoResult:
    """Train the demo's teacher on the glyphs with the callback; return it, its confusion on the
    unseen fonts, the callback and the paths.

    Writes ``<out_dir>/teacher/`` (TensorBoard logs) and ``<out_dir>/demo.semvec.safetensors``,
    replacing files of those names: :func:`main` gives it a new :func:`next_version_folder`.

    Args:
        out_dir: folder for the TensorBoard logs and the knowledge file.
        epochs: training epochs (6 take about 10 s on 2 cores).
        dim: size of each semantic vector.
        seed: seed for the glyphs, the model and the vectors.
        progress_bar: show Lightning's progress bars.
        data: the glyphs (:func:`glyph_data` of ``seed`` when ``None``).
    """
    check_int("epochs", epochs, 1)
    start = time.perf_counter()
    out = Path(out_dir)
    pl.seed_everything(seed, verbose=False)
    data = glyph_data(seed) if data is None else data
    model = ImageClassifier(PooledCNN(in_channels=1, num_classes=62, width=16, hidden=64), num_classes=62,
                            optimizer=functools.partial(torch.optim.Adam, lr=_LR),
                            lr_scheduler=cosine_schedule(epochs))
    # Projector, figures and fidelity at the last epoch suffice for a run this short. Each neuron
    # keeps its 4 best validation inputs: a 2 x 2 grid in the projector, 4 images on its report card.
    semvec = SemanticVectorCallback(layers=DEMO_LAYERS, dim=dim, seed=seed, analysis=AnalysisOptions(
        log_every_n_epochs=epochs, projector_images="grid", projector_top_k=DEMO_TOP_INPUTS))
    trainer = _trainer(out, "teacher", epochs, progress_bar, callbacks=[semvec])
    trainer.fit(model, datamodule=data)
    test_accuracy = float(trainer.test(model, datamodule=data, verbose=False)[0]["test/acc"])
    confusion = confusion_matrix(cast(nn.Module, model.net), data.test_dataloader(), data.num_classes)
    knowledge_path = semvec.export_knowledge(out / "demo.semvec.safetensors")
    log_dir = Path(trainer.logger.log_dir) if trainer.logger and trainer.logger.log_dir else out / "teacher"
    return DemoResult(semvec, test_accuracy, log_dir, knowledge_path, time.perf_counter() - start,
                      teacher=model, confusion=confusion)


def train_student(
    name: str,
    knowledge_path: str | Path,
    out_dir: str | Path = "semvec_runs",
    epochs: int = 30,
    seed: int = 0,
    progress_bar: bool = True,
    teacher: nn.Module | None = None,
) -> tuple[float, float]:
    """Train the small student as ``name`` (one of :data:`STUDENTS`); return ``(test accuracy,
    seconds)``. Logs to ``<out_dir>/plain_student``, ``static_student`` or ``kd_student``.

    The static student sees only the knowledge file (the module's defaults: the teacher's
    class-level soft targets, 62 x 62 numbers, and its logits' similarity pulled towards the
    teacher's 62 x 16 logit vectors'); the KD student needs ``teacher`` (its network), run on
    every batch. All start from the same weights and see the same batches (same seed).
    """
    if name not in STUDENTS:
        raise SemvecValueError(f"name must be one of {list(STUDENTS)}, got {name!r}.")
    if name == "KD student" and teacher is None:
        raise SemvecValueError("The KD student needs the teacher: pass teacher=<the teacher network>.")
    start = time.perf_counter()
    pl.seed_everything(seed, verbose=False)
    data = glyph_data(seed, train_per_class=STUDENT_PER_CLASS)
    student = PooledCNN(in_channels=1, num_classes=62, width=8, hidden=32)
    optimization: dict[str, Any] = {"optimizer": functools.partial(torch.optim.Adam, lr=_LR),
                                    "lr_scheduler": cosine_schedule(epochs)}
    if name == "plain student":
        module: pl.LightningModule = ImageClassifier(student, num_classes=62, **optimization)
    elif name == "static student":
        module = StaticDistillationModule(student=student, knowledge=StaticKnowledge.load(knowledge_path),
                                          layer_map={"classifier.3": LOGITS_LAYER}, **optimization)
    else:
        assert teacher is not None
        module = TeacherDistillationModule(student=student, teacher=teacher, num_classes=62, method="kd",
                                           **optimization)
    # Validation does not change training; every STUDENT_VAL_EVERY epochs (10, 20, 30 by default) saves
    # about 2 s of a student's 13 s on 2 cores (measured, same test accuracy).
    trainer = _trainer(out_dir, name.lower().replace(" ", "_"), epochs, progress_bar,
                       check_val_every_n_epoch=min(STUDENT_VAL_EVERY, epochs))
    trainer.fit(module, datamodule=data)
    accuracy = float(trainer.test(module, datamodule=data, verbose=False)[0]["test/acc"])
    return accuracy, time.perf_counter() - start


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


def describe_logit_neurons(result: DemoResult) -> str:
    """The characters whose logit neurons have the most similar vectors, beside how often the
    teacher mistook one for the other on the unseen fonts, and the agreement of the two over all
    pairs (also set as ``result.look_alikes``)."""
    if result.confusion is None:
        raise SemvecValueError("describe_logit_neurons needs the teacher's confusion (run_demo sets it).")
    similarity = result.callback.semantic_similarity(LOGITS_LAYER)
    names = result.callback.class_names or [str(i) for i in range(similarity.shape[0])]
    table, result.look_alikes = look_alike_table(similarity, names, result.confusion)
    lines = [table, "", agreement_summary(result.look_alikes, "Vectors against the teacher's mistakes, all pairs")]
    penultimate = profile_agreement(StaticKnowledge.load(result.knowledge_path), PENULTIMATE_LAYER)
    if penultimate is not None:
        lines.append(agreement_summary(
            penultimate, f"{PENULTIMATE_LAYER} (penultimate): vectors against its alive neurons' class profiles"))
    return "\n".join(lines)


def _stage(number: int, title: str, *lines: str) -> None:
    """Print a stage header before its training starts (flushed, so it precedes the bars)."""
    print(f"\n[{number}/4] {title}", *(f"      {line}" for line in lines), sep="\n", flush=True)


@contextlib.contextmanager
def _demo_threads() -> Iterator[int]:
    """Run with at most :data:`DEMO_THREADS` torch threads; restore the count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, DEMO_THREADS, os.cpu_count() or 1)))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def main(
    epochs: int = 6,
    out_dir: str = "semvec_runs",
    progress_bar: bool = True,
    student_epochs: int = 30,
) -> DemoResult:
    """Run the whole demo (teacher, knowledge file, three students, report) and print a summary.

    ``semvec demo`` takes its options from this signature. Each run writes a new folder
    ``<out_dir>/version_N`` (see :func:`next_version_folder`); earlier runs are kept. It trains
    with at most :data:`DEMO_THREADS` torch threads (measured fastest for models this small).

    Args:
        epochs: teacher epochs (with a cosine schedule).
        out_dir: output folder; each run adds a ``version_N`` folder with the TensorBoard
            logs, the knowledge file and the report.
        progress_bar: show Lightning's progress bars.
        student_epochs: epochs of each student (with a cosine schedule; 30 take about 8 s on
            2 cores).

    Raises:
        SemvecValueError: ``epochs`` or ``student_epochs`` is not an integer >= 1, or
            ``out_dir`` is a file. Nothing is written then.
    """
    check_int("epochs", epochs, 1)
    check_int("student_epochs", student_epochs, 1)
    run_dir = next_version_folder(out_dir)
    with _demo_threads():
        return _run(epochs, run_dir, progress_bar, student_epochs)


def _run(epochs: int, run_dir: Path, progress_bar: bool, student_epochs: int) -> DemoResult:
    print(f"semvec demo: four trainings on 62 characters drawn from the fonts inside matplotlib, "
          f"written to {run_dir} (earlier runs are kept). At the end: what a student gains from the "
          f"teacher's knowledge file alone, and which characters the teacher's neurons find alike.",
          flush=True)
    data = glyph_data()
    data.setup()  # rendered the first time (a few seconds), then read from the cache
    assert data.train_dataset is not None
    _stage(1, f"Teacher: PooledCNN(width=16, hidden=64), {_epochs(epochs)} on {len(data.train_dataset):,} "
           f"glyphs of {len(data.train_fonts)} fonts, with SemanticVectorCallback learning 16-d vectors",
           f"for {', '.join(DEMO_LAYERS)}; then it exports the knowledge file.")
    result = run_demo(out_dir=run_dir, epochs=epochs, progress_bar=progress_bar, data=data)
    print(f"      teacher: test accuracy {result.test_accuracy:.3f} on 6 fonts it never saw, "
          f"{result.seconds:.0f} s; knowledge file {result.knowledge_path}", flush=True)
    result.students = {}
    student = f"PooledCNN(width=8, hidden=32), {STUDENT_PER_CLASS} images per character, {_epochs(student_epochs)}"
    for number, name, what in (
        (2, "plain student", "trained alone."),
        (3, "static student", "distilled from the knowledge file alone (the teacher is not loaded): the "
         "teacher's 62 x 62 class-level soft targets and its 62 x 16 logit vectors."),
        (4, "KD student", "with the teacher run on every batch (knowledge distillation at temperature 4), for scale."),
    ):
        _stage(number, f"{name[0].upper() + name[1:]}: {student},", what)
        result.students[name] = train_student(
            name, result.knowledge_path, run_dir, student_epochs, progress_bar=progress_bar,
            teacher=cast(nn.Module, result.teacher.net) if result.teacher is not None else None,
        )
        accuracy, seconds = result.students[name]
        print(f"      {name}: test accuracy {accuracy:.3f}, {seconds:.0f} s", flush=True)
    from lightning_semvec.report.html import write_report

    result.report_path = write_report(result.knowledge_path, run_dir / "report",
                                      confusion=result.confusion)
    percent = {name: 100 * acc for name, (acc, _) in result.students.items()}
    print(f"\nFrom the knowledge file alone, the student reaches {percent['static student']:.1f} % on the "
          f"6 unseen fonts, against {percent['plain student']:.1f} % trained alone and "
          f"{percent['KD student']:.1f} % with the teacher run on every batch (one seed; 10 seeds "
          "with 95 % intervals: docs/results.md).")
    rows = [("teacher (with callback)", result.test_accuracy, result.seconds)]
    rows += [(name, acc, secs) for name, (acc, secs) in result.students.items()]
    print()
    print(f"{'model':<26}{'test accuracy':>14}{'time (s)':>10}")
    for name, acc, seconds in rows:
        print(f"{name:<26}{acc:>14.3f}{seconds:>10.1f}")
    print("\nWhat the teacher's logit neurons learned: the characters whose neurons have the most "
          "similar vectors")
    print(describe_logit_neurons(result))
    print()
    print(f"Knowledge file: {result.knowledge_path}")
    print(f"Report: {result.report_path}")
    print(f"TensorBoard logs: {run_dir} (teacher, plain_student, static_student, kd_student)")
    print(f"  see them with:  tensorboard --logdir {run_dir}")
    return result


def _epochs(count: int) -> str:
    return f"{count} epoch" if count == 1 else f"{count} epochs"


if __name__ == "__main__":
    import sys

    from lightning_semvec.cli._main import main as semvec

    sys.exit(semvec(["demo", *sys.argv[1:]]))
