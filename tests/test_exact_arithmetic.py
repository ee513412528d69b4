"""The reference kernel against exact arithmetic: rationals (fractions.Fraction) for every
sum and product, 50-digit decimals for the square roots, on small batches and at the
extremes of the float range.
"""

from __future__ import annotations

import math
import random
import sys
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest

from geno_lewm.training.collapse import CollapseMetrics, compute_collapse_metrics

Rows = list[list[float]]
DIGITS = 50
REL = Decimal("1e-12")
FIELDS = (
    "pred_cos_mean",
    "pred_l2_mean",
    "target_var_per_dim",
    "pred_var_per_dim",
    "pred_target_corr",
    "pairwise_pred_dist_mean",
)


# ------------------------------------------------------------------ the reference
def _dec(value: Fraction) -> Decimal:
    return Decimal(value.numerator) / Decimal(value.denominator)


def _sqrt(value: Fraction) -> Decimal:
    return _dec(value).sqrt()


def _column_variances_mean(matrix: list[list[Fraction]]) -> Fraction:
    n, d = len(matrix), len(matrix[0])
    total = Fraction(0)
    for column in zip(*matrix):
        mean = sum(column, Fraction(0)) / n
        total += sum(((x - mean) ** 2 for x in column), Fraction(0)) / n
    return total / d


def exact_metrics(prediction: Rows, target: Rows) -> dict[str, Decimal]:
    """The six RFC-0005 statistics computed exactly from the floats' rational values."""
    p = [[Fraction(v) for v in row] for row in prediction]
    t = [[Fraction(v) for v in row] for row in target]
    n = len(p)
    with localcontext() as context:
        context.prec = DIGITS
        cosines = []
        for a, b in zip(p, t):
            aa = sum((x * x for x in a), Fraction(0))
            bb = sum((y * y for y in b), Fraction(0))
            ab = sum((x * y for x, y in zip(a, b)), Fraction(0))
            cosines.append(Decimal(0) if aa == 0 or bb == 0 else _dec(ab) / _sqrt(aa * bb))
        distances = [_sqrt(sum(((x - y) ** 2 for x, y in zip(a, b)), Fraction(0))) for a, b in zip(p, t)]
        pairs = [
            _sqrt(sum(((x - y) ** 2 for x, y in zip(p[i], p[j])), Fraction(0)))
            for i in range(n)
            for j in range(i + 1, n)
        ]
        xs = [x for row in p for x in row]
        ys = [y for row in t for y in row]
        mx, my = sum(xs, Fraction(0)) / len(xs), sum(ys, Fraction(0)) / len(ys)
        cov = sum(((x - mx) * (y - my) for x, y in zip(xs, ys)), Fraction(0))
        vx = sum(((x - mx) ** 2 for x in xs), Fraction(0))
        vy = sum(((y - my) ** 2 for y in ys), Fraction(0))
        return {
            "pred_cos_mean": sum(cosines, Decimal(0)) / n,
            "pred_l2_mean": sum(distances, Decimal(0)) / n,
            "target_var_per_dim": _dec(_column_variances_mean(t)),
            "pred_var_per_dim": _dec(_column_variances_mean(p)),
            "pred_target_corr": Decimal(0) if vx == 0 or vy == 0 else _dec(cov) / _sqrt(vx * vy),
            "pairwise_pred_dist_mean": sum(pairs, Decimal(0)) / len(pairs) if pairs else Decimal(0),
        }


def computed(prediction: Rows, target: Rows) -> CollapseMetrics:
    return compute_collapse_metrics(prediction, target, kl_reg=0.0, backend="python")


def assert_close(got: float, exact: Decimal, what: str, rel: Decimal = REL) -> None:
    """``got`` within ``rel`` of ``exact`` (relative); an exact 0 must be computed as 0.

    A mean cosine or a correlation of 0 comes out of the 50-digit reference as a few
    units in its last digit; below 1e-40 it counts as 0 and the float must be ~0 too.
    """
    if exact == 0 or (what in ("pred_cos_mean", "pred_target_corr") and abs(exact) < Decimal("1e-40")):
        assert abs(got) <= 1e-15, (what, got)
        return
    error = abs(Decimal(got) - exact)
    assert error <= rel * abs(exact), (what, got, float(exact), float(error / abs(exact)))


def assert_all_close(prediction: Rows, target: Rows, fields: tuple[str, ...] = FIELDS) -> None:
    got = computed(prediction, target)
    exact = exact_metrics(prediction, target)
    for field in fields:
        assert_close(getattr(got, field), exact[field], field)


# ------------------------------------------------------------------ generators
def random_pair(rng: random.Random, n: int, d: int, scale: float = 1.0, offset: float = 0.0) -> tuple[Rows, Rows]:
    """A prediction and a target correlated with it (so cosine and correlation stay away from 0)."""
    p = [[offset + scale * rng.uniform(-1.0, 1.0) for _ in range(d)] for _ in range(n)]
    t = [[v + 0.5 * scale * rng.uniform(-1.0, 1.0) for v in row] for row in p]
    return p, t


