"""A plain image classifier LightningModule around any network (by registry name or module)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_semvec.models.optimizers import OptimizerName, adam_or_sgd
from lightning_semvec.models.registry import available_models, build_model


class ImageClassifier(pl.LightningModule):
    """Cross-entropy training of an image classifier, with accuracy metrics.

    The network is stored as ``self.net``, so its layers are named ``net.<name>`` in the
    LightningModule (e.g. ``"net.features.0"`` and ``"net.classifier.3"`` for
    :class:`~lightning_semvec.models.SmallCNN`, ``"net.layer3"`` and ``"net.fc"`` for the
    ResNets).

    Logged: ``train/loss`` (per step and epoch), ``train/acc`` (per epoch), ``val/loss``,
    ``val/acc``, ``test/loss``, ``test/acc`` (per epoch); each stage has its own
    ``MulticlassAccuracy`` (``train_acc``, ``val_acc``, ``test_acc``).

    Args:
        model: a name from :func:`~lightning_semvec.models.available_models`, built with
            ``num_classes`` and ``in_channels``, or a ready ``nn.Module`` returning
            ``(B, num_classes)`` logits (then left out of the saved hyperparameters).
        num_classes: number of classes (at least 2).
        in_channels: channels of the input images (1 for digits / MNIST, 3 for CIFAR).
        lr: learning rate.
        weight_decay: L2 weight decay of the optimizer.
        optimizer: ``"adam"`` (Adam) or ``"sgd"`` (SGD with momentum 0.9).
        max_epochs: if given, the learning rate follows a cosine schedule from ``lr`` to 0
            over this many epochs (stepped once per epoch), whichever the optimizer.

    Shapes:
        ``forward``: images ``(B, in_channels, H, W)`` to logits ``(B, num_classes)``;
        batches are ``(images, labels)`` with ``labels (B,)`` int64.

    Example:
        >>> import torch
        >>> module = ImageClassifier("small_cnn", num_classes=10, in_channels=1)
        >>> tuple(module(torch.zeros(2, 1, 8, 8)).shape)
        (2, 10)
        >>> "net.classifier.3" in dict(module.named_modules())
        True
    """

    def __init__(
        self,
        model: str | nn.Module = "small_cnn",
        num_classes: int = 10,
        in_channels: int = 1,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: OptimizerName = "adam",
        max_epochs: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer of at least 2; got {num_classes!r}.")
        if not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"lr must be a positive number; got {lr!r}.")
        if not isinstance(weight_decay, (int, float)) or not weight_decay >= 0:
            raise ValueError(f"weight_decay must be a non-negative number; got {weight_decay!r}.")
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd'; got {optimizer!r}.")
        if max_epochs is not None and (
            isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1
        ):
            raise ValueError(f"max_epochs must be a positive integer or None; got {max_epochs!r}.")
        if isinstance(model, str):
            self.save_hyperparameters()
            self.net = build_model(model, num_classes=num_classes, in_channels=in_channels)
        elif isinstance(model, nn.Module):
            self.save_hyperparameters(ignore=["model"])
            self.net = model
        else:
            raise ValueError(
                f"model must be a model name ({', '.join(available_models())}) or an nn.Module; "
                f"got {type(model).__name__}."
            )
        self.num_classes = num_classes
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.optimizer_name: OptimizerName = optimizer
        self.max_epochs = max_epochs
        self.train_acc = MulticlassAccuracy(num_classes=num_classes)
        self.val_acc = MulticlassAccuracy(num_classes=num_classes)
        self.test_acc = MulticlassAccuracy(num_classes=num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` of images ``(B, C, H, W)``."""
        return self.net(x)

    def _shared_step(self, batch: Any, stage: str, metric: MulticlassAccuracy) -> Tensor:
        images, labels = batch[0], batch[1]
        logits = self(images)
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"The network returned logits of shape {tuple(logits.shape)}; expected "
                f"(batch, num_classes={self.num_classes}). Check num_classes against the data."
            )
        loss = F.cross_entropy(logits, labels)
        metric(logits.detach(), labels)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/acc", metric, on_step=False, on_epoch=True, prog_bar=stage != "train")
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train", self.train_acc)

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "val", self.val_acc)

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "test", self.test_acc)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Class probabilities ``(B, num_classes)`` of a batch (``images`` or ``(images, ...)``)."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(images).softmax(dim=-1)

    def configure_optimizers(self) -> Any:
        return adam_or_sgd(
            self.parameters(), self.optimizer_name, self.lr, self.weight_decay, self.max_epochs
        )
