"""The optimizer and schedule shared by the plain classifier and the distillation modules."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import nn

OptimizerName = Literal["adam", "sgd"]


def adam_or_sgd(
    params: Iterable[nn.Parameter],
    optimizer: OptimizerName,
    lr: float,
    weight_decay: float,
    max_epochs: int | None,
) -> Any:
    """Adam, or SGD with momentum 0.9, plus a per-epoch cosine schedule when ``max_epochs`` is set.

    Returns what ``LightningModule.configure_optimizers`` returns: the optimizer alone, or a
    dict with the optimizer and its ``lr_scheduler``.

    Example:
        >>> out = adam_or_sgd(nn.Linear(2, 2).parameters(), "sgd", 0.1, 0.0, max_epochs=10)
        >>> type(out["optimizer"]).__name__, out["lr_scheduler"]["interval"]
        ('SGD', 'epoch')
    """
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if max_epochs is None:
        return opt
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_epochs)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}
