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
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lightning_semvec.errors import SemvecFileExistsError, SemvecTypeError, SemvecValueError

__all__ = ["check_output_folder", "remove_stale_temporaries", "replace_folder", "staged_folder",
           "temporary_sibling"]


def temporary_sibling(path: Path) -> Path:
    """A fresh temporary path beside ``path`` (not created), after clearing the temporaries of
    ``path`` that killed writes left."""
    remove_stale_temporaries(path.parent, path.name)
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def remove_stale_temporaries(folder: Path, name: str) -> None:
    """Delete the temporaries of ``name`` in ``folder`` whose writing process (the pid in their
    name) no longer runs on this machine; files or folders."""
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


def check_output_folder(folder: str | os.PathLike[str], overwrite: bool) -> Path:
    """``folder`` as a :class:`~pathlib.Path` if an output folder may be written there: absent,
    empty, or holding files with ``overwrite`` true.

    Raises:
        SemvecValueError: ``folder`` is a file.
        SemvecFileExistsError: it holds files and ``overwrite`` is false.
    """
    if not isinstance(overwrite, bool):
        raise SemvecTypeError(f"overwrite must be True or False, got {overwrite!r}.")
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise SemvecValueError(f"{path} is a file, not a folder: give a folder to write.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise SemvecFileExistsError(
            f"{path} holds files (another run's output?): pass overwrite=True (on the command "
            "line --overwrite) to replace it, or choose another folder.")
    return path


def replace_folder(new: Path, target: Path) -> None:
    """Put the folder ``new`` at ``target``, replacing what is there as a whole (moved aside,
    then deleted once ``new`` is in place)."""
    old = temporary_sibling(target) if target.exists() else None
    if old is not None:
        os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)  # put the previous folder back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """A hidden folder beside ``target`` to write into; when the block ends without an error
    it replaces ``target`` as a whole (:func:`replace_folder`), and it never outlives the block."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_sibling(target)
    staging.mkdir()
    try:
        yield staging
        replace_folder(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
