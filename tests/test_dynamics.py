"""Prediction dynamics: softmax statistics of logits, their alerts, the monitor and the
forward-hook watcher.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from fractions import Fraction
from typing import Any

import pytest

from geno_lewm.errors import InputError
from geno_lewm.training.dynamics import (
    METRIC_NAMES,
    PredictionAlert,
    PredictionMetrics,
    PredictionMonitor,
    PredictionStatistics,
    PredictionThresholds,
    compute_prediction_metrics,
    detect_prediction_alerts,
    extract_logits,
    metric_name,
    prediction_statistics,
    record_prediction_metrics,
    watch_predictions,
)

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is a test extra
    given = None

BACKENDS = ["python", "numpy", "torch"]


def _available(backend: str) -> None:
    if backend != "python":
        pytest.importorskip(backend)


def _entropy(probabilities: list[float]) -> float:
    """Closed-form entropy of an explicit distribution."""
    return -math.fsum(p * math.log(p) for p in probabilities if p > 0)


def _as_backend_input(rows: list[list[float]], backend: str) -> object:
    if backend == "numpy":
        import numpy as np

        return np.array(rows, dtype=np.float64)
    if backend == "torch":
        import torch

        return torch.tensor(rows, dtype=torch.float64)
    return rows


# ------------------------------------------------------------------- definitions
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("classes", [2, 3, 10, 1000])
def test_uniform_logits_have_entropy_log_c(backend: str, classes: int) -> None:
    """Equal logits give entropy log C, normalised entropy 1 and confidence 1/C."""
    _available(backend)
    logits = _as_backend_input([[0.5] * classes, [-7.0] * classes], backend)
    metrics = compute_prediction_metrics(logits, backend=backend)
    assert metrics.pred_entropy == pytest.approx(math.log(classes), rel=1e-12)
    assert metrics.pred_entropy_normalized == pytest.approx(1.0, rel=1e-12)
    assert metrics.pred_confidence == pytest.approx(1 / classes, rel=1e-12)
    assert metrics.class_counts == (2,) + (0,) * (classes - 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_hot_logits_have_zero_entropy(backend: str) -> None:
    """Logits whose softmax is one-hot (a huge margin) give entropy 0 and confidence 1."""
    _available(backend)
    logits = _as_backend_input([[1e30, 0.0, 0.0], [0.0, 0.0, 1e30], [-1e30, 1e30, -1e30]], backend)
    metrics = compute_prediction_metrics(logits, backend=backend)
    assert metrics.pred_entropy == 0.0
    assert metrics.pred_entropy_normalized == 0.0
    assert metrics.pred_confidence == 1.0
    assert metrics.class_counts == (1, 1, 1)
    assert metrics.argmax_spread == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_class_entropy_matches_closed_form(backend: str) -> None:
    """Logits [0, log 3] give p = (1/4, 3/4): entropy, confidence and counts in closed form."""
    _available(backend)
    metrics = compute_prediction_metrics(_as_backend_input([[0.0, math.log(3.0)]], backend), backend=backend)
    assert metrics.pred_entropy == pytest.approx(_entropy([0.25, 0.75]), rel=1e-14)
    assert metrics.pred_entropy_normalized == pytest.approx(_entropy([0.25, 0.75]) / math.log(2), rel=1e-14)
    assert metrics.pred_confidence == pytest.approx(0.75, rel=1e-14)
    assert metrics.class_counts == (0, 1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("extreme", [1e30, 1e300, 1.7976931348623157e308])
def test_huge_logits_give_finite_metrics(backend: str, extreme: float) -> None:
    """Finite logits of any magnitude, even spanning more than the float range, give finite numbers."""
    _available(backend)
    rows = [[extreme, -extreme, 0.0], [-extreme, -extreme, -extreme], [extreme, extreme, -extreme]]
    metrics = compute_prediction_metrics(_as_backend_input(rows, backend), backend=backend)
    assert all(math.isfinite(v) for v in metrics.as_dict().values())
    expected_entropy = (0.0 + math.log(3) + math.log(2)) / 3
    assert metrics.pred_entropy == pytest.approx(expected_entropy, rel=1e-12)
    assert metrics.pred_confidence == pytest.approx((1 + 1 / 3 + 1 / 2) / 3, rel=1e-12)


def test_argmax_spread_and_top_class_fraction_follow_the_histogram() -> None:
    """Counts (3, 1, 0, 0) of 4 rows: top fraction 3/4 and spread = H(3/4, 1/4) / log 4."""
    rows = [[5.0, 0.0, 0.0, 0.0]] * 3 + [[0.0, 5.0, 0.0, 0.0]]
    metrics = compute_prediction_metrics(rows)
    assert metrics.class_counts == (3, 1, 0, 0)
    assert metrics.top_class_fraction == float(Fraction(3, 4))
    assert metrics.argmax_spread == pytest.approx(_entropy([0.75, 0.25]) / math.log(4), rel=1e-14)
    assert metrics.batch_size == 4
    assert metrics.num_classes == 4


def test_ties_go_to_the_first_maximum_on_every_backend() -> None:
    """A row with tied maxima names the first of them, whatever computes it."""
    pytest.importorskip("numpy")
    pytest.importorskip("torch")
    rows = [[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]]
    counts = {compute_prediction_metrics(_as_backend_input(rows, b), backend=b).class_counts for b in BACKENDS}
    assert counts == {(1, 1, 0)}


def test_float32_tensor_agrees_with_reference() -> None:
    """float32 logits on the torch backend match the float64 reference to float32 accuracy."""
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 17, generator=generator) * 4
    reference = compute_prediction_metrics(logits.double().tolist(), backend="python")
    fast = compute_prediction_metrics(logits, backend="torch")
    for name in METRIC_NAMES:
        assert getattr(fast, name) == pytest.approx(getattr(reference, name), rel=1e-5, abs=1e-6)
    assert fast.class_counts == reference.class_counts


def test_statistics_merge_equals_the_concatenated_batch() -> None:
    """Merged sufficient statistics of two batches give the metrics of their concatenation."""
    first = [[0.0, 1.0, 2.0], [3.0, 0.5, 0.0]]
    second = [[1.0, 1.0, 1.0], [0.0, 0.0, 9.0], [2.0, -1.0, 0.0]]
    merged = prediction_statistics(first).merge(prediction_statistics(second)).finalize()
    whole = compute_prediction_metrics(first + second)
    assert merged.class_counts == whole.class_counts
    for name in METRIC_NAMES:
        assert getattr(merged, name) == pytest.approx(getattr(whole, name), rel=1e-14)


def test_merging_statistics_of_different_class_counts_is_refused() -> None:
    """Statistics of 2 and 3 classes cannot be combined."""
    with pytest.raises(InputError, match="2 and 3 classes"):
        prediction_statistics([[0.0, 1.0]]).merge(prediction_statistics([[0.0, 1.0, 2.0]]))


if given is not None:
    _rows = st.integers(2, 6).flatmap(
        lambda c: st.lists(
            st.lists(st.floats(-50, 50, allow_nan=False), min_size=c, max_size=c), min_size=1, max_size=8
        )
    )

    @given(rows=_rows)
    @settings(max_examples=40)
    def test_backends_agree_with_the_reference(rows: list[list[float]]) -> None:
        """NumPy and torch (float64) compute what the pure-Python reference computes."""
        pytest.importorskip("numpy")
        pytest.importorskip("torch")
        reference = compute_prediction_metrics(rows, backend="python")
        for backend in ("numpy", "torch"):
            fast = compute_prediction_metrics(_as_backend_input(rows, backend), backend=backend)
            assert fast.class_counts == reference.class_counts
            for name in METRIC_NAMES:
                assert getattr(fast, name) == pytest.approx(getattr(reference, name), rel=1e-11, abs=1e-12)

    @given(rows=_rows, shift=st.floats(-1e3, 1e3, allow_nan=False))
    @settings(max_examples=40)
    def test_adding_a_constant_to_a_row_changes_nothing(rows: list[list[float]], shift: float) -> None:
        """The softmax is shift-invariant, so every metric is too."""
        shifted = [[x + shift for x in row] for row in rows]
        before = compute_prediction_metrics(rows)
        after = compute_prediction_metrics(shifted)
        for name in ("pred_entropy", "pred_entropy_normalized", "pred_confidence"):
            assert getattr(after, name) == pytest.approx(getattr(before, name), rel=1e-9, abs=1e-9)

    @given(rows=_rows)
    @settings(max_examples=40)
    def test_metrics_stay_in_their_ranges(rows: list[list[float]]) -> None:
        """Entropy in [0, log C], normalised values and fractions in [0, 1], confidence >= 1/C."""
        metrics = compute_prediction_metrics(rows)
        classes = len(rows[0])
        assert 0.0 <= metrics.pred_entropy <= math.log(classes)
        assert 0.0 <= metrics.pred_entropy_normalized <= 1.0
        assert 1 / classes - 1e-12 <= metrics.pred_confidence <= 1.0
        assert 0.0 <= metrics.argmax_spread <= 1.0
        assert 1 / classes - 1e-12 <= metrics.top_class_fraction <= 1.0


# ----------------------------------------------------------------------- inputs
@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_logit_is_reported_with_row_and_column(backend: str) -> None:
    """A NaN is refused on every backend with the same message naming row 1, column 2."""
    _available(backend)
    rows = [[0.0, 1.0, 2.0], [0.0, 1.0, math.nan]]
    with pytest.raises(InputError) as caught:
        compute_prediction_metrics(_as_backend_input(rows, backend), backend=backend)
    assert str(caught.value) == "'logits' has a non-finite value nan at row 1, column 2"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_single_class_is_refused(backend: str) -> None:
    """One column has no softmax to speak of: an InputError, not entropy 0."""
    _available(backend)
    with pytest.raises(InputError, match="at least 2 classes"):
        compute_prediction_metrics(_as_backend_input([[1.0], [2.0]], backend), backend=backend)


def test_bad_inputs_raise_the_shared_messages() -> None:
    """Ragged rows, strings, booleans and empty batches get the input module's messages."""
    with pytest.raises(InputError, match="ragged: row 1 has 1 columns"):
        compute_prediction_metrics([[1.0, 2.0], [1.0]])
    with pytest.raises(InputError, match="str at row 0, column 1"):
        compute_prediction_metrics([[1.0, "2"]])
    with pytest.raises(InputError, match="booleans"):
        compute_prediction_metrics([[1.0, True]])
    with pytest.raises(InputError, match="is empty"):
        compute_prediction_metrics([])


