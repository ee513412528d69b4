"""The vectorised backends at the extremes (RFC-0007 §6.1): the Gaussian KL of collapsed and
near-constant batches at any level, and SIGReg of batches with a few very large entries,
against the pure-Python reference.

The reproductions are the reported failures, through the public API; the property tests
draw from the classes of input that produced them.
"""

from __future__ import annotations

import math
import random
import sys
from fractions import Fraction
from typing import Any

import pytest
from conftest import as_float, convert

from geno_lewm.backends._python_spectrum import ORDERED_NORM, sigreg_directions, sigreg_quadrature
from geno_lewm.training.spectrum import GaussianKL, gaussian_kl, gaussian_kl_terms, sigreg

BACKENDS = ["python", "numpy", "torch"]
VECTORISED = ["numpy", "torch"]

RTOL = 1e-9
"""RFC-0007 §6: float64 results agree with the reference to 1e-9 relative."""

SUBNORMAL_ATOL = 2.0**-1072
"""RFC-0007 §6.1: a result below the smallest normal float agrees within four units of 2**-1074."""

Rows = list[list[float]]


def close(value: float, reference: float) -> bool:
    """Within RFC-0007's tolerance of the reference."""
    return math.isclose(value, reference, rel_tol=RTOL, abs_tol=SUBNORMAL_ATOL)


def exact_squared_norm(row: list[float]) -> Fraction:
    """``||row||**2`` in exact arithmetic."""
    return sum((Fraction(v) ** 2 for v in row), Fraction(0))


def squared_norm(row: list[float]) -> float:
    """``||row||**2``, correctly rounded (for a row whose squared norm is a finite float)."""
    return float(exact_squared_norm(row))


def kl_parts_agree(terms: GaussianKL, reference: GaussianKL) -> None:
    """The same method; mean_sq_norm and trace within tolerance; log_det within tolerance or,
    on the Cholesky route, within RFC-0007 §6.1's bound ``max(N, D) * 2**-52 * tr(Sigma) / eps``.
    """
    assert terms.method == reference.method, (terms, reference)
    if reference.method == "overflow":
        assert (terms.value, terms.mean_sq_norm, terms.trace, terms.log_det) == (math.inf,) * 4
        return
    assert close(terms.mean_sq_norm, reference.mean_sq_norm), (terms, reference)
    assert close(terms.trace, reference.trace), (terms, reference)
    slack = 0.0
    if reference.method == "cholesky":
        slack = max(reference.batch_size, reference.dim) * 2.0**-52 * reference.trace / reference.eps
    assert abs(terms.log_det - reference.log_det) <= RTOL * abs(reference.log_det) + slack, (terms, reference)


# ------------------------------------------------------------ Gaussian KL: reproductions
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("level", [1e50, 1e100])
def test_identical_rows_far_from_the_origin_have_no_variance(backend: str, level: float) -> None:
    """24 identical rows [level, 1]: trace exactly 0 and log_det exactly D log(eps), not 4e68 and +144."""
    rows = [[level, 1.0]] * 24
    terms = gaussian_kl_terms(convert(rows, backend), backend=backend)
    assert terms.trace == 0.0
    assert terms.log_det == 2 * math.log(1e-6)
    assert math.isclose(terms.mean_sq_norm, squared_norm(rows[0]), rel_tol=RTOL)
    assert terms.method == "cholesky"


