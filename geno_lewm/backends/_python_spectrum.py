"""The reference spectral kernels: dimensional-collapse metrics, Gaussian KL and SIGReg
in the standard library only.

Definitions are in ``rfcs/0008-dimensional-collapse.md`` and
:mod:`geno_lewm.training.spectrum`; this module is the reference the NumPy and torch
kernels are tested against, and holds the conventions they share (the numerical floor,
the SIGReg quadrature and directions).

How the spectrum of an ``[N, D]`` batch is computed, and why:

1. Scale by an exact power of two so that the largest magnitude lies in ``[0.5, 1)``:
   the metrics are scale-invariant, and finite inputs as large as 1e300 or as small as
   1e-300 then neither overflow nor underflow.
2. Centre each column on its mean (a column whose values are all equal is centred on
   that value, exactly, so a batch of identical rows is exactly zero after centring).
3. Scale the centred batch again by a power of two, then form the Gram matrix on the
   smaller side: ``Xc Xc^T`` (``N x N``) when ``N <= D``, else ``Xc^T Xc`` (``D x D``).
   Both have the same non-zero eigenvalues, ``N`` times those of the covariance.
4. Eigenvalues by :func:`geno_lewm._linalg.symmetric_eigenvalues`; values at or below the
   numerical floor (:func:`eigenvalue_floor`) are rounding noise and count as zero.

Cost, with ``g = min(N, D)`` and ``h = max(N, D)``: ``g**2 h / 2`` multiply-adds for the
Gram matrix and ``4/3 g**3`` for the eigenvalues. At the RFC's ``256 x 1024`` batch that is
about one second of CPython in all.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from functools import lru_cache, reduce
from itertools import chain, repeat
from operator import add, mul, sub, truediv
from typing import Any

from geno_lewm._inputs import Matrix
from geno_lewm._linalg import cholesky_log_det, dot, symmetric_eigenvalues
from geno_lewm.backends._contract import GaussianKLTerms, SpectralValues

__all__ = [
    "NAME",
    "ORDERED_NORM",
    "covariance_eigenvalues",
    "eigenvalue_floor",
    "gaussian_kl_from_terms",
    "gaussian_kl_terms",
    "gaussian_kl_value",
    "ordered_dot",
    "sigreg_directions",
    "sigreg_quadrature",
    "sigreg_result",
    "sigreg_value",
    "spectral_values",
]

NAME = "python"

FLOAT64_EPS = 2.0**-52
CENTRING_NOISE_ULPS = 4.0
"""Rounding error of centring, in units of the working precision times the batch's
largest magnitude: differences of the rows smaller than this are not data."""

_SAFE_LOW = 2.0**-500
_SAFE_HIGH = 2.0**500


# ----------------------------------------------------------------- conventions
def eigenvalue_floor(largest: float, n: int, d: int, unit: float, eps: float = FLOAT64_EPS) -> float:
    """The value at or below which a Gram eigenvalue is rounding noise.

    Parameters
    ----------
    largest:
        The largest computed eigenvalue of the (scaled) Gram matrix.
    n, d:
        The batch's shape.
    unit:
        An upper bound of the batch's largest magnitude (before centring), in the units
        of the Gram matrix's vectors.
    eps:
        Unit roundoff of the working precision (float64 unless the device lacks it).

    Returns
    -------
    float
        ``max(max(n, d) * eps * largest, n * d * (4 * eps * unit)**2)``: the first
        term is the eigen-solver's and the Gram product's rounding (relative to the
        largest eigenvalue, as in ``numpy.linalg.matrix_rank``); the second bounds the
        squared spectral norm of the centring's rounding error.
    """
    relative = max(n, d) * eps * largest
    noise = CENTRING_NOISE_ULPS * eps * unit
    centring = n * d * noise * noise
    return max(relative, centring)


# ------------------------------------------------------------------- helpers
def _exponent(value: float) -> int:
    """``e`` with ``value * 2**-e`` in ``[0.5, 1)``; 0 for 0."""
    return math.frexp(value)[1] if value else 0


def _scale(values: tuple[float, ...] | list[float], exponent: int) -> tuple[float, ...]:
    if exponent == 0:
        return tuple(values)
    return tuple(map(math.ldexp, values, repeat(-exponent)))  # exact, even from subnormals up


def _square(value: float) -> float:
    """``value * value``: unlike ``value ** 2`` it saturates at infinity instead of raising."""
    return value * value


def _ldexp_saturating(value: float, exponent: int) -> float:
    try:
        return math.ldexp(value, exponent)
    except OverflowError:
        return math.inf


class _Centred:
    """A batch scaled to magnitudes below 1, centred, and scaled again.

    ``columns`` are the centred columns scaled by ``2**-e1`` (max magnitude in
    ``[0.5, 1)`` unless all are zero), ``means`` the column means in units of
    ``2**e0``, ``e0`` and ``e1`` the exponents of the two scalings.
    """

    __slots__ = ("columns", "d", "e0", "e1", "means", "n", "zero")

    def __init__(self, matrix: Matrix) -> None:
        self.n, self.d = len(matrix), len(matrix[0])
        self.e0 = _exponent(max(max(map(abs, row)) for row in matrix))
        columns = [_scale(column, self.e0) for column in zip(*matrix)]
        means: list[float] = []
        centred: list[tuple[float, ...]] = []
        for column in columns:
            low, high = min(column), max(column)
            if low == high:
                means.append(low)
                centred.append((0.0,) * self.n)
                continue
            mean = math.fsum(column) / self.n
            means.append(mean)
            centred.append(tuple(map(sub, column, repeat(mean))))
        self.means = means
        largest = max(max(map(abs, column)) for column in centred)
        self.zero = largest == 0.0
        self.e1 = _exponent(largest)
        self.columns = [_scale(column, self.e1) for column in centred]


def _gram(centred: _Centred) -> list[list[float]]:
    """The Gram matrix on the smaller side of the centred, scaled batch."""
    vectors: list[tuple[float, ...]]
    vectors = list(zip(*centred.columns)) if centred.n <= centred.d else centred.columns
    size = len(vectors)
    gram = [[0.0] * size for _ in range(size)]
    for i, vi in enumerate(vectors):
        row = gram[i]
        for j in range(i + 1):
            value = dot(vi, vectors[j])
            row[j] = value
            gram[j][i] = value
    return gram


def _kept_eigenvalues(centred: _Centred) -> tuple[list[float], float]:
    """Descending Gram eigenvalues above the floor (``[]`` for an all-zero centred batch)
    and the Gram trace, both in scaled units.
    """
    if centred.zero:
        return [], 0.0
    gram = _gram(centred)
    trace = math.fsum(gram[i][i] for i in range(len(gram)))
    eigenvalues = symmetric_eigenvalues(gram)
    largest = eigenvalues[-1] if eigenvalues else 0.0
    floor = eigenvalue_floor(largest, centred.n, centred.d, math.ldexp(1.0, -centred.e1))
    return sorted((x for x in eigenvalues if x > floor), reverse=True), trace


def _normalized_std(matrix: Matrix) -> float:
    """Mean over dimensions of the population std of the L2-normalised rows; a row of
    zeros stays a row of zeros, and a dimension with one value throughout has std 0.
    """
    n, d = len(matrix), len(matrix[0])
    units: list[tuple[float, ...]] = []
    for row in matrix:
        peak = max(map(abs, row))
        if peak == 0.0:
            units.append((0.0,) * d)
            continue
        # rows far from 1 in magnitude are first scaled by a power of two (exactly), so
        # that the norm neither overflows nor loses bits to subnormal rounding
        scaled = row if _SAFE_LOW <= peak <= _SAFE_HIGH else _scale(row, _exponent(peak))
        units.append(tuple(map(truediv, scaled, repeat(math.hypot(*scaled)))))
    root_n = math.sqrt(n)
    stds = []
    for column in zip(*units):
        if min(column) == max(column):
            stds.append(0.0)
            continue
        mean = math.fsum(column) / n
        stds.append(math.hypot(*map(sub, column, repeat(mean))) / root_n)
    return math.fsum(stds) / d


# -------------------------------------------------------------------- kernels
def covariance_eigenvalues(matrix: Matrix) -> list[float]:
    """The eigenvalues of the batch's population covariance above the numerical floor,
    descending (at most ``min(N, D)`` values; the rest are zero).
    """
    centred = _Centred(matrix)
    kept, _ = _kept_eigenvalues(centred)
    shift = 2 * (centred.e0 + centred.e1)
    return [_ldexp_saturating(x / centred.n, shift) for x in kept]


def spectral_values(matrix: Matrix, top_k: int) -> SpectralValues:
    """The spectral metrics of a validated batch, in :data:`SpectralValues` order.

    ``effective_rank`` is ``exp`` of the Shannon entropy of the normalised singular values
    of the centred batch (0 when every row is the same); ``top_k_share`` the share of the
    variance in the ``top_k`` largest directions (1 when there is no variance);
    ``normalized_std`` the mean per-dimension population std of the L2-normalised rows;
    ``numerical_rank`` the number of eigenvalues above the floor; ``total_variance`` the
    trace of the population covariance; ``spread_share`` that trace over the mean squared
    row norm (0 when every row is the same, 1 for a centred batch).
    """
    centred = _Centred(matrix)
    kept, trace = _kept_eigenvalues(centred)
    normalized_std = _normalized_std(matrix)
    if not kept:
        return SpectralValues(0.0, 1.0, normalized_std, 0, 0.0, 0.0)
    singular = [math.sqrt(x) for x in kept]
    total_singular = math.fsum(singular)
    probabilities = [s / total_singular for s in singular]
    entropy = -math.fsum(p * math.log(p) for p in probabilities if p > 0.0)
    effective_rank = math.exp(entropy)
    top_k_share = min(1.0, math.fsum(kept[:top_k]) / math.fsum(kept))
    n = centred.n
    total_variance = _ldexp_saturating(trace / n, 2 * (centred.e0 + centred.e1))
    spread = _ldexp_saturating(trace / n, 2 * centred.e1)  # units of the first scaling: <= 1
    mean_square = math.fsum(m * m for m in centred.means)
    spread_share = spread / (spread + mean_square) if spread > 0.0 else 0.0
    return SpectralValues(effective_rank, top_k_share, normalized_std, len(kept), total_variance, spread_share)


def _scaled_sum_of_squares(values: list[float] | tuple[float, ...]) -> tuple[float, int]:
    """``(s, e)`` with ``sum(v**2 for v in values) = s * 2**(2 e)`` and ``s`` exactly summed
    from values scaled by ``2**-e`` (largest magnitude in ``[0.5, 1)``), so that ``s`` can
    neither overflow nor lose terms to underflow; the caller scales back once. ``(inf, 0)``
    when a value is infinite.
    """
    peak = max(map(abs, values))
    if peak == math.inf:
        return math.inf, 0
    exponent = _exponent(peak)
    return math.fsum(map(_square, _scale(values, exponent))), exponent


def _kl_centred(matrix: Matrix) -> tuple[list[tuple[float, ...]], list[float], int, bool]:
    """The centred columns (scaled by ``2**-e``), the column means, ``e``, and whether every
    centred value is exactly 0 (all rows identical).

    Each column is centred on its first entry, then on the mean of those offsets: a
    difference of two floats within a factor of two of each other is exact, so a common
    offset, however large, cannot round a small spread away (the mean of a column at 1e50
    is itself off by up to an ulp of 1e50), and a column whose entries are all equal
    centres to exactly 0 (its mean is its value, exactly). The centred values are then
    scaled by a power of two so that their products neither overflow nor underflow.
    """
    n = len(matrix)
    columns: list[tuple[float, ...]] = []
    means: list[float] = []
    for column in zip(*matrix):
        offsets = tuple(map(sub, column, repeat(column[0])))
        shift = math.fsum(offsets) / n
        means.append(column[0] + shift)
        columns.append(tuple(map(sub, offsets, repeat(shift))) if shift else offsets)
    peak = max(max(map(abs, column)) for column in columns)
    exponent = _exponent(peak)
    return [_scale(column, exponent) for column in columns], means, exponent, peak == 0.0


def gaussian_kl_terms(matrix: Matrix, eps: float) -> GaussianKLTerms:
    """``(mean_sq_norm, trace, log_det, method)`` of a validated batch, for the Gaussian KL.

    ``mean_sq_norm`` is ``||mu||^2``, ``trace`` is ``tr(Sigma)`` and ``log_det`` is
    ``log det(Sigma + eps I_D)`` for the batch mean ``mu`` and population covariance
    ``Sigma``. When ``N <= D`` the determinant is taken on the ``N x N`` side by
    Sylvester's identity, ``det(eps I_D + Xc^T Xc / N) = eps**(D - N) det(eps I_N + Xc Xc^T / N)``;
    ``method`` says whether the Cholesky factorisation was used or, when it failed or
    could not be trusted, the eigenvalues.

    The batch is centred exactly where it can be (:func:`_kl_centred`): identical rows,
    at any level, give ``trace = 0`` and ``log_det = D log(eps)`` exactly, and a small
    spread around a large common offset keeps its digits.
    """
    n, d = len(matrix), len(matrix[0])
    norms = [math.hypot(*row) for row in matrix]  # inf only when a row's norm overflows
    total, exponent = _scaled_sum_of_squares(norms)
    if _ldexp_saturating(total / n, 2 * exponent) == math.inf:
        # ||mu||^2 + tr(Sigma) is the mean squared row norm: too large for a float.
        return GaussianKLTerms(math.inf, math.inf, math.inf, "overflow")
    columns, means, exponent, zero = _kl_centred(matrix)
    total, mean_exponent = _scaled_sum_of_squares(means)
    mean_sq_norm = _ldexp_saturating(total, 2 * mean_exponent)  # <= the finite mean squared row norm
    if zero:
        return GaussianKLTerms(mean_sq_norm, 0.0, d * math.log(eps), "cholesky")
    vectors: list[tuple[float, ...]] = list(zip(*columns)) if n <= d else columns
    size = len(vectors)
    inverse_n = 1.0 / n
    gram = [[0.0] * size for _ in range(size)]
    for i, vi in enumerate(vectors):
        for j in range(i + 1):
            value = dot(vi, vectors[j])
            gram[i][j] = value
            gram[j][i] = value
    trace = _ldexp_saturating(math.fsum(gram[i][i] for i in range(size)) * inverse_n, 2 * exponent)
    side = [[_ldexp_saturating(value * inverse_n, 2 * exponent) for value in row] for row in gram]
    extra = (d - size) * math.log(eps)
    noise = max(n, d) * FLOAT64_EPS * trace
    if noise < eps:
        ridged = [[value + eps if i == j else value for j, value in enumerate(row)] for i, row in enumerate(side)]
        log_det = cholesky_log_det(ridged)
        if log_det is not None:
            return GaussianKLTerms(mean_sq_norm, trace, log_det + extra, "cholesky")
    # the solver takes the scaled matrix (its squares must not overflow); scaling back is exact
    scaled = symmetric_eigenvalues([[value * inverse_n for value in row] for row in gram])
    eigenvalues = [_ldexp_saturating(x, 2 * exponent) for x in scaled]
    floor = max(n, d) * FLOAT64_EPS * max(eigenvalues[-1], 0.0)
    log_det = math.fsum(math.log((x if x > floor else 0.0) + eps) for x in eigenvalues)
    return GaussianKLTerms(mean_sq_norm, trace, log_det + extra, "eigenvalues")


# --------------------------------------------------------------------- SIGReg
@lru_cache(maxsize=16)
def sigreg_directions(seed: int, dim: int, slices: int) -> tuple[tuple[float, ...], ...]:
    """``slices`` unit vectors in ``R^dim``, uniformly distributed on the sphere, from a
    ``random.Random(seed)`` generator: the same directions in every backend and run.
    """
    generator = random.Random(seed)
    directions = []
    for _ in range(slices):
        while True:
            vector = [generator.gauss(0.0, 1.0) for _ in range(dim)]
            norm = math.hypot(*vector)
            if norm > 0.0:
                break
        directions.append(tuple(x / norm for x in vector))
    return tuple(directions)


@lru_cache(maxsize=16)
def sigreg_quadrature(knots: int, t_max: float) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """``(t, phi, weights)`` of the Epps–Pulley quadrature on ``[0, t_max]``.

    ``t`` are ``knots`` equally spaced points from 0 to ``t_max``; ``phi = exp(-t**2 / 2)``
    is the standard normal characteristic function (and the integration window); the
    weights are the trapezoid rule's, doubled for the symmetric half ``[-t_max, 0]``
    (so ``dt`` at both ends and ``2 dt`` inside), times the window.
    """
    step = t_max / (knots - 1)
    t = tuple(k * step for k in range(knots))
    phi = tuple(math.exp(-0.5 * x * x) for x in t)
    weights = tuple((step if k in (0, knots - 1) else 2.0 * step) * p for k, p in enumerate(phi))
    return t, phi, weights


PHASELESS = 2.0**50
"""A projection at least this large (or not finite) has no usable phase in float64:
its ``cos(t x)`` and ``sin(t x)`` count as 0 for every ``t > 0``, as for a phase spread
uniformly over the circle."""


ORDERED_NORM = 2.0**16
"""Rows whose L2 norm is at least this (or overflows) are projected by :func:`ordered_dot`
in every backend. Below it a projection's phase ``t x`` is insensitive to how its sum was
rounded (differences of order ``2**-52 * 2**16 * t_max``, about 1e-11); above it, up to
:data:`PHASELESS`, the last bits of ``x`` move ``cos(t x)`` visibly, so every backend adds
the same rounded products in the same order and gets the same bits."""


def ordered_dot(a: Sequence[float], b: Sequence[float]) -> float:
    """``a . b`` as ``((0 + a_0 b_0) + a_1 b_1) + ...``: each product rounded, then added
    strictly left to right. A fixed rounding, reproducible bit for bit by a vectorised
    loop over the columns (and not subject to how a Python version's ``sum`` rounds).
    """
    return reduce(add, map(mul, a, b), 0.0)


def sigreg_value(matrix: Matrix, seed: int, slices: int, knots: int, t_max: float) -> float:
    """The SIGReg statistic: the Epps–Pulley statistic of the batch projected on each of
    the ``slices`` directions of :func:`sigreg_directions`, averaged over the directions.

    For a projection ``x_1..x_N``: ``N * sum_k w_k ((mean cos(t_k x) - phi_k)**2 +
    (mean sin(t_k x))**2)`` with the quadrature of :func:`sigreg_quadrature`. Rows of norm
    at least :data:`ORDERED_NORM` are projected by :func:`ordered_dot`, the others by a
    plain dot product.
    """
    n = len(matrix)
    directions = sigreg_directions(seed, len(matrix[0]), slices)
    t, phi, weights = sigreg_quadrature(knots, t_max)
    norms = [math.hypot(*row) for row in matrix]
    ordinary = [row for row, norm in zip(matrix, norms) if norm < ORDERED_NORM]
    large = [row for row, norm in zip(matrix, norms) if not norm < ORDERED_NORM]
    statistics = []
    for direction in directions:
        # the order of the projections does not matter: their cosines are summed exactly
        values = chain(map(dot, ordinary, repeat(direction)), map(ordered_dot, large, repeat(direction)))
        projection = [x for x in values if abs(x) < PHASELESS]
        terms = []
        for tk, pk, wk in zip(t, phi, weights):
            if tk == 0.0:
                continue  # cos(0) = phi(0) = 1 and sin(0) = 0: no contribution
            scaled = list(map(mul, projection, repeat(tk)))
            cos_mean = math.fsum(map(math.cos, scaled)) / n
            sin_mean = math.fsum(map(math.sin, scaled)) / n
            terms.append(wk * ((cos_mean - pk) ** 2 + sin_mean**2))
        statistics.append(n * math.fsum(terms))
    return math.fsum(statistics) / len(statistics)


# ------------------------------------------------------------ natural results
def gaussian_kl_from_terms(terms: GaussianKLTerms, dim: int) -> float:
    """``0.5 * (||mu||^2 + tr(Sigma) - log det(Sigma + eps I) - D)`` from its parts (``inf``
    when they overflowed).
    """
    if terms.method == "overflow":
        return math.inf
    return 0.5 * (terms.mean_sq_norm + terms.trace - terms.log_det - dim)


def gaussian_kl_value(source: Any, matrix: Matrix, eps: float) -> float:
    """The Gaussian KL of a validated batch, as a float (``source`` is not needed here)."""
    return gaussian_kl_from_terms(gaussian_kl_terms(matrix, eps), len(matrix[0]))


def sigreg_result(source: Any, matrix: Matrix, *, seed: int, slices: int, knots: int, t_max: float) -> float:
    """:func:`sigreg_value` (``source`` is not needed here)."""
    return sigreg_value(matrix, seed, slices, knots, t_max)