def test_bool_and_3d_tensors_are_refused() -> None:
    """A boolean tensor and a 3-D tensor are not logits [N, C]."""
    torch = pytest.importorskip("torch")
    with pytest.raises(InputError, match=r"dtype torch\.bool"):
        compute_prediction_metrics(torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(InputError, match="got 3-D data"):
        compute_prediction_metrics(torch.zeros(2, 3, 4))


def test_unknown_backend_is_refused() -> None:
    """The backend name is checked like the collapse core checks it."""
    with pytest.raises(InputError, match="'backend' must be one of"):
        compute_prediction_metrics([[0.0, 1.0]], backend="jax")


def test_inputs_are_not_modified() -> None:
    """The logits are read, never written: lists, arrays and tensors come back unchanged."""
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    rows = [[3.0, 1.0], [0.0, 2.0]]
    array = np.array(rows)
    tensor = torch.tensor(rows)
    for value in (rows, array, tensor):
        compute_prediction_metrics(value)
    assert rows == [[3.0, 1.0], [0.0, 2.0]]
    assert array.tolist() == rows
    assert tensor.tolist() == rows


# ------------------------------------------------------------------------ alerts
def test_alert_criteria_fire_in_order_with_their_bounds() -> None:
    """Mode collapse, class dominance and random guessing trip strictly past their thresholds."""
    thresholds = PredictionThresholds(
        min_normalized_entropy=0.2, max_normalized_entropy=0.8, max_top_class_fraction=0.6
    )
    collapsed = PredictionMetrics(0.1, 0.1, 0.9, 0.75, 0.5, (3, 1))
    assert detect_prediction_alerts(collapsed, thresholds=thresholds) == (
        PredictionAlert("mode_collapse", "pred_entropy_normalized", 0.1, 0.2),
        PredictionAlert("class_dominance", "top_class_fraction", 0.75, 0.6),
    )
    guessing = PredictionMetrics(0.6, 0.9, 0.5, 0.5, 1.0, (2, 2))
    assert detect_prediction_alerts(guessing, thresholds=thresholds) == (
        PredictionAlert("random_guessing", "pred_entropy_normalized", 0.9, 0.8),
    )
    at_bounds = PredictionMetrics(0.2, 0.2, 0.9, 0.6, 0.5, (3, 2))
    assert detect_prediction_alerts(at_bounds, thresholds=thresholds) == ()


def test_a_single_row_never_counts_as_class_dominance() -> None:
    """One row always names one class; the dominance criterion needs two rows."""
    metrics = compute_prediction_metrics([[0.0, 0.1]])
    assert metrics.top_class_fraction == 1.0
    assert [a.criterion for a in detect_prediction_alerts(metrics)] == ["random_guessing"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("min_normalized_entropy", 0.0, "'min_normalized_entropy' must be > 0: got 0.0"),
        ("max_top_class_fraction", 1.5, "'max_top_class_fraction' must be <= 1: got 1.5"),
        ("max_normalized_entropy", math.nan, "'max_normalized_entropy' must be finite: got nan"),
        ("min_normalized_entropy", 0.96, "'min_normalized_entropy' must be < 'max_normalized_entropy'"),
    ],
)
def test_thresholds_are_validated(field: str, value: float, message: str) -> None:
    """Each threshold lies in (0, 1], the entropy band is not empty; messages use the shared shape."""
    with pytest.raises(InputError) as caught:
        PredictionThresholds(**{field: value})
    assert str(caught.value).startswith(message)
    assert caught.value.details["field"] == field


