"""The vectorised backends give the pure-Python reference's numbers and errors.

One reference, many backends: every batch here is computed by ``_python`` and compared
with ``_numpy`` and ``_torch`` (float64), which must agree to 1e-9 relative, including
the cancellation case, the edge-case conventions and nearly duplicate rows; every bad
batch must raise the reference's exact message and details.
"""

from __future__ import annotations

import copy
import doctest
import math
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from geno_lewm import backends
from geno_lewm.backends import _python
from geno_lewm.errors import InputError
from geno_lewm.training.collapse import compute_collapse_metrics

np = pytest.importorskip("numpy")

Values = tuple[float, float, float, float, float, float]
FIELDS = ("pred_cos_mean", "pred_l2_mean", "target_var_per_dim", "pred_var_per_dim", "corr", "pairwise")
RTOL_FLOAT64 = 1e-9


def _numpy_values(prediction: Any, target: Any) -> Values:
    from geno_lewm.backends import _numpy

    return _numpy.collapse_values(_numpy.prepare(prediction, "prediction"), _numpy.prepare(target, "target"))


def _torch_values(prediction: Any, target: Any) -> Values:
    torch = pytest.importorskip("torch")
    from geno_lewm.backends import _torch

    p = torch.as_tensor(np.asarray(prediction, dtype=np.float64))
    t = torch.as_tensor(np.asarray(target, dtype=np.float64))
    return _torch.collapse_values(*_torch.prepare_pair(p, t)[:2])


def _reference(prediction: Any, target: Any) -> Values:
    return _python.collapse_values(_python.prepare(prediction, "prediction"), _python.prepare(target, "target"))


VECTORISED: dict[str, Callable[[Any, Any], Values]] = {"numpy": _numpy_values, "torch": _torch_values}


BOUNDED = {"pred_cos_mean", "corr"}
"""Means of terms in [-1, 1] that can cancel to about 0: also judged on an absolute scale."""
ATOL_BOUNDED = 1e-14


def assert_agree(values: Values, reference: Values, rtol: float = RTOL_FLOAT64, atol: float = ATOL_BOUNDED) -> None:
    """Each statistic within ``rtol`` of the reference's, relative (exactly 0 where it is
    0), or within ``atol`` for the cosine and the correlation.
    """
    for name, value, expected in zip(FIELDS, values, reference):
        if math.isinf(expected):
            assert value == expected, (name, value, expected)
            continue
        slack = atol if name in BOUNDED else 0.0
        assert abs(value - expected) <= rtol * abs(expected) + slack, (name, value, expected)


def _gaussian(rng: Any, n: int, d: int, loc: float = 0.0, scale: float = 1.0) -> Any:
    return loc + scale * rng.standard_normal((n, d))


# ------------------------------------------------------------------ agreement
@pytest.mark.parametrize("backend", sorted(VECTORISED))
@pytest.mark.parametrize(("n", "d"), [(2, 1), (3, 5), (17, 4), (64, 33), (300, 3)])
def test_random_batches_agree_with_reference(backend: str, n: int, d: int) -> None:
    """Gaussian batches of several shapes give the reference's six numbers to 1e-9."""
    rng = np.random.default_rng(n * 1000 + d)
    prediction, target = _gaussian(rng, n, d), _gaussian(rng, n, d, loc=0.5, scale=2.0)
    assert_agree(VECTORISED[backend](prediction, target), _reference(prediction, target))


@pytest.mark.parametrize("backend", sorted(VECTORISED))
def test_many_blocks_agree_with_reference(backend: str) -> None:
    """A batch large enough for several Gram blocks gives the reference's numbers."""
    rng = np.random.default_rng(7)
    n = 900
    assert backends.pairwise_block_rows(n, 8) <= n / 3
    prediction, target = _gaussian(rng, n, 6, loc=-3.0), _gaussian(rng, n, 6)
    assert_agree(VECTORISED[backend](prediction, target), _reference(prediction, target))


