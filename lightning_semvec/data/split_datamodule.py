"""The loaders every data module here shares: train / val / test splits held as datasets."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset


class SplitDataModule(pl.LightningDataModule):
    """A data module whose ``setup`` fills ``train_dataset``, ``val_dataset`` and ``test_dataset``.

    Subclasses set ``batch_size``, ``num_workers`` and ``seed`` and implement an idempotent
    ``setup``. Training batches are shuffled by a generator seeded with ``seed``; validation and
    test batches keep a fixed order.
    """

    batch_size: int
    num_workers: int
    seed: int
    train_dataset: Dataset | None
    val_dataset: Dataset | None
    test_dataset: Dataset | None

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup("fit")  # idempotent (every split at once): lets the loaders be used without a Trainer
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            getattr(self, f"{split}_dataset"),
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches ``(images (B, C, H, W) float32, labels (B,) int64)``."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order."""
        return self._loader("test", shuffle=False)
