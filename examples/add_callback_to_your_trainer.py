"""Add ``SemanticVectorCallback`` to your own LightningModule, then read and export what it learned.

Run from the repository root (scikit-learn's embedded digits: nothing is downloaded)::

    python examples/add_callback_to_your_trainer.py                # 8 epochs, under a minute
    python examples/add_callback_to_your_trainer.py --smoke        # a few batches (tests use it)
    python examples/add_callback_to_your_trainer.py --out my_runs  # where the knowledge goes

The module below is an ordinary LightningModule: nothing in it knows about the callback. The
callback hooks the layers you name, learns a vector per neuron while ``trainer.fit`` runs, and
at the end the script prints the vectors' shapes, which digits' logit neurons resemble each
other, the held-out fidelity, and writes ``<out>/digits_teacher.semvec.safetensors``, the
knowledge file that ``examples/subclass_distillation_module.py`` distils a student from.
Set ``SEMVEC_EXAMPLES_SMOKE=1`` instead of passing ``--smoke`` if you prefer.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from lightning_semvec import SemanticVectorCallback, StaticKnowledge
from lightning_semvec.data import DigitsDataModule


class DigitsNet(pl.LightningModule):
    """Your model: two conv stages and a linear classifier for 8x8 digits."""

    def __init__(self, lr: float = 1e-2) -> None:
        super().__init__()
        self.lr = lr
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),   # features.1: 16 channels
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),  # features.3: 32 channels
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )
        self.classifier = nn.Linear(32 * 4, 10)           # the logits: one neuron per digit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/acc", (self(x).argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="examples_out", help="folder for the knowledge file")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--smoke", action="store_true",
                        default=os.environ.get("SEMVEC_EXAMPLES_SMOKE") == "1",
                        help="a tiny run: 1 epoch of 4 batches")
    args = parser.parse_args(argv)

    pl.seed_everything(0, verbose=False)
    semvec = SemanticVectorCallback(
        layers=["features.1", "features.3", "classifier"],  # names in model.named_modules()
        dim=8, lr=0.05,
    )
    trainer = pl.Trainer(
        max_epochs=1 if args.smoke else args.epochs,
        limit_train_batches=4 if args.smoke else None,
        limit_val_batches=2 if args.smoke else None,
        callbacks=[semvec], logger=False, enable_checkpointing=False,
        enable_progress_bar=not args.smoke, enable_model_summary=False,
    )
    trainer.fit(DigitsNet(), datamodule=DigitsDataModule(batch_size=64))

    print(f"Validation accuracy of the model: {float(trainer.callback_metrics['val/acc']):.3f}")
    for layer, vectors in semvec.semantic_vectors.items():
        rho = semvec.fidelity.get(layer, {}).get("spearman", float("nan"))
        print(f"{layer:<11} vectors {tuple(vectors.shape)}, "
              f"held-out fidelity (Spearman) {rho:+.2f}")
    similarity = semvec.semantic_similarity("classifier")   # (10, 10), cosine of the vectors
    similarity.fill_diagonal_(-1.0)
    print("digit: the digit whose logit neuron is most similar")
    for digit, row in enumerate(similarity):
        print(f"  {digit} ~ {int(row.argmax())} ({float(row.max()):+.2f})")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # This script's own output: a rerun replaces it (without overwrite=True, an existing file is an error).
    path = semvec.export_knowledge(out / "digits_teacher.semvec.safetensors", overwrite=True)
    print(f"Knowledge file: {path}\n  {StaticKnowledge.load(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