# --------------------------------------------------------------------- recording
def test_record_sets_gauges_and_counts(registry: object) -> None:
    """Every scalar metric becomes its gauge; checks and alerts are counted."""
    metrics = compute_prediction_metrics([[5.0, 0.0], [6.0, 0.0]])
    alerts = detect_prediction_alerts(metrics)
    record_prediction_metrics(metrics, alerts=alerts, registry=registry)  # type: ignore[arg-type]
    snapshot = registry.snapshot()  # type: ignore[attr-defined]
    for name, value in metrics.as_dict().items():
        assert snapshot[metric_name(name)] == value
    assert snapshot["geno_lewm.training.dynamics.checks"] == 1.0
    assert snapshot["geno_lewm.training.dynamics.alert"] == float(len(alerts))


def test_monitor_writes_a_readable_json_log(tmp_path: object, registry: object) -> None:
    """With the real JSON logger, a check reads back as metric records and typed alerts."""
    pytest.importorskip("structlog")
    pytest.importorskip("pydantic")
    from geno_lewm.logs import alerts, read_log
    from geno_lewm.observability import get_logger

    logger = get_logger("training", log_dir=tmp_path, run_id="dynamics")
    monitor = PredictionMonitor(log_every_steps=10, registry=registry)  # type: ignore[arg-type]
    check = monitor.observe([[8.0, 0.0, 0.0]] * 4, step=20, logger=logger)
    assert check is not None and check.tripped
    records = list(read_log(logger.path))
    metrics = {r.name: r for r in records if r.event == "training.metric"}
    assert set(metrics) == {metric_name(n) for n in METRIC_NAMES}
    assert metrics[metric_name("pred_confidence")].value == check.metrics.pred_confidence
    assert metrics[metric_name("top_class_fraction")].threshold == 0.9
    assert metrics[metric_name("pred_entropy")].dim == 3
    assert metrics[metric_name("pred_entropy")].batch_size == 4
    logged = [(a.event, a.criterion, a.value, a.threshold, a.step) for a in alerts(records)]
    expected = [("training.dynamics.alert", a.criterion, a.value, a.threshold, 20) for a in check.alerts]
    assert logged == expected


