"""The monitor's schedule and baseline policy, and what a check records in the registry and
the logger.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geno_lewm.errors import InputError
from geno_lewm.metrics import CATALOGUE, MetricRegistry, snapshot_values
from geno_lewm.training._spectral import SpectralMetrics
from geno_lewm.training.collapse import (
    METRIC_NAMES,
    BatchInfo,
    CollapseAlert,
    CollapseMetrics,
    CollapseMonitor,
    CollapseThresholds,
    compute_collapse_metrics,
    metric_name,
    record_collapse_metrics,
)

if TYPE_CHECKING:
    from conftest import RecordingLogger

PREFIX = "geno_lewm.training.collapse"
SPECTRAL_FIELDS = [f.name for f in fields(SpectralMetrics)]
TARGET = [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [-1.0, 0.5, 0.0], [2.0, -2.0, 1.0]]


def scaled(batch: list[list[float]], factor: float) -> list[list[float]]:
    return [[factor * v for v in row] for row in batch]


def monitor(registry: MetricRegistry, **kwargs: Any) -> CollapseMonitor:
    kwargs.setdefault("log_every_steps", 10)
    return CollapseMonitor(registry=registry, backend="python", **kwargs)


# --------------------------------------------------------------------- schedule
def test_should_log_follows_the_schedule() -> None:
    """Scheduled steps are exactly the positive multiples of log_every_steps."""
    m = CollapseMonitor(log_every_steps=500)
    assert [s for s in range(2001) if m.should_log(s)] == [500, 1000, 1500, 2000]


def test_step_zero_is_never_scheduled() -> None:
    """Step 0 is not scheduled, whatever the period (0 is a multiple of everything)."""
    assert CollapseMonitor(log_every_steps=1).should_log(0) is False
    assert CollapseMonitor(log_every_steps=1).should_log(1) is True


def test_default_period_is_the_rfc_value() -> None:
    """The default period is 500 steps, and the defaults are the RFC thresholds."""
    m = CollapseMonitor()
    assert m.log_every_steps == 500
    assert m.thresholds == CollapseThresholds()
    assert m.initial_pairwise_pred_dist_mean is None
    assert m.backend == "auto"


def test_unscheduled_step_returns_none_without_reading_the_batch(
    registry: MetricRegistry, recording_logger: RecordingLogger
) -> None:
    """Off-schedule, observe returns None and does not even validate the batch or kl_reg."""
    m = monitor(registry)
    logger = recording_logger
    assert m.observe(object(), None, kl_reg="not a number", step=7, logger=logger) is None
    assert m.observe(TARGET, TARGET, kl_reg=0.0, step=0, logger=logger) is None
    assert m.last_check is None
    assert registry.snapshot() == {}
    assert logger.calls == []


def test_scheduled_step_returns_a_check(registry: MetricRegistry) -> None:
    """On a scheduled step observe returns the check of that batch, with its step and shape."""
    m = monitor(registry)
    check = m.observe(scaled(TARGET, 2.0), TARGET, kl_reg=0.5, step=20)
    assert check is not None
    assert check.metrics == compute_collapse_metrics(scaled(TARGET, 2.0), TARGET, kl_reg=0.5, backend="python")
    assert check.step == 20
    assert check.batch is not None
    assert (check.batch.batch_size, check.batch.dim, check.batch.backend) == (4, 3, "python")
    assert (check.batch.dtype, check.batch.device) == ("float64", "cpu")
    assert check.batch.compute_seconds >= 0.0
    assert m.last_check is check


@pytest.mark.parametrize("step", [0, 3, 11])
def test_force_checks_an_unscheduled_step(registry: MetricRegistry, step: int) -> None:
    """force=True computes on any step, step 0 included."""
    check = monitor(registry).observe(TARGET, TARGET, kl_reg=0.0, step=step, force=True)
    assert check is not None
    assert check.step == step


def test_auto_backend_on_lists_uses_the_reference(registry: MetricRegistry) -> None:
    """With the default backend a small list batch is computed by the pure-Python reference."""
    check = CollapseMonitor(log_every_steps=1, registry=registry).observe(TARGET, TARGET, kl_reg=0.0, step=1)
    assert check is not None
    assert check.batch is not None
    assert check.batch.backend == "python"


# --------------------------------------------------------------------- baseline
def test_first_observed_batch_sets_the_baseline(registry: MetricRegistry) -> None:
    """The first check's pairwise distance becomes the baseline; later ones do not replace it."""
    m = monitor(registry)
    first = m.observe(TARGET, TARGET, kl_reg=0.0, step=10)
    assert first is not None
    assert m.initial_pairwise_pred_dist_mean == first.metrics.pairwise_pred_dist_mean
    m.observe(scaled(TARGET, 3.0), TARGET, kl_reg=0.0, step=20)
    assert m.initial_pairwise_pred_dist_mean == first.metrics.pairwise_pred_dist_mean


