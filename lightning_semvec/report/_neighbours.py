"""Who a neuron is and who its neighbours are: the names the report gives neurons, and each
neuron's nearest neurons by semantic (cosine) similarity, dead neurons left out.

A layer's neurons *are* the classes when the layer has one neuron per class: the logits (neuron
``i`` is class ``i``). A hidden layer as wide as the number of classes would be read the same
way; the report's cards show each neuron's preferred class, which tells the two apart. Such a
layer's neurons are named by class (``O``); any other neuron by its index and preferred class
(``neuron 12 (prefers e)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_semvec.functional.similarity import normalize_vectors

__all__ = ["class_aligned", "class_names_of", "nearest_neighbours", "neuron_names"]


def nearest_neighbours(
    vectors: Tensor,
    k: int = 3,
    chunk: int = 1024,
    rows: int | None = None,
    *,
    alive: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Each neuron's ``k`` most similar other neurons by semantic (cosine) similarity.

    Computed in row chunks, so memory stays ``O(chunk * N)`` even for wide layers.

    Args:
        vectors: ``(N, d)`` semantic vectors.
        k: neighbours per neuron (at most ``N - 1``).
        chunk: rows of the similarity matrix built at once.
        rows: only the first ``rows`` neurons' neighbours (among all ``N``); default all.
        alive: optional ``(N,)`` bool: a dead neuron (``False``) has no neighbours and is
            nobody's neighbour (its vector says nothing). Places without a neighbour hold
            index ``-1`` and similarity NaN.

    Returns:
        ``(indices, similarities)``: ``(R, k)`` int64 and ``(R, k)`` float32, most similar
        first, ``R = rows or N``.

    Example:
        >>> idx, sim = nearest_neighbours(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), k=1)
        >>> idx.squeeze(1).tolist()
        [1, 0, 1]
        >>> nearest_neighbours(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), k=1,
        ...                    alive=torch.tensor([True, False, True]))[0].squeeze(1).tolist()
        [2, -1, 0]
    """
    n = vectors.shape[0]
    k = max(0, min(k, n - 1))
    e = normalize_vectors(vectors)
    dead = None if alive is None else ~alive.to(torch.bool)
    indices, values = [], []
    for start in range(0, n if rows is None else min(rows, n), chunk):
        stop = start + chunk if rows is None else min(start + chunk, rows)
        block = e[start:stop] @ e.T
        local = torch.arange(block.shape[0])
        block[local, local + start] = float("-inf")  # a neuron is not its own neighbour
        if dead is not None:
            block[:, dead] = float("-inf")
        top = block.topk(k, dim=1)
        index, value = top.indices, top.values
        missing = value == float("-inf")
        if dead is not None:
            missing |= dead[start:stop].unsqueeze(1)
        indices.append(index.masked_fill(missing, -1))
        values.append(value.masked_fill(missing, float("nan")))
    if not indices:
        return torch.zeros(0, k, dtype=torch.long), torch.zeros(0, k)
    return torch.cat(indices), torch.cat(values)


def class_names_of(class_names: Sequence[str] | None, num_classes: int | None) -> list[str]:
    """The names of the classes: the file's, or ``"0"``, ``"1"``, ... for its ``num_classes``.

    Example:
        >>> class_names_of(None, 3), class_names_of(["cat", "dog"], 2)
        (['0', '1', '2'], ['cat', 'dog'])
    """
    if class_names:
        return list(class_names)
    return [str(c) for c in range(num_classes or 0)]


def class_aligned(num_neurons: int, names: Sequence[str]) -> bool:
    """Whether neuron ``i`` of the layer is class ``i`` (the logits): as many neurons as
    classes.

    Example:
        >>> class_aligned(3, ["a", "b", "c"]), class_aligned(4, ["a", "b", "c"])
        (True, False)
    """
    return num_neurons > 0 and num_neurons == len(names)


def neuron_names(
    num_neurons: int, stats: dict[str, Tensor], names: Sequence[str], aligned: bool
) -> tuple[list[str], list[str]]:
    """``(long, short)`` names of a layer's neurons, for sentences and for map labels.

    A class-aligned layer's neuron is its class (``"O"``, both). Any other neuron is
    ``"neuron 12 (prefers e)"`` and ``"12:e"`` when the file knows its preferred class (a dead
    one has none), else ``"neuron 12"`` and ``"12"``.

    Example:
        >>> neuron_names(2, {"preferred_class": torch.tensor([1, 0])}, ["a", "b"], False)
        (['neuron 0 (prefers b)', 'neuron 1 (prefers a)'], ['0:b', '1:a'])
    """
    if aligned:
        return list(names), list(names)
    preferred = stats.get("preferred_class")
    dead = stats["dead"].tolist() if "dead" in stats else [False] * num_neurons
    long, short = [], []
    for i in range(num_neurons):
        c = int(preferred[i]) if preferred is not None and not dead[i] else -1
        if 0 <= c < len(names):
            long.append(f"neuron {i} (prefers {names[c]})")
            short.append(f"{i}:{names[c]}")
        else:
            long.append(f"neuron {i}")
            short.append(str(i))
    return long, short
