"""The alert policy: warm-up, patience, hysteresis, raise-or-log, and the raised/cleared
events, on the tracker alone and through the collapse monitor.
"""

from __future__ import annotations

import itertools
import pickle
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geno_lewm.errors import CollapseDetectedError, GenoLeWMError, InputError
from geno_lewm.logs import AlertClearedRecord, AlertRaisedRecord, read_log
from geno_lewm.metrics import MetricRegistry
from geno_lewm.observability import get_logger
from geno_lewm.training.alerting import (
    ALERT_CLEARED_EVENT,
    ALERT_RAISED_EVENT,
    AlertPolicy,
    AlertTracker,
    Reading,
    alert_episodes,
    check_policy,
)
from geno_lewm.training.collapse import CollapseMonitor, detect_collapse

if TYPE_CHECKING:
    from pathlib import Path

    from conftest import RecordingLogger

TARGET = [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [-1.0, 0.5, 0.0], [2.0, -2.0, 1.0]]
SOURCE = "geno_lewm.training.collapse"


def scaled(factor: float) -> list[list[float]]:
    return [[factor * v for v in row] for row in TARGET]


def kl(value: float) -> Reading:
    return Reading("kl_reg", value, 10.0, "above")


def var(value: float) -> Reading:
    return Reading("pred_var_per_dim", value, 0.5, "below")


def monitor(registry: MetricRegistry, **kwargs: Any) -> CollapseMonitor:
    return CollapseMonitor(log_every_steps=10, backend="python", registry=registry, **kwargs)


# ----------------------------------------------------------------- policy
def test_default_policy_is_the_rfc_behaviour() -> None:
    """AlertPolicy() logs, alerts at once, clears at once."""
    policy = AlertPolicy()
    assert (policy.on_alert, policy.warmup_steps, policy.patience, policy.hysteresis) == ("log", 0, 1, 0.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patience": 0}, "'patience' must be a positive integer: got 0"),
        ({"warmup_steps": -1}, "'warmup_steps' must be a non-negative integer: got -1"),
        ({"hysteresis": -0.5}, "'hysteresis' must be >= 0: got -0.5"),
        ({"hysteresis": float("nan")}, "'hysteresis' must be finite: got nan"),
        ({"on_alert": "stop"}, "'on_alert' must be 'log' or 'raise': got 'stop'"),
        ({"patience": True}, "'patience' must be a positive integer: got True"),
    ],
)
def test_bad_policy_values_are_refused_with_the_common_message(kwargs: dict[str, Any], message: str) -> None:
    """Each bad setting raises InputError in the library's one error shape."""
    with pytest.raises(InputError) as caught:
        AlertPolicy(**kwargs)
    assert str(caught.value) == message
    assert caught.value.details["field"] == next(iter(kwargs))


def test_on_alert_shorthand_and_conflicts() -> None:
    """on_alert alone builds a policy; on_alert agreeing with a policy is fine; disagreeing is refused."""
    assert check_policy(None, None) is None
    assert check_policy(None, "raise") == AlertPolicy(on_alert="raise")
    given_policy = AlertPolicy(on_alert="raise", patience=3)
    assert check_policy(given_policy, "raise") is given_policy
    with pytest.raises(InputError, match="'on_alert' and 'policy' disagree"):
        check_policy(given_policy, "log")
    with pytest.raises(InputError, match="'policy' must be an AlertPolicy: got dict"):
        check_policy({"patience": 2})


# ---------------------------------------------------------------- tracker
def test_patience_needs_consecutive_tripped_checks() -> None:
    """With patience 3 the alert is raised at the third tripped check in a row; a healthy check resets the count."""
    tracker = AlertTracker(AlertPolicy(patience=3), source="t")
    steps = [(1, 12.0), (2, 12.0), (3, 5.0), (4, 12.0), (5, 12.0), (6, 12.0), (7, 12.0)]
    active = [bool(tracker.update(step, [kl(value)]).active) for step, value in steps]
    assert active == [False, False, False, False, False, True, True]


def test_raised_change_names_the_start_of_the_run() -> None:
    """The raised change says when the run of tripped checks began and how long it is."""
    tracker = AlertTracker(AlertPolicy(patience=2), source="t")
    tracker.update(100, [kl(11.0)])
    (change,) = tracker.update(200, [kl(13.0)]).changes
    assert (change.kind, change.step, change.since_step, change.consecutive) == ("raised", 200, 100, 2)
    assert change.reading == kl(13.0)


