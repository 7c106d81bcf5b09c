"""Small deterministic LightningModules shared by the tests (importable by DDP workers)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset


def make_data(n: int = 96, seed: int = 0, classes: int = 3) -> TensorDataset:
    """Images whose class sets a bright quadrant, so neurons learn something."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.rand(n, 1, 6, 6, generator=g) * 0.3
    for c in range(classes):
        rows = slice(0, 3) if c % 2 == 0 else slice(3, 6)
        cols = slice(0, 3) if c < 2 else slice(3, 6)
        x[y == c, :, rows, cols] += 1.0
    return TensorDataset(x, y)


class TinyConvNet(pl.LightningModule):
    """``features.*`` are conv stages, ``classifier.2`` the logits (3 classes)."""

    def __init__(self, batch_size: int = 16, lr: float = 0.05, n: int = 96) -> None:
        super().__init__()
        self.batch_size, self.lr, self.n = batch_size, lr, n
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU()
        )
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train/loss", loss, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val/loss", nn.functional.cross_entropy(self(x), y), batch_size=x.shape[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

    def train_dataloader(self) -> DataLoader:
        data = make_data(self.n)
        world = self.trainer.world_size if self._trainer is not None else 1
        if world > 1:
            # Lightning's own sampler always shuffles training data; a fixed split lets a
            # 2-process run see exactly the batches of a 1-process run (with
            # Trainer(use_distributed_sampler=False)).
            sampler = DistributedSampler(data, world, self.trainer.global_rank, shuffle=False)
            return DataLoader(data, batch_size=self.batch_size, sampler=sampler)
        return DataLoader(data, batch_size=self.batch_size, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(make_data(32, seed=1), batch_size=16)


class WideLinearNet(TinyConvNet):
    """One wide Linear layer ``wide`` fed by flattened images."""

    def __init__(self, width: int = 8192, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.wide = nn.Linear(36, width)
        self.head = nn.Linear(width, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.relu(self.wide(x.flatten(1))))


def trainer_kwargs(**overrides: Any) -> dict[str, Any]:
    """Quiet CPU trainer settings for tests."""
    kwargs: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    kwargs.update(overrides)
    return kwargs
