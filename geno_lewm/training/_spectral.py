"""The shape of an embedding distribution: spectral metrics, the Gaussian KL and SIGReg.

The computations behind :mod:`geno_lewm.training.spectrum` (the public module, which also
publishes the collapse family's rank criteria and the diagnosis): effective rank
(RankMe), the share of variance in the top-k directions and the SimSiam std of
L2-normalised rows, for one batch (:func:`spectral_metrics`) or for predictions and
targets together (:func:`collapse_spectrum`); the Gaussian regulariser of RFC-0005 §3.2
computed from the embeddings (:func:`gaussian_kl`, :func:`gaussian_kl_terms`); and the
LeJEPA SIGReg statistic (:func:`sigreg`). Definitions, conventions and the evidence:
``rfcs/0008-dimensional-collapse.md``.

Every function works in every backend (``"python"``, ``"numpy"``, ``"torch"``, chosen by
``"auto"`` as for the RFC metrics); the pure-Python one needs only the standard library
and is exact (eigenvalues by Householder tridiagonalisation and the QL iteration, on the
smaller side of the Gram matrix: ``min(N, D)**2 * max(N, D) / 2 + 4/3 min(N, D)**3``
flops, about 1.5 s for the RFC's 256 x 1024 batch in CPython). Collapse is a result, not
an exception: identical rows, rank-1 batches and ``N <= D`` all give numbers. This
module knows no metric family.

Example
-------
>>> rows = [[1.0, 1.0, 0.0], [-1.0, -1.0, 0.0], [2.0, 2.0, 0.0], [-2.0, -2.0, 0.0]]
>>> s = spectral_metrics(rows)
>>> s.effective_rank, s.numerical_rank, s.top_k_share
(1.0, 1, 1.0)
>>> round(gaussian_kl([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]), 6)
0.193145
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from typing import Any

from geno_lewm._validation import check_non_negative_int, check_positive_finite, check_positive_int, fail
from geno_lewm.backends import Backend, BatchShape, SpectralValues, get_backend, prepare_each

__all__ = [
    "DEFAULT_EPS",
    "DEFAULT_KNOTS",
    "DEFAULT_SLICES",
    "DEFAULT_TOP_K",
    "DEFAULT_T_MAX",
    "CollapseSpectrum",
    "GaussianKL",
    "SpectralMetrics",
    "collapse_spectrum",
    "covariance_eigenvalues",
    "gaussian_kl",
    "gaussian_kl_terms",
    "prepared_spectrum",
    "sigreg",
    "sigreg_gaussian_value",
    "spectral_metrics",
]

DEFAULT_TOP_K = 10
DEFAULT_EPS = 1e-6
DEFAULT_SLICES = 256
DEFAULT_KNOTS = 17
DEFAULT_T_MAX = 3.0


# ------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class SpectralMetrics:
    """The shape of one ``[N, D]`` batch, from the spectrum of its centred rows.

    Attributes
    ----------
    effective_rank:
        RankMe (Garrido et al., 2023): ``exp`` of the Shannon entropy of the singular
        values of the *centred* batch, normalised to sum to 1. Between 1 and
        ``min(N - 1, D)`` for a batch with any spread, 0 when all rows are the same.
        Biased low at small N: isotropic Gaussian data of D = 256 gives about 205 at
        N = 256, 247 at N = 1024 and 254 at N = 4096 — compare a run with its own first
        value, as the ``effective_rank_to_initial`` criterion does, at a fixed N.
    top_k_share:
        Share of the total variance in the ``top_k`` largest principal directions
        (``k / D`` for isotropic data, 1 when the batch spans at most ``k`` directions,
        and 1 when it has no variance at all).
    normalized_std:
        Mean over dimensions of the population std of the L2-normalised rows (the SimSiam
        indicator): about ``1 / sqrt(D)`` for isotropic zero-mean data, 0 when every row
        points the same way. Rows of zeros stay zeros.
    numerical_rank:
        Number of principal directions whose variance is above the rounding floor.
    total_variance:
        Trace of the population covariance: ``D`` times the RFC's per-dimension variance.
    spread_share:
        ``total_variance`` over the mean squared row norm: 1 for a centred batch, near 0
        when the rows are nearly the same vector, 0 when they are identical.
    top_k:
        The ``k`` of ``top_k_share``.
    batch_size, dim:
        ``N`` and ``D``.
    """

    effective_rank: float
    top_k_share: float
    normalized_std: float
    numerical_rank: int
    total_variance: float
    spread_share: float
    top_k: int
    batch_size: int
    dim: int

    def as_dict(self) -> dict[str, float]:
        """Field name -> value, in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class CollapseSpectrum:
    """The spectral metrics of a check's predictions and targets, computed together.

    ``backend`` computed them, in ``compute_seconds`` (both batches).
    """

    prediction: SpectralMetrics
    target: SpectralMetrics
    backend: str = "python"
    compute_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class GaussianKL:
    """The Gaussian KL of a batch and its parts (see :func:`gaussian_kl_terms`).

    Attributes
    ----------
    value:
        ``0.5 * (mean_sq_norm + trace - log_det - dim)``: ``KL(N(mu, Sigma + eps I) || N(0, I))``
        up to the ``eps * dim / 2`` the ridge adds to the trace.
    mean_sq_norm:
        ``||mu||^2`` of the batch mean.
    trace:
        ``tr(Sigma)`` of the population covariance (divide by N).
    log_det:
        ``log det(Sigma + eps I)``.
    eps:
        The ridge added to the diagonal before the log-determinant.
    ridge_only_dims:
        Directions no batch of this shape can see: ``max(0, D - N + 1)`` (a centred batch
        of N rows spans at most ``N - 1`` directions; a rank-deficient one spans fewer).
        Each contributes exactly ``0.5 * (-log(eps) - 1)`` to ``value``, whatever the
        data: about 6.4 for the default ``eps = 1e-6``.
    ridge_term:
        Their total contribution, ``ridge_only_dims * 0.5 * (-log(eps) - 1)``: when
        ``N <= D`` it dominates ``value`` (about 4,900 of it at 256 x 1024), so compare
        values across checks of equal shape rather than with an absolute bound.
    method:
        ``"cholesky"``, or ``"eigenvalues"`` when the factorisation failed or its pivots
        could not be trusted (rounding of the covariance above ``eps``); ``"overflow"``
        when the mean squared row norm is too large for a float (``value`` is ``inf``).
    batch_size, dim:
        ``N`` and ``D``.
    """

    value: float
    mean_sq_norm: float
    trace: float
    log_det: float
    eps: float
    ridge_only_dims: int
    ridge_term: float
    method: str
    batch_size: int
    dim: int


