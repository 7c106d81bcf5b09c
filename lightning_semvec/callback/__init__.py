"""The Lightning ``Callback`` that learns semantic vectors while any ``LightningModule`` trains.

The modules: ``semantic_vector_callback`` (:class:`SemanticVectorCallback`, the hooks' lifetime
and the Lightning hooks), ``_capture`` (``LayerCapture``: what the hooks keep during one step
or one validation batch), ``_gather`` (the step's activations from every process under DDP,
so every process takes the same step), ``_update`` (one update at the end of a training step:
gather, step, log), ``_state`` (the checkpoint state read back, and the knowledge it holds)
and ``checkpoint`` (knowledge files from a Lightning ``.ckpt`` with no model:
``knowledge_from_checkpoint``, ``load_checkpoint``).

Example:
    >>> from lightning_semvec.callback import SemanticVectorCallback
    >>> callback = SemanticVectorCallback(layers=["net.0"], dim=4)
    >>> callback.dim
    4
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["SemanticVectorCallback"]

if TYPE_CHECKING:
    from lightning_semvec.callback.semantic_vector_callback import SemanticVectorCallback


def __getattr__(name: str) -> Any:
    # Imported on first use: ``semvec export`` reads checkpoints through ``checkpoint`` here
    # without importing Lightning (seconds of start-up).
    if name != "SemanticVectorCallback":
        raise AttributeError(f"module 'lightning_semvec.callback' has no attribute {name!r}")
    value = importlib.import_module("lightning_semvec.callback.semantic_vector_callback").SemanticVectorCallback
    globals()[name] = value
    return value
