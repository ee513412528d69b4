"""Credit-assignment diagnostics at the ends of the float64 range: temperatures from
subnormal to 1.8e308, values and weights from subnormal to 1.8e308, against exact
references (``decimal`` and ``fractions``) and closed-form limits.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import torch
else:
    torch = pytest.importorskip("torch")

from hypothesis import given, settings
from hypothesis import strategies as st

from geno_lewm.errors import InputError
from geno_lewm.training.credit import (
    backprop_cosine,
    bridge_residual,
    feature_drift,
    nudging_test,
    perturbation_correlation,
)

EPS = sys.float_info.epsilon
TINIEST = math.ulp(0.0)  # 5e-324, the smallest subnormal
LARGEST = sys.float_info.max

BridgeCase = tuple[list[float], list[list[float]], float]
"""V values ``[B]``, target values ``[K][B]`` and a temperature."""


# ---------------------------------------------------------------- exact references
def _exact_soft_min(values: list[float], lam: float) -> Decimal:
    """``-lam * log(mean_k exp(-v_k / lam))`` to 80 significant digits, for finite floats."""
    with localcontext() as context:
        context.prec = 80
        exact = [Decimal(v) for v in values]
        low = min(exact)
        temperature = Decimal(lam)
        x = [(v - low) / temperature for v in exact]
        if max(x) < Decimal("1e-20"):
            # exp(-x) rounds to 1 at any usable precision: the cumulant series to second
            # order, whose next term is smaller by a factor max(x) < 1e-20.
            first = sum(x, Decimal(0)) / len(x)
            second = sum((xk * xk for xk in x), Decimal(0)) / len(x)
            offset = first - (second - first * first) / 2
        else:
            # exp(-10000) is below 1e-4300: nothing at 80 digits next to the minimum's 1.
            total = sum(((-xk).exp() for xk in x if xk < 10000), Decimal(0))
            offset = Decimal(len(x)).ln() - total.ln()
        return low + temperature * offset


def _exact_residual(now: list[float], targets: list[list[float]], lam: float) -> float:
    """Mean over rows of ``|now_i - softmin_k targets[k][i]|``, exactly, rounded once to float."""
    with localcontext() as context:
        context.prec = 80
        rows = [abs(Decimal(v) - _exact_soft_min([t[i] for t in targets], lam)) for i, v in enumerate(now)]
        return float(sum(rows, Decimal(0)) / len(rows))


def _exact_drift(start: list[float], end: list[float]) -> float:
    """``||end - start|| / ||start||`` from exact sums of squares, rounded once to float."""
    numerator = sum((Fraction(b) - Fraction(a)) ** 2 for a, b in zip(start, end, strict=True))
    denominator = sum(Fraction(a) ** 2 for a in start)
    with localcontext() as context:
        context.prec = 60
        ratio = Fraction(numerator, denominator)
        return float((Decimal(ratio.numerator) / Decimal(ratio.denominator)).sqrt())


def _first(x: torch.Tensor) -> torch.Tensor:
    """A value net that reads its value off the first feature of each state."""
    return x[:, 0]


def _bridge(now: list[float], targets: list[list[float]], lam: float) -> float:
    """``bridge_residual`` with ``V(h)_i = now[i]`` and ``V_bar(h_next_k)_i = targets[k][i]``."""
    h = torch.tensor(now, dtype=torch.float64).reshape(len(now), 1)
    nexts = torch.tensor(targets, dtype=torch.float64).reshape(len(targets), len(now), 1)
    return bridge_residual(_first, _first, h, nexts, temperature=lam)


def _flat(rows: list[list[float]]) -> list[float]:
    """The entries of a list of rows, row by row."""
    return [value for row in rows for value in row]


def _tolerance(*values: float) -> float:
    """Rounding allowance: a few dozen ulps of the largest magnitude, and of the subnormal grid."""
    return 64 * EPS * max(abs(v) for v in values) + 64 * TINIEST


# ---------------------------------------------------------------- strategies
def _powers(low: int, high: int) -> st.SearchStrategy[float]:
    """Positive floats ``m * 2**e``, ``m`` in ``[1, 2)``, spread evenly over the exponents."""
    return st.builds(math.ldexp, st.floats(1.0, 2.0, exclude_max=True), st.integers(low, high))


TEMPERATURES = _powers(-1063, 996)  # about 1e-320 to 1e300
MAGNITUDES = _powers(-997, 996)  # about 1e-300 to 1e300
SIGNED = st.one_of(st.just(0.0), MAGNITUDES, MAGNITUDES.map(lambda v: -v))
ANY_FINITE = st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True)


@st.composite
def _bridge_case(draw: st.DrawFn) -> BridgeCase:
    """Values either spread over all scales or within a few temperatures of one centre,
    where the soft-min is neither the minimum nor the mean.
    """
    lam = draw(TEMPERATURES)
    count, rows = draw(st.integers(1, 6)), draw(st.integers(1, 3))
    if draw(st.booleans()):
        targets = [[draw(SIGNED) for _ in range(rows)] for _ in range(count)]
    else:
        centre = draw(SIGNED)
        targets = [[centre + lam * draw(st.floats(-4.0, 4.0)) for _ in range(rows)] for _ in range(count)]
    now = [draw(SIGNED) for _ in range(rows)]
    return now, targets, lam


# ---------------------------------------------------------------- bridge residual: reproductions
@pytest.mark.parametrize("lam", [1e-310, TINIEST, 1e-300])
def test_subnormal_temperature_gives_the_minimum_exactly(lam: float) -> None:
    """At lam 1e-310 (and 5e-324, 1e-300) the target is min(1, 2, 6) = 1, not inf."""
    assert _bridge([0.0], [[1.0], [2.0], [6.0]], lam) == 1.0


def test_tiny_temperature_with_large_values_gives_the_minimum() -> None:
    """A temperature of 1e-300 with values near 1e10: v / lam is past the float range, yet the target is 1e10."""
    assert _bridge([0.0], [[1e10], [2e10], [6e10]], 1e-300) == 1e10


@pytest.mark.parametrize("lam", [1e20, 1e100, 1e308, LARGEST])
def test_huge_temperature_gives_the_mean(lam: float) -> None:
    """For lam far above the spread the target is the mean 3 of (1, 2, 6), not 0 or nan."""
    assert _bridge([0.0], [[1.0], [2.0], [6.0]], lam) == pytest.approx(3.0, rel=4 * EPS)


@pytest.mark.parametrize("lam", [TINIEST, 1e-310, 1e-300, 1e-4, 0.1, 1.0, 10.0, 1e6, 1e20, 1e300, LARGEST])
def test_bridge_residual_equals_the_exact_soft_min(lam: float) -> None:
    """Across 600 decades of temperature the residual is the 80-digit reference to rounding."""
    generator = torch.Generator().manual_seed(5)
    targets = (torch.randn(5, 4, dtype=torch.float64, generator=generator) * 3).tolist()
    now = torch.randn(4, dtype=torch.float64, generator=generator).tolist()
    expected = _exact_residual(now, targets, lam)
    assert abs(_bridge(now, targets, lam) - expected) <= _tolerance(*now, *_flat(targets))


@pytest.mark.parametrize("lam", [1e-320, 1.0, 1e300, 1e308, LARGEST])
def test_values_near_the_float_range_give_the_exact_target(lam: float) -> None:
    """Targets -1.7e308, 1.7e308 and 1 (a gap past the float range) give the exact residual."""
    targets = [[-1.7e308], [1.7e308], [1.0]]
    expected = _exact_residual([0.0], targets, lam)
    assert math.isfinite(expected)
    assert _bridge([0.0], targets, lam) == pytest.approx(expected, rel=1e-13)


def test_residual_mean_does_not_overflow_in_the_sum() -> None:
    """Four residuals of 1.5e308 average to 1.5e308, though their sum is past the float range."""
    assert _bridge([1.5e308] * 4, [[0.0] * 4], 0.1) == 1.5e308


def test_residual_past_the_float_range_is_inf() -> None:
    """V = 1.7e308 against a target of -1.7e308: the residual 3.4e308 has no float but inf."""
    assert _bridge([1.7e308], [[-1.7e308]], 1.0) == math.inf


@pytest.mark.parametrize("lam", [0.0, -0.0, -1.0, -TINIEST, math.inf, -math.inf, math.nan])
def test_bridge_residual_refuses_bad_temperatures(lam: float) -> None:
    """Zero, negative, infinite and NaN temperatures raise InputError naming the field."""
    with pytest.raises(InputError, match="'temperature' must be"):
        _bridge([0.0], [[1.0], [2.0]], lam)


# ---------------------------------------------------------------- bridge residual: properties
@settings(max_examples=80, deadline=None)
@given(_bridge_case())
def test_bridge_residual_matches_the_exact_reference_everywhere(case: BridgeCase) -> None:
    """For temperatures 1e-320..1e300 and values 1e-300..1e300 the residual is finite and exact to rounding."""
    now, targets, lam = case
    result = _bridge(now, targets, lam)
    assert math.isfinite(result)
    assert abs(result - _exact_residual(now, targets, lam)) <= _tolerance(*now, *_flat(targets))


@settings(max_examples=80, deadline=None)
@given(_bridge_case())
def test_soft_min_target_lies_within_its_bounds(case: BridgeCase) -> None:
    """With V = min_k v_k, the residual (target - min) is in [0, min(lam log K, mean - min)],
    and is exactly 0 once lam log K is below a quarter ulp of the minimum.
    """
    _, targets, lam = case
    column = [row[0] for row in targets]
    low, count = min(column), len(column)
    offset = _bridge([low], [[v] for v in column], lam)
    mean_gap = math.fsum(v - low for v in column) / count
    assert offset >= 0.0
    assert offset <= lam * math.log(count) * (1 + 8 * EPS) + _tolerance(*column)
    assert offset <= mean_gap * (1 + 8 * EPS) + _tolerance(*column)
    if lam * math.log(count) < math.ulp(low) / 4:
        assert offset == 0.0


@settings(max_examples=80, deadline=None)
@given(ANY_FINITE | st.just(math.inf) | st.just(-math.inf) | st.just(math.nan))
def test_any_temperature_gives_a_finite_residual_or_input_error(lam: float) -> None:
    """Every float temperature either gives a finite residual (lam > 0, finite) or raises InputError."""
    valid = math.isfinite(lam) and lam > 0
    if valid:
        assert math.isfinite(_bridge([0.5], [[1.0], [-2.0], [6.0]], lam))
    else:
        with pytest.raises(InputError):
            _bridge([0.5], [[1.0], [-2.0], [6.0]], lam)


# ---------------------------------------------------------------- feature drift: reproductions
def _drift(start: list[float], end: list[float], **options: float) -> dict[str, float]:
    """``feature_drift`` of one float64 parameter ``w``."""
    initial = {"w": torch.tensor(start, dtype=torch.float64)}
    final = {"w": torch.tensor(end, dtype=torch.float64)}
    return feature_drift(initial, final, **options)


@pytest.mark.parametrize("value", [1e-310, TINIEST, 5e-309, 2e-308])
def test_subnormal_parameter_is_skipped_under_the_default_min_norm(value: float) -> None:
    """A parameter whose largest entry is subnormal has norm far below 1e-8: skipped, no OverflowError."""
    assert _drift([value, -value / 2], [2 * value, 0.0]) == {}


def test_subnormal_matrix_beside_a_normal_one_is_skipped() -> None:
    """Only the normal parameter of a state dict with a subnormal matrix gets a drift."""
    initial = {"tiny": torch.full((3, 4), 1e-315, dtype=torch.float64), "w": torch.tensor([3.0, 4.0])}
    final = {"tiny": torch.full((3, 4), 3e-315, dtype=torch.float64), "w": torch.tensor([3.0, 4.5])}
    assert feature_drift(initial, final) == {"w": pytest.approx(0.1, rel=1e-15)}


@pytest.mark.parametrize(("start", "end"), [([1e-310, 3e-310], [2e-310, 3e-310]), ([TINIEST], [3 * TINIEST])])
def test_subnormal_parameter_drift_is_exact_under_a_tiny_min_norm(start: list[float], end: list[float]) -> None:
    """With min_norm 5e-324 a subnormal parameter's drift is the exact ratio of norms."""
    assert _drift(start, end, min_norm=TINIEST) == {"w": pytest.approx(_exact_drift(start, end), rel=1e-15)}


