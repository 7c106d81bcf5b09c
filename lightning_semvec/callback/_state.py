"""The checkpoint state of :class:`~lightning_semvec.SemanticVectorCallback`, read back.

The state holds the knowledge document (:meth:`~lightning_semvec.StaticKnowledge.to_document`:
vectors, metadata, statistics) under ``"knowledge"``, the rest of the
:class:`~lightning_semvec.SemanticVectors` state (counters, optimizer) under
``"semantic_vectors"``, and ``"last_seen_step"``. A state is recognised by the document's
``"format"`` marker, never by the callback's class name, so subclasses and renamed callbacks
export too. States written by lightning_semvec 0.1 (vectors and metadata side by side) are
read as well.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_semvec._utils.warning_cache import WarningCache
from lightning_semvec.capture.knowledge import knowledge_of_readouts
from lightning_semvec.capture.readout import NeuronReadout
from lightning_semvec.knowledge import (
    KNOWLEDGE_MARKER,
    KnowledgeFileError,
    StaticKnowledge,
)
from lightning_semvec.knowledge.document_checks import class_counts_of
from lightning_semvec.vectors.semantic_vectors import state_key

__all__ = [
    "CHECKPOINT_STATE_VERSION",
    "is_callback_state",
    "knowledge_of_parts",
    "knowledge_of_state",
    "matching_state",
    "vector_state_of",
]

#: 2: the knowledge document inside; 1 (lightning_semvec 0.1): vectors and metadata apart.
CHECKPOINT_STATE_VERSION = 2


def knowledge_of_parts(
    vectors: Mapping[str, Tensor],
    readouts: Mapping[str, NeuronReadout],
    statistics: Mapping[str, Mapping[str, Tensor]],
    class_names: Sequence[str] | None,
    *,
    similarity: str,
    training_steps: int,
    source_model: str | None,
    messages: WarningCache,
    unlearned: Collection[str] = (),
) -> StaticKnowledge:
    """The callback's knowledge from its parts: ``(N, d)`` vectors, readouts and statistics per
    layer, the ``unlearned`` layers marked. Class names that do not match the statistics'
    classes are dropped, with a warning."""
    counts = class_counts_of(statistics)
    if class_names is not None and counts and counts != {len(class_names)}:
        messages.warn("class-names", f"{messages.owner}: {len(class_names)} class names but "
                      f"{sorted(counts)} classes: the knowledge has no names.")
        class_names = None
    return knowledge_of_readouts(
        vectors, readouts, similarity=similarity, source_model=source_model,
        statistics=statistics, training_steps=training_steps, class_names=class_names,
        unlearned=unlearned,
    )


def _is_legacy(state: Mapping[str, Any]) -> bool:
    return isinstance(state.get("vectors"), Mapping) and bool(state["vectors"])


def is_callback_state(state: object) -> bool:
    """Whether a checkpoint's callback state holds semantic vectors (by the marker)."""
    if not isinstance(state, Mapping):
        return False
    document = state.get("knowledge")
    if isinstance(document, Mapping) and document.get("format") == KNOWLEDGE_MARKER:
        return True
    return _is_legacy(state)


#: What every layer entry of the document must hold (``statistics`` is optional).
_LAYER_ENTRIES = ("name", "vectors", "similarity", "reduction", "neuron_dim")
#: What to do about a state that is not what the callback wrote (edited by hand or by a tool).
_EDITED_HINT = (
    "The callback state was changed after the Trainer saved it: export the checkpoint the "
    "Trainer wrote, or build the knowledge with StaticKnowledge.from_vectors(...)."
)


def knowledge_of_state(state: Mapping[str, Any], source: str = "the checkpoint") -> StaticKnowledge:
    """The knowledge a callback state holds (``source`` names it in errors).

    Raises:
        KnowledgeFileError: no semantic vectors in ``state``, or a state whose structure is
            not what the callback writes (the message names the entry).
    """
    if not is_callback_state(state):
        raise KnowledgeFileError(f"{source} holds no semantic vectors.")
    if not _is_legacy(state):
        document = _checked_document(state["knowledge"], source)
        return StaticKnowledge.from_document(document, source=source)
    meta = _mapping(state.get("knowledge"), "'knowledge'", source)
    readouts = _mapping(meta.get("readouts"), "'knowledge' 'readouts'", source)
    vectors: dict[str, Tensor] = state["vectors"]
    readout = {n: _mapping(readouts.get(n), f"the readout of {n!r}", source) for n in vectors}
    try:
        return StaticKnowledge.from_vectors(
            vectors,
            similarity=meta.get("similarity", "pearson"),
            reduction={n: readout[n].get("reduction", "mean") for n in vectors},
            neuron_dim={n: readout[n].get("neuron_dim", 1) for n in vectors},
            source_model=meta.get("source_model"),
            training_steps=int(state.get("training_steps", 0)),
            class_names=meta.get("class_names"),
        )
    except (TypeError, ValueError) as err:  # from_vectors' checks, or int() of the steps
        raise KnowledgeFileError(
            f"{source} has invalid semantic vectors: {err} {_EDITED_HINT}"
        ) from err


