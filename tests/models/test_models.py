"""Networks, the model registry, ImageClassifier and the digits data module."""

from __future__ import annotations

import functools

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from lightning_semvec.data import DigitsDataModule
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.models import (
    CifarResNet,
    ImageClassifier,
    PooledCNN,
    SmallCNN,
    available_models,
    build_model,
)

EXPECTED_NAMES = {
    "small_cnn",
    "small_cnn_teacher",
    "small_cnn_student",
    "pooled_cnn",
    "pooled_cnn_teacher",
    "pooled_cnn_student",
    "resnet8x4",
    "resnet32x4",
    "resnet20",
    "resnet56",
    "resnet18",
    "resnet50",
}


# ------------------------------------------------------------------------ registry / models
def test_available_models_lists_every_name():
    assert set(available_models()) == EXPECTED_NAMES


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_registry_forward_shapes(name):
    torch.manual_seed(0)
    in_channels = 1 if name.startswith(("small_cnn", "pooled_cnn")) or name in ("resnet20", "resnet18") else 3
    net = build_model(name, num_classes=7, in_channels=in_channels).eval()
    with torch.no_grad():
        out = net(torch.randn(2, in_channels, 8, 8))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_registry_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="resnet8x4") as info:
        build_model("resnet9000", num_classes=10)
    assert "small_cnn" in str(info.value)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_registry_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="num_classes"):
        build_model("small_cnn", num_classes=bad)
    with pytest.raises(ValueError, match="in_channels"):
        build_model("small_cnn", num_classes=10, in_channels=bad)


def test_pooled_cnn_names_sizes_and_bad_input():
    net = PooledCNN(in_channels=1, num_classes=62, width=8)
    names = dict(net.named_modules())
    assert isinstance(names["features.6"], torch.nn.Conv2d) and names["features.6"].out_channels == 32
    assert names["classifier.3"].out_features == 62 and names["classifier.1"].in_features == 32 * 16
    # The pooled stages: 32x32 -> 16x16 -> 8x8 -> 4x4 cells.
    assert net.features[:3](torch.zeros(1, 1, 32, 32)).shape == (1, 8, 16, 16)
    assert net.features(torch.zeros(1, 1, 32, 32)).shape == (1, 32, 4, 4)
    assert sum(p.numel() for p in build_model("pooled_cnn_teacher", 62, 1).parameters()) == 227838
    with pytest.raises(ValueError, match=r"at least 4; got \(2, 1, 3, 3\)"):
        net(torch.zeros(2, 1, 3, 3))
    with pytest.raises(ValueError, match="width"):
        PooledCNN(width=0)


def test_small_cnn_structure_and_names():
    net = SmallCNN(in_channels=1, num_classes=10, width=8, hidden=32)
    names = dict(net.named_modules())
    assert isinstance(names["features.0"], nn.Conv2d) and names["features.0"].out_channels == 8
    assert isinstance(names["features.2"], nn.Conv2d) and names["features.2"].out_channels == 16
    assert isinstance(names["features.4"], nn.AdaptiveAvgPool2d)
    assert isinstance(names["classifier.1"], nn.Linear) and names["classifier.1"].in_features == 64
    assert names["classifier.3"].out_features == 10
    teacher, student = build_model("small_cnn_teacher", 10, 1), build_model("small_cnn_student", 10, 1)
    assert teacher.features[0].out_channels == 32 and teacher.classifier[1].out_features == 128
    assert student.features[0].out_channels == 8 and student.classifier[1].out_features == 32


def test_small_cnn_rejects_wrong_input_and_args():
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        SmallCNN(in_channels=1)(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="width"):
        SmallCNN(width=0)


def test_cifar_resnet_shapes_and_names():
    net = build_model("resnet8x4", num_classes=100)
    assert [n for n, _ in net.named_children()] == [
        "conv1", "bn1", "relu", "layer1", "layer2", "layer3", "avgpool", "fc"
    ]
    assert net.fc.in_features == 256 and net.fc.out_features == 100
    assert build_model("resnet56", num_classes=10).fc.in_features == 64
    # parameter counts of the distillation benchmark's definitions
    assert sum(p.numel() for p in build_model("resnet20", 100).parameters()) == 278_324
    assert sum(p.numel() for p in net.parameters()) == 1_233_540
    feats = {}
    net.layer3.register_forward_hook(lambda m, i, o: feats.setdefault("layer3", o))
    net.eval()(torch.zeros(2, 3, 32, 32))
    assert feats["layer3"].shape == (2, 256, 8, 8)