@pytest.mark.parametrize(("start", "end"), [([1e308, -1e308], [-1e308, 1e308]), ([-1.7e308, 1.0], [1.7e308, 1.0])])
def test_opposite_entries_near_the_float_range_give_a_finite_drift(start: list[float], end: list[float]) -> None:
    """Entries flipping sign near 1.8e308 give drift 2 (their difference is past the float range)."""
    assert _drift(start, end) == {"w": pytest.approx(_exact_drift(start, end), rel=1e-15)}


def test_growth_past_the_float_range_is_inf() -> None:
    """A parameter that grew from 1e-300 to 1e300 has drift 1e600: inf, not an error."""
    assert _drift([1e-300], [1e300], min_norm=1e-310) == {"w": math.inf}


@pytest.mark.parametrize("value", ["abc", object(), [[1.0], [2.0, 3.0]]])
def test_feature_drift_refuses_values_that_are_not_arrays(value: object) -> None:
    """A string, an object or a ragged list raises InputError naming the parameter."""
    with pytest.raises(InputError, match=r"initial\['w'\]. must be a tensor, array or nested list"):
        feature_drift({"w": value}, {"w": torch.ones(2)})


# ---------------------------------------------------------------- feature drift: properties
ENTRIES = st.lists(ANY_FINITE, min_size=1, max_size=6)


