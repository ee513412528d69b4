"""Credit-assignment diagnostics on problems with known answers: a linear-quadratic loss
whose gradient is known in closed form, linear losses, and explicit state dicts.
"""

from __future__ import annotations

import copy
import math

import pytest

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
