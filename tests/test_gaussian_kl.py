"""The Gaussian regulariser computed from embeddings: closed forms, a float64 reference at
D = 1024, the ridge when N <= D, numerical fallbacks, backends and autograd.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from conftest import as_float, convert

from geno_lewm.errors import InputError
from geno_lewm.training.collapse import CollapseMonitor
from geno_lewm.training.spectrum import gaussian_kl, gaussian_kl_terms

BACKENDS = ["python", "numpy", "torch"]


def closed_form(mean: list[float], variances: list[float], eps: float) -> float:
    """KL of a batch with diagonal population covariance ``variances`` and mean ``mean``."""
    d = len(variances)
    return 0.5 * (
        math.fsum(m * m for m in mean) + math.fsum(variances) - math.fsum(math.log(v + eps) for v in variances) - d
    )


def axis_batch(scales: list[float], shift: list[float]) -> list[list[float]]:
    """Rows +-scales[i] e_i plus ``shift``: mean ``shift``, covariance diag(scales**2 / D)."""
    d = len(scales)
    rows = []
    for i, s in enumerate(scales):
        for sign in (1.0, -1.0):
            rows.append([shift[j] + (sign * s if j == i else 0.0) for j in range(d)])
    return rows


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("eps", [1e-6, 0.5])
def test_matches_the_closed_form_of_a_diagonal_covariance(backend: str, eps: float) -> None:
    """Rows +-s_i e_i shifted by c: KL = 0.5 (|c|^2 + sum v_i - sum log(v_i + eps) - D), v_i = s_i^2 / D."""
    scales, shift = [1.0, 2.0, 0.5, 3.0], [0.25, -1.0, 0.0, 2.0]
    rows = axis_batch(scales, shift)
    variances = [s * s / len(scales) for s in scales]
    expected = closed_form(shift, variances, eps)
    terms = gaussian_kl_terms(convert(rows, backend), eps=eps, backend=backend)
    assert math.isclose(terms.value, expected, rel_tol=1e-12)
    assert math.isclose(terms.mean_sq_norm, sum(c * c for c in shift), rel_tol=1e-12)
    assert math.isclose(terms.trace, sum(variances), rel_tol=1e-12)
    assert math.isclose(
        as_float(gaussian_kl(convert(rows, backend), eps=eps, backend=backend)), expected, rel_tol=1e-12
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_standard_gaussian_parameters_give_zero_up_to_the_ridge(backend: str) -> None:
    """A batch with mean 0 and covariance exactly I has KL 0.5 (D eps - D log(1 + eps)) ~ 0."""
    d = 3
    rows = axis_batch([math.sqrt(d)] * d, [0.0] * d)  # covariance = I
    eps = 1e-6
    expected = 0.5 * (d - d * math.log(1 + eps) - d)
    assert math.isclose(gaussian_kl_terms(convert(rows, backend), eps=eps).value, expected, abs_tol=1e-15)


@pytest.mark.parametrize(("n", "backend"), [(256, "python"), (256, "numpy"), (256, "torch"), (2048, "numpy")])
def test_agrees_with_a_float64_reference_at_d_1024(n: int, backend: str) -> None:
    """At D = 1024 (N = 256 <= D and N = 2048 > D), the value equals a direct float64 slogdet of
    the 1024 x 1024 covariance plus eps I, to 1e-9 relative.
    """
    np = pytest.importorskip("numpy")
    x = np.random.default_rng(n).standard_normal((n, 1024)) * 0.8 + 0.1
    mean = x.mean(axis=0)
    centred = x - mean
    covariance = centred.T @ centred / n
    sign, log_det = np.linalg.slogdet(covariance + 1e-6 * np.eye(1024))
    assert sign == 1.0
    reference = 0.5 * (mean @ mean + np.trace(covariance) - log_det - 1024)
    data = x.tolist() if backend == "python" else convert(x.tolist(), backend) if backend == "torch" else x
    terms = gaussian_kl_terms(data, backend=backend)
    assert math.isclose(terms.value, reference, rel_tol=1e-9)
    assert math.isclose(terms.log_det, log_det, rel_tol=1e-9)
    assert terms.method == "cholesky"


@pytest.mark.parametrize("backend", BACKENDS)
def test_ridge_only_directions_are_stated_when_n_is_at_most_d(backend: str) -> None:
    """N <= D: D - N + 1 directions carry no data, each contributing 0.5 (-log eps - 1) exactly."""
    n, d, eps = 5, 12, 1e-6
    rows = [[math.sin(1 + 3 * r + 5 * c) for c in range(d)] for r in range(n)]
    terms = gaussian_kl_terms(convert(rows, backend), eps=eps, backend=backend)
    assert terms.ridge_only_dims == d - n + 1
    assert math.isclose(terms.ridge_term, (d - n + 1) * 0.5 * (-math.log(eps) - 1), rel_tol=1e-15)
    assert terms.value >= terms.ridge_term - d * eps
    assert terms.eps == eps
    tall = gaussian_kl_terms(convert([[float(r * c % 7) for c in range(3)] for r in range(9)], backend), eps=eps)
    assert (tall.ridge_only_dims, tall.ridge_term) == (0, 0.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rows", [[[0.5, -1.0, 2.0]] * 4, [[0.5, -1.0, 2.0]], [[3.0, 0.0]] * 2])
def test_identical_rows_give_a_finite_value(backend: str, rows: list[list[float]]) -> None:
    """Identical rows (and a single row): no direction has variance; the value is finite and exact."""
    eps = 1e-6
    terms = gaussian_kl_terms(convert(rows, backend), eps=eps, backend=backend)
    d = len(rows[0])
    expected = 0.5 * (sum(x * x for x in rows[0]) - d * math.log(eps) - d)
    assert math.isfinite(terms.value)
    assert math.isclose(terms.value, expected, rel_tol=1e-12)
    assert terms.ridge_only_dims == max(0, d - len(rows) + 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rank_one_batch_gives_a_finite_value(backend: str) -> None:
    """A rank-1 batch with N > D: one direction with variance, D - 1 at the ridge."""
    eps = 1e-6
    rows = [[t, 2 * t, -t] for t in (-2.0, -1.0, 0.0, 1.0, 2.0)]  # variance 2 along (1, 2, -1)
    variance = 2.0 * 6.0
    expected = 0.5 * (variance - math.log(variance + eps) - 2 * math.log(eps) - 3)
    terms = gaussian_kl_terms(convert(rows, backend), eps=eps, backend=backend)
    assert math.isclose(terms.value, expected, rel_tol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_scale_uses_floored_eigenvalues(backend: str) -> None:
    """When the covariance's rounding exceeds eps (data at 1e6), the eigenvalue route is taken, with
    rank-deficient directions at exactly log(eps); the value matches the closed form.
    """
    eps = 1e-6
    rows = [[1e6 * t, 2e6 * t, 0.0, 5.0] for t in (-2.0, -1.0, 0.0, 1.0, 2.0)]
    variance = 2.0 * 5e12
    expected = 0.5 * (25.0 + variance - math.log(variance + eps) - 3 * math.log(eps) - 4)
    terms = gaussian_kl_terms(convert(rows, backend), eps=eps, backend=backend)
    assert terms.method == "eigenvalues"
    assert math.isclose(terms.value, expected, rel_tol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_overflowing_batches_give_infinity_not_an_error(backend: str) -> None:
    """Rows of norm ~1e200: ||mu||^2 + tr(Sigma) exceeds the float range; the value is inf."""
    terms = gaussian_kl_terms(convert([[1e200, -3e200], [2e200, 1e200]], backend), backend=backend)
    assert terms.value == math.inf
    assert terms.method == "overflow"
    assert as_float(gaussian_kl(convert([[1e200, 0.0], [0.0, 1e200]], backend), backend=backend)) == math.inf


@pytest.mark.parametrize("eps", [0, -1e-6, float("nan"), float("inf"), "1e-6", True, None])
def test_bad_eps_is_refused_with_the_common_message(eps: Any) -> None:
    """Eps must be a finite number > 0."""
    with pytest.raises(InputError, match=r"^'eps' must be (> 0|finite|a finite real number): got "):
        gaussian_kl([[1.0, 2.0], [2.0, 1.0]], eps=eps)


def test_bad_batches_are_refused() -> None:
    """A non-finite element is an InputError naming row and column."""
    with pytest.raises(InputError, match="'embeddings' has a non-finite value inf at row 1, column 0"):
        gaussian_kl([[1.0, 2.0], [float("inf"), 1.0]])


def test_value_matches_the_terms_and_inputs_are_untouched() -> None:
    """gaussian_kl is the value of gaussian_kl_terms; a NumPy input is unchanged."""
    np = pytest.importorskip("numpy")
    x = np.random.default_rng(0).standard_normal((30, 7))
    before = x.copy()
    assert gaussian_kl(x) == gaussian_kl_terms(x).value
    assert np.array_equal(x, before)


def test_torch_value_is_differentiable_and_matches_autograd_reference() -> None:
    """For a tensor requiring grad, the result is a 0-d tensor whose gradient equals that of a
    direct torch formula (logdet of the D x D covariance + eps I).
    """
    torch = pytest.importorskip("torch")
    for n in (6, 20):  # N <= D (Sylvester side) and N > D
        x = torch.randn(n, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(n), requires_grad=True)
        value = gaussian_kl(x)
        assert isinstance(value, torch.Tensor)
        assert value.dim() == 0
        assert value.requires_grad
        (grad,) = torch.autograd.grad(value, x)
        y = x.detach().clone().requires_grad_(True)
        mean = y.mean(dim=0)
        centred = y - mean
        covariance = centred.T @ centred / n
        reference = 0.5 * (mean @ mean + covariance.trace() - torch.logdet(covariance + 1e-6 * torch.eye(10)) - 10)
        (expected,) = torch.autograd.grad(reference, y)
        assert torch.allclose(value.detach(), reference.detach(), rtol=1e-10)
        assert torch.allclose(grad, expected, rtol=1e-6, atol=1e-9)


def test_torch_gradcheck_passes() -> None:
    """torch.autograd.gradcheck accepts the float64 Gaussian KL (finite differences vs analytic)."""
    torch = pytest.importorskip("torch")
    x = torch.randn(7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gaussian_kl(t, eps=0.1), (x,))


def test_torch_float32_input_returns_float32_computed_in_float64() -> None:
    """A float32 tensor gives a float32 result equal to the float64 reference of the same values."""
    torch = pytest.importorskip("torch")
    x = torch.randn(50, 12, generator=torch.Generator().manual_seed(2))
    value = gaussian_kl(x)
    assert value.dtype == torch.float32
    reference = gaussian_kl_terms(x.double().tolist(), backend="python").value
    assert math.isclose(float(value), reference, rel_tol=1e-6)
    assert math.isclose(gaussian_kl_terms(x).value, reference, rel_tol=1e-10)


def test_torch_result_feeds_the_monitor_as_kl_reg() -> None:
    """The returned 0-d tensor is accepted as the monitor's kl_reg."""
    torch = pytest.importorskip("torch")
    z = torch.randn(16, 4, generator=torch.Generator().manual_seed(3))
    check = CollapseMonitor(1).observe(z, z, kl_reg=gaussian_kl(z), step=1)
    assert check is not None
    assert math.isclose(check.metrics.kl_reg, gaussian_kl_terms(z).value, rel_tol=1e-6)
