"""The NumPy backend: RFC-0005 collapse metrics (and the prediction-dynamics softmax
statistics), vectorised, in float64.

Gives the pure-Python reference's numbers (to about 1e-9 relative; see
``rfcs/0007-vectorized-backends.md``) with the same conventions at the edges and the
same :class:`~geno_lewm.errors.InputError` for the same bad input, much faster: the
O(N * D) statistics are single passes of ``einsum``, and the O(N^2 * D) mean pairwise
distance comes from centred Gram blocks computed by BLAS.

The pairwise distance is computed exactly, in bounded memory:

* rows are centred on the column means first (so a large common offset cannot cancel
  away the spread) and, when their magnitude is extreme, rescaled by a power of two;
* ``|a - b|^2 = |a|^2 + |b|^2 - 2 a.b`` is evaluated one block of rows at a time against
  the rows from the block's first row on, so each unordered pair is computed once and
  no ``N x N`` matrix ever exists (one block buffer of at most
  :data:`~geno_lewm.backends.PAIRWISE_BLOCK_BYTES`);
* pairs so close that the Gram formula would lose their distance to rounding (nearly
  duplicate rows) are recomputed directly from their difference.

This module imports NumPy at import time; :mod:`geno_lewm.backends` imports it only when
the ``numpy`` backend is chosen.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
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
from geno_lewm.backends._contract import (
    FLAG_RATIO_FLOAT64,
    BatchShape,
    CollapseValues,
    PredictionSums,
    PreparedPair,
    SpectralKernels,
    pairwise_block_rows,
    prepare_each,
)

__all__ = ["NAME", "collapse_values", "describe", "prediction_sums", "prepare", "prepare_pair", "spectral"]

NAME = "numpy"

Array = npt.NDArray[np.float64]

_LOW_SQ = 2.0**-800
"""Squared norms below this may have lost precision to underflow: rescale first."""
_HIGH_SQ = 2.0**800
"""Squared norms above this are close to overflowing: rescale first."""
_FAST_ELEMENT_TYPES = frozenset({float, int})
_ROW_TYPES = frozenset({list, tuple})
_REFINE_CHUNK_BYTES = 32 * 2**20


# ------------------------------------------------------------------ conversion
def prepare(value: Any, name: str) -> Array:
    """Validate ``value`` as a 2-D batch of finite reals and return a float64 copy.

    Accepts what the pure-Python backend accepts (nested sequences of real numbers,
    NumPy arrays, tensors and other objects with ``tolist()``) and raises the same
    :class:`~geno_lewm.errors.InputError` for the same bad input: empty batch, empty or
    ragged rows, data that is not 2-D, non-real dtypes or elements, and NaN or infinite
    values (reported at the first offending row and column).

    Parameters
    ----------
    value:
        The batch. It is only read.
    name:
        The argument's name, used in error messages.

    Returns
    -------
    numpy.ndarray
        A new C-contiguous float64 ``[N, D]`` array that shares no memory with
        ``value``, so writing to it can never reach the caller's data.

    Example
    -------
    >>> prepare([[1, 2.5], [3, 4]], "prediction")
    array([[1. , 2.5],
           [3. , 4. ]])
    """
    if isinstance(value, np.ndarray):
        return _from_array(value, name)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return _from_tensor(value, name)
    if isinstance(value, (list, tuple)):
        fast = _from_float_rows(value, name)
        if fast is not None:
            return fast
    return _from_python(value, name)


def _from_python(value: Any, name: str) -> Array:
    """Validate with the reference's rules, then convert (the slow, general path)."""
    return np.array(as_python_matrix(value, name), dtype=np.float64)


