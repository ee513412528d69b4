"""Loggers this package did not create: the GenoLeWM family's (``warn``), structlog's and the
standard library's are accepted everywhere a logger is, and get exactly the family's
records; this package's own logger keeps its full description; the family's logging API
(``level``, ``pretty``, the default directory and run id, ``logged_run``, ``shutdown_run``).
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import FamilyLogger

from geno_lewm import observability
from geno_lewm.errors import (
    BackendUnavailableError,
    CollapseDetectedError,
    DistributedError,
    GenoLeWMError,
    InputError,
    TrainingAlertError,
)
from geno_lewm.logs import read_log
from geno_lewm.metrics import MetricRegistry
from geno_lewm.observability import get_logger, logged_run, shutdown_run
from geno_lewm.training.collapse import (
    METRIC_NAMES,
    CollapseAlert,
    CollapseMetrics,
    CollapseMonitor,
    compute_collapse_metrics,
    metric_name,
    record_collapse_metrics,
)

PREDICTION = [[1.0, 0.0, 0.5], [0.0, 1.0, 0.25], [0.5, 0.5, 1.0], [1.0, 1.0, 0.0]]
TARGET = [[0.9, 0.1, 0.5], [0.1, 0.9, 0.2], [0.4, 0.6, 1.0], [1.0, 0.8, 0.1]]
KL_ALERT = 20.0  # trips kl_reg > 10, the only criterion these batches trip

Call = tuple[str, str, dict[str, Any]]


class InfoOnly:
    """Has info() but neither warning() nor warn()."""

    def info(self, event: str, **fields: Any) -> None:
        """Accept an event."""


def family_calls(metrics: CollapseMetrics, alerts: list[tuple[str, float, float]], step: int | None) -> list[Call]:
    """The family's records of one collapse check, in order: one metric per field, then the alerts."""
    at = {} if step is None else {"step": step}
    calls: list[Call] = [
        ("info", "training.metric", {"name": metric_name(n), "value": v, "unit": "unitless", "kind": "gauge", **at})
        for n, v in metrics.as_dict().items()
    ]
    calls += [
        ("warn", "training.collapse.alert", {"criterion": c, "value": v, "threshold": t, **at}) for c, v, t in alerts
    ]
    return calls


# ------------------------------------------------------------------ collapse
def test_observe_sends_a_family_logger_exactly_the_family_records() -> None:
    """Observe with a family logger: one minimal training.metric per metric and one warn alert, nothing else."""
    logger = FamilyLogger()
    monitor = CollapseMonitor(log_every_steps=1, backend="python", registry=MetricRegistry())
    check = monitor.observe(PREDICTION, TARGET, kl_reg=KL_ALERT, step=3, logger=logger)
    assert check is not None and [a.criterion for a in check.alerts] == ["kl_reg"]
    expected = family_calls(compute_collapse_metrics(PREDICTION, TARGET, kl_reg=KL_ALERT), [("kl_reg", 20.0, 10.0)], 3)
    assert logger.calls == expected


def test_observe_with_an_alert_policy_sends_no_alert_state_changes_to_a_family_logger() -> None:
    """Alert-state changes are this package's own events: a family logger still gets only metrics and alerts."""
    logger = FamilyLogger()
    monitor = CollapseMonitor(log_every_steps=1, backend="python", registry=MetricRegistry(), on_alert="log")
    monitor.observe(PREDICTION, TARGET, kl_reg=KL_ALERT, step=1, logger=logger)
    assert {event for _, event, _ in logger.calls} == {"training.metric", "training.collapse.alert"}