# ------------------------------------------------------------------- spectra
def _check_top_k(top_k: Any) -> int:
    return check_positive_int("top_k", top_k)


def _build(values: SpectralValues, top_k: int, shape: BatchShape) -> SpectralMetrics:
    return SpectralMetrics(
        float(values.effective_rank),
        float(values.top_k_share),
        float(values.normalized_std),
        int(values.numerical_rank),
        float(values.total_variance),
        float(values.spread_share),
        min(top_k, shape.dim),
        shape.rows,
        shape.dim,
    )


def _prepared(embeddings: Any, backend: str) -> tuple[Backend, Any]:
    """The backend for ``embeddings`` and the batch as its kernels take it (validated)."""
    kernels = get_backend(backend, embeddings)
    return kernels, kernels.prepare(embeddings, "embeddings")


def spectral_metrics(embeddings: Any, *, top_k: int = DEFAULT_TOP_K, backend: str = "auto") -> SpectralMetrics:
    """Effective rank, top-k variance share and normalised std of one ``[N, D]`` batch.

    Parameters
    ----------
    embeddings:
        Nested sequences of real numbers, a NumPy array or a tensor (read, never
        modified; torch tensors are computed on their own device, in float64 where the
        device has it).
    top_k:
        ``k`` of :attr:`SpectralMetrics.top_k_share` (capped at ``D``).
    backend:
        ``"auto"`` (default), ``"python"``, ``"numpy"`` or ``"torch"``.

    Raises
    ------
    InputError
        For anything that is not a finite, non-empty 2-D batch, or a bad ``top_k``.

    Notes
    -----
    The eigenvalues come from the Gram matrix on the smaller side of the centred batch
    (``N x N`` when ``N <= D``, else the ``D x D`` covariance), so the pure-Python cost is
    ``min(N, D)**2 * max(N, D) / 2`` multiply-adds plus ``4/3 min(N, D)**3`` for the
    eigen-solver. Eigenvalues at or below the rounding floor (``max(N, D) * eps`` times
    the largest, and the centring's rounding) count as zero.

    Example
    -------
    >>> s = spectral_metrics([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    >>> s.effective_rank, s.top_k_share, round(s.normalized_std, 6)
    (2.0, 1.0, 0.707107)
    """
    k = _check_top_k(top_k)
    kernels, matrix = _prepared(embeddings, backend)
    return _build(kernels.spectral().spectral_values(matrix, k), k, kernels.describe(matrix))


