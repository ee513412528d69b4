"""Credit-assignment diagnostics on problems with known answers: a linear-quadratic loss
whose gradient is known in closed form, linear losses, and explicit state dicts.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from geno_lewm.errors import InputError  # noqa: E402
from geno_lewm.metrics import MetricRegistry  # noqa: E402
from geno_lewm.training.credit import (  # noqa: E402
    NUDGE_RMS_EPS,
    CreditDiagnostics,
    backprop_cosine,
    bridge_residual,
    evaluate_credit,
    feature_drift,
    gradient_cosine,
    nudging_test,
    perturbation_correlation,
    record_credit_diagnostics,
)

BATCH, DIM = 64, 48


class LinearQuadratic:
    """``f(h)_i = 0.5 (h_i - c)^T Q (h_i - c)`` with Q symmetric positive definite:
    the gradient is ``Q (h_i - c)`` and a step's change in loss is a closed-form quadratic.
    """

    def __init__(self, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        m = torch.randn(DIM, DIM, generator=generator, dtype=torch.float64) / math.sqrt(DIM)
        self.q = m @ m.T + torch.eye(DIM, dtype=torch.float64)
        self.c = torch.randn(DIM, generator=generator, dtype=torch.float64)
        self.h = torch.randn(BATCH, DIM, generator=generator, dtype=torch.float64)
        self.random_signal = torch.randn(BATCH, DIM, generator=generator, dtype=torch.float64)

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        """The per-sample losses ``[B]``."""
        centred = h - self.c
        return 0.5 * ((centred @ self.q) * centred).sum(dim=1)

    def gradient(self, h: torch.Tensor) -> torch.Tensor:
        """The closed-form gradient of each sample's loss."""
        return (h - self.c) @ self.q


@pytest.fixture(scope="module")
def lq() -> LinearQuadratic:
    return LinearQuadratic()


# ------------------------------------------------------------------ backprop cosine
def test_exact_gradient_has_backprop_cosine_one(lq: LinearQuadratic) -> None:
    """The closed-form gradient, and any positive multiple of it, has cosine 1; its negative -1."""
    gradient = lq.gradient(lq.h)
    assert backprop_cosine(lq.h, gradient, lq) == pytest.approx(1.0, abs=1e-12)
    assert backprop_cosine(lq.h, 3.0 * gradient, lq) == pytest.approx(1.0, abs=1e-12)
    assert backprop_cosine(lq.h, -gradient, lq) == pytest.approx(-1.0, abs=1e-12)


def test_random_signal_has_backprop_cosine_near_zero(lq: LinearQuadratic) -> None:
    """A signal independent of the gradient averages to about 0 (64 rows of 48 dimensions)."""
    assert abs(backprop_cosine(lq.h, lq.random_signal, lq)) < 0.1


def test_backprop_cosine_matches_autograd_rowwise_mean(lq: LinearQuadratic) -> None:
    """The value is the batch mean of torch's own row cosines with the closed-form gradient."""
    expected = torch.nn.functional.cosine_similarity(lq.random_signal, lq.gradient(lq.h), dim=1).mean()
    assert backprop_cosine(lq.h, lq.random_signal, lq) == pytest.approx(float(expected), abs=1e-12)


