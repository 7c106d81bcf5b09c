"""The classifier LightningModule: a network trained on its task, the base of every student."""

from __future__ import annotations

from typing import Any, ClassVar

import lightning.pytorch as pl
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from lightning_semvec._utils.checks import check_int, is_int
from lightning_semvec._utils.logging_steps import logs_this_step
from lightning_semvec.errors import SemvecValueError
from lightning_semvec.models.optimizers import (
    DEFAULT_OPTIMIZER,
    optimizer_and_schedule,
    resolve_optimizer,
)
from lightning_semvec.models.registry import available_models, build_model

__all__ = ["ImageClassifier"]


class ImageClassifier(pl.LightningModule):
    """Cross-entropy training of a classifier, with accuracy metrics.

    The network is stored as ``self.net``, so its layers are named ``net.<name>`` in the
    LightningModule (e.g. ``"net.features.0"`` and ``"net.classifier.3"`` for
    :class:`~lightning_semvec.models.SmallCNN`, ``"net.layer3"`` and ``"net.fc"`` for the
    ResNets). :class:`~lightning_semvec.distillation.StudentModule` is this module with
    distillation terms added to the objective.

    Logged (``batch_size`` given explicitly; validation and test values synchronised across
    processes): ``train/loss_step`` (on the steps the loggers write, ``log_every_n_steps``),
    ``train/loss_epoch`` (the mean over every step of the epoch, also ``train/loss`` for
    callbacks that monitor it), ``train/acc`` (per epoch), ``val/loss``,
    ``val/acc``, ``test/loss``, ``test/acc`` (per epoch). Each stage has its own top-1
    accuracy (torchmetrics ``MulticlassAccuracy`` with ``average="micro"``): ``train_acc``,
    ``val_acc``, ``test_acc``. :meth:`task_loss` and ``configure_optimizers`` are the usual
    places to override.

    Args:
        model: a name from :func:`~lightning_semvec.models.available_models`, built with
            ``num_classes`` and ``in_channels``, or a ready ``nn.Module`` returning
            ``(B, num_classes)`` logits (then left out of the saved hyperparameters).
        num_classes: number of classes (at least 2).
        in_channels: channels of the input images (1 for digits / MNIST, 3 for CIFAR); used
            only to build a named model.
        optimizer: called with the trainable parameters; default ``torch.optim.Adam``
            (``lr=1e-3``, no weight decay). E.g. ``functools.partial(torch.optim.SGD, lr=0.05,
            momentum=0.9, weight_decay=5e-4)``; on the command line ``--model.optimizer SGD
            --model.optimizer.lr 0.05``.
        lr_scheduler: ``None`` (a constant learning rate) or called with the optimizer,
            stepped once per epoch; e.g. ``functools.partial(CosineAnnealingLR, T_max=epochs)``
            (``--model.lr_scheduler CosineAnnealingLR --model.lr_scheduler.T_max 30``).
        **deprecated: ``lr``, ``weight_decay`` and ``max_epochs`` of the former API, and
            ``optimizer="adam"`` / ``"sgd"``: still accepted, with a ``FutureWarning``.

    Shapes:
        ``forward``: inputs ``(B, ...)`` (images ``(B, in_channels, H, W)``) to logits
        ``(B, num_classes)``; batches are ``(inputs, targets)`` with ``targets (B,)`` int64.

    Example:
        >>> import torch
        >>> module = ImageClassifier("small_cnn", num_classes=10, in_channels=1)
        >>> tuple(module(torch.zeros(2, 1, 8, 8)).shape)
        (2, 10)
        >>> "net.classifier.3" in dict(module.named_modules())
        True
        >>> type(module.configure_optimizers()).__name__
        'Adam'
    """

    #: The attribute holding the network, which prefixes its layer names.
    network_attribute: ClassVar[str] = "net"
    #: Whether ``__init__`` saves its arguments as hyperparameters (so that
    #: ``load_from_checkpoint(path)`` rebuilds a named model).
    saves_init_arguments: ClassVar[bool] = True

    def __init__(
        self,
        model: str | nn.Module = "small_cnn",
        num_classes: int = 10,
        in_channels: int = 1,
        optimizer: OptimizerCallable = DEFAULT_OPTIMIZER,
        lr_scheduler: LRSchedulerCallable | None = None,
        **deprecated: Any,
    ) -> None:
        super().__init__()
        check_int("num_classes", num_classes, 2)
        self.optimizer, self.lr_scheduler = resolve_optimizer(
            type(self).__name__, optimizer, lr_scheduler, deprecated
        )
        if isinstance(model, str):
            network = build_model(model, num_classes=num_classes, in_channels=in_channels)
        elif isinstance(model, nn.Module):
            network = model
        else:
            raise SemvecValueError(
                f"model must be a model name ({', '.join(available_models())}) or an nn.Module; "
                f"got {type(model).__name__}."
            )
        if self.saves_init_arguments:
            self.save_hyperparameters(ignore=[] if isinstance(model, str) else ["model"])
        setattr(self, self.network_attribute, network)
        self.num_classes = num_classes
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self._train_loss_sum: Tensor | None = None  # this epoch's sum of batch loss x batch size
        self._train_samples = 0

    @property
    def network(self) -> nn.Module:
        """The network being trained (``self.net`` here, ``self.student`` in students)."""
        return getattr(self, self.network_attribute)

    @override
    def forward(self, inputs: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` of inputs ``(B, ...)``."""
        return self.network(inputs)

    def task_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The task loss; cross-entropy by default. Override to change it.

        Args:
            logits: ``(B, num_classes)`` logits.
            targets: ``(B,)`` int64 class indices.
        """
        return F.cross_entropy(logits, targets)

    # ------------------------------------------------------------------ Lightning hooks
    @override
    def setup(self, stage: str) -> None:
        """Refuse, before any step, a data module that says it has another number of classes."""
        data = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        classes = getattr(data, "num_classes", None)
        if is_int(classes) and classes != self.num_classes:
            raise SemvecValueError(
                f"The data ({type(data).__name__}) has {classes} classes but {type(self).__name__} has "
                f"num_classes={self.num_classes}: pass num_classes={classes} (semvec fit: --model.num_classes "
                f"{classes}).")

    @override
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    @override
    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "test")

    @override
    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Class probabilities ``(B, num_classes)`` of a batch (``inputs`` or ``(inputs, ...)``)."""
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(inputs).softmax(dim=-1)

    @override
    def configure_optimizers(self) -> Any:
        # Frozen parameters (a distillation teacher's) stay out of the optimizer.
        params = [p for p in self.parameters() if p.requires_grad]
        return optimizer_and_schedule(params, self.optimizer, self.lr_scheduler)

    # ------------------------------------------------------------------ one step
    def objective(self, inputs: Tensor, targets: Tensor, stage: str) -> tuple[Tensor, Tensor]:
        """The logits ``(B, num_classes)`` and the loss to minimise for one batch of ``stage``
        (``"train"``, ``"val"`` or ``"test"``); here the task loss. Students add their terms."""
        logits = self(inputs)
        self._check_logits(logits, targets)
        return logits, self.task_loss(logits, targets)

    def _step(self, batch: Any, stage: str) -> Tensor:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise SemvecValueError(
                f"{type(self).__name__} expects batches (inputs, targets); got "
                f"{type(batch).__name__}."
            )
        inputs, targets = batch[0], batch[1]
        logits, loss = self.objective(inputs, targets, stage)
        metric: MulticlassAccuracy = getattr(self, f"{stage}_acc")
        metric.update(logits.detach(), targets)
        batch = int(targets.shape[0])
        if stage != "train":
            self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=True, batch_size=batch,
                     sync_dist=True)
            return loss
        # Each self.log costs about 1.7 ms (Lightning 2.6's _ResultMetric.to walks the result
        # object on every call): the step value goes to Lightning only on the steps its loggers
        # write, and the epoch mean is summed here. A demo student's 300 steps took 0.76x and
        # 0.85x the time (two A/B runs in one process, medians of 5 and 4; same values); a
        # torchmetrics MeanMetric instead gave 0.98x (its update costs as much as the log).
        weighted = loss.detach() * batch
        self._train_loss_sum = weighted if self._train_loss_sum is None else self._train_loss_sum + weighted
        self._train_samples += batch
        if self._trainer is None or logs_this_step(self.trainer, after_optimizer_step=False):
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True,
                     batch_size=batch)
        return loss

    # The accuracy is logged once an epoch, from the metric's own compute (which syncs it across
    # processes): handing Lightning the Metric object at every step (its _ResultMetric.to walks
    # the Metric on each call, Lightning 2.6) cost 1.8 ms a step, 11 % of a demo student's time
    # (4.97 s against 4.43 s for 300 steps, medians of 4 alternated in one process, same metrics).
    @override
    def on_train_epoch_end(self) -> None:
        self._log_accuracy("train")
        if self._train_loss_sum is not None:
            mean = self._train_loss_sum / self._train_samples
            self.log("train/loss_epoch", mean, prog_bar=True)
            self.log("train/loss", mean, logger=False)  # what ModelCheckpoint(monitor=...) reads
        self._train_loss_sum, self._train_samples = None, 0

    @override
    def on_validation_epoch_end(self) -> None:
        self._log_accuracy("val")

    @override
    def on_test_epoch_end(self) -> None:
        self._log_accuracy("test")

    def _log_accuracy(self, stage: str) -> None:
        """Log ``<stage>/acc`` of the epoch's batches (every process's) and reset the metric."""
        metric: MulticlassAccuracy = getattr(self, f"{stage}_acc")
        if metric.update_called:
            self.log(f"{stage}/acc", metric.compute(), prog_bar=stage != "train")
        metric.reset()

    def _check_logits(self, logits: Any, targets: Any) -> None:
        if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[1] != self.num_classes:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise SemvecValueError(
                f"The network returned {shape}; expected logits of shape (batch, "
                f"num_classes={self.num_classes}). Check num_classes against the data."
            )
        if not isinstance(targets, Tensor) or targets.shape != logits.shape[:1]:
            shape = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
            raise SemvecValueError(
                f"Targets must be (batch,) class indices matching the logits "
                f"{tuple(logits.shape)}; got {shape}."
            )