@pytest.mark.parametrize("backend", sorted(VECTORISED))
def test_cancellation_case_agrees_with_reference(backend: str) -> None:
    """Mean 1e3 and spread 1e-3: centring first keeps every digit the reference keeps."""
    rng = np.random.default_rng(11)
    prediction = _gaussian(rng, 200, 16, loc=1e3, scale=1e-3)
    target = _gaussian(rng, 200, 16, loc=1e3, scale=1e-3)
    reference = _reference(prediction, target)
    assert reference[3] == pytest.approx(1e-6, rel=0.2)
    assert_agree(VECTORISED[backend](prediction, target), reference)


@pytest.mark.parametrize("backend", sorted(VECTORISED))
def test_column_means_differing_slightly_on_a_large_level_agree(backend: str) -> None:
    """Columns near 1e3 whose means differ by 1e-4: the correlation's between-column term
    survives as it does in the reference.
    """
    rng = np.random.default_rng(12)
    level = 1e3 + 1e-4 * rng.standard_normal(24)
    prediction = level + 1e-6 * rng.standard_normal((50, 24))
    target = level + 1e-6 * rng.standard_normal((50, 24))
    assert_agree(VECTORISED[backend](prediction, target), _reference(prediction, target))


def _edge_cases() -> list[tuple[str, Any, Any]]:
    rng = np.random.default_rng(3)
    zero_rows = _gaussian(rng, 6, 4)
    zero_rows[[1, 4]] = 0.0
    same = _gaussian(rng, 9, 5)
    mixed = _gaussian(rng, 8, 3)
    mixed[:4] *= 1e-200
    return [
        ("single row", _gaussian(rng, 1, 7), _gaussian(rng, 1, 7)),
        ("single column", _gaussian(rng, 12, 1), _gaussian(rng, 12, 1)),
        ("zero rows", zero_rows, _gaussian(rng, 6, 4)),
        ("all zero", np.zeros((5, 3)), np.zeros((5, 3))),
        ("no variance", np.tile(_gaussian(rng, 1, 6), (8, 1)), _gaussian(rng, 8, 6)),
        ("constant", np.full((6, 3), 0.1), np.full((6, 3), 0.3)),
        ("constant columns", np.tile([[0.1, 7.0, -2.5]], (5, 1)), _gaussian(rng, 5, 3)),
        ("prediction is target", same, same.copy()),
        ("opposite", same, -same),
        ("huge", _gaussian(rng, 10, 5, scale=1e300), _gaussian(rng, 10, 5, scale=1e300)),
        ("tiny", _gaussian(rng, 10, 5, scale=1e-300), _gaussian(rng, 10, 5, scale=1e-300)),
        ("huge target, tiny prediction", _gaussian(rng, 7, 4, scale=1e-250), _gaussian(rng, 7, 4, scale=1e250)),
        ("rows of very different size", mixed, _gaussian(rng, 8, 3)),
        ("near the largest float", np.full((3, 2), 1.5e308) * [[1.0, -1.0]], np.full((3, 2), -1.5e308)),
        ("integers", rng.integers(-5, 5, (20, 4)), rng.integers(0, 3, (20, 4))),
        ("a subnormal row", np.eye(8, 1, -7), np.eye(8, 1, -6) + 5e-324 * np.eye(8, 1, -7)),
        ("a subnormal distance", np.array([[0.0, 1.0], [5e-324, 1.0]]), np.zeros((2, 2))),
        ("huge equal columns", np.array([[1e300, 3.0], [2e300, -1.0]]), [[1e300, 3.0 + 1e-14], [2e300, -1.0]]),
    ]


@pytest.mark.parametrize("backend", sorted(VECTORISED))
@pytest.mark.parametrize(("case", "prediction", "target"), _edge_cases(), ids=[c[0] for c in _edge_cases()])
def test_edge_cases_follow_the_reference_conventions(backend: str, case: str, prediction: Any, target: Any) -> None:
    """Zero rows, one row, no variance, extreme magnitudes: the reference's numbers, and
    exact zeros where the reference has exact zeros.
    """
    assert_agree(VECTORISED[backend](prediction, target), _reference(prediction, target))