def test_spectral_gauges_keep_this_packages_unit_for_a_family_logger() -> None:
    """With spectra, the seven RFC gauges say unitless and the spectral ones keep their own unit (dims, 1)."""
    logger = FamilyLogger()
    monitor = CollapseMonitor(log_every_steps=1, backend="python", registry=MetricRegistry(), spectrum=True)
    monitor.observe(PREDICTION, TARGET, kl_reg=0.5, step=1, logger=logger)
    units = {fields["name"].rsplit(".", 1)[1]: fields["unit"] for _, _, fields in logger.calls}
    assert all(units[name] == "unitless" for name in METRIC_NAMES)
    assert units["pred_effective_rank"] == "dims" and units["pred_top_k_share"] == "1"
    assert all(set(fields) == {"name", "value", "unit", "kind", "step"} for _, _, fields in logger.calls)


def test_a_diverged_check_sends_the_family_record_of_its_non_finite_alert() -> None:
    """A NaN batch gives a family logger seven NaN metrics and one non_finite alert, minimal and nothing else."""
    logger = FamilyLogger()
    monitor = CollapseMonitor(log_every_steps=1, backend="python", registry=MetricRegistry())
    monitor.observe([[float("nan"), 1.0], [1.0, 2.0]], [[1.0, 2.0], [2.0, 1.0]], kl_reg=0.5, step=2, logger=logger)
    assert [(method, event) for method, event, _ in logger.calls] == [("info", "training.metric")] * 7 + [
        ("warn", "training.collapse.alert")
    ]
    *_, (_, _, alert) = logger.calls
    assert set(alert) == {"criterion", "value", "threshold", "step"} and alert["criterion"] == "non_finite"


def test_record_collapse_metrics_sends_a_family_logger_exactly_the_family_records() -> None:
    """record_collapse_metrics with a family logger and no step: the family's records, without step."""
    logger = FamilyLogger()
    metrics = CollapseMetrics(0.5, 0.25, 1.0, 0.5, 0.75, 1.5, KL_ALERT)
    alert = CollapseAlert("kl_reg", KL_ALERT, 10.0, "above")
    record_collapse_metrics(metrics, alerts=[alert], logger=logger, registry=MetricRegistry())
    assert logger.calls == family_calls(metrics, [("kl_reg", KL_ALERT, 10.0)], None)


def test_this_packages_own_logger_still_gets_the_full_description(tmp_path: Path) -> None:
    """A monitor writing to get_logger's logger still writes batch, convention and bound on every metric."""
    log = get_logger("training", log_dir=tmp_path, run_id="own")
    monitor = CollapseMonitor(log_every_steps=1, backend="python", registry=MetricRegistry())
    monitor.observe(PREDICTION, TARGET, kl_reg=KL_ALERT, step=1, logger=log)
    records = list(read_log(log.path, strict=True))
    metrics = [r for r in records if r.event == "training.metric"]
    assert len(metrics) == 7 and all(r.batch_size == 4 and r.backend == "python" for r in metrics)
    kl = next(r for r in metrics if r.name == metric_name("kl_reg"))
    assert (kl.unit, kl.variant, kl.threshold) == ("nats", "caller_supplied", 10.0)
    (alert,) = [r for r in records if r.event == "training.collapse.alert"]
    assert (alert.level, alert.criterion, alert.step) == ("warning", "kl_reg", 1)


# ------------------------------------------------------------------ refusals
def test_a_logger_without_warning_or_warn_is_refused_before_anything_changes() -> None:
    """info() alone is an InputError naming warning() or warn(); no check, no baseline, no registry entry."""
    registry = MetricRegistry()
    monitor = CollapseMonitor(log_every_steps=1, backend="python", registry=registry)
    with pytest.raises(InputError, match=r"warning\(\) or warn\(\)") as caught:
        monitor.observe(PREDICTION, TARGET, kl_reg=0.5, step=1, logger=InfoOnly())
    assert caught.value.details["missing"] == ["warning() or warn()"]
    assert monitor.last_check is None and monitor.initial_pairwise_pred_dist_mean is None
    assert registry.value(metric_name("checks")) is None and registry.value(metric_name("kl_reg")) is None
    metrics = CollapseMetrics(0.5, 0.25, 1.0, 0.5, 0.75, 1.5, 0.5)
    with pytest.raises(InputError, match=r"InfoOnly without warning\(\) or warn\(\)"):
        record_collapse_metrics(metrics, logger=InfoOnly(), registry=registry)
    assert registry.value(metric_name("checks")) is None