def test_cifar_resnet_rejects_bad_depth():
    with pytest.raises(ValueError, match="6n \\+ 2"):
        CifarResNet(depth=10)
    with pytest.raises(ValueError, match="four"):
        CifarResNet(depth=8, filters=[16, 32, 64])
    with pytest.raises(SemvecValueError, match="four"):
        CifarResNet(depth=8, filters=[16, 32, True, 64])
    with pytest.raises(SemvecValueError, match="num_classes must be an integer >= 1, got True"):
        CifarResNet(depth=8, num_classes=True)
    with pytest.raises(SemvecValueError, match="hidden must be an integer >= 1, got 2.0"):
        SmallCNN(hidden=2.0)


def test_torchvision_resnet_small_stem():
    net = build_model("resnet18", num_classes=10)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, nn.Identity)
    assert not any(m.inplace for m in net.modules() if isinstance(m, nn.ReLU))


# ------------------------------------------------------------------------ ImageClassifier
def test_classifier_names_and_hparams():
    module = ImageClassifier("small_cnn", num_classes=10, in_channels=1)
    assert "net.features.0" in dict(module.named_modules())
    assert module.hparams["model"] == "small_cnn"
    custom = ImageClassifier(SmallCNN(in_channels=1, num_classes=10), num_classes=10)
    assert "model" not in custom.hparams
    assert custom.val_acc is not custom.test_acc


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"model": "nope"}, ValueError, "Unknown model name"),
        ({"model": 3}, ValueError, "model must be"),
        ({"num_classes": 1}, ValueError, "num_classes must be an integer >= 2"),
        ({"num_classes": True}, ValueError, "num_classes must be an integer >= 2"),
        ({"optimizer": 0.01}, TypeError, "optimizer must be a callable"),
        ({"lr_scheduler": 30}, TypeError, "lr_scheduler must be None or a callable"),
    ],
)
def test_classifier_bad_args(kwargs, error, match):
    with pytest.raises(error, match=match):
        ImageClassifier(**kwargs)


def test_classifier_optimizers():
    sgd = ImageClassifier(
        optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9),
        lr_scheduler=functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=5),
    ).configure_optimizers()
    assert isinstance(sgd["optimizer"], torch.optim.SGD)
    assert sgd["optimizer"].param_groups[0]["momentum"] == 0.9
    assert isinstance(sgd["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.CosineAnnealingLR)
    assert sgd["lr_scheduler"]["interval"] == "epoch"
    assert isinstance(ImageClassifier().configure_optimizers(), torch.optim.Adam)


def test_classifier_fits_one_epoch_on_digits():
    pl.seed_everything(0, verbose=False)
    dm = DigitsDataModule(batch_size=32)
    module = ImageClassifier("small_cnn_student", num_classes=dm.num_classes, in_channels=1,
                             optimizer=functools.partial(torch.optim.Adam, lr=3e-3))
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_train_batches=5,
        limit_val_batches=2,
        limit_test_batches=2,
    )
    trainer.fit(module, datamodule=dm)
    metrics = trainer.callback_metrics
    for key in ("train/loss", "val/loss", "val/acc"):
        assert key in metrics and torch.isfinite(metrics[key])
    assert 0.0 <= float(metrics["val/acc"]) <= 1.0
    (result,) = trainer.test(module, datamodule=dm, verbose=False)
    assert 0.0 <= result["test/acc"] <= 1.0


def test_accuracy_is_each_epochs_own_over_all_its_batches(tmp_path):
    """train/acc and val/acc, logged once an epoch, are the fraction right over that epoch's
    batches alone (the metric is reset between epochs), as recorded from the logits."""
    import csv

    from lightning.pytorch.loggers import CSVLogger

    class Recording(ImageClassifier):
        def objective(self, inputs, targets, stage):
            logits, loss = super().objective(inputs, targets, stage)
            if not self.trainer.sanity_checking:
                key = (stage, self.current_epoch)
                right, total = self.seen.get(key, (0, 0))
                hits = int((logits.argmax(-1) == targets).sum())
                self.seen[key] = (right + hits, total + int(targets.numel()))
            return logits, loss

    pl.seed_everything(0, verbose=False)
    dm = DigitsDataModule(batch_size=32)
    module = Recording("small_cnn_student", num_classes=dm.num_classes, in_channels=1,
                       optimizer=functools.partial(torch.optim.Adam, lr=1e-2))
    module.seen = {}
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=CSVLogger(tmp_path, name="run"),
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_train_batches=7,
                         limit_val_batches=3, num_sanity_val_steps=1)
    trainer.fit(module, datamodule=dm)
    rows = list(csv.DictReader(open(tmp_path / "run" / "version_0" / "metrics.csv")))
    for stage in ("train", "val"):
        logged = [float(r[f"{stage}/acc"]) for r in rows if r.get(f"{stage}/acc")]
        expected = [module.seen[(stage, e)][0] / module.seen[(stage, e)][1] for e in range(3)]
        assert logged == pytest.approx(expected, abs=1e-6), stage
        # The epochs differ, so a missed reset (a running mean over epochs) would show.
        assert len(set(expected)) == 3, (stage, expected)