# ------------------------------------------------------------------ small batches
@pytest.mark.parametrize("seed", range(40))
def test_small_random_batches_match_exact_arithmetic(seed: int) -> None:
    """All six statistics agree with exact arithmetic to 1e-12 relative on random small batches."""
    rng = random.Random(seed)
    n, d = rng.randint(1, 7), rng.randint(1, 6)
    p, t = random_pair(rng, n, d, scale=10.0 ** rng.randint(-3, 3))
    assert_all_close(p, t)


def test_larger_batch_matches_exact_arithmetic() -> None:
    """A 24 x 48 batch agrees with exact arithmetic too (longer sums, more pairs)."""
    p, t = random_pair(random.Random(2024), 24, 48)
    assert_all_close(p, t)


def test_mixed_magnitudes_match_exact_arithmetic() -> None:
    """Elements spanning twelve orders of magnitude in one batch keep their accuracy."""
    rng = random.Random(7)
    p = [[rng.uniform(-1, 1) * 10.0 ** rng.randint(-6, 6) for _ in range(5)] for _ in range(6)]
    t = [[v + rng.uniform(-1, 1) * 10.0 ** rng.randint(-6, 6) for v in row] for row in p]
    assert_all_close(p, t)


def test_a_huge_column_beside_a_small_one_keeps_the_small_columns_variance() -> None:
    """A constant column of 1e300 does not wipe out the variance of an ordinary column beside it."""
    target = [[1.0, 1e300], [-7.4e-202, 1e300]]
    prediction = [[2.0, 1e-300], [0.5, -3e-300]]
    assert_all_close(prediction, target, ("target_var_per_dim", "pred_var_per_dim", "pred_target_corr"))


@pytest.mark.parametrize("seed", range(12))
def test_columns_of_wildly_different_scales_match_exact_arithmetic(seed: int) -> None:
    """Varying columns of scales 1e-150..1e150 beside a constant column near 1e300 match exact arithmetic."""
    rng = random.Random(seed)
    n, d = rng.randint(2, 6), rng.randint(1, 4)
    scales = [10.0 ** rng.randint(-150, 150) for _ in range(d)]
    level = rng.choice([-1.0, 1.0]) * 10.0 ** rng.randint(290, 307)
    p = [[rng.uniform(-1, 1) * scale for scale in scales] + [level] for _ in range(n)]
    t = [[v + 0.5 * rng.uniform(-1, 1) * scale for v, scale in zip(row, scales)] + [-level] for row in p]
    assert_all_close(p, t, ("target_var_per_dim", "pred_var_per_dim", "pairwise_pred_dist_mean"))


@pytest.mark.parametrize("seed", range(20))
def test_integer_batches_with_exact_means_give_correctly_rounded_variances(seed: int) -> None:
    """With N a power of two and small integers (exact column means), each variance is the exact value, rounded once."""
    rng = random.Random(seed)
    n, d = rng.choice([2, 4, 8]), rng.randint(1, 6)
    p = [[float(rng.randint(-50, 50)) for _ in range(d)] for _ in range(n)]
    t = [[float(rng.randint(-50, 50)) for _ in range(d)] for _ in range(n)]
    got = computed(p, t)
    for matrix, value in ((p, got.pred_var_per_dim), (t, got.target_var_per_dim)):
        exact = _column_variances_mean([[Fraction(v) for v in row] for row in matrix])
        assert value == float(exact), (value, exact)


def test_cancellation_case_matches_exact_arithmetic() -> None:
    """Mean 1e3 with spread 1e-3: variances and correlation keep twelve digits."""
    p, t = random_pair(random.Random(11), 8, 6, scale=1e-3, offset=1e3)
    assert_all_close(p, t)


@pytest.mark.parametrize(("offset", "scale"), [(1e6, 1e-6), (-1e5, 1e-4), (1e8, 1e-2), (3.0, 1e-12)])
def test_extreme_cancellation_matches_exact_arithmetic(offset: float, scale: float) -> None:
    """Spreads down to 1e-12 of the mean (a few thousand units in the last place) stay exact to 1e-12."""
    for seed in range(5):
        p, t = random_pair(random.Random(seed), 7, 5, scale=scale, offset=offset)
        assert_all_close(p, t)


def test_cancellation_case_defeats_the_one_pass_formula() -> None:
    """The same batch loses digits with E[x^2] - E[x]^2, so the previous test is not trivial."""
    p, _ = random_pair(random.Random(11), 8, 6, scale=1e-3, offset=1e3)
    exact = exact_metrics(p, p)["pred_var_per_dim"]
    n, d = len(p), len(p[0])
    one_pass = sum(sum(x * x for x in col) / n - (sum(col) / n) ** 2 for col in zip(*p)) / d
    assert abs(Decimal(one_pass) - exact) > REL * exact


