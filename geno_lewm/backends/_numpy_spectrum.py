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


def gaussian_kl_terms(array: Array, eps: float) -> GaussianKLTerms:
    """``(mean_sq_norm, trace, log_det, method)`` as in the reference (Sylvester's identity
    when ``N <= D``; Cholesky, else floored eigenvalues).
    """
    n, d = array.shape
    peak = float(np.abs(array).max())
    exponent = _exponent(peak)
    scaled = np.ldexp(array, -exponent)
    mean_row_square = _ldexp_saturating(float(np.einsum("ij,ij->", scaled, scaled)) / n, 2 * exponent)
    if mean_row_square == math.inf:
        return GaussianKLTerms(math.inf, math.inf, math.inf, "overflow")
    means = array.mean(axis=0)
    x = array - means
    side = (x @ x.T if n <= d else x.T @ x) / n
    size = side.shape[0]
    trace = float(np.trace(side))
    mean_sq_norm = float(means @ means)
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


def sigreg_value(array: Array, seed: int, slices: int, knots: int, t_max: float) -> float:
    """The SIGReg statistic of a prepared batch (see the reference's ``sigreg_value``)."""
    n, d = array.shape
    t, phi, weights = (np.array(v) for v in sigreg_quadrature(knots, t_max))
    directions = _directions(seed, d, slices)
    block = max(1, _SIGREG_BLOCK_ELEMENTS // (n * knots))
    statistics = []
    for start in range(0, slices, block):
        with np.errstate(over="ignore", invalid="ignore"):
            projections = array @ directions[:, start : start + block]  # [N, block]
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
