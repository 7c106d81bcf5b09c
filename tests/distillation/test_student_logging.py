"""What the student modules hand to the loggers, on which steps: per-step diagnostics on the
steps Lightning writes, epoch values from every step."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import Logger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_semvec.distillation import DistillationTerm, StudentModule

BATCHES_PER_EPOCH, BATCH = 7, 8


class RecordingLogger(Logger):
    """Keeps every ``log_metrics`` call as ``(step, metrics)``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.calls.append((int(step), dict(metrics)))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def steps_with(self, key: str) -> list[int]:
        return [step for step, metrics in self.calls if key in metrics]

    def value(self, key: str, step: int) -> float:
        return next(m[key] for s, m in self.calls if s == step and key in m)


class WithPenalty(StudentModule):
    """A student with one term, ``logit_norm``, weighted 0.1."""

    def distillation_losses(self, inputs: Tensor, targets: Tensor, logits: Tensor, captured: Any) -> dict:
        return {"logit_norm": DistillationTerm(logits.pow(2).mean(), 0.1)}


class StepLosses(pl.Callback):
    """The loss each training step returned."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


@pytest.fixture(scope="module")
def run() -> tuple[RecordingLogger, StepLosses]:
    pl.seed_everything(0, verbose=False)
    data = TensorDataset(torch.randn(BATCHES_PER_EPOCH * BATCH, 6), torch.randint(0, 3, (BATCHES_PER_EPOCH * BATCH,)))
    module = WithPenalty(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), num_classes=3)
    logger, losses = RecordingLogger(), StepLosses()
    trainer = pl.Trainer(max_epochs=2, log_every_n_steps=2, logger=logger, callbacks=[losses],
                         limit_val_batches=0, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, DataLoader(data, batch_size=BATCH))
    return logger, losses


def test_diagnostics_reach_the_logger_on_exactly_the_steps_lightning_writes(run):
    logger, _ = run
    written = logger.steps_with("train/loss_step")  # handed to Lightning on the written steps only
    assert written == [1, 3, 5, 7, 9, 11, 13]  # (step + 1) % 2 == 0 over 14 steps
    assert logger.steps_with("train/task_loss") == written
    assert logger.steps_with("train/logit_norm") == written
    for step in written:  # the three values come from the same step
        total = logger.value("train/task_loss", step) + 0.1 * logger.value("train/logit_norm", step)
        assert total == pytest.approx(logger.value("train/loss_step", step), rel=1e-5)


def test_epoch_values_average_every_step_and_diagnostics_have_none(run):
    logger, losses = run
    epoch_values = [m["train/loss_epoch"] for _, m in logger.calls if "train/loss_epoch" in m]
    expected = [sum(losses.losses[i:i + BATCHES_PER_EPOCH]) / BATCHES_PER_EPOCH
                for i in (0, BATCHES_PER_EPOCH)]
    assert epoch_values == pytest.approx(expected, rel=1e-5)
    keys = {key for _, metrics in logger.calls for key in metrics}
    assert not {"train/task_loss_epoch", "train/logit_norm_epoch"} & keys