# ----------------------------------------------------------------------- monitor
def test_monitor_follows_the_collapse_schedule(registry: object) -> None:
    """Steps 0 and off-period steps are skipped without looking at the logits; force overrides."""
    monitor = PredictionMonitor(log_every_steps=5, registry=registry)  # type: ignore[arg-type]
    not_logits = object()
    assert monitor.observe(not_logits, step=0) is None
    assert monitor.observe(not_logits, step=7) is None
    assert monitor.last_check is None
    check = monitor.observe([[1.0, 0.0]], step=7, force=True)
    assert check is not None and check.step == 7
    assert monitor.observe([[1.0, 0.0], [0.0, 1.0]], step=10) is not None
    assert [monitor.should_log(s) for s in (0, 4, 5, 15)] == [False, False, True, True]


def test_rejected_batch_changes_no_state(registry: object) -> None:
    """A bad batch on a scheduled step raises and leaves the last check and the registry alone."""
    monitor = PredictionMonitor(log_every_steps=1, registry=registry)  # type: ignore[arg-type]
    first = monitor.observe([[1.0, 0.0], [0.0, 1.0]], step=1)
    before = registry.snapshot()  # type: ignore[attr-defined]
    with pytest.raises(InputError):
        monitor.observe([[1.0, math.inf]], step=2)
    assert monitor.last_check is first
    assert registry.snapshot() == before  # type: ignore[attr-defined]


