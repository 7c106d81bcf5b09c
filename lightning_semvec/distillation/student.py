"""The student: a classifier whose objective adds distillation terms, the base of both methods."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, NamedTuple

from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from typing_extensions import override

from lightning_semvec._utils.logging_steps import logs_this_step
from lightning_semvec._utils.warning_cache import WarningCache
from lightning_semvec.distillation.capture import OutputCapture
from lightning_semvec.errors import SemvecTypeError
from lightning_semvec.models.classifier import ImageClassifier
from lightning_semvec.models.optimizers import DEFAULT_OPTIMIZER

__all__ = ["DistillationTerm", "StudentModule"]


class DistillationTerm(NamedTuple):
    """One term of the objective: the unweighted ``loss`` (logged) and its ``weight``."""

    loss: Tensor
    weight: float


class StudentModule(ImageClassifier):
    """Train a student network on a classification task; the base of the distillation modules.

    An :class:`~lightning_semvec.models.ImageClassifier` (same task loss, metrics, steps and
    optimizer) whose network is ``self.student`` and whose objective can hold more terms. On
    its own it trains the student alone (the plain baseline). Subclasses add terms by
    overriding :meth:`distillation_losses`; the objective of a training or validation batch
    is ``task_loss + sum(weight * loss)`` over those terms. Student layers whose outputs a
    subclass needs are hooked with :meth:`capture_layer` (the hooks record only inside this
    module's training and validation steps and keep the graph, so a loss on them trains the
    student).

    Logged, besides :class:`~lightning_semvec.models.ImageClassifier`'s ``<stage>/loss`` (the
    whole objective) and ``<stage>/acc``: ``train/task_loss`` and one ``train/<term>`` per
    distillation term (unweighted diagnostics, handed to Lightning only on the steps its
    loggers write, every ``Trainer(log_every_n_steps)``, so they have no epoch value); the
    same under ``val/`` (per epoch); ``test/task_loss`` (no distillation terms at test time).

    No hyperparameters are saved automatically: a subclass whose ``__init__`` takes no
    arguments reloads with ``Student.load_from_checkpoint(path)``. Call
    ``self.save_hyperparameters(...)`` in your subclass if you want them.

    Args:
        student: the network, mapping inputs ``(B, ...)`` to logits ``(B, num_classes)``.
            Stored as ``self.student``; its layer names are relative to it.
        num_classes: number of classes (at least 2).
        optimizer, lr_scheduler, **deprecated: as in
            :class:`~lightning_semvec.models.ImageClassifier` (default Adam, ``lr=1e-3``, no
            schedule).

    Shapes:
        batches are ``(inputs, targets)`` with ``targets (B,)`` int64 class indices.

    Example:
        >>> import lightning.pytorch as pl
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> data = DataLoader(TensorDataset(torch.randn(32, 6), torch.randint(0, 3, (32,))),
        ...                   batch_size=8)
        >>> module = StudentModule(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)),
        ...                        num_classes=3)
        >>> trainer = pl.Trainer(max_steps=2, log_every_n_steps=1, logger=False,
        ...     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        >>> trainer.fit(module, data)
        >>> sorted(k for k in trainer.callback_metrics if not k.endswith(("_step", "_epoch")))
        ['train/acc', 'train/loss', 'train/task_loss']
    """

    network_attribute = "student"
    saves_init_arguments = False

    def __init__(
        self,
        student: nn.Module,
        num_classes: int,
        optimizer: OptimizerCallable = DEFAULT_OPTIMIZER,
        lr_scheduler: LRSchedulerCallable | None = None,
        **deprecated: Any,
    ) -> None:
        if not isinstance(student, nn.Module):
            raise SemvecTypeError(f"student must be an nn.Module, got {type(student).__name__}.")
        super().__init__(student, num_classes, optimizer=optimizer, lr_scheduler=lr_scheduler,
                         **deprecated)
        self._capture = OutputCapture(type(self).__name__)
        self._messages = WarningCache(type(self).__name__)

    # ------------------------------------------------------------------ overridable API
    def distillation_losses(
        self,
        inputs: Tensor,
        targets: Tensor,
        logits: Tensor,
        captured: Mapping[str, list[Any]],
    ) -> dict[str, DistillationTerm]:
        """The extra terms of the objective for one batch; none in the base class.

        Called inside the training and validation steps, while the hooks registered by
        :meth:`capture_layer` record (so running another network here records its hooked
        layers too). Raise here, never later: an error leaves the model unchanged.

        Args:
            inputs: the batch's inputs.
            targets: ``(B,)`` class indices.
            logits: ``(B, num_classes)`` student logits (with their graph).
            captured: ``{key: [outputs]}`` of the hooked layers, one entry per call of the
                layer during this step.

        Returns:
            ``{name: DistillationTerm(loss, weight)}``; ``name`` is logged as
            ``<stage>/<name>``.
        """
        return {}

    def capturing(self) -> AbstractContextManager[dict[str, list[Any]]]:
        """A context in which the hooked layers record: yields ``{key: [outputs]}``.

        The training and validation steps use it; it is public so that
        :meth:`distillation_losses` can be called by hand (tests, debugging). What was
        recorded is dropped when the block ends.
        """
        return self._capture.recording()

    def capture_layer(
        self, module: nn.Module, key: str, transform: Callable[[Any], Any] | None = None
    ) -> None:
        """Hook ``module`` so that its outputs appear as ``captured[key]`` during steps.

        The outputs keep their graph (not detached) and are taken at hook time: copies of the
        output's tensors, or ``transform(output)`` (which must copy what it keeps), so a later
        in-place op on the output does not change them. Hooks stay for the module's life and
        cost nothing outside this module's steps.
        """
        self._capture.attach(module, key, transform)

    # ------------------------------------------------------------------ the objective
    @override
    def objective(self, inputs: Tensor, targets: Tensor, stage: str) -> tuple[Tensor, Tensor]:
        """The logits and ``task_loss + sum(weight * loss)``; logs the task loss and terms."""
        terms: dict[str, DistillationTerm] = {}
        with self.capturing() as captured:
            logits = self(inputs)
            self._check_logits(logits, targets)
            if stage != "test":
                terms = self.distillation_losses(inputs, targets, logits, captured)
        task = self.task_loss(logits, targets)
        total = task
        for term in terms.values():
            total = total + term.weight * term.loss
        train = stage == "train"
        # In training these are diagnostics, handed to Lightning only on the steps its loggers
        # write (each ``self.log`` costs 0.2 to 0.3 ms) and not epoch-aggregated: an epoch
        # value from a subset of the steps would be wrong.
        if not train or self._trainer is None or logs_this_step(self.trainer, after_optimizer_step=False):
            values = {"task_loss": task, **{name: term.loss for name, term in terms.items()}}
            for name, value in values.items():
                self.log(f"{stage}/{name}", value.detach(), on_step=train, on_epoch=not train,
                         batch_size=int(targets.shape[0]), sync_dist=not train)
        return logits, total

    # ------------------------------------------------------------------ helpers for subclasses
    def _warn_once(self, key: str, message: str) -> None:
        """Warn ``message`` once per ``key`` (rank zero): this module's :class:`WarningCache`."""
        self._messages.warn(key, message)

    @staticmethod
    def _zero_like_graph(x: Tensor) -> Tensor:
        """A zero that keeps ``x`` in the graph, so every parameter still gets a gradient
        (DDP requires it) when a term is skipped."""
        return x.sum() * 0.0

    @staticmethod
    def _single_output(captured: Mapping[str, list[Any]], key: str, what: str) -> Any:
        outputs = captured.get(key, [])
        if len(outputs) != 1:
            raise RuntimeError(
                f"The {what} was called {len(outputs)} times in this step; it must be called "
                "exactly once per forward pass. Check the layer name."
            )
        return outputs[0]
