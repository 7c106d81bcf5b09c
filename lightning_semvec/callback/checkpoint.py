"""Knowledge files from Lightning checkpoints: the callback's saved state, no model needed.

A checkpoint is a ``torch.save`` file (a ``.ckpt``), or a folder of
``torch.distributed.checkpoint`` shards that ``ModelParallelStrategy`` and ``FSDPStrategy``
write: there, the model's and optimizers' tensors are in the ``.distcp`` shards and everything
else, the callback states included, is a plain ``torch.save`` file ``meta.pt`` that rank 0
writes. Export reads that file, so no consolidation (and no process group) is needed.

Every way the input can be wrong (no such file, a folder, an empty, truncated or foreign file,
a state edited by hand, an output path that is a folder) is a one-line
:class:`~lightning_semvec.errors.SemvecError` that says what is wrong and what to do.
"""

from __future__ import annotations

import itertools
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lightning_semvec.callback._state import is_callback_state, knowledge_of_state
from lightning_semvec.errors import (
    SemvecFileExistsError,
    SemvecFileNotFoundError,
    SemvecTypeError,
    SemvecValueError,
)
from lightning_semvec.knowledge import KNOWLEDGE_SUFFIX, StaticKnowledge

__all__ = ["check_output_path", "knowledge_from_checkpoint", "load_checkpoint", "semantic_vector_states"]

#: The file of a sharded checkpoint folder that holds everything but the sharded tensors
#: (Lightning's ``lightning.fabric.utilities.load._METADATA_FILENAME``).
SHARDED_METADATA = "meta.pt"
#: At most this many checkpoints are named in a message (the newest).
_LISTED = 5
#: ``torch.load`` raises these for a damaged or foreign file (measured on truncated, bit-flipped
#: and text files: zip reader errors are RuntimeError, a cut pickle EOFError/ValueError/OSError,
#: an unknown opcode KeyError/IndexError, a bad string UnicodeDecodeError); with
#: ``weights_only=False`` unpickling may also fail to find or rebuild a class.
_LOAD_ERRORS = (
    pickle.UnpicklingError, RuntimeError, ValueError, OSError, EOFError, KeyError, IndexError,
    AttributeError, ImportError, TypeError,
)
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip archive
_TRUST_HINT = (
    "If it is a checkpoint you trust, pass --trust-checkpoint (trust_checkpoint=True)."
)