@settings(max_examples=80, deadline=None)
@given(ENTRIES, st.data(), st.one_of(_powers(-1074, 1000), st.just(1e-8)))
def test_feature_drift_is_exact_for_any_finite_weights(
    start: list[float], data: st.DataObject, min_norm: float
) -> None:
    """Any finite weights (subnormal to 1.8e308): skipped exactly when ||W_init|| < min_norm, else the exact ratio."""
    end = data.draw(st.lists(ANY_FINITE, min_size=len(start), max_size=len(start)))
    result = _drift(start, end, min_norm=min_norm)
    squared_norm, bound = sum(Fraction(v) ** 2 for v in start), Fraction(min_norm) ** 2
    if abs(squared_norm - bound) <= bound * Fraction(1, 10**10):
        return  # within rounding of the threshold: either answer is right
    if squared_norm < bound:
        assert result == {}
        return
    expected = _exact_drift(start, end)
    if math.isinf(expected) or expected > LARGEST / 2:
        assert result["w"] == pytest.approx(expected, rel=1e-13) or math.isinf(result["w"])
    else:
        assert result == {"w": pytest.approx(expected, rel=1e-13)}


@settings(max_examples=80, deadline=None)
@given(ANY_FINITE | st.just(math.inf) | st.just(math.nan))
def test_feature_drift_min_norm_is_checked(min_norm: float) -> None:
    """A min_norm that is not positive and finite raises InputError; any other gives a dict of floats."""
    if math.isfinite(min_norm) and min_norm > 0:
        assert all(type(v) is float for v in _drift([3.0, 4.0], [3.0, 4.5], min_norm=min_norm).values())
    else:
        with pytest.raises(InputError, match="'min_norm' must be"):
            _drift([3.0, 4.0], [3.0, 4.5], min_norm=min_norm)