@pytest.mark.parametrize("step", [-1, 1.5, True, "3"])
def test_bad_steps_are_refused(step: object, registry: object) -> None:
    """Negative, fractional, boolean and string steps raise the shared message."""
    monitor = PredictionMonitor(registry=registry)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="'step' must be a non-negative integer"):
        monitor.observe([[0.0, 1.0]], step=step)  # type: ignore[arg-type]


def test_monitor_configuration_is_validated() -> None:
    """The period, thresholds and backend are checked at construction."""
    with pytest.raises(InputError, match="'log_every_steps' must be a positive integer: got 0"):
        PredictionMonitor(log_every_steps=0)
    with pytest.raises(InputError, match="must be a PredictionThresholds"):
        PredictionMonitor(thresholds={"min_normalized_entropy": 0.1})  # type: ignore[arg-type]
    with pytest.raises(InputError, match="'backend' must be one of"):
        PredictionMonitor(backend="cuda")


# ------------------------------------------------------------------------- hooks
def test_extract_logits_unwraps_dicts_tuples_and_flattens_maps() -> None:
    """Dicts by logits/out/preds, tuples by first element; [N, C, H, W] becomes N*H*W rows."""
    torch = pytest.importorskip("torch")
    logits = torch.randn(4, 3)
    assert extract_logits({"loss": torch.tensor(1.0), "logits": logits}) is not None
    assert torch.equal(extract_logits({"preds": logits}), logits)  # type: ignore[arg-type]
    assert torch.equal(extract_logits((logits, torch.zeros(4))), logits)  # type: ignore[arg-type]
    assert extract_logits({"embedding": logits}) is None
    assert extract_logits(torch.randn(4)) is None
    assert extract_logits(torch.ones(4, 3, dtype=torch.int64)) is None
    assert extract_logits(torch.randn(4, 1)) is None
    maps = torch.randn(2, 3, 5, 7)
    rows = extract_logits(maps)
    assert rows is not None and rows.shape == (70, 3)
    assert torch.equal(rows[8], maps[0, :, 1, 1])
    sequence = torch.randn(2, 6, 4)
    flattened = extract_logits(sequence, class_dim=-1)
    assert flattened is not None and torch.equal(flattened, sequence.reshape(12, 4))


