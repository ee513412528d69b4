"""Divergence: a scheduled check whose inputs hold NaN or infinite values is recorded — a non_finite alert with its
count and where, NaN metrics, through the registry, the log and the sinks — and then follows the alert policy.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from geno_lewm.errors import CollapseDetectedError, InputError
from geno_lewm.integrations.sinks import MemorySink
from geno_lewm.logs import AlertRecord, MetricRecord, load_log
from geno_lewm.metrics import MetricRegistry
from geno_lewm.observability import get_logger
from geno_lewm.training.alerting import AlertPolicy
from geno_lewm.training.collapse import CollapseMonitor, compute_collapse_metrics

TARGET = [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [-1.0, 0.5, 0.0], [2.0, -2.0, 1.0]]


def _with(value: float, row: int = 2, column: int = 1) -> list[list[float]]:
    rows = [list(r) for r in TARGET]
    rows[row][column] = value
    return rows


def _as(kind: str, rows: list[list[float]]) -> Any:
    if kind == "numpy":
        return pytest.importorskip("numpy").array(rows)
    if kind == "torch":
        return pytest.importorskip("torch").tensor(rows, dtype=pytest.importorskip("torch").float32)
    return rows


@pytest.mark.parametrize("kind", ["list", "numpy", "torch"])
def test_a_nan_batch_is_recorded_as_a_divergence(kind: str, tmp_path: Path) -> None:
    """NaN in the predictions: one non_finite alert counting it and naming where, NaN metrics in the registry, the log
    and the sinks, and no exception.
    """
    registry, sink = MetricRegistry(), MemorySink()
    log = get_logger("training", log_dir=tmp_path, run_id=f"nan-{kind}")
    monitor = CollapseMonitor(log_every_steps=10, registry=registry, sinks=[sink])
    check = monitor.observe(_as(kind, _with(math.nan)), _as(kind, TARGET), kl_reg=0.5, step=10, logger=log)
    assert check is not None and [(a.criterion, a.value, a.threshold) for a in check.alerts] == [
        ("non_finite", 1.0, 0.0)
    ]
    assert check.non_finite is not None and check.non_finite.first == "prediction[2, 1] = nan"
    assert math.isnan(check.metrics.pred_cos_mean) and check.metrics.kl_reg == 0.5
    assert math.isnan(registry.value("geno_lewm.training.collapse.pred_var_per_dim"))
    assert registry.value("geno_lewm.training.collapse.alert") == 1.0
    assert math.isnan(sink.calls[0][1]["geno_lewm.training.collapse.pred_cos_mean"]) and sink.calls[0][0] == 10
    loaded = load_log(log.path)
    (alert,) = [r for r in loaded.records if isinstance(r, AlertRecord)]
    assert alert.criterion == "non_finite" and alert.value == 1.0 and alert.step == 10
    assert alert.detail == "non-finite values: prediction 1 of 12, target 0 of 12; first prediction[2, 1] = nan"
    cos = [r for r in loaded.records if isinstance(r, MetricRecord) and r.name.endswith("pred_cos_mean")]
    assert len(cos) == 1 and math.isnan(cos[0].value) and cos[0].backend == "none" and loaded.problems == ()


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_non_finite_kl_reg_is_a_divergence_too(bad: float) -> None:
    """kl_reg NaN or infinite (a float or a 0-d tensor) counts as one non-finite value."""
    torch = pytest.importorskip("torch")
    for value in (bad, torch.tensor(bad)):
        monitor = CollapseMonitor(log_every_steps=10, registry=MetricRegistry())
        check = monitor.observe(TARGET, TARGET, kl_reg=value, step=10)
        assert check is not None and check.non_finite is not None and check.non_finite.kl_reg
        assert [a.criterion for a in check.alerts] == ["non_finite"]
        kl = check.metrics.kl_reg
        assert kl is not None and (math.isnan(kl) if math.isnan(bad) else kl == bad)  # as given


def test_counts_cover_every_non_finite_entry_of_both_batches() -> None:
    """The alert's value is every NaN and infinity of predictions and targets (and kl_reg) together."""
    prediction = _with(math.nan)
    prediction[0][0] = math.inf
    target = _with(-math.inf, row=3, column=2)
    check = CollapseMonitor(log_every_steps=1, registry=MetricRegistry()).observe(
        prediction, target, kl_reg=math.nan, step=1
    )
    assert check is not None and check.non_finite is not None
    assert (check.non_finite.prediction, check.non_finite.target, check.non_finite.count) == (2, 1, 4)
    assert check.non_finite.first == "prediction[0, 0] = inf"


