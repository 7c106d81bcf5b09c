"""Outputs written whole or not at all: temporary siblings named after their process, and the
clean-up of those that a killed process left.

A temporary is ``.<name>.<pid>.<random>.tmp`` beside its target, so a later write can tell a
killed write's leftover (its process is gone) from a write in progress (it is not).

Example:
    >>> import os, tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / ".k.bin.999999999.ab12.tmp").write_bytes(b"half")
    4
    >>> temporary = temporary_sibling(folder / "k.bin")  # the killed write's file is gone
    >>> list(folder.iterdir()), temporary.name.startswith(f".k.bin.{os.getpid()}.")
    ([], True)
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["remove_stale_temporaries", "temporary_sibling"]


def temporary_sibling(path: Path) -> Path:
    """A fresh temporary path beside ``path`` (not created), after clearing the temporaries of
    ``path`` that killed writes left."""
    remove_stale_temporaries(path.parent, path.name)
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def remove_stale_temporaries(folder: Path, name: str) -> None:
    """Delete the temporaries of ``name`` in ``folder`` whose writing process (the pid in their
    name) no longer runs on this machine; files or folders."""
    import shutil

    for stale in folder.glob(f".{name}.*.tmp"):
        pid = stale.name[len(name) + 2:].split(".", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        except (PermissionError, OverflowError, OSError):
            continue  # another user's live process, or not a pid: leave it
