"""The reference backend: RFC-0005 collapse metrics (and the prediction-dynamics softmax
statistics) in the standard library only.

Every other backend is tested against this one, so it favours accuracy over speed
where the two conflict; it is still fast enough for the RFC's 256 x 1024 validation
batch because all inner loops run in C (``math.fsum``, ``math.dist``, ``math.hypot``,
``map`` over ``operator`` functions, ``zip(*rows)``).

Accuracy measures, each described in RFC-0005:

* sums are compensated (``math.fsum``) and norms and distances use the correctly
  scaled ``math.hypot`` / ``math.dist``;
* variances and the correlation are computed from rows centred on the column means
  (two-pass), so a large common offset does not cancel away the signal; means are summed
  as offsets from a column's first element (exact for a constant column, whose variance
  is then exactly 0), and the corrected two-pass formula removes the rounding of the
  means where it could show;
* scaling is by exact powers of two, in two stages: before centring only as far as
  overflow of differences requires, after centring by the deviations' own size before
  anything is squared; so finite inputs as large as 1e300 (or as small as subnormals),
  and columns of wildly different magnitudes side by side, give correct answers
  wherever the answer itself is representable.
"""

from __future__ import annotations

import math
from itertools import repeat
from operator import mul, sub
from typing import Any

from geno_lewm._inputs import Matrix, as_python_matrix
from geno_lewm.backends._contract import (
    BatchShape,
    CollapseValues,
    PredictionSums,
    PreparedPair,
    SpectralKernels,
    prepare_each,
)

__all__ = [
    "NAME",
    "collapse_values",
    "describe",
    "prediction_sums",
    "prepare",
    "prepare_pair",
    "row_statistics",
    "spectral",
]

NAME = "python"

_SAFE_MIN = 2.0**-400
_SAFE_MAX = 2.0**400
_DIFF_MAX = 2.0**1000
_NEGLIGIBLE = 2.0**-60


def prepare(value: Any, name: str) -> Matrix:
    """Validate and convert ``value`` for this backend (see :func:`as_python_matrix`)."""
    return as_python_matrix(value, name)


def describe(matrix: Matrix) -> BatchShape:
    """Shape, dtype and device of a prepared matrix."""
    return BatchShape(len(matrix), len(matrix[0]), "float64", "cpu")


def prepare_pair(prediction: Any, target: Any) -> PreparedPair:
    """Both inputs of a collapse check, prediction first (the reference's error order)."""
    return prepare_each(prepare, describe, prediction, target)


def spectral() -> SpectralKernels:
    """The reference spectral kernels (:mod:`geno_lewm.backends._python_spectrum`)."""
    from geno_lewm.backends import _python_spectrum

    return _python_spectrum


# --------------------------------------------------------------------- helpers
def _row_norms(matrix: Matrix) -> list[float]:
    """Euclidean norm of each row; a norm too large for a float is replaced by the
    row's largest magnitude, which is all the scaling decisions below need.
    """
    norms = [math.hypot(*row) for row in matrix]
    for i, norm in enumerate(norms):
        if norm == math.inf:
            row = matrix[i]
            norms[i] = max(map(abs, row))
    return norms


def _exponent(max_abs: float, low: float = _SAFE_MIN, high: float = _SAFE_MAX) -> int:
    """Power-of-two exponent that brings ``max_abs`` into range, or 0 when it already is."""
    if max_abs == 0.0 or low <= max_abs <= high:
        return 0
    return math.frexp(max_abs)[1]


def _guard_exponent(size: float, count: int) -> int:
    """The power-of-two exponent to scale a matrix by before centring it.

    Positive only as far as needed to keep differences of elements, and sums of
    ``count`` of them, finite (a few bits, and only for magnitudes near the top of the
    float range); negative to lift a matrix that lies wholly below ``2**-400`` to unit
    size (exact). Scaling further down would push small columns beside a huge one into
    underflow; the squares are protected separately (see :class:`_Centred`).
    """
    if size == 0.0:
        return 0
    exponent = math.frexp(size)[1]
    if size < _SAFE_MIN:
        return exponent
    return max(0, exponent + (4 * count).bit_length() - 1022)


