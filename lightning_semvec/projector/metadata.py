"""The projector's per-neuron metadata columns: what the "Label by" and "Color by" menus show.

:func:`neuron_metadata` turns one layer's neuron statistics
(:class:`~lightning_semvec.metrics.NeuronActivationStatistics`) into the columns of
:data:`METADATA_COLUMNS`, ready for :func:`~lightning_semvec.projector.write_embedding`.

What TensorBoard's projector (2.21) does with them, read from its frontend code
(``tensorboard/plugins/projector/tf_projector_plugin/projector_binary.js``):

* "Label by" starts on the first column that is not numeric, so ``label`` comes first and
  reads ``net.fc #7: "cat", selectivity 0.81``.
* "Color by" starts on "No color map". It offers a column when it is numeric (a gradient
  when it holds more than 50 distinct values, else one colour per value) or when it holds at
  most 50 distinct values; a text column of more class names than that is left out. Hence
  ``preferred_class_id``, the class index as a number, colours any number of classes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_semvec._utils.checks import check_int
from lightning_semvec.errors import SemvecValueError

__all__ = ["METADATA_COLUMNS", "neuron_label", "neuron_metadata"]

#: The per-neuron metadata columns written by the callback, in order.
METADATA_COLUMNS: tuple[str, ...] = (
    "label",
    "layer",
    "neuron",
    "preferred_class",
    "preferred_class_id",
    "selectivity",
    "mean_activation",
    "dead",
)


def neuron_label(
    layer: str,
    neuron: int,
    preferred_class: str = "",
    selectivity: float | None = None,
    dead: bool = False,
) -> str:
    """One neuron's readable label: layer, index, preferred class and selectivity.

    ``preferred_class`` is shown quoted (a class name, or the index as text); a dead neuron
    is marked ``dead`` instead, since its class statistics mean nothing. The selectivity is
    shown only within ``[0, 1]``, where it reads as documented (0: every class alike, 1: one
    class only); outside, the neuron's class means are negative (a layer before its ReLU)
    and the index says little, so it is left to the ``selectivity`` column.

    Example:
        >>> neuron_label("net.classifier.3", 7, "7", 0.8123)
        'net.classifier.3 #7: "7", selectivity 0.81'
        >>> neuron_label("net.fc", 2), neuron_label("net.fc", 3, "cat", 0.5, dead=True)
        ('net.fc #2', 'net.fc #3: dead')
        >>> neuron_label("net.conv", 4, "cat", -5.3)
        'net.conv #4: "cat"'
    """
    head = f"{layer} #{neuron}"
    if dead:
        return f"{head}: dead"
    parts = [f'"{preferred_class}"'] if preferred_class else []
    if selectivity is not None and math.isfinite(selectivity) and 0.0 <= selectivity <= 1.0:
        parts.append(f"selectivity {selectivity:.2f}")
    return f"{head}: {', '.join(parts)}" if parts else head


def neuron_metadata(
    layer: str,
    num_neurons: int,
    statistics: Mapping[str, Tensor] | None = None,
    class_names: Sequence[str] | None = None,
    neuron_ids: Tensor | Sequence[int] | None = None,
) -> dict[str, Any]:
    """The projector's metadata columns (:data:`METADATA_COLUMNS`) for one layer's neurons.

    Args:
        layer: the layer name (the ``"layer"`` column, and the start of each label).
        num_neurons: ``N``, the layer's width.
        statistics: optional output of
            :class:`~lightning_semvec.metrics.NeuronActivationStatistics` (``(N,)`` tensors
            ``"preferred_class"``, ``"selectivity"``, ``"mean_activation"``, ``"dead"``);
            missing entries give empty fields.
        class_names: names of the classes, shown instead of the preferred class index in
            ``preferred_class`` and the label (``preferred_class_id`` keeps the index).
        neuron_ids: optional ``(n,)`` indices in ``range(N)``: the rows to write, for a layer
            written in part (its ``neuron`` column keeps the layer's indices). All by default.

    Returns:
        ``{column: n values}`` in the order of :data:`METADATA_COLUMNS`.

    Raises:
        ValueError: if ``num_neurons`` is not a positive integer, a statistic is not ``(N,)``
            or ``neuron_ids`` is not a 1-D set of indices in ``range(N)``.

    Example:
        >>> import torch
        >>> stats = {"preferred_class": torch.tensor([1, 0]),
        ...          "selectivity": torch.tensor([0.5, 0.25]),
        ...          "mean_activation": torch.tensor([1.0, 2.0]),
        ...          "dead": torch.tensor([False, True])}
        >>> columns = neuron_metadata("fc", 2, stats, class_names=["cat", "dog"])
        >>> columns["label"]
        ['fc #0: "dog", selectivity 0.50', 'fc #1: dead']
        >>> columns["preferred_class"], columns["preferred_class_id"].tolist(), columns["dead"]
        (['dog', ''], [1, -1], ['alive', 'dead'])
        >>> neuron_metadata("fc", 2)["selectivity"]
        ['', '']
        >>> neuron_metadata("fc", 5, neuron_ids=[0, 4])["neuron"].tolist()
        [0, 4]
    """
    check_int("num_neurons", num_neurons, 1)
    ids = _neuron_ids(neuron_ids, num_neurons)
    stats = dict(statistics or {})
    blank = [""] * len(ids)

    def column(key: str) -> Tensor | None:
        value = stats.get(key)
        if value is None:
            return None
        value = value.detach().cpu()
        if value.shape != (num_neurons,):
            raise SemvecValueError(
                f"statistics[{key!r}] must have shape ({num_neurons},), got {tuple(value.shape)}."
            )
        return value[ids]

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
    dead_flags = [False] * len(ids) if dead is None else [bool(d) for d in dead.tolist()]
    selectivity_values = [None] * len(ids) if selectivity is None else selectivity.tolist()
    # A dead neuron has no preferred class (its class means are all zero): empty, and -1 in
    # the numeric column, so colouring by class does not paint the dead as class 0.
    preferred_text = ["" if d else p for p, d in zip(preferred_text, dead_flags)]
    preferred_id = None if preferred is None else preferred.long().masked_fill(
        torch.tensor(dead_flags, dtype=torch.bool), -1)
    return {
        "label": [
            neuron_label(layer, i, p, s, d)
            for i, p, s, d in zip(ids.tolist(), preferred_text, selectivity_values, dead_flags)
        ],
        "layer": [layer] * len(ids),
        "neuron": ids.numpy(),
        "preferred_class": preferred_text,
        "preferred_class_id": blank if preferred_id is None else preferred_id.numpy(),
        "selectivity": blank if selectivity is None else selectivity.double().numpy(),
        "mean_activation": blank if mean is None else mean.double().numpy(),
        "dead": blank if dead is None else ["dead" if d else "alive" for d in dead_flags],
    }


def _neuron_ids(neuron_ids: Tensor | Sequence[int] | None, num_neurons: int) -> Tensor:
    if neuron_ids is None:
        return torch.arange(num_neurons)
    try:
        ids = torch.as_tensor(neuron_ids)
    except (TypeError, ValueError, RuntimeError):
        ids = torch.zeros(0, 0)  # not numbers at all: the message below
    if (
        ids.ndim != 1
        or ids.numel() == 0
        or ids.is_floating_point()
        or ids.dtype == torch.bool
        or int(ids.min()) < 0
        or int(ids.max()) >= num_neurons
        or ids.unique().numel() != ids.numel()
    ):
        raise SemvecValueError(
            f"neuron_ids must be distinct neuron indices in range({num_neurons}) (a 1-D integer "
            f"tensor or list), got {neuron_ids!r:.80}."
        )
    return ids.long().cpu()
