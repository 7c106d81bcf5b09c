"""Reading a knowledge file's safetensors header without trusting it.

A knowledge file may come from anyone, so everything here assumes the bytes are hostile: the
path may be a pipe or a device, the header length may be absurd, the JSON may be nested
100,000 deep, hold 5,000-digit integers, repeat keys, or name tensors whose sizes do not add up.
Each such file becomes a :class:`KnowledgeFileError` that names the file, in time and memory
bounded by :data:`MAX_HEADER_BYTES`; nothing is executed and nothing is repaired.
"""

from __future__ import annotations

import errno
import json
import os
import reprlib
import stat
import struct
from pathlib import Path
from typing import Any

from lightning_semvec._utils.checks import is_int
from lightning_semvec.errors import SemvecFileNotFoundError, SemvecValueError

__all__ = [
    "MAX_HEADER_BYTES",
    "KnowledgeFileError",
    "parse_json",
    "read_header",
    "regular_file_size",
    "short",
    "short_text",
]

# safetensors refuses headers above 100 MB; a larger length means this is not a safetensors file.
_SAFETENSORS_MAX_HEADER_BYTES = 100_000_000
#: The largest header a knowledge file may have. A real one holds a few entries per layer and
#: the class names: kilobytes, a few megabytes for 20,000 classes. Parsed JSON takes up to ~20
#: times its size in memory (``[[],[],...]``), so this bounds what a hostile header can cost.
MAX_HEADER_BYTES = 16 * 1024 * 1024
# How a torch checkpoint begins: a zip archive (torch.save since 1.6) or a raw pickle stream.
_PICKLE_MAGICS = (b"PK\x03\x04", b"\x80")
# Bytes per element of the dtypes a knowledge file holds (float32 vectors, bool, int64 and
# uint8 statistics); other dtypes are refused later by the entry checks, which name the tensor.
_ITEM_BYTES = {"F32": 4, "BOOL": 1, "I64": 8, "U8": 1}
# Shapes and offsets are u64 in safetensors; larger values cannot describe a real file.
_MAX_U64 = 2**64 - 1
_MAX_INT_DIGITS = len(str(_MAX_U64))
_NO_FILE_ERRNOS = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)

# Error messages quote values from the file: keep them short whatever the file holds.
_short_repr = reprlib.Repr()
_short_repr.maxstring = _short_repr.maxother = 80
_short_repr.maxlong = 40
_short_repr.maxlist = _short_repr.maxtuple = _short_repr.maxdict = 6
_short_repr.maxlevel = 3


def short(value: object) -> str:
    """A bounded ``repr`` of a value read from a file, for error messages: long strings and
    huge integers are cut, deep or long containers elided (and no recursion limit is hit)."""
    return _short_repr.repr(value)


def short_text(text: str) -> str:
    """A string read from a file, unquoted but cut to 80 characters, for error messages."""
    return text if len(text) <= 80 else f"{text[:77]}..."