def semantic_vector_states(checkpoint: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The callback states of a loaded checkpoint that hold semantic vectors, by ``state_key``.

    A state is recognised by its knowledge document's marker, whatever the callback's class
    (a subclass of ``SemanticVectorCallback`` included).
    """
    callbacks = checkpoint.get("callbacks") or {}
    if not isinstance(callbacks, Mapping):
        return {}
    return {str(key): state for key, state in callbacks.items() if is_callback_state(state)}


def check_output_path(out: str | Path, overwrite: bool = False) -> Path:
    """``out`` as a :class:`~pathlib.Path` if a knowledge file can be written there.

    Checked before a checkpoint is read (or a model trained), so a wrong output path fails at
    once rather than after the work.

    Args:
        out: the knowledge file to write.
        overwrite: whether an existing file at ``out`` may be replaced.

    Raises:
        SemvecValueError: ``out`` is a folder, or its parent is a file.
        SemvecFileNotFoundError: the parent folder does not exist.
        SemvecFileExistsError: ``out`` exists and ``overwrite`` is false.
    """
    out = Path(out)
    if not isinstance(overwrite, bool):
        raise SemvecTypeError(f"overwrite must be True or False, got {overwrite!r}.")
    if out.is_dir():
        raise SemvecValueError(
            f"The output {out} is a folder: give the knowledge file's path, such as "
            f"{out / ('teacher' + KNOWLEDGE_SUFFIX)}."
        )
    folder = out.parent
    if folder.exists() and not folder.is_dir():
        raise SemvecValueError(f"Cannot write {out}: {folder} is a file, not a folder.")
    if not folder.is_dir():
        raise SemvecFileNotFoundError(
            f"Cannot write {out}: the folder {folder} does not exist. Create it first."
        )
    if out.exists() and not overwrite:
        raise SemvecFileExistsError(
            f"{out} exists: pass overwrite=True (on the command line --overwrite) to replace "
            "it, or write to another path."
        )
    return out


def knowledge_from_checkpoint(
    path: str | Path, key: str | None = None, trust_checkpoint: bool = False
) -> StaticKnowledge:
    """Make a :class:`StaticKnowledge` from the callback state stored in a Lightning checkpoint.

    Args:
        path: a ``.ckpt`` written by a Trainer that ran ``SemanticVectorCallback``, or the
            checkpoint folder a sharded strategy (``ModelParallelStrategy``, ``FSDPStrategy``)
            wrote.
        key: the callback's ``state_key`` when the checkpoint holds several callbacks.
        trust_checkpoint: checkpoints are pickles; by default only tensors and plain
            containers are loaded (``weights_only=True``). Set this only for checkpoints you
            trust, when they hold other objects (such as custom hyperparameters).

    Raises:
        FileNotFoundError: nothing at ``path`` (the message lists the checkpoints next to it).
        ValueError: ``path`` is empty, truncated or not a checkpoint, a folder without one, a
            sharded checkpoint without its ``meta.pt``; no callback state in it, or several
            and no ``key`` (the message lists them); a callback state that is not valid
            knowledge (:class:`~lightning_semvec.knowledge.KnowledgeFileError`).
    """
    path = Path(path)
    file = _checkpoint_file(path)
    checkpoint = _load(file, trust_checkpoint)
    if not isinstance(checkpoint, dict) or "callbacks" not in checkpoint:
        if isinstance(checkpoint, dict):
            found = f"its keys are {sorted(map(str, checkpoint))[:10]}"
        else:
            found = f"it holds a {type(checkpoint).__name__}"
        raise SemvecValueError(
            f"{file} is a torch file but not a Lightning checkpoint (a dict with 'callbacks'; "
            f"{found}). Export the .ckpt that ModelCheckpoint or trainer.save_checkpoint wrote."
        )
    states = semantic_vector_states(checkpoint)
    if not states:
        callbacks = checkpoint["callbacks"]
        names = [str(k) for k in callbacks][:10] if isinstance(callbacks, Mapping) else []
        raise SemvecValueError(
            f"{file} holds no semantic vector callback state (its callback states: {names}): "
            "train with SemanticVectorCallback and save a checkpoint after at least one "
            "training step."
        )
    if key is None:
        if len(states) > 1:
            raise SemvecValueError(
                f"{file} holds several callbacks; choose one with key=: {list(states)}."
            )
        key = next(iter(states))
    if key not in states:
        raise SemvecValueError(f"No callback state {key!r} in {file}; it has {list(states)}.")
    knowledge = knowledge_of_state(states[key], source=f"{file} ({key})")
    knowledge.extra.update({"exported_from": path.name, "state_key": key})
    return knowledge


def load_checkpoint(path: str | os.PathLike[str], trust_checkpoint: bool = False) -> Any:
    """The contents of a Lightning checkpoint file or sharded folder, with the same checks and
    one-line errors as :func:`knowledge_from_checkpoint` (used by ``semvec embed`` too)."""
    return _load(_checkpoint_file(Path(path)), trust_checkpoint)


def _checkpoint_file(path: Path) -> Path:
    """The ``torch.save`` file to read for ``path``: itself, or a sharded folder's metadata."""
    if path.is_file():
        return path
    if not path.exists():
        if not path.parent.is_dir():
            raise SemvecFileNotFoundError(
                f"No checkpoint at {path}: the folder {path.parent} does not exist."
            )
        raise SemvecFileNotFoundError(f"No checkpoint at {path}{_listing(path.parent, path)}")
    if not path.is_dir():  # a named pipe or a device: opening it could block forever
        raise SemvecValueError(f"{path} is not a regular file: pass a checkpoint file (.ckpt).")
    if (path / SHARDED_METADATA).is_file():
        return path / SHARDED_METADATA
    if (path / ".metadata").is_file() or next(path.glob("*.distcp"), None) is not None:
        raise SemvecValueError(
            f"{path} holds torch.distributed.checkpoint shards but no {SHARDED_METADATA}, the "
            "file where Lightning's sharded strategies keep the callback states (rank 0 writes "
            f"it): copy {SHARDED_METADATA} from rank 0's machine into the folder and export again "
            "(then `python -m lightning.pytorch.utilities.consolidate_checkpoint "
            f"{path}` can also make one .ckpt of it)."
        )
    # Look a few levels down: `lightning_logs/` holds `version_*/checkpoints/*.ckpt`.
    found = itertools.chain.from_iterable(
        path.glob(pattern) for pattern in ("*.ckpt", "*/*.ckpt", "*/*/*.ckpt")
    )
    listed = _names(list(itertools.islice(found, 100)), path)
    where = f"checkpoints in it: {listed}" if listed else "no *.ckpt in it"
    raise SemvecValueError(f"{path} is a folder, not a checkpoint; {where}.")


def _listing(folder: Path, missing: Path | None = None) -> str:
    """``"; checkpoints in FOLDER: b.ckpt, a.ckpt."`` (newest first, without ``missing``), or
    ``". There is no *.ckpt in FOLDER."``: the end of a message about a checkpoint there."""
    listed = _names([p for p in folder.glob("*.ckpt") if p != missing], folder)
    if not listed:
        return f". There is no *.ckpt in {folder}."
    return f"; checkpoints in {folder}: {listed}."


def _names(paths: list[Path], folder: Path) -> str:
    """The newest :data:`_LISTED` of ``paths`` relative to ``folder``, newest first."""
    def modified(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:  # removed meanwhile
            return 0.0

    newest = sorted(paths, key=modified, reverse=True)
    names = [str(p.relative_to(folder)) for p in newest[:_LISTED]]
    more = f" and {len(newest) - _LISTED} more" if len(newest) > _LISTED else ""
    return ", ".join(names) + more


def _load(file: Path, trust_checkpoint: bool) -> Any:
    """``torch.load`` of ``file``; a file it cannot read is a one-line error saying why."""
    try:
        with file.open("rb") as handle:
            head = handle.read(16)
    except OSError as err:  # unreadable (permissions): say so before torch's own wording
        raise SemvecValueError(f"Cannot read {file}: {err.strerror or err}.") from err
    if not head:
        raise SemvecValueError(
            f"{file} is empty (0 bytes): the save was interrupted or the disk was full. Save "
            f"the checkpoint again or export another{_listing(file.parent, file)}"
        )
    if head[8:9] == b"{" and int.from_bytes(head[:8], "little") < file.stat().st_size:
        # 8 bytes of header length, then JSON: safetensors, which torch.load reads too, as a
        # dict of tensors that would then be reported as "not a Lightning checkpoint".
        raise SemvecValueError(
            f"{file} is a safetensors file, not a Lightning checkpoint: if it is a knowledge "
            "file, use it as it is (semvec report, StaticKnowledge.load); export reads the "
            ".ckpt a Trainer wrote."
        )
    try:
        return torch.load(file, map_location="cpu", weights_only=not trust_checkpoint)
    except _LOAD_ERRORS as err:
        raise SemvecValueError(_unreadable(file, head, err, trust_checkpoint)) from err


def _unreadable(file: Path, head: bytes, err: Exception, trust_checkpoint: bool) -> str:
    """Why ``torch.load`` failed on ``file`` (that starts with ``head``), and what to do."""
    first_line = next((line for line in str(err).splitlines() if line.strip()), "").strip()
    cause = f"{type(err).__name__}: {first_line}" if first_line else type(err).__name__
    is_zip, is_pickle = head.startswith(_ZIP_MAGIC), head[:1] == b"\x80"
    if not (is_zip or is_pickle):
        kind = "a text file" if _is_text(head) else "not a torch.save file"
        return (
            f"{file} is not a PyTorch checkpoint: it is {kind} (it starts with {head[:8]!r}). "
            "Pass the .ckpt that ModelCheckpoint or trainer.save_checkpoint wrote."
        )
    if is_zip and _zip_index_missing(file):
        # A zip archive's index is at its end: without it, the file was most likely cut short.
        return (
            f"{file} is truncated ({file.stat().st_size} bytes; the zip index at its end is "
            "missing): the save or copy was interrupted. Copy or save it again, or export "
            "another checkpoint."
        )
    if not trust_checkpoint and "Weights only load failed" in str(err):
        # torch's message is a page long; its "Unsupported global: ..." line names the object.
        detail = next(
            (line.strip() for line in str(err).splitlines() if "Unsupported" in line), cause
        ).split(" was not an allowed")[0].rstrip(".")
        return (
            f"{file} holds objects other than tensors and plain containers, which are not "
            f"unpickled by default (unpickling can run code): {detail}. {_TRUST_HINT}"
        )
    return (
        f"{file} is damaged: torch could not load it ({cause}). Copy or save it again, or "
        "export another checkpoint."
    )


def _zip_index_missing(file: Path) -> bool:
    """Whether the zip archive ``file`` has no end-of-archive index (was cut short)."""
    try:
        return not zipfile.is_zipfile(file)
    except (zipfile.BadZipFile, OSError):  # an index that is there but damaged
        return False


def _is_text(head: bytes) -> bool:
    """Whether ``head`` is printable UTF-8 (a log, a YAML config, a CSV...)."""
    # The 16 bytes may end inside a multi-byte character: try without its last 1 to 3 bytes.
    for end in range(len(head), max(len(head) - 4, 0), -1):
        try:
            text = head[:end].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return all(ch.isprintable() or ch in "\t\r\n" for ch in text)
    return False
