"""Reading a validation batch: its labels, its images, the number of classes, and whether the
epoch is analysed at all. Plain functions of the batch and the options, no state.

Example:
    >>> import torch
    >>> from lightning_semvec._utils.warning_cache import WarningCache
    >>> batch = (torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 1]))
    >>> labels_of_batch(batch, label_fn=None, num_classes=3, messages=WarningCache("demo")).tolist()
    [0, 1, 2, 1]
    >>> images_of_batch(batch, messages=WarningCache("demo")).shape
    torch.Size([4, 3, 8, 8])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

from lightning_semvec._utils.checks import is_int_at_least
from lightning_semvec._utils.warning_cache import WarningCache
from lightning_semvec.analysis.options import LabelFn
from lightning_semvec.errors import SemvecTypeError, SemvecValueError

if TYPE_CHECKING:
    import lightning.pytorch as pl


def is_label_tensor(value: Any) -> bool:
    """Whether ``value`` looks like a batch's labels: a ``(B,)`` integer (not bool) tensor."""
    return (
        isinstance(value, Tensor)
        and value.ndim == 1
        and not value.is_floating_point()
        and not value.is_complex()
        and value.dtype != torch.bool
    )


def analysis_due(trainer: pl.Trainer, log_every_n_epochs: int) -> bool:
    """Whether this validation epoch is analysed: every ``log_every_n_epochs`` epochs of
    ``fit``, never during the sanity check."""
    return (
        not trainer.sanity_checking
        and trainer.state.fn == TrainerFn.FITTING
        and (trainer.current_epoch + 1) % log_every_n_epochs == 0
    )


def find_num_classes(
    trainer: pl.Trainer,
    pl_module: pl.LightningModule,
    num_classes: int | None,
    class_names: Sequence[str] | None,
) -> int | None:
    """The number of classes: ``num_classes`` if given, else the first integer >= 2 among
    ``len(class_names)``, ``trainer.datamodule.num_classes``, ``pl_module.num_classes`` and
    ``pl_module.hparams["num_classes"]``; ``None`` when none is known."""
    if num_classes is not None:
        return num_classes
    hparams = getattr(pl_module, "hparams", None) or {}
    for candidate in (
        len(class_names) if class_names else None,
        getattr(trainer.datamodule, "num_classes", None),  # type: ignore[attr-defined]  # set by Lightning's data connector
        getattr(pl_module, "num_classes", None),
        hparams.get("num_classes") if isinstance(hparams, Mapping) else None,
    ):
        if is_int_at_least(candidate, 2):
            return int(candidate)
    return None


def labels_of_batch(
    batch: Any, label_fn: LabelFn | None, num_classes: int | None,
    messages: WarningCache,
) -> Tensor | None:
    """A validation batch's ``(B,)`` integer labels, or ``None``.

    Taken from ``label_fn(batch)`` when given, else ``batch[1]`` of a ``(x, y, ...)`` tuple or
    list with integer ``y``. ``messages`` gets a one-time note when there are no labels or the
    number of classes is unknown.

    Raises:
        TypeError: ``label_fn`` returned something other than a ``(B,)`` integer tensor or
            ``None``.
        ValueError: the labels lie outside ``[0, num_classes)``.
    """
    if label_fn is not None:
        labels = label_fn(batch)
        if labels is not None and not is_label_tensor(labels):
            got = (
                f"shape {tuple(labels.shape)} of dtype {labels.dtype}"
                if isinstance(labels, Tensor)
                else type(labels).__name__
            )
            raise SemvecTypeError(
                "label_fn must return the batch's labels as a (B,) integer tensor, or None; "
                f"got {got}."
            )
    elif isinstance(batch, (tuple, list)) and len(batch) >= 2 and is_label_tensor(batch[1]):
        labels = batch[1]
    else:
        labels = None
    if labels is None:
        messages.note(
            "no-labels",
            f"{messages.owner}: a validation batch carries no integer labels (none at "
            "batch[1], or label_fn returned None), so the projector shows no preferred class "
            "or selectivity; pass a label_fn that picks them out of the batch.",
        )
    elif num_classes is None:
        messages.note(
            "no-num-classes",
            f"{messages.owner}: the number of classes is unknown, so the projector "
            "shows no preferred class or selectivity; pass num_classes or class_names.",
        )
    elif labels.numel():
        low, high = torch.stack([labels.min(), labels.max()]).tolist()  # one host sync
        if low < 0 or high >= num_classes:
            raise SemvecValueError(
                f"{messages.owner}: validation labels lie in [{low}, {high}], outside "
                f"[0, {num_classes}) for num_classes={num_classes}. Pass num_classes (or "
                "class_names) matching the labels, or a label_fn that returns class indices."
            )
    return labels


def images_of_batch(batch: Any, messages: WarningCache) -> Tensor | None:
    """A validation batch's images: ``batch[0]`` (or the batch itself) when it is a
    ``(B, C, H, W)`` float or uint8 tensor with ``C`` in ``{1, 3}``; else ``None`` (and a
    one-time note through ``messages``)."""
    x = batch[0] if isinstance(batch, (tuple, list)) and len(batch) > 0 else batch
    if (
        isinstance(x, Tensor)
        and x.ndim == 4
        and x.shape[1] in (1, 3)
        and (x.is_floating_point() or x.dtype == torch.uint8)
    ):
        return x
    messages.note(
        "no-images",
        f"{messages.owner}: projector_images needs image inputs (batch[0] of shape "
        "(B, C, H, W) with 1 or 3 channels); these validation inputs are not, so the "
        "projector gets no neuron images.",
    )
    return None