def test_an_object_without_info_is_refused_naming_info() -> None:
    """An object with warn() but no info() is refused, the message naming info()."""

    class WarnOnly:
        def warn(self, event: str, **fields: Any) -> None:
            """Accept a warning."""

    with pytest.raises(InputError, match=r"without info\(\)"):
        CollapseMonitor(log_every_steps=1, registry=MetricRegistry()).observe(
            PREDICTION, TARGET, kl_reg=0.5, step=1, logger=WarnOnly()
        )


# ------------------------------------------------------------------ structlog and logging
def test_structlog_loggers_get_the_family_records_with_their_fields() -> None:
    """structlog.get_logger() (unconfigured lazy proxy) and structlog.stdlib.get_logger() carry the fields."""
    structlog = pytest.importorskip("structlog")
    from structlog.testing import capture_logs

    for logger in (structlog.get_logger(), structlog.stdlib.get_logger("family")):
        monitor = CollapseMonitor(log_every_steps=1, backend="python", registry=MetricRegistry())
        with capture_logs() as captured:
            monitor.observe(PREDICTION, TARGET, kl_reg=KL_ALERT, step=4, logger=logger)
        metrics = [entry for entry in captured if entry["event"] == "training.metric"]
        assert len(metrics) == 7 and all(entry["log_level"] == "info" for entry in metrics)
        assert metrics[-1] == {
            "event": "training.metric",
            "log_level": "info",
            "name": metric_name("kl_reg"),
            "value": KL_ALERT,
            "unit": "unitless",
            "kind": "gauge",
            "step": 4,
        }
        (alert,) = [entry for entry in captured if entry["event"] == "training.collapse.alert"]
        assert alert == {
            "event": "training.collapse.alert",
            "log_level": "warning",
            "criterion": "kl_reg",
            "value": KL_ALERT,
            "threshold": 10.0,
            "step": 4,
        }


def test_a_standard_library_logger_gets_a_message_and_the_fields_in_extra(caplog: pytest.LogCaptureFixture) -> None:
    """logging.Logger and LoggerAdapter: 'event key=value' at INFO/WARNING, fields under record.geno_lewm."""
    for logger in (logging.getLogger("geno_lewm.test.family"), logging.LoggerAdapter(logging.getLogger("adapted"))):
        caplog.clear()
        monitor = CollapseMonitor(log_every_steps=1, backend="python", registry=MetricRegistry())
        with caplog.at_level(logging.INFO):
            monitor.observe(PREDICTION, TARGET, kl_reg=KL_ALERT, step=5, logger=logger)
        assert [r.levelno for r in caplog.records] == [logging.INFO] * 7 + [logging.WARNING]
        alert = caplog.records[-1]
        assert alert.getMessage() == "training.collapse.alert criterion=kl_reg value=20.0 threshold=10.0 step=5"
        assert alert.geno_lewm == {  # type: ignore[attr-defined]
            "event": "training.collapse.alert",
            "criterion": "kl_reg",
            "value": KL_ALERT,
            "threshold": 10.0,
            "step": 5,
        }
        kl = caplog.records[6]
        assert kl.geno_lewm["name"] == metric_name("kl_reg") and kl.geno_lewm["unit"] == "unitless"  # type: ignore[attr-defined]
        assert kl.name in {"geno_lewm.test.family", "adapted"}  # the record's own name is untouched


def test_a_standard_library_logger_below_its_level_builds_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """A logging.Logger at WARNING gets the alert only; the metrics are dropped before formatting."""
    logger = logging.getLogger("geno_lewm.test.quiet")
    monitor = CollapseMonitor(log_every_steps=1, backend="python", registry=MetricRegistry())
    with caplog.at_level(logging.WARNING, logger="geno_lewm.test.quiet"):
        monitor.observe(PREDICTION, TARGET, kl_reg=KL_ALERT, step=1, logger=logger)
    assert [r.geno_lewm["event"] for r in caplog.records] == ["training.collapse.alert"]  # type: ignore[attr-defined]