# ---------------------------------------------------------------- huge values
def test_values_near_1e300_give_finite_correct_distances() -> None:
    """Rows of magnitude 1e300: distances, cosine and correlation are finite and exact to 1e-12."""
    p, t = random_pair(random.Random(3), 5, 16, scale=1e300)
    got = computed(p, t)
    assert math.isfinite(got.pred_l2_mean)
    assert math.isfinite(got.pairwise_pred_dist_mean)
    assert_all_close(p, t, ("pred_cos_mean", "pred_l2_mean", "pred_target_corr", "pairwise_pred_dist_mean"))


def test_variance_beyond_the_float_range_is_infinite() -> None:
    """A variance whose true value exceeds the largest float is reported as inf, not a wrong number."""
    p, t = random_pair(random.Random(3), 5, 16, scale=1e300)
    exact = exact_metrics(p, t)
    assert exact["pred_var_per_dim"] > Decimal(sys.float_info.max)
    assert exact["target_var_per_dim"] > Decimal(sys.float_info.max)
    got = computed(p, t)
    assert got.pred_var_per_dim == math.inf
    assert got.target_var_per_dim == math.inf


def test_rows_near_1e154_give_finite_correct_results() -> None:
    """Squares of 1e154 overflow, yet L2, pairwise and the variances (about 1e307) are right."""
    rng = random.Random(5)
    p = [[1e154 * rng.uniform(0.5, 1.5) for _ in range(64)] for _ in range(4)]
    t = [[-v for v in row] for row in p]
    got = computed(p, t)
    assert all(math.isfinite(v) for v in got.as_dict().values())
    assert_all_close(p, t)


def test_huge_values_agree_with_a_rescaled_computation() -> None:
    """Distances of a 1e300 batch equal 2**1000 times those of the same batch scaled by 2**-1000."""
    p, t = random_pair(random.Random(9), 6, 12, scale=1e300)
    small_p = [[math.ldexp(v, -1000) for v in row] for row in p]
    small_t = [[math.ldexp(v, -1000) for v in row] for row in t]
    big, small = computed(p, t), computed(small_p, small_t)
    assert big.pred_l2_mean == pytest.approx(math.ldexp(small.pred_l2_mean, 1000), rel=1e-15)
    assert big.pairwise_pred_dist_mean == pytest.approx(math.ldexp(small.pairwise_pred_dist_mean, 1000), rel=1e-15)
    assert big.pred_cos_mean == pytest.approx(small.pred_cos_mean, rel=1e-15)
    assert big.pred_target_corr == pytest.approx(small.pred_target_corr, rel=1e-15)


def test_difference_of_the_largest_floats_is_finite_when_its_value_is() -> None:
    """1e308 - (-5e307) = 1.5e308 is representable, so the L2 distance is not inf."""
    got = computed([[1e308, 0.0], [0.0, 1e308]], [[-5e307, 0.0], [0.0, -5e307]])
    assert got.pred_l2_mean == 1.5e308
    assert got.pairwise_pred_dist_mean == pytest.approx(math.sqrt(2.0) * 1e308, rel=1e-15)


def test_distance_beyond_the_float_range_is_infinite() -> None:
    """1.7e308 - (-1.7e308) exceeds the largest float: the distance is inf, legitimately."""
    got = computed([[1.7e308]], [[-1.7e308]])
    assert got.pred_l2_mean == math.inf
    assert got.pred_cos_mean == -1.0


# ---------------------------------------------------------------- tiny values
def test_values_near_1e300_below_one_give_correct_cosine_and_correlation() -> None:
    """Rows of magnitude 1e-300: cosine, correlation and distances are exact to 1e-12."""
    p, t = random_pair(random.Random(13), 5, 8, scale=1e-300)
    assert_all_close(p, t, ("pred_cos_mean", "pred_l2_mean", "pred_target_corr", "pairwise_pred_dist_mean"))


def test_variance_below_the_float_range_rounds_to_the_nearest_float() -> None:
    """Variances of 1e-300 data (about 1e-600) are 0; those near 1e-310 are within one subnormal step."""
    for scale in (1e-300, 1e-155):
        p, t = random_pair(random.Random(17), 5, 8, scale=scale)
        got, exact = computed(p, t), exact_metrics(p, t)
        for field in ("pred_var_per_dim", "target_var_per_dim"):
            nearest = float(exact[field])
            assert abs(getattr(got, field) - nearest) <= 5e-324, (scale, field)


def test_subnormal_inputs_are_handled() -> None:
    """A batch of subnormal numbers gives correct cosine, distances and correlation, not an error."""
    p = [[5e-324, 0.0], [0.0, 1e-320], [3e-322, 2e-322]]
    t = [[1e-321, 1e-323], [2e-322, 4e-321], [0.0, 5e-323]]
    assert_all_close(p, t, ("pred_cos_mean", "pred_target_corr"))
    got, exact = computed(p, t), exact_metrics(p, t)
    for field in ("pred_l2_mean", "pairwise_pred_dist_mean"):
        assert abs(getattr(got, field) - float(exact[field])) <= 5e-324, field
