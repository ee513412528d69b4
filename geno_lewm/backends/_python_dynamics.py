"""The reference kernel for prediction dynamics: softmax statistics of logits, stdlib only.

For each row ``z`` of an ``[N, C]`` batch of logits the softmax is computed from the
shifted row ``s = z - max(z)`` (log-sum-exp), so that no exponential ever overflows:

* ``S = sum(exp(s))`` lies in ``[1, C]``;
* the confidence (largest probability) is ``1 / S``;
* the entropy is ``log(S) - sum(p * s)`` with ``p = exp(s) / S``; a class whose
  probability underflows to 0 contributes exactly 0 (``0 log 0 = 0``), even when its
  shifted logit is ``-inf`` because the row spans more than the float range.

Sums over rows are compensated (``math.fsum``). The NumPy and torch kernels compute the
same sums and are tested against this one. Validation and conversion (``prepare``,
``describe``) are those of the collapse backend of the same name, so bad logits get the
same errors as a bad collapse batch.

Example
-------
>>> entropy_sum, confidence_sum, counts = prediction_sums(prepare([[0.0, 0.0], [5.0, 5.0]], "logits"))
>>> round(entropy_sum, 12) == round(2 * math.log(2), 12), confidence_sum, counts
(True, 1.0, (2, 0))
"""

from __future__ import annotations

import math

from geno_lewm._inputs import Matrix
from geno_lewm.backends._python import describe, prepare

__all__ = ["NAME", "describe", "prediction_sums", "prepare", "row_statistics"]

NAME = "python"


def row_statistics(row: tuple[float, ...]) -> tuple[float, float, int]:
    """Entropy (nats), largest probability and argmax (first on ties) of one row's softmax."""
    top = max(row)
    shifted = [z - top for z in row]
    weights = [math.exp(s) for s in shifted]
    total = math.fsum(weights)
    # Terms whose weight underflowed to 0 are dropped: 0 * (-inf) would otherwise be NaN.
    expected_shift = math.fsum(w * s for w, s in zip(weights, shifted) if w > 0.0) / total
    entropy = max(0.0, math.log(total) - expected_shift)
    return entropy, 1.0 / total, row.index(top)


def prediction_sums(matrix: Matrix) -> tuple[float, float, tuple[int, ...]]:
    """Sufficient statistics of a validated ``[N, C]`` batch.

    Returns ``(entropy_sum, confidence_sum, class_counts)``: the per-row entropies and
    largest probabilities summed over the rows, and how many rows have their argmax in
    each class.
    """
    counts = [0] * len(matrix[0])
    entropies = []
    confidences = []
    for row in matrix:
        entropy, confidence, winner = row_statistics(row)
        entropies.append(entropy)
        confidences.append(confidence)
        counts[winner] += 1
    return math.fsum(entropies), math.fsum(confidences), tuple(counts)