def test_single_row_batch_does_not_set_the_baseline(registry: MetricRegistry) -> None:
    """A one-row batch has no pairs, so the baseline waits for a batch of at least two rows."""
    m = monitor(registry)
    assert m.observe([[1.0, 2.0]], [[1.0, 2.0]], kl_reg=0.0, step=10) is not None
    assert m.initial_pairwise_pred_dist_mean is None
    second = m.observe([[0.0, 0.0], [3.0, 4.0]], [[0.0, 0.0], [3.0, 4.0]], kl_reg=0.0, step=20)
    assert second is not None
    assert m.initial_pairwise_pred_dist_mean == 5.0


def test_forced_first_check_sets_the_baseline(registry: MetricRegistry) -> None:
    """A forced check is an observed batch like any other."""
    m = monitor(registry)
    m.observe([[0.0, 0.0], [3.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]], kl_reg=0.0, step=0, force=True)
    assert m.initial_pairwise_pred_dist_mean == 5.0


@pytest.mark.parametrize("given", [0.0, 2.5, 1e6])
def test_given_baseline_is_kept(registry: MetricRegistry, given: float) -> None:
    """A baseline passed to the constructor wins over every observed batch."""
    m = monitor(registry, initial_pairwise_pred_dist_mean=given)
    for step in (10, 20, 30):
        m.observe(scaled(TARGET, step), TARGET, kl_reg=0.0, step=step)
    assert m.initial_pairwise_pred_dist_mean == given


def test_zero_baseline_makes_the_pairwise_criterion_inert(registry: MetricRegistry) -> None:
    """A first batch of identical rows gives baseline 0; no later spread can fall below 0."""
    m = monitor(registry)
    m.observe([[1.0, 1.0, 1.0]] * 3, TARGET[:3], kl_reg=0.0, step=10)
    assert m.initial_pairwise_pred_dist_mean == 0.0
    check = m.observe([[1.0, 1.0, 1.0]] * 3, TARGET[:3], kl_reg=0.0, step=20)
    assert check is not None
    assert "pairwise_pred_dist_mean" not in [a.criterion for a in check.alerts]


REJECTED: list[tuple[str, Any, Any, Any]] = [
    ("nan in a prediction of the wrong shape", [[math.nan, 0.0, 0.0], *TARGET[1:3]], TARGET, 0.0),
    ("ragged target", TARGET, [[1.0], *TARGET[1:]], 0.0),
    ("batch-size mismatch", TARGET[:2], TARGET, 0.0),
    ("empty prediction", [], TARGET, 0.0),
    ("kl_reg string", TARGET, TARGET, "1.0"),
    ("string in prediction", [["0.0", 0.0, 0.0], *TARGET[1:]], TARGET, 0.0),
]


