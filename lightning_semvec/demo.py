"""The embedded demo: the callback on scikit-learn's handwritten digits, no download needed.

Run it with ``semvec demo`` (or ``python -m lightning_semvec.demo``). It trains a small CNN on
the digits with :class:`~lightning_semvec.SemanticVectorCallback` on the conv stages and the
logits, logs to TensorBoard, exports the knowledge file and prints what the logit neurons
learned: for each digit, the digits whose neurons it resembles most.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_semvec.callback import SemanticVectorCallback
from lightning_semvec.data import DigitsDataModule
from lightning_semvec.models import ImageClassifier, SmallCNN

DEMO_LAYERS = ["net.features.*", "net.classifier.3"]
LOGITS_LAYER = "net.classifier.3"


@dataclass
class DemoResult:
    """What the demo produced: the callback, the test accuracy and where files went."""

    callback: SemanticVectorCallback
    test_accuracy: float
    log_dir: Path
    knowledge_path: Path
    seconds: float


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
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}.")
    start = time.perf_counter()
    out = Path(out_dir)
    pl.seed_everything(seed, verbose=False)
    data = DigitsDataModule(batch_size=64, seed=seed)
    model = ImageClassifier(SmallCNN(in_channels=1, num_classes=10, width=16, hidden=64), lr=1e-2)
    semvec = SemanticVectorCallback(layers=DEMO_LAYERS, dim=dim, lr=0.05, seed=seed)
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


def main(epochs: int = 10, out_dir: str = "semvec_runs", progress_bar: bool = True) -> DemoResult:
    """Run the demo and print its summary."""
    result = run_demo(out_dir=out_dir, epochs=epochs, progress_bar=progress_bar)
    vectors = result.callback.semantic_vectors
    print()
    print(f"Trained the demo CNN on the digits in {result.seconds:.0f} s: "
          f"test accuracy {result.test_accuracy:.3f}.")
    print("Semantic vectors learned: " + ", ".join(
        f"{name} {tuple(v.shape)}" for name, v in vectors.items()))
    print()
    print(describe_logit_neurons(result.callback))
    print()
    print(f"Knowledge file: {result.knowledge_path}")
    print(f"TensorBoard logs: {result.log_dir}")
    print(f"  see them with:  tensorboard --logdir {Path(out_dir)}")
    return result


if __name__ == "__main__":
    main()
