"""Argument checks shared by every public entry point: one message format, one error class.

Each check returns the value it accepted (so ``self.dim = check_int("dim", dim, 1)`` reads as
one line) and raises a :class:`~lightning_semvec.errors.SemvecValueError` or
:class:`~lightning_semvec.errors.SemvecTypeError` that names the argument, what it must be and
what was given. ``bool`` is never accepted as a number (``True`` is an ``int`` in Python).

Example:
    >>> check_int("dim", 16, minimum=1)
    16
    >>> check_int("dim", True, minimum=1)
    Traceback (most recent call last):
    ...
    lightning_semvec.errors.SemvecValueError: dim must be an integer >= 1, got True.
    >>> check_number("lr", 0.0, positive=True)
    Traceback (most recent call last):
    ...
    lightning_semvec.errors.SemvecValueError: lr must be a number > 0, got 0.0.
    >>> check_choice("form", "auto", ("auto", "dense", "factorized"))
    'auto'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, TypeGuard, TypeVar

from lightning_semvec.errors import SemvecTypeError, SemvecValueError

__all__ = ["DIM_HINT", "check_callable", "check_choice", "check_int", "check_number", "is_int", "is_int_at_least"]

T = TypeVar("T")

#: Why semantic vectors need ``dim >= 2``, for the message that refuses 1.
DIM_HINT = ("(a 1-d unit vector is +1 or -1, so the cosine of two is always +1 or -1 and there is "
            "nothing to learn; 2 to 64 is typical)")


def is_int(value: object) -> TypeGuard[int]:
    """Whether ``value`` is an ``int`` and not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_int_at_least(value: object, minimum: int) -> TypeGuard[int]:
    """Whether ``value`` is an ``int`` (not a ``bool``) of at least ``minimum``."""
    return is_int(value) and value >= minimum


def _range_text(minimum: float | None, maximum: float | None, strict: bool) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" {'>' if strict else '>='} {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def check_int(
    name: str,
    value: Any,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    hint: str = "",
) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) in ``[minimum, maximum]``; else a
    :class:`~lightning_semvec.errors.SemvecValueError` naming ``name``. ``hint`` is appended
    to the message (what to do, or what is typical)."""
    if (
        not is_int(value)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        extra = f" {hint}" if hint else ""
        raise SemvecValueError(
            f"{name} must be an integer{_range_text(minimum, maximum, False)}, got {value!r}.{extra}"
        )
    return value


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
    hint: str = "",
) -> float:
    """``value`` as a ``float`` if it is a finite real number (not a ``bool``) in range:
    ``> 0`` with ``positive``, else in ``[minimum, maximum]``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and positive and not value > 0:
        ok = False
    if ok and minimum is not None and value < minimum:
        ok = False
    if ok and maximum is not None and value > maximum:
        ok = False
    if not ok:
        bound = " > 0" if positive else _range_text(minimum, maximum, False)
        extra = f" {hint}" if hint else ""
        raise SemvecValueError(f"{name} must be a number{bound}, got {value!r}.{extra}")
    return float(value)


def check_choice(name: str, value: Any, choices: Iterable[T], *, hint: str = "") -> T:
    """``value`` if it is one of ``choices``; else an error listing them."""
    options = tuple(choices)
    if not isinstance(value, (str, int, float, type(None))) or value not in options:
        extra = f" {hint}" if hint else ""
        listed = ", ".join(repr(c) for c in options)
        raise SemvecValueError(f"Unknown {name} {value!r}: use one of {listed}.{extra}")
    return value


def check_callable(name: str, value: Any, what: str) -> Callable[..., Any]:
    """``value`` if it is callable; ``what`` says what it must be (``"a callable taking a batch
    and returning (B,) labels"``)."""
    if not callable(value):
        raise SemvecTypeError(f"{name} must be {what}, got {type(value).__name__}.")
    return value