def test_the_raise_policy_raises_after_recording_and_log_continues(tmp_path: Path) -> None:
    """on_alert='raise' raises CollapseDetectedError naming the divergence after the alert is logged; 'log' goes on,
    and the alert clears at the next finite check.
    """
    log = get_logger("training", log_dir=tmp_path, run_id="policy")
    raising = CollapseMonitor(log_every_steps=1, registry=MetricRegistry(), policy=AlertPolicy(on_alert="raise"))
    with pytest.raises(CollapseDetectedError, match="divergence: non-finite values") as caught:
        raising.observe(_with(math.nan), TARGET, kl_reg=0.5, step=1, logger=log)
    assert [a.criterion for a in caught.value.alerts] == ["non_finite"]
    assert [r.criterion for r in load_log(log.path).records if isinstance(r, AlertRecord)] == ["non_finite"]

    log = get_logger("training", log_dir=tmp_path, run_id="policy-log")
    logging = CollapseMonitor(log_every_steps=1, registry=MetricRegistry(), policy=AlertPolicy(on_alert="log"))
    first = logging.observe(_with(math.nan), TARGET, kl_reg=0.5, step=1, logger=log)
    second = logging.observe(TARGET, TARGET, kl_reg=0.5, step=2, logger=log)
    assert first is not None and first.tripped and second is not None and not second.tripped
    assert logging.state_dict()["alert_policy"]["criteria"]["non_finite"]["active"] is False
    events = [r.event for r in load_log(log.path).records if r.event.startswith("training.alert")]
    assert events == ["training.alert.raised", "training.alert.cleared"]


def test_a_diverged_check_teaches_no_baseline() -> None:
    """The first check diverged: the pairwise baseline (and a calibrated reference) come from the next finite one."""
    rfc = CollapseMonitor(log_every_steps=1, registry=MetricRegistry())
    rfc.observe(_with(math.nan), TARGET, kl_reg=0.5, step=1)
    assert rfc.initial_pairwise_pred_dist_mean is None
    check = rfc.observe(TARGET, TARGET, kl_reg=0.5, step=2)
    assert check is not None and rfc.initial_pairwise_pred_dist_mean == check.metrics.pairwise_pred_dist_mean
    calibrated = CollapseMonitor(log_every_steps=1, registry=MetricRegistry(), criteria="calibrated")
    diverged = calibrated.observe(_with(math.inf), TARGET, kl_reg=None, step=0, force=True)
    assert diverged is not None and [a.criterion for a in diverged.alerts] == ["non_finite"]
    assert calibrated.reference_step is None
    calibrated.observe(TARGET, TARGET, kl_reg=None, step=1)
    assert calibrated.reference_step == 1


def test_malformed_input_is_still_refused_and_the_metrics_function_keeps_refusing() -> None:
    """Non-finite values in batches of different shapes are an InputError, and compute_collapse_metrics refuses NaN."""
    monitor = CollapseMonitor(log_every_steps=1, registry=MetricRegistry())
    with pytest.raises(InputError):
        monitor.observe(_with(math.nan), TARGET[:3], kl_reg=0.5, step=1)
    with pytest.raises(InputError):
        monitor.observe([[math.nan, 1.0], [1.0]], [[1.0, 1.0], [1.0, 1.0]], kl_reg=0.5, step=1)
    assert monitor.last_check is None
    with pytest.raises(InputError, match="non-finite value nan at row 2, column 1"):
        compute_collapse_metrics(_with(math.nan), TARGET, kl_reg=0.5)


class _NotALogger:
    """Has an info method but no warning method."""

    def info(self, event: str, **fields: Any) -> None:
        """Accept an event."""


@pytest.mark.parametrize("bad", [object(), "logs/run.jsonl", _NotALogger()])
def test_a_wrong_logger_is_refused_before_anything_is_recorded(bad: object) -> None:
    """logger= without info() and warning() is an InputError naming the logger and what it lacks, on a scheduled
    observe and in the record functions; the monitor keeps no check and no baseline.
    """
    from geno_lewm.training.collapse import CollapseMetrics, record_collapse_metrics
    from geno_lewm.training.dynamics import PredictionMonitor

    registry = MetricRegistry()
    monitor = CollapseMonitor(log_every_steps=10, registry=registry)
    assert monitor.observe(TARGET, TARGET, kl_reg=0.5, step=5, logger=bad) is None  # unscheduled: not looked at
    with pytest.raises(InputError, match=r"'logger' must be a logger with info\(\) and warning\(\) methods") as caught:
        monitor.observe(TARGET, TARGET, kl_reg=0.5, step=10, logger=bad)
    assert "warning()" in str(caught.value) and type(bad).__name__ in str(caught.value)
    assert monitor.last_check is None and monitor.initial_pairwise_pred_dist_mean is None
    assert registry.value("geno_lewm.training.collapse.checks") is None
    metrics = CollapseMetrics(1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.5)
    with pytest.raises(InputError, match="'logger' must be a logger"):
        record_collapse_metrics(metrics, logger=bad, registry=registry)
    with pytest.raises(InputError, match="'logger' must be a logger"):
        PredictionMonitor(log_every_steps=1, registry=registry).observe([[1.0, 2.0]], step=1, logger=bad)
