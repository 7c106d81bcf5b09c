"""Where the projector files live: a local folder or any fsspec URL, as Lightning's loggers allow.

``TensorBoardLogger`` accepts remote log directories (``s3://``, ``gs://``, ...) through
fsspec, so the projector files are written and read through the filesystem fsspec picks for
the log directory, as Lightning does (``lightning.fabric.utilities.cloud_io.get_filesystem``).
A URL whose filesystem is not installed fails here, before anything is written.

Example:
    >>> folder = LogDir.open("memory://semvec-doctest")
    >>> folder.write_bytes("00001/fc/tensors.tsv", b"1\\t2\\n")
    >>> folder.read_bytes("00001/fc/tensors.tsv")
    b'1\\t2\\n'
    >>> folder.url_of("00001/fc/tensors.tsv")
    'memory://semvec-doctest/00001/fc/tensors.tsv'
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import get_protocol

from lightning_semvec._utils.files import temporary_sibling
from lightning_semvec.errors import (
    SemvecFileNotFoundError,
    SemvecTypeError,
    SemvecValueError,
)

__all__ = ["LogDir"]


@dataclass(frozen=True)
class LogDir:
    """A run directory on the fsspec filesystem its path or URL names.

    Attributes:
        fs: the filesystem (``LocalFileSystem`` for a plain path).
        root: the directory's path on ``fs`` (the URL without its protocol).
        url: the directory as the caller gave it, for messages.
    """

    fs: Any
    root: str
    url: str

    @classmethod
    def open(cls, log_dir: str | os.PathLike[str]) -> LogDir:
        """The run directory ``log_dir`` names; a clear error if its filesystem is unavailable."""
        url = os.fspath(log_dir) if isinstance(log_dir, (str, os.PathLike)) else None
        if not isinstance(url, str):
            raise SemvecTypeError(
                "log_dir must be a path or URL string (a TensorBoardLogger's log_dir), got "
                f"{type(log_dir).__name__}."
            )
        if not url:
            raise SemvecValueError(
                "log_dir must not be empty: pass the run directory (a TensorBoardLogger's "
                "log_dir)."
            )
        try:
            fs, root = url_to_fs(url)
        except (ImportError, ValueError) as err:
            raise SemvecValueError(
                f"Cannot open log_dir {url!r}: fsspec has no usable filesystem for "
                f"{get_protocol(url)!r} ({err}). Install the fsspec implementation it names "
                "(s3fs for s3://, gcsfs for gs://) or use a local directory."
            ) from err
        return cls(fs, root, url)

    def path(self, relative: str) -> str:
        """The path on :attr:`fs` of ``relative`` (``"/"``-separated) inside the directory."""
        return posixpath.join(self.root, relative)

    def url_of(self, relative: str) -> str:
        """``relative`` inside the directory, written as the caller wrote the directory."""
        return posixpath.join(self.url, relative)

    def exists(self, relative: str) -> bool:
        """Whether ``relative`` exists inside the directory."""
        return bool(self.fs.exists(self.path(relative)))

    def read_bytes(self, relative: str) -> bytes:
        """The content of the file ``relative``; a clear error if it does not exist."""
        try:
            return bytes(self.fs.cat_file(self.path(relative)))
        except FileNotFoundError as err:
            raise SemvecFileNotFoundError(
                f"{self.url_of(relative)!r} does not exist: the projector config lists a file "
                "that was moved or deleted."
            ) from err

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Write the file ``relative``, creating its folders."""
        path = self.path(relative)
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        self.fs.pipe_file(path, data)

    def remove(self, relatives: Iterable[str]) -> None:
        """Delete the files ``relatives`` (those that exist), then their folders that this
        leaves empty, up to the directory itself (object stores have no empty folders)."""
        folders = set()
        for relative in relatives:
            path = self.path(relative)
            if self.fs.exists(path):
                self.fs.rm_file(path)
            parent = posixpath.dirname(relative)
            while parent:
                folders.add(parent)
                parent = posixpath.dirname(parent)
        if not isinstance(self.fs, LocalFileSystem):
            return
        for folder in sorted(folders, key=lambda f: -f.count("/")):  # deepest first
            try:
                os.rmdir(self.path(folder))
            except OSError:  # not empty, or gone already
                pass

    def replace_bytes(self, relative: str, data: bytes) -> None:
        """Replace the file ``relative`` so that a reader sees the old or the new content."""
        self.replace_together({relative: data})

    def replace_together(self, files: Mapping[str, bytes]) -> None:
        """Replace several files so that a failed write (a full disk) leaves every one as it was.

        On a local disk each file is first written in full beside its target (a hidden
        temporary named after this process; the next write clears a killed one's), and only
        then are all renamed into place, in the order given: list last the file that points to
        the others (the config). Object stores (S3, GCS) show an object only once its upload
        completes, so there each file is written as it is, all or nothing.
        """
        if not isinstance(self.fs, LocalFileSystem):
            for relative, data in files.items():
                self.write_bytes(relative, data)
            return
        staged: list[tuple[Path, Path]] = []
        try:
            for relative, data in files.items():
                path = Path(self.path(relative))
                path.parent.mkdir(parents=True, exist_ok=True)
                temporary = temporary_sibling(path)
                staged.append((temporary, path))
                with open(temporary, "xb") as handle:
                    handle.write(data)
        except BaseException:
            for temporary, _ in staged:
                temporary.unlink(missing_ok=True)
            raise
        for temporary, path in staged:
            os.replace(temporary, path)
