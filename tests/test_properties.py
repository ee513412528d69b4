"""Invariances of the collapse metrics, checked with hypothesis on small batches.

Elements are multiples of 1/64 within +/-64 and offsets multiples of 1/4, so translated
and power-of-two-scaled batches are exact in floating point: any difference in the
results then comes from the computation alone.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

pytest.importorskip("hypothesis")

from hypothesis import given
from hypothesis import strategies as st

from geno_lewm.training.collapse import CollapseMetrics, compute_collapse_metrics

Rows = list[list[float]]

ELEMENT = st.integers(-4096, 4096).map(lambda k: k / 64)
OFFSET = st.integers(-40_000, 40_000).map(lambda k: k / 4)
POWER_OF_TWO = st.integers(-20, 20).map(lambda e: math.ldexp(1.0, e))


@st.composite
def batches(draw: st.DrawFn, min_rows: int = 1) -> tuple[Rows, Rows]:
    """A prediction and a target of the same small shape."""
    n = draw(st.integers(min_rows, 6))
    d = draw(st.integers(1, 5))
    matrix = st.lists(st.lists(ELEMENT, min_size=d, max_size=d), min_size=n, max_size=n)
    return draw(matrix), draw(matrix)


def metrics(p: Rows, t: Rows) -> CollapseMetrics:
    return compute_collapse_metrics(p, t, kl_reg=0.0, backend="python")


def close(a: float, b: float, scale: float = 1.0) -> bool:
    """Equal up to rounding: 1e-9 relative, or 1e-12 of ``scale`` absolute."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12 * scale)


def spread(rows: Rows) -> float:
    return max((abs(v) for row in rows for v in row), default=1.0) or 1.0


def all_close(a: CollapseMetrics, b: CollapseMetrics, scale: float) -> bool:
    """Every field close; distances and variances at the data's scale."""
    return all(
        close(x, y, scale * scale if "var" in name else scale if ("l2" in name or "dist" in name) else 1.0)
        for (name, x), y in zip(a.as_dict().items(), b.as_dict().values())
    )


# ------------------------------------------------------------------ permutations
@given(batches(), st.randoms(use_true_random=False))
def test_row_permutation_changes_nothing(pair: tuple[Rows, Rows], rng: Any) -> None:
    """Reordering the rows of both inputs the same way leaves every metric unchanged."""
    p, t = pair
    order = list(range(len(p)))
    rng.shuffle(order)
    shuffled = metrics([p[i] for i in order], [t[i] for i in order])
    assert all_close(metrics(p, t), shuffled, max(spread(p), spread(t)))


@given(batches(), st.randoms(use_true_random=False))
def test_dimension_permutation_changes_nothing(pair: tuple[Rows, Rows], rng: Any) -> None:
    """Reordering the columns of both inputs the same way leaves every metric unchanged."""
    p, t = pair
    order = list(range(len(p[0])))
    rng.shuffle(order)
    permuted = metrics([[row[j] for j in order] for row in p], [[row[j] for j in order] for row in t])
    assert all_close(metrics(p, t), permuted, max(spread(p), spread(t)))


# ------------------------------------------------------------------- translation
@given(batches(), st.data())
def test_translation_leaves_variances_and_pairwise_distance(pair: tuple[Rows, Rows], data: st.DataObject) -> None:
    """Adding one vector to every row changes neither the variances nor the pairwise distances."""
    p, t = pair
    d = len(p[0])
    shift_p = data.draw(st.lists(OFFSET, min_size=d, max_size=d))
    shift_t = data.draw(st.lists(OFFSET, min_size=d, max_size=d))
    before = metrics(p, t)
    after = metrics(
        [[v + s for v, s in zip(row, shift_p)] for row in p], [[v + s for v, s in zip(row, shift_t)] for row in t]
    )
    scale = max(spread(p), spread(t))
    assert close(after.pred_var_per_dim, before.pred_var_per_dim, scale * scale)
    assert close(after.target_var_per_dim, before.target_var_per_dim, scale * scale)
    assert close(after.pairwise_pred_dist_mean, before.pairwise_pred_dist_mean, scale)


@given(batches(), OFFSET, OFFSET)
def test_common_offset_leaves_the_correlation(pair: tuple[Rows, Rows], a: float, b: float) -> None:
    """Adding a constant to every element (of either input) leaves the flattened correlation."""
    p, t = pair
    before = metrics(p, t)
    after = metrics([[v + a for v in row] for row in p], [[v + b for v in row] for row in t])
    assert close(after.pred_target_corr, before.pred_target_corr)


@given(batches(), st.data())
def test_same_translation_of_both_leaves_the_l2_distance(pair: tuple[Rows, Rows], data: st.DataObject) -> None:
    """Moving prediction and target by the same vector keeps their row distances."""
    p, t = pair
    shift = data.draw(st.lists(OFFSET, min_size=len(p[0]), max_size=len(p[0])))
    moved = metrics(
        [[v + s for v, s in zip(row, shift)] for row in p], [[v + s for v, s in zip(row, shift)] for row in t]
    )
    assert close(moved.pred_l2_mean, metrics(p, t).pred_l2_mean, max(spread(p), spread(t)))