def test_zero_signal_rows_count_as_zero_cosine(lq: LinearQuadratic) -> None:
    """A row whose signal is all zeros contributes 0, not NaN."""
    signal = lq.gradient(lq.h).clone()
    signal[: BATCH // 2] = 0.0
    assert backprop_cosine(lq.h, signal, lq) == pytest.approx(0.5, abs=1e-12)


def test_loss_that_ignores_h_gives_zero_cosine() -> None:
    """If the loss does not use h its gradient is zero, so every cosine is 0."""
    weight = torch.ones(3, requires_grad=True)
    h = torch.randn(4, 3)
    assert backprop_cosine(h, torch.ones(4, 3), lambda x: (weight * 0 + x.detach()).sum(dim=1)) == 0.0


# --------------------------------------------------------------------- nudging
@pytest.mark.parametrize("eta", [0.01, 0.3])
def test_nudging_matches_the_closed_form(lq: LinearQuadratic, eta: float) -> None:
    """f(h - eta a_n) - f(h) = -eta <g, a_n> + eta^2/2 a_n^T Q a_n, averaged over rows."""
    for signal in (lq.gradient(lq.h), lq.random_signal):
        rms = signal.pow(2).mean(dim=1, keepdim=True).sqrt()
        normalised = signal / (rms + NUDGE_RMS_EPS)
        gradient = lq.gradient(lq.h)
        closed = -eta * (gradient * normalised).sum(dim=1) + 0.5 * eta**2 * ((normalised @ lq.q) * normalised).sum(
            dim=1
        )
        assert nudging_test(lq.h, signal, lq, eta=eta) == pytest.approx(float(closed.mean()), rel=1e-9)


def test_nudging_sign_tells_downhill_from_uphill(lq: LinearQuadratic) -> None:
    """Against the gradient the loss falls (negative); along it, the loss rises."""
    gradient = lq.gradient(lq.h)
    assert nudging_test(lq.h, gradient, lq) < 0
    assert nudging_test(lq.h, -gradient, lq) > 0


def test_nudging_ignores_the_signal_scale(lq: LinearQuadratic) -> None:
    """RMS normalisation makes a signal and its 1000-fold copy nudge alike."""
    gradient = lq.gradient(lq.h)
    assert nudging_test(lq.h, 1000.0 * gradient, lq) == pytest.approx(nudging_test(lq.h, gradient, lq), rel=1e-6)


# -------------------------------------------------------- perturbation correlation
def test_perturbation_correlation_is_near_one_for_the_gradient(lq: LinearQuadratic) -> None:
    """The exact gradient predicts the loss changes up to the O(eps^2) curvature term."""
    assert perturbation_correlation(lq.h, lq.gradient(lq.h), lq) > 0.999


def test_perturbation_correlation_is_near_zero_for_a_random_signal(lq: LinearQuadratic) -> None:
    """A random signal predicts nothing: |r| is small over 64 * 32 pairs."""
    assert abs(perturbation_correlation(lq.h, lq.random_signal, lq)) < 0.1


def test_linear_loss_is_predicted_exactly() -> None:
    """For f(h) = <h, w> the true change is exactly <w, eps v>: correlation 1 to rounding."""
    generator = torch.Generator().manual_seed(3)
    w = torch.randn(10, dtype=torch.float64, generator=generator)
    h = torch.randn(8, 10, dtype=torch.float64, generator=generator)
    signal = w.expand(8, 10)
    assert perturbation_correlation(h, signal, lambda x: x @ w, num_directions=5) == pytest.approx(1.0, abs=1e-9)


def test_perturbation_correlation_is_seeded_and_leaves_global_rng_alone(lq: LinearQuadratic) -> None:
    """Same seed, same value; another seed, another value; torch's global RNG state untouched."""
    state = torch.random.get_rng_state()
    first = perturbation_correlation(lq.h, lq.random_signal, lq, num_directions=4, seed=7)
    again = perturbation_correlation(lq.h, lq.random_signal, lq, num_directions=4, seed=7)
    other = perturbation_correlation(lq.h, lq.random_signal, lq, num_directions=4, seed=8)
    assert first == again
    assert first != other
    assert torch.equal(torch.random.get_rng_state(), state)


def test_no_variance_gives_zero_correlation() -> None:
    """A zero signal predicts no change at all: the correlation is 0, not NaN."""
    h = torch.randn(4, 3, dtype=torch.float64)
    assert perturbation_correlation(h, torch.zeros(4, 3, dtype=torch.float64), lambda x: (x**2).sum(dim=1)) == 0.0


# ------------------------------------------------------------- manners and errors
def test_results_are_floats_and_nothing_is_modified() -> None:
    """Diagnostics on a real MLP loss return floats, leave h, a and the model's .grad untouched."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    h = torch.randn(5, 6)
    a = torch.randn(5, 6)
    h_before, a_before = h.clone(), a.clone()
    diagnostics = evaluate_credit(h, a, lambda x: model(x).squeeze(1), num_directions=3)
    assert all(type(v) is float for v in diagnostics.as_dict().values())
    assert torch.equal(h, h_before) and torch.equal(a, a_before)
    assert all(p.grad is None for p in model.parameters())
    assert not h.requires_grad


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda lq: backprop_cosine(lq.h, lq.h[:, :3], lq), r"'a' must have the shape of 'h': got \[64, 3\]"),
        (lambda lq: backprop_cosine(lq.h[0], lq.h[0], lq), r"'h' must have shape \[B, \.\.\.\]"),
        (lambda lq: backprop_cosine(lq.h.tolist(), lq.h, lq), "'h' must be a torch.Tensor"),
        (lambda lq: backprop_cosine(lq.h, lq.h, lambda x: x.sum()), r"'loss_fn' must return one value per sample"),
        (lambda lq: backprop_cosine(lq.h, lq.h, lambda x: x.detach().sum(dim=1)), "depend differentiably"),
        (lambda lq: nudging_test(lq.h, lq.h, lq, eta=0), "'eta' must be > 0: got 0"),
        (lambda lq: nudging_test(lq.h, lq.h, lambda x: x.sum(dim=1) / 0.0), r"'loss_fn\(\.\.\.\)' has a non-finite"),
        (lambda lq: perturbation_correlation(lq.h, lq.h, lq, num_directions=0), "'num_directions' must be a positive"),
        (lambda lq: perturbation_correlation(lq.h, lq.h, lq, seed=-1), "'seed' must be a non-negative integer"),
        (lambda lq: backprop_cosine(lq.h, lq.h, "loss"), "'loss_fn' must be callable"),
    ],
)
def test_bad_inputs_are_refused(lq: LinearQuadratic, call: object, message: str) -> None:
    """Mismatched shapes, non-tensors, wrong loss shapes, graph-less or non-finite losses and bad options raise."""
    with pytest.raises(InputError, match=message):
        call(lq)  # type: ignore[operator]


def test_non_finite_state_is_reported_with_its_index() -> None:
    """A NaN in h is named with its index."""
    h = torch.zeros(2, 3)
    h[1, 2] = math.nan
    with pytest.raises(InputError, match=r"'h' has a non-finite value nan at index \[1, 2\]"):
        backprop_cosine(h, torch.zeros(2, 3), lambda x: x.sum(dim=1))


# ------------------------------------------------------------------ feature drift
def test_feature_drift_closed_form_and_skips() -> None:
    """||(0, 0.5)|| / ||(3, 4)|| = 0.1; a zero-initialised bias and an integer buffer are skipped."""
    initial = {"w": torch.tensor([3.0, 4.0]), "b": torch.zeros(2), "steps": torch.tensor(3)}
    final = {"w": torch.tensor([3.0, 4.5]), "b": torch.ones(2), "steps": torch.tensor(9)}
    assert feature_drift(initial, final) == {"w": pytest.approx(0.1, rel=1e-15)}


@pytest.mark.parametrize("scale", [1e-300, 1e300])
def test_feature_drift_of_extreme_weights_is_finite(scale: float) -> None:
    """Weights near the ends of the float range give the same ratio as ordinary ones."""
    initial = {"w": torch.tensor([3.0, 4.0], dtype=torch.float64) * scale}
    final = {"w": torch.tensor([3.0, 4.5], dtype=torch.float64) * scale}
    assert feature_drift(initial, final, min_norm=1e-305)["w"] == pytest.approx(0.1, rel=1e-12)


def test_feature_drift_skips_initial_norms_below_min_norm() -> None:
    """A parameter whose initial norm is under min_norm (1e-8 by default) has no ratio."""
    initial = {"tiny": torch.tensor([1e-9, 0.0]), "kept": torch.tensor([1e-7, 0.0])}
    final = {"tiny": torch.tensor([1.0, 0.0]), "kept": torch.tensor([2e-7, 0.0])}
    assert list(feature_drift(initial, final)) == ["kept"]


def test_feature_drift_of_a_trained_model_matches_the_definition() -> None:
    """After real optimiser steps each parameter's drift equals hypot(diff) / hypot(initial)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 2))
    start = copy.deepcopy(model.state_dict())
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        optimiser.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        optimiser.step()
    drift = feature_drift(start, model.state_dict())
    assert "1.num_batches_tracked" not in drift
    assert "1.bias" not in drift  # zero at initialisation
    for name, value in drift.items():
        before = start[name].double().flatten().tolist()
        after = model.state_dict()[name].double().flatten().tolist()
        expected = math.dist(after, before) / math.hypot(*before)
        assert value == pytest.approx(expected, rel=1e-12)


def test_feature_drift_refuses_mismatched_state_dicts() -> None:
    """Different names or shapes are errors naming them, not silently skipped."""
    with pytest.raises(InputError, match=r"only in initial \['b'\], only in final \[\]"):
        feature_drift({"w": torch.ones(2), "b": torch.ones(2)}, {"w": torch.ones(2)})
    with pytest.raises(InputError, match=r"parameter 'w' changed shape: \[2\] to \[3\]"):
        feature_drift({"w": torch.ones(2)}, {"w": torch.ones(3)})


# ---------------------------------------------------------------- bridge residual
def _soft_min(values: list[float], lam: float) -> float:
    """-lam * log(sum exp(-v / lam)) + lam * log K, stably, in plain Python."""
    low = min(values)
    return low - lam * math.log(math.fsum(math.exp(-(v - low) / lam) for v in values)) + lam * math.log(len(values))


def test_bridge_residual_matches_a_plain_python_soft_min() -> None:
    """With linear value nets, the residual equals mean |V(h) - softmin_k V_bar(h_k)| computed by hand."""
    generator = torch.Generator().manual_seed(2)
    h = torch.randn(5, 3, dtype=torch.float64, generator=generator)
    nexts = torch.randn(4, 5, 3, dtype=torch.float64, generator=generator)
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    lam = 0.3
    result = bridge_residual(lambda x: x @ w, lambda x: 2 * x.sum(dim=1), h, nexts, temperature=lam)
    expected = []
    for i in range(5):
        targets = [2 * float(nexts[k, i].sum()) for k in range(4)]
        expected.append(abs(float(h[i] @ w) - _soft_min(targets, lam)))
    assert result == pytest.approx(math.fsum(expected) / 5, rel=1e-12)


def test_bridge_residual_limits_are_min_and_mean() -> None:
    """A tiny temperature makes the target the minimum, a huge one the mean, of the K values."""
    h = torch.zeros(1, 1, dtype=torch.float64)
    nexts = torch.tensor([1.0, 2.0, 6.0], dtype=torch.float64).reshape(3, 1, 1)
    zero = lambda x: x.sum(dim=1) * 0  # noqa: E731
    identity = lambda x: x.sum(dim=1)  # noqa: E731
    assert bridge_residual(zero, identity, h, nexts, temperature=1e-4) == pytest.approx(1.0, abs=1e-3)
    assert bridge_residual(zero, identity, h, nexts, temperature=1e6) == pytest.approx(3.0, rel=1e-5)


def test_bridge_residual_is_zero_at_a_consistent_value() -> None:
    """When every next state equals h and V_bar = V, the soft-min of K equal values is V: residual 0."""
    h = torch.randn(6, 4, dtype=torch.float64)
    value = lambda x: (x**2).sum(dim=1)  # noqa: E731
    assert bridge_residual(value, value, h, h.expand(5, 6, 4), temperature=0.1) == pytest.approx(0.0, abs=1e-12)


def test_bridge_residual_checks_next_state_shape() -> None:
    """next_states must be [K, B, ...] with the batch size of h."""
    with pytest.raises(InputError, match=r"'next_states' must have shape \[K, 3, \.\.\.\]"):
        bridge_residual(lambda x: x.sum(dim=1), lambda x: x.sum(dim=1), torch.ones(3, 2), torch.ones(2, 4, 2))


# ---------------------------------------------------------------------- records
def test_record_credit_diagnostics_sets_gauges_and_events(
    registry: MetricRegistry, recording_logger: object, lq: LinearQuadratic
) -> None:
    """Each diagnostic becomes a gauge and a training.metric event with its unit and step."""
    diagnostics = evaluate_credit(lq.h, lq.gradient(lq.h), lq, num_directions=4)
    record_credit_diagnostics(diagnostics, logger=recording_logger, step=30, registry=registry)  # type: ignore[arg-type]
    for name, value in diagnostics.as_dict().items():
        assert registry.value(f"geno_lewm.training.credit.{name}") == value
    events = recording_logger.events("info", "training.metric")  # type: ignore[attr-defined]
    assert [(e["name"].rsplit(".", 1)[1], e["value"], e["step"]) for e in events] == [
        (name, value, 30) for name, value in diagnostics.as_dict().items()
    ]
    assert {e["unit"] for e in events} == {"1", "loss"}
    with pytest.raises(InputError, match="must be a CreditDiagnostics"):
        record_credit_diagnostics({"backprop_cosine": 1.0}, registry=registry)  # type: ignore[arg-type]


def test_credit_diagnostics_field_order() -> None:
    """as_dict keeps the declaration order."""
    assert list(CreditDiagnostics(1.0, -0.5, 0.9).as_dict()) == [
        "backprop_cosine",
        "nudge_delta",
        "perturbation_correlation",
    ]


# ------------------------------------------------------------- cosine of two given tensors
def exact_mean_cosine(a: list[list[float]], g: list[list[float]]) -> float:
    """(1/B) sum_i <a_i, g_i> / (||a_i|| ||g_i||) from exact products (fractions) and a
    50-digit square root (decimal); a zero row contributes 0.
    """
    with localcontext() as context:
        context.prec = 50
        total = Decimal(0)
        for x, y in zip(a, g):
            dot = sum((Fraction(p) * Fraction(q) for p, q in zip(x, y)), Fraction(0))
            squares = sum((Fraction(p) ** 2 for p in x), Fraction(0)) * sum((Fraction(q) ** 2 for q in y), Fraction(0))
            if squares:
                norms = (Decimal(squares.numerator) / Decimal(squares.denominator)).sqrt()
                total += Decimal(dot.numerator) / Decimal(dot.denominator) / norms
        return float(total / len(a))


def signed_powers(low: int, high: int) -> st.SearchStrategy[float]:
    """Floats +-m * 2**e (m in [1, 2)) spread over the exponents, and zero."""
    magnitude = st.builds(math.ldexp, st.floats(1.0, 2.0, exclude_max=True), st.integers(low, high))
    return st.one_of(st.just(0.0), magnitude, magnitude.map(lambda v: -v))


@pytest.mark.parametrize("exponent", [-1074, -1060, -1022, -500, 0, 500, 1000, 1020])
def test_gradient_cosine_equals_the_exact_cosine_at_any_scale(exponent: int) -> None:
    """Rows scaled by 2**exponent (subnormal to near 1.8e308), each row its own scale: the exact mean cosine."""
    generator = torch.Generator().manual_seed(exponent + 2000)
    base_a = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    base_g = base_a + 0.5 * torch.randn(6, 5, generator=generator, dtype=torch.float64)
    row_exponents = torch.tensor([exponent, exponent, exponent - 40, 0, exponent, 1], dtype=torch.float64)
    a = base_a * torch.pow(2.0, row_exponents.clamp(-1074, 1020)).unsqueeze(1)
    g = base_g * torch.pow(2.0, torch.full((6,), float(max(min(exponent, 1020), -1074)), dtype=torch.float64))[:, None]
    result = gradient_cosine(a, g)
    assert result == pytest.approx(exact_mean_cosine(a.tolist(), g.tolist()), abs=1e-14)
    assert -1.0 <= result <= 1.0


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 4), st.integers(1, 5), st.data())
def test_gradient_cosine_is_exact_for_any_finite_rows(rows: int, columns: int, data: st.DataObject) -> None:
    """Any finite entries, subnormal to 1.8e308, zero rows included: the exact mean cosine to rounding."""
    entries = st.lists(
        st.lists(signed_powers(-1074, 1023), min_size=columns, max_size=columns), min_size=rows, max_size=rows
    )
    a, g = data.draw(entries), data.draw(entries)
    result = gradient_cosine(torch.tensor(a, dtype=torch.float64), torch.tensor(g, dtype=torch.float64))
    assert result == pytest.approx(exact_mean_cosine(a, g), abs=1e-14)