@pytest.mark.parametrize("rejected", REJECTED, ids=[c[0] for c in REJECTED])
def test_rejected_first_batch_changes_nothing(
    registry: MetricRegistry, rejected: tuple[str, Any, Any, Any], recording_logger: RecordingLogger
) -> None:
    """A refused batch raises, never becomes the baseline, and leaves registry and logger untouched (NaN in a batch
    of the right shape is a divergence, recorded: tests/test_divergence.py).
    """
    _, prediction, target, kl_reg = rejected
    m = monitor(registry)
    logger = recording_logger
    with pytest.raises(ValueError):
        m.observe(prediction, target, kl_reg=kl_reg, step=10, logger=logger)
    assert m.initial_pairwise_pred_dist_mean is None
    assert m.last_check is None
    assert registry.snapshot() == {}
    assert logger.calls == []
    good = m.observe(scaled(TARGET, 2.0), TARGET, kl_reg=0.0, step=20)
    assert good is not None
    assert m.initial_pairwise_pred_dist_mean == good.metrics.pairwise_pred_dist_mean


def test_rejected_later_batch_changes_nothing(registry: MetricRegistry) -> None:
    """After a good check, a refused batch leaves the baseline, last check and registry as they were."""
    m = monitor(registry)
    first = m.observe(TARGET, TARGET, kl_reg=0.0, step=10)
    snapshot = registry.snapshot()
    with pytest.raises(ValueError):
        m.observe([[0.0, 0.0, 0.0]] * 4, [[math.inf, 0.0]] * 4, kl_reg=0.0, step=20)
    assert m.last_check is first
    assert m.initial_pairwise_pred_dist_mean == first.metrics.pairwise_pred_dist_mean  # type: ignore[union-attr]
    assert registry.snapshot() == snapshot


# ----------------------------------------------------------------------- alerts
def test_collapsing_sequence_trips_the_spread_criteria(
    registry: MetricRegistry, recording_logger: RecordingLogger
) -> None:
    """Predictions shrinking towards a point trip variance, then pairwise, in order."""
    m = monitor(registry)
    logger = recording_logger
    tripped = {}
    for step, factor in ((10, 1.0), (20, 0.8), (30, 0.6), (40, 0.3)):
        check = m.observe(scaled(TARGET, factor), TARGET, kl_reg=0.0, step=step, logger=logger)
        assert check is not None
        tripped[step] = [a.criterion for a in check.alerts]
    # variance scales by factor**2 (0.64, 0.36, 0.09 of the target's), spread by factor
    assert tripped == {
        10: [],
        20: [],
        30: ["pred_var_per_dim"],
        40: ["pred_var_per_dim", "pairwise_pred_dist_mean"],
    }
    assert registry.value(f"{PREFIX}.alert") == 3.0
    assert registry.value(f"{PREFIX}.checks") == 4.0
    warnings = logger.events("warning", "training.collapse.alert")
    assert [(w["criterion"], w["step"]) for w in warnings] == [
        ("pred_var_per_dim", 30),
        ("pred_var_per_dim", 40),
        ("pairwise_pred_dist_mean", 40),
    ]


def test_kl_reg_alert_through_the_monitor(registry: MetricRegistry) -> None:
    """A kl_reg above the maximum alerts even when the spread is healthy."""
    check = monitor(registry).observe(TARGET, TARGET, kl_reg=10.5, step=10)
    assert check is not None
    assert check.alerts == (CollapseAlert("kl_reg", 10.5, 10.0),)
    assert check.tripped


def test_custom_thresholds_are_applied(registry: MetricRegistry) -> None:
    """The monitor's thresholds are the ones detect_collapse uses."""
    m = monitor(registry, thresholds=CollapseThresholds(kl_reg_max=1.0, pred_var_to_target_var=0.99))
    check = m.observe(scaled(TARGET, 0.99), TARGET, kl_reg=2.0, step=10)
    assert check is not None
    assert [a.criterion for a in check.alerts] == ["pred_var_per_dim", "kl_reg"]


