"""The bad-input catalogue: every unusable argument raises InputError naming what and where,
and nothing passed in is modified.
"""

from __future__ import annotations

import copy
import doctest
import math
from typing import Any

import pytest

from geno_lewm import _inputs
from geno_lewm._inputs import as_python_matrix
from geno_lewm.errors import BackendUnavailableError, GenoLeWMError, InputError
from geno_lewm.training.collapse import (
    CollapseMetrics,
    CollapseMonitor,
    CollapseThresholds,
    compute_collapse_metrics,
    detect_collapse,
)

GOOD = [[1.0, 2.0], [3.0, 4.0]]
NAN, INF = math.nan, math.inf


def raises_input_error(call: Any, *args: Any, **kwargs: Any) -> InputError:
    """Run ``call`` and return the InputError it must raise."""
    with pytest.raises(InputError) as info:
        call(*args, **kwargs)
    assert isinstance(info.value, ValueError)
    return info.value


# --------------------------------------------------------------- the error types
def test_input_error_is_a_value_error_and_a_library_error() -> None:
    """InputError is caught by `except ValueError` and by `except GenoLeWMError`."""
    assert issubclass(InputError, ValueError)
    assert issubclass(InputError, GenoLeWMError)


def test_input_error_details_are_read_only_copies() -> None:
    """The details are a snapshot of the mapping given, and cannot be changed afterwards."""
    given = {"field": "kl_reg"}
    error = InputError("bad", details=given)
    given["field"] = "changed"
    assert error.details["field"] == "kl_reg"
    with pytest.raises(TypeError):
        error.details["field"] = "x"  # type: ignore[index]
    assert dict(InputError("no details").details) == {}


def test_backend_unavailable_error_is_an_import_error_naming_the_extra() -> None:
    """A missing optional backend is an ImportError whose message says what to install."""
    error = BackendUnavailableError("torch", "torch")
    assert isinstance(error, ImportError)
    assert isinstance(error, GenoLeWMError)
    assert "geno-lewm[torch]" in str(error)
    assert (error.backend, error.extra, error.name) == ("torch", "torch", "torch")


# --------------------------------------------------------------------- batches
# (id, bad value, fragments the message must contain, details that must be present)
BAD_BATCHES: list[tuple[str, Any, tuple[str, ...], dict[str, Any]]] = [
    ("empty batch", [], ("is empty",), {"rows": 0}),
    ("empty tuple batch", (), ("is empty",), {"rows": 0}),
    ("empty rows", [[], []], ("has empty rows",), {"columns": 0}),
    ("ragged", [[1.0, 2.0], [3.0]], ("ragged", "row 1 has 1 columns", "row 0 has 2"), {"row": 1}),
    ("ragged longer", [[1.0], [2.0], [3.0, 4.0]], ("ragged", "row 2 has 2 columns"), {"row": 2}),
    ("1-D", [1.0, 2.0], ("must be 2-D", "1-D"), {"ndim": 1}),
    ("3-D", [[[1.0], [2.0]], [[3.0], [4.0]]], ("row 0, column 0", "more than 2 dimensions"), {"row": 0}),
    ("bool", [[1.0, True], [3.0, 4.0]], ("row 0, column 1", "bool"), {"row": 0, "column": 1}),
    ("False", [[1.0, 2.0], [False, 4.0]], ("row 1, column 0", "bool"), {"row": 1, "column": 0}),
    ("string", [[1.0, 2.0], [3.0, "4"]], ("row 1, column 1", "str"), {"row": 1, "column": 1}),
    ("None", [[None, 2.0], [3.0, 4.0]], ("row 0, column 0", "missing value"), {"row": 0, "column": 0}),
    ("complex", [[1.0, 2.0], [3j, 4.0]], ("row 1, column 0", "complex"), {"row": 1, "column": 0}),
    ("nan", [[1.0, NAN], [3.0, 4.0]], ("non-finite", "nan", "row 0, column 1"), {"row": 0, "column": 1}),
    ("+inf", [[1.0, 2.0], [3.0, INF]], ("non-finite", "inf", "row 1, column 1"), {"row": 1, "column": 1}),
    ("-inf", [[-INF, 2.0], [3.0, 4.0]], ("non-finite", "-inf", "row 0, column 0"), {"row": 0, "column": 0}),
    ("huge int", [[1, 10**400], [3, 4]], ("non-finite", "row 0, column 1"), {"row": 0, "column": 1}),
    ("huge negative int", [[1, 2], [-(10**400), 4]], ("non-finite", "row 1, column 0"), {"row": 1, "column": 0}),
    ("None batch", None, ("must be a 2-D batch", "NoneType"), {}),
    ("number batch", 5.0, ("must be a 2-D batch", "float"), {}),
    ("string batch", "abc", ("must be a 2-D batch", "str"), {}),
    ("dict batch", {"a": [1.0]}, ("must be a 2-D batch", "dict"), {}),
    ("string rows", ["ab", "cd"], ("must be 2-D", "row 0 is a str"), {}),
]