def prepared_spectrum(
    kernels: Backend, prediction: Any, target: Any, shape: BatchShape, top_k: int
) -> CollapseSpectrum:
    """The spectra of a prediction/target pair that ``kernels`` already prepared (and
    whose finiteness is known): for a monitor that computed the RFC metrics from the same
    matrices, so each batch is validated and converted once.
    """
    started = time.perf_counter()
    spectral = kernels.spectral()
    pred = _build(spectral.spectral_values(prediction, top_k), top_k, shape)
    targ = _build(spectral.spectral_values(target, top_k), top_k, shape)
    return CollapseSpectrum(pred, targ, kernels.NAME, time.perf_counter() - started)


def collapse_spectrum(
    prediction: Any, target: Any, *, top_k: int = DEFAULT_TOP_K, backend: str = "auto"
) -> CollapseSpectrum:
    """:func:`spectral_metrics` of a prediction batch and its target batch (same shape).

    Raises :class:`InputError` for bad or mismatched batches, before computing anything.
    """
    k = _check_top_k(top_k)
    started = time.perf_counter()
    kernels = get_backend(backend, prediction, target)
    p, t, shape = prepare_each(kernels.prepare, kernels.describe, prediction, target)
    spectrum = prepared_spectrum(kernels, p, t, shape, k)
    return CollapseSpectrum(spectrum.prediction, spectrum.target, spectrum.backend, time.perf_counter() - started)


def covariance_eigenvalues(embeddings: Any, *, backend: str = "auto") -> tuple[float, ...]:
    """The eigenvalues of the batch's population covariance, descending.

    Only those above the rounding floor are returned (at most ``min(N, D)``; the others
    are zero). For plotting a spectrum, or checking it against another library.

    Example
    -------
    >>> covariance_eigenvalues([[1.0, 0.0], [-1.0, 0.0], [0.0, 3.0], [0.0, -3.0]])
    (4.5, 0.5)
    """
    kernels, matrix = _prepared(embeddings, backend)
    return tuple(float(x) for x in kernels.spectral().covariance_eigenvalues(matrix))


# ---------------------------------------------------------------- Gaussian KL
def _ridge_term(n: int, d: int, eps: float) -> tuple[int, float]:
    dims = max(0, d - n + 1)
    return dims, dims * 0.5 * (-math.log(eps) - 1.0)


def gaussian_kl_terms(embeddings: Any, *, eps: float = DEFAULT_EPS, backend: str = "auto") -> GaussianKL:
    """The Gaussian KL of RFC-0005 §3.2 of a batch, with its parts and how it was computed.

    ``0.5 * (||mu||^2 + tr(Sigma) - log det(Sigma + eps I) - D)`` for the batch mean
    ``mu`` and population covariance ``Sigma`` (divide by N, as the RFC's variances).

    The log-determinant is taken on the smaller side: when ``N <= D``,
    ``det(Sigma + eps I_D) = eps**(D - N) det(Xc Xc^T / N + eps I_N)`` (Sylvester), which
    is exact and costs ``N**3 / 3`` instead of ``D**3 / 3``. It uses the Cholesky
    factorisation, and the eigenvalues (with rounding-level ones set to 0, so each
    direction the batch cannot see contributes exactly ``log(eps)``) when the
    factorisation fails or the covariance's rounding exceeds ``eps``. See
    :class:`GaussianKL` for the ridge's share of the value when ``N <= D``.

    Raises
    ------
    InputError
        For a bad batch or an ``eps`` that is not a finite number > 0.

    Example
    -------
    >>> kl = gaussian_kl_terms([[3.0, 1.0], [1.0, 3.0]])
    >>> kl.mean_sq_norm, kl.trace, kl.ridge_only_dims, kl.method
    (8.0, 2.0, 1, 'cholesky')
    """
    ridge = check_positive_finite("eps", eps)
    kernels, matrix = _prepared(embeddings, backend)
    n, d, _, _ = kernels.describe(matrix)
    mean_sq_norm, trace, log_det, method = kernels.spectral().gaussian_kl_terms(matrix, ridge)
    mean_sq_norm, trace, log_det = float(mean_sq_norm), float(trace), float(log_det)
    value = math.inf if method == "overflow" else 0.5 * (mean_sq_norm + trace - log_det - d)
    dims, term = _ridge_term(n, d, ridge)
    return GaussianKL(value, mean_sq_norm, trace, log_det, ridge, dims, term, str(method), n, d)


