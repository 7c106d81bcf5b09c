"""Ready-made LightningDataModules: scikit-learn's embedded digits and 62 glyph classes drawn
from matplotlib's fonts (no download), and torchvision's MNIST, CIFAR-10 and CIFAR-100 (download
only when asked).

``digits`` (``DigitsDataModule``), ``glyphs`` (``GlyphsDataModule``; its fonts are checked in
``_glyph_fonts``, its samples drawn in ``_glyph_augment``), ``torchvision_datasets`` and
``split_datamodule`` (the loaders they share).
"""

from lightning_semvec.data._glyph_augment import Augmentation
from lightning_semvec.data.digits import DigitsDataModule
from lightning_semvec.data.glyphs import GlyphsDataModule
from lightning_semvec.data.torchvision_datasets import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    MNISTDataModule,
    TorchvisionDataModule,
)

__all__ = [
    "Augmentation",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DigitsDataModule",
    "GlyphsDataModule",
    "MNISTDataModule",
    "TorchvisionDataModule",
]