@pytest.mark.parametrize("which", ["prediction", "target"])
@pytest.mark.parametrize(("case", "bad", "fragments", "details"), BAD_BATCHES, ids=[c[0] for c in BAD_BATCHES])
def test_bad_batch_raises_input_error_naming_argument(
    which: str, case: str, bad: Any, fragments: tuple[str, ...], details: dict[str, Any]
) -> None:
    """Each malformed batch is refused with a message naming the argument (and row/column)."""
    prediction, target = (bad, GOOD) if which == "prediction" else (GOOD, bad)
    before = copy.deepcopy((prediction, target))
    error = raises_input_error(compute_collapse_metrics, prediction, target, kl_reg=0.0)
    message = str(error)
    assert message.startswith(f"{which!r} ")
    for fragment in fragments:
        assert fragment in message, (case, message)
    assert error.details["field"] == which
    for key, value in details.items():
        assert error.details[key] == value
    assert (prediction, target) == before


@pytest.mark.parametrize(("case", "bad", "fragments", "details"), BAD_BATCHES, ids=[c[0] for c in BAD_BATCHES])
def test_reference_conversion_refuses_the_same_batches(
    case: str, bad: Any, fragments: tuple[str, ...], details: dict[str, Any]
) -> None:
    """as_python_matrix itself raises the same errors with the name it is given."""
    error = raises_input_error(as_python_matrix, bad, "embeddings")
    assert str(error).startswith("'embeddings' ")
    assert all(fragment in str(error) for fragment in fragments)


def test_numpy_bool_elements_are_refused_as_booleans() -> None:
    """A numpy.bool_ inside nested lists is named as a boolean at its row and column."""
    np = pytest.importorskip("numpy")
    bad = [[1.0, 2.0], [np.True_, 4.0]]
    error = raises_input_error(compute_collapse_metrics, bad, GOOD, kl_reg=0.0)
    assert "row 1, column 0" in str(error)
    assert "booleans are not numbers" in str(error)


def test_numpy_float_elements_are_accepted() -> None:
    """NumPy scalars inside nested lists are real numbers like any other."""
    np = pytest.importorskip("numpy")
    assert as_python_matrix([[np.float32(0.5), np.int64(2)]], "p") == ((0.5, 2.0),)


def test_shape_mismatch_in_batch_size_is_named() -> None:
    """Different row counts: the message gives both shapes and says the batch size differs."""
    error = raises_input_error(compute_collapse_metrics, [[1.0, 2.0]], GOOD, kl_reg=0.0)
    assert str(error) == (
        "'prediction' and 'target' must have the same shape: got [1, 2] and [2, 2] (batch size differs)"
    )


def test_shape_mismatch_in_dimension_is_named() -> None:
    """Different row lengths: the message says the dimension differs."""
    error = raises_input_error(compute_collapse_metrics, GOOD, [[1.0], [2.0]], kl_reg=0.0)
    assert "(dimension differs)" in str(error)
    assert error.details["prediction_shape"] == [2, 2]
    assert error.details["target_shape"] == [2, 1]