# ---------------------------------------------------------------- the signal-quality checks
H = torch.randn(8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(11))  # |h| in [0.025, 2.3]


def _quadratic(exponent: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``2**exponent * 0.5 * ||x||^2`` per row: gradient ``2**exponent * x``, exactly scaled losses."""
    factor = math.ldexp(1.0, exponent)
    return lambda x: (0.5 * (x**2).sum(dim=1)) * factor


@pytest.mark.parametrize("exponent", [600, 1000])
def test_nudging_a_huge_signal_is_the_nudge_of_its_direction(exponent: int) -> None:
    """A signal scaled by 2**600 or 2**1000 nudges like the same signal at 2**100 (its RMS no longer overflows)."""
    reference = nudging_test(H, H * math.ldexp(1.0, 100), _quadratic(0))
    assert reference < 0
    assert nudging_test(H, H * math.ldexp(1.0, exponent), _quadratic(0)) == pytest.approx(reference, rel=1e-12)


def test_nudging_mean_does_not_overflow_in_the_sum() -> None:
    """Per-sample changes of 1.6e308 average to 1.6e308, though their sum is past the float range."""

    def jump(x: torch.Tensor) -> torch.Tensor:
        high = torch.tensor(0.8e308, dtype=torch.float64)
        return torch.where(x.sum(dim=1) > 0, high, -high)

    h = torch.zeros(4, 3, dtype=torch.float64)
    assert nudging_test(h, -torch.ones(4, 3, dtype=torch.float64), jump) == 1.6e308


@pytest.mark.parametrize(("signal_exponent", "loss_exponent"), [(-1000, 0), (1000, 0), (0, -1000), (0, 900)])
def test_perturbation_correlation_is_scale_free(signal_exponent: int, loss_exponent: int) -> None:
    """Scaling the signal or the loss by 2**±1000 leaves r exactly as it is (it was 0: norms under/overflowed)."""
    reference = perturbation_correlation(H, H, _quadratic(0), num_directions=4)
    assert reference > 0.999
    scaled = H * math.ldexp(1.0, signal_exponent)
    assert perturbation_correlation(H, scaled, _quadratic(loss_exponent), num_directions=4) == reference


def test_perturbation_correlation_of_a_jump_near_the_float_range() -> None:
    """A loss jumping between ±1.7e308 correlates exactly as the same jump between ±1."""
    direction = torch.linspace(-1.0, 1.0, 6, dtype=torch.float64)

    def jump(height: float) -> Callable[[torch.Tensor], torch.Tensor]:
        high = torch.tensor(height, dtype=torch.float64)
        return lambda x: torch.where(x @ direction > H @ direction, high, -high)

    reference = perturbation_correlation(H, direction.expand(8, 6), jump(1.0), num_directions=8)
    assert reference > 0.5
    extreme = perturbation_correlation(H, direction.expand(8, 6), jump(1.7e308), num_directions=8)
    assert extreme == pytest.approx(reference, abs=1e-12)


@settings(max_examples=80, deadline=None)
@given(st.integers(-1000, 1000), st.integers(-900, 900))
def test_signal_checks_are_finite_and_scale_consistent(signal_exponent: int, loss_exponent: int) -> None:
    """Signals scaled 2**±1000 and losses 2**±900: cosine as at scale 1, r exactly as at scale 1, nudges finite
    and, for signals far above the 1e-6 RMS floor, equal to the nudge of the direction.
    """
    signal = H * math.ldexp(1.0, signal_exponent)
    loss = _quadratic(loss_exponent)
    assert backprop_cosine(H, signal, loss) == pytest.approx(1.0, abs=1e-12)
    assert perturbation_correlation(H, signal, loss, num_directions=2) == perturbation_correlation(
        H, H, _quadratic(0), num_directions=2
    )
    nudge = nudging_test(H, signal, loss)
    assert math.isfinite(nudge)
    assert nudge == pytest.approx(math.ldexp(nudging_test(H, signal, _quadratic(0)), loss_exponent), rel=1e-12)
    if signal_exponent >= 60:
        reference = nudging_test(H, H * math.ldexp(1.0, 60), _quadratic(0))
        assert math.ldexp(nudge, -loss_exponent) == pytest.approx(reference, rel=1e-12)


@settings(max_examples=80, deadline=None)
@given(ANY_FINITE | st.just(math.inf) | st.just(math.nan), st.sampled_from(["eta", "eps"]))
def test_step_sizes_give_finite_values_or_input_error(step: float, option: str) -> None:
    """Any eta or eps gives a finite number or InputError: for a bad option, or a loss overflowed by a huge step."""
    loss = _quadratic(0)
    valid = math.isfinite(step) and step > 0
    try:
        if option == "eta":
            result = nudging_test(H, H, loss, eta=step)
        else:
            result = perturbation_correlation(H, H, loss, num_directions=2, eps=step)
    except InputError as error:
        assert not valid or "loss_fn(...)" in str(error)
    else:
        assert valid and math.isfinite(result)
