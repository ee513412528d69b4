"""The SIGReg statistic: its Gaussian value, closed forms, reproducibility, backends and autograd."""

from __future__ import annotations

import math
from typing import Any

import pytest
from conftest import as_float, convert

from geno_lewm.backends._python_spectrum import sigreg_directions, sigreg_quadrature
from geno_lewm.errors import InputError
from geno_lewm.training.spectrum import sigreg, sigreg_gaussian_value

BACKENDS = ["python", "numpy", "torch"]


def exact_epps_pulley(values: list[float]) -> float:
    """``N * integral_R |ecf(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt`` in closed form:
    ``sqrt(2 pi)/N sum_jk exp(-(x_j - x_k)^2 / 2) - 2 sqrt(pi) sum_j exp(-x_j^2 / 4) + N sqrt(2 pi / 3)``.
    """
    n = len(values)
    pairs = math.fsum(math.exp(-((a - b) ** 2) / 2) for a in values for b in values)
    singles = math.fsum(math.exp(-(a * a) / 4) for a in values)
    return math.sqrt(2 * math.pi) / n * pairs - 2 * math.sqrt(math.pi) * singles + n * math.sqrt(2 * math.pi / 3)


def test_gaussian_value_is_the_quadrature_of_one_minus_phi_squared() -> None:
    """The Gaussian value is sum_k w_k (1 - phi_k^2), close to the exact integral sqrt(2 pi) - sqrt(2 pi / 3)."""
    _, phi, weights = sigreg_quadrature(17, 3.0)
    assert sigreg_gaussian_value() == math.fsum(w * (1 - p * p) for p, w in zip(phi, weights))
    exact = math.sqrt(2 * math.pi) - math.sqrt(2 * math.pi / 3)
    assert math.isclose(sigreg_gaussian_value(knots=4001, t_max=12.0), exact, rel_tol=1e-9)


def test_gaussian_samples_average_to_the_gaussian_value() -> None:
    """Over 24 independent N(0, I) batches, the mean statistic is within 0.15 of its expectation
    (the per-batch standard deviation is about 0.3).
    """
    np = pytest.importorskip("numpy")
    values = [sigreg(np.random.default_rng(s).standard_normal((500, 8)), slices=16, seed=s) for s in range(24)]
    assert abs(sum(values) / len(values) - sigreg_gaussian_value()) < 0.15


@pytest.mark.parametrize("backend", BACKENDS)
def test_identical_rows_at_the_origin_match_the_closed_form(backend: str) -> None:
    """A batch of zeros projects to 0 everywhere: the statistic is N sum_k w_k (1 - phi_k)^2, exactly."""
    n = 40
    _, phi, weights = sigreg_quadrature(17, 3.0)
    expected = n * math.fsum(w * (1 - p) ** 2 for p, w in zip(phi, weights))
    value = as_float(sigreg(convert([[0.0] * 5] * n, backend), slices=4, backend=backend))
    assert math.isclose(value, expected, rel_tol=1e-12)
    assert value > 10 * sigreg_gaussian_value()


@pytest.mark.parametrize("backend", BACKENDS)
def test_collapsed_and_rescaled_batches_are_far_from_gaussian(backend: str) -> None:
    """Identical rows, a rank-1 batch and a 3x-inflated batch all score far above the Gaussian value."""
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(0)
    gaussian = rng.standard_normal((400, 6))
    batches = {
        "identical": np.tile(gaussian[0], (400, 1)),
        "rank1": np.outer(gaussian[:, 0], np.ones(6)) / math.sqrt(6),
        "inflated": 3.0 * gaussian,
    }
    healthy = as_float(sigreg(convert(gaussian.tolist(), backend), slices=8, backend=backend))
    for name, batch in batches.items():
        value = as_float(sigreg(convert(batch.tolist(), backend), slices=8, backend=backend))
        assert value > 10 * max(healthy, sigreg_gaussian_value()), name


def test_quadrature_converges_to_the_exact_integral() -> None:
    """For D = 1 (the direction is +-1), a fine, wide trapezoid rule gives the closed-form statistic."""
    values = [math.sin(1.3 * k) * 1.7 + 0.2 for k in range(25)]
    value = sigreg([[v] for v in values], slices=1, knots=4001, t_max=12.0, backend="python")
    assert math.isclose(value, exact_epps_pulley(values), rel_tol=1e-9)


def test_directions_are_unit_vectors_and_seeded() -> None:
    """Directions have norm 1; the same seed gives the same directions, another seed others."""
    directions = sigreg_directions(5, 7, 3)
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-14) for v in directions)
    assert sigreg_directions(5, 7, 3) == directions
    assert sigreg_directions(6, 7, 3) != directions


def test_values_are_reproducible_and_depend_on_the_seed() -> None:
    """The same seed gives the same value; another seed a different one."""
    rows = [[math.sin(r + 2.0 * c) for c in range(5)] for r in range(30)]
    assert sigreg(rows, slices=8, seed=3) == sigreg(rows, slices=8, seed=3)
    assert sigreg(rows, slices=8, seed=3) != sigreg(rows, slices=8, seed=4)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_vectorised_backends_agree_with_the_reference(backend: str) -> None:
    """NumPy and torch use the reference's directions and quadrature: same value to 1e-10."""
    np = pytest.importorskip("numpy")
    rows = (np.random.default_rng(1).standard_normal((64, 20)) * 1.3 + 0.4).tolist()
    reference = sigreg(rows, slices=16, backend="python")
    assert math.isclose(as_float(sigreg(convert(rows, backend), slices=16, backend=backend)), reference, rel_tol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_projections_without_a_usable_phase_give_finite_values(backend: str) -> None:
    """Rows near 1e300 project beyond 2**50 (or overflow): they count as phase-less, the value stays finite."""
    rows = [[1e300, -1e300, 5e299], [-1e300, 1e300, 1e300], [0.5, 0.25, -1.0]]
    value = as_float(sigreg(convert(rows, backend), slices=6, backend=backend))
    assert math.isfinite(value)
    assert value > 0.0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"slices": 0}, "'slices' must be a positive integer: got 0"),
        ({"knots": 1}, "'knots' must be >= 2: got 1"),
        ({"t_max": 0.0}, "'t_max' must be > 0: got 0.0"),
        ({"seed": -1}, "'seed' must be a non-negative integer: got -1"),
        ({"backend": "jax"}, "'backend' must be one of"),
    ],
)
def test_bad_parameters_are_refused(arguments: dict[str, Any], message: str) -> None:
    """Each parameter is validated with the common message shape."""
    with pytest.raises(InputError, match=message):
        sigreg([[1.0, 2.0], [3.0, 4.0]], **arguments)


def test_torch_value_is_differentiable() -> None:
    """For a tensor requiring grad the statistic is a 0-d tensor with a correct gradient (gradcheck)."""
    torch = pytest.importorskip("torch")
    x = torch.randn(9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    value = sigreg(x, slices=4)
    assert isinstance(value, torch.Tensor)
    assert value.dim() == 0
    assert value.requires_grad
    assert torch.autograd.gradcheck(lambda t: sigreg(t, slices=4), (x,))


def test_torch_float32_input_returns_float32_computed_in_float64() -> None:
    """A float32 tensor gives a float32 value equal to the float64 reference of the same numbers."""
    torch = pytest.importorskip("torch")
    x = torch.randn(30, 6, generator=torch.Generator().manual_seed(4))
    value = sigreg(x, slices=8)
    assert value.dtype == torch.float32
    assert math.isclose(float(value), sigreg(x.double().tolist(), slices=8, backend="python"), rel_tol=1e-6)