def test_conversion_returns_float_tuples() -> None:
    """A valid batch comes back as tuples of floats, ints converted exactly."""
    converted = as_python_matrix([[1, 2.5], (3, -4)], "p")
    assert converted == ((1.0, 2.5), (3.0, -4.0))
    assert all(type(v) is float for row in converted for v in row)


def test_inputs_module_examples_hold() -> None:
    """The examples in the conversion module's docstrings run as written."""
    result = doctest.testmod(_inputs)
    assert result.attempted > 0
    assert result.failed == 0


# ------------------------------------------------------------- arrays and tensors
def _array_cases() -> list[tuple[str, Any, str]]:
    np = pytest.importorskip("numpy")
    nan_at = np.zeros((2, 3))
    nan_at[1, 2] = np.nan
    inf_at = np.ones((2, 3), dtype=np.float32)
    inf_at[0, 1] = -np.inf
    return [
        ("1-D", np.zeros(3), "1-D data"),
        ("3-D", np.zeros((2, 2, 2)), "3-D data"),
        ("0-D", np.array(1.0), "0-D data"),
        ("bool", np.zeros((2, 2), dtype=bool), "dtype bool"),
        ("complex", np.zeros((2, 2), dtype=complex), "dtype complex128"),
        ("strings", np.array([["a", "b"], ["c", "d"]]), "dtype <U1"),
        ("no rows", np.zeros((0, 3)), "is empty"),
        ("no columns", np.zeros((3, 0)), "has empty rows"),
        ("nan", nan_at, "row 1, column 2"),
        ("-inf float32", inf_at, "row 0, column 1"),
        ("object None", np.array([[1.0, None]], dtype=object), "row 0, column 1"),
    ]


def test_bad_numpy_arrays_are_refused() -> None:
    """Arrays of the wrong rank, dtype or content are refused, and left as they were."""
    np = pytest.importorskip("numpy")
    for case, bad, fragment in _array_cases():
        before = bad.copy()
        flags = bad.flags.writeable
        error = raises_input_error(compute_collapse_metrics, bad, bad, kl_reg=0.0, backend="python")
        assert str(error).startswith("'prediction' "), case
        assert fragment in str(error), (case, str(error))
        assert np.array_equal(bad, before, equal_nan=bad.dtype.kind == "f"), case
        assert bad.flags.writeable == flags


def test_bad_torch_tensors_are_refused() -> None:
    """Tensors of the wrong rank, dtype or content are refused with the same messages."""
    torch = pytest.importorskip("torch")
    nan_at = torch.zeros(2, 3)
    nan_at[0, 2] = float("nan")
    cases = [
        (torch.zeros(3), "1-D data"),
        (torch.zeros(2, 2, 2), "3-D data"),
        (torch.zeros(2, 2, dtype=torch.bool), "dtype torch.bool"),
        (torch.zeros(2, 2, dtype=torch.complex64), "dtype torch.complex64"),
        (nan_at, "row 0, column 2"),
        (torch.zeros(0, 4), "is empty"),
    ]
    for bad, fragment in cases:
        before = bad.clone()
        error = raises_input_error(compute_collapse_metrics, GOOD, bad, kl_reg=0.0, backend="python")
        assert str(error).startswith("'target' ")
        assert fragment in str(error), str(error)
        assert torch.equal(bad.isnan(), before.isnan())
        assert torch.equal(bad.nan_to_num(), before.nan_to_num())


# ---------------------------------------------------------------------- kl_reg
def _bad_kl_values() -> list[Any]:
    values: list[Any] = [NAN, INF, -INF, "x", "1.0", True, False, 1j, [1.0], 10**400, -(10**400)]
    try:
        import numpy as np
    except ImportError:
        return values
    return [*values, np.True_, np.float64("nan"), np.array([1.0, 2.0])]


