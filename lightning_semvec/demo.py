"""The embedded demo: scikit-learn's handwritten digits, no download needed.

Run it with ``semvec demo`` (or ``python -m lightning_semvec.demo``, the same command). It

1. trains a teacher CNN on the digits with :class:`~lightning_semvec.SemanticVectorCallback` on
   its conv stages and logits, logging to TensorBoard, and exports the knowledge file;
2. trains the same small student twice, plain and statically distilled from the knowledge file
   alone (the teacher is not used);
3. prints a table (accuracy and time of each), what the logit neurons learned (for each digit,
   the digits whose neurons it resembles most), the TensorBoard command and the report's path.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_semvec.analysis_options import AnalysisOptions
from lightning_semvec.callback import SemanticVectorCallback
from lightning_semvec.checks import check_int
from lightning_semvec.data import DigitsDataModule
from lightning_semvec.distillation import StaticDistillationModule
from lightning_semvec.knowledge import StaticKnowledge
from lightning_semvec.models import ImageClassifier, SmallCNN, cosine_schedule

DEMO_LAYERS = ["net.features.*", "net.classifier.3"]
LOGITS_LAYER = "net.classifier.3"


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

    Args:
        out_dir: folder for the TensorBoard logs and the knowledge file.
        epochs: training epochs (10 take well under a minute on 2 CPU cores).
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
    # Projector, figures and fidelity every 5 epochs and at the end: enough for a short run.
    # A run shorter than that is analysed at its last epoch, so the projector shows classes.
    semvec = SemanticVectorCallback(layers=DEMO_LAYERS, dim=dim, lr=0.05, seed=seed,
                                    analysis=AnalysisOptions(log_every_n_epochs=min(5, epochs)))
    logger = TensorBoardLogger(save_dir=str(out), name="demo")
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


def train_students(
    knowledge_path: str | Path,
    out_dir: str | Path = "semvec_runs",
    epochs: int = 10,
    seed: int = 0,
    progress_bar: bool = True,
) -> dict[str, tuple[float, float]]:
    """Train the small student plain and statically distilled; ``{name: (accuracy, seconds)}``.

    The static student sees only the knowledge file: its logits' similarity on each batch is
    pulled towards the teacher's semantic similarity of the logit neurons.
    """
    knowledge = StaticKnowledge.load(knowledge_path)
    results = {}
    for name in ("plain student", "static student"):
        start = time.perf_counter()
        pl.seed_everything(seed, verbose=False)
        data = DigitsDataModule(batch_size=64, seed=seed)
        student = SmallCNN(in_channels=1, num_classes=10, width=4, hidden=16)
        optimization = {"optimizer": functools.partial(torch.optim.Adam, lr=1e-2),
                        "lr_scheduler": cosine_schedule(epochs)}
        if name == "plain student":
            module: pl.LightningModule = ImageClassifier(student, **optimization)
        else:
            module = StaticDistillationModule(
                student=student, knowledge=knowledge,
                # Weight 0.1: at 1 the scale-free Pearson term can swamp a tiny student's task
                # loss (docs/results.md measures both).
                layer_map={"classifier.3": LOGITS_LAYER}, weight=0.1, **optimization,
            )
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, max_epochs=epochs,
            logger=TensorBoardLogger(save_dir=str(out_dir), name=name.replace(" ", "_")),
            enable_checkpointing=False, enable_progress_bar=progress_bar, log_every_n_steps=5,
            enable_model_summary=False,
        )
        trainer.fit(module, datamodule=data)
        accuracy = float(trainer.test(module, datamodule=data, verbose=False)[0]["test/acc"])
        results[name] = (accuracy, time.perf_counter() - start)
    return results


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


def main(
    epochs: int = 10,
    out_dir: str = "semvec_runs",
    progress_bar: bool = True,
    student_epochs: int = 30,
) -> DemoResult:
    """Run the whole demo (teacher, knowledge file, two students, report) and print a summary.

    ``semvec demo`` takes its options from this signature.

    Args:
        epochs: teacher epochs.
        out_dir: output folder (TensorBoard logs, the knowledge file and the report).
        progress_bar: show Lightning's progress bars.
        student_epochs: epochs of each student (with a cosine schedule): a 4-channel student
            is noisy over a few epochs, and 30 take a few seconds.

    Raises:
        SemvecValueError: ``epochs`` or ``student_epochs`` is not an integer >= 1.
    """
    check_int("epochs", epochs, 1)
    check_int("student_epochs", student_epochs, 1)
    result = run_demo(out_dir=out_dir, epochs=epochs, progress_bar=progress_bar)
    result.students = train_students(
        result.knowledge_path, out_dir, student_epochs, progress_bar=progress_bar
    )
    try:
        from lightning_semvec.report import write_report

        result.report_path = write_report(
            result.knowledge_path, Path(out_dir) / "report"
        )
    except ImportError:  # pragma: no cover - the report module ships with the package
        result.report_path = None
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
    if result.report_path is not None:
        print(f"Report: {result.report_path}")
    print(f"TensorBoard logs: {result.log_dir}")
    print(f"  see them with:  tensorboard --logdir {Path(out_dir)}")
    return result


if __name__ == "__main__":
    import sys

    from lightning_semvec.cli import main as semvec

    sys.exit(semvec(["demo", *sys.argv[1:]]))