def _scaled(matrix: Matrix, exponent: int) -> Matrix:
    """Multiply every element by ``2**-exponent`` (exact unless it underflows).

    ``ldexp`` per element rather than a product with ``2.0**-exponent``: for subnormal
    inputs the exponent can exceed 1023, and that factor would not be representable.
    """
    if exponent == 0:
        return matrix
    shift = repeat(-exponent)
    ldexp = math.ldexp
    return tuple(tuple(map(ldexp, row, shift)) for row in matrix)


def _unscale(value: float, exponent: int) -> float:
    """``value * 2**exponent``, saturating at infinity when the true result overflows."""
    try:
        return math.ldexp(value, exponent)
    except OverflowError:
        return math.inf


def _shifted_mean(values: tuple[float, ...]) -> float:
    """Mean of ``values``, summed as offsets from the first one.

    Exact for a constant sequence (the offsets are all zero), which keeps the variance of
    a constant column at exactly 0; offsets between nearby values are exact, so a large
    common level does not cost digits either.
    """
    first = values[0]
    return first + math.fsum(map(sub, values, repeat(first))) / len(values)


def _cosine(p: tuple[float, ...], t: tuple[float, ...], norm_p: float, norm_t: float) -> float:
    """Cosine of two rows of known norms; 0 when either norm is zero."""
    if norm_p == 0.0 or norm_t == 0.0:
        return 0.0
    cosine = math.fsum(map(mul, p, t)) / norm_p / norm_t
    return min(1.0, max(-1.0, cosine))


def _cosine_scaled(p: tuple[float, ...], t: tuple[float, ...], p_size: float, t_size: float) -> float:
    """:func:`_cosine` for rows of extreme magnitude: each row rescaled to norm ~1 first."""
    (row_p,) = _scaled((p,), _exponent(p_size, 1.0, 1.0))
    (row_t,) = _scaled((t,), _exponent(t_size, 1.0, 1.0))
    return _cosine(row_p, row_t, math.hypot(*row_p), math.hypot(*row_t))


# ------------------------------------------------------------------ statistics
def _mean_cosine(prediction: Matrix, target: Matrix, p_norms: list[float], t_norms: list[float]) -> float:
    total = []
    for p, t, p_norm, t_norm in zip(prediction, target, p_norms, t_norms):
        if (p_norm == 0.0 or _SAFE_MIN <= p_norm <= _SAFE_MAX) and (t_norm == 0.0 or _SAFE_MIN <= t_norm <= _SAFE_MAX):
            total.append(_cosine(p, t, p_norm, t_norm))
        else:
            total.append(_cosine_scaled(p, t, p_norm, t_norm))
    return math.fsum(total) / len(prediction)


def _mean_row_distance(prediction: Matrix, target: Matrix, largest: float) -> float:
    exponent = _exponent(largest, 0.0, _DIFF_MAX)
    p, t = _scaled(prediction, exponent), _scaled(target, exponent)
    return _unscale(math.fsum(map(math.dist, p, t)) / len(p), exponent)