@pytest.mark.parametrize("value", _bad_kl_values(), ids=repr)
def test_bad_kl_reg_is_refused(value: Any) -> None:
    """kl_reg must be a finite real number (or None, for a loss without a Gaussian term): bools, strings,
    complex numbers, NaN and inf are refused.
    """
    error = raises_input_error(compute_collapse_metrics, GOOD, GOOD, kl_reg=value)
    assert str(error).startswith("'kl_reg' must be ")
    assert error.details["field"] == "kl_reg"


def test_multi_element_tensor_kl_reg_is_refused() -> None:
    """A tensor with more than one element is not a kl_reg."""
    torch = pytest.importorskip("torch")
    error = raises_input_error(compute_collapse_metrics, GOOD, GOOD, kl_reg=torch.tensor([1.0, 2.0]))
    assert str(error).startswith("'kl_reg' must be a finite real number")


# ------------------------------------------------------------------------ steps
def _bad_steps() -> list[Any]:
    values: list[Any] = [-1, -500, 1.5, 500.0, True, False, "3", None, [500]]
    try:
        import numpy as np
    except ImportError:
        return values
    return [*values, np.int64(-1), np.float64(500.0)]


@pytest.mark.parametrize("step", _bad_steps(), ids=repr)
def test_bad_step_is_refused_by_observe_and_should_log(step: Any) -> None:
    """Negative, non-integer and boolean steps are refused, even on would-be unscheduled steps."""
    monitor = CollapseMonitor(log_every_steps=5)
    for call in (
        lambda: monitor.should_log(step),
        lambda: monitor.observe(GOOD, GOOD, kl_reg=0.0, step=step),
        lambda: monitor.observe(GOOD, GOOD, kl_reg=0.0, step=step, force=True),
    ):
        error = raises_input_error(call)
        assert str(error) == f"'step' must be a non-negative integer: got {step!r}"
        assert error.details["field"] == "step"
    assert monitor.last_check is None


def test_numpy_integer_steps_are_accepted() -> None:
    """A NumPy integer is an integer step."""
    np = pytest.importorskip("numpy")
    monitor = CollapseMonitor(log_every_steps=5)
    assert monitor.should_log(np.int64(10)) is True
    assert monitor.should_log(np.int32(11)) is False


# ------------------------------------------------------------------- thresholds
THRESHOLD_FIELDS = ("pred_var_to_target_var", "pairwise_to_initial", "kl_reg_max")


@pytest.mark.parametrize("field", THRESHOLD_FIELDS)
@pytest.mark.parametrize("value", [0, 0.0, -1, -0.5])
def test_non_positive_threshold_is_refused(field: str, value: float) -> None:
    """A threshold of 0 or below is refused with the one error shape."""
    error = raises_input_error(CollapseThresholds, **{field: value})
    assert str(error) == f"{field!r} must be > 0: got {value!r}"
    assert error.details["field"] == field


@pytest.mark.parametrize("field", THRESHOLD_FIELDS)
@pytest.mark.parametrize("value", [NAN, INF, -INF, "x", "0.5", True, None, 1j], ids=repr)
def test_non_finite_or_non_numeric_threshold_is_refused(field: str, value: Any) -> None:
    """NaN, infinities, strings, bools, None and complex numbers are not thresholds."""
    error = raises_input_error(CollapseThresholds, **{field: value})
    assert str(error).startswith(f"{field!r} must be ")
    assert str(error).endswith(f": got {value!r}")


def test_thresholds_are_stored_as_floats() -> None:
    """Integer thresholds are accepted and kept as floats."""
    thresholds = CollapseThresholds(1, 2, 30)
    values = (thresholds.pred_var_to_target_var, thresholds.pairwise_to_initial, thresholds.kl_reg_max)
    assert values == (1.0, 2.0, 30.0)
    assert all(type(v) is float for v in (thresholds.pred_var_to_target_var, thresholds.kl_reg_max))


