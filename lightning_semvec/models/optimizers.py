"""The optimizer and learning-rate schedule of every training module, as Lightning callables.

The classifier and the distillation modules take ``optimizer: OptimizerCallable`` (called with
the trainable parameters) and ``lr_scheduler: LRSchedulerCallable | None`` (called with the
optimizer), the pattern of :mod:`lightning.pytorch.cli`. On the command line LightningCLI
exposes them as ``--model.optimizer SGD --model.optimizer.lr 0.05`` and
``--model.lr_scheduler CosineAnnealingLR --model.lr_scheduler.T_max 30``; in Python they are
a class or a ``functools.partial`` (picklable, so checkpoints, ``ddp_spawn`` and
``save_hyperparameters`` keep working; a lambda is not).

The default is :data:`DEFAULT_OPTIMIZER`, ``torch.optim.Adam`` with its own defaults
(``lr=1e-3``, no weight decay), and no schedule. A schedule is stepped once per epoch.

Example:
    >>> import functools
    >>> from torch import nn
    >>> params = list(nn.Linear(2, 2).parameters())
    >>> sgd = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)
    >>> cosine = functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=10)
    >>> out = optimizer_and_schedule(params, sgd, cosine)
    >>> type(out["optimizer"]).__name__, out["lr_scheduler"]["interval"]
    ('SGD', 'epoch')
    >>> type(optimizer_and_schedule(params, DEFAULT_OPTIMIZER, None)).__name__
    'Adam'
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lightning_semvec._utils.checks import (
    check_callable,
    check_choice,
    check_int,
    check_number,
)
from lightning_semvec.errors import SemvecTypeError, SemvecValueError

__all__ = [
    "DEFAULT_OPTIMIZER",
    "DEPRECATED_OPTIMIZER_ARGUMENTS",
    "cosine_schedule",
    "optimizer_and_schedule",
    "resolve_optimizer",
]

#: The optimizer of every training module unless told otherwise: Adam, lr 1e-3, no decay.
DEFAULT_OPTIMIZER: OptimizerCallable = torch.optim.Adam

#: Keywords of the former string-and-numbers API, still accepted with a ``FutureWarning``.
DEPRECATED_OPTIMIZER_ARGUMENTS = ("lr", "weight_decay", "max_epochs")


def cosine_schedule(epochs: int) -> LRSchedulerCallable:
    """A cosine decay of the learning rate to 0 over ``epochs`` epochs (``CosineAnnealingLR``).

    Example:
        >>> cosine_schedule(30).keywords
        {'T_max': 30}
    """
    check_int("epochs", epochs, 1)
    return functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=epochs)


def optimizer_and_schedule(
    params: Iterable[nn.Parameter],
    optimizer: OptimizerCallable,
    lr_scheduler: LRSchedulerCallable | None,
) -> Any:
    """What ``LightningModule.configure_optimizers`` returns: the optimizer alone, or a dict
    with the optimizer and its ``lr_scheduler`` stepped once per epoch."""
    opt = optimizer(params)
    if lr_scheduler is None:
        return opt
    return {"optimizer": opt, "lr_scheduler": {"scheduler": lr_scheduler(opt), "interval": "epoch"}}


def resolve_optimizer(
    owner: str,
    optimizer: OptimizerCallable | str,
    lr_scheduler: LRSchedulerCallable | None,
    deprecated: Mapping[str, Any],
) -> tuple[OptimizerCallable, LRSchedulerCallable | None]:
    """The ``(optimizer, lr_scheduler)`` callables a module was given, translating the former
    keywords (``lr``, ``weight_decay``, ``max_epochs``, ``optimizer="adam"`` / ``"sgd"``) into
    the same optimizer and schedule as before, with one ``FutureWarning``.

    Args:
        owner: the module's class name, for messages.
        optimizer: an ``OptimizerCallable``, or (deprecated) ``"adam"`` or ``"sgd"`` (SGD with
            momentum 0.9).
        lr_scheduler: an ``LRSchedulerCallable`` or ``None``.
        deprecated: the other keyword arguments the module received; only
            :data:`DEPRECATED_OPTIMIZER_ARGUMENTS` are accepted.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", FutureWarning)
        ...     opt, schedule = resolve_optimizer("Demo", "sgd", None, {"lr": 0.1, "max_epochs": 5})
        >>> opt.func.__name__, opt.keywords["momentum"], schedule.keywords["T_max"]
        ('SGD', 0.9, 5)
    """
    unknown = sorted(set(deprecated) - set(DEPRECATED_OPTIMIZER_ARGUMENTS))
    if unknown:
        raise SemvecTypeError(f"{owner}.__init__() got an unexpected keyword argument {unknown[0]!r}.")
    if not deprecated and not isinstance(optimizer, str):
        check_callable("optimizer", optimizer, "a callable taking the parameters and returning an "
                       "optimizer, such as torch.optim.Adam or functools.partial(torch.optim.SGD, lr=0.1)")
        if lr_scheduler is not None:
            check_callable("lr_scheduler", lr_scheduler, "None or a callable taking the optimizer "
                           "and returning a scheduler")
        return optimizer, lr_scheduler
    warnings.warn(
        f"{owner}: lr=, weight_decay=, max_epochs= and optimizer='adam'/'sgd' are deprecated. Pass "
        "optimizer=functools.partial(torch.optim.Adam, lr=..., weight_decay=...) and "
        "lr_scheduler=lightning_semvec.models.cosine_schedule(epochs) "
        "(on the command line: --model.optimizer Adam --model.optimizer.lr 0.01).",
        FutureWarning,
        stacklevel=_first_caller_outside_package(),
    )
    if isinstance(optimizer, str):
        name = check_choice("optimizer", optimizer, ("adam", "sgd"))
    elif optimizer is DEFAULT_OPTIMIZER:
        name = "adam"
    else:
        raise SemvecValueError(
            f"{owner}: lr= and weight_decay= cannot be combined with a custom optimizer callable; "
            "set them inside it, e.g. functools.partial(torch.optim.SGD, lr=0.1)."
        )
    lr = check_number("lr", deprecated.get("lr", 1e-3), positive=True)
    weight_decay = check_number("weight_decay", deprecated.get("weight_decay", 0.0), minimum=0.0)
    if name == "adam":
        opt: OptimizerCallable = functools.partial(torch.optim.Adam, lr=lr, weight_decay=weight_decay)
    else:
        opt = functools.partial(torch.optim.SGD, lr=lr, momentum=0.9, weight_decay=weight_decay)
    max_epochs = deprecated.get("max_epochs")
    if max_epochs is None:
        return opt, lr_scheduler
    check_int("max_epochs", max_epochs, 1)
    if lr_scheduler is not None:
        raise SemvecValueError(f"{owner}: pass either max_epochs (deprecated) or lr_scheduler, not both.")
    return opt, cosine_schedule(max_epochs)


def _first_caller_outside_package() -> int:
    """The ``stacklevel`` that points a warning raised in this package's caller at the user's
    line, however many ``__init__`` of subclasses lie in between."""
    package = str(Path(__file__).resolve().parents[1])
    frame, level = inspect.currentframe(), 0  # this function's frame; warn's caller is level 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(package):
        frame, level = frame.f_back, level + 1
    return level