def test_gradient_cosine_counts_a_zero_row_as_zero() -> None:
    """A zero signal row and a zero gradient row each contribute 0 to the mean, not NaN: (0 + 0 + 1) / 3."""
    a = torch.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, -1.0]], dtype=torch.float64)
    g = torch.tensor([[1.0, 1.0], [0.0, 0.0], [6.0, -2.0]], dtype=torch.float64)
    assert gradient_cosine(a, g) == pytest.approx(1.0 / 3.0, abs=1e-16)
    assert gradient_cosine(torch.zeros(2, 3), torch.zeros(2, 3)) == 0.0


@pytest.mark.parametrize("power", [-1074, -1022, -300, 0, 300, 971])
def test_rows_equal_up_to_a_power_of_two_have_cosine_exactly_one(power: int) -> None:
    """A signal 2**k g, anywhere in the float range (subnormal rows included): exactly 1; its negative exactly -1."""
    g = torch.tensor([[6.0, -1.0, 12.0], [1.0, 1.0, 0.0]], dtype=torch.float64)  # integers: exact even at 2**-1074
    a = g * 2.0**power if power > -1000 else g * 2.0**-1000 * 2.0 ** (power + 1000)
    assert a.reshape(-1).tolist() == [math.ldexp(v, power) for v in g.reshape(-1).tolist()]  # scaled exactly
    assert gradient_cosine(a, g) == 1.0
    assert gradient_cosine(-a, g) == -1.0


