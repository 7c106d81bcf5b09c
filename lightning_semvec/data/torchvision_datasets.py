"""MNIST, CIFAR-10 and CIFAR-100 from ``torchvision.datasets`` as LightningDataModules.

Nothing is downloaded unless ``download=True`` (on the command line ``--data.download true``);
with the files missing, :meth:`~TorchvisionDataModule.setup` raises a ``FileNotFoundError``
that names the folder and files it looked for.

The official training split is divided, with a seeded random permutation, into a training
part and a validation part of ``val_fraction`` of it; the official test split is the test set.
With ``val_fraction=0`` the whole training split trains and the validation loader serves the
test split (the usual protocol of the CIFAR distillation benchmarks).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset
from torchvision import datasets, transforms

from lightning_semvec._utils.checks import check_int, check_number
from lightning_semvec.data.split_datamodule import SplitDataModule
from lightning_semvec.errors import SemvecValueError


class _TransformedSubset(Dataset):
    """A view of ``dataset`` restricted to ``indices`` (all if ``None``), applying ``transform``
    to the image; lets the train and validation parts of one loaded split use different
    transforms without loading it twice."""

    def __init__(self, dataset: Any, indices: Sequence[int] | None, transform: Callable | None) -> None:
        self.dataset = dataset
        self.indices = None if indices is None else list(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset) if self.indices is None else len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, target = self.dataset[index if self.indices is None else self.indices[index]]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(target)


class TorchvisionDataModule(SplitDataModule):
    """Shared machinery of the torchvision-backed data modules (not used directly).

    Subclasses set the class attributes ``dataset_cls``, ``num_classes``, ``image_shape``,
    ``mean`` and ``std`` and implement :meth:`expected_files`; they may override
    :meth:`train_transform` (augmentation) and :meth:`_read_class_names`.

    Args:
        data_dir: root folder handed to the torchvision dataset (``root``).
        download: fetch the files into ``data_dir`` if they are missing.
        batch_size: samples per batch, at least 1.
        num_workers: worker processes per loader.
        val_fraction: fraction of the official training split held out for validation,
            in ``[0, 1)``; 0 validates on the test split.
        seed: seed of the train/val split and of the train loader's shuffling.
    """

    dataset_cls: ClassVar[type]
    num_classes: ClassVar[int]
    image_shape: ClassVar[tuple[int, int, int]]
    mean: ClassVar[tuple[float, ...]]
    std: ClassVar[tuple[float, ...]]

    def __init__(
        self,
        data_dir: str | os.PathLike = "data",
        download: bool = False,
        batch_size: int = 128,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_int("batch_size", batch_size, 1)
        check_int("num_workers", num_workers, 0)
        # check_number's bounds are inclusive; 1 would leave no training images.
        if check_number("val_fraction", val_fraction, minimum=0.0, maximum=1.0) == 1.0:
            raise SemvecValueError(
                f"val_fraction must be in [0, 1) (0 validates on the test split); got {val_fraction!r}."
            )
        self.data_dir = Path(data_dir)
        self.download = bool(download)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = float(val_fraction)
        self.seed = seed
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None
        self._class_names: list[str] | None = None
        self.save_hyperparameters()  # collects the arguments of subclasses' __init__ too

    # ----------------------------------------------------------------- files
    @property
    def dataset_name(self) -> str:
        """Name of the torchvision dataset class, e.g. ``"CIFAR10"``."""
        return self.dataset_cls.__name__

    def expected_files(self) -> list[Path]:
        """Every file the torchvision dataset needs under ``data_dir``."""
        raise NotImplementedError

    def missing_files(self) -> list[Path]:
        """The files of :meth:`expected_files` that do not exist."""
        return [path for path in self.expected_files() if not path.is_file()]

    def _missing_files_error(self, missing: list[Path]) -> FileNotFoundError:
        folder = os.path.commonpath([str(path.parent) for path in self.expected_files()])
        names = ", ".join(path.name for path in missing)
        return FileNotFoundError(
            f"{self.dataset_name} files not found in {folder} (data_dir={str(self.data_dir)!r}); "
            f"missing: {names}. Either pass download=True (command line: --data.download true) "
            f"to fetch them into data_dir, or copy the files of torchvision's "
            f"datasets.{self.dataset_name} layout into {folder}."
        )

    def prepare_data(self) -> None:
        """Download the files when ``download=True`` and some are missing (one process only)."""
        if self.download and self.missing_files():
            for train in (True, False):
                self.dataset_cls(str(self.data_dir), train=train, download=True)

    def _load(self, train: bool) -> Any:
        try:
            return self.dataset_cls(str(self.data_dir), train=train, download=False)
        except RuntimeError as error:  # present but rejected: torchvision checks checksums
            raise RuntimeError(
                f"torchvision could not read the {self.dataset_name} files in {self.data_dir} "
                f"({error}). They may be corrupted or incomplete: delete them and pass "
                f"download=True (command line: --data.download true) to fetch fresh copies."
            ) from error

    # ------------------------------------------------------------ transforms
    def eval_transform(self) -> Callable:
        """Tensor conversion and per-channel normalisation (val, test and unaugmented train)."""
        return transforms.Compose([transforms.ToTensor(), transforms.Normalize(self.mean, self.std)])

    def train_transform(self) -> Callable:
        """Transform of the training images; without augmentation the same as evaluation."""
        return self.eval_transform()

    # ----------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        """Load both splits and divide the training split; later calls do nothing.

        Raises:
            FileNotFoundError: when files are missing and ``download`` is off.
        """
        if self.train_dataset is not None:
            return
        missing = self.missing_files()
        if missing:
            if not self.download:
                raise self._missing_files_error(missing)
            self.prepare_data()
        train_split = self._load(train=True)
        test_split = self._load(train=False)
        self._class_names = self._read_class_names(train_split)

        eval_tf = self.eval_transform()
        self.test_dataset = _TransformedSubset(test_split, None, eval_tf)
        n_val = round(self.val_fraction * len(train_split))
        if n_val == 0:
            self.train_dataset = _TransformedSubset(train_split, None, self.train_transform())
            self.val_dataset = self.test_dataset
            return
        if n_val >= len(train_split):
            raise SemvecValueError(
                f"val_fraction={self.val_fraction} leaves no training images out of {len(train_split)}."
            )
        order = torch.randperm(len(train_split), generator=torch.Generator().manual_seed(self.seed))
        val_idx, train_idx = order[:n_val].sort().values, order[n_val:].sort().values
        self.train_dataset = _TransformedSubset(train_split, train_idx.tolist(), self.train_transform())
        self.val_dataset = _TransformedSubset(train_split, val_idx.tolist(), eval_tf)

    def _read_class_names(self, dataset: Any) -> list[str]:
        return [str(name) for name in dataset.classes]

    @property
    def class_names(self) -> list[str]:
        """Names of the classes, index ``i`` naming label ``i``."""
        if self._class_names is None:
            self.setup()
        assert self._class_names is not None
        return list(self._class_names)



class MNISTDataModule(TorchvisionDataModule):
    """MNIST handwritten digits, 28x28 grey images, 10 classes (60 000 train, 10 000 test).

    Expects torchvision's layout ``<data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``
    (uncompressed). Images are normalised with the MNIST mean 0.1307 and std 0.3081.
    Arguments as in :class:`TorchvisionDataModule`.

    Attributes:
        num_classes: 10.
        class_names: ``["0", ..., "9"]``.
        image_shape: ``(1, 28, 28)``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as empty:
        ...     dm = MNISTDataModule(data_dir=empty, batch_size=32)
        ...     print(dm.num_classes, dm.image_shape, dm.class_names[:3])
        ...     try:
        ...         dm.setup()
        ...     except FileNotFoundError as error:
        ...         print("--data.download true" in str(error))
        10 (1, 28, 28) ['0', '1', '2']
        True
    """

    dataset_cls = datasets.MNIST
    num_classes = 10
    image_shape = (1, 28, 28)
    mean = (0.1307,)
    std = (0.3081,)

    def expected_files(self) -> list[Path]:
        raw = self.data_dir / "MNIST" / "raw"
        return [raw / os.path.splitext(os.path.basename(name))[0] for name, _ in datasets.MNIST.resources]

    def missing_files(self) -> list[Path]:
        # torchvision also accepts its older processed cache (MNIST/processed/{training,test}.pt)
        processed = self.data_dir / "MNIST" / "processed"
        if all((processed / name).is_file() for name in ("training.pt", "test.pt")):
            return []
        return super().missing_files()

    def _read_class_names(self, dataset: Any) -> list[str]:
        return [str(digit) for digit in range(10)]

    @property
    def class_names(self) -> list[str]:
        """``["0", ..., "9"]`` (torchvision's ``classes`` spell them ``"0 - zero"``, ...)."""
        return [str(digit) for digit in range(10)]


class _CIFARDataModule(TorchvisionDataModule):
    """CIFAR base: 32x32 colour images, optional crop-and-flip augmentation of training images.

    Args:
        augment: pad by 4 and randomly crop 32x32, and flip horizontally at random, the
            training images (validation and test images are never augmented).
        Other arguments as in :class:`TorchvisionDataModule`.
    """

    image_shape = (3, 32, 32)

    def __init__(
        self,
        data_dir: str | os.PathLike = "data",
        download: bool = False,
        batch_size: int = 128,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        seed: int = 0,
        augment: bool = True,
    ) -> None:
        super().__init__(data_dir, download, batch_size, num_workers, val_fraction, seed)
        self.augment = bool(augment)

    def expected_files(self) -> list[Path]:
        cls: Any = self.dataset_cls  # a CIFAR class: base_folder, train_list, test_list, meta
        folder = self.data_dir / cls.base_folder
        names = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        return [folder / name for name in names]

    def train_transform(self) -> Callable:
        if not self.augment:
            return self.eval_transform()
        return transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(self.mean, self.std),
            ]
        )

    @property
    def class_names(self) -> list[str]:
        """Class names from the dataset's meta file (readable before :meth:`setup`)."""
        if self._class_names is None:
            cls: Any = self.dataset_cls  # a CIFAR class
            meta = self.data_dir / cls.base_folder / cls.meta["filename"]
            if not meta.is_file():
                raise self._missing_files_error(self.missing_files())
            with open(meta, "rb") as handle:
                content = pickle.load(handle, encoding="latin1")
            self._class_names = [str(name) for name in content[cls.meta["key"]]]
        return list(self._class_names)


