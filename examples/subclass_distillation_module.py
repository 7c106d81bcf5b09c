"""Distil a student from a knowledge file alone, by subclassing ``StaticDistillationModule``.

First make the knowledge file, then distil (run from the repository root)::

    python examples/add_callback_to_your_trainer.py          # writes the knowledge file
    python examples/subclass_distillation_module.py          # 8 epochs, under a minute
    python examples/subclass_distillation_module.py --smoke  # a few batches (tests use it)
    python examples/subclass_distillation_module.py --knowledge path/to/teacher.semvec.safetensors

The teacher network is never built, loaded or run: the student only sees the teacher's
semantic vectors. The subclass shows the two usual overrides: ``task_loss`` (label smoothing
here) and ``configure_optimizers`` (AdamW with a one-cycle schedule). The student is half the
teacher's width, so its ``features.3`` (16 channels) reaches the teacher's 32 through a
learnable linear map that the module builds for you. Set ``SEMVEC_EXAMPLES_SMOKE=1`` instead of
passing ``--smoke`` if you prefer.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from lightning_semvec import StaticDistillationModule
from lightning_semvec.data import DigitsDataModule


class HalfWidthStudent(StaticDistillationModule):
    """The teacher's layout at half its width, pulled towards the teacher's neuron similarities."""

    def __init__(self, knowledge: str | Path, lr: float = 0.03) -> None:
        student = nn.Sequential()  # named like the teacher's layers, relative to this network
        student.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )
        student.classifier = nn.Linear(16 * 4, 10)
        super().__init__(
            student=student,
            knowledge=knowledge,                      # a path or a loaded StaticKnowledge
            layer_map={"classifier": "classifier",    # the logits: same 10 neurons on both sides
                       "features.3": "features.3"},   # 16 student channels -> 32 teacher channels
            weight={"classifier": 1.0, "features.3": 0.5},
            student_widths={"features.3": 16},         # a ReLU does not say how wide it is
        )
        self.peak_lr = lr  # of the one-cycle schedule below, which replaces the default optimizer

    def task_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=0.1)

    def configure_optimizers(self):
        # self.parameters() holds the student and the learnable maps, never the teacher's vectors.
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.peak_lr, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.peak_lr, total_steps=self.trainer.estimated_stepping_batches
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--knowledge", default="examples_out/digits_teacher.semvec.safetensors")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--smoke", action="store_true",
                        default=os.environ.get("SEMVEC_EXAMPLES_SMOKE") == "1",
                        help="a tiny run: 1 epoch of 4 batches")
    args = parser.parse_args(argv)
    if not Path(args.knowledge).is_file():
        print(f"No knowledge file at {args.knowledge}: run "
              "`python examples/add_callback_to_your_trainer.py` first.", file=sys.stderr)
        return 2

    pl.seed_everything(0, verbose=False)
    module = HalfWidthStudent(args.knowledge)
    print(f"Student layers paired with the teacher's: {module.layer_map}; learnable maps: "
          f"{dict(module.projections.items())}")
    data = DigitsDataModule(batch_size=64)
    trainer = pl.Trainer(
        max_epochs=1 if args.smoke else args.epochs,
        limit_train_batches=4 if args.smoke else None,
        limit_val_batches=2 if args.smoke else None,
        limit_test_batches=2 if args.smoke else None,
        logger=False, enable_checkpointing=False,
        enable_progress_bar=not args.smoke, enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)
    metrics = trainer.callback_metrics
    for name in sorted(metrics):
        if name.startswith("val/"):
            print(f"{name:<30} {float(metrics[name]):.4f}")
    result = trainer.test(module, datamodule=data, verbose=False)[0]
    print(f"Student test accuracy: {result['test/acc']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