# -------------------------------------------------------------------- recording
def test_observe_records_gauges_and_counters(registry: MetricRegistry) -> None:
    """Each check sets the seven gauges, counts itself, and times itself in the histogram."""
    m = monitor(registry)
    check = m.observe(scaled(TARGET, 0.5), TARGET, kl_reg=12.0, step=10)
    assert check is not None
    for name, value in check.metrics.as_dict().items():
        assert registry.value(metric_name(name)) == value
    assert registry.value(f"{PREFIX}.checks") == 1.0
    assert registry.value(f"{PREFIX}.alert") == float(len(check.alerts)) == 2.0
    snapshot = registry.snapshot()
    assert snapshot[f"{PREFIX}.compute_seconds.count"] == 1.0
    assert snapshot[f"{PREFIX}.compute_seconds.sum"] == check.batch.compute_seconds  # type: ignore[union-attr]


def test_observe_logs_one_event_per_metric_and_alert(
    registry: MetricRegistry, recording_logger: RecordingLogger
) -> None:
    """A check logs seven training.metric events (info) and one warning per alert."""
    m = monitor(registry, initial_pairwise_pred_dist_mean=4.0)
    logger = recording_logger
    check = m.observe(scaled(TARGET, 0.1), TARGET, kl_reg=11.0, step=30, logger=logger)
    assert check is not None
    infos = logger.events("info", "training.metric")
    assert [e["name"] for e in infos] == [metric_name(n) for n in METRIC_NAMES]
    assert len(logger.calls) == 7 + len(check.alerts)
    for event, (field, value) in zip(infos, check.metrics.as_dict().items()):
        assert event["value"] == value
        assert event["step"] == 30
        assert event["kind"] == "gauge"
        assert event["unit"] == CATALOGUE[metric_name(field)].unit
        assert event["batch_size"] == 4
        assert event["dim"] == 3
        assert event["backend"] == "python"
        assert event["device"] == "cpu"
        assert event["dtype"] == "float64"
        assert event["compute_seconds"] == check.batch.compute_seconds  # type: ignore[union-attr]
    thresholds = {e["name"]: e["threshold"] for e in infos}
    assert thresholds[metric_name("pred_var_per_dim")] == 0.5 * check.metrics.target_var_per_dim
    assert thresholds[metric_name("pairwise_pred_dist_mean")] == 0.5 * 4.0
    assert thresholds[metric_name("kl_reg")] == 10.0
    assert thresholds[metric_name("pred_cos_mean")] is None
    warnings = logger.events("warning", "training.collapse.alert")
    assert [(w["criterion"], w["value"], w["threshold"], w["step"]) for w in warnings] == [
        (a.criterion, a.value, a.threshold, 30) for a in check.alerts
    ]


def test_monitor_writes_to_the_default_registry_when_none_is_given() -> None:
    """Without a registry, the process default receives the gauges (snapshot_values shows them)."""
    m = CollapseMonitor(log_every_steps=1, backend="python")
    m.observe(TARGET, TARGET, kl_reg=7.0625, step=1)
    assert snapshot_values()[metric_name("kl_reg")] == 7.0625


def test_repr_shows_the_settings(registry: MetricRegistry) -> None:
    """The repr names the period, thresholds, baseline and backend."""
    text = repr(monitor(registry, initial_pairwise_pred_dist_mean=1.5))
    assert text.startswith("CollapseMonitor(log_every_steps=10, thresholds=CollapseThresholds(")
    assert "initial_pairwise_pred_dist_mean=1.5" in text
    assert "backend='python'" in text


# ------------------------------------------------------- record_collapse_metrics
METRICS = CollapseMetrics(0.9, 0.2, 2.0, 0.5, 0.7, 1.5, 12.0)
ALERTS = (CollapseAlert("pred_var_per_dim", 0.5, 1.0), CollapseAlert("kl_reg", 12.0, 10.0))


