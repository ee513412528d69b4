"""The NumPy spectral kernels: the reference's definitions, vectorised in float64.

Same steps and conventions as :mod:`geno_lewm.backends._python_spectrum` (power-of-two
scalings, exact centring of constant columns, the Gram matrix on the smaller side, the
same rounding floor, the same SIGReg directions and quadrature); the eigenvalues come
from LAPACK (``numpy.linalg.eigvalsh``) and the log-determinant from
``numpy.linalg.cholesky``. Inputs are prepared (validated, float64) by
:mod:`geno_lewm.backends._numpy`.

Cost, with ``g = min(N, D)`` and ``h = max(N, D)``: one ``g x g`` Gram product
(``g**2 h`` flops) and one symmetric eigen-decomposition (``~4/3 g**3``).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from geno_lewm.backends._contract import GaussianKLTerms, SpectralValues
from geno_lewm.backends._python_spectrum import (
    FLOAT64_EPS,
    ORDERED_NORM,
    PHASELESS,
    eigenvalue_floor,
    gaussian_kl_from_terms,
    sigreg_directions,
    sigreg_quadrature,
)

__all__ = [
    "NAME",
    "covariance_eigenvalues",
    "gaussian_kl_terms",
    "gaussian_kl_value",
    "sigreg_result",
    "sigreg_value",
    "spectral_values",
]

NAME = "numpy"

Array = npt.NDArray[np.float64]


def _ldexp_saturating(value: float, exponent: int) -> float:
    try:
        return math.ldexp(value, exponent)
    except OverflowError:
        return math.inf


def _exponent(value: float) -> int:
    return math.frexp(value)[1] if value else 0


class _Centred:
    """The batch scaled below 1 (``e0``), centred (constant columns exactly), scaled again (``e1``)."""

    __slots__ = ("centred", "e0", "e1", "means", "zero")

    def __init__(self, array: Array) -> None:
        self.e0 = _exponent(float(np.abs(array).max()))
        scaled = np.ldexp(array, -self.e0)
        means = scaled.mean(axis=0)
        constant = scaled.max(axis=0) == scaled.min(axis=0)
        means = np.where(constant, scaled[0], means)
        centred = scaled - means
        centred[:, constant] = 0.0
        largest = float(np.abs(centred).max())
        self.zero = largest == 0.0
        self.e1 = _exponent(largest)
        self.centred = np.ldexp(centred, -self.e1)
        self.means = means


def _kept_eigenvalues(array: Array, centred: _Centred) -> tuple[Array, float]:
    """Descending Gram eigenvalues above the floor, and the Gram trace (scaled units)."""
    n, d = array.shape
    if centred.zero:
        return np.zeros(0), 0.0
    x = centred.centred
    gram = x @ x.T if n <= d else x.T @ x
    trace = float(np.trace(gram))
    eigenvalues = np.linalg.eigvalsh(gram)
    floor = eigenvalue_floor(float(eigenvalues[-1]), n, d, math.ldexp(1.0, -centred.e1))
    return np.sort(eigenvalues[eigenvalues > floor])[::-1], trace


def _normalized_std(array: Array) -> float:
    peak = np.abs(array).max(axis=1, keepdims=True)
    safe_peak = np.where(peak > 0.0, peak, 1.0)
    exponents = np.frexp(safe_peak)[1]
    rows = np.ldexp(array, -exponents)
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))[:, None]
    units = np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0.0)
    stds = units.std(axis=0)
    stds[units.max(axis=0) == units.min(axis=0)] = 0.0
    return float(stds.mean())


def covariance_eigenvalues(array: Array) -> list[float]:
    """Eigenvalues of the population covariance above the floor, descending."""
    centred = _Centred(array)
    kept, _ = _kept_eigenvalues(array, centred)
    shift = 2 * (centred.e0 + centred.e1)
    return [_ldexp_saturating(float(x) / array.shape[0], shift) for x in kept]


def spectral_values(array: Array, top_k: int) -> SpectralValues:
    """The spectral metrics of a prepared batch (see the reference's ``spectral_values``)."""
    n = array.shape[0]
    centred = _Centred(array)
    kept, trace = _kept_eigenvalues(array, centred)
    normalized_std = _normalized_std(array)
    if kept.size == 0:
        return SpectralValues(0.0, 1.0, normalized_std, 0, 0.0, 0.0)
    singular = np.sqrt(kept)
    probabilities = singular / singular.sum()
    entropy = -float(np.sum(probabilities * np.log(probabilities)))
    effective_rank = math.exp(entropy)
    top_k_share = min(1.0, float(kept[:top_k].sum() / kept.sum()))
    total_variance = _ldexp_saturating(trace / n, 2 * (centred.e0 + centred.e1))
    spread = _ldexp_saturating(trace / n, 2 * centred.e1)
    mean_square = float(centred.means @ centred.means)
    spread_share = spread / (spread + mean_square) if spread > 0.0 else 0.0
    return SpectralValues(effective_rank, top_k_share, normalized_std, int(kept.size), total_variance, spread_share)


_KL_SAFE_EXPONENT = 256
"""Values whose largest magnitude lies between ``2**-256`` and ``2**256`` are multiplied as
they are: their products and sums of products can neither overflow nor lose to underflow
anything the result could show. Outside that range they are rescaled by a power of two."""


def _sum_of_squares(values: Array) -> tuple[float, int]:
    """``(s, e)`` with ``sum(values**2) = s * 2**(2 e)``: the values are scaled by ``2**-e``
    first when they are extreme (``e = 0`` otherwise), so ``s`` neither overflows nor
    underflows; the caller scales back once, saturating at ``inf``.
    """
    exponent = _exponent(max(float(values.max()), -float(values.min())))
    if abs(exponent) <= _KL_SAFE_EXPONENT:
        return float(np.vdot(values, values)), 0
    scaled = np.ldexp(values, -exponent)
    return float(np.vdot(scaled, scaled)), exponent


class _KLCentred:
    """The batch centred as the reference centres it, for the Gaussian KL.

    Rows are centred on the first row, then on the mean of those offsets: ``x - x[0]`` is
    exact when the two lie within a factor of two of each other, so a common offset,
    however large, cannot round away a small spread (the mean of a column at 1e50 is off by
    up to an ulp of 1e50, which is far more than such a spread), and it is exactly 0 in a
    column whose entries are all equal, so such a column centres to exactly 0.

    ``centred`` is the result scaled by ``2**-exponent`` (``exponent = 0`` unless its
    largest magnitude is extreme), ``means`` the column means, ``zero`` whether every
    centred value is exactly 0 (all rows identical).
    """

    __slots__ = ("centred", "exponent", "means", "zero")

    def __init__(self, array: Array) -> None:
        first = array[0]
        centred = array - first
        shift = centred.mean(axis=0)
        centred -= shift
        self.means = first + shift
        peak = max(float(centred.max()), -float(centred.min()))
        self.zero = peak == 0.0
        exponent = _exponent(peak)
        if abs(exponent) <= _KL_SAFE_EXPONENT:
            self.centred, self.exponent = centred, 0
        else:
            self.centred, self.exponent = np.ldexp(centred, -exponent), exponent


def gaussian_kl_terms(array: Array, eps: float) -> GaussianKLTerms:
    """``(mean_sq_norm, trace, log_det, method)`` as in the reference (Sylvester's identity
    when ``N <= D``; Cholesky, else floored eigenvalues).

    Centred as the reference centres (:class:`_KLCentred`), so a batch of identical rows
    gives ``trace = 0`` and ``log_det = D log(eps)`` exactly, whatever its level.
    """
    n, d = array.shape
    total, exponent = _sum_of_squares(array)
    if _ldexp_saturating(total / n, 2 * exponent) == math.inf:
        return GaussianKLTerms(math.inf, math.inf, math.inf, "overflow")
    centred = _KLCentred(array)
    total, exponent = _sum_of_squares(centred.means)
    mean_sq_norm = _ldexp_saturating(total, 2 * exponent)
    if centred.zero:
        return GaussianKLTerms(mean_sq_norm, 0.0, d * math.log(eps), "cholesky")
    x, exponent = centred.centred, centred.exponent
    side = x @ x.T if n <= d else x.T @ x
    size = side.shape[0]
    trace = _ldexp_saturating(float(np.trace(side)) / n, 2 * exponent)
    side /= n
    if exponent:
        side = np.ldexp(side, 2 * exponent)
    extra = (d - size) * math.log(eps)
    if max(n, d) * FLOAT64_EPS * trace < eps:
        try:
            factor = np.linalg.cholesky(side + eps * np.eye(size))
        except np.linalg.LinAlgError:
            pass
        else:
            diagonal = np.diagonal(factor)
            if np.all(diagonal > 0.0):
                return GaussianKLTerms(mean_sq_norm, trace, 2.0 * float(np.log(diagonal).sum()) + extra, "cholesky")
    eigenvalues = np.linalg.eigvalsh(side)
    floor = max(n, d) * FLOAT64_EPS * max(float(eigenvalues[-1]), 0.0)
    log_det = float(np.log(np.where(eigenvalues > floor, eigenvalues, 0.0) + eps).sum())
    return GaussianKLTerms(mean_sq_norm, trace, log_det + extra, "eigenvalues")


@lru_cache(maxsize=8)
def _directions(seed: int, dim: int, slices: int) -> Array:
    """The reference's directions as a read-only ``[D, slices]`` array."""
    matrix = np.array(sigreg_directions(seed, dim, slices), dtype=np.float64).T.copy()
    matrix.flags.writeable = False
    return matrix


_SIGREG_BLOCK_ELEMENTS = 1 << 22
"""Slices are processed in blocks of at most this many ``N * slices * knots`` angles (32 MiB)."""


def _ordered_projections(rows: Array, directions: Array) -> Array:
    """``rows @ directions`` with every sum taken as the reference's
    :func:`~geno_lewm.backends._python_spectrum.ordered_dot` takes it: products rounded,
    then added column by column, left to right (no fused multiply-add, no blocking), so
    the result has the reference's bits. ``D`` passes over a ``[rows, slices]`` array.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        total: Array = rows[:, :1] * directions[0] + 0.0  # 0 + a_0 b_0, as the reference starts
        for j in range(1, rows.shape[1]):
            total += rows[:, j : j + 1] * directions[j]
    return total


def sigreg_value(array: Array, seed: int, slices: int, knots: int, t_max: float) -> float:
    """The SIGReg statistic of a prepared batch (see the reference's ``sigreg_value``).

    Projections come from one BLAS product per block of slices; those of rows of norm at
    least :data:`~geno_lewm.backends._python_spectrum.ORDERED_NORM` (whose phases depend
    on the last bits of the sum) are recomputed in the reference's order.
    """
    n, d = array.shape
    t, phi, weights = (np.array(v) for v in sigreg_quadrature(knots, t_max))
    directions = _directions(seed, d, slices)
    with np.errstate(over="ignore"):
        squares = np.einsum("ij,ij->i", array, array)
    large = np.flatnonzero(~(squares < ORDERED_NORM * ORDERED_NORM))  # an overflowed norm counts
    block = max(1, _SIGREG_BLOCK_ELEMENTS // (n * knots))
    statistics = []
    for start in range(0, slices, block):
        with np.errstate(over="ignore", invalid="ignore"):
            projections = array @ directions[:, start : start + block]  # [N, block]
        if large.size:
            projections[large] = _ordered_projections(array[large], directions[:, start : start + block])
        usable = np.abs(projections) < PHASELESS  # False for inf and nan too
        angles = np.where(usable, projections, 0.0)[:, :, None] * t  # [N, block, knots]
        cos_mean = np.where(usable[:, :, None], np.cos(angles), 0.0).sum(axis=0) / n
        sin_mean = np.where(usable[:, :, None], np.sin(angles), 0.0).sum(axis=0) / n
        error = (cos_mean - phi) ** 2 + sin_mean**2
        error[:, t == 0.0] = 0.0
        statistics.append(n * (error @ weights))
    return float(np.concatenate(statistics).mean())


def gaussian_kl_value(source: Any, array: Array, eps: float) -> float:
    """The Gaussian KL of a prepared array, as a float (``source`` is not needed here)."""
    return gaussian_kl_from_terms(gaussian_kl_terms(array, eps), int(array.shape[1]))


def sigreg_result(source: Any, array: Array, *, seed: int, slices: int, knots: int, t_max: float) -> float:
    """:func:`sigreg_value` (``source`` is not needed here)."""
    return sigreg_value(array, seed, slices, knots, t_max)
