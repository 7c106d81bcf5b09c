"""The joint space in a knowledge file: which layers belong to which model, and the matching.

A knowledge file of :func:`~lightning_semvec.embed_models` is an ordinary one (any
:class:`~lightning_semvec.StaticKnowledge` loader reads it) whose layer names carry their model:
``"teacher/net.classifier.1"``. Its ``extra`` metadata says which models there are
(:data:`MODELS_KEY`, a JSON list, in the order of the joint space), for the first model and
each other one, the activation correlation of each neuron with its best match
(:func:`matching_key`), which the vectors alone cannot give, and the linear CKA between every
pair of its layers (:data:`CKA_KEY`, read by :func:`stored_cka`).

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
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from lightning_semvec.functional.neuron_matching import NeuronMatching
from lightning_semvec.knowledge import KnowledgeFileError, StaticKnowledge
from lightning_semvec.knowledge.header_checks import short

__all__ = [
    "CKA_FEATURES",
    "CKA_KEY",
    "MODELS_KEY",
    "SEPARATOR",
    "JointCKA",
    "cka_record",
    "joint_layer_name",
    "joint_models",
    "matching_key",
    "matching_record",
    "model_vectors",
    "neuron_names",
    "stored_cka",
    "stored_correlation",
]

#: ``extra`` key of a joint knowledge: the JSON list of its models' names, in order.
MODELS_KEY = "joint/models"
#: Between a model's name and its layer's name in a joint layer name.
SEPARATOR = "/"
#: ``extra`` key of a joint knowledge: the linear CKA between every pair of its layers (JSON,
#: :func:`cka_record`).
CKA_KEY = "joint/cka"
#: What a stored CKA compares: each layer's whole output per input, flattened (as Kornblith
#: et al. and ``torch_cka`` do), or its neurons as read for the joint space (a conv layer's
#: channel means, with the default ``reduction="mean"``).
CKA_FEATURES = ("flattened", "readout")
#: Decimals of the stored CKA values: the minibatch estimate varies far more than this.
CKA_DECIMALS = 6
#: How far apart ``CKA[i, j]`` and ``CKA[j, i]`` may be in a stored matrix (both are rounded).
_SYMMETRY_TOLERANCE = 2 * 10.0**-CKA_DECIMALS


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


class JointCKA(NamedTuple):
    """The linear CKA between the layers of a joint knowledge, as :func:`stored_cka` reads it.

    Attributes:
        layers: the ``L`` joint layer names (``"teacher/net.fc"``), the matrix's order: every
            layer of every model, in the knowledge's order.
        matrix: ``(L, L)`` float64, symmetric with ones on the diagonal: the minibatch CKA of
            each pair of layers (:class:`~lightning_semvec.metrics.LinearCKA`), within one model
            and across models; NaN in the row and column of a layer that was constant.
        minibatches: how many minibatches (of at least 4 inputs) it was averaged over, on all
            processes together.
        features: what it compares, one of :data:`CKA_FEATURES`.
    """

    layers: list[str]
    matrix: Tensor
    minibatches: int
    features: str = "flattened"

    def block(self, rows: Sequence[str], columns: Sequence[str]) -> Tensor:
        """``(len(rows), len(columns))`` float64: the CKA between the layers ``rows`` (of one
        model, say) and ``columns`` (of another, or the same), joint layer names.

        Raises:
            KeyError: a name that is not one of :attr:`layers`.
        """
        index = {name: i for i, name in enumerate(self.layers)}
        missing = [name for name in (*rows, *columns) if name not in index]
        if missing:
            raise KeyError(f"No CKA for layers {missing}; the CKA has layers {self.layers}.")
        picked_rows = torch.tensor([index[name] for name in rows], dtype=torch.long)
        picked_columns = torch.tensor([index[name] for name in columns], dtype=torch.long)
        return self.matrix[picked_rows][:, picked_columns]


def cka_record(
    layers: Sequence[str], matrix: Tensor, minibatches: int, features: str = "flattened"
) -> str:
    """The stored form of the CKA between the joint layers ``layers``: JSON ``{"layers": [...],
    "cka": [[...], ...], "minibatches": n, "features": ...}``, values rounded to 6 decimals,
    ``null`` for NaN.

    Args:
        layers: the ``L`` joint layer names, in the knowledge's order.
        matrix: ``(L, L)`` CKA (:meth:`~lightning_semvec.metrics.LinearCKA.compute` within one
            model, over all the layers side by side).
        minibatches: the minibatches it was averaged over.
        features: what it compares, one of :data:`CKA_FEATURES`.

    Example:
        >>> cka_record(["a/fc", "b/fc"], torch.tensor([[1.0, 0.5], [0.5, 1.0]]), 4)
        '{"layers":["a/fc","b/fc"],"cka":[[1.0,0.5],[0.5,1.0]],"minibatches":4,"features":"flattened"}'
    """
    if tuple(matrix.shape) != (len(layers), len(layers)):
        raise ValueError(f"matrix must be ({len(layers)}, {len(layers)}), got {tuple(matrix.shape)}.")
    if features not in CKA_FEATURES:
        raise ValueError(f"features must be one of {CKA_FEATURES}, got {features!r}.")
    values = [[None if math.isnan(v) else round(v, CKA_DECIMALS) for v in row]
              for row in matrix.double().tolist()]
    return json.dumps({"layers": list(layers), "cka": values, "minibatches": int(minibatches),
                       "features": features}, separators=(",", ":"))


def stored_cka(knowledge: StaticKnowledge) -> JointCKA | None:
    """The CKA between the layers of a joint knowledge; ``None`` when it stores none (a file
    from before the CKA was streamed, or another knowledge).

    The entry is checked in full: it must name the knowledge's layers in order and hold an
    ``L x L`` symmetric matrix of finite numbers (``null`` for a constant layer).

    Raises:
        KnowledgeFileError: an entry that is not that, naming what is wrong.

    Example:
        >>> knowledge = StaticKnowledge.from_vectors(
        ...     {"a/fc": torch.eye(3), "b/fc": torch.eye(3)}, extra={
        ...         MODELS_KEY: '["a", "b"]',
        ...         CKA_KEY: cka_record(["a/fc", "b/fc"], torch.tensor([[1, 0.8], [0.8, 1]]), 2)})
        >>> cka = stored_cka(knowledge)
        >>> cka.block(["a/fc"], ["b/fc"])
        tensor([[0.8000]], dtype=torch.float64)
    """
    text = knowledge.extra.get(CKA_KEY)
    if text is None:
        return None

    def fail(problem: str) -> KnowledgeFileError:
        return KnowledgeFileError(
            f"The knowledge's {CKA_KEY!r} entry {problem}: the file was edited or damaged; embed "
            "the models again (embed_models, or semvec embed --compare).")

    try:
        record: Any = json.loads(text)
    except ValueError:
        raise fail(f"is not JSON ({short(text)})") from None
    if not isinstance(record, dict) or set(record) != {"layers", "cka", "minibatches", "features"}:
        raise fail(f"must be a JSON object of layers, cka, minibatches and features, got "
                   f"{short(record)}")
    layers, values, minibatches = record["layers"], record["cka"], record["minibatches"]
    if record["features"] not in CKA_FEATURES:
        raise fail(f"has features={short(record['features'])}, not one of {list(CKA_FEATURES)}")
    if layers != knowledge.layer_names:
        raise fail(f"names the layers {short(layers)}, but the knowledge has {short(knowledge.layer_names)}")
    size = len(layers)
    if not isinstance(minibatches, int) or isinstance(minibatches, bool) or minibatches < 1:
        raise fail(f"has minibatches={short(minibatches)}, not a positive integer")
    if not isinstance(values, list) or len(values) != size or not all(
            isinstance(row, list) and len(row) == size for row in values):
        shape = (f"{len(values)} rows of {sorted({len(r) if isinstance(r, list) else -1 for r in values})} "
                 "values" if isinstance(values, list) else type(values).__name__)
        raise fail(f"must hold a {size} x {size} matrix (one row and column per layer), got {shape}")
    bad = [v for row in values for v in row if v is not None and (
        not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v))]
    if bad:
        raise fail(f"holds {short(bad[0])} where a CKA value (a finite number, or null) belongs")
    matrix = torch.tensor([[math.nan if v is None else float(v) for v in row] for row in values],
                          dtype=torch.float64).reshape(size, size)
    apart = (matrix - matrix.T).abs()
    if bool((matrix.isnan() != matrix.T.isnan()).any()) or bool(
            (apart[~apart.isnan()] > _SYMMETRY_TOLERANCE).any()):
        raise fail("is not symmetric (CKA[i, j] must equal CKA[j, i])")
    return JointCKA(list(layers), matrix, minibatches, record["features"])