def test_record_sets_gauges_and_counts_alerts(registry: MetricRegistry) -> None:
    """record_collapse_metrics sets one gauge per field and adds the alerts to the counter."""
    record_collapse_metrics(METRICS, alerts=ALERTS, registry=registry)
    record_collapse_metrics(METRICS, alerts=ALERTS[:1], registry=registry)
    expected = {metric_name(k): v for k, v in METRICS.as_dict().items()}
    expected |= {f"{PREFIX}.alert": 3.0, f"{PREFIX}.checks": 2.0}
    assert registry.snapshot() == dict(sorted(expected.items()))


def test_record_without_alerts_leaves_the_alert_counter_unset(registry: MetricRegistry) -> None:
    """No alert, no increment: the counter is not even created."""
    record_collapse_metrics(METRICS, registry=registry)
    assert registry.value(f"{PREFIX}.alert") is None
    assert registry.value(f"{PREFIX}.checks") == 1.0


def test_record_logs_the_exact_events(registry: MetricRegistry, recording_logger: RecordingLogger) -> None:
    """Without batch information, each metric event carries name, value, unit, kind, step, variant, threshold."""
    record_collapse_metrics(METRICS, alerts=ALERTS, logger=recording_logger, step=7, registry=registry)
    first = recording_logger.calls[0]
    assert first == (
        "info",
        "training.metric",
        {
            "name": metric_name("pred_cos_mean"),
            "value": 0.9,
            "unit": "1",
            "kind": "gauge",
            "step": 7,
            "variant": "row_mean,zero_norm_is_0",
            "threshold": None,
        },
    )
    assert recording_logger.calls[7:] == [
        (
            "warning",
            "training.collapse.alert",
            {"criterion": a.criterion, "value": a.value, "threshold": a.threshold, "step": 7},
        )
        for a in ALERTS
    ]
    assert len(recording_logger.calls) == 9


def test_record_logs_thresholds_in_force(registry: MetricRegistry, recording_logger: RecordingLogger) -> None:
    """Given thresholds and a baseline, the events carry the bounds actually compared with."""
    thresholds = CollapseThresholds(0.25, 0.75, 3.0)
    record_collapse_metrics(
        METRICS,
        logger=recording_logger,
        thresholds=thresholds,
        initial_pairwise_pred_dist_mean=2.0,
        registry=registry,
    )
    bounds = {e["name"]: e["threshold"] for e in recording_logger.events("info")}
    assert bounds[metric_name("pred_var_per_dim")] == 0.25 * 2.0
    assert bounds[metric_name("pairwise_pred_dist_mean")] == 0.75 * 2.0
    assert bounds[metric_name("kl_reg")] == 3.0


def test_record_with_batch_adds_context_and_timing(registry: MetricRegistry, recording_logger: RecordingLogger) -> None:
    """A BatchInfo adds shape, dtype, backend, device and time to events, and a histogram sample."""
    batch = BatchInfo(256, 1024, "float32", "torch", "cuda:0", 0.004)
    record_collapse_metrics(METRICS, logger=recording_logger, batch=batch, registry=registry)
    event = recording_logger.events("info")[0]
    assert {k: event[k] for k in ("batch_size", "dim", "dtype", "backend", "device", "compute_seconds")} == {
        "batch_size": 256,
        "dim": 1024,
        "dtype": "float32",
        "backend": "torch",
        "device": "cuda:0",
        "compute_seconds": 0.004,
    }
    assert registry.snapshot()[f"{PREFIX}.compute_seconds.sum"] == 0.004


BAD_RECORD_ARGUMENTS: list[tuple[str, dict[str, Any]]] = [
    ("metrics as dict", {"metrics": METRICS.as_dict()}),
    ("alert of the wrong type", {"alerts": [("kl_reg", 12.0, 10.0)]}),
    ("alerts as a string", {"alerts": "kl_reg"}),
    ("negative step", {"step": -1}),
    ("boolean step", {"step": True}),
    ("batch as a tuple", {"batch": (256, 1024)}),
    ("thresholds as a dict", {"thresholds": {"kl_reg_max": 1.0}}),
    ("negative baseline", {"initial_pairwise_pred_dist_mean": -1.0}),
    ("nan baseline", {"initial_pairwise_pred_dist_mean": math.nan}),
]