class CIFAR10DataModule(_CIFARDataModule):
    """CIFAR-10: 32x32 colour images, 10 classes (50 000 train, 10 000 test).

    Expects torchvision's layout ``<data_dir>/cifar-10-batches-py/{data_batch_1..5, test_batch,
    batches.meta}`` (the python pickles). Images are normalised per channel with the
    CIFAR-10 training statistics; ``augment=True`` adds random crop (padding 4) and
    horizontal flip to the training images.

    Args:
        data_dir, download, batch_size, num_workers, val_fraction, seed: as in
            :class:`TorchvisionDataModule`.
        augment: crop-and-flip augmentation of the training images.

    Attributes:
        num_classes: 10.
        class_names: from the dataset's ``batches.meta`` (``"airplane"``, ...).
        image_shape: ``(3, 32, 32)``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as empty:
        ...     dm = CIFAR10DataModule(data_dir=empty, augment=False)
        ...     print(dm.num_classes, dm.image_shape)
        ...     try:
        ...         dm.setup()
        ...     except FileNotFoundError as error:
        ...         print("cifar-10-batches-py" in str(error))
        10 (3, 32, 32)
        True
    """

    dataset_cls = datasets.CIFAR10
    num_classes = 10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)


class CIFAR100DataModule(_CIFARDataModule):
    """CIFAR-100: 32x32 colour images, 100 fine classes (50 000 train, 10 000 test).

    Expects torchvision's layout ``<data_dir>/cifar-100-python/{train, test, meta}``
    (the python pickles); labels are the fine labels. Images are normalised per channel
    with the CIFAR-100 training statistics; ``augment=True`` adds random crop (padding 4)
    and horizontal flip to the training images.

    Args:
        data_dir, download, batch_size, num_workers, val_fraction, seed: as in
            :class:`TorchvisionDataModule`.
        augment: crop-and-flip augmentation of the training images.

    Attributes:
        num_classes: 100.
        class_names: the fine label names from the dataset's ``meta`` (``"apple"``, ...).
        image_shape: ``(3, 32, 32)``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as empty:
        ...     dm = CIFAR100DataModule(data_dir=empty)
        ...     print(dm.num_classes, dm.image_shape, dm.augment)
        ...     try:
        ...         dm.setup()
        ...     except FileNotFoundError as error:
        ...         print("cifar-100-python" in str(error))
        100 (3, 32, 32) True
        True
    """

    dataset_cls = datasets.CIFAR100
    num_classes = 100
    mean = (0.5071, 0.4867, 0.4408)
    std = (0.2675, 0.2565, 0.2761)
