"""Validation of parameters at the public boundary, with one error shape for all of them.

Every message reads ``'<name>' must be <condition>: got <value>``, and the error's
``details`` carry ``field`` and ``value`` (or ``type``), so a bad configuration is found
the same way wherever it is passed. Public functions and constructors check their
arguments with these helpers once; what they hand on inside the library is trusted.

Example
-------
>>> check_choice("mode", "epoch", ("step", "epoch"))
'epoch'
>>> try:
...     check_positive_int("log_every_steps", 0)
... except InputError as error:
...     print(error)
'log_every_steps' must be a positive integer: got 0
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from geno_lewm.errors import InputError

__all__ = [
    "as_finite_real",
    "check_bool",
    "check_callable",
    "check_choice",
    "check_instance",
    "check_non_negative_int",
    "check_positive_finite",
    "check_positive_int",
    "fail",
    "wrong_type",
]

T = TypeVar("T")


SHOWN_CHARACTERS = 80
"""The longest ``repr`` an error message quotes whole; longer ones are cut (see :func:`shown`)."""


def shown(value: object) -> str:
    """``repr(value)`` as an error message quotes it: whole when short, else its first
    :data:`SHOWN_CHARACTERS` characters and its length, so that a 10 MB string does not
    become a 10 MB message.
    """
    text = repr(value)
    if len(text) <= SHOWN_CHARACTERS:
        return text
    return f"{text[:SHOWN_CHARACTERS]}... ({len(text):,} characters)"


def fail(name: str, condition: str, value: object) -> InputError:
    """The error for ``name`` not meeting ``condition``: ``'name' must be <condition>: got <value>``
    (a long value shortened by :func:`shown`).
    """
    text = shown(value)
    return InputError(
        f"{name!r} must be {condition}: got {text}",
        details={
            "field": name,
            "value": value if len(text) <= SHOWN_CHARACTERS else text,
            "type": type(value).__name__,
        },
    )


def wrong_type(name: str, expected: str, value: object) -> InputError:
    """The error for ``name`` being of the wrong type: ``'name' must be <expected>: got <type>``."""
    return InputError(
        f"{name!r} must be {expected}: got {type(value).__name__}",
        details={"field": name, "type": type(value).__name__},
    )


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and type(value).__name__ != "bool_"


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` as an ``int`` if it is an integer > 0 (bools refused)."""
    if not _is_int(value) or int(value) <= 0:
        raise fail(name, "a positive integer", value)
    return int(value)


def check_non_negative_int(name: str, value: Any) -> int:
    """Return ``value`` as an ``int`` if it is an integer >= 0 (bools refused)."""
    if not _is_int(value) or int(value) < 0:
        raise fail(name, "a non-negative integer", value)
    return int(value)


def as_finite_real(name: str, value: Any) -> float:
    """Return ``value`` as a finite ``float``.

    Accepts Python and NumPy reals and single-element tensor-likes (anything with
    ``item()``, e.g. a 0-d ``torch.Tensor``); refuses bools, complex numbers, strings,
    ``None``, NaN and infinities.
    """
    scalar = value
    if not isinstance(scalar, numbers.Number) and hasattr(scalar, "item"):
        try:
            scalar = scalar.item()
        except (TypeError, ValueError, RuntimeError):
            raise fail(name, "a finite real number", value) from None
    if isinstance(scalar, bool) or type(scalar).__name__ == "bool_" or not isinstance(scalar, numbers.Real):
        raise fail(name, "a finite real number", value)
    try:
        result = float(scalar)
    except (OverflowError, ValueError):
        raise fail(name, "a finite real number", value) from None
    if not math.isfinite(result):
        raise fail(name, "finite", value)
    return result


def check_positive_finite(name: str, value: Any) -> float:
    """Return ``value`` as a ``float`` if it is a finite real number > 0."""
    result = as_finite_real(name, value)
    if result <= 0.0:
        raise fail(name, "> 0", value)
    return result


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is ``True`` or ``False`` (not merely truthy)."""
    if not isinstance(value, bool):
        raise fail(name, "True or False", value)
    return value


def check_choice(name: str, value: Any, choices: Sequence[T]) -> T:
    """Return ``value`` if it is one of ``choices``; the message lists them."""
    if value not in choices:
        listed = ", ".join(map(repr, choices[:-1]))
        named = f"{listed} or {choices[-1]!r}" if len(choices) > 1 else repr(choices[0])
        raise fail(name, named, value)
    chosen: T = value
    return chosen


def check_instance(name: str, value: Any, kind: type[T] | tuple[type[T], ...], expected: str = "") -> T:
    """Return ``value`` if it is an instance of ``kind``; the message names ``expected``
    (``"a <class name>"`` when omitted) and the type received.
    """
    if not isinstance(value, kind):
        if not expected:
            first = kind[0] if isinstance(kind, tuple) else kind
            expected = f"an {first.__name__}" if first.__name__[0] in "AEIOU" else f"a {first.__name__}"
        raise wrong_type(name, expected, value)
    return value


def check_callable(name: str, value: Any) -> Callable[..., Any]:
    """Return ``value`` if it is callable."""
    if not callable(value):
        raise wrong_type(name, "callable", value)
    result: Callable[..., Any] = value
    return result
