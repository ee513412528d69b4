"""Turning user data into a validated ``[N, D]`` matrix, and the errors for bad data.

Every backend validates with the same rules and raises the same :class:`InputError`
messages, built by the ``*_error`` helpers here, so a bad batch reads the same whatever
computes on it. This module holds the pure-Python conversion: nested sequences of real
numbers, NumPy arrays and tensor-likes (anything with ``tolist()``, after ``detach()``
and ``cpu()`` when present) become a tuple of float tuples. Inputs are only read.

Example
-------
>>> as_python_matrix([[1, 2.5], [3, 4]], "prediction")
((1.0, 2.5), (3.0, 4.0))
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from geno_lewm.errors import InputError

__all__ = [
    "Matrix",
    "as_python_matrix",
    "dtype_error",
    "element_type_error",
    "empty_batch_error",
    "empty_rows_error",
    "non_finite_error",
    "not_2d_error",
    "not_a_batch_error",
    "ragged_error",
    "shape_mismatch_error",
]

Matrix = tuple[tuple[float, ...], ...]
"""A validated batch in the pure-Python backend: ``N`` rows of ``D`` finite floats."""

_FAST_TYPES = frozenset({float})
_NUMBER_TYPES = frozenset({float, int})


# --------------------------------------------------------------------------- errors
def not_a_batch_error(name: str, value: object) -> InputError:
    """``value`` is not a nested sequence, array or tensor at all."""
    return InputError(
        f"{name!r} must be a 2-D batch [N, D] (nested sequences of numbers, a NumPy array or a tensor): "
        f"got {type(value).__name__}",
        details={"field": name, "type": type(value).__name__},
    )


_SEQUENCE_HINT = (
    "; for latents of shape [B, T, D], check one row per token (x.reshape(-1, D)) or one per sequence "
    "(x.mean(dim=1), or the token your predictor targets)"
)


def not_2d_error(name: str, ndim: int | None, *, where: str = "") -> InputError:
    """The data has the wrong number of dimensions (``ndim`` when known); 3-D data gets a
    hint on how to make rows of it.
    """
    got = f"{ndim}-D data" if ndim is not None else "data that is not 2-D"
    suffix = f" ({where})" if where else ""
    hint = _SEQUENCE_HINT if ndim == 3 else ""
    return InputError(
        f"{name!r} must be 2-D [N, D]: got {got}{suffix}{hint}",
        details={"field": name, "ndim": ndim},
    )


def empty_batch_error(name: str) -> InputError:
    """The batch has no rows."""
    return InputError(f"{name!r} is empty: a batch needs at least one row", details={"field": name, "rows": 0})


def empty_rows_error(name: str) -> InputError:
    """The rows have no columns."""
    return InputError(
        f"{name!r} has empty rows: each row needs at least one column",
        details={"field": name, "columns": 0},
    )


def ragged_error(name: str, row: int, length: int, expected: int) -> InputError:
    """A row's length differs from the first row's."""
    return InputError(
        f"{name!r} is ragged: row {row} has {length} columns, row 0 has {expected}",
        details={"field": name, "row": row, "columns": length, "expected": expected},
    )


def element_type_error(name: str, row: int, column: int, value: object) -> InputError:
    """An element is not a real number (bool, str, None, complex, nested sequence...)."""
    kind = type(value).__name__
    if isinstance(value, bool) or kind in ("bool", "bool_"):  # NumPy 2 names its scalar type "bool"
        why = "booleans are not numbers here"
    elif isinstance(value, complex) or (isinstance(value, numbers.Complex) and not isinstance(value, numbers.Real)):
        why = "complex numbers are not supported"
    elif isinstance(value, (str, bytes)):
        why = "strings are not numbers"
    elif value is None:
        why = "missing value"
    elif isinstance(value, Sequence) or hasattr(value, "__len__"):
        why = "a nested sequence: the data has more than 2 dimensions"
    else:
        why = "not a real number"
    return InputError(
        f"{name!r} has a {kind} at row {row}, column {column}: {why}",
        details={"field": name, "row": row, "column": column, "type": kind},
    )


def dtype_error(name: str, dtype: str) -> InputError:
    """An array or tensor has a dtype that does not hold real numbers."""
    return InputError(
        f"{name!r} has dtype {dtype}: only real floating-point or integer data is supported",
        details={"field": name, "dtype": dtype},
    )


def non_finite_error(name: str, row: int, column: int, value: float) -> InputError:
    """An element is NaN or infinite."""
    return InputError(
        f"{name!r} has a non-finite value {value!r} at row {row}, column {column}",
        details={"field": name, "row": row, "column": column, "value": value},
    )


def shape_mismatch_error(prediction_shape: tuple[int, int], target_shape: tuple[int, int]) -> InputError:
    """Prediction and target do not have the same ``[N, D]``."""
    (pn, pd), (tn, td) = prediction_shape, target_shape
    what = "batch size" if pn != tn else "dimension"
    return InputError(
        f"'prediction' and 'target' must have the same shape: got [{pn}, {pd}] and [{tn}, {td}] ({what} differs)",
        details={"field": "target", "prediction_shape": [pn, pd], "target_shape": [tn, td]},
    )


# ----------------------------------------------------------------------- conversion
def _holds_reals(dtype: Any) -> bool:
    """Whether an array's or tensor's dtype can hold real numbers (object arrays: maybe)."""
    kind = getattr(dtype, "kind", None)
    if isinstance(kind, str):  # a NumPy dtype
        return kind in "iufO"
    return not (getattr(dtype, "is_complex", False) or str(dtype).endswith("bool"))


def _listed(value: Any, name: str, ndim_expected: int, where: str = "") -> list[Any]:
    """``value.tolist()`` for an array or tensor-like of ``ndim_expected`` dimensions,
    after checking its ``ndim`` and dtype (so a bool or complex tensor is refused by
    dtype, before any conversion) and moving it off its device.
    """
    ndim = getattr(value, "ndim", None)
    if isinstance(ndim, int) and ndim != ndim_expected:
        raise not_2d_error(name, ndim if not where else None, where=where)
    dtype = getattr(value, "dtype", None)
    if dtype is not None and not _holds_reals(dtype):
        raise dtype_error(name, str(dtype))
    data = value
    if hasattr(data, "detach"):
        data = data.detach()
    if hasattr(data, "cpu"):
        data = data.cpu()
    listed = data.tolist()
    if not isinstance(listed, list):
        raise not_2d_error(name, 0 if not where else None, where=where)
    return listed


def _rows_of(value: Any, name: str) -> Sequence[Any]:
    """Return the outer sequence of ``value``, unwrapping arrays and tensor-likes."""
    if isinstance(value, (list, tuple)):
        return value
    if isinstance(value, (str, bytes, bytearray)) or value is None:
        raise not_a_batch_error(name, value)
    if hasattr(value, "tolist"):
        return _listed(value, name, 2)
    if isinstance(value, Sequence):
        return value
    raise not_a_batch_error(name, value)


def _overflowed(value: Any) -> float:
    """The infinity a real too large for a float (a huge int or fraction) rounds to."""
    return -math.inf if value < 0 else math.inf


def _convert_row(name: str, index: int, row: Sequence[Any]) -> tuple[float, ...]:
    """Convert one row element by element, raising on the first bad element."""
    out = []
    element: Any
    for column, element in enumerate(row):
        if type(element) is float:
            out.append(element)
            continue
        if isinstance(element, bool) or not isinstance(element, numbers.Real):
            raise element_type_error(name, index, column, element)
        try:
            out.append(float(element))
        except OverflowError:
            raise non_finite_error(name, index, column, _overflowed(element)) from None
    return tuple(out)


def _check_finite(name: str, index: int, row: tuple[float, ...]) -> None:
    """Locate a non-finite element of a row whose sum was not finite (sums can overflow)."""
    for column, element in enumerate(row):
        if not math.isfinite(element):
            raise non_finite_error(name, index, column, element)


def as_python_matrix(value: Any, name: str) -> Matrix:
    """Validate ``value`` as a 2-D batch of finite reals and return it as float tuples.

    Raises :class:`InputError` naming ``name`` and the offending row and column for an
    empty batch, empty or ragged rows, data that is not 2-D, non-numeric elements (bools,
    strings, ``None``, complex numbers) and NaN or infinite values. Rows may themselves
    be 1-D arrays or tensors (a list of embeddings).
    """
    rows = _rows_of(value, name)
    if len(rows) == 0:
        raise empty_batch_error(name)
    width = -1
    out: list[tuple[float, ...]] = []
    for index, item in enumerate(rows):
        row = item
        if not isinstance(item, (list, tuple, str, bytes, bytearray)) and hasattr(item, "tolist"):
            kind = f"{getattr(item, 'ndim', '?')}-D {type(item).__name__}"
            row = _listed(item, name, 1, where=f"row {index} is a {kind}")
        if not isinstance(row, (list, tuple)) and (
            isinstance(row, (str, bytes, bytearray)) or not isinstance(row, Sequence)
        ):
            raise not_2d_error(name, 1 if index == 0 else None, where=f"row {index} is a {type(row).__name__}")
        if width < 0:
            width = len(row)
            if width == 0:
                raise empty_rows_error(name)
        elif len(row) != width:
            raise ragged_error(name, index, len(row), width)
        kinds = set(map(type, row))
        if kinds <= _FAST_TYPES:
            converted = tuple(row)
        elif kinds <= _NUMBER_TYPES:
            try:
                converted = tuple(map(float, row))
            except OverflowError:
                converted = _convert_row(name, index, row)
        else:
            converted = _convert_row(name, index, row)
        if not math.isfinite(sum(converted)):
            _check_finite(name, index, converted)
        out.append(converted)
    return tuple(out)
