"""Checks of a knowledge document's structure and of the fields that span layers.

A document comes from a file's header or from a checkpoint, both possibly written by someone
else, so its shape is checked before any value is used: the layer entries, and the class names
against the class statistics they name. The messages say what is wrong;
:meth:`~lightning_semvec.StaticKnowledge.from_document` adds which file or checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning_semvec.errors import SemvecTypeError, SemvecValueError
from lightning_semvec.knowledge.header_checks import short
from lightning_semvec.knowledge.layer_knowledge import LayerKnowledge

__all__ = ["checked_class_names", "class_counts_of", "layer_entries"]

# What every layer entry of a document holds ("statistics" is optional: version 1 had none).
_ENTRY_KEYS = ("name", "vectors", "similarity", "reduction", "neuron_dim")


def layer_entries(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The document's layer entries, each checked to be a mapping with every required key.

    Raises:
        SemvecValueError: ``"layers"`` is missing, empty or not a list, or an entry misses a key.
        SemvecTypeError: an entry is not a mapping.
    """
    entries = document.get("layers")
    if not isinstance(entries, (list, tuple)) or not entries:
        raise SemvecValueError(f"'layers' must be a non-empty list, got {short(entries)}.")
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise SemvecTypeError(f"a layer entry must be a mapping, got {type(entry).__name__}.")
        missing = [key for key in _ENTRY_KEYS if key not in entry]
        if missing:
            # The name only: the entry holds tensors, whose repr spans lines.
            raise SemvecValueError(
                f"the layer entry of {short(entry.get('name'))} misses {missing}."
            )
    return list(entries)


def checked_class_names(
    class_names: object, layers: Mapping[str, LayerKnowledge]
) -> list[str] | None:
    """``class_names`` as a new list, if it is a list or tuple of strings that agrees with
    every layer's class statistics (``class_counts`` / ``class_means``: ``C`` classes).

    The names name the classes those statistics count, so a different number means one of
    them describes other data. An empty list names no classes, as everywhere else in the
    package, and is not compared.

    Raises:
        SemvecTypeError: not ``None`` nor a list or tuple of strings (a JSON object would
            otherwise pass as its keys).
        SemvecValueError: a layer's statistics have another number of classes.
    """
    if class_names is None:
        return None
    # A list or tuple only: a mapping or a set would pass as its keys, in some order.
    if not isinstance(class_names, (list, tuple)) or not all(
        isinstance(c, str) for c in class_names
    ):
        raise SemvecTypeError(
            "class_names must be a list of strings or None, got "
            f"{type(class_names).__name__} {short(class_names)}."
        )
    for layer in layers.values() if class_names else ():
        num_classes = layer.num_classes
        if num_classes is not None and num_classes != len(class_names):
            raise SemvecValueError(
                f"class_names has {len(class_names)} names but the class statistics of layer "
                f"{short(layer.name)} have C={num_classes} classes; they must describe the same "
                "classes. Give one name per class of the statistics (or class_names=None)."
            )
    return list(class_names)


def class_counts_of(statistics: Mapping[str, Mapping[str, Any]]) -> set[int]:
    """The numbers of classes ``C`` of the layers' class statistics (``{layer: statistics}``)."""
    return {len(stats["class_counts"]) for stats in statistics.values() if "class_counts" in stats}
