"""Knowledge files from Lightning checkpoints: the callback's saved state, no model needed."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from lightning_semvec.errors import SemvecFileNotFoundError, SemvecValueError
from lightning_semvec.knowledge import StaticKnowledge

CALLBACK_PREFIX = "SemanticVectorCallback"


def semantic_vector_states(checkpoint: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``SemanticVectorCallback`` states of a loaded checkpoint, by ``state_key``."""
    callbacks = checkpoint.get("callbacks") or {}
    return {
        key: state
        for key, state in callbacks.items()
        if str(key).startswith(CALLBACK_PREFIX) and isinstance(state, dict) and state.get("vectors")
    }


def knowledge_from_checkpoint(
    path: str | Path, key: str | None = None, trust_checkpoint: bool = False
) -> StaticKnowledge:
    """Make a :class:`StaticKnowledge` from the callback state stored in a Lightning checkpoint.

    Args:
        path: a ``.ckpt`` written by a Trainer that ran ``SemanticVectorCallback``.
        key: the callback's ``state_key`` when the checkpoint holds several callbacks.
        trust_checkpoint: checkpoints are pickles; by default only tensors and plain
            containers are loaded (``weights_only=True``). Set this only for checkpoints you
            trust, when they hold other objects (such as custom hyperparameters).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a loadable checkpoint, no callback state in it, or several and no
            ``key`` (the message lists them).
    """
    path = Path(path)
    if not path.is_file():
        raise SemvecFileNotFoundError(f"No checkpoint at {path}.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as err:
        hint = "" if trust_checkpoint else (
            " If it is a checkpoint you trust that holds objects other than tensors, pass "
            "--trust-checkpoint (trust_checkpoint=True)."
        )
        raise SemvecValueError(f"Could not load {path} as a Lightning checkpoint: {err}.{hint}") from err
    if not isinstance(checkpoint, dict):
        raise SemvecValueError(f"{path} is not a Lightning checkpoint (a dict with 'callbacks').")
    states = semantic_vector_states(checkpoint)
    if not states:
        raise SemvecValueError(
            f"{path} holds no SemanticVectorCallback state with vectors: train with the callback "
            "and save a checkpoint after at least one training step."
        )
    if key is None:
        if len(states) > 1:
            raise SemvecValueError(f"{path} holds several callbacks; choose one with key=: {list(states)}.")
        key = next(iter(states))
    if key not in states:
        raise SemvecValueError(f"No callback state {key!r} in {path}; it has {list(states)}.")
    state = states[key]
    meta = state.get("knowledge") or {}
    readouts = meta.get("readouts") or {}
    vectors = state["vectors"]
    return StaticKnowledge.from_vectors(
        vectors,
        similarity=meta.get("similarity", "pearson"),
        reduction={n: readouts.get(n, {}).get("reduction", "mean") for n in vectors},
        neuron_dim={n: readouts.get(n, {}).get("neuron_dim", 1) for n in vectors},
        source_model=meta.get("source_model"),
        training_steps=int(state.get("training_steps", 0)),
        class_names=meta.get("class_names"),
        extra={"exported_from": path.name, "state_key": key},
    )