def _close_pair_batches() -> list[tuple[str, Any]]:
    rng = np.random.default_rng(5)
    n, d = 500, 10
    duplicates = _gaussian(rng, n, d)
    duplicates[::3] = duplicates[0]
    centres = 5.0 * _gaussian(rng, 3, d)
    clusters = centres[rng.integers(0, 3, n)] + 1e-9 * _gaussian(rng, n, d)
    pairs = np.repeat(_gaussian(rng, n // 2, d), 2, axis=0) + 1e-8 * _gaussian(rng, n, d)
    return [("duplicates", duplicates), ("tight clusters", clusters), ("near-identical pairs", pairs)]


@pytest.mark.parametrize("backend", sorted(VECTORISED))
@pytest.mark.parametrize(("case", "prediction"), _close_pair_batches(), ids=[c[0] for c in _close_pair_batches()])
def test_nearly_duplicate_rows_keep_their_exact_distance(backend: str, case: str, prediction: Any) -> None:
    """Pairs too close for the Gram formula are recomputed: still 1e-9 of the reference."""
    target = np.random.default_rng(6).standard_normal(prediction.shape)
    assert_agree(VECTORISED[backend](prediction, target), _reference(prediction, target))


def test_random_batches_agree_under_hypothesis() -> None:
    """Arbitrary small batches of moderate floats agree with the reference in both backends."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    element = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)

    @st.composite
    def batch_pair(draw: Any) -> tuple[list[list[float]], list[list[float]]]:
        n = draw(st.integers(1, 8))
        d = draw(st.integers(1, 5))
        rows = st.lists(st.lists(element, min_size=d, max_size=d), min_size=n, max_size=n)
        return draw(rows), draw(rows)

    @hypothesis.settings(max_examples=40)
    @hypothesis.given(batch_pair())
    def check(pair: tuple[list[list[float]], list[list[float]]]) -> None:
        prediction, target = pair
        reference = _reference(prediction, target)
        for compute in VECTORISED.values():
            assert_agree(compute(prediction, target), reference)

    check()


def test_numpy_and_torch_agree_over_the_whole_float_range() -> None:
    """From subnormals to the largest floats, the two vectorised backends agree with each
    other (both rescale by powers of two where the squares would leave the float range).
    """
    hypothesis = pytest.importorskip("hypothesis")
    pytest.importorskip("torch")
    st = hypothesis.strategies
    element = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0.0, 1.0, 5e-324, 1e300]))

    @st.composite
    def batch_pair(draw: Any) -> tuple[list[list[float]], list[list[float]]]:
        n = draw(st.integers(1, 6))
        d = draw(st.integers(1, 4))
        rows = st.lists(st.lists(element, min_size=d, max_size=d), min_size=n, max_size=n)
        return draw(rows), draw(rows)

    @hypothesis.given(batch_pair())
    def check(pair: tuple[list[list[float]], list[list[float]]]) -> None:
        numpy_values, torch_values = _numpy_values(*pair), _torch_values(*pair)
        for name, value, other in zip(FIELDS, numpy_values, torch_values):
            if math.isinf(value) or math.isinf(other):
                assert value == other, (name, value, other)
                continue
            # a subnormal result carries an absolute error of a few 1e-324 in either backend
            slack = (ATOL_BOUNDED if name in BOUNDED else 0.0) + 1e-300
            assert abs(value - other) <= RTOL_FLOAT64 * abs(other) + slack, (name, value, other)

    check()


@pytest.mark.parametrize("dtype", ["float16", "float32", "int8", "uint16", "int64"])
def test_numpy_arrays_of_every_real_dtype_agree(dtype: str) -> None:
    """Arrays of narrower or integer dtypes are converted exactly, as the reference does."""
    rng = np.random.default_rng(9)
    prediction = (8 * rng.standard_normal((30, 6))).astype(dtype)
    target = (8 * rng.standard_normal((30, 6))).astype(dtype)
    assert_agree(_numpy_values(prediction, target), _reference(prediction, target))


def test_mixed_inputs_agree() -> None:
    """A NumPy array with a nested list (or a list of 1-D arrays), in either order,
    computes like two lists.
    """
    rng = np.random.default_rng(10)
    prediction, target = _gaussian(rng, 20, 3), _gaussian(rng, 20, 3)
    reference = _reference(prediction.tolist(), target.tolist())
    assert_agree(_numpy_values(prediction, target.tolist()), reference)
    assert_agree(_numpy_values(prediction.tolist(), target), reference)
    assert_agree(_numpy_values(list(prediction), target), reference)
    metrics = compute_collapse_metrics(prediction, target.tolist(), kl_reg=0.0)
    assert_agree(tuple(metrics.as_dict().values())[:6], reference)  # type: ignore[arg-type]


# --------------------------------------------------------------------- errors
NAN, INF = math.nan, math.inf
GOOD = [[1.0, 2.0], [3.0, 5.0]]


def _bad_batches() -> list[tuple[str, Any]]:
    nan_array = np.zeros((3, 2))
    nan_array[2, 1] = np.nan
    cases: list[tuple[str, Any]] = [
        ("empty", []),
        ("empty rows", [[], []]),
        ("ragged", [[1.0, 2.0], [3.0]]),
        ("1-D list", [1.0, 2.0]),
        ("3-D list", [[[1.0], [2.0]], [[3.0], [4.0]]]),
        ("bool among floats", [[1.0, True], [3.0, 4.0]]),
        ("False among ints", [[1, 2], [False, 4]]),
        ("numpy bool among floats", [[1.0, 2.0], [np.True_, 4.0]]),
        ("string", [[1.0, 2.0], [3.0, "4"]]),
        ("None", [[None, 2.0], [3.0, 4.0]]),
        ("complex", [[1.0, 2.0], [3j, 4.0]]),
        ("nan", [[1.0, NAN], [3.0, 4.0]]),
        ("-inf after a bool", [[-INF, 2.0], [True, 4.0]]),
        ("huge int", [[1, 10**400], [3, 4]]),
        ("None batch", None),
        ("string batch", "abc"),
        ("1-D array", np.zeros(3)),
        ("bool array", np.zeros((2, 2), dtype=bool)),
        ("complex array", np.zeros((2, 2), dtype=complex)),
        ("string array", np.array([["a", "b"], ["c", "d"]])),
        ("object array with None", np.array([[1.0, None]], dtype=object)),
        ("array without rows", np.zeros((0, 3))),
        ("array without columns", np.zeros((3, 0))),
        ("nan array", nan_array),
    ]
    try:
        import torch
    except ImportError:
        return cases
    inf_tensor = torch.ones(3, 2, dtype=torch.bfloat16)
    inf_tensor[1, 1] = math.inf
    cases += [
        ("1-D tensor", torch.zeros(3)),
        ("3-D tensor", torch.zeros(2, 2, 2)),
        ("bool tensor", torch.zeros(2, 2, dtype=torch.bool)),
        ("complex tensor", torch.zeros(2, 2, dtype=torch.complex64)),
        ("tensor without rows", torch.zeros(0, 2)),
        ("tensor without columns", torch.zeros(2, 0)),
        ("inf in a bfloat16 tensor", inf_tensor),
    ]
    return cases


def _error_of(prediction: Any, target: Any, backend: str) -> InputError:
    with pytest.raises(InputError) as caught:
        compute_collapse_metrics(prediction, target, kl_reg=0.0, backend=backend)
    return caught.value


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("which", ["prediction", "target"])
@pytest.mark.parametrize(("case", "bad"), _bad_batches(), ids=[c[0] for c in _bad_batches()])
def test_bad_batches_raise_the_reference_error(backend: str, which: str, case: str, bad: Any) -> None:
    """Every bad batch is refused with the reference's exact message and details, and left as it was."""
    if backend == "torch":
        pytest.importorskip("torch")
    prediction, target = (bad, GOOD) if which == "prediction" else (GOOD, bad)
    before = copy.deepcopy(bad)
    expected = _error_of(prediction, target, "python")
    error = _error_of(prediction, target, backend)
    assert str(error) == str(expected)
    assert str(error.details) == str(expected.details)
    if isinstance(bad, np.ndarray):
        assert np.array_equal(bad, before, equal_nan=bad.dtype.kind == "f")
    elif hasattr(bad, "equal"):
        assert bad.equal(before)
    else:
        assert repr(bad) == repr(before)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_shape_mismatch_is_the_reference_error(backend: str) -> None:
    """Batches of different shapes are refused as the reference refuses them."""
    if backend == "torch":
        pytest.importorskip("torch")
    for prediction, target in (([[1.0, 2.0]], GOOD), (GOOD, [[1.0], [2.0]])):
        expected = _error_of(prediction, target, "python")
        error = _error_of(prediction, target, backend)
        assert str(error) == str(expected)


# ---------------------------------------------------------- conversion contract
def test_numpy_prepare_returns_a_private_float64_copy() -> None:
    """The prepared array is float64, C-contiguous and shares no memory with the input."""
    from geno_lewm.backends import _numpy

    source = np.asfortranarray(np.arange(12.0).reshape(4, 3))
    prepared = _numpy.prepare(source, "prediction")
    assert prepared.dtype == np.float64
    assert prepared.flags.c_contiguous
    assert not np.shares_memory(prepared, source)
    prepared[0, 0] = 99.0
    assert source[0, 0] == 0.0
    assert _numpy.describe(prepared) == (4, 3, "float64", "cpu")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_computing_leaves_inputs_untouched(backend: str) -> None:
    """Arrays and lists are read only: same values and flags after a computation."""
    if backend == "torch":
        pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    prediction = _gaussian(rng, 40, 5, loc=100.0)
    prediction.flags.writeable = False
    target = _gaussian(rng, 40, 5).tolist()
    before = (prediction.copy(), copy.deepcopy(target))
    compute_collapse_metrics(prediction, target, kl_reg=0.0, backend=backend)
    assert np.array_equal(prediction, before[0])
    assert not prediction.flags.writeable
    assert target == before[1]


def test_pairwise_distance_never_allocates_an_n_by_n_matrix() -> None:
    """16,384 x 256: bounded extra memory (far below N x N floats) and the closed-form answer.

    Row i is the unit vector e_(i mod 256), so a pair is at distance sqrt(2) unless both
    rows are the same vector (distance 0): this also runs the exact path for the 516,096
    duplicate pairs.
    """
    from geno_lewm.backends import _numpy

    n, d = 16_384, 256
    prediction = np.zeros((n, d))
    prediction[np.arange(n), np.arange(n) % d] = 1.0
    target = prediction[::-1].copy()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        values = _numpy.collapse_values(_numpy.prepare(prediction, "p"), _numpy.prepare(target, "t"))
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    data = n * d * 8
    assert peak < 6 * data + 2 * backends.PAIRWISE_BLOCK_BYTES
    assert peak < n * n * 8 / 4
    pairs = n * (n - 1) // 2
    same = d * math.comb(n // d, 2)
    assert values[5] == pytest.approx(math.sqrt(2) * (pairs - same) / pairs, rel=RTOL_FLOAT64)


@pytest.mark.parametrize(("n", "itemsize"), [(1, 8), (2, 4), (100, 8), (4096, 8), (16_384, 8), (10**6, 8)])
def test_block_rows_respect_the_memory_budget(n: int, itemsize: int) -> None:
    """A block never exceeds the budget (beyond one row) and never has more rows than the batch."""
    rows = backends.pairwise_block_rows(n, itemsize)
    assert 1 <= rows <= n
    assert rows == 1 or rows * n * itemsize <= backends.PAIRWISE_BLOCK_BYTES


def test_backend_module_examples_hold() -> None:
    """The examples in the backends' docstrings run as written."""
    from geno_lewm.backends import _numpy

    modules = [backends, _numpy]
    try:
        from geno_lewm.backends import _torch
    except ImportError:
        pass
    else:
        modules.append(_torch)
    for module in modules:
        result = doctest.testmod(module)
        assert result.failed == 0, module.__name__
    assert sum(doctest.testmod(m).attempted for m in modules) >= 4
