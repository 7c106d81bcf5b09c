"""``WarningCache``: the once-only messages of one owner (the callback, one embedding call, a
distillation module), keyed, written on global rank zero only.

Modelled on Lightning's ``lightning.pytorch.utilities.warnings.WarningCache``: each key is
said once per cache, and the owner's name is part of the cache, so a message is built with
the name of whoever says it (``f"{messages.owner}: ..."``) instead of being rewritten later.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

__all__ = ["WarningCache"]

Level = Literal["info", "warn"]


class WarningCache:
    """Says each keyed message once: :meth:`warn` as a warning, :meth:`info` as a log line,
    :meth:`note` at the owner's level for notes (the analysis helpers' messages, which the
    callback logs and an embedding call warns about).

    Args:
        owner: who speaks, the prefix of every message (``"SemanticVectorCallback"``,
            ``"embed_neurons"``).
        notes: the level of :meth:`note`.
        muted: key prefixes this owner never says (a note that does not apply to it).

    Example:
        >>> messages = WarningCache("embed_neurons", muted=("no-labels",))
        >>> messages.info("start", f"{messages.owner}: starting"), messages.info("start", "again")
        (True, False)
        >>> messages.note("no-labels", "not said"), sorted(messages.said)
        (False, ['start'])
    """

    def __init__(self, owner: str, *, notes: Level = "info", muted: Iterable[str] = ()) -> None:
        self.owner = owner
        self.notes: Level = notes
        self.muted = tuple(muted)
        #: The keys said so far.
        self.said: set[str] = set()

    def warn(self, key: str, message: str) -> bool:
        """Warn ``message`` (rank zero) unless ``key`` was said; whether it was said now."""
        return self._say(key, message, "warn")

    def info(self, key: str, message: str) -> bool:
        """Log ``message`` at info level (rank zero) unless ``key`` was said."""
        return self._say(key, message, "info")

    def note(self, key: str, message: str) -> bool:
        """Say ``message`` at the owner's level for notes unless ``key`` was said."""
        return self._say(key, message, self.notes)

    def clear(self) -> None:
        """Forget what was said (every key may be said again)."""
        self.said.clear()

    def _say(self, key: str, message: str, level: Level) -> bool:
        if key in self.said or key.startswith(self.muted):
            return False
        self.said.add(key)
        # Imported here: Lightning takes seconds to import, and `semvec export` reads a checkpoint
        # (through the callback's state, which holds a cache) without it.
        from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

        (rank_zero_info if level == "info" else rank_zero_warn)(message)
        return True