@pytest.mark.parametrize(("case", "override"), BAD_RECORD_ARGUMENTS, ids=[c[0] for c in BAD_RECORD_ARGUMENTS])
def test_record_refuses_bad_arguments_before_recording_anything(
    registry: MetricRegistry, recording_logger: RecordingLogger, case: str, override: dict[str, Any]
) -> None:
    """A bad argument raises InputError and leaves both registry and logger untouched."""
    kwargs: dict[str, Any] = {"metrics": METRICS, "alerts": ALERTS, "logger": recording_logger, "step": 3}
    kwargs.update(override)
    metrics = kwargs.pop("metrics")
    with pytest.raises(ValueError, match="must be"):
        record_collapse_metrics(metrics, registry=registry, **kwargs)
    assert registry.snapshot() == {}
    assert recording_logger.calls == []


def test_record_logs_numpy_steps_as_plain_ints(registry: MetricRegistry, recording_logger: RecordingLogger) -> None:
    """A NumPy integer step reaches the logger as a plain int, which any JSON encoder accepts."""
    np = pytest.importorskip("numpy")
    record_collapse_metrics(METRICS, alerts=ALERTS, logger=recording_logger, step=np.int64(7), registry=registry)
    steps = [fields["step"] for _, _, fields in recording_logger.calls]
    assert steps == [7] * 9
    assert all(type(step) is int for step in steps)


# ------------------------------------------------------------------ checkpoints
def test_restored_state_keeps_the_baseline_of_the_start_of_the_run(registry: MetricRegistry) -> None:
    """A monitor resumed from state_dict compares with the original baseline, so a collapsed batch still alerts."""
    first = monitor(registry)
    first.observe(TARGET, TARGET, kl_reg=0.0, step=10)
    state = json.loads(json.dumps(first.state_dict()))  # survives a JSON checkpoint
    collapsed = scaled(TARGET, 0.1)

    resumed = monitor(registry)
    resumed.load_state_dict(state)
    assert resumed.initial_pairwise_pred_dist_mean == first.initial_pairwise_pred_dist_mean
    check = resumed.observe(collapsed, TARGET, kl_reg=0.0, step=20)
    assert check is not None and "pairwise_pred_dist_mean" in [a.criterion for a in check.alerts]

    fresh = monitor(registry)
    check = fresh.observe(collapsed, TARGET, kl_reg=0.0, step=20)
    assert check is not None and "pairwise_pred_dist_mean" not in [a.criterion for a in check.alerts]


def test_state_round_trips_spectra_and_alert_streaks(registry: MetricRegistry) -> None:
    """The spectral baseline and the alert policy's streaks come back exactly from a state_dict."""
    from geno_lewm.training.alerting import AlertPolicy

    original = monitor(registry, spectrum=True, policy=AlertPolicy(patience=3))
    original.observe(TARGET, TARGET, kl_reg=0.0, step=10)
    original.observe(scaled(TARGET, 0.1), TARGET, kl_reg=0.0, step=20)
    resumed = monitor(registry, spectrum=True, policy=AlertPolicy(patience=3))
    resumed.load_state_dict(original.state_dict())
    assert resumed.initial_spectrum == original.initial_spectrum
    assert resumed.state_dict() == original.state_dict()


