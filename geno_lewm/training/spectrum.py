"""Dimensional collapse: the shape of an embedding distribution, not only its scale.

The RFC-0005 criteria (:mod:`geno_lewm.training.collapse`) look at the *scale* of the
predictions: per-dimension variance and pairwise distances. A run can collapse
*dimensionally* with both intact (an encoder ending in BatchNorm whose outputs fold into
a few directions), and a healthy run whose predictor outputs smaller vectors than its
targets trips the variance criterion at every check. This module measures the *shape*.
Definitions, conventions and the evidence: ``rfcs/0008-dimensional-collapse.md``.

* :func:`spectral_metrics` / :func:`collapse_spectrum` — effective rank (RankMe), the
  share of variance in the top-k directions and the SimSiam std of L2-normalised rows,
  for one batch or for predictions and targets together;
* :func:`gaussian_kl` — the Gaussian regulariser of RFC-0005 §3.2 computed from the
  embeddings, with a stable log-determinant (differentiable for torch tensors that
  require grad); :func:`gaussian_kl_terms` gives its parts;
* :func:`sigreg` — the LeJEPA SIGReg statistic (Epps–Pulley test of normality along
  random directions), a scale-aware isotropy measure;
* :func:`detect_rank_collapse` and :func:`diagnose_collapse` — the opt-in effective-rank
  criteria and the classification of a tripped check.

Every function works in every backend (``"python"``, ``"numpy"``, ``"torch"``, chosen by
``"auto"`` as for the RFC metrics); the pure-Python one needs only the standard library
and is exact (eigenvalues by Householder tridiagonalisation and the QL iteration, on the
smaller side of the Gram matrix: ``min(N, D)**2 * max(N, D) / 2 + 4/3 min(N, D)**3``
flops, about 1.5 s for the RFC's 256 x 1024 batch in CPython). Collapse is a result, not
an exception: identical rows, rank-1 batches and ``N <= D`` all give numbers.

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

import importlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import ModuleType
from typing import Any

from geno_lewm._inputs import shape_mismatch_error
from geno_lewm._validation import check_non_negative_int, check_positive_finite, check_positive_int
from geno_lewm.backends import check_backend_name, select_backend
from geno_lewm.errors import InputError
from geno_lewm.metrics import MetricRegistry, MetricSpec, declare_metric, default_registry
from geno_lewm.training.collapse import CollapseAlert, CollapseLogger, CollapseMetrics

__all__ = [
    "DIAGNOSES",
    "SPECTRAL_CRITERIA",
    "SPECTRAL_GAUGES",
    "CollapseSpectrum",
    "Diagnosis",
    "GaussianKL",
    "SpectralMetrics",
    "collapse_spectrum",
    "covariance_eigenvalues",
    "detect_rank_collapse",
    "diagnose_collapse",
    "gaussian_kl",
    "gaussian_kl_terms",
    "log_spectral_metrics",
    "rank_bounds",
    "set_spectral_gauges",
    "sigreg",
    "sigreg_gaussian_value",
    "spectral_metrics",
]

_PREFIX = "geno_lewm.training.collapse"

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


DIAGNOSES: tuple[str, ...] = (
    "trivial_agreement",
    "complete_collapse",
    "dimensional_collapse",
    "scale_drift",
    "unclassified",
)
"""The kinds a :class:`Diagnosis` can have, in the order they are tested."""


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """What a tripped check most likely is, and what to look at.

    Attributes
    ----------
    kind:
        One of :data:`DIAGNOSES`.
    subject:
        ``"prediction"``, ``"target"`` or ``"both"``: where the failure shows.
    summary:
        One or two sentences for a human: the evidence and where to look.
    """

    kind: str
    subject: str
    summary: str


# ------------------------------------------------------------------- backends
def _kernels(backend: str, *values: Any) -> tuple[ModuleType, ModuleType]:
    """The RFC backend (for ``prepare``/``describe``) and its spectral kernels."""
    rfc = select_backend(check_backend_name(backend), *values)
    return rfc, importlib.import_module(f"geno_lewm.backends._{rfc.NAME}_spectrum")


def _check_top_k(top_k: Any) -> int:
    return check_positive_int("top_k", top_k)


def _build(values: tuple[float, float, float, int, float, float], top_k: int, n: int, d: int) -> SpectralMetrics:
    effective_rank, share, normalized_std, rank, total_variance, spread = values
    return SpectralMetrics(
        float(effective_rank),
        float(share),
        float(normalized_std),
        int(rank),
        float(total_variance),
        float(spread),
        min(top_k, d),
        n,
        d,
    )


# -------------------------------------------------------------------- spectra
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
    rfc, kernels = _kernels(backend, embeddings)
    matrix = rfc.prepare(embeddings, "embeddings")
    n, d, _, _ = rfc.describe(matrix)
    return _build(kernels.spectral_values(matrix, k), k, n, d)


def collapse_spectrum(
    prediction: Any, target: Any, *, top_k: int = DEFAULT_TOP_K, backend: str = "auto"
) -> CollapseSpectrum:
    """:func:`spectral_metrics` of a prediction batch and its target batch (same shape).

    Raises :class:`InputError` for bad or mismatched batches, before computing anything.
    """
    k = _check_top_k(top_k)
    started = time.perf_counter()
    rfc, kernels = _kernels(backend, prediction, target)
    p = rfc.prepare(prediction, "prediction")
    t = rfc.prepare(target, "target")
    n, d, _, _ = rfc.describe(p)
    tn, td, _, _ = rfc.describe(t)
    if (n, d) != (tn, td):
        raise shape_mismatch_error((n, d), (tn, td))
    pred = _build(kernels.spectral_values(p, k), k, n, d)
    targ = _build(kernels.spectral_values(t, k), k, n, d)
    return CollapseSpectrum(pred, targ, str(rfc.NAME), time.perf_counter() - started)


def covariance_eigenvalues(embeddings: Any, *, backend: str = "auto") -> tuple[float, ...]:
    """The eigenvalues of the batch's population covariance, descending.

    Only those above the rounding floor are returned (at most ``min(N, D)``; the others
    are zero). For plotting a spectrum, or checking it against another library.

    Example
    -------
    >>> covariance_eigenvalues([[1.0, 0.0], [-1.0, 0.0], [0.0, 3.0], [0.0, -3.0]])
    (4.5, 0.5)
    """
    rfc, kernels = _kernels(backend, embeddings)
    matrix = rfc.prepare(embeddings, "embeddings")
    return tuple(float(x) for x in kernels.covariance_eigenvalues(matrix))


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
    rfc, kernels = _kernels(backend, embeddings)
    matrix = rfc.prepare(embeddings, "embeddings")
    n, d, _, _ = rfc.describe(matrix)
    mean_sq_norm, trace, log_det, method = kernels.gaussian_kl_terms(matrix, ridge)
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
    rfc, kernels = _kernels(backend, embeddings)
    matrix = rfc.prepare(embeddings, "embeddings")
    if rfc.NAME == "torch":
        return kernels.gaussian_kl_tensor(_differentiable(embeddings, matrix), ridge)
    _, d, _, _ = rfc.describe(matrix)
    mean_sq_norm, trace, log_det, method = kernels.gaussian_kl_terms(matrix, ridge)
    if method == "overflow":
        return math.inf
    return 0.5 * (float(mean_sq_norm) + float(trace) - float(log_det) - d)


def _differentiable(original: Any, prepared: Any) -> Any:
    """The tensor to compute on: the caller's own when it requires grad (the prepared
    one is detached), else the prepared one.
    """
    if getattr(original, "requires_grad", False) and getattr(original, "shape", None) == getattr(prepared, "shape", ()):
        return original
    return prepared


# --------------------------------------------------------------------- SIGReg
def _check_sigreg(slices: Any, knots: Any, t_max: Any, seed: Any) -> tuple[int, int, float, int]:
    m = check_positive_int("slices", slices)
    k = check_positive_int("knots", knots)
    if k < 2:
        raise InputError(f"'knots' must be >= 2: got {knots!r}", details={"field": "knots", "value": knots})
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
    rfc, kernels = _kernels(backend, embeddings)
    matrix = rfc.prepare(embeddings, "embeddings")
    if rfc.NAME == "torch":
        return kernels.sigreg_tensor(_differentiable(embeddings, matrix), s, m, k, tm)
    return float(kernels.sigreg_value(matrix, s, m, k, tm))


# ---------------------------------------------------------------- criteria
SPECTRAL_CRITERIA: tuple[str, ...] = ("pred_effective_rank", "target_effective_rank")
"""The opt-in alert criteria, in the order they are checked."""


def _check_spectrum(name: str, value: object) -> CollapseSpectrum:
    if not isinstance(value, CollapseSpectrum):
        raise InputError(
            f"{name!r} must be a CollapseSpectrum: got {type(value).__name__}",
            details={"field": name, "type": type(value).__name__},
        )
    return value


def rank_bounds(ratio: float | None, initial: CollapseSpectrum | None) -> dict[str, float | None]:
    """The bound each effective rank is compared with (``None`` where no criterion applies)."""
    if ratio is None or initial is None:
        return dict.fromkeys(SPECTRAL_CRITERIA)
    return {
        "pred_effective_rank": ratio * initial.prediction.effective_rank,
        "target_effective_rank": ratio * initial.target.effective_rank,
    }


def detect_rank_collapse(
    spectrum: CollapseSpectrum, *, ratio: float, initial: CollapseSpectrum | None
) -> tuple[CollapseAlert, ...]:
    """The opt-in effective-rank criteria: an alert when a rank falls below ``ratio`` times
    its first observed value (``initial``; no alert while it is unknown).

    Criteria, checked in this order: ``pred_effective_rank`` and ``target_effective_rank``,
    each a strict ``<``. Each alert's ``threshold`` is ``ratio * initial``.

    Example
    -------
    >>> one = SpectralMetrics(100.0, 0.1, 0.03, 200, 256.0, 1.0, 10, 256, 256)
    >>> low = SpectralMetrics(30.0, 0.6, 0.03, 200, 256.0, 1.0, 10, 256, 256)
    >>> [a.criterion for a in detect_rank_collapse(CollapseSpectrum(low, one), ratio=0.5,
    ...                                            initial=CollapseSpectrum(one, one))]
    ['pred_effective_rank']
    """
    _check_spectrum("spectrum", spectrum)
    bound_ratio = check_positive_finite("ratio", ratio)
    if initial is not None:
        _check_spectrum("initial", initial)
    bounds = rank_bounds(bound_ratio, initial)
    values = {
        "pred_effective_rank": spectrum.prediction.effective_rank,
        "target_effective_rank": spectrum.target.effective_rank,
    }
    alerts = []
    for criterion in SPECTRAL_CRITERIA:
        bound = bounds[criterion]
        if bound is not None and values[criterion] < bound:
            alerts.append(CollapseAlert(criterion, values[criterion], bound))
    return tuple(alerts)


# ---------------------------------------------------------------- diagnosis
def _subject(prediction: bool, target: bool) -> str:
    if prediction and target:
        return "both"
    return "prediction" if prediction else "target"


_NAMES = {"prediction": "prediction", "target": "target", "both": "prediction and target"}


def diagnose_collapse(
    metrics: CollapseMetrics,
    spectrum: CollapseSpectrum,
    *,
    initial: CollapseSpectrum | None = None,
    alerts: tuple[CollapseAlert, ...] = (),
    rank_ratio: float = 0.5,
    agreement_cosine: float = 0.95,
    spread_floor: float = 1e-4,
    scale_factor: float = 2.0,
) -> Diagnosis:
    """Classify a tripped check from its predictions and targets together.

    Tested in this order (the first that holds is the diagnosis):

    1. ``trivial_agreement`` — ``pred_cos_mean >= agreement_cosine`` while the *target*
       collapses (its rows alike, or its effective rank below ``rank_ratio`` times its
       initial value): the loss is small because there is nothing left to predict.
    2. ``complete_collapse`` — the prediction or target rows are (nearly) all the same
       vector: ``spread_share < spread_floor``.
    3. ``dimensional_collapse`` — an effective rank fell below ``rank_ratio`` times its
       initial value: the embeddings fold into fewer directions than they used to.
       (Predictions are not compared with targets here: a good predictor outputs the
       predictable part of the target, which has fewer directions and less variance.)
    4. ``scale_drift`` — the shape is kept but the scale is not: the predictions' total
       variance differs from the targets' by more than ``scale_factor`` either way, or a
       total variance moved that much from its initial value.
    5. ``unclassified`` — none of these (e.g. only ``kl_reg`` tripped with shape and
       scale intact).

    Parameters
    ----------
    metrics:
        The check's RFC metrics (for the cosine).
    spectrum:
        The check's spectra.
    initial:
        The spectra of the first check (the monitor's baseline), when known.
    alerts:
        The check's alerts, named in the ``unclassified`` summary.

    Example
    -------
    >>> m = CollapseMetrics(0.2, 1.0, 1.0, 0.1, 0.5, 0.5, 1.0)
    >>> s = SpectralMetrics(50.0, 0.2, 0.03, 60, 64.0, 1.0, 10, 256, 64)
    >>> small = SpectralMetrics(50.0, 0.2, 0.03, 60, 6.4, 1.0, 10, 256, 64)
    >>> diagnose_collapse(m, CollapseSpectrum(small, s)).kind
    'scale_drift'
    """
    if not isinstance(metrics, CollapseMetrics):
        raise InputError(
            f"'metrics' must be a CollapseMetrics: got {type(metrics).__name__}",
            details={"field": "metrics", "type": type(metrics).__name__},
        )
    _check_spectrum("spectrum", spectrum)
    if initial is not None:
        _check_spectrum("initial", initial)
    ratio = check_positive_finite("rank_ratio", rank_ratio)
    cosine = check_positive_finite("agreement_cosine", agreement_cosine)
    floor = check_positive_finite("spread_floor", spread_floor)
    factor = check_positive_finite("scale_factor", scale_factor)
    pred, targ = spectrum.prediction, spectrum.target
    pred0 = initial.prediction if initial is not None else None
    targ0 = initial.target if initial is not None else None

    def alike(s: SpectralMetrics) -> bool:
        return s.spread_share < floor

    def fell(s: SpectralMetrics, s0: SpectralMetrics | None) -> bool:
        return s0 is not None and s.effective_rank < ratio * s0.effective_rank

    def was(s0: SpectralMetrics | None) -> str:
        return f", was {s0.effective_rank:.1f}" if s0 is not None else ""

    target_collapsing = alike(targ) or fell(targ, targ0)
    if metrics.pred_cos_mean >= cosine and target_collapsing:
        how = (
            f"its rows are nearly identical (spread share {targ.spread_share:.1e})"
            if alike(targ)
            else f"its effective rank fell to {targ.effective_rank:.1f}{was(targ0)}"
        )
        return Diagnosis(
            "trivial_agreement",
            "target",
            f"predictions agree with their targets (mean cosine {metrics.pred_cos_mean:.3f}) but the target "
            f"itself collapsed: {how}. The loss is small because there is little left to predict; look at the "
            "target encoder (EMA rate, stop-gradient) and the weight of the Gaussian regulariser.",
        )
    if alike(pred) or alike(targ):
        subject = _subject(alike(pred), alike(targ))
        share = min(pred.spread_share, targ.spread_share)
        return Diagnosis(
            "complete_collapse",
            subject,
            f"all {_NAMES[subject]} rows are nearly the same vector (spread is {share:.1e} of the mean squared "
            "norm): the network's output no longer depends on its input. Look at the learning rate, the "
            "regulariser's weight, and whether the loss can be met by a constant.",
        )
    pred_low, targ_low = fell(pred, pred0), fell(targ, targ0)
    if pred_low or targ_low:
        subject = _subject(pred_low, targ_low)
        s, s0 = (pred, pred0) if pred_low else (targ, targ0)
        scale = ""
        if s0 is not None and s0.total_variance > 0.0:
            scale = f"; total variance {s.total_variance / s0.total_variance:.2g}x its initial value"
        return Diagnosis(
            "dimensional_collapse",
            subject,
            f"the {_NAMES[subject]} effective rank fell to {s.effective_rank:.1f}{was(s0)} (top-{s.top_k} "
            f"directions hold {s.top_k_share:.0%} of the variance{scale}): the embeddings fold into a few "
            "directions. Look at the decorrelation or isotropy term (SIGReg, the Gaussian KL, a covariance "
            "penalty), BatchNorm at the encoder's output, and the projector's width.",
        )
    drifts: list[tuple[str, float, str]] = []
    if targ.total_variance > 0.0:
        drifts.append(("prediction", pred.total_variance / targ.total_variance, "of the targets'"))
    for name, s, s0 in (("prediction", pred, pred0), ("target", targ, targ0)):
        if s0 is not None and s0.total_variance > 0.0:
            drifts.append((name, s.total_variance / s0.total_variance, "of its initial value"))
    for name, change, reference in drifts:
        if not 1.0 / factor <= change <= factor:
            return Diagnosis(
                "scale_drift",
                name,
                f"the {name} total variance is {change:.3g}x {reference} while its shape is kept (effective rank "
                f"{(pred if name == 'prediction' else targ).effective_rank:.1f}): a change of scale, not a collapse "
                "of the representation. Look at the predictor's output scale and normalisation layers; the "
                "scale-free criteria (effective rank, cosine) are the ones to trust here.",
            )
    tripped = ", ".join(a.criterion for a in alerts) or "no criterion"
    return Diagnosis(
        "unclassified",
        "both",
        f"the shape and scale of predictions and targets look intact (effective ranks {pred.effective_rank:.1f} "
        f"and {targ.effective_rank:.1f}); the alert came from {tripped}. For kl_reg, look at the encoder's mean "
        "and covariance against N(0, I).",
    )


# ---------------------------------------------------------------- recording
_GAUGE_FIELDS: dict[str, tuple[str, str, str]] = {
    "effective_rank": ("dims", "rankme,centred,singular_values", "Effective rank (RankMe) of the centred {side}."),
    "top_k_share": ("1", "top_{k},centred,variance", "Share of the {side} variance in the top-k directions."),
    "normalized_std": (
        "1",
        "l2_normalised_rows,population,mean_over_dims",
        "Mean per-dimension std of the L2-normalised {side} rows.",
    ),
}

SPECTRAL_GAUGES: tuple[str, ...] = tuple(
    f"{prefix}_{field_name}" for prefix in ("pred", "target") for field_name in _GAUGE_FIELDS
)
"""The gauge suffixes the monitor publishes, as ``geno_lewm.training.collapse.<suffix>``."""

for _side, _prefix in (("prediction", "pred"), ("target", "target")):
    for _field, (_unit, _, _summary) in _GAUGE_FIELDS.items():
        declare_metric(MetricSpec(f"{_PREFIX}.{_prefix}_{_field}", "gauge", _unit, _summary.format(side=_side)))


def _gauge_values(spectrum: CollapseSpectrum) -> dict[str, tuple[float, str, str]]:
    """Gauge suffix -> ``(value, unit, variant)``, in :data:`SPECTRAL_GAUGES` order."""
    values: dict[str, tuple[float, str, str]] = {}
    for prefix, metrics in (("pred", spectrum.prediction), ("target", spectrum.target)):
        for field_name, (unit, variant, _) in _GAUGE_FIELDS.items():
            values[f"{prefix}_{field_name}"] = (
                float(getattr(metrics, field_name)),
                unit,
                variant.format(k=metrics.top_k),
            )
    return values


def set_spectral_gauges(spectrum: CollapseSpectrum, registry: MetricRegistry | None = None) -> None:
    """Set one gauge ``geno_lewm.training.collapse.<suffix>`` per :data:`SPECTRAL_GAUGES`
    entry (in the process default registry when ``registry`` is omitted).
    """
    _check_spectrum("spectrum", spectrum)
    target = default_registry() if registry is None else registry
    for suffix, (value, _, _) in _gauge_values(spectrum).items():
        target.set_gauge(f"{_PREFIX}.{suffix}", value)


def log_spectral_metrics(
    spectrum: CollapseSpectrum,
    logger: CollapseLogger,
    *,
    step: int | None = None,
    context: Mapping[str, Any] | None = None,
    bounds: Mapping[str, float | None] | None = None,
) -> None:
    """Emit one ``training.metric`` event (info) per :data:`SPECTRAL_GAUGES` entry.

    ``context`` holds the batch fields of the RFC metrics' events (shape, dtype, backend,
    device, compute time); its ``compute_seconds`` is replaced by the spectra's own time.
    ``bounds`` maps ``pred_effective_rank`` / ``target_effective_rank`` to the bound in
    force (``threshold`` is null for the others).
    """
    _check_spectrum("spectrum", spectrum)
    fields_in_context = dict(context or {})
    if "compute_seconds" in fields_in_context:
        fields_in_context["compute_seconds"] = spectrum.compute_seconds
    bound_of = dict(bounds or {})
    for suffix, (value, unit, variant) in _gauge_values(spectrum).items():
        logger.info(
            "training.metric",
            name=f"{_PREFIX}.{suffix}",
            value=value,
            unit=unit,
            kind="gauge",
            step=step,
            variant=variant,
            threshold=bound_of.get(suffix),
            **fields_in_context,
        )
