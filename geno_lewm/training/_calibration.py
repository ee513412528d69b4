"""What a statistic of an isotropic Gaussian batch looks like, so that a healthy batch is not
mistaken for a collapsing one: the reference distributions of the calibrated criteria.

For an ``[N, D]`` batch of independent N(0, s^2) entries, centred on its column means:

* the **total variance** (trace of the population covariance) is ``s^2 / N`` times a
  chi-square variable with ``D (N - 1)`` degrees of freedom, so the ratio of two such
  batches' total variances is F-distributed: :func:`f_quantile` gives its lower tail
  exactly (regularized incomplete beta function);
* the **effective rank** (RankMe) concentrates on a value set by the Marchenko–Pastur law
  of the sample covariance's eigenvalues with aspect ratio ``D / (N - 1)``:
  :func:`gaussian_effective_rank` integrates it (within 1% of simulated means from
  ``N = 16, D = 4`` up, far closer at large sizes; ``rfcs/0013-detection-calibration.md``);
* the **Gaussian KL** of RFC-0005 §3.2 of the batch has an exact expectation through the
  log-determinant of a Wishart matrix (sums of digamma values at half-integers), and
  :func:`gaussian_kl_reference` gives it with an upper bound on its standard deviation.

Standard library only; each result is cached by its arguments.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

__all__ = [
    "KLReference",
    "digamma_half",
    "f_cdf",
    "f_quantile",
    "gaussian_effective_rank",
    "gaussian_kl_reference",
    "regularized_incomplete_beta",
    "trigamma_half",
]

_EULER_GAMMA = 0.5772156649015329
_TINY = 1e-300


# ------------------------------------------------------------------ the F distribution
def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz), for
    ``x < (a + 1) / (a + b + 2)``, where it converges fast.
    """
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    result = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            result *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return result


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b)``, the CDF at ``x`` of a Beta(a, b) variable (``a, b > 0``, ``0 <= x <= 1``).

    Example
    -------
    >>> round(regularized_incomplete_beta(2.0, 3.0, 0.4), 12)  # 1 - 0.6**4 - 4 * 0.4 * 0.6**3
    0.5248
    """
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def f_cdf(x: float, d1: float, d2: float) -> float:
    """``P(F <= x)`` for an F(d1, d2) variable."""
    if x <= 0.0:
        return 0.0
    return regularized_incomplete_beta(d1 / 2.0, d2 / 2.0, d1 * x / (d1 * x + d2))


@lru_cache(maxsize=1024)
def f_quantile(p: float, d1: float, d2: float) -> float:
    """The ``p``-quantile of the F(d1, d2) distribution (``0 < p < 1``), by bisection on
    ``log x`` to a relative precision of about 1e-12.

    Example
    -------
    >>> round(f_quantile(0.5, 10.0, 10.0), 9)  # the median of F(d, d) is 1
    1.0
    """
    low, high = -50.0, 50.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if f_cdf(math.exp(middle), d1, d2) < p:
            low = middle
        else:
            high = middle
        if high - low < 1e-12:
            break
    return math.exp(0.5 * (low + high))


# ------------------------------------------------------------------ effective rank
@lru_cache(maxsize=256)
def gaussian_effective_rank(n: int, d: int, *, knots: int = 4096) -> float:
    """The effective rank of a centred ``[n, d]`` batch of isotropic Gaussian rows, as the
    Marchenko–Pastur law gives it (``n >= 2``).

    With ``M = min(d, n - 1)`` non-zero eigenvalues ``l`` of ratio ``c = M / max(d, n - 1)``
    and singular values ``s = sqrt(l)``, the entropy of ``s / sum(s)`` tends to
    ``log(M E[s]) - E[s log s] / E[s]``; the expectations are integrals over the law's
    support ``[(1 - sqrt c)^2, (1 + sqrt c)^2]``, taken with the substitution
    ``l = a + (b - a)(1 - cos t) / 2`` that removes the square-root edges.

    Example
    -------
    >>> round(gaussian_effective_rank(4096, 4), 3)  # many rows: every direction counts
    4.0
    """
    m = n - 1
    rank = min(d, m)
    if rank <= 1:
        return float(rank)
    ratio = rank / max(d, m)
    low, high = (1.0 - math.sqrt(ratio)) ** 2, (1.0 + math.sqrt(ratio)) ** 2
    total = first = second = 0.0
    for i in range(knots):
        t = (i + 0.5) * math.pi / knots
        value = low + (high - low) * (1.0 - math.cos(t)) / 2.0
        weight = math.sqrt((high - value) * (value - low)) / value * math.sin(t)
        root = math.sqrt(value)
        total += weight
        first += weight * root
        second += weight * root * math.log(root)
    mean_root = first / total
    return rank * mean_root * math.exp(-(second / total) / mean_root)


# ------------------------------------------------------------------ the Gaussian KL
@lru_cache(maxsize=8)
def _half_integer_table(size: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``psi(k / 2)`` and ``psi'(k / 2)`` for ``k = 0 .. size`` (entry 0 unused), by the
    recurrences ``psi(x + 1) = psi(x) + 1 / x`` and ``psi'(x + 1) = psi'(x) - 1 / x^2`` from
    ``psi(1/2) = -gamma - 2 log 2``, ``psi(1) = -gamma``, ``psi'(1/2) = pi^2 / 2``, ``psi'(1) = pi^2 / 6``.
    """
    digamma = [0.0] * (size + 1)
    trigamma = [0.0] * (size + 1)
    for k in range(1, size + 1):
        if k <= 2:
            digamma[k] = -_EULER_GAMMA - (2.0 * math.log(2.0) if k == 1 else 0.0)
            trigamma[k] = math.pi**2 / (2.0 if k == 1 else 6.0)
        else:
            x = (k - 2) / 2.0
            digamma[k] = digamma[k - 2] + 1.0 / x
            trigamma[k] = trigamma[k - 2] - 1.0 / (x * x)
    return tuple(digamma), tuple(trigamma)