# ----------------------------------------------------------------------- scaling
@given(batches(), POWER_OF_TWO, st.sampled_from([1.0, -1.0]))
def test_scaling_predictions_scales_their_statistics(pair: tuple[Rows, Rows], factor: float, sign: float) -> None:
    """Predictions times c: variance by c**2, pairwise distance by |c|; cosine and correlation keep
    their size and take the sign of c.
    """
    p, t = pair
    c = sign * factor
    before = metrics(p, t)
    after = metrics([[c * v for v in row] for row in p], t)
    scale = spread(p)
    assert close(after.pred_var_per_dim, c * c * before.pred_var_per_dim, (c * scale) ** 2)
    assert close(after.pairwise_pred_dist_mean, abs(c) * before.pairwise_pred_dist_mean, abs(c) * scale)
    assert after.target_var_per_dim == before.target_var_per_dim
    assert close(after.pred_cos_mean, sign * before.pred_cos_mean)
    assert close(after.pred_target_corr, sign * before.pred_target_corr)


@given(batches(), st.floats(1e-3, 1e3))
def test_scaling_both_inputs_scales_distances(pair: tuple[Rows, Rows], c: float) -> None:
    """Both inputs times c > 0 (any float): L2 and pairwise distances by c, variances by c**2,
    cosine and correlation unchanged.
    """
    p, t = pair
    before = metrics(p, t)
    after = metrics([[c * v for v in row] for row in p], [[c * v for v in row] for row in t])
    scale = c * max(spread(p), spread(t))
    assert close(after.pred_l2_mean, c * before.pred_l2_mean, scale)
    assert close(after.pairwise_pred_dist_mean, c * before.pairwise_pred_dist_mean, scale)
    assert close(after.pred_var_per_dim, c * c * before.pred_var_per_dim, scale * scale)
    assert close(after.target_var_per_dim, c * c * before.target_var_per_dim, scale * scale)
    assert close(after.pred_cos_mean, before.pred_cos_mean, 1e3)
    assert close(after.pred_target_corr, before.pred_target_corr, 1e3)


@given(batches())
def test_negating_both_inputs_changes_nothing(pair: tuple[Rows, Rows]) -> None:
    """Negating every element of both inputs is exact and leaves every metric as it was."""
    p, t = pair
    negated = metrics([[-v for v in row] for row in p], [[-v for v in row] for row in t])
    assert all_close(metrics(p, t), negated, max(spread(p), spread(t)))


# ---------------------------------------------------------------------- symmetry
@given(batches())
def test_swapping_inputs_keeps_the_symmetric_metrics(pair: tuple[Rows, Rows]) -> None:
    """Cosine, L2 and correlation are symmetric in (prediction, target); the variances swap."""
    p, t = pair
    forward, backward = metrics(p, t), metrics(t, p)
    scale = max(spread(p), spread(t))
    assert close(forward.pred_cos_mean, backward.pred_cos_mean)
    assert close(forward.pred_l2_mean, backward.pred_l2_mean, scale)
    assert close(forward.pred_target_corr, backward.pred_target_corr)
    assert forward.pred_var_per_dim == backward.target_var_per_dim
    assert forward.target_var_per_dim == backward.pred_var_per_dim


@given(batches())
def test_a_batch_against_itself(pair: tuple[Rows, Rows]) -> None:
    """Prediction equal to target: L2 is 0, variances equal, correlation 1 unless constant."""
    p, _ = pair
    m = metrics(p, p)
    assert m.pred_l2_mean == 0.0
    assert m.pred_var_per_dim == m.target_var_per_dim
    flat = [v for row in p for v in row]
    assert m.pred_target_corr == (0.0 if min(flat) == max(flat) else pytest.approx(1.0, rel=1e-12))


# ------------------------------------------------------------------------ ranges
@given(batches())
def test_metrics_stay_in_their_ranges(pair: tuple[Rows, Rows]) -> None:
    """Cosine and correlation lie in [-1, 1]; distances and variances are non-negative."""
    m = metrics(*pair)
    assert -1.0 <= m.pred_cos_mean <= 1.0
    assert -1.0 <= m.pred_target_corr <= 1.0
    assert min(m.pred_l2_mean, m.pairwise_pred_dist_mean, m.pred_var_per_dim, m.target_var_per_dim) >= 0.0


@given(batches(min_rows=2))
def test_mean_pairwise_distance_bounds(pair: tuple[Rows, Rows]) -> None:
    """The mean pairwise distance is at most the largest pairwise distance, and its square at
    most the mean squared distance 2 N D var / (N - 1).
    """
    p, t = pair
    m = metrics(p, t)
    n, d = len(p), len(p[0])
    largest = max(math.dist(p[i], p[j]) for i in range(n) for j in range(i + 1, n))
    assert m.pairwise_pred_dist_mean <= largest * (1 + 1e-12)
    mean_square = 2 * n * d * m.pred_var_per_dim / (n - 1)
    assert m.pairwise_pred_dist_mean**2 <= mean_square * (1 + 1e-9) + 1e-12
