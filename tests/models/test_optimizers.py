"""The optimizer and schedule callables of every training module, the deprecated keywords,
and how LightningCLI exposes them."""

from __future__ import annotations

import copy
import functools
import pickle
import sys

import pytest
import torch
from lightning.pytorch.cli import LightningCLI
from torch import nn

from lightning_semvec import StaticKnowledge
from lightning_semvec.data import DigitsDataModule
from lightning_semvec.distillation import (
    StaticDistillationModule,
    StudentModule,
    TeacherDistillationModule,
)
from lightning_semvec.models import ImageClassifier, SmallCNN

COSINE = torch.optim.lr_scheduler.CosineAnnealingLR


def net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def every_module(**kwargs):
    knowledge = StaticKnowledge.from_vectors({"logits": torch.randn(10, 3)}, class_names=list("abcdefghij"))
    return [
        ImageClassifier(net(), num_classes=10, **kwargs),
        StudentModule(net(), num_classes=10, **kwargs),
        StaticDistillationModule(net(), knowledge, {"1": "logits"}, **kwargs),
        TeacherDistillationModule(net(), net(), num_classes=10, **kwargs),
    ]


def group_settings(optimizer: torch.optim.Optimizer) -> dict:
    group = optimizer.param_groups[0]
    return {key: group[key] for key in ("lr", "weight_decay", "momentum", "betas") if key in group}


def test_default_is_adam_at_1e_3_without_decay_or_schedule_on_every_module():
    for module in every_module():
        optimizer = module.configure_optimizers()
        assert type(optimizer) is torch.optim.Adam, type(module).__name__
        assert group_settings(optimizer) == {"lr": 1e-3, "weight_decay": 0.0, "betas": (0.9, 0.999)}


def test_callables_reach_every_module_and_teacher_stays_out():
    sgd = functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4)
    for module in every_module(optimizer=sgd, lr_scheduler=functools.partial(COSINE, T_max=7)):
        config = module.configure_optimizers()
        assert group_settings(config["optimizer"]) == {"lr": 0.05, "weight_decay": 5e-4, "momentum": 0.9}
        assert config["lr_scheduler"]["scheduler"].T_max == 7
        assert config["lr_scheduler"]["interval"] == "epoch"
        in_optimizer = {id(p) for p in config["optimizer"].param_groups[0]["params"]}
        assert in_optimizer == {id(p) for p in module.parameters() if p.requires_grad}


@pytest.mark.parametrize(
    "old, optimizer_type, settings, t_max",
    [
        ({"lr": 0.01, "weight_decay": 1e-4}, torch.optim.Adam, {"lr": 0.01, "weight_decay": 1e-4}, None),
        ({"optimizer": "sgd", "lr": 0.05, "max_epochs": 3}, torch.optim.SGD,
         {"lr": 0.05, "weight_decay": 0.0, "momentum": 0.9}, 3),
        ({"optimizer": "adam"}, torch.optim.Adam, {"lr": 1e-3, "weight_decay": 0.0}, None),
    ],
)
def test_deprecated_keywords_warn_at_the_caller_and_keep_the_old_training(old, optimizer_type, settings, t_max):
    with pytest.warns(FutureWarning, match="deprecated") as record:
        module = StaticDistillationModule(
            net(), StaticKnowledge.from_vectors({"logits": torch.randn(10, 3)}), {"1": "logits"},
            num_classes=10, **old,
        )
    assert record[0].filename == __file__  # the user's line, through three __init__
    config = module.configure_optimizers()
    optimizer = config["optimizer"] if t_max else config
    assert type(optimizer) is optimizer_type
    assert {k: v for k, v in group_settings(optimizer).items() if k in settings} == settings
    if t_max:
        assert isinstance(config["lr_scheduler"]["scheduler"], COSINE)
        assert config["lr_scheduler"]["scheduler"].T_max == t_max


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"optimizer": "rmsprop"}, ValueError, "Unknown optimizer 'rmsprop'"),
        ({"lr": 0.0}, ValueError, "lr must be a number > 0"),
        ({"weight_decay": -1.0}, ValueError, "weight_decay must be a number >= 0"),
        ({"max_epochs": 0}, ValueError, "max_epochs must be an integer >= 1"),
        ({"lr": 0.1, "optimizer": functools.partial(torch.optim.SGD, lr=0.2)}, ValueError, "inside it"),
        ({"max_epochs": 3, "lr_scheduler": functools.partial(COSINE, T_max=3)}, ValueError, "not both"),
    ],
)
def test_bad_deprecated_keywords(kwargs, error, match):
    with pytest.warns(FutureWarning), pytest.raises(error, match=match):
        ImageClassifier(**kwargs)


def test_modules_with_callables_pickle_copy_and_reload(tmp_path):
    import lightning.pytorch as pl

    module = ImageClassifier("small_cnn", optimizer=functools.partial(torch.optim.SGD, lr=0.1),
                             lr_scheduler=functools.partial(COSINE, T_max=4))
    for clone in (pickle.loads(pickle.dumps(module)), copy.deepcopy(module)):
        assert clone.configure_optimizers()["lr_scheduler"]["scheduler"].T_max == 4
    assert module.hparams["optimizer"].keywords == {"lr": 0.1}
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, max_steps=1, limit_val_batches=0)
    trainer.fit(module, DigitsDataModule(batch_size=8))
    trainer.save_checkpoint(tmp_path / "c.ckpt")
    reloaded = ImageClassifier.load_from_checkpoint(tmp_path / "c.ckpt", weights_only=False)
    config = reloaded.configure_optimizers()
    assert type(config["optimizer"]) is torch.optim.SGD and config["optimizer"].defaults["lr"] == 0.1


def test_lightning_cli_exposes_optimizer_and_schedule(monkeypatch):
    monkeypatch.setattr(sys, "argv", sys.argv[:1])  # LightningCLI warns when both hold arguments
    cli = LightningCLI(
        ImageClassifier, DigitsDataModule, run=False,
        args=["--model.optimizer", "SGD", "--model.optimizer.lr", "0.05",
              "--model.optimizer.momentum", "0.9", "--model.lr_scheduler", "CosineAnnealingLR",
              "--model.lr_scheduler.T_max", "6", "--trainer.logger", "false"],
    )
    config = cli.model.configure_optimizers()
    assert type(config["optimizer"]) is torch.optim.SGD
    assert group_settings(config["optimizer"]) == {"lr": 0.05, "weight_decay": 0.0, "momentum": 0.9}
    assert config["lr_scheduler"]["scheduler"].T_max == 6
    default = LightningCLI(ImageClassifier, DigitsDataModule, run=False, args=["--trainer.logger", "false"])
    assert group_settings(default.model.configure_optimizers())["lr"] == 1e-3


def test_small_cnn_model_keeps_its_name_prefix():
    assert "net.classifier.3" in dict(ImageClassifier(SmallCNN()).named_modules())
    assert "student.1" in dict(StudentModule(net(), num_classes=10).named_modules())