def test_classifier_rejects_logit_mismatch():
    module = ImageClassifier(SmallCNN(num_classes=5), num_classes=10)
    with pytest.raises(ValueError, match="num_classes=10"):
        module.training_step((torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)), 0)


# ------------------------------------------------------------------------ DigitsDataModule
@pytest.fixture(scope="module")
def digits():
    dm = DigitsDataModule(batch_size=64, seed=0)
    dm.setup()
    return dm


def test_digits_sizes_and_types(digits):
    assert (len(digits.train_dataset), len(digits.val_dataset), len(digits.test_dataset)) == (1257, 270, 270)
    images, labels = next(iter(digits.val_dataloader()))
    assert images.shape == (64, 1, 8, 8) and images.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert digits.num_classes == 10 and digits.class_names == [str(i) for i in range(10)]
    assert digits.image_shape == (1, 8, 8)
    # stratified: every class appears in every split
    for split in (digits.train_dataset, digits.val_dataset, digits.test_dataset):
        assert set(split.tensors[1].tolist()) == set(range(10))


def test_digits_splits_disjoint_and_complete(digits):
    parts = [set(digits.split_indices[k].tolist()) for k in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == 1797
    assert set().union(*parts) == set(range(1797))


def test_digits_deterministic_and_seeded(digits):
    again = DigitsDataModule(batch_size=64, seed=0)
    again.setup()
    again.setup()  # idempotent
    assert torch.equal(again.train_dataset.tensors[0], digits.train_dataset.tensors[0])
    first = next(iter(digits.train_dataloader()))[1]
    assert torch.equal(first, next(iter(again.train_dataloader()))[1])
    assert torch.equal(first, next(iter(digits.train_dataloader()))[1])
    other = DigitsDataModule(seed=1)
    other.setup()
    assert not torch.equal(other.test_dataset.tensors[1], digits.test_dataset.tensors[1])
    val_a = torch.cat([y for _, y in digits.val_dataloader()])
    assert torch.equal(val_a, torch.cat([y for _, y in digits.val_dataloader()]))


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_digits_upscale(mode):
    dm = DigitsDataModule(batch_size=4, upscale=2, upscale_mode=mode)
    assert dm.image_shape == (1, 16, 16)
    images, _ = next(iter(dm.test_dataloader()))  # loaders set up on demand
    assert images.shape == (4, 1, 16, 16)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "below 1"),
        ({"num_workers": -1}, "num_workers"),
        ({"upscale": 0}, "upscale"),
        ({"upscale_mode": "bicubic"}, "upscale_mode"),
    ],
)
def test_digits_bad_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DigitsDataModule(**kwargs)


def test_data_of_another_number_of_classes_is_refused_before_any_step():
    module = ImageClassifier("small_cnn_student", num_classes=3, in_channels=1)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(SemvecValueError, match=r"^The data \(DigitsDataModule\) has 10 classes but ImageClassifier "
                                               r"has num_classes=3: pass num_classes=10 \(semvec fit: --model"):
        trainer.fit(module, datamodule=DigitsDataModule(batch_size=32))
    assert trainer.global_step == 0
    assert all(torch.equal(v, before[k]) for k, v in module.state_dict().items())
