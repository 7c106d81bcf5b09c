"""The joint space in a knowledge file: which layers belong to which model, and the matching.

A knowledge file of :func:`~lightning_semvec.embed_models` is an ordinary one (any
:class:`~lightning_semvec.StaticKnowledge` loader reads it) whose layer names carry their model:
``"teacher/net.classifier.1"``. Its ``extra`` metadata says which models there are
(:data:`MODELS_KEY`, a JSON list, in the order of the joint space) and, for the first model and
each other one, the activation correlation of each neuron with its best match
(:func:`matching_key`), which the vectors alone cannot give.

Example:
    >>> import torch
    >>> from lightning_semvec import StaticKnowledge
    >>> knowledge = StaticKnowledge.from_vectors(
    ...     {"a/fc": torch.eye(3), "b/fc": torch.eye(3)}, extra={MODELS_KEY: '["a", "b"]'})
    >>> joint_models(knowledge)
    {'a': ['a/fc'], 'b': ['b/fc']}
"""

from __future__ import annotations

import json
import math

import torch
from torch import Tensor

from lightning_semvec.functional.neuron_matching import NeuronMatching
from lightning_semvec.knowledge import StaticKnowledge

__all__ = [
    "MODELS_KEY",
    "SEPARATOR",
    "joint_layer_name",
    "joint_models",
    "matching_key",
    "matching_record",
    "model_vectors",
    "neuron_names",
    "stored_correlation",
]

#: ``extra`` key of a joint knowledge: the JSON list of its models' names, in order.
MODELS_KEY = "joint/models"
#: Between a model's name and its layer's name in a joint layer name.
SEPARATOR = "/"


def joint_layer_name(model: str, layer: str) -> str:
    """``"teacher/net.fc"``: the name of ``model``'s layer ``layer`` in the joint space."""
    return f"{model}{SEPARATOR}{layer}"


def joint_models(knowledge: StaticKnowledge) -> dict[str, list[str]] | None:
    """``{model: its joint layer names}`` of a joint knowledge, in order; ``None`` for any other
    knowledge (or a joint one whose metadata does not name its layers' models)."""
    try:
        names = json.loads(knowledge.extra.get(MODELS_KEY, "null"))
    except ValueError:
        return None
    if not isinstance(names, list) or len(names) < 2 or not all(
            isinstance(n, str) and n and SEPARATOR not in n for n in names):
        return None
    layers = {name: [layer for layer in knowledge.layer_names
                     if layer.startswith(name + SEPARATOR)] for name in names}
    if not all(layers.values()):
        return None
    return layers


def model_vectors(knowledge: StaticKnowledge, layers: list[str]) -> Tensor:
    """``(N_1 + N_2 + ..., d)``: the vectors of ``layers``, one after the other."""
    return torch.cat([knowledge[layer].vectors for layer in layers])


def neuron_names(layers: list[str], knowledge: StaticKnowledge) -> list[str]:
    """``"net.fc #3"`` for every neuron of ``layers`` (their model's prefix left out), in the
    order of :func:`model_vectors`."""
    return [f"{layer.partition(SEPARATOR)[2]} #{i}"
            for layer in layers for i in range(knowledge[layer].num_neurons)]


def matching_key(model_a: str, model_b: str) -> str:
    """The ``extra`` key of the stored matching of ``model_a``'s neurons in ``model_b``."""
    return f"joint/matching/{model_a}{SEPARATOR}{model_b}"


def matching_record(matching: NeuronMatching) -> str:
    """The stored form of a matching's first column: JSON ``{"neuron": [...],
    "correlation": [...]}``, correlations rounded to 4 decimals (``null``: none)."""
    correlation = ([None] * matching.indices.shape[0] if matching.correlation is None else [
        None if math.isnan(c) else round(c, 4) for c in matching.correlation[:, 0].tolist()])
    return json.dumps({"neuron": matching.indices[:, 0].tolist(), "correlation": correlation},
                      separators=(",", ":"))


def stored_correlation(
    knowledge: StaticKnowledge, model_a: str, model_b: str, indices: Tensor
) -> Tensor | None:
    """``(N_A,)`` float32: the stored correlation of each neuron of ``model_a`` with its match
    ``indices`` (``(N_A,)``, neurons of ``model_b``), NaN where none is stored for that pair;
    ``None`` when the knowledge stores no correlations (a sketched joint space, or a record
    that does not fit)."""
    try:
        record = json.loads(knowledge.extra.get(matching_key(model_a, model_b), "null"))
        neurons, values = record["neuron"], record["correlation"]
    except (ValueError, TypeError, KeyError):
        return None
    n = indices.shape[0]
    if (not isinstance(neurons, list) or not isinstance(values, list) or len(neurons) != n
            or len(values) != n or all(v is None for v in values)):
        return None
    result = torch.full((n,), float("nan"))
    for i, (stored, value, match) in enumerate(zip(neurons, values, indices.tolist())):
        if stored == match and isinstance(value, (int, float)) and not isinstance(value, bool):
            result[i] = float(value)
    return result
