"""A projector bookmark that colours the points by a metadata column, in 2-D: one click away.

TensorBoard's projector opens a tensor uncoloured ("Color by: No color map") in a 3-D PCA
where every thumbnail is drawn 30 units wide divided by its distance to the camera (about 16
pixels). An entry's ``bookmarks_path`` (a field of ``ProjectorConfig``'s ``EmbeddingInfo``)
names a JSON list of saved views, which the projector (2.21) lists in its "Bookmarks" panel
(bottom right, opened by itself when an entry has bookmarks); clicking one loads it. The view
:func:`color_bookmark` writes:

* colours the points by a metadata column (``preferred_class``), one colour per value, as the
  "Color by" menu would (the thumbnails are tinted: white strokes take the class colour);
* shows the first two principal components in 2-D, where the projector draws each thumbnail
  at its size in the sprite (32 pixels by default) instead of about 16;
* keeps the projector's own PCA of the points and its default camera (no coordinates are
  stored, so the bookmark stays small and right however the projector normalises).

The JSON is what the projector's own "Download" of bookmarks writes (its ``State`` objects),
with the fields it reads when a bookmark is loaded. It is read only by the frontend: a
field it does not know is ignored, a missing one it needs would break the click, so every
field ``loadState`` reads is given (``tests/projector/test_projector_menu.py`` reads the list
of fields out of the installed projector's frontend; a click in TensorBoard 2.21 in Chromium
colours the points by ``preferred_class`` and turns the view to 2-D).

Example:
    >>> state = color_bookmark("preferred_class", (10, 8))
    >>> state["selectedColorOptionName"], state["pcaComponentDimensions"]
    ('preferred_class', [0, 1])
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lightning_semvec.errors import SemvecValueError

__all__ = [
    "MAX_CATEGORIES",
    "bookmarks_json",
    "categorical_column",
    "color_bookmark",
]

#: The projector colours a column one colour per value when it holds at most this many
#: distinct values (``Tct = 50`` in its frontend); beyond, a numeric column gets a gradient
#: and a text column is not offered at all.
MAX_CATEGORIES = 50


def categorical_column(
    metadata: Mapping[str, Sequence[Any] | np.ndarray], names: Sequence[str]
) -> tuple[str, bool] | None:
    """The first of ``names`` the projector can colour by, and whether it must be told to
    colour it one colour per value (``forceCategoricalColoring``); ``None`` if none can.

    A column is used when it has a value other than ``""``: as it is when it holds at most
    :data:`MAX_CATEGORIES` distinct values, else only if every value is a number (then forced
    categorical, as the projector would draw a gradient).

    Example:
        >>> many = {"preferred_class": [f"c{i}" for i in range(62)],
        ...         "preferred_class_id": list(range(62))}
        >>> categorical_column(many, ["preferred_class", "preferred_class_id"])
        ('preferred_class_id', True)
        >>> categorical_column({"preferred_class": ["cat", "dog"]}, ["preferred_class"])
        ('preferred_class', False)
        >>> categorical_column({"preferred_class": ["", ""]}, ["preferred_class"]) is None
        True
    """
    for name in names:
        if name not in metadata:
            continue
        values = [str(v) for v in np.asarray(metadata[name]).tolist()]
        if not any(values):
            continue
        distinct = set(values)
        if len(distinct) <= MAX_CATEGORIES:
            return name, False
        if all(_is_number(v) for v in distinct):
            return name, True
    return None


def color_bookmark(
    column: str,
    shape: tuple[int, int],
    *,
    force_categorical: bool = False,
    label: str | None = None,
    label_column: str = "label",
) -> dict[str, Any]:
    """One saved view of the projector: 2-D PCA, points coloured by ``column``.

    Args:
        column: the metadata column to colour by (its name in the ``metadata.tsv`` header).
        shape: ``(N, d)`` of the entry's tensor (recorded as the projector records it).
        force_categorical: colour one colour per value even when the column holds more than
            :data:`MAX_CATEGORIES` numbers (see :func:`categorical_column`).
        label: the bookmark's name in the panel (default: says what it shows).
        label_column: the column the points' labels show.

    Returns:
        The view, a JSON-ready dict; :func:`bookmarks_json` writes a list of them.
    """
    if not isinstance(column, str) or not column:
        raise SemvecValueError(f"column must be a metadata column name, got {column!r}.")
    return {
        "label": label or f"2-D PCA, coloured by {column}",
        "isSelected": False,
        "selectedProjection": "pca",
        "pcaComponentDimensions": [0, 1],
        "dataSetDimensions": [int(shape[0]), int(shape[1])],
        # No coordinates: the points keep the PCA the projector computed when it opened.
        "projections": [],
        "selectedPoints": [],
        "selectedColorOptionName": column,
        "forceCategoricalColoring": bool(force_categorical),
        "selectedLabelOption": label_column,
        # What loadState hands to the projections panel, at the projector's own defaults.
        "tSNEIteration": 0,
        "tSNEPerplexity": 18,
        "tSNELearningRate": 10,
        "tSNEis3d": True,
        "umapIs3d": True,
        "umapNeighbors": 15,
        "umapMinDist": 0.1,
        "customSelectedSearchByMetadataOption": label_column,
        "customXLeftText": "",
        "customXLeftRegex": False,
        "customXRightText": "",
        "customXRightRegex": False,
        "customYUpText": "",
        "customYUpRegex": False,
        "customYDownText": "",
        "customYDownRegex": False,
    }


def bookmarks_json(states: Sequence[Mapping[str, Any]]) -> bytes:
    """The content of a ``bookmarks.txt``: the list of views, as JSON (UTF-8).

    Example:
        >>> bookmarks_json([color_bookmark("dead", (3, 2))])[:12]
        b'[{"label": "'
    """
    try:
        return json.dumps([dict(s) for s in states], ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise SemvecValueError(f"A bookmark must hold JSON values only ({err}).") from err


def _is_number(text: str) -> bool:
    """Whether the projector reads ``text`` as a number (JavaScript's ``!isNaN(text)``)."""
    try:
        return not math.isnan(float(text)) if text.strip() else True  # "" reads as 0
    except ValueError:
        return False