def _mapping(value: object, what: str, source: str) -> Mapping[str, Any]:
    """``value`` if it is a mapping, ``{}`` if it is ``None``; else a clear error."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise KnowledgeFileError(
            f"{source}: {what} must be a mapping, got {type(value).__name__}. {_EDITED_HINT}"
        )
    return value


def _checked_document(document: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    """``document`` if its containers have the shape :meth:`StaticKnowledge.from_document`
    reads; else an error naming the entry (from_document would report a bare ``'vectors'``
    KeyError, or fail on a tensor where a mapping belongs)."""
    layers = document.get("layers")
    if not isinstance(layers, (list, tuple)):
        raise KnowledgeFileError(
            f"{source}: the knowledge's 'layers' must be a list of layer entries, got "
            f"{type(layers).__name__}. {_EDITED_HINT}"
        )
    for index, entry in enumerate(layers):
        what = f"layer entry {index}"
        if not isinstance(entry, Mapping):
            raise KnowledgeFileError(
                f"{source}: {what} must be a mapping, got {type(entry).__name__}. {_EDITED_HINT}"
            )
        if isinstance(entry.get("name"), str):
            what = f"{what} ({entry['name']!r})"
        missing = [name for name in _LAYER_ENTRIES if name not in entry]
        if missing:
            names = ", ".join(repr(name) for name in missing)
            raise KnowledgeFileError(f"{source}: {what} has no {names}. {_EDITED_HINT}")
        _mapping(entry.get("statistics"), f"the 'statistics' of {what}", source)
    _mapping(document.get("extra"), "the knowledge's 'extra'", source)
    class_names = document.get("class_names")
    if class_names is not None and not isinstance(class_names, (list, tuple)):
        raise KnowledgeFileError(
            f"{source}: the knowledge's 'class_names' must be a list of strings or None, got "
            f"{type(class_names).__name__}. {_EDITED_HINT}"
        )
    return document


def vector_state_of(
    state: Mapping[str, Any], source: str = "the checkpoint"
) -> tuple[StaticKnowledge, dict[str, Any], int | None]:
    """``(knowledge, SemanticVectors state_dict, last seen step)`` of a callback state."""
    knowledge = knowledge_of_state(state, source)
    names = knowledge.layer_names
    if _is_legacy(state):
        rest: dict[str, Any] = {"_extra_state": {"layers": names, "optimizer": None}}
        if state.get("optimizer") is not None:
            rest["_extra_state"]["optimizer"] = {"class": None, "state": state["optimizer"]}
        for name in names:
            for entry, saved, dtype in (
                ("skipped_steps", "skipped", torch.int64), ("last_loss", "last_loss", torch.float32)
            ):
                value = (state.get(saved) or {}).get(name)
                rest[state_key(name, entry)] = value if value is not None else torch.zeros((), dtype=dtype)
    else:
        rest = dict(state.get("semantic_vectors") or {})
        rest.setdefault("_extra_state", {"layers": names, "optimizer": None})
    for name in names:
        rest[state_key(name)] = knowledge.vectors(name)
    return knowledge, rest, state.get("last_seen_step")


def matching_state(
    states: Mapping[str, Any], own_key: str, claimed: set[str], layers: list[str], dim: int
) -> tuple[dict[str, Any] | None, str | None]:
    """What to resume when a checkpoint holds no state under this callback's ``own_key``.

    Looks at the semantic-vector states no callback of this run claims (a state written with
    other ``layers`` or another ``dim``), picks the one that shares the most of ``layers`` at
    this ``dim``, and returns ``(SemanticVectors state of the shared layers, message)``. The
    shared layers' vectors resume (their optimizer state starts fresh: the optimizer spanned
    other layers); every other layer starts fresh. The message names the checkpoint's settings
    and this callback's, what resumed and what did not. ``(None, None)`` when the checkpoint
    holds no such state; ``(None, message)`` when none of its layers can resume.
    """
    if own_key in states:
        return None, None
    found = []
    for key, candidate in states.items():
        if key in claimed or not is_callback_state(candidate):
            continue
        try:
            knowledge = knowledge_of_state(candidate, source=f"the checkpoint's state {key!r}")
        except KnowledgeFileError:
            continue
        shared = [n for n in layers if n in knowledge and knowledge[n].dim == dim]
        found.append((len(shared), key, knowledge, shared))
    if not found:
        return None, None
    _, key, knowledge, shared = max(found, key=lambda item: item[0])
    dims = sorted({layer.dim for layer in knowledge.layers.values()})
    settings = (f"the checkpoint's state {key} has layers {knowledge.layer_names} with "
                f"dim={dims[0] if len(dims) == 1 else dims}; this callback has layers {layers} "
                f"with dim={dim}")
    fresh = [n for n in layers if n not in shared]
    if not shared:
        return None, (f"SemanticVectorCallback: {settings}. No vectors were resumed: all start "
                      "fresh. Resume with the checkpoint's layers and dim to keep them.")
    state: dict[str, Any] = {"_extra_state": {"layers": shared, "optimizer": None}}
    for name in shared:
        state[state_key(name)] = knowledge.vectors(name)
        state[state_key(name, "skipped_steps")] = torch.zeros((), dtype=torch.int64)
        state[state_key(name, "last_loss")] = torch.zeros(())
    started = f"; start fresh: {fresh}" if fresh else ""
    return state, (f"SemanticVectorCallback: {settings}. Resumed the vectors of {shared} (their "
                   f"optimizer state starts fresh){started}.")