@pytest.mark.parametrize(
    "state",
    [
        None,
        {},
        {"version": 99},
        {"version": 1, "initial_pairwise_pred_dist_mean": -1.0},
        {"version": 1, "initial_pairwise_pred_dist_mean": 1.0, "initial_spectrum": {"prediction": {}}},
    ],
)
def test_malformed_state_is_refused_and_changes_nothing(registry: MetricRegistry, state: Any) -> None:
    """A state that did not come from state_dict raises InputError and leaves the baseline as it was."""
    m = monitor(registry, initial_pairwise_pred_dist_mean=2.5)
    with pytest.raises(InputError, match="state"):
        m.load_state_dict(state)
    assert m.initial_pairwise_pred_dist_mean == 2.5


def _spectral_state(registry: MetricRegistry) -> dict[str, Any]:
    """A real state_dict with an initial spectrum, as JSON would bring it back."""
    original = monitor(registry, spectrum=True)
    original.observe(TARGET, TARGET, kl_reg=0.0, step=10)
    state: dict[str, Any] = json.loads(json.dumps(original.state_dict()))
    return state


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        ("prediction.effective_rank", "12"),
        ("prediction.effective_rank", None),
        ("target.total_variance", math.nan),
        ("target.normalized_std", -1.0),
        ("prediction.top_k_share", 1.5),
        ("target.numerical_rank", 2.5),
        ("prediction.top_k", 0),
        ("target.batch_size", True),
        ("prediction.dim", [4]),
        ("backend", "cuda"),
        ("compute_seconds", math.inf),
        ("prediction", "rank"),
        ("target", None),
    ],
)
def test_a_corrupted_initial_spectrum_is_refused_naming_its_field(
    registry: MetricRegistry, path: str, bad: Any
) -> None:
    """Each field of a saved spectrum is checked on load; the error names it and the monitor keeps its state."""
    state = _spectral_state(registry)
    node = state["initial_spectrum"]
    *parents, leaf = path.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = bad
    resumed = monitor(registry, spectrum=True)
    before = resumed.state_dict()
    with pytest.raises(InputError, match=re.escape(f"'state.initial_spectrum.{path}'")):
        resumed.load_state_dict(state)
    assert resumed.state_dict() == before
    check = resumed.observe(TARGET, TARGET, kl_reg=0.0, step=10)
    assert check is not None and json.loads(json.dumps(resumed.state_dict(), allow_nan=False))


def test_extra_or_missing_spectrum_fields_are_refused(registry: MetricRegistry) -> None:
    """A spectrum with a field too many or too few is not one state_dict wrote."""
    for change in ({"extra": 1.0}, None):
        state = _spectral_state(registry)
        side = state["initial_spectrum"]["target"]
        if change is None:
            del side["dim"]
        else:
            side.update(change)
        with pytest.raises(InputError, match=re.escape("'state.initial_spectrum.target' must have the fields")):
            monitor(registry, spectrum=True).load_state_dict(state)


@settings(max_examples=150, deadline=None)
@given(
    path=st.sampled_from(
        [
            ("initial_pairwise_pred_dist_mean",),
            ("version",),
            ("initial_spectrum", "backend"),
            ("initial_spectrum", "compute_seconds"),
            *[("initial_spectrum", side, key) for side in ("prediction", "target") for key in SPECTRAL_FIELDS],
        ]
    ),
    bad=st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=5),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    ),
)
def test_fuzzed_states_load_only_when_they_are_sound(path: tuple[str, ...], bad: Any) -> None:
    """Any value in any field of a checkpoint either loads into a monitor that keeps working and writes strict JSON,
    or is refused with InputError leaving the monitor untouched.
    """
    registry = MetricRegistry()
    state = _spectral_state(registry)
    node = state
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = bad
    resumed = monitor(registry, spectrum=True)
    before = resumed.state_dict()
    try:
        resumed.load_state_dict(state)
    except InputError:
        assert resumed.state_dict() == before
        return
    check = resumed.observe(scaled(TARGET, 0.5), TARGET, kl_reg=0.0, step=10)
    assert check is not None
    json.dumps(resumed.state_dict(), allow_nan=path[-1] == "total_variance")
