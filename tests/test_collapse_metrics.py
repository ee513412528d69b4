"""The RFC-0005 §3.6 metric definitions, one convention at a time, on hand-checkable batches."""

from __future__ import annotations

import copy
import dataclasses
import doctest
import math
from fractions import Fraction
from typing import Any

import pytest

from geno_lewm.training import collapse
from geno_lewm.training.collapse import METRIC_NAMES, CollapseMetrics, compute_collapse_metrics


def metrics_of(prediction: Any, target: Any, kl_reg: Any = 0.0, backend: str = "python") -> CollapseMetrics:
    return compute_collapse_metrics(prediction, target, kl_reg=kl_reg, backend=backend)


def flat_pearson(p: list[list[float]], t: list[list[float]]) -> float:
    """Pearson correlation of two flattened matrices, in exact arithmetic up to one square root."""
    xs = [Fraction(v) for row in p for v in row]
    ys = [Fraction(v) for row in t for v in row]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    vx = sum((x - mx) ** 2 for x in xs)
    vy = sum((y - my) ** 2 for y in ys)
    return float(cov) / math.sqrt(float(vx * vy))


# ------------------------------------------------------------------ the dataclass
def test_metrics_fields_are_the_seven_in_contract_order() -> None:
    """CollapseMetrics has exactly the seven RFC fields, in the order the contract fixes."""
    assert METRIC_NAMES == (
        "pred_cos_mean",
        "pred_l2_mean",
        "target_var_per_dim",
        "pred_var_per_dim",
        "pred_target_corr",
        "pairwise_pred_dist_mean",
        "kl_reg",
    )
    assert tuple(f.name for f in dataclasses.fields(CollapseMetrics)) == METRIC_NAMES