@pytest.mark.parametrize("value", [{"kl_reg_max": 5.0}, 0.5, "default"], ids=repr)
def test_thresholds_of_the_wrong_type_are_refused(value: Any) -> None:
    """Only a CollapseThresholds is accepted where thresholds are expected."""
    metrics = CollapseMetrics(1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0)
    for call in (
        lambda: detect_collapse(metrics, thresholds=value),
        lambda: CollapseMonitor(thresholds=value),
    ):
        error = raises_input_error(call)
        assert str(error).startswith("'thresholds' must be a CollapseThresholds")


def test_detect_collapse_refuses_anything_but_metrics() -> None:
    """detect_collapse needs a CollapseMetrics, not a dict of its fields."""
    error = raises_input_error(detect_collapse, {"kl_reg": 20.0})
    assert str(error) == "'metrics' must be a CollapseMetrics: got dict"


# -------------------------------------------------------------- monitor settings
@pytest.mark.parametrize("value", [0, -1, 1.5, 500.0, True, "5", None], ids=repr)
def test_bad_log_every_steps_is_refused(value: Any) -> None:
    """log_every_steps must be a positive integer."""
    error = raises_input_error(CollapseMonitor, log_every_steps=value)
    assert str(error) == f"'log_every_steps' must be a positive integer: got {value!r}"
    assert error.details["field"] == "log_every_steps"


@pytest.mark.parametrize("value", ["cuda", "", "Python", None, 3, ["python"]], ids=repr)
def test_bad_backend_name_is_refused(value: Any) -> None:
    """An unknown backend name is refused by compute_collapse_metrics and the monitor."""
    for call in (
        lambda: compute_collapse_metrics(GOOD, GOOD, kl_reg=0.0, backend=value),
        lambda: CollapseMonitor(backend=value),
    ):
        error = raises_input_error(call)
        assert str(error) == f"'backend' must be one of 'auto', 'python', 'numpy', 'torch': got {value!r}"


@pytest.mark.parametrize("value", [-1.0, -1e-300, NAN, INF, "x", True], ids=repr)
def test_bad_initial_pairwise_is_refused(value: Any) -> None:
    """A given pairwise baseline must be finite and >= 0."""
    metrics = CollapseMetrics(1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0)
    for call in (
        lambda: CollapseMonitor(initial_pairwise_pred_dist_mean=value),
        lambda: detect_collapse(metrics, initial_pairwise_pred_dist_mean=value),
    ):
        error = raises_input_error(call)
        assert str(error).startswith("'initial_pairwise_pred_dist_mean' must be ")


def test_rows_may_be_one_dimensional_arrays_or_tensors() -> None:
    """A list of 1-D NumPy arrays or tensors is read as the rows of the batch."""
    np = pytest.importorskip("numpy")
    from geno_lewm._inputs import as_python_matrix

    expected = ((1.0, 2.0), (3.0, 4.0))
    assert as_python_matrix([np.array([1.0, 2.0]), np.array([3, 4])], "prediction") == expected
    torch = pytest.importorskip("torch")
    assert as_python_matrix([torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])], "prediction") == expected


def test_a_row_array_of_the_wrong_rank_is_named() -> None:
    """A row that is itself a 2-D array is refused with its row index and kind."""
    np = pytest.importorskip("numpy")
    from geno_lewm._inputs import as_python_matrix

    with pytest.raises(InputError, match=r"'target' must be 2-D.*row 1 is a 2-D ndarray"):
        as_python_matrix([np.zeros(2), np.zeros((2, 2))], "target")


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_three_dimensional_latents_get_a_hint_on_making_rows(kind: str) -> None:
    """A [B, T, D] batch is refused with a hint: one row per token (reshape) or one per sequence (pool)."""
    from geno_lewm.training.collapse import CollapseMonitor

    module = pytest.importorskip(kind)
    batch = module.zeros((2, 3, 4))
    with pytest.raises(InputError, match=r"got 3-D data; for latents of shape \[B, T, D\]") as caught:
        CollapseMonitor(log_every_steps=1).observe(batch, batch, kl_reg=None, step=1)
    assert "x.reshape(-1, D)" in str(caught.value) and "x.mean(dim=1)" in str(caught.value)