# ------------------------------------------------------------------ other lenses
def test_prediction_dynamics_sends_a_family_logger_minimal_records() -> None:
    """PredictionMonitor: one minimal training.metric per metric (and minimal alerts) to a family logger."""
    from geno_lewm.training.dynamics import PredictionMonitor

    logger = FamilyLogger()
    monitor = PredictionMonitor(log_every_steps=1, registry=MetricRegistry())
    check = monitor.observe([[9.0, 0.0, 0.0], [9.0, 0.1, 0.0], [8.0, 0.0, 0.2]], step=2, logger=logger)
    assert check is not None
    metrics = [fields for method, event, fields in logger.calls if event == "training.metric" and method == "info"]
    assert [f["value"] for f in metrics] == list(check.metrics.as_dict().values())
    assert all(set(f) == {"name", "value", "unit", "kind", "step"} for f in metrics)
    alerts = [fields for method, event, fields in logger.calls if method == "warn"]
    assert len(alerts) == len(check.alerts) >= 1
    assert all(set(f) == {"criterion", "value", "threshold", "step"} for f in alerts)
    assert len(logger.calls) == len(metrics) + len(alerts)


def test_credit_diagnostics_accept_a_logger_with_info_only() -> None:
    """record_credit_diagnostics needs only info(): a family-style logger gets one minimal metric per field."""
    from geno_lewm.training.credit import CreditDiagnostics, record_credit_diagnostics

    fields = {name: 0.5 for name in CreditDiagnostics.__dataclass_fields__}
    logger = FamilyLogger()
    record_credit_diagnostics(CreditDiagnostics(**fields), logger=logger, registry=MetricRegistry())
    assert len(logger.calls) == len(fields)
    assert all(m == "info" and set(f) == {"name", "value", "unit", "kind"} for m, _, f in logger.calls)


