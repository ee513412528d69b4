"""The NumPy kernel for prediction dynamics: the reference's softmax statistics, vectorised.

Same definitions and edge conventions as :mod:`geno_lewm.backends._python_dynamics`
(log-sum-exp shift, ``0 log 0 = 0``, first argmax on ties), computed in float64.
Validation and conversion (``prepare``, ``describe``) are the NumPy collapse backend's.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from geno_lewm.backends._numpy import describe, prepare

__all__ = ["NAME", "describe", "prediction_sums", "prepare"]

NAME = "numpy"


def prediction_sums(array: npt.NDArray[np.float64]) -> tuple[float, float, tuple[int, ...]]:
    """``(entropy_sum, confidence_sum, class_counts)`` of a prepared ``[N, C]`` array."""
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        shifted = array - array.max(axis=1, keepdims=True)
        weights = np.exp(shifted)
        total = weights.sum(axis=1)
        # Terms whose weight underflowed to 0 are dropped: 0 * (-inf) would otherwise be NaN.
        terms = np.where(weights > 0.0, weights * shifted, 0.0)
    entropy = np.maximum(np.log(total) - terms.sum(axis=1) / total, 0.0)
    counts = np.bincount(array.argmax(axis=1), minlength=array.shape[1])
    return float(entropy.sum()), float((1.0 / total).sum()), tuple(int(c) for c in counts)