class KnowledgeFileError(SemvecValueError):
    """A file is not a valid knowledge file; the message says what is wrong and what to do."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A repeated key would make us check one value while safetensors (serde) may load another.
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"it repeats the key {short(key)} in one object")
            seen.add(key)
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"it holds {name}, which is not JSON")


def _small_int(literal: str) -> int:
    # Every integer of a knowledge file (a count, a shape, an offset, a version) fits in a
    # u64: 20 digits. Longer literals are refused before conversion, which is quadratic in
    # their length (and refused by Python beyond 4300 digits).
    if len(literal.lstrip("-")) > _MAX_INT_DIGITS:
        raise ValueError(
            f"it holds a {len(literal.lstrip('-'))}-digit integer; no field of a knowledge "
            f"file has more than {_MAX_INT_DIGITS} digits"
        )
    return int(literal)


def parse_json(text: str | bytes) -> Any:
    """Strict JSON: no repeated keys, no ``NaN``/``Infinity``, integers of at most 20 digits.

    Raises:
        json.JSONDecodeError: not JSON at all.
        ValueError: JSON that breaks one of those rules or is nested too deeply (beyond
            Python's recursion limit); the message says which, starting "it ...".
    """
    try:
        return json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_int=_small_int,
        )
    except RecursionError:
        # The C decoder recurses once per level and stops at the recursion limit; a real
        # header is 3 levels deep, its document 4.
        raise ValueError("it is nested too deeply") from None


def _not_safetensors(path: Path, why: str) -> KnowledgeFileError:
    return KnowledgeFileError(
        f"{str(path)!r} is not a safetensors knowledge file ({why}); it may be a pickle/torch "
        "checkpoint (torch.save), which is never unpickled for safety. Export the knowledge "
        "with `semvec export` / SemanticVectorCallback.export_knowledge() and load that file."
    )


def _malformed(path: Path, why: str) -> KnowledgeFileError:
    # JSON, so likely meant as safetensors, but not as safetensors (or we) write it.
    return KnowledgeFileError(
        f"{str(path)!r} has a malformed safetensors header ({why}), so it was not loaded: it "
        "was edited or not written by safetensors. Export the knowledge again with `semvec "
        "export` / SemanticVectorCallback.export_knowledge()."
    )


def _truncated(path: Path, why: str) -> KnowledgeFileError:
    return KnowledgeFileError(
        f"{str(path)!r} is truncated ({why}): the file was cut short, e.g. by an interrupted "
        "copy or download. Copy or export it again."
    )


def regular_file_size(path: Path) -> int:
    """The size of ``path`` after checking, without opening it, that it is a regular file:
    opening a named pipe blocks until someone writes to it, and a device may never end."""
    try:
        info = os.stat(path)
    except (OSError, ValueError) as err:
        # What Path.exists() takes for "no file", as before this check: a missing file or
        # folder, a symlink loop, a path with a NUL byte. Others (permissions) say themselves.
        if isinstance(err, OSError) and err.errno not in _NO_FILE_ERRNOS:
            raise
        raise SemvecFileNotFoundError(f"No knowledge file at {str(path)!r}.") from None
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(info.st_mode)), "not a file")
        raise KnowledgeFileError(
            f"{str(path)!r} is {kind}, not a regular file, so it is not a knowledge file and "
            "was not opened. Pass the path of a .semvec.safetensors file."
        )
    return info.st_size


def read_header(path: Path) -> dict[str, Any]:
    """Parse and sanity-check the safetensors header of the regular file ``path``.

    Checks, before anything is loaded: the length fits the file and :data:`MAX_HEADER_BYTES`;
    the header is strict JSON, an object; ``__metadata__`` maps strings to strings; every
    tensor entry has a string dtype, a shape of non-negative integers and ``data_offsets``
    ``[begin, end]`` inside the file whose length matches its shape (for the dtypes a
    knowledge file holds).
    """
    size = regular_file_size(path)
    # O_NONBLOCK: should the file be swapped for a pipe after the check, reading returns at
    # once (and the file reads as truncated) instead of blocking. No effect on regular files.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as handle:
        prefix = handle.read(8)
        # Only a hint for the message: a valid header length may also begin with 0x80.
        looks_pickled = prefix.startswith(_PICKLE_MAGICS)
        if len(prefix) < 8:
            if looks_pickled:
                raise _not_safetensors(path, "it starts like a pickle")
            raise _truncated(path, f"only {size} bytes, less than a safetensors header")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > _SAFETENSORS_MAX_HEADER_BYTES:
            why = "it starts like a pickle or zip archive" if looks_pickled else (
                "its first 8 bytes are not a safetensors header length"
            )
            raise _not_safetensors(path, why)
        if 8 + header_len > size:
            if looks_pickled:
                raise _not_safetensors(
                    path,
                    "it starts like a pickle or zip archive and its header length does not fit "
                    "the file; were it a knowledge file, it would be truncated",
                )
            raise _truncated(
                path, f"the header needs {8 + header_len} bytes but the file has {size}"
            )
        if header_len > MAX_HEADER_BYTES:
            raise KnowledgeFileError(
                f"{str(path)!r} has a {header_len}-byte safetensors header, more than the "
                f"{MAX_HEADER_BYTES} bytes a knowledge file may have (a real one holds a few "
                "entries per layer and the class names), so it was not parsed. If it is a "
                "knowledge file, export it again with fewer layers or shorter class names."
            )
        raw = handle.read(header_len)
    try:
        header = parse_json(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _not_safetensors(path, "its header is not JSON") from None
    except ValueError as err:
        raise _malformed(path, str(err)) from None
    if not isinstance(header, dict):
        raise _not_safetensors(path, "its header is not a JSON object")
    data_end = 0
    for key, info in header.items():
        if key == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise _malformed(path, "its __metadata__ is not an object of strings")
            continue
        problem = _tensor_entry_problem(info)
        if problem:
            raise _malformed(path, f"its entry for {short(key)} {problem}")
        data_end = max(data_end, info["data_offsets"][1])
    if 8 + header_len + data_end > size:
        raise _truncated(
            path, f"the tensors need {8 + header_len + data_end} bytes but the file has {size}"
        )
    return header


def _tensor_entry_problem(info: object) -> str:
    """What is wrong with one tensor entry of a safetensors header ("" if nothing)."""
    if not isinstance(info, dict):
        return f"is {short(info)}, not an object"
    offsets = info.get("data_offsets")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(is_int(o) and 0 <= o <= _MAX_U64 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        return f"has no valid data_offsets [begin, end]: {short(offsets)}"
    if not isinstance(info.get("dtype"), str):
        return f"has no valid dtype: {short(info.get('dtype'))}"
    shape = info.get("shape")
    if not isinstance(shape, list) or not all(is_int(n) and 0 <= n <= _MAX_U64 for n in shape):
        return f"has no valid shape (a list of non-negative integers): {short(shape)}"
    item_bytes = _ITEM_BYTES.get(info["dtype"])
    if item_bytes is not None:
        span = offsets[1] - offsets[0]
        # Stop multiplying once past the span, so a long shape of huge numbers costs nothing.
        nbytes = 0 if 0 in shape else item_bytes
        for n in shape:
            nbytes *= n
            if nbytes > span:
                break
        if nbytes != span:
            return (
                f"has shape {short(shape)} of {info['dtype']} but data_offsets "
                f"{offsets} span {span} bytes"
            )
    return ""