def test_metrics_are_frozen_and_slotted() -> None:
    """A result cannot be changed after the fact, nor grow new attributes."""
    m = CollapseMetrics(1.0, 2.0, 3.0, 4.0, 0.5, 6.0, 7.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.kl_reg = 0.0  # type: ignore[misc]
    assert not hasattr(m, "__dict__")


def test_as_dict_follows_field_order() -> None:
    """as_dict maps every field name to its value, in declaration order."""
    m = CollapseMetrics(1.0, 2.0, 3.0, 4.0, 0.5, 6.0, 7.0)
    assert list(m.as_dict().items()) == list(zip(METRIC_NAMES, (1.0, 2.0, 3.0, 4.0, 0.5, 6.0, 7.0)))


def test_results_are_python_floats() -> None:
    """Every computed field is a plain float, whatever the element types were."""
    m = metrics_of([[1, 2], [3, 5]], [[2, 2], [1, 0]], kl_reg=3)
    assert all(type(v) is float for v in m.as_dict().values())


# ------------------------------------------------------------------------ cosine
def test_cosine_is_the_mean_over_rows() -> None:
    """pred_cos_mean averages the per-row cosines (1 and 1/sqrt(2) here)."""
    m = metrics_of([[1.0, 0.0], [1.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]])
    assert m.pred_cos_mean == pytest.approx((1.0 + 1.0 / math.sqrt(2.0)) / 2.0, rel=1e-15)


def test_cosine_ignores_row_scale_and_sees_sign() -> None:
    """Parallel rows give 1 whatever their lengths; opposite rows give -1."""
    assert metrics_of([[3.0, 4.0]], [[0.3, 0.4]]).pred_cos_mean == pytest.approx(1.0, rel=1e-15)
    assert metrics_of([[3.0, 4.0]], [[-6.0, -8.0]]).pred_cos_mean == pytest.approx(-1.0, rel=1e-15)


def test_zero_norm_prediction_row_counts_as_zero_cosine() -> None:
    """A prediction row of zeros contributes 0, not NaN, to the mean cosine."""
    m = metrics_of([[0.0, 0.0], [1.0, 0.0]], [[1.0, 1.0], [2.0, 0.0]])
    assert m.pred_cos_mean == 0.5


def test_zero_norm_target_row_counts_as_zero_cosine() -> None:
    """A target row of zeros contributes 0 as well."""
    m = metrics_of([[1.0, 1.0], [1.0, 0.0]], [[0.0, 0.0], [2.0, 0.0]])
    assert m.pred_cos_mean == 0.5


def test_all_zero_batch_gives_zero_cosine_and_correlation() -> None:
    """Two all-zero batches: cosine 0, correlation 0, every other statistic 0."""
    m = metrics_of([[0.0, 0.0], [0.0, 0.0]], [[0, 0], [0, 0]])
    assert m == CollapseMetrics(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


# --------------------------------------------------------------------- distances
def test_l2_is_the_mean_row_distance() -> None:
    """pred_l2_mean is the mean of the Euclidean distances between matching rows (5 and 0)."""
    m = metrics_of([[0.0, 0.0], [1.0, 1.0]], [[3.0, 4.0], [1.0, 1.0]])
    assert m.pred_l2_mean == 2.5


def test_pairwise_distance_averages_unordered_pairs() -> None:
    """A 3-4-5 triangle gives (3 + 4 + 5) / 3 = 4, not the N*N average 24/9."""
    m = metrics_of([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]], [[1.0, 1.0]] * 3)
    assert m.pairwise_pred_dist_mean == 4.0


def test_pairwise_distance_of_a_single_row_is_zero() -> None:
    """With one row there are no pairs: the mean is defined as 0."""
    assert metrics_of([[5.0, -2.0]], [[1.0, 1.0]]).pairwise_pred_dist_mean == 0.0


def test_pairwise_distance_uses_predictions_only() -> None:
    """The targets do not enter pairwise_pred_dist_mean."""
    p = [[0.0, 0.0], [6.0, 8.0]]
    assert metrics_of(p, [[1.0, 1.0], [1.0, 1.0]]).pairwise_pred_dist_mean == 10.0
    assert metrics_of(p, [[-9.0, 3.0], [7.0, 2.0]]).pairwise_pred_dist_mean == 10.0


# --------------------------------------------------------------------- variances
def test_variance_is_population_variance() -> None:
    """A column [1, 3] has population variance 1 (the sample variance would be 2)."""
    m = metrics_of([[1.0, 5.0], [3.0, 5.0]], [[1.0, 5.0], [3.0, 5.0]])
    assert m.pred_var_per_dim == 0.5  # (1 + 0) / 2 dimensions
    assert m.target_var_per_dim == 0.5


def test_variance_averages_over_dimensions() -> None:
    """Per-dimension variances 1, 4 and 0 average to 5/3."""
    p = [[0.0, 0.0, 7.0], [2.0, 4.0, 7.0]]
    assert metrics_of(p, p).pred_var_per_dim == pytest.approx(5.0 / 3.0, rel=1e-15)


def test_target_and_prediction_variances_are_separate() -> None:
    """target_var_per_dim reads the targets, pred_var_per_dim the predictions."""
    m = metrics_of([[0.0], [2.0]], [[0.0], [6.0]])
    assert (m.pred_var_per_dim, m.target_var_per_dim) == (1.0, 9.0)


def test_single_row_has_zero_variance() -> None:
    """One row: every per-dimension variance is 0."""
    m = metrics_of([[1.5, -2.0, 3.0]], [[4.0, 5.0, 6.0]])
    assert (m.pred_var_per_dim, m.target_var_per_dim) == (0.0, 0.0)


@pytest.mark.parametrize("value", [0.1, 0.7, 2.9, 1.0 / 3.0, -123.456])
@pytest.mark.parametrize("rows", [3, 6, 13, 25])
def test_identical_rows_have_exactly_zero_variance(value: float, rows: int) -> None:
    """A fully collapsed batch (identical rows) has variance exactly 0, not rounding noise."""
    p = [[value, 2 * value]] * rows
    t = [[float(i), float(i * i)] for i in range(rows)]
    m = metrics_of(p, t)
    assert m.pred_var_per_dim == 0.0
    assert m.pairwise_pred_dist_mean == 0.0


# ------------------------------------------------------------------- correlation
def test_correlation_of_an_affine_image_is_one() -> None:
    """Targets 2p + 1 (elementwise) correlate at 1 with p; targets -3p + 5 at -1."""
    p = [[0.5, -1.0, 2.0], [3.0, 0.25, -2.0]]
    up = [[2 * v + 1 for v in row] for row in p]
    down = [[-3 * v + 5 for v in row] for row in p]
    assert metrics_of(p, up).pred_target_corr == pytest.approx(1.0, rel=1e-15)
    assert metrics_of(p, down).pred_target_corr == pytest.approx(-1.0, rel=1e-15)


def test_correlation_is_over_the_flattened_matrices() -> None:
    """Columns correlated -1 and +1 do not average to 0: the flattened correlation is used."""
    p = [[0.0, 10.0], [1.0, 11.0]]
    t = [[1.0, 10.0], [0.0, 11.0]]
    m = metrics_of(p, t)
    assert m.pred_target_corr == pytest.approx(flat_pearson(p, t), rel=1e-14)
    assert m.pred_target_corr > 0.9


@pytest.mark.parametrize("constant", [0.0, 0.1, 0.7, -3.0])
def test_correlation_is_zero_when_predictions_have_no_variance(constant: float) -> None:
    """Every prediction element equal: correlation 0 (not NaN, not rounding noise)."""
    p = [[constant] * 2] * 3
    m = metrics_of(p, [[1.0, 2.0], [3.0, 5.0], [0.0, -1.0]])
    assert m.pred_target_corr == 0.0


def test_correlation_is_zero_when_targets_have_no_variance() -> None:
    """Every target element equal: correlation 0."""
    m = metrics_of([[1.0, 2.0], [3.0, 5.0]], [[0.1, 0.1], [0.1, 0.1]])
    assert m.pred_target_corr == 0.0


def test_identical_rows_can_still_correlate_across_dimensions() -> None:
    """Identical prediction rows still vary across dimensions, so the flattened correlation is defined."""
    p = [[0.7, 0.1]] * 3
    t = [[1.0, 2.0], [3.0, 5.0], [-7.0, -1.0]]
    assert metrics_of(p, t).pred_target_corr == pytest.approx(flat_pearson(p, t), rel=1e-13)


# ------------------------------------------------------------------------ kl_reg
@pytest.mark.parametrize("value", [0, 3, 0.25, -1.5, 1e300])
def test_kl_reg_is_passed_through_as_float(value: float) -> None:
    """kl_reg is not computed: the caller's number comes back as a float."""
    m = metrics_of([[1.0]], [[1.0]], kl_reg=value)
    assert m.kl_reg == value
    assert type(m.kl_reg) is float


def test_kl_reg_accepts_numpy_and_tensor_scalars() -> None:
    """A NumPy scalar or a 0-d tensor is a valid kl_reg."""
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    assert metrics_of([[1.0]], [[1.0]], kl_reg=np.float32(0.25)).kl_reg == 0.25
    assert metrics_of([[1.0]], [[1.0]], kl_reg=torch.tensor(1.5, requires_grad=True)).kl_reg == 1.5


# ------------------------------------------------------------------ input kinds
P_LISTS = [[1.0, -2.0, 0.5], [3.0, 0.25, -1.0], [0.0, 4.0, 2.0]]
T_LISTS = [[0.5, -1.0, 1.5], [2.0, 1.0, -0.5], [-1.0, 3.0, 2.5]]


def test_tuples_and_ints_equal_lists_of_floats() -> None:
    """Tuples of tuples and integer elements give the same metrics as lists of floats."""
    expected = metrics_of(P_LISTS, T_LISTS)
    as_tuples = tuple(tuple(row) for row in P_LISTS), tuple(tuple(row) for row in T_LISTS)
    assert metrics_of(*as_tuples) == expected
    ints = [[1, 2], [3, 4]]
    assert metrics_of(ints, ints) == metrics_of([[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0, 4.0]])


def test_numpy_arrays_equal_lists() -> None:
    """float64, float32 and int64 arrays give the metrics of their values as lists."""
    np = pytest.importorskip("numpy")
    expected = metrics_of(P_LISTS, T_LISTS)
    assert metrics_of(np.array(P_LISTS), np.array(T_LISTS)) == expected
    p32, t32 = np.array(P_LISTS, dtype=np.float32), np.array(T_LISTS, dtype=np.float32)
    assert metrics_of(p32, t32) == metrics_of(p32.tolist(), t32.tolist())
    ints = np.arange(6, dtype=np.int64).reshape(3, 2)
    assert metrics_of(ints, ints) == metrics_of(ints.tolist(), ints.tolist())


def test_torch_tensors_equal_lists() -> None:
    """Tensors (with autograd history) give the metrics of their values as lists."""
    torch = pytest.importorskip("torch")
    p = torch.tensor(P_LISTS, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(T_LISTS, dtype=torch.float64) * 1.0
    assert metrics_of(p * 1.0, t) == metrics_of(P_LISTS, T_LISTS)
    half = torch.tensor(P_LISTS, dtype=torch.bfloat16)
    assert metrics_of(half, half) == metrics_of(half.float().tolist(), half.float().tolist())


class TensorLike:
    """The smallest object the contract calls tensor-like: detach(), cpu(), tolist()."""

    def __init__(self, rows: list[list[float]]) -> None:
        self.rows = rows
        self.calls: list[str] = []

    def detach(self) -> TensorLike:
        """Return self, noting the call."""
        self.calls.append("detach")
        return self

    def cpu(self) -> TensorLike:
        """Return self, noting the call."""
        self.calls.append("cpu")
        return self

    def tolist(self) -> list[list[float]]:
        """Return a copy of the rows, noting the call."""
        self.calls.append("tolist")
        return copy.deepcopy(self.rows)


def test_tensor_like_objects_are_detached_moved_and_listed() -> None:
    """A duck-typed tensor is detached and moved to the CPU before its values are read."""
    p, t = TensorLike(P_LISTS), TensorLike(T_LISTS)
    assert compute_collapse_metrics(p, t, kl_reg=0.0) == metrics_of(P_LISTS, T_LISTS)
    assert p.calls == ["detach", "cpu", "tolist"]


def test_auto_backend_on_small_lists_matches_the_reference() -> None:
    """The default backend gives the reference's numbers on a small list batch."""
    assert compute_collapse_metrics(P_LISTS, T_LISTS, kl_reg=0.0) == metrics_of(P_LISTS, T_LISTS)


def test_valid_inputs_are_not_modified() -> None:
    """Computing reads the inputs and leaves them exactly as they were."""
    p, t = copy.deepcopy(P_LISTS), [list(row) for row in T_LISTS]
    metrics_of(p, t)
    assert p == P_LISTS
    assert t == T_LISTS


def test_module_docstring_examples_hold() -> None:
    """The examples in the collapse module's docstrings run and print what they say."""
    result = doctest.testmod(collapse, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
