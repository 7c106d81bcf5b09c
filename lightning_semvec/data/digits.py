"""Scikit-learn's embedded handwritten digits as a LightningDataModule (no download needed)."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from lightning_semvec._utils.checks import check_choice, check_int, check_number
from lightning_semvec.data.split_datamodule import SplitDataModule
from lightning_semvec.errors import SemvecValueError

UpscaleMode = Literal["nearest", "bilinear"]


class DigitsDataModule(SplitDataModule):
    """The 1797 handwritten 8x8 digits shipped with scikit-learn (``load_digits``), 10 classes.

    The data are embedded in scikit-learn, so nothing is downloaded: this is the data module
    for fast tests, examples and laptops. Images are ``float32`` tensors of shape
    ``(1, 8 * upscale, 8 * upscale)`` with values in ``[0, 1]`` (the raw 0..16 grey levels
    divided by 16); labels are ``int64`` in ``0..9``.

    The split into train / val / test is stratified by class and fixed by ``seed``
    (``sklearn.model_selection.train_test_split``); with the defaults it has
    1257 / 270 / 270 images. The train loader shuffles with a ``torch.Generator`` seeded
    by ``seed``; the val and test loaders keep their order.

    Args:
        batch_size: samples per batch, at least 1.
        val_fraction: fraction of all images held out for validation, in ``(0, 1)``.
        test_fraction: fraction of all images held out for testing, in ``(0, 1)``;
            ``val_fraction + test_fraction`` must be below 1.
        seed: seed of the split and of the train loader's shuffling.
        num_workers: worker processes per loader (0 loads in the main process).
        upscale: integer factor by which the images are enlarged (1 keeps 8x8,
            2 gives 16x16, ...), computed once in :meth:`setup`.
        upscale_mode: ``"nearest"`` (blocky, exact grey levels) or ``"bilinear"``.

    Attributes:
        num_classes: 10.
        class_names: ``["0", "1", ..., "9"]``.
        image_shape: ``(1, 8 * upscale, 8 * upscale)``.
        train_dataset, val_dataset, test_dataset: ``TensorDataset`` of ``(image, label)``,
            set by :meth:`setup`.
        split_indices: ``{"train", "val", "test"}`` to the sorted ``int64`` indices into
            ``load_digits()`` of each split, set by :meth:`setup`.

    Example:
        >>> dm = DigitsDataModule(batch_size=32, upscale=2)
        >>> dm.setup()
        >>> len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)
        (1257, 270, 270)
        >>> images, labels = next(iter(dm.train_dataloader()))
        >>> tuple(images.shape), images.dtype, labels.dtype
        ((32, 1, 16, 16), torch.float32, torch.int64)
    """

    num_classes: int = 10
    class_names: ClassVar[list[str]] = [str(digit) for digit in range(10)]

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        num_workers: int = 0,
        upscale: int = 1,
        upscale_mode: UpscaleMode = "nearest",
    ) -> None:
        super().__init__()
        check_int("batch_size", batch_size, 1)
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            # check_number's bounds are inclusive; both ends are refused here.
            if check_number(name, value, minimum=0.0, maximum=1.0) in (0.0, 1.0):
                raise SemvecValueError(f"{name} must be a number strictly between 0 and 1; got {value!r}.")
        if val_fraction + test_fraction >= 1.0:
            raise SemvecValueError(
                f"val_fraction + test_fraction must be below 1 so that training images remain; "
                f"got {val_fraction} + {test_fraction} = {val_fraction + test_fraction}."
            )
        check_int("num_workers", num_workers, 0)
        check_int("upscale", upscale, 1, hint="(a factor: 1 keeps 8x8 images, 2 gives 16x16)")
        check_choice("upscale_mode", upscale_mode, ("nearest", "bilinear"))
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.seed = seed
        self.num_workers = num_workers
        self.upscale = upscale
        self.upscale_mode: UpscaleMode = upscale_mode
        side = 8 * upscale
        self.image_shape: tuple[int, int, int] = (1, side, side)
        self.split_indices: dict[str, torch.Tensor] = {}
        self.train_dataset: TensorDataset | None = None
        self.val_dataset: TensorDataset | None = None
        self.test_dataset: TensorDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Load the digits, scale and split them; later calls do nothing (idempotent)."""
        if self.train_dataset is not None:
            return
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = torch.from_numpy(np.asarray(digits.images, dtype=np.float32) / 16.0).unsqueeze(1)
        if self.upscale > 1:
            kwargs = {"align_corners": False} if self.upscale_mode == "bilinear" else {}
            images = F.interpolate(images, scale_factor=self.upscale, mode=self.upscale_mode, **kwargs)
            images = images.clamp_(0.0, 1.0).contiguous()
        labels = torch.from_numpy(np.asarray(digits.target, dtype=np.int64))

        indices = np.arange(len(labels))
        rest, test_idx = train_test_split(
            indices, test_size=self.test_fraction, stratify=labels.numpy(), random_state=self.seed
        )
        train_idx, val_idx = train_test_split(
            rest,
            test_size=self.val_fraction / (1.0 - self.test_fraction),
            stratify=labels.numpy()[rest],
            random_state=self.seed,
        )

        self.split_indices = {
            split: torch.from_numpy(np.sort(idx))
            for split, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx))
        }
        self.val_dataset = TensorDataset(*(t[self.split_indices["val"]] for t in (images, labels)))
        self.test_dataset = TensorDataset(*(t[self.split_indices["test"]] for t in (images, labels)))
        self.train_dataset = TensorDataset(*(t[self.split_indices["train"]] for t in (images, labels)))