def test_watcher_observes_scheduled_forward_calls_and_detaches(registry: object) -> None:
    """Every n-th training forward call is checked with the module's own outputs; detach removes the hook."""
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(4, 3)
    monitor = PredictionMonitor(log_every_steps=3, registry=registry)  # type: ignore[arg-type]
    watcher = watch_predictions(model, monitor)
    inputs = [torch.randn(5, 4, generator=torch.Generator().manual_seed(i)) for i in range(7)]
    outputs = [model(x) for x in inputs]
    assert watcher.calls == 7
    assert watcher.last_check is not None and watcher.last_check.step == 6
    expected = compute_prediction_metrics(outputs[5].detach())
    assert watcher.last_check.metrics == expected
    model.eval()
    model(inputs[0])
    assert watcher.calls == 7
    watcher.detach()
    assert not watcher.attached
    assert len(model._forward_hooks) == 0
    model.train()
    model(inputs[0])
    assert watcher.calls == 7


def test_watcher_skips_non_logit_outputs_and_unwraps_dicts(registry: object) -> None:
    """A dict output is unwrapped by its 'logits' key; an embedding output is skipped and counted."""
    torch = pytest.importorskip("torch")

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(2, 3)
            self.emit_logits = True

        def forward(self, x: torch.Tensor) -> object:
            out = self.linear(x)
            return {"logits": out} if self.emit_logits else {"embedding": out}

    head = Head()
    monitor = PredictionMonitor(log_every_steps=1, registry=registry)  # type: ignore[arg-type]
    with watch_predictions(head, monitor) as watcher:
        head(torch.randn(3, 2))
        assert watcher.last_check is not None and watcher.last_check.metrics.batch_size == 3
        head.emit_logits = False
        head(torch.randn(3, 2))
        assert watcher.skipped == 1
    assert not watcher.attached and len(head._forward_hooks) == 0


def test_watcher_with_step_function_observes_once_per_step(registry: object) -> None:
    """Under gradient accumulation (several forwards per step) a scheduled step is observed once."""
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(2, 2)
    clock = {"step": 0}
    monitor = PredictionMonitor(log_every_steps=2, registry=registry)  # type: ignore[arg-type]
    with watch_predictions(model, monitor, step_fn=lambda: clock["step"]):
        for step in range(1, 5):
            clock["step"] = step
            for _ in range(3):
                model(torch.randn(4, 2))
    assert registry.value("geno_lewm.training.dynamics.checks") == 2.0  # type: ignore[attr-defined]
    assert monitor.last_check is not None and monitor.last_check.step == 4


def test_watch_predictions_validates_its_arguments() -> None:
    """A non-module, a wrong monitor type, a non-integer class_dim are refused."""
    torch = pytest.importorskip("torch")
    with pytest.raises(InputError, match=r"'module' must be a torch\.nn\.Module"):
        watch_predictions(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="'monitor' must be a PredictionMonitor"):
        watch_predictions(torch.nn.Linear(2, 2), object())  # type: ignore[arg-type]
    with pytest.raises(InputError, match="'class_dim' must be an integer"):
        watch_predictions(torch.nn.Linear(2, 2), class_dim=1.0)  # type: ignore[arg-type]


def test_statistics_reject_foreign_merges() -> None:
    """merge() takes only PredictionStatistics."""
    with pytest.raises(InputError, match="must be a PredictionStatistics"):
        PredictionStatistics(1, 0.0, 1.0, (1, 0)).merge((1, 0.0, 1.0, (1, 0)))  # type: ignore[arg-type]


