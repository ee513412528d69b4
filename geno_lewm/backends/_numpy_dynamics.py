"""The NumPy kernel for prediction dynamics: the reference's softmax statistics, vectorised.

Same definitions and edge conventions as :mod:`geno_lewm.backends._python_dynamics`
(log-sum-exp shift, ``0 log 0 = 0``, first argmax on ties), computed in float64. Arrays
are validated here with the shared error messages of :mod:`geno_lewm._inputs`; nested
sequences go through the pure-Python validation first, so a bad element is reported
exactly as the reference reports it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from geno_lewm._inputs import (
    as_python_matrix,
    dtype_error,
    empty_batch_error,
    empty_rows_error,
    non_finite_error,
    not_2d_error,
)

__all__ = ["NAME", "describe", "prediction_sums", "prepare"]

NAME = "numpy"

Array = npt.NDArray[np.float64]


def prepare(value: Any, name: str) -> Array:
    """Validate ``value`` and return it as a float64 ``[N, C]`` array.

    A float64 array is returned as it is (no copy): the kernel only reads it.
    """
    if not isinstance(value, np.ndarray):
        return np.array(as_python_matrix(value, name), dtype=np.float64)
    if value.dtype.kind == "O":
        return np.array(as_python_matrix(value, name), dtype=np.float64)
    if value.dtype.kind not in "iuf":
        raise dtype_error(name, str(value.dtype))
    if value.ndim != 2:
        raise not_2d_error(name, value.ndim)
    if value.shape[0] == 0:
        raise empty_batch_error(name)
    if value.shape[1] == 0:
        raise empty_rows_error(name)
    array = np.asarray(value, dtype=np.float64)
    finite = np.isfinite(array)
    if not finite.all():
        row, column = (int(i) for i in np.argwhere(~finite)[0])
        raise non_finite_error(name, row, column, float(array[row, column]))
    return array


def describe(array: Array) -> tuple[int, int, str, str]:
    """Return ``(N, C, dtype, device)`` of a prepared array."""
    return int(array.shape[0]), int(array.shape[1]), "float64", "cpu"


def prediction_sums(array: Array, name: str = "logits") -> tuple[float, float, tuple[int, ...]]:
    """``(entropy_sum, confidence_sum, class_counts)`` of a prepared ``[N, C]`` array
    (``name`` is unused here: :func:`prepare` checked finiteness already).
    """
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        shifted = array - array.max(axis=1, keepdims=True)
        weights = np.exp(shifted)
        total = weights.sum(axis=1)
        terms = np.where(weights > 0.0, weights * shifted, 0.0)
    entropy = np.maximum(np.log(total) - terms.sum(axis=1) / total, 0.0)
    counts = np.bincount(array.argmax(axis=1), minlength=array.shape[1])
    return float(entropy.sum()), float((1.0 / total).sum()), tuple(int(c) for c in counts)