def test_warmup_suppresses_alerts_and_does_not_count_towards_patience() -> None:
    """Tripped checks before warmup_steps are suppressed and start no run of checks."""
    tracker = AlertTracker(AlertPolicy(warmup_steps=300, patience=2), source="t")
    early = tracker.update(100, [kl(50.0)])
    assert early.active == () and early.suppressed == (kl(50.0),)
    assert tracker.update(200, [kl(50.0)]).active == ()
    assert tracker.update(300, [kl(50.0)]).active == ()  # first counted check
    assert tracker.update(400, [kl(50.0)]).active == (kl(50.0),)


def test_hysteresis_holds_a_below_alert_until_past_the_margin() -> None:
    """A 'below' alert stays in force between the bound and bound * (1 + h), and clears past it."""
    tracker = AlertTracker(AlertPolicy(hysteresis=0.2), source="t")
    assert tracker.update(1, [var(0.1)]).active == (var(0.1),)
    in_band = tracker.update(2, [var(0.55)])  # not tripped, but below 0.6
    assert in_band.active == (var(0.55),) and in_band.changes == ()
    cleared = tracker.update(3, [var(0.6)])  # exactly at the clear bound
    assert cleared.active == ()
    (change,) = cleared.changes
    assert (change.kind, change.raised_step, change.clear_bound) == ("cleared", 1, pytest.approx(0.6))


def test_hysteresis_holds_an_above_alert_until_under_the_margin() -> None:
    """An 'above' alert (kl_reg > 10) clears only at or under 10 * (1 - h)."""
    tracker = AlertTracker(AlertPolicy(hysteresis=0.1), source="t")
    tracker.update(1, [kl(11.0)])
    assert tracker.update(2, [kl(9.5)]).active == (kl(9.5),)
    assert tracker.update(3, [kl(9.0)]).active == ()
    assert tracker.active == {}


def test_without_hysteresis_an_alert_clears_when_it_stops_tripping() -> None:
    """hysteresis=0: at the bound itself (not strictly past it) the alert clears."""
    tracker = AlertTracker(AlertPolicy(), source="t")
    tracker.update(1, [kl(10.5)])
    decision = tracker.update(2, [kl(10.0)])
    assert [c.kind for c in decision.changes] == ["cleared"]


def test_a_missing_reading_keeps_the_alert_but_breaks_the_run() -> None:
    """A criterion not evaluated at a check keeps its alert state; its run of tripped checks restarts."""
    tracker = AlertTracker(AlertPolicy(patience=2), source="t")
    tracker.update(1, [kl(20.0)])
    tracker.update(2, [kl(20.0)])
    assert tracker.update(3, []).active == ()
    assert tracker.active == {"kl_reg": 2}
    fresh = AlertTracker(AlertPolicy(patience=2), source="t")
    fresh.update(1, [kl(20.0)])
    fresh.update(2, [])
    assert fresh.update(3, [kl(20.0)]).active == ()


def test_bad_readings_change_nothing() -> None:
    """A duplicated criterion or a non-Reading is refused before any state changes."""
    tracker = AlertTracker(AlertPolicy(patience=2), source="t")
    tracker.update(1, [kl(20.0)])
    before = tracker.state_dict()
    with pytest.raises(InputError, match="criterion 'kl_reg' twice"):
        tracker.update(2, [kl(20.0), kl(30.0)])
    with pytest.raises(InputError, match="must hold Reading objects"):
        tracker.update(2, [kl(20.0), ("kl_reg", 1.0)])  # type: ignore[list-item]
    assert tracker.state_dict() == before


def test_reading_validation() -> None:
    """A reading needs a direction, a finite threshold and a real value."""
    with pytest.raises(InputError, match="'direction' must be 'below' or 'above'"):
        Reading("x", 1.0, 1.0, "under")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="'threshold' must be finite"):
        Reading("x", 1.0, float("inf"), "below")
    with pytest.raises(InputError, match="'value' must be a real number"):
        Reading("x", "high", 1.0, "below")  # type: ignore[arg-type]
    assert not Reading("x", float("nan"), 1.0, "below").tripped


