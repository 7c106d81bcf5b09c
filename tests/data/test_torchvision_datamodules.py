"""MNIST / CIFAR-10 / CIFAR-100 data modules on tiny files written in each dataset's own format.

Nothing is downloaded: each test writes a handful of images in the exact on-disk layout that
torchvision reads (MNIST's raw idx-ubyte files, CIFAR's python pickles) under ``tmp_path``.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets

from lightning_semvec.data import CIFAR10DataModule, CIFAR100DataModule, MNISTDataModule

N_TRAIN, N_TEST = 20, 6


# ------------------------------------------------------------------------ file writers
def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX format: magic 0x0000 0x08 (uint8) <ndim>, then each dimension as a big-endian
    uint32, then the raw bytes."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _mnist_images(n: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    # image i is filled with grey level 10 * (i + offset); its label is (i + offset) % 10
    values = (np.arange(n) + offset) * 10
    images = np.broadcast_to(values[:, None, None], (n, 28, 28)).astype(np.uint8)
    return images, ((np.arange(n) + offset) % 10).astype(np.uint8)


def write_tiny_mnist(root: Path) -> dict[str, np.ndarray]:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    train_x, train_y = _mnist_images(N_TRAIN, 0)
    test_x, test_y = _mnist_images(N_TEST, 3)
    _write_idx(raw / "train-images-idx3-ubyte", train_x)
    _write_idx(raw / "train-labels-idx1-ubyte", train_y)
    _write_idx(raw / "t10k-images-idx3-ubyte", test_x)
    _write_idx(raw / "t10k-labels-idx1-ubyte", test_y)
    return {"train_y": train_y, "test_x": test_x, "test_y": test_y}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _dump(path: Path, obj: object) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle)


def _cifar_data(n: int, seed: int) -> np.ndarray:
    # rows of 3072 bytes: the red, green then blue 32x32 planes, as in the CIFAR pickles
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)


def write_tiny_cifar10(root: Path, monkeypatch: pytest.MonkeyPatch | None) -> dict[str, object]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    per_batch = N_TRAIN // 5
    for k in range(5):
        labels = [(k * per_batch + i) % 10 for i in range(per_batch)]
        _dump(folder / f"data_batch_{k + 1}", {"data": _cifar_data(per_batch, k), "labels": labels})
    test_labels = [9 - i for i in range(N_TEST)]
    _dump(folder / "test_batch", {"data": _cifar_data(N_TEST, 99), "labels": test_labels})
    names = [f"class_{i}" for i in range(10)]
    _dump(folder / "batches.meta", {"label_names": names})
    if monkeypatch is not None:
        # torchvision's CIFAR10._check_integrity / _load_meta compare each file's md5 with the
        # checksums of the real dataset, which tiny files cannot match: the test replaces the
        # class's checksum lists by those of the tiny files (file names unchanged).
        cls = datasets.CIFAR10
        monkeypatch.setattr(cls, "train_list", [[n, _md5(folder / n)] for n, _ in cls.train_list])
        monkeypatch.setattr(cls, "test_list", [[n, _md5(folder / n)] for n, _ in cls.test_list])
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(folder / cls.meta["filename"])})
    return {"names": names, "test_labels": test_labels}


def write_tiny_cifar100(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    train_fine = [(7 * i) % 100 for i in range(N_TRAIN)]
    test_fine = [99 - 5 * i for i in range(N_TEST)]
    _dump(folder / "train", {"data": _cifar_data(N_TRAIN, 1), "fine_labels": train_fine,
                             "coarse_labels": [f // 5 for f in train_fine]})
    _dump(folder / "test", {"data": _cifar_data(N_TEST, 2), "fine_labels": test_fine,
                            "coarse_labels": [f // 5 for f in test_fine]})
    names = [f"fine_{i}" for i in range(100)]
    _dump(folder / "meta", {"fine_label_names": names, "coarse_label_names": [f"c{i}" for i in range(20)]})
    # Same md5 substitution as for CIFAR-10 (CIFAR100 defines its own lists and meta).
    cls = datasets.CIFAR100
    monkeypatch.setattr(cls, "train_list", [[n, _md5(folder / n)] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, _md5(folder / n)] for n, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(folder / cls.meta["filename"])})
    return {"names": names, "train_fine": train_fine, "test_fine": test_fine}


# ------------------------------------------------------------------------ MNIST
def test_mnist_loads_tiny_raw_files(tmp_path):
    written = write_tiny_mnist(tmp_path)
    dm = MNISTDataModule(data_dir=tmp_path, download=False, batch_size=4, val_fraction=0.25, seed=0)
    dm.prepare_data()  # nothing to do: no download asked
    dm.setup()
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (15, 5, N_TEST)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, *dm.image_shape) == (4, 1, 28, 28)
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    assert set(labels.tolist()) <= set(written["train_y"].tolist())

    test_x, test_y = next(iter(dm.test_dataloader()))  # test order is kept
    assert test_y.tolist() == written["test_y"][:4].tolist()
    expected = (torch.from_numpy(written["test_x"][:4].astype(np.float32)) / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(test_x[:, 0], expected)
    assert dm.num_classes == 10 and dm.class_names == [str(i) for i in range(10)]


def test_mnist_split_is_seeded(tmp_path):
    write_tiny_mnist(tmp_path)

    def val_labels(seed: int) -> list[int]:
        dm = MNISTDataModule(data_dir=tmp_path, batch_size=8, val_fraction=0.25, seed=seed)
        return torch.cat([y for _, y in dm.val_dataloader()]).tolist()  # loaders set up on demand

    assert val_labels(0) == val_labels(0)
    assert any(val_labels(0) != val_labels(s) for s in (1, 2, 3))


def test_mnist_missing_files_error(tmp_path):
    dm = MNISTDataModule(data_dir=tmp_path / "nowhere", download=False)
    with pytest.raises(FileNotFoundError) as info:
        dm.setup()
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert "download=True" in message and "--data.download true" in message


def test_mnist_partial_files_name_the_missing_one(tmp_path):
    write_tiny_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="missing: t10k-labels-idx1-ubyte\\."):
        MNISTDataModule(data_dir=tmp_path).setup()


# ------------------------------------------------------------------------ CIFAR-10
def test_cifar10_loads_tiny_pickles(tmp_path, monkeypatch):
    written = write_tiny_cifar10(tmp_path, monkeypatch)
    dm = CIFAR10DataModule(data_dir=str(tmp_path), batch_size=5, val_fraction=0.2, augment=True)
    assert dm.class_names == written["names"]  # read from batches.meta, even before setup
    dm.setup()
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (16, 4, N_TEST)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (5, 3, 32, 32) and dm.image_shape == (3, 32, 32)
    assert labels.dtype == torch.int64 and labels.max() < dm.num_classes == 10
    _, test_labels = next(iter(dm.test_dataloader()))
    assert test_labels.tolist() == written["test_labels"][:5]


def test_cifar10_augment_only_on_train(tmp_path, monkeypatch):
    write_tiny_cifar10(tmp_path, monkeypatch)
    plain = CIFAR10DataModule(data_dir=tmp_path, val_fraction=0.2, augment=False)
    augmented = CIFAR10DataModule(data_dir=tmp_path, val_fraction=0.2, augment=True)
    plain.setup()
    augmented.setup()
    torch.manual_seed(0)
    plain_x = torch.stack([plain.train_dataset[i][0] for i in range(len(plain.train_dataset))])
    aug_x = torch.stack([augmented.train_dataset[i][0] for i in range(len(augmented.train_dataset))])
    assert not torch.equal(plain_x, aug_x)  # crops / flips change random images
    torch.testing.assert_close(plain.val_dataset[0][0], augmented.val_dataset[0][0])
    torch.testing.assert_close(plain.test_dataset[0][0], augmented.test_dataset[0][0])


def test_cifar10_val_fraction_zero_validates_on_test(tmp_path, monkeypatch):
    write_tiny_cifar10(tmp_path, monkeypatch)
    dm = CIFAR10DataModule(data_dir=tmp_path, val_fraction=0.0)
    dm.setup()
    assert len(dm.train_dataset) == N_TRAIN and dm.val_dataset is dm.test_dataset


def test_cifar10_corrupted_files_error(tmp_path):
    write_tiny_cifar10(tmp_path, monkeypatch=None)  # real checksums: the tiny files fail them
    with pytest.raises(RuntimeError, match="corrupted"):
        CIFAR10DataModule(data_dir=tmp_path).setup()


def test_cifar10_missing_files_error(tmp_path):
    dm = CIFAR10DataModule(data_dir=tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        dm.setup()
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "data_batch_1" in message and "test_batch" in message and "batches.meta" in message
    assert "download=True" in message and "--data.download true" in message
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        _ = dm.class_names


# ------------------------------------------------------------------------ CIFAR-100
def test_cifar100_loads_tiny_pickles(tmp_path, monkeypatch):
    written = write_tiny_cifar100(tmp_path, monkeypatch)
    dm = CIFAR100DataModule(data_dir=tmp_path, batch_size=4, val_fraction=0.25, seed=3)
    dm.setup()
    assert dm.num_classes == 100 and dm.class_names == written["names"]
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (15, 5, N_TEST)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and labels.dtype == torch.int64
    assert set(labels.tolist()) <= set(written["train_fine"])
    all_test = torch.cat([y for _, y in dm.test_dataloader()]).tolist()
    assert all_test == written["test_fine"]  # fine labels, in file order


def test_cifar100_missing_files_error(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        CIFAR100DataModule(data_dir=tmp_path / "data").setup()
    message = str(info.value)
    assert str(tmp_path / "data" / "cifar-100-python") in message
    assert "missing: train, test, meta" in message and "--data.download true" in message


# ------------------------------------------------------------------------ arguments
@pytest.mark.parametrize("cls", [MNISTDataModule, CIFAR10DataModule, CIFAR100DataModule])
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"num_workers": -2}, "num_workers"),
    ],
)
def test_bad_args(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_hparams_saved():
    dm = CIFAR100DataModule(data_dir="somewhere", augment=False, batch_size=32)
    assert dm.hparams["augment"] is False and dm.hparams["batch_size"] == 32
    assert MNISTDataModule(seed=4).hparams["seed"] == 4