def _table(k: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    size = 64
    while size < k:
        size *= 2
    return _half_integer_table(size)


def digamma_half(k: int) -> float:
    """``psi(k / 2)`` for a positive integer ``k``, exactly up to rounding.

    Example
    -------
    >>> round(digamma_half(2), 12) == round(-0.5772156649015329, 12)
    True
    """
    return _table(k)[0][k]


def trigamma_half(k: int) -> float:
    """``psi'(k / 2)`` for a positive integer ``k``, exactly up to rounding."""
    return _table(k)[1][k]


class KLReference(NamedTuple):
    """The Gaussian KL of an isotropic N(0, I) batch of a given shape: its expectation and
    an upper bound on its standard deviation, both in nats.
    """

    mean: float
    std_bound: float


@lru_cache(maxsize=256)
def gaussian_kl_reference(n: int, d: int, eps: float = 1e-6) -> KLReference:
    """Expectation and spread of ``0.5 (||mu||^2 + tr S - log det(S + eps I) - D)`` for an
    ``[n, d]`` batch of independent N(0, 1) entries (``S`` the population covariance).

    ``N S`` is a Wishart matrix with ``n - 1`` degrees of freedom, so ``E ||mu||^2 = d / n``,
    ``E tr S = d (n - 1) / n`` and ``E log det`` is a sum of digamma values: over the
    ``r = min(d, n - 1)`` non-zero eigenvalues, ``sum_i psi((f - i) / 2) + r log 2 - r log n``
    with ``f = max(d, n - 1)``, plus ``(d - r) log eps`` for the directions a batch of
    ``n`` rows cannot span. ``eps`` is neglected beside the non-zero eigenvalues (they are
    of order one). The standard deviation bound adds those of the three parts (trigamma
    sums for the log-determinant), which bounds the standard deviation of their sum.

    Example
    -------
    >>> reference = gaussian_kl_reference(100_000, 2)  # a huge batch is almost exactly N(0, I)
    >>> abs(reference.mean) < 1e-4
    True
    """
    r = min(d, n - 1)
    f = max(d, n - 1)
    digamma, trigamma = _table(f)
    log_det = (
        math.fsum(digamma[f - i] for i in range(r)) + r * math.log(2.0) - r * math.log(n) + (d - r) * math.log(eps)
    )
    mean = 0.5 * (d / n + d * (n - 1) / n - log_det - d)
    var_norm = 2.0 * d / (n * n)
    var_trace = 2.0 * d * (n - 1) / (n * n)
    var_log_det = math.fsum(trigamma[f - i] for i in range(r))
    return KLReference(mean, 0.5 * (math.sqrt(var_norm) + math.sqrt(var_trace) + math.sqrt(var_log_det)))