def test_state_dict_round_trip_restores_alerts_and_runs() -> None:
    """A tracker restored from state_dict continues exactly as the original."""
    policy = AlertPolicy(patience=2, hysteresis=0.1)
    original = AlertTracker(policy, source="t")
    original.update(1, [kl(20.0), var(0.1)])
    original.update(2, [kl(20.0), var(0.9)])
    restored = AlertTracker(policy, source="t")
    restored.load_state_dict(pickle.loads(pickle.dumps(original.state_dict())))
    for step, readings in [(3, [kl(20.0), var(0.1)]), (4, [kl(9.5), var(0.2)]), (5, [kl(8.0), var(0.2)])]:
        assert restored.update(step, readings) == original.update(step, readings)


def test_load_state_dict_refuses_malformed_state() -> None:
    """A malformed state raises InputError and leaves the tracker as it was."""
    tracker = AlertTracker(AlertPolicy(), source="t")
    tracker.update(1, [kl(20.0)])
    with pytest.raises(InputError):
        tracker.load_state_dict({"criteria": {"kl_reg": {"active": "yes"}}})
    with pytest.raises(InputError):
        tracker.load_state_dict({"criteria": {"kl_reg": {"streak": -1}}})
    assert tracker.active == {"kl_reg": 1}


@given(st.lists(st.floats(min_value=0.0, max_value=20.0), min_size=1, max_size=30))
def test_default_tracker_alerts_exactly_when_tripped(values: list[float]) -> None:
    """Under AlertPolicy() the alerts in force at each check are exactly the tripped readings."""
    tracker = AlertTracker(AlertPolicy(), source="t")
    for step, value in enumerate(values, start=1):
        decision = tracker.update(step, [kl(value)])
        assert bool(decision.active) == (value > 10.0)


@given(
    st.lists(st.floats(min_value=0.0, max_value=20.0), min_size=1, max_size=40),
    st.integers(min_value=1, max_value=4),
    st.floats(min_value=0.0, max_value=0.5),
)
def test_changes_alternate_and_raise_only_after_patience(values: list[float], patience: int, margin: float) -> None:
    """Raised and cleared alternate; raising needs `patience` tripped checks in a row, clearing the margin."""
    tracker = AlertTracker(AlertPolicy(patience=patience, hysteresis=margin), source="t")
    kinds: list[str] = []
    run = 0
    for step, value in enumerate(values, start=1):
        run = run + 1 if value > 10.0 else 0
        for change in tracker.update(step, [kl(value)]).changes:
            kinds.append(change.kind)
            if change.kind == "raised":
                assert run >= patience and change.consecutive == run
            else:
                assert value <= 10.0 * (1 - margin)
    assert all(a != b for a, b in itertools.pairwise(kinds))
    assert not kinds or kinds[0] == "raised"


# ---------------------------------------------------------------- monitor
def test_monitor_without_policy_keeps_the_rfc_alerts_and_events(
    registry: MetricRegistry, recording_logger: RecordingLogger
) -> None:
    """No policy: the check's alerts are detect_collapse's, no state-change events, nothing raises."""
    m = monitor(registry)
    check = m.observe(scaled(0.1), TARGET, kl_reg=50.0, step=10, logger=recording_logger)
    assert check is not None
    assert check.alerts == detect_collapse(
        check.metrics, initial_pairwise_pred_dist_mean=m.initial_pairwise_pred_dist_mean
    )
    assert m.policy is None
    events = {event for _, event, _ in recording_logger.calls}
    assert ALERT_RAISED_EVENT not in events and ALERT_CLEARED_EVENT not in events


def test_monitor_with_default_policy_alerts_like_the_rfc(registry: MetricRegistry) -> None:
    """AlertPolicy() gives the same alerts as no policy at every check of a run that trips and recovers."""
    plain, policed = monitor(registry), monitor(MetricRegistry(), policy=AlertPolicy())
    for step, (factor, kl_value) in enumerate([(1.0, 1.0), (0.3, 12.0), (0.3, 1.0), (1.0, 11.0), (1.0, 1.0)], 1):
        a = plain.observe(scaled(factor), TARGET, kl_reg=kl_value, step=10 * step)
        b = policed.observe(scaled(factor), TARGET, kl_reg=kl_value, step=10 * step)
        assert a is not None and b is not None
        assert a.alerts == b.alerts


def test_monitor_patience_and_warmup(registry: MetricRegistry) -> None:
    """Warm-up and patience decide when the monitor's checks carry alerts; the alert counter follows them."""
    m = monitor(registry, policy=AlertPolicy(warmup_steps=20, patience=2))
    tripped = [m.observe(TARGET, TARGET, kl_reg=20.0, step=s) for s in (10, 20, 30, 40)]
    assert [bool(c and c.alerts) for c in tripped] == [False, False, True, True]
    assert registry.value("geno_lewm.training.collapse.alert") == 2.0
    assert m.active_alerts == {"kl_reg": 30}