def _check_finite(array: Array, name: str) -> Array:
    """Raise for the first NaN or infinity in row-major order, else return ``array``."""
    if not np.isfinite(array).all():
        row, column = (int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise non_finite_error(name, row, column, float(array[row, column]))
    return array


def _check_shape(shape: tuple[int, ...], name: str) -> None:
    if len(shape) != 2:
        raise not_2d_error(name, len(shape))
    if shape[0] == 0:
        raise empty_batch_error(name)
    if shape[1] == 0:
        raise empty_rows_error(name)


def _from_array(value: npt.NDArray[Any], name: str) -> Array:
    if value.ndim != 2:
        raise not_2d_error(name, value.ndim)
    if value.dtype.kind == "O":
        return _from_python(value, name)
    if value.dtype.kind not in "iuf":
        raise dtype_error(name, str(value.dtype))
    _check_shape(value.shape, name)
    return _check_finite(np.array(value, dtype=np.float64, order="C", copy=True), name)


def _from_tensor(value: Any, name: str) -> Array:
    import torch

    if value.ndim != 2:
        raise not_2d_error(name, value.ndim)
    if value.dtype.is_complex or value.dtype == torch.bool:
        raise dtype_error(name, str(value.dtype))
    _check_shape(tuple(value.shape), name)
    host = value.detach().to(device="cpu", dtype=torch.float64)
    return _check_finite(np.array(host.numpy(), dtype=np.float64, order="C", copy=True), name)


def _from_float_rows(rows: Sequence[Any], name: str) -> Array | None:
    """Fast path for rectangular lists of real numbers; ``None`` when the input needs
    the general path (which then raises the reference's error, if there is one).

    NumPy's own type discovery rejects strings, ``None``, complex numbers, ragged and
    deeper nesting (the array comes out with another dtype or shape), but it turns
    booleans mixed with numbers into 0 and 1, so the elements equal to 0 or 1 are
    checked one by one.
    """
    if not rows:
        raise empty_batch_error(name)
    row_types = set(map(type, rows))
    if not row_types <= _ROW_TYPES:
        return None
    try:
        array = np.array(rows)
    except (ValueError, TypeError, OverflowError):
        return None
    if array.ndim != 2 or array.shape[1] == 0 or array.dtype.kind not in "iuf":
        return None
    suspects = np.argwhere((array == 0) | (array == 1))
    if len(suspects) and not _plain_numbers(rows, suspects):
        return None
    return _check_finite(np.asarray(array, dtype=np.float64), name)


def _plain_numbers(rows: Sequence[Any], positions: npt.NDArray[np.intp]) -> bool:
    """Whether the elements at ``positions`` are Python floats or ints (not booleans)."""
    plain = _FAST_ELEMENT_TYPES
    return all(type(rows[i][j]) in plain for i, j in positions.tolist())


def describe(matrix: Array) -> BatchShape:
    """Shape, dtype and device of a prepared matrix."""
    n, d = matrix.shape
    return BatchShape(int(n), int(d), "float64", "cpu")


def prepare_pair(prediction: Any, target: Any) -> PreparedPair:
    """Both inputs of a collapse check, prediction first (the reference's error order)."""
    return prepare_each(prepare, describe, prediction, target)


def spectral() -> SpectralKernels:
    """The NumPy spectral kernels (:mod:`geno_lewm.backends._numpy_spectrum`)."""
    from geno_lewm.backends import _numpy_spectrum

    return _numpy_spectrum


# --------------------------------------------------------------------- helpers
def _row_dots(a: Array, b: Array) -> Array:
    """``sum(a * b, axis=1)`` without a temporary."""
    result: Array = np.einsum("ij,ij->i", a, b)
    return result


def _exponent(max_abs: float) -> int:
    """Power-of-two exponent ``e`` with ``max_abs * 2**-e`` in ``[0.5, 1)`` (0 for 0)."""
    return math.frexp(max_abs)[1] if max_abs else 0


def _max_abs(matrix: Array) -> float:
    return max(float(matrix.max()), -float(matrix.min()))


def _range_exponent(matrix: Array, squares: Array) -> int:
    """0 when the rows' squared norms are safely inside the float range, else the
    exponent that brings the largest magnitude to about 1.
    """
    top = float(squares.max())
    if _LOW_SQ <= top <= _HIGH_SQ:
        return 0
    return _exponent(_max_abs(matrix))


def _scaled(matrix: Array, exponent: int) -> Array:
    """``matrix * 2**-exponent`` (exact unless elements underflow); the input when 0."""
    return np.ldexp(matrix, -exponent) if exponent else matrix


def _unscale(value: float, exponent: int) -> float:
    """``value * 2**exponent``, saturating at infinity when the true result overflows."""
    try:
        return math.ldexp(value, exponent)
    except OverflowError:
        return math.inf


def _rows_normalised(rows: Array) -> tuple[Array, npt.NDArray[np.int64]]:
    """Each row scaled by a power of two so its largest magnitude lies in [0.5, 1).

    Returns the scaled rows and each row's exponent (0 for a row of zeros).
    """
    exponents = np.frexp(np.abs(rows).max(axis=1))[1].astype(np.int64)
    return np.ldexp(rows, -exponents[:, None]), exponents


# ------------------------------------------------------------------ statistics
def _mean_cosine(p: Array, t: Array, pp: Array, tt: Array) -> float:
    """Mean row cosine; rows whose squared norms are out of range are rescaled first."""
    pt = _row_dots(p, t)
    bad = (pp < _LOW_SQ) | (pp > _HIGH_SQ) | (tt < _LOW_SQ) | (tt > _HIGH_SQ)
    if bad.any():
        pp, tt, pt = pp.copy(), tt.copy(), pt.copy()
        p_rows, _ = _rows_normalised(p[bad])
        t_rows, _ = _rows_normalised(t[bad])
        pp[bad], tt[bad], pt[bad] = _row_dots(p_rows, p_rows), _row_dots(t_rows, t_rows), _row_dots(p_rows, t_rows)
    denominator = np.sqrt(pp) * np.sqrt(tt)
    zero = denominator == 0.0
    cosine = pt / np.where(zero, 1.0, denominator)
    cosine[zero] = 0.0
    np.clip(cosine, -1.0, 1.0, out=cosine)
    return float(cosine.sum()) / len(cosine)


def _mean_row_distance(p: Array, t: Array) -> float:
    """Mean ``|p_i - t_i|``, from the differences themselves.

    When a row's squared norm leaves the safe range (tiny differences, huge ones, or
    identical rows), each row is divided by a power of two near its largest magnitude and
    the norms are added back at a common exponent; a difference that overflows (values
    near the largest float, of opposite signs) is taken between the halved matrices.
    """
    n = len(p)
    difference = p - t
    squares = _row_dots(difference, difference)
    if float(squares.min()) >= _LOW_SQ and float(squares.max()) <= _HIGH_SQ:
        return float(np.sqrt(squares).sum()) / n
    halved = 0
    if not np.isfinite(difference).all():
        difference, halved = p * 0.5 - t * 0.5, 1
    rows, exponents = _rows_normalised(difference)
    top = int(exponents.max())
    total = float(np.ldexp(np.sqrt(_row_dots(rows, rows)), exponents - top).sum())
    return _unscale(total / n, top + halved)


def _shifted_mean(values: Array) -> float:
    """Mean of ``values`` summed as offsets from the first (exact for a constant vector)."""
    first = float(values[0])
    return first + float((values - first).mean())


class _Centred:
    """One matrix, rescaled into a safe range and centred on its column means.

    The means are accumulated as offsets from the first row, and the rows centred as
    ``(row - first row) - mean offset``: differences of nearby values are exact, so a
    large common level (values near 1e3 spread by 1e-3) costs no digits, and a constant
    column centres to exactly 0.

    ``exponent`` is the power of two the data was divided by and ``scaled`` the data so
    divided; ``rows`` the centred rows in that scale and ``within`` their sum of squares; ``offsets`` the column means
    minus their mean; ``gram_rows`` / ``gram_squares`` / ``gram_exponent`` the centred
    rows rescaled once more (when their own magnitude is extreme) for the Gram products.
    """

    __slots__ = ("exponent", "gram_exponent", "gram_rows", "gram_squares", "offsets", "rows", "scaled", "within")

    def __init__(self, matrix: Array, squares: Array) -> None:
        self.exponent = _range_exponent(matrix, squares)
        self.scaled = _scaled(matrix, self.exponent)
        first = self.scaled[0]
        self.rows = self.scaled - first
        shift = self.rows.mean(axis=0)
        self.rows -= shift
        row_squares = _row_dots(self.rows, self.rows)
        self.within = float(row_squares.sum())
        relative = (first - first[0]) + shift
        self.offsets = relative - _shifted_mean(relative)
        self.gram_exponent = _range_exponent(self.rows, row_squares)
        if self.gram_exponent:
            self.gram_rows = _scaled(self.rows, self.gram_exponent)
            self.gram_squares = _row_dots(self.gram_rows, self.gram_rows)
        else:
            self.gram_rows, self.gram_squares = self.rows, row_squares

    def variance(self) -> float:
        """Population variance per dimension, averaged over dimensions."""
        n, d = self.rows.shape
        mean_square = float(self.gram_squares.sum()) / (n * d)
        return _unscale(mean_square, 2 * (self.exponent + self.gram_exponent))


def _correlation(p: _Centred, t: _Centred) -> float:
    """Pearson correlation of the flattened matrices from their column-centred forms."""
    n = len(p.rows)
    ss_p = p.within + n * float(np.dot(p.offsets, p.offsets))
    ss_t = t.within + n * float(np.dot(t.offsets, t.offsets))
    if ss_p == 0.0 or ss_t == 0.0:
        return 0.0
    cross = float(np.vdot(p.rows, t.rows)) + n * float(np.dot(p.offsets, t.offsets))
    r = cross / math.sqrt(ss_p) / math.sqrt(ss_t)
    return min(1.0, max(-1.0, r))


def _exact_pair_distances(rows: Array, first: npt.NDArray[np.intp], second: npt.NDArray[np.intp]) -> float:
    """Sum of ``|rows[i] - rows[j]|`` over the given pairs, from the differences."""
    chunk = max(1, _REFINE_CHUNK_BYTES // (8 * rows.shape[1]))
    total = []
    for start in range(0, len(first), chunk):
        difference = rows[first[start : start + chunk]] - rows[second[start : start + chunk]]
        squares = _row_dots(difference, difference)
        norms = np.sqrt(squares)
        small = (squares < _LOW_SQ) & (squares > 0.0)
        if small.any():
            scaled, exponents = _rows_normalised(difference[small])
            norms[small] = np.ldexp(np.sqrt(_row_dots(scaled, scaled)), exponents)
        total.append(float(norms.sum()))
    return math.fsum(total)


def _pairwise_sum(c: _Centred) -> float:
    """Sum of distances over the unordered pairs, in the scale of ``c.gram_rows``.

    Row block ``[i0, i1)`` is multiplied with rows ``[i0, N)``: the square part holds
    each of the block's own pairs twice (it is summed and halved, its diagonal zeroed)
    and the rest each remaining pair once. Pairs whose squared distance is below
    ``FLAG_RATIO_FLOAT64 * (|a|^2 + |b|^2)`` are taken out of the Gram sum and
    recomputed from the (uncentred) rows' differences.
    """
    rows, squares = c.gram_rows, c.gram_squares
    n = len(rows)
    block = pairwise_block_rows(n, 8)
    buffer = np.empty(block * n)
    total = []
    for i0 in range(0, n - 1, block):
        i1 = min(n, i0 + block)
        b, m = i1 - i0, n - i0
        d2 = buffer[: b * m].reshape(b, m)
        if b == m:  # the last (or only) block is square: a symmetric product, half the work
            np.matmul(rows[i0:], rows[i0:].T, out=d2)
            d2 *= -2.0
        else:
            np.matmul(rows[i0:i1] * -2.0, rows[i0:].T, out=d2)
        d2 += squares[i0:i1, None]
        d2 += squares[None, i0:]
        diagonal = d2.reshape(-1)[: b * (m + 1) : m + 1]
        diagonal[:] = np.inf
        bound = FLAG_RATIO_FLOAT64 * (float(squares[i0:i1].max()) + float(squares[i0:].max()))
        exact = 0.0
        if float(d2.min()) < bound:
            exact = _take_out_close_pairs(c, d2, i0)
        diagonal[:] = 0.0
        np.sqrt(d2, out=d2)
        total.append(float(d2[:, b:].sum()) + float(d2[:, :b].sum()) / 2.0 + exact)
    return math.fsum(total)


def _take_out_close_pairs(c: _Centred, d2: Array, i0: int) -> float:
    """Zero the Gram entries of the block's close pairs (and their mirror images in the
    square part), clamp the rest at 0, and return the close pairs' exact distance sum,
    in the Gram scale. Works through the block a few rows at a time, so that the
    comparison and the pairs' indices stay within the memory bound.
    """
    squares = c.gram_squares
    b, m = d2.shape
    step = max(1, _REFINE_CHUNK_BYTES // (16 * m))
    exact = []
    for r0 in range(0, b, step):
        r1 = min(b, r0 + step)
        close = d2[r0:r1] < FLAG_RATIO_FLOAT64 * (squares[i0 + r0 : i0 + r1, None] + squares[None, i0:])
        first, second = np.nonzero(close)
        first += r0
        upper = second > first
        first, second = first[upper], second[upper]
        d2[first, second] = 0.0
        mirrored = second < b
        d2[second[mirrored], first[mirrored]] = 0.0
        exact.append(_exact_pair_distances(c.scaled, first + i0, second + i0))
    np.maximum(d2, 0.0, out=d2)
    return _unscale(math.fsum(exact), -c.gram_exponent)


def _mean_pairwise_distance(c: _Centred) -> float:
    """Mean Euclidean distance over the N(N-1)/2 unordered pairs of rows (0 for one row)."""
    n = len(c.rows)
    if n < 2:
        return 0.0
    mean = _pairwise_sum(c) / (n * (n - 1) // 2)
    return _unscale(mean, c.exponent + c.gram_exponent)


# ---------------------------------------------------------------------- kernel
def collapse_values(prediction: Array, target: Array) -> CollapseValues:
    """The six batch statistics of RFC-0005 §3.6, in ``CollapseMetrics`` order.

    Returns ``(pred_cos_mean, pred_l2_mean, target_var_per_dim, pred_var_per_dim,
    pred_target_corr, pairwise_pred_dist_mean)`` for two prepared matrices of equal
    shape. The inputs are only read.
    """
    with np.errstate(over="ignore", under="ignore"):  # both are detected and handled by rescaling
        pp = _row_dots(prediction, prediction)
        tt = _row_dots(target, target)
        cos_mean = _mean_cosine(prediction, target, pp, tt)
        l2_mean = _mean_row_distance(prediction, target)
        p = _Centred(prediction, pp)
        t = _Centred(target, tt)
        return CollapseValues(
            cos_mean, l2_mean, t.variance(), p.variance(), _correlation(p, t), _mean_pairwise_distance(p)
        )


# ------------------------------------------------------------ prediction dynamics
def prediction_sums(array: Array) -> PredictionSums:
    """Softmax statistics of prepared logits ``[N, C]``: the reference's definitions and
    edge conventions (log-sum-exp shift, ``0 log 0 = 0``, first argmax on ties), in float64.
    """
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        shifted = array - array.max(axis=1, keepdims=True)
        weights = np.exp(shifted)
        total = weights.sum(axis=1)
        # Terms whose weight underflowed to 0 are dropped: 0 * (-inf) would otherwise be NaN.
        terms = np.where(weights > 0.0, weights * shifted, 0.0)
    entropy = np.maximum(np.log(total) - terms.sum(axis=1) / total, 0.0)
    counts = np.bincount(array.argmax(axis=1), minlength=array.shape[1])
    return PredictionSums(float(entropy.sum()), float((1.0 / total).sum()), tuple(int(c) for c in counts))
