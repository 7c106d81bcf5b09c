"""Small deterministic LightningModules shared by the tests (importable by DDP workers)."""

from __future__ import annotations

import copy
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


#: Trainer options that print nothing (for post-hoc passes).
QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "logger": False}


def mlp(seed: int, hidden: tuple[int, int] = (16, 12)) -> nn.Sequential:
    """``1`` and ``3``: hidden ReLU layers; ``4``: 4 logits."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, hidden[0]), nn.ReLU(), nn.Linear(*hidden), nn.ReLU(),
                         nn.Linear(hidden[1], 4))


def permuted(net: nn.Sequential, seed: int, noise: float) -> tuple[nn.Sequential, list[Tensor]]:
    """``net`` with the units of both hidden layers permuted (the function unchanged), then
    every weight moved by ``noise`` times its layer's spread; and the permutations."""
    g = torch.Generator().manual_seed(seed)
    other = copy.deepcopy(net)
    perms = [torch.randperm(net[0].out_features, generator=g),
             torch.randperm(net[2].out_features, generator=g)]
    first, second = perms
    with torch.no_grad():  # unit i of B's hidden layer is unit perm[i] of A's
        other[0].weight.copy_(net[0].weight[first])
        other[0].bias.copy_(net[0].bias[first])
        other[2].weight.copy_(net[2].weight[second][:, first])
        other[2].bias.copy_(net[2].bias[second])
        other[4].weight.copy_(net[4].weight[:, second])
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=g) * noise * p.std())
    return other, perms


def data(n: int = 512, seed: int = 0) -> DataLoader:
    """``n`` random 6-feature inputs with 3 labels, for :func:`mlp`, in batches of 128."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(torch.randn(n, 6, generator=g),
                                    torch.randint(0, 3, (n,), generator=g)), batch_size=128)