def test_importing_dynamics_loads_no_optional_dependency() -> None:
    """A fresh interpreter computing on lists never imports numpy, torch, structlog or pydantic."""
    code = (
        "import sys, json\n"
        "from geno_lewm.training.dynamics import compute_prediction_metrics\n"
        "compute_prediction_metrics([[0.0, 1.0], [2.0, 0.0]])\n"
        "print(json.dumps([m for m in ('numpy', 'torch', 'structlog', 'pydantic') if m in sys.modules]))\n"
    )
    from tests.conftest import REPO_ROOT

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT, timeout=120
    )
    assert json.loads(result.stdout) == []


# ------------------------------------------------------------------ alert policy and sinks
def _one_class_logits(rows: int = 8, classes: int = 4) -> list[list[float]]:
    """Every row puts almost all its probability on class 0: mode collapse and class dominance."""
    return [[30.0] + [0.0] * (classes - 1) for _ in range(rows)]


def test_default_policy_gives_the_same_alerts_as_no_policy() -> None:
    """With AlertPolicy() the monitor's alerts equal the plain criteria's on random logits."""
    import random

    from geno_lewm.metrics import MetricRegistry
    from geno_lewm.training.alerting import AlertPolicy

    rng = random.Random(3)
    plain = PredictionMonitor(log_every_steps=1, backend="python", registry=MetricRegistry())
    tracked = PredictionMonitor(log_every_steps=1, backend="python", registry=MetricRegistry(), policy=AlertPolicy())
    for step in range(1, 41):
        scale = rng.choice([0.0, 0.5, 5.0, 50.0])
        logits = [[scale * rng.gauss(0, 1) for _ in range(5)] for _ in range(rng.randint(1, 6))]
        a, b = plain.observe(logits, step=step), tracked.observe(logits, step=step)
        assert a is not None and b is not None and a.alerts == b.alerts


def test_patience_delays_the_alert_and_logs_its_start(recording_logger: Any) -> None:
    """patience=2: the first collapsed check alerts nothing, the second raises both alerts and logs them raised."""
    from geno_lewm.metrics import MetricRegistry
    from geno_lewm.training.alerting import ALERT_RAISED_EVENT, AlertPolicy

    monitor = PredictionMonitor(
        log_every_steps=10, backend="python", registry=MetricRegistry(), policy=AlertPolicy(patience=2)
    )
    first = monitor.observe(_one_class_logits(), step=10, logger=recording_logger)
    second = monitor.observe(_one_class_logits(), step=20, logger=recording_logger)
    assert first is not None and first.alerts == ()
    assert second is not None and {a.criterion for a in second.alerts} == {"mode_collapse", "class_dominance"}
    raised = [fields["criterion"] for _, event, fields in recording_logger.calls if event == ALERT_RAISED_EVENT]
    assert sorted(raised) == ["class_dominance", "mode_collapse"]


def test_raise_policy_stops_after_recording_to_registry_and_sinks() -> None:
    """on_alert='raise' raises TrainingAlertError (not the collapse error) once gauges and sinks hold the check."""
    from geno_lewm.errors import CollapseDetectedError, TrainingAlertError
    from geno_lewm.integrations.sinks import MemorySink
    from geno_lewm.metrics import MetricRegistry

    registry, sink = MetricRegistry(), MemorySink()
    monitor = PredictionMonitor(log_every_steps=5, backend="python", registry=registry, on_alert="raise", sinks=sink)
    with pytest.raises(TrainingAlertError, match="mode_collapse") as caught:
        monitor.observe(_one_class_logits(), step=5)
    assert not isinstance(caught.value, CollapseDetectedError)
    assert caught.value.step == 5 and caught.value.check is monitor.last_check
    entropy = monitor.last_check.metrics.pred_entropy_normalized  # type: ignore[union-attr]
    assert registry.value(metric_name("pred_entropy_normalized")) == entropy
    [(step, values)] = sink.calls
    assert step == 5 and values[metric_name("pred_entropy_normalized")] == entropy