def test_gradient_cosine_of_the_autograd_gradient_is_backprop_cosine() -> None:
    """On a non-linear loss, gradient_cosine(a, autograd gradient) is backprop_cosine(h, a, loss), bit for bit."""
    generator = torch.Generator().manual_seed(5)
    weight = torch.randn(7, 4, generator=generator)
    h = torch.randn(9, 3, 7, generator=generator)  # rows are flattened [3, 7] blocks
    a = torch.randn(9, 3, 7, generator=generator)

    def loss(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ weight).pow(2).sum(dim=(1, 2))

    x = h.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(loss(x).sum(), x)
    assert gradient_cosine(a, gradient) == backprop_cosine(h, a, loss)
    assert gradient_cosine(gradient, gradient) == 1.0


class LinearQuadraticRegulator:
    """A finite-horizon LQR: ``x_{s+1} = A x_s + B u_s``, cost ``sum_s (x'Qx + u'Ru) / 2 + x_T'Q_T x_T / 2``.

    Under the optimal feedback ``u_s = -K_s x_s`` the cost-to-go from step t is
    ``x' P_t x / 2`` (Riccati), so the exact costate at ``h`` is ``P_t h``.
    """

    def __init__(self, horizon: int = 6, state: int = 4, control: int = 2) -> None:
        generator = torch.Generator().manual_seed(11)
        self.a = torch.eye(state, dtype=torch.float64) + 0.3 * torch.randn(state, state, generator=generator)
        self.b = torch.randn(state, control, generator=generator, dtype=torch.float64)
        m = torch.randn(state, state, generator=generator, dtype=torch.float64)
        self.q = m @ m.T / state + torch.eye(state, dtype=torch.float64)
        self.r = 0.5 * torch.eye(control, dtype=torch.float64)
        self.horizon = horizon
        p = self.q.clone()  # P_T = Q_T = Q
        self.gains: list[torch.Tensor] = [torch.empty(0)] * horizon
        self.p: list[torch.Tensor] = [torch.empty(0)] * horizon + [p]
        for step in reversed(range(horizon)):
            gain = torch.linalg.solve(self.r + self.b.T @ p @ self.b, self.b.T @ p @ self.a)
            p = self.q + self.a.T @ p @ (self.a - self.b @ gain)
            p = 0.5 * (p + p.T)
            self.gains[step], self.p[step] = gain, p

    def cost_to_go(self, start: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """The per-sample cost of rolling rows ``h`` forward from step ``start`` under the optimal feedback."""

        def cost(h: torch.Tensor) -> torch.Tensor:
            x, total = h, torch.zeros(h.shape[0], dtype=h.dtype)
            for step in range(start, self.horizon):
                u = -x @ self.gains[step].T
                total = total + 0.5 * (((x @ self.q) * x).sum(dim=1) + ((u @ self.r) * u).sum(dim=1))
                x = x @ self.a.T + u @ self.b.T
            return total + 0.5 * ((x @ self.q) * x).sum(dim=1)

        return cost

    def costate(self, start: int, h: torch.Tensor) -> torch.Tensor:
        """The closed-form costate ``P_start h`` of each row."""
        return h @ self.p[start]


def test_exact_costate_cosine_on_a_linear_quadratic_regulator() -> None:
    """The closed-form costate has backprop cosine 1; a myopic signal's cosine with it is its backprop cosine."""
    lqr = LinearQuadraticRegulator()
    h = torch.randn(32, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for start in (0, 3, 5):
        costate, cost = lqr.costate(start, h), lqr.cost_to_go(start)
        assert backprop_cosine(h, costate, cost) == pytest.approx(1.0, abs=1e-12)
        myopic = h @ lqr.q  # the gradient of the immediate state cost alone
        expected = backprop_cosine(h, myopic, cost)
        assert gradient_cosine(myopic, costate) == pytest.approx(expected, abs=1e-12)
        assert expected < 0.99  # the future matters: the myopic signal is measurably off
    assert gradient_cosine(lqr.costate(5, h), lqr.costate(5, h)) == 1.0


@pytest.mark.parametrize(
    ("a", "g", "message"),
    [
        ([[1.0, 2.0]], torch.ones(1, 2), "'a' must be a torch.Tensor"),
        (torch.ones(1, 2), torch.ones(1, 2, dtype=torch.int64), "'g' must hold floating-point numbers"),
        (torch.ones(2, 3), torch.ones(2, 4), r"'g' must have the shape of 'a': got \[2, 4\] and \[2, 3\]"),
        (torch.ones(3), torch.ones(3), r"'a' must have shape \[B, \.\.\.\]"),
        (torch.ones(0, 3), torch.ones(0, 3), r"'a' must have shape \[B, \.\.\.\] with B >= 1"),
        (
            torch.ones(2, 2),
            torch.tensor([[1.0, math.inf], [0.0, 1.0]]),
            r"'g' has a non-finite value inf at index \[0, 1\]",
        ),
    ],
)
def test_gradient_cosine_refuses_bad_input(a: object, g: object, message: str) -> None:
    """Non-tensors, integer tensors, mismatched or featureless shapes and non-finite values raise InputError."""
    with pytest.raises(InputError, match=message):
        gradient_cosine(a, g)  # type: ignore[arg-type]
