"""Keyword arguments removed from a public signature, still accepted for one release."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

__all__ = ["DEFER_REMOVED", "accept_removed_keywords"]

#: Why ``SemanticVectorCallback(defer_update=...)`` and ``SemanticVectors.step(defer=...)`` went.
DEFER_REMOVED = "the update on a worker thread measured slower than the synchronous one on every case"


def accept_removed_keywords(given: Mapping[str, Any], caller: str, removed: Mapping[str, str]) -> None:
    """Warn once per call for each removed keyword in ``given``; any other keyword is a ``TypeError``.

    Args:
        given: the ``**kwargs`` the caller collected.
        caller: the callable's name as the user wrote it, for the messages.
        removed: ``{keyword: why it went}``.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     accept_removed_keywords({"defer": True}, "step", {"defer": "it was slower"})
        >>> str(caught[0].message)
        'step(defer=...) was removed in lightning_semvec 0.2 and has no effect (it was slower); drop it.'
        >>> accept_removed_keywords({"speed": 2}, "step", {"defer": "it was slower"})
        Traceback (most recent call last):
        ...
        TypeError: step() got an unexpected keyword argument 'speed'
    """
    for name in given:
        if name not in removed:
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}")
        warnings.warn(
            f"{caller}({name}=...) was removed in lightning_semvec 0.2 and has no effect "
            f"({removed[name]}); drop it.",
            FutureWarning,
            stacklevel=3,
        )