def test_monitor_logs_raised_and_cleared_events_read_back_as_episodes(tmp_path: Path, registry: MetricRegistry) -> None:
    """Raised/cleared alerts are JSON-log events; alert_episodes pairs them into when trouble began and ended."""
    log = get_logger("training", log_dir=tmp_path, run_id="policy")
    m = monitor(registry, policy=AlertPolicy(hysteresis=0.1))
    for step, kl_value in [(10, 1.0), (20, 12.0), (30, 9.5), (40, 8.0), (50, 1.0)]:
        m.observe(TARGET, TARGET, kl_reg=kl_value, step=step, logger=log)
    records = list(read_log(log.path))
    changes = [(r.event, r.step) for r in records if r.event in (ALERT_RAISED_EVENT, ALERT_CLEARED_EVENT)]
    assert changes == [(ALERT_RAISED_EVENT, 20), (ALERT_CLEARED_EVENT, 40)]
    alert_steps = [r.step for r in records if r.event == "training.collapse.alert"]
    assert alert_steps == [20, 30]  # in force while inside the hysteresis band
    (raised,) = [r for r in records if isinstance(r, AlertRaisedRecord)]
    (cleared,) = [r for r in records if isinstance(r, AlertClearedRecord)]
    assert (raised.source, raised.criterion, raised.direction, raised.since_step, raised.consecutive) == (
        SOURCE,
        "kl_reg",
        "above",
        20,
        1,
    )
    assert (cleared.value, cleared.clear_bound, cleared.raised_step) == (8.0, pytest.approx(9.0), 20)
    (episode,) = alert_episodes(records)
    assert (episode.source, episode.criterion, episode.raised_step, episode.cleared_step) == (
        SOURCE,
        "kl_reg",
        20,
        40,
    )
    assert episode.raised_value == 12.0 and episode.threshold == 10.0


def test_on_alert_raise_raises_after_recording(
    tmp_path: Path, registry: MetricRegistry, recording_logger: RecordingLogger
) -> None:
    """on_alert='raise' raises CollapseDetectedError carrying the check, once registry, log and sinks have it."""
    from geno_lewm.integrations.sinks import MemorySink

    sink = MemorySink()
    m = monitor(registry, on_alert="raise", sinks=[sink])
    assert m.observe(TARGET, TARGET, kl_reg=1.0, step=10, logger=recording_logger) is not None
    with pytest.raises(CollapseDetectedError) as caught:
        m.observe(scaled(0.1), TARGET, kl_reg=1.0, step=20, logger=recording_logger)
    error = caught.value
    assert isinstance(error, GenoLeWMError) and isinstance(error, RuntimeError)
    assert error.step == 20 and error.check is m.last_check
    assert [a.criterion for a in error.alerts] == ["pred_var_per_dim", "pairwise_pred_dist_mean"]
    assert "step 20" in str(error) and "pred_var_per_dim" in str(error)
    assert [f["criterion"] for f in recording_logger.events("warning", "training.collapse.alert")] == [
        "pred_var_per_dim",
        "pairwise_pred_dist_mean",
    ]
    assert registry.value("geno_lewm.training.collapse.alert") == 2.0
    assert [step for step, _ in sink.calls] == [10, 20]


def test_collapse_detected_error_pickles_with_its_payload() -> None:
    """The error survives pickling (multiprocessing workers) with its step and alerts."""
    error = CollapseDetectedError("collapse detected at step 5", check=None, alerts=("a",), step=5)
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.step, copy.alerts) == ("collapse detected at step 5", 5, ("a",))


def test_rejected_batch_leaves_the_policy_state_alone(registry: MetricRegistry) -> None:
    """A bad batch on a scheduled step raises InputError and changes neither the alerts nor the run of checks."""
    m = monitor(registry, policy=AlertPolicy(patience=2))
    m.observe(TARGET, TARGET, kl_reg=20.0, step=10)
    with pytest.raises(InputError):
        m.observe([[1.0] * 3] * 3, TARGET, kl_reg=20.0, step=20)
    check = m.observe(TARGET, TARGET, kl_reg=20.0, step=30)
    assert check is not None and [a.criterion for a in check.alerts] == ["kl_reg"]
