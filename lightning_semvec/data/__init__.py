"""Ready-made LightningDataModules: scikit-learn's embedded digits (no download) and
torchvision's MNIST, CIFAR-10 and CIFAR-100 (download only when asked)."""

from lightning_semvec.data.digits import DigitsDataModule
from lightning_semvec.data.torchvision_datasets import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    MNISTDataModule,
    TorchvisionDataModule,
)

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DigitsDataModule",
    "MNISTDataModule",
    "TorchvisionDataModule",
]