# ------------------------------------------------------- N-D logits and class_dim
def _direct_metrics(probabilities: Any, class_dim: int) -> tuple[float, float]:
    """Mean entropy and mean largest probability of a softmax taken over ``class_dim``, per position."""
    numpy = pytest.importorskip("numpy")
    entropy = -(probabilities * numpy.log(probabilities)).sum(axis=class_dim)
    return float(entropy.mean()), float(probabilities.max(axis=class_dim).mean())


@pytest.mark.parametrize(("shape", "class_dim"), [((3, 4, 2, 5), 1), ((3, 5, 4), -1), ((3, 4, 5), 1), ((4, 3), 0)])
def test_logits_as_rows_gives_the_metrics_of_a_softmax_over_class_dim(shape: tuple[int, ...], class_dim: int) -> None:
    """N-D arrays and tensors become one row per position; the metrics equal a direct softmax over class_dim."""
    numpy = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    from geno_lewm.training.dynamics import logits_as_rows

    logits = numpy.random.default_rng(7).normal(size=shape) * 3.0
    shifted = numpy.exp(logits - logits.max(axis=class_dim, keepdims=True))
    probabilities = shifted / shifted.sum(axis=class_dim, keepdims=True)
    entropy, confidence = _direct_metrics(probabilities, class_dim)
    for given in (logits, torch.from_numpy(logits)):
        rows = logits_as_rows(given, class_dim)
        positions = math.prod(shape) // shape[class_dim]
        assert tuple(rows.shape) == (positions, shape[class_dim])
        metrics = compute_prediction_metrics(rows)
        assert metrics.pred_entropy == pytest.approx(entropy, rel=1e-12)
        assert metrics.pred_confidence == pytest.approx(confidence, rel=1e-12)


def test_logits_as_rows_refuses_ambiguous_and_impossible_class_dims() -> None:
    """3-D logits without class_dim are ambiguous; a class_dim outside the shape is refused; lists pass through."""
    numpy = pytest.importorskip("numpy")
    from geno_lewm.training.dynamics import check_class_dim, logits_as_rows

    with pytest.raises(InputError, match=r"3-D logits of shape \[2, 6, 4\] are ambiguous.*class_dim=-1") as caught:
        logits_as_rows(numpy.zeros((2, 6, 4)))
    assert caught.value.details["field"] == "class_dim"
    with pytest.raises(InputError, match="'class_dim' 3 is outside the 3 dimensions"):
        logits_as_rows(numpy.zeros((2, 6, 4)), 3)
    assert logits_as_rows(numpy.zeros((2, 3, 4, 5))).shape == (40, 3)  # 4-D: dimension 1 by default
    rows = [[0.0, 1.0], [1.0, 0.0]]
    assert logits_as_rows(rows) is rows and logits_as_rows(rows, -1) is rows
    with pytest.raises(InputError, match="'class_dim' 0 needs a tensor or an array"):
        logits_as_rows(rows, 0)
    with pytest.raises(InputError, match="'class_dim' must be an integer or None: got True"):
        check_class_dim(True)


def test_extract_logits_with_class_dim_none_refuses_3d_sequences() -> None:
    """extract_logits(class_dim=None) reads [N, C] and [N, C, H, W] by dimension 1 and raises for [B, T, C]."""
    torch = pytest.importorskip("torch")
    maps = torch.randn(2, 3, 5, 7)
    rows = extract_logits({"logits": maps}, class_dim=None)
    assert rows is not None and torch.equal(rows, maps.movedim(1, -1).reshape(-1, 3))
    with pytest.raises(InputError, match="ambiguous"):
        extract_logits({"logits": torch.randn(2, 6, 4)}, class_dim=None)
    assert extract_logits(torch.randn(4, 3), class_dim=None) is not None
