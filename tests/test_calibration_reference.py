"""The reference distributions of the calibrated criteria (``training/_calibration.py``),
checked against SciPy's special functions and against simulated Gaussian batches.
"""

from __future__ import annotations

import math

import pytest

from geno_lewm.training._calibration import (
    digamma_half,
    f_cdf,
    f_quantile,
    gaussian_effective_rank,
    gaussian_kl_reference,
    regularized_incomplete_beta,
    trigamma_half,
)

torch = pytest.importorskip("torch")
special = pytest.importorskip("scipy.special")
stats = pytest.importorskip("scipy.stats")

FREEDOMS = [(1.0, 1.0), (3.0, 7.0), (60.0, 60.0), (1023.0, 4095.0), (4.0e6, 4.0e6)]


@pytest.mark.parametrize(("a", "b"), [(0.5, 0.5), (2.0, 3.0), (30.0, 30.0), (2.0e3, 5.0e2)])
def test_incomplete_beta_matches_scipy(a: float, b: float) -> None:
    """The regularized incomplete beta function agrees with SciPy's to 1e-12 across (0, 1)."""
    for x in (1e-9, 1e-4, 0.1, 0.37, 0.5, 0.8, 0.999):
        assert regularized_incomplete_beta(a, b, x) == pytest.approx(special.betainc(a, b, x), rel=1e-11, abs=1e-300)


@pytest.mark.parametrize(("d1", "d2"), FREEDOMS)
def test_f_quantile_matches_scipy_far_into_the_tail(d1: float, d2: float) -> None:
    """F quantiles agree with SciPy's down to the 1e-9 tail the noise floors use."""
    for p in (1e-9, 2.5e-8, 1e-4, 0.5, 0.99):
        assert f_quantile(p, d1, d2) == pytest.approx(stats.f.ppf(p, d1, d2), rel=1e-8)
        assert f_cdf(f_quantile(p, d1, d2), d1, d2) == pytest.approx(p, rel=1e-8)


def test_half_integer_digamma_and_trigamma_match_scipy() -> None:
    """psi(k/2) and psi'(k/2) from the recurrences match SciPy's from k = 1 to 8,191."""
    for k in (1, 2, 3, 10, 101, 1024, 4095, 8191):
        assert digamma_half(k) == pytest.approx(special.digamma(k / 2.0), rel=1e-12, abs=1e-13)
        assert trigamma_half(k) == pytest.approx(special.polygamma(1, k / 2.0), rel=1e-11)


def _effective_rank(batch: torch.Tensor) -> float:
    singular = torch.linalg.svdvals(batch - batch.mean(dim=0))
    p = singular / singular.sum()
    p = p[p > 0]
    return math.exp(float(-(p * p.log()).sum()))


@pytest.mark.parametrize(("n", "d"), [(16, 4), (16, 64), (64, 64), (256, 1024), (1024, 256), (4096, 16)])
def test_marchenko_pastur_rank_matches_simulated_gaussian_batches(n: int, d: int) -> None:
    """The effective rank of Gaussian batches averages within 1% of the Marchenko-Pastur
    value, and spreads by at most 2.6% of it: RANK_FLOOR (0.9) is at least 3.8 standard
    deviations below.
    """
    generator = torch.Generator().manual_seed(n * 7919 + d)
    ranks = [_effective_rank(torch.randn(n, d, generator=generator, dtype=torch.float64)) for _ in range(60)]
    expected = gaussian_effective_rank(n, d)
    mean = sum(ranks) / len(ranks)
    spread = math.sqrt(sum((r - mean) ** 2 for r in ranks) / (len(ranks) - 1))
    assert abs(mean / expected - 1.0) < 0.01
    assert spread / expected < 0.026
    assert (mean / expected - 0.9) / (spread / expected) > 3.8


def _kl(batch: torch.Tensor, eps: float) -> float:
    mean = batch.mean(dim=0)
    centred = batch - mean
    covariance = centred.T @ centred / batch.shape[0]
    identity = torch.eye(batch.shape[1], dtype=batch.dtype)
    log_det = torch.linalg.slogdet(covariance + eps * identity)[1]
    return 0.5 * float(mean @ mean + torch.trace(covariance) - log_det - batch.shape[1])


@pytest.mark.parametrize(("n", "d"), [(16, 4), (64, 32), (256, 64), (32, 64)])
def test_kl_reference_mean_and_spread_bound_hold_on_simulated_batches(n: int, d: int) -> None:
    """The KL of Gaussian batches averages to the exact expectation (within four standard
    errors) and spreads by no more than the stated bound.
    """
    generator = torch.Generator().manual_seed(n * 104729 + d)
    eps = 1e-6
    values = [_kl(torch.randn(n, d, generator=generator, dtype=torch.float64), eps) for _ in range(1000)]
    reference = gaussian_kl_reference(n, d, eps)
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    assert abs(mean - reference.mean) < 4.0 * spread / math.sqrt(len(values))
    assert spread <= reference.std_bound


def test_kl_reference_tends_to_zero_and_grows_with_dimension() -> None:
    """A batch that is large for its dimension has almost no expected KL; fewer rows per
    dimension give more (the log-determinant's bias).
    """
    assert abs(gaussian_kl_reference(1_000_000, 4).mean) < 1e-4
    means = [gaussian_kl_reference(256, d).mean for d in (4, 16, 64, 128)]
    assert means == sorted(means)
    assert means[0] > 0.0
