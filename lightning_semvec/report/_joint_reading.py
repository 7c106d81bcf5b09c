"""What the report's Matching section and ``semvec embed --compare``'s summary both say of a
joint knowledge, beyond the matches themselves: each matched neuron's preferred class, the
hubs (one neuron the best match of many), and which layer of one model each layer of the
other is most like by linear CKA.

The hub rule (:func:`matching_hubs`): a neuron of ``B`` is a hub when it is the best match of
more than :data:`HUB_MIN_MATCHES` neurons of ``A`` *and* of more than :data:`HUB_FACTOR` times
the count an even spread would give each alive neuron of ``B`` (the matched neurons of ``A``
over the alive neurons of ``B``). The first part keeps a pair of models of one width (even
share 1) from flagging a neuron matched by 2 or 3; the second keeps a teacher four times as
wide as its student (even share 4) from flagging every student neuron.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from lightning_semvec.knowledge import StaticKnowledge
from lightning_semvec.knowledge.joint_space import SEPARATOR

__all__ = [
    "CKA_FEATURE_WORDS",
    "HUB_FACTOR",
    "HUB_MIN_MATCHES",
    "Hubs",
    "hub_rule",
    "hub_sentence",
    "matching_hubs",
    "most_like",
    "preferred_classes",
    "short_layer",
]

#: What a stored CKA compares, in words (by :attr:`~lightning_semvec.knowledge.joint_space.JointCKA.features`).
CKA_FEATURE_WORDS = {
    "flattened": "each layer's whole output per input, flattened",
    "readout": "the neurons as read for the joint space (a conv layer's channel means)",
}
#: A hub is the best match of more than this many neurons of the other model ...
HUB_MIN_MATCHES = 3
#: ... and of more than this many times its even share of them.
HUB_FACTOR = 3.0


class Hubs(NamedTuple):
    """How the best matches of ``A``'s neurons fall on ``B``'s neurons.

    Attributes:
        counts: ``(N_B,)`` int64: of how many neurons of ``A`` each neuron of ``B`` is the best match.
        even_share: matched neurons of ``A`` per alive neuron of ``B`` (0 when none is alive).
        threshold: a neuron of ``B`` matched by more than this many is a hub.
        hubs: the hubs, neurons of ``B``, most matched first.
    """

    counts: Tensor
    even_share: float
    threshold: float
    hubs: list[int]


def matching_hubs(best: Tensor, alive_b: Tensor) -> Hubs:
    """The hubs of a matching (see the module docstring for the rule).

    Args:
        best: ``(N_A,)`` int64 best match of each neuron of ``A`` (a neuron of ``B``; ``-1``: none).
        alive_b: ``(N_B,)`` bool, the neurons of ``B`` that can be matched (non-zero vectors).

    Example:
        >>> best = torch.tensor([0, 0, 0, 0, 0, 1, 2, -1])
        >>> hubs = matching_hubs(best, torch.ones(8, dtype=torch.bool))
        >>> hubs.hubs, hubs.counts[:3].tolist(), hubs.threshold
        ([0], [5, 1, 1], 3.0)
    """
    matched = best[best >= 0]
    counts = torch.bincount(matched, minlength=alive_b.shape[0])
    alive = int(alive_b.sum())
    even_share = matched.numel() / alive if alive else 0.0
    threshold = max(float(HUB_MIN_MATCHES), HUB_FACTOR * even_share)
    order = sorted((j for j in range(counts.shape[0]) if counts[j] > threshold),
                   key=lambda j: (-int(counts[j]), j))
    return Hubs(counts, even_share, threshold, order)


def hub_rule(a: str, b: str, hubs: Hubs) -> str:
    """One sentence saying what a hub is, with this matching's numbers."""
    return (f"A hub is a neuron of {b} that is the best match of more than {HUB_MIN_MATCHES} "
            f"neurons of {a} and of more than {HUB_FACTOR:g} times the {hubs.even_share:.2g} "
            f"each would get if the matches were spread evenly over {b}'s alive neurons "
            f"(here: more than {hubs.threshold:.3g}).")


def hub_sentence(a: str, b: str, neuron: str, count: int) -> str:
    """``"student neuron fc #12 is the best match of 9 teacher neurons: ..."``."""
    return (f"{b} neuron {neuron} is the best match of {count} {a} neurons: it carries what "
            "they share, so its matches are not one-to-one.")


def preferred_classes(knowledge: StaticKnowledge, layers: Sequence[str]) -> list[str] | None:
    """The preferred class of every neuron of ``layers`` (in the order of
    :func:`~lightning_semvec.knowledge.joint_space.model_vectors`), by name where the
    knowledge has class names; ``""`` for a dead neuron or a layer without the statistic.
    ``None`` when no layer has it.

    Example:
        >>> knowledge = StaticKnowledge.from_vectors(
        ...     {"a/fc": torch.eye(2)}, class_names=["cat", "dog"],
        ...     statistics={"a/fc": {"preferred_class": torch.tensor([1, 0]),
        ...                          "dead": torch.tensor([False, True])}})
        >>> preferred_classes(knowledge, ["a/fc"])
        ['dog', '']
    """
    names = list(knowledge.class_names or [])
    result: list[str] = []
    found = False
    for layer in layers:
        stats = knowledge.statistics(layer)
        n = knowledge[layer].num_neurons
        if "preferred_class" not in stats:
            result += [""] * n
            continue
        found = True
        dead = stats["dead"].tolist() if "dead" in stats else [False] * n
        result += ["" if gone or c < 0 else names[c] if c < len(names) else str(c)
                   for c, gone in zip(stats["preferred_class"].tolist(), dead)]
    return result if found else None


def short_layer(layer: str) -> str:
    """A joint layer's name without its model: ``net.fc`` of ``teacher/net.fc``."""
    return layer.partition(SEPARATOR)[2] or layer


def most_like(block: Tensor, rows: Sequence[str], columns: Sequence[str]) -> list[str]:
    """For each layer of ``rows``, the layer of ``columns`` with the highest CKA in ``block``
    (``(len(rows), len(columns))``): ``"teacher/net.fc is most like student/fc (CKA 0.91)"``.

    Example:
        >>> most_like(torch.tensor([[0.2, 0.9]]), ["t/a"], ["s/x", "s/y"])
        ['t/a is most like s/y (CKA 0.90)']
    """
    lines = []
    for i, row in enumerate(rows):
        known = [(v, j) for j, v in enumerate(block[i].tolist()) if not math.isnan(v)]
        if not known:
            lines.append(f"{row} has no CKA (constant on the data)")
            continue
        value, j = max(known, key=lambda pair: (pair[0], -pair[1]))  # the first of equals
        lines.append(f"{row} is most like {columns[j]} (CKA {value:.2f})")
    return lines
