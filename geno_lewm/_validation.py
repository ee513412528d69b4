"""Validation of scalar parameters, with one error shape for all of them.

Every message reads ``'<name>' must be <condition>: got <value>``, and the error's
``details`` carry ``field`` and ``value``, so a bad configuration is found the same way
wherever it is passed.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from geno_lewm.errors import InputError

__all__ = [
    "as_finite_real",
    "check_non_negative_int",
    "check_positive_finite",
    "check_positive_int",
]


def _fail(name: str, condition: str, value: object) -> InputError:
    return InputError(
        f"{name!r} must be {condition}: got {value!r}",
        details={"field": name, "value": value, "type": type(value).__name__},
    )


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and type(value).__name__ != "bool_"


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` as an ``int`` if it is an integer > 0 (bools refused)."""
    if not _is_int(value) or int(value) <= 0:
        raise _fail(name, "a positive integer", value)
    return int(value)


def check_non_negative_int(name: str, value: Any) -> int:
    """Return ``value`` as an ``int`` if it is an integer >= 0 (bools refused)."""
    if not _is_int(value) or int(value) < 0:
        raise _fail(name, "a non-negative integer", value)
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
            raise _fail(name, "a finite real number", value) from None
    if isinstance(scalar, bool) or type(scalar).__name__ == "bool_" or not isinstance(scalar, numbers.Real):
        raise _fail(name, "a finite real number", value)
    try:
        result = float(scalar)
    except (OverflowError, ValueError):
        raise _fail(name, "a finite real number", value) from None
    if not math.isfinite(result):
        raise _fail(name, "finite", value)
    return result


def check_positive_finite(name: str, value: Any) -> float:
    """Return ``value`` as a ``float`` if it is a finite real number > 0."""
    result = as_finite_real(name, value)
    if result <= 0.0:
        raise _fail(name, "> 0", value)
    return result