@pytest.mark.parametrize("backend", BACKENDS)
def test_identical_rows_give_the_exact_kl_when_their_mean_does_not_round_back(backend: str) -> None:
    """24 rows [0.1, 0.7], whose computed mean is not 0.1: the KL is 0.5 (||row||^2 - D log eps - D) at eps=1e-60."""
    rows = [[0.1, 0.7]] * 24
    eps = 1e-60
    expected = 0.5 * (math.fsum([0.1 * 0.1, 0.7 * 0.7]) - 2 * math.log(eps) - 2)
    value = as_float(gaussian_kl(convert(rows, backend), eps=eps, backend=backend))
    assert math.isclose(value, expected, rel_tol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_spread_of_a_few_ulps_around_1e50_keeps_its_variance(backend: str) -> None:
    """Rows 1e50 + k ulp (k < 24): the trace is their exact variance, not 0.5-5% more from a rounded mean."""
    n, ulp = 24, math.ulp(1e50)
    rows = [[1e50 + k * ulp, 1.0] for k in range(n)]
    exact = float(Fraction(ulp) ** 2 * (n * n - 1) / 12)
    terms = gaussian_kl_terms(convert(rows, backend), backend=backend)
    assert math.isclose(terms.trace, exact, rel_tol=1e-12)


def test_torch_gradient_at_identical_rows_is_the_mean_over_n() -> None:
    """Autograd through gaussian_kl of identical rows: the value is exact and each row's gradient is mu / N."""
    torch = pytest.importorskip("torch")
    rows = [[0.1, 0.7, -3.0]] * 24
    x = torch.tensor(rows, dtype=torch.float64, requires_grad=True)
    eps = 1e-60
    value = gaussian_kl(x, eps=eps)
    (grad,) = torch.autograd.grad(value, x)
    assert math.isclose(float(value.detach()), 0.5 * (squared_norm(rows[0]) - 3 * math.log(eps) - 3), rel_tol=1e-14)
    expected = torch.tensor(rows, dtype=torch.float64) / 24
    assert torch.allclose(grad, expected, rtol=1e-14, atol=0.0)


# --------------------------------------------------------- Gaussian KL: property tests
def test_identical_rows_are_exact_at_every_level_in_every_backend() -> None:
    """Identical rows at 1e-300..1e300: trace 0 and log_det D log(eps) exactly everywhere (or all 'overflow')."""
    hypothesis = pytest.importorskip("hypothesis")
    pytest.importorskip("numpy")
    pytest.importorskip("torch")
    st = hypothesis.strategies

    @st.composite
    def identical_rows(draw: Any) -> Rows:
        level = 10.0 ** draw(st.floats(-300, 300))
        d = draw(st.integers(1, 6))
        row = [level * draw(st.one_of(st.just(0.0), st.floats(-4.0, 4.0))) for _ in range(d)]
        return [row] * draw(st.integers(1, 40))

    @hypothesis.settings(max_examples=60, deadline=None)
    @hypothesis.given(identical_rows())
    def check(rows: Rows) -> None:
        d = len(rows[0])
        exact = exact_squared_norm(rows[0])
        overflows = exact > Fraction(sys.float_info.max)
        for backend in BACKENDS:
            terms = gaussian_kl_terms(convert(rows, backend), backend=backend)
            if overflows:
                assert terms.method == "overflow", (backend, terms)
                continue
            assert terms.trace == 0.0, (backend, terms)
            assert terms.log_det == d * math.log(1e-6), (backend, terms)
            assert close(terms.mean_sq_norm, float(exact)), (backend, terms)

    check()


@pytest.mark.parametrize("backend", VECTORISED)
def test_near_constant_offset_batches_agree_with_the_reference(backend: str) -> None:
    """Offset (1e-300..1e300) plus noise of 1e-16..1e-2 of it: the reference's method and parts, to tolerance."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @st.composite
    def near_constant(draw: Any) -> Rows:
        level = 10.0 ** draw(st.floats(-300, 300))
        # a spread of a few ulps of the level is where a rounded mean shows most
        noise = level * 10.0 ** draw(st.one_of(st.floats(-16, -2), st.floats(-16, -14)))
        n, d = draw(st.integers(1, 9)), draw(st.integers(1, 5))
        offsets = [level * draw(st.sampled_from([-1.0, 1.0])) * draw(st.floats(0.25, 2.0)) for _ in range(d)]
        rows = [[o + noise * draw(st.floats(-1.0, 1.0)) for o in offsets] for _ in range(n)]
        repeated = draw(st.integers(0, n - 1))
        rows[-1] = list(rows[repeated])
        return rows

    @hypothesis.settings(max_examples=60, deadline=None)
    @hypothesis.given(near_constant())
    def check(rows: Rows) -> None:
        reference = gaussian_kl_terms(rows, backend="python")
        kl_parts_agree(gaussian_kl_terms(convert(rows, backend), backend=backend), reference)

    check()


# ----------------------------------------------------------------- SIGReg: reproductions
def _gaussian_rows(n: int, d: int, seed: int) -> Rows:
    generator = random.Random(seed)
    return [[generator.gauss(0.0, 1.0) for _ in range(d)] for _ in range(n)]


def _with_large_entries(big: float) -> Rows:
    rows = _gaussian_rows(16, 4, 7)
    rows[3][1] = big
    rows[9][2] = -big / 3
    return rows


@pytest.mark.parametrize("backend", VECTORISED)
@pytest.mark.parametrize("big", [1e10, 1e12, 3e14, 1e307])
def test_sigreg_of_a_batch_with_two_large_entries_agrees_with_the_reference(backend: str, big: float) -> None:
    """Two entries of +-1e10..1e307 in a 16 x 4 Gaussian batch: within 1e-9 of the reference (was 2e-9..1e-4)."""
    rows = _with_large_entries(big)
    reference = sigreg(rows, backend="python")
    assert close(as_float(sigreg(convert(rows, backend), backend=backend)), reference)


@pytest.mark.parametrize("backend", VECTORISED)
def test_sigreg_of_the_shrunk_counterexample_agrees_with_the_reference(backend: str) -> None:
    """[[2, -1e10], [0, 0]], the smallest batch found: within 1e-9 of the reference, not 2e-8 off."""
    rows = [[2.0, -1e10], [0.0, 0.0]]
    reference = sigreg(rows, slices=4, backend="python")
    assert close(as_float(sigreg(convert(rows, backend), slices=4, backend=backend)), reference)


def test_torch_sigreg_gradient_flows_through_large_rows() -> None:
    """A row above ORDERED_NORM: the reference's value, and the gradient of a plain torch formula."""
    torch = pytest.importorskip("torch")
    rows = _gaussian_rows(12, 3, 11)
    rows[4] = [3.0 * ORDERED_NORM, -ORDERED_NORM, 0.5]
    x = torch.tensor(rows, dtype=torch.float64, requires_grad=True)
    value = sigreg(x, slices=8)
    assert close(float(value.detach()), sigreg(rows, slices=8, backend="python"))
    (grad,) = torch.autograd.grad(value, x)

    y = torch.tensor(rows, dtype=torch.float64, requires_grad=True)
    t, phi, weights = (torch.tensor(v, dtype=torch.float64) for v in sigreg_quadrature(17, 3.0))
    angles = (y @ torch.tensor(sigreg_directions(0, 3, 8), dtype=torch.float64).T).unsqueeze(-1) * t
    error = (angles.cos().mean(dim=0) - phi).square() + angles.sin().mean(dim=0).square()
    plain = (12 * (error @ weights)).mean()
    (expected,) = torch.autograd.grad(plain, y)
    assert grad[4].abs().sum() > 0.0
    assert torch.allclose(grad, expected, rtol=1e-6, atol=1e-12)


# --------------------------------------------------------------- SIGReg: property tests
@pytest.mark.parametrize("backend", VECTORISED)
def test_sigreg_with_a_few_extreme_entries_agrees_with_the_reference(backend: str) -> None:
    """One to three entries at +-1e-307..1e307 (often 1e6..1e15): the reference's statistic to 1e-9."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @st.composite
    def batches(draw: Any) -> Rows:
        n, d = draw(st.integers(1, 24)), draw(st.integers(1, 6))
        rows = [[draw(st.floats(-3.0, 3.0)) for _ in range(d)] for _ in range(n)]
        for _ in range(draw(st.integers(1, 3))):
            sign = draw(st.sampled_from([-1.0, 1.0]))
            # any scale, and often the one where a projection's phase is in its last bits
            exponent = draw(st.one_of(st.floats(-307, 307), st.floats(6, 15)))
            rows[draw(st.integers(0, n - 1))][draw(st.integers(0, d - 1))] = sign * 10.0**exponent
        return rows

    @hypothesis.settings(max_examples=60, deadline=None)
    @hypothesis.given(batches())
    def check(rows: Rows) -> None:
        # 16 slices or more: torch's CPU product then takes a kernel that rounds differently
        reference = sigreg(rows, slices=16, backend="python")
        value = as_float(sigreg(convert(rows, backend), slices=16, backend=backend))
        assert close(value, reference), (value, reference)

    check()