def gaussian_kl(embeddings: Any, *, eps: float = DEFAULT_EPS, backend: str = "auto") -> Any:
    """The Gaussian regulariser ``0.5 * (||mu||^2 + tr(Sigma) - log det(Sigma + eps I) - D)``.

    The value to pass as ``kl_reg`` to :class:`~geno_lewm.training.collapse.CollapseMonitor`
    (the RFC's training term weights it by ``gamma``, 0.5 by default). Definitions and
    numerics as in :func:`gaussian_kl_terms`.

    Returns
    -------
    float or torch.Tensor
        A Python float for the ``python`` and ``numpy`` backends. For the ``torch``
        backend a 0-d tensor on the input's device, of the input's dtype (at least
        float32), computed in float64 where the device has it; when the input requires
        grad the result is differentiable, so it can serve as a training loss.

    Example
    -------
    >>> round(gaussian_kl([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]), 6)  # Sigma = I/2
    0.193145
    """
    ridge = check_positive_finite("eps", eps)
    kernels, matrix = _prepared(embeddings, backend)
    return kernels.spectral().gaussian_kl_value(embeddings, matrix, ridge)


# --------------------------------------------------------------------- SIGReg
def _check_sigreg(slices: Any, knots: Any, t_max: Any, seed: Any) -> tuple[int, int, float, int]:
    m = check_positive_int("slices", slices)
    k = check_positive_int("knots", knots)
    if k < 2:
        raise fail("knots", ">= 2", knots)
    return m, k, check_positive_finite("t_max", t_max), check_non_negative_int("seed", seed)


def sigreg_gaussian_value(*, knots: int = DEFAULT_KNOTS, t_max: float = DEFAULT_T_MAX) -> float:
    """The expected SIGReg statistic of standard Gaussian data, whatever N and D.

    For N independent N(0, 1) values, ``E |ecf(t) - phi(t)|^2 = (1 - phi(t)**2) / N``, so
    the expectation is ``sum_k w_k (1 - phi_k**2)`` over the quadrature (about 1.05 for
    the defaults; 1.059 for the exact integral over the real line).

    Example
    -------
    >>> round(sigreg_gaussian_value(), 4)
    1.0525
    """
    _, k, tm, _ = _check_sigreg(1, knots, t_max, 0)
    from geno_lewm.backends._python_spectrum import sigreg_quadrature

    _, phi, weights = sigreg_quadrature(k, tm)
    return math.fsum(w * (1.0 - p * p) for p, w in zip(phi, weights))


def sigreg(
    embeddings: Any,
    *,
    slices: int = DEFAULT_SLICES,
    knots: int = DEFAULT_KNOTS,
    t_max: float = DEFAULT_T_MAX,
    seed: int = 0,
    backend: str = "auto",
) -> Any:
    """The LeJEPA SIGReg statistic (Balestriero & LeCun, 2025) of an ``[N, D]`` batch.

    The batch is projected on ``slices`` random unit directions; for each projection
    ``x_1..x_N`` the Epps–Pulley statistic ``N * integral |ecf(t) - exp(-t**2/2)|**2
    exp(-t**2/2) dt`` compares its empirical characteristic function with the standard
    normal one (trapezoid rule on ``[0, t_max]`` with ``knots`` points, doubled by
    symmetry); the statistics are averaged. Near :func:`sigreg_gaussian_value` for
    N(0, I) data, large for collapsed, shrunken, inflated or shifted data: unlike the
    effective rank it is *scale-aware*.

    The directions come from ``random.Random(seed)`` and are the same in every backend,
    process and check, so a value is reproducible and checks are comparable.

    Returns
    -------
    float or torch.Tensor
        As :func:`gaussian_kl`: a 0-d tensor for the torch backend (differentiable when
        the input requires grad), else a float.

    Notes
    -----
    Cost: ``N * D * slices`` multiply-adds for the projections and ``2 * N * knots *
    slices`` sines and cosines. A projection of magnitude at least ``2**50`` has no
    usable phase in float64; it contributes 0 to the empirical characteristic function.
    """
    m, k, tm, s = _check_sigreg(slices, knots, t_max, seed)
    kernels, matrix = _prepared(embeddings, backend)
    return kernels.spectral().sigreg_result(embeddings, matrix, seed=s, slices=m, knots=k, t_max=tm)
