"""The projector's per-neuron metadata columns: what the "Label by" and "Color by" menus show.

:func:`neuron_metadata` turns one layer's neuron statistics
(:class:`~lightning_semvec.metrics.NeuronActivationStatistics`) into the columns of
:data:`METADATA_COLUMNS`, ready for :func:`~lightning_semvec.projector.write_embedding`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from lightning_semvec.checks import check_int
from lightning_semvec.errors import SemvecValueError

__all__ = ["METADATA_COLUMNS", "neuron_metadata"]

#: The per-neuron metadata columns written by the callback, in order.
METADATA_COLUMNS: tuple[str, ...] = (
    "layer",
    "neuron",
    "preferred_class",
    "selectivity",
    "mean_activation",
    "dead",
)


def neuron_metadata(
    layer: str,
    num_neurons: int,
    statistics: Mapping[str, Tensor] | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The projector's metadata columns (:data:`METADATA_COLUMNS`) for one layer's neurons.

    Args:
        layer: the layer name (the ``"layer"`` column).
        num_neurons: ``N``.
        statistics: optional output of
            :class:`~lightning_semvec.metrics.NeuronActivationStatistics` (``(N,)`` tensors
            ``"preferred_class"``, ``"selectivity"``, ``"mean_activation"``, ``"dead"``);
            missing entries give empty fields.
        class_names: names of the classes, shown instead of the preferred class index.

    Returns:
        ``{column: N values}`` in the order of :data:`METADATA_COLUMNS`.

    Raises:
        ValueError: if ``num_neurons`` is not a positive integer or a statistic is not ``(N,)``.

    Example:
        >>> import torch
        >>> stats = {"preferred_class": torch.tensor([1, 0]),
        ...          "selectivity": torch.tensor([0.5, 0.25]),
        ...          "mean_activation": torch.tensor([1.0, 2.0]),
        ...          "dead": torch.tensor([False, True])}
        >>> columns = neuron_metadata("fc", 2, stats, class_names=["cat", "dog"])
        >>> columns["preferred_class"], columns["dead"]
        (['dog', 'cat'], ['alive', 'dead'])
        >>> neuron_metadata("fc", 2)["selectivity"]
        ['', '']
    """
    check_int("num_neurons", num_neurons, 1)
    stats = dict(statistics or {})
    blank = [""] * num_neurons

    def column(key: str) -> Tensor | None:
        value = stats.get(key)
        if value is None:
            return None
        value = value.detach().cpu()
        if value.shape != (num_neurons,):
            raise SemvecValueError(
                f"statistics[{key!r}] must have shape ({num_neurons},), got {tuple(value.shape)}."
            )
        return value

    preferred = column("preferred_class")
    if preferred is None:
        preferred_text = blank
    elif class_names is not None:
        names = list(class_names)
        preferred_text = [names[i] if 0 <= i < len(names) else str(i) for i in preferred.tolist()]
    else:
        preferred_text = [str(i) for i in preferred.tolist()]
    selectivity = column("selectivity")
    mean = column("mean_activation")
    dead = column("dead")
    return {
        "layer": [layer] * num_neurons,
        "neuron": np.arange(num_neurons),
        "preferred_class": preferred_text,
        "selectivity": blank if selectivity is None else selectivity.double().numpy(),
        "mean_activation": blank if mean is None else mean.double().numpy(),
        "dead": blank if dead is None else ["dead" if d else "alive" for d in dead.tolist()],
    }