def _mean_pairwise_distance(prediction: Matrix) -> float:
    """Mean Euclidean distance over the N(N-1)/2 unordered pairs of rows (0 for one row)."""
    n = len(prediction)
    if n < 2:
        return 0.0
    dist = math.dist
    per_row = [math.fsum(map(dist, repeat(row), prediction[i + 1 :])) for i, row in enumerate(prediction[:-1])]
    return math.fsum(per_row) / (n * (n - 1) // 2)


class _Centred:
    """A matrix centred on its column means, with the sums the metrics need.

    ``rows`` are the centred rows; ``column_means`` the means; ``within`` the sum of
    squared deviations from the column means (N times the summed per-dimension
    variances); ``offsets`` each column mean minus the mean of all elements, and
    ``between`` ``N * sum(offsets**2)``, so that ``within + between`` is the flattened
    matrix's sum of squared deviations.

    Deviations are squared only after a second power-of-two rescaling chosen from their
    own size: ``rows`` and ``within`` are in units of ``2**rows_exponent`` (squared for
    ``within``), ``offsets`` and ``between`` in units of ``2**offsets_exponent``. Without
    it, a column of 1e300 beside a column of 1 (rescaled together to avoid overflow)
    would square the small column's deviations into underflow and lose its variance.

    The offsets are not differences of the rounded means: each column's mean is kept as
    ``(first element - anchor) + mean shift`` relative to one anchor element, so that a
    large common level (means of 1e3 differing by 1e-4) does not round their spread away.

    A rounded mean is off by up to half a unit in its last place, which inflates the sum
    of squares by ``N * error**2``. Where that could matter (a spread within a few
    million units in the last place of the mean), ``sums`` holds each centred column's
    sum and ``within`` is corrected by ``sum(sums**2) / N``, the corrected two-pass
    formula; otherwise ``sums`` is ``None``.
    """

    __slots__ = ("between", "column_means", "offsets", "offsets_exponent", "rows", "rows_exponent", "sums", "within")

    def __init__(self, matrix: Matrix) -> None:
        n = len(matrix)
        anchor = matrix[0][0]
        means = []
        relative = []
        for column in zip(*matrix):
            first = column[0]
            shift = math.fsum(map(sub, column, repeat(first))) / n
            means.append(first + shift)
            relative.append((first - anchor) + shift)
        self.column_means = tuple(means)
        rows = tuple(tuple(map(sub, row, self.column_means)) for row in matrix)
        norms = [math.hypot(*row) for row in rows]
        self.rows_exponent = _exponent(max(norms))
        if self.rows_exponent:
            rows = _scaled(rows, self.rows_exponent)
            norms = [math.hypot(*row) for row in rows]
        self.rows = rows
        # Squares summed exactly (fsum of the products), not hypot(row)**2: squaring a
        # rounded square root costs the last bit (a variance of exactly 1 came out 1 + 2ulp).
        within = math.fsum(math.fsum(map(mul, row, row)) for row in rows)
        self.sums: tuple[float, ...] | None = None
        ulps = tuple(map(math.ulp, self.column_means))
        if n * math.fsum(map(mul, ulps, ulps)) > _unscale(within, 2 * self.rows_exponent) * _NEGLIGIBLE:
            self.sums = self.column_sums()
            within = max(0.0, within - math.fsum(map(mul, self.sums, self.sums)) / n)
        self.within = within
        centre = _shifted_mean(tuple(relative))
        offsets = tuple(map(sub, relative, repeat(centre)))
        self.offsets_exponent = _exponent(max(map(abs, offsets)))
        (self.offsets,) = _scaled((offsets,), self.offsets_exponent)
        self.between = n * math.fsum(map(mul, self.offsets, self.offsets))

    def column_sums(self) -> tuple[float, ...]:
        """Sum of each centred column (in units of ``2**rows_exponent``): 0 up to the
        rounding of the column's mean.
        """
        if self.sums is not None:
            return self.sums
        return tuple(map(math.fsum, zip(*self.rows)))

    @property
    def exponent(self) -> int:
        """The larger of the two scale exponents: the unit :meth:`sum_of_squares` uses."""
        return max(self.rows_exponent, self.offsets_exponent)

    def sum_of_squares(self) -> float:
        """``within + between`` in units of ``2**(2 * exponent)`` (only ever scaled down,
        so the smaller term may underflow only where it is negligible).
        """
        unit = self.exponent
        return math.ldexp(self.within, 2 * (self.rows_exponent - unit)) + math.ldexp(
            self.between, 2 * (self.offsets_exponent - unit)
        )


def _correlation(p: _Centred, t: _Centred, n: int) -> float:
    """Pearson correlation of the flattened matrices from their column-centred forms."""
    ss_p = p.sum_of_squares()
    ss_t = t.sum_of_squares()
    if ss_p == 0.0 or ss_t == 0.0:
        return 0.0
    within = math.fsum(math.fsum(map(mul, a, b)) for a, b in zip(p.rows, t.rows))
    if p.sums is not None or t.sums is not None:
        within -= math.fsum(map(mul, p.column_sums(), t.column_sums())) / n
    between = n * math.fsum(map(mul, p.offsets, t.offsets))
    unit = p.exponent + t.exponent
    cross = math.ldexp(within, p.rows_exponent + t.rows_exponent - unit) + math.ldexp(
        between, p.offsets_exponent + t.offsets_exponent - unit
    )
    r = cross / math.sqrt(ss_p) / math.sqrt(ss_t)
    return min(1.0, max(-1.0, r))


# ---------------------------------------------------------------------- kernel
def collapse_values(prediction: Matrix, target: Matrix) -> CollapseValues:
    """The six batch statistics of RFC-0005 §3.6, in ``CollapseMetrics`` order.

    Returns ``(pred_cos_mean, pred_l2_mean, target_var_per_dim, pred_var_per_dim,
    pred_target_corr, pairwise_pred_dist_mean)`` for two validated matrices of equal shape.
    """
    n, d = len(prediction), len(prediction[0])
    p_norms, t_norms = _row_norms(prediction), _row_norms(target)
    p_size, t_size = max(p_norms), max(t_norms)

    cos_mean = _mean_cosine(prediction, target, p_norms, t_norms)
    l2_mean = _mean_row_distance(prediction, target, max(p_size, t_size))

    p_exp, t_exp = _guard_exponent(p_size, n), _guard_exponent(t_size, n)
    p_centred = _Centred(_scaled(prediction, p_exp))
    t_centred = _Centred(_scaled(target, t_exp))
    p_unit = p_exp + p_centred.rows_exponent
    pred_var = _unscale(p_centred.within / (n * d), 2 * p_unit)
    target_var = _unscale(t_centred.within / (n * d), 2 * (t_exp + t_centred.rows_exponent))
    corr = _correlation(p_centred, t_centred, n)
    # Distances do not change under translation: the centred rows, already scaled to
    # unit size, keep a huge constant column from drowning the others.
    pairwise = _unscale(_mean_pairwise_distance(p_centred.rows), p_unit)
    return CollapseValues(cos_mean, l2_mean, target_var, pred_var, corr, pairwise)


# ------------------------------------------------------------ prediction dynamics
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


def prediction_sums(matrix: Matrix) -> PredictionSums:
    """Sufficient statistics of a validated ``[N, C]`` batch of logits: the per-row
    entropies and largest probabilities summed over the rows, and how many rows have
    their argmax in each class.

    The softmax of each row ``z`` comes from the shifted row ``s = z - max(z)``
    (log-sum-exp), so no exponential overflows: ``S = sum(exp(s))`` lies in ``[1, C]``, the
    confidence is ``1 / S`` and the entropy ``log(S) - sum(p * s)`` with ``p = exp(s) / S``;
    a class whose probability underflows to 0 contributes exactly 0 (``0 log 0 = 0``),
    even when its shifted logit is ``-inf`` because the row spans more than the float
    range. Sums over rows are compensated (``math.fsum``).

    Example
    -------
    >>> sums = prediction_sums(prepare([[0.0, 0.0], [5.0, 5.0]], "logits"))
    >>> round(sums.entropy_sum, 12) == round(2 * math.log(2), 12), sums.confidence_sum, sums.class_counts
    (True, 1.0, (2, 0))
    """
    counts = [0] * len(matrix[0])
    entropies = []
    confidences = []
    for row in matrix:
        entropy, confidence, winner = row_statistics(row)
        entropies.append(entropy)
        confidences.append(confidence)
        counts[winner] += 1
    return PredictionSums(math.fsum(entropies), math.fsum(confidences), tuple(counts))