# ------------------------------------------------------------------ get_logger, the family's API
def test_get_logger_writes_nothing_below_its_level(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """level='warn' (and GENO_LEWM_LOG_LEVEL=error) drop the less severe records; warn() writes level warning."""
    log = get_logger("training", log_dir=tmp_path, run_id="levels", level="warn", pretty=False)
    metric = {"name": "m", "value": 1.0, "unit": "1", "kind": "gauge"}
    log.info("training.metric", **metric)
    log.warn("training.collapse.alert", criterion="kl_reg", value=12.0, threshold=10.0)
    log.warning("training.collapse.alert", criterion="kl_reg", value=13.0, threshold=10.0)
    assert [(r.level, r.value) for r in read_log(log.path, strict=True)] == [("warning", 12.0), ("warning", 13.0)]
    assert log.level == "warning"
    monkeypatch.setenv("GENO_LEWM_LOG_LEVEL", "error")
    quiet = get_logger("training", log_dir=tmp_path, run_id="env-level", pretty=False)
    quiet.warn("training.collapse.alert", criterion="kl_reg", value=12.0, threshold=10.0)
    quiet.error("run.end", status="failed")
    assert [r.event for r in read_log(quiet.path, strict=True)] == ["run.end"]
    monkeypatch.setenv("GENO_LEWM_LOG_LEVEL", "loud")
    with pytest.raises(InputError, match="GENO_LEWM_LOG_LEVEL"):
        get_logger("training", log_dir=tmp_path, run_id="bad-level")


def test_the_default_level_is_info(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without level or GENO_LEWM_LOG_LEVEL, debug records are dropped and info ones written."""
    monkeypatch.delenv("GENO_LEWM_LOG_LEVEL", raising=False)
    log = get_logger("training", log_dir=tmp_path, run_id="default-level", pretty=False)
    log.debug("training.step", loss=0.5)
    log.info("training.step", loss=0.25)
    assert [r.fields["loss"] for r in read_log(log.path, strict=True)] == [0.25]


def test_pretty_mirror_follows_the_argument_the_environment_and_the_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stderr mirror: off when stderr is no terminal, on with GENO_LEWM_LOG_FORMAT=pretty, pretty=True or a TTY."""
    monkeypatch.delenv("GENO_LEWM_LOG_FORMAT", raising=False)
    get_logger("t", log_dir=tmp_path, run_id="plain").info("training.step", loss=1.0)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("GENO_LEWM_LOG_FORMAT", "pretty")
    get_logger("t", log_dir=tmp_path, run_id="env-pretty").info("training.step", loss=2.0)
    assert "training.step" in capsys.readouterr().err
    assert get_logger("t", log_dir=tmp_path, run_id="off", pretty=False)._output.mirror is False
    monkeypatch.delenv("GENO_LEWM_LOG_FORMAT")
    get_logger("t", log_dir=tmp_path, run_id="arg-pretty", pretty=True).info("training.step", loss=3.0)
    assert "loss=3" in capsys.readouterr().err

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    get_logger("t", log_dir=tmp_path, run_id="tty").info("training.step", loss=4.0)
    assert "loss=4" in terminal.getvalue()
    stream = io.StringIO()
    get_logger("t", log_dir=tmp_path, run_id="stream", mirror=stream, pretty=False).info("training.step", loss=5.0)
    assert "loss=5" in stream.getvalue()  # an explicit mirror stream still wins


def test_defaults_are_the_familys_directory_and_run_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No log_dir and no GENO_LEWM_LOG_DIR: ~/.geno-lewm/logs under HOME; no run id: one run-<12 hex> per process."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GENO_LEWM_LOG_DIR", raising=False)
    monkeypatch.delenv("GENO_LEWM_RUN_ID", raising=False)
    monkeypatch.setattr(observability, "_DEFAULT_RUN_ID", None)
    log = get_logger("training", pretty=False)
    assert re.fullmatch(r"run-[0-9a-f]{12}", log.run_id)
    assert log.path == tmp_path / "home" / ".geno-lewm" / "logs" / f"{log.run_id}.jsonl"
    assert get_logger("evaluation", pretty=False).run_id == log.run_id
    assert re.fullmatch(r"run-[0-9a-f]{12}", observability.new_run_id())
    assert observability.DEFAULT_LOG_DIR == "~/.geno-lewm/logs" and observability.LOG_DIR_ENV == "GENO_LEWM_LOG_DIR"


def test_the_family_events_are_in_the_catalogue(tmp_path: Path) -> None:
    """training.run.start/step/epoch.end/checkpoint.write/run.end take the caller's data; error's fields are checked."""
    log = get_logger("training", log_dir=tmp_path, run_id="family-events", pretty=False)
    log.info("training.run.start", config={"lr": 0.1}, seed=3)
    log.info("training.step", loss=0.5, lr=0.1, step=1)
    log.info("training.epoch.end", epoch=0, val_loss=0.4)
    log.info("training.checkpoint.write", path=tmp_path / "ckpt.pt")
    log.info("training.run.end", status="completed", duration_ms=12.0)
    with pytest.raises(InputError, match="'epoch'"):
        log.info("training.epoch.end", epoch="zero")
    with pytest.raises(InputError, match="needs field 'code'"):
        log.error("error", message="no code")
    with pytest.raises(InputError, match="has no field"):
        log.error("error", code="input_error", message="m", extra=1)
    lines = [json.loads(line) for line in log.path.read_text().splitlines()]
    assert [line["event"] for line in lines] == [
        "training.run.start",
        "training.step",
        "training.epoch.end",
        "training.checkpoint.write",
        "training.run.end",
    ]
    assert lines[1]["step"] == 1 and lines[1]["loss"] == 0.5 and lines[3]["path"] == str(tmp_path / "ckpt.pt")


# ------------------------------------------------------------------ runs
def test_logged_run_writes_start_and_end_and_yields_the_logger(tmp_path: Path) -> None:
    """A completed logged_run writes its start event with start_data, then its end event."""
    with logged_run(
        run_id="ok",
        log_dir=tmp_path,
        start_event="training.run.start",
        end_event="training.run.end",
        start_data={"config": {"lr": 0.1}},
    ) as log:
        log.info("training.step", loss=0.5, step=1)
    lines = [json.loads(line) for line in log.path.read_text().splitlines()]
    assert [(line["event"], line["component"]) for line in lines] == [
        ("training.run.start", "runtime"),
        ("training.step", "runtime"),
        ("training.run.end", "runtime"),
    ]
    assert lines[0]["config"] == {"lr": 0.1}


def test_logged_run_writes_an_error_record_and_reraises(tmp_path: Path) -> None:
    """A GenoLeWMError escaping logged_run becomes an error record (code, message, details, remediation), re-raised."""
    raised = InputError("'lr' must be > 0: got -1", details={"field": "lr", "value": object()}, remediation="lr > 0")
    with pytest.raises(InputError) as caught, logged_run("training", run_id="failed", log_dir=tmp_path) as log:
        raise raised
    assert caught.value is raised
    (line,) = [json.loads(line) for line in log.path.read_text().splitlines()]
    assert (line["level"], line["event"], line["code"]) == ("error", "error", "input_error")
    assert line["message"] == "'lr' must be > 0: got -1" and line["remediation"] == "lr > 0"
    assert line["details"]["field"] == "lr" and line["details"]["value"].startswith("<object object")
    with pytest.raises(KeyError), logged_run(run_id="other", log_dir=tmp_path, end_event="training.run.end") as other:
        raise KeyError("not ours")
    assert not other.path.exists()  # neither an error record nor the end event


def test_shutdown_run_closes_the_file_and_drops_the_cached_loggers(tmp_path: Path) -> None:
    """After shutdown_run the run's file descriptor is closed and get_logger builds a new logger."""
    log = get_logger("training", log_dir=tmp_path, run_id="closing", pretty=False)
    log.info("training.step", loss=1.0)

    def open_on_path() -> bool:
        fds = Path("/proc/self/fd")
        return any(os.path.realpath(fd) == str(log.path) for fd in fds.iterdir())

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to see open files")
    assert open_on_path()
    shutdown_run("closing", log_dir=tmp_path)
    assert not open_on_path()
    again = get_logger("training", log_dir=tmp_path, run_id="closing", pretty=False)
    assert again is not log
    again.info("training.step", loss=2.0)
    assert [r.fields["loss"] for r in read_log(log.path, strict=True)] == [1.0, 2.0]
    shutdown_run("closing", log_dir=tmp_path)
    shutdown_run("never-opened", log_dir=tmp_path)  # nothing to close: no error


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("error", "code"),
    [
        (GenoLeWMError("m"), "geno_lewm_error"),
        (InputError("m", details={"field": "x"}), "input_error"),
        (BackendUnavailableError("torch", "torch"), "backend_unavailable"),
        (DistributedError("m"), "distributed_error"),
        (TrainingAlertError("m"), "training_alert"),
        (CollapseDetectedError("m"), "collapse_detected"),
    ],
)
def test_every_error_has_a_stable_code_and_pickles_with_its_remediation(error: GenoLeWMError, code: str) -> None:
    """Each error class has its code; record_fields survive a pickle round trip unchanged."""
    assert error.code == code == error.record_fields()["code"]
    copy = pickle.loads(pickle.dumps(error))
    assert copy.record_fields() == error.record_fields()
    assert set(error.record_fields()) == {"code", "message", "details", "remediation"}


def test_input_error_takes_an_optional_remediation() -> None:
    """InputError(remediation=...) keeps it; without one it is None, and the constructor is otherwise unchanged."""
    assert InputError("m", remediation="do x").remediation == "do x"
    assert InputError("m").remediation is None and InputError("m").details == {}
