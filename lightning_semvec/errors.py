"""The package's own errors: what the user passed (an argument, a file, a layer) was wrong.

Every error that ``lightning_semvec`` raises about its input derives from :class:`SemvecError`,
and also from the built-in class a caller would expect (``ValueError``, ``TypeError``,
``FileNotFoundError``), so ``except ValueError`` keeps working. The ``semvec`` command line
prints a :class:`SemvecError` as one line and exits with status 2; anything else is a bug and
keeps its traceback.

Example:
    >>> from lightning_semvec.errors import SemvecError, SemvecValueError
    >>> try:
    ...     raise SemvecValueError("dim must be an integer >= 1, got 0.")
    ... except SemvecError as err:
    ...     print(err)
    dim must be an integer >= 1, got 0.
    >>> issubclass(SemvecValueError, ValueError)
    True
"""

from __future__ import annotations

__all__ = ["SemvecError", "SemvecFileExistsError", "SemvecFileNotFoundError", "SemvecTypeError",
           "SemvecValueError", "SemvecWriteError"]


class SemvecError(Exception):
    """Base class of every error about the user's input; the message says what to do."""


class SemvecValueError(SemvecError, ValueError):
    """A value the user passed (an argument, a setting, a file's content) is wrong."""


class SemvecTypeError(SemvecError, TypeError):
    """Something the user passed has the wrong type."""


class SemvecFileNotFoundError(SemvecError, FileNotFoundError):
    """A file the user named does not exist."""


class SemvecFileExistsError(SemvecError, FileExistsError):
    """An output the user named exists and replacing it was not asked for."""


class SemvecWriteError(SemvecError, OSError):
    """An output could not be written (a full or read-only disk, no permission); nothing that
    was there before was changed."""
