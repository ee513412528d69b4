"""Hostile use of the GenoLeWM family compatibility: odd loggers, odd levels, nested runs,
closed runs, the Prometheus file's path, and family lines whose numbers, times, severities
or data are not what the family's writer puts there.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geno_lewm import cli
from geno_lewm.errors import RECORD_TEXT_LIMIT, InputError
from geno_lewm.logs import EventRecord, RunEndRecord, load_log, parse_record
from geno_lewm.metrics import CATALOGUE, MetricRegistry, export_prometheus_textfile, snapshot_all
from geno_lewm.observability import EVENTS, get_logger, logged_run, shutdown_run
from geno_lewm.training.collapse import CollapseMonitor, metric_name

PREDICTION = [[1.0, 0.0, 0.5], [0.0, 1.0, 0.25], [0.5, 0.5, 1.0], [1.0, 1.0, 0.0]]
TARGET = [[0.9, 0.1, 0.5], [0.1, 0.9, 0.2], [0.4, 0.6, 1.0], [1.0, 0.8, 0.1]]
TS = "2025-01-01T00:00:00.000Z"
METRIC_DATA = {"name": "loss", "value": 0.5, "unit": "1", "kind": "gauge"}


def family_line(event: str = "training.metric", data: Any = METRIC_DATA, **top: Any) -> str:
    """One family line (``data`` defaults to a valid metric's), with ``top`` replacing or adding top-level fields."""
    line: dict[str, Any] = {"ts": TS, "severity": "info", "event": event, "run_id": "r", "component": "training"}
    line["data"] = data
    line.update(top)
    return json.dumps(line)


def observe_refused(logger: object, match: str) -> None:
    """``observe`` with ``logger`` is an InputError matching ``match``, and nothing was checked or recorded."""
    registry = MetricRegistry()
    monitor = CollapseMonitor(log_every_steps=1, backend="python", registry=registry)
    with pytest.raises(InputError, match=match):
        monitor.observe(PREDICTION, TARGET, kl_reg=0.5, step=1, logger=logger)
    assert monitor.last_check is None
    assert registry.value(metric_name("checks")) is None


# ------------------------------------------------------------------ loggers
def test_a_logger_whose_method_property_raises_is_refused_naming_the_attribute() -> None:
    """A failing ``info`` property is an InputError naming 'info', raised before anything is checked."""

    class Broken:
        @property
        def info(self) -> Any:
            raise RuntimeError("no logging backend")

        def warning(self, event: str, **fields: Any) -> None:
            """Accept a warning."""

    observe_refused(Broken(), r"'info' cannot be read: RuntimeError: no logging backend")


def test_a_logger_whose_full_records_marker_raises_is_refused() -> None:
    """A failing ``geno_lewm_full_records`` property is an InputError naming it, not a stray exception."""

    class Marked:
        @property
        def geno_lewm_full_records(self) -> bool:
            raise RuntimeError("unset")

        def info(self, event: str, **fields: Any) -> None:
            """Accept an event."""

        def warning(self, event: str, **fields: Any) -> None:
            """Accept a warning."""

    observe_refused(Marked(), r"'geno_lewm_full_records' cannot be read")


@pytest.mark.parametrize(
    "logger",
    [structlog.PrintLogger(io.StringIO()), logging.Logger],
    ids=["structlog-PrintLogger", "logging.Logger-class"],
)
def test_methods_that_cannot_take_event_and_fields_are_refused_before_anything_changes(logger: object) -> None:
    """``info(message)`` or an unbound ``Logger.info`` is refused at entry, not half-way through publishing a check."""
    observe_refused(logger, r"without info\(\) and warning\(\) or warn\(\) \(each taking an event and keyword fields")


def test_a_warning_that_cannot_take_fields_falls_back_to_warn() -> None:
    """A ``warning(message)`` beside a ``warn(event, **fields)`` is passed over for ``warn``."""
    calls: list[tuple[str, dict[str, Any]]] = []

    class Mixed:
        def info(self, event: str, **fields: Any) -> None:
            """Accept an event."""

        def warning(self, message: str) -> None:
            """A message-only warning."""
            raise AssertionError("warning(message) must not be called with fields")

        def warn(self, event: str, **fields: Any) -> None:
            """Accept a warning."""
            calls.append((event, fields))

    CollapseMonitor(log_every_steps=1, backend="python", registry=MetricRegistry()).observe(
        PREDICTION, TARGET, kl_reg=20.0, step=3, logger=Mixed()
    )
    assert [event for event, _ in calls] == ["training.collapse.alert"]
    assert calls[0][1]["criterion"] == "kl_reg" and calls[0][1]["step"] == 3


def test_the_logging_module_stands_for_the_root_logger(caplog: pytest.LogCaptureFixture) -> None:
    """``logger=logging`` writes to the root logger with the fields in extra, instead of a TypeError mid-check."""
    with caplog.at_level(logging.INFO):
        CollapseMonitor(log_every_steps=1, backend="python", registry=MetricRegistry()).observe(
            PREDICTION, TARGET, kl_reg=0.5, step=2, logger=logging
        )
    metrics = [r for r in caplog.records if getattr(r, "geno_lewm", {}).get("event") == "training.metric"]
    assert len(metrics) == 7 and {r.name for r in metrics} == {"root"}
    assert all(r.geno_lewm["step"] == 2 for r in metrics)  # type: ignore[attr-defined]


def test_an_adapter_over_an_adapter_keeps_the_fields_and_both_extras() -> None:
    """Each adapter of a chain is applied: the record has ``geno_lewm``, the inner and the outer extra."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    base = logging.getLogger("geno_lewm.test.adapter_chain")
    base.setLevel(logging.INFO)
    base.propagate = False
    handler = Keep()
    base.addHandler(handler)
    try:
        inner = logging.LoggerAdapter(base, {"rank": 0, "who": "inner"})
        outer = logging.LoggerAdapter(inner, {"job": "j1", "who": "outer"})
        CollapseMonitor(log_every_steps=1, backend="python", registry=MetricRegistry()).observe(
            PREDICTION, TARGET, kl_reg=20.0, step=4, logger=outer
        )
    finally:
        base.removeHandler(handler)
    alert = next(r for r in records if r.levelno == logging.WARNING)
    assert alert.geno_lewm["event"] == "training.collapse.alert"  # type: ignore[attr-defined]
    assert alert.geno_lewm["step"] == 4  # type: ignore[attr-defined]
    assert (alert.rank, alert.job, alert.who) == (0, "j1", "outer")  # type: ignore[attr-defined]
    assert all(hasattr(r, "geno_lewm") for r in records)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["debug", "info", "warning", "warn", "error"]),
            st.sampled_from([*sorted(EVENTS), "not.declared"]),
            st.dictionaries(
                st.sampled_from(["step", "name", "value", "unit", "kind", "config", "description", "status", "x"]),
                st.one_of(
                    st.none(),
                    st.booleans(),
                    st.integers(-5, 5),
                    st.floats(),
                    st.text(max_size=3),
                    st.lists(st.integers(), max_size=2),
                ),
                max_size=4,
            ),
        ),
        max_size=6,
    )
)
def test_whatever_this_logger_writes_reads_back_and_a_refusal_writes_nothing(
    tmp_path_factory: pytest.TempPathFactory, calls: list[tuple[str, str, dict[str, Any]]]
) -> None:
    """Any sequence of calls: each is written (and read back) or refused with InputError, writing nothing."""
    log = get_logger("fuzz", run_id="calls", log_dir=tmp_path_factory.mktemp("calls"), level="debug", pretty=False)
    written = 0
    for method, event, fields in calls:
        size = log.path.stat().st_size if log.path.exists() else 0
        shown = repr(fields)
        try:
            getattr(log, method)(event, **fields)
            written += 1
        except InputError:
            assert (log.path.stat().st_size if log.path.exists() else 0) == size
        assert repr(fields) == shown
    if written:
        loaded = load_log(log.path)
        assert loaded.problems == (), loaded.problems
        assert len(loaded.records) == written


def test_a_family_run_event_field_the_reader_types_is_checked_when_written(tmp_path: Path) -> None:
    """``training.run.start`` with a non-string description is refused, since it would read back as no record."""
    log = get_logger("training", run_id="typed", log_dir=tmp_path, pretty=False)
    with pytest.raises(InputError, match="description"):
        log.info("training.run.start", description=["not", "text"])
    with pytest.raises(InputError, match="error"):
        log.error("training.run.end", error=3)
    assert not log.path.exists()


# ------------------------------------------------------------------ levels, runs
@pytest.mark.parametrize(("given_level", "level"), [(" INFO ", "info"), ("Warn\n", "warning"), ("\tERROR", "error")])
def test_level_names_ignore_case_and_surrounding_whitespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given_level: str, level: str
) -> None:
    """A level in any case with whitespace around it is accepted, as an argument and from the environment."""
    assert get_logger("training", run_id="lv", log_dir=tmp_path, level=given_level).level == level
    monkeypatch.setenv("GENO_LEWM_LOG_LEVEL", given_level)
    assert get_logger("training", run_id="lv", log_dir=tmp_path).level == level


def test_a_blank_level_variable_is_unset_and_a_blank_argument_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GENO_LEWM_LOG_LEVEL of spaces means info; level="  " is an InputError naming 'level'."""
    monkeypatch.setenv("GENO_LEWM_LOG_LEVEL", "   ")
    assert get_logger("training", run_id="blank", log_dir=tmp_path).level == "info"
    with pytest.raises(InputError, match="'level' must be one of") as caught:
        get_logger("training", run_id="blank", log_dir=tmp_path, level="  ")
    assert caught.value.details["field"] == "level"


def test_nested_logged_runs_record_one_error_once(tmp_path: Path) -> None:
    """An InputError escaping nested logged_run blocks of one run is one error record, so the summary counts one."""
    with (
        pytest.raises(InputError),
        logged_run(run_id="nested", log_dir=tmp_path) as outer,
        logged_run(run_id="nested", log_dir=tmp_path),
    ):
        raise InputError("'lr' must be > 0: got -1", details={"field": "lr", "seen": {1, 2}})
    records = load_log(outer.path).records
    assert [r.event for r in records] == ["error"]
    with pytest.raises(InputError), logged_run(run_id="nested", log_dir=tmp_path):
        raise InputError("a second error")
    assert [r.event for r in load_log(outer.path).records] == ["error", "error"]


def test_an_error_too_big_for_a_line_is_still_recorded_cut(tmp_path: Path) -> None:
    """Huge details or a huge message give an error record cut to size, saying so, instead of no record at all."""
    with pytest.raises(InputError), logged_run(run_id="huge", log_dir=tmp_path) as log:
        raise InputError("x" * (RECORD_TEXT_LIMIT + 5), details={"blob": "a" * 2_000_000}, remediation="shorten it")
    (record,) = load_log(log.path).records
    fields = record.fields  # type: ignore[union-attr]
    assert fields["message"] == "x" * RECORD_TEXT_LIMIT + f"... (cut: {RECORD_TEXT_LIMIT + 5} characters)"
    assert fields["details"] == {"cut": "2000012 characters of details as JSON, too long for a log record"}
    assert fields["remediation"] == "shorten it"


def test_shutdown_run_closes_a_file_reopened_by_a_logger_still_held(tmp_path: Path) -> None:
    """A held logger writing after shutdown_run reopens the file; the next shutdown_run closes it again."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to see open files")
    held = get_logger("training", run_id="reopened", log_dir=tmp_path, pretty=False)

    def open_on_path() -> bool:
        return any(os.path.realpath(fd) == str(held.path) for fd in Path("/proc/self/fd").iterdir())

    held.info("training.step", loss=1.0)
    shutdown_run("reopened", log_dir=tmp_path)
    held.info("training.step", loss=2.0)
    get_logger("training", run_id="reopened", log_dir=tmp_path, pretty=False).info("training.step", loss=3.0)
    assert open_on_path()
    shutdown_run("reopened", log_dir=tmp_path)
    assert not open_on_path()
    assert [r.fields["loss"] for r in load_log(held.path).records] == [1.0, 2.0, 3.0]  # type: ignore[union-attr]


# ------------------------------------------------------------------ registry
def test_export_to_a_directory_is_refused_writing_nothing(tmp_path: Path) -> None:
    """A directory as the Prometheus file's path is an InputError; nothing appears in it or beside it."""
    target = tmp_path / "logs"
    target.mkdir()
    registry = MetricRegistry()
    registry.set_gauge(metric_name("kl_reg"), 1.0)
    with pytest.raises(InputError, match="not a directory") as caught:
        export_prometheus_textfile(target, registry=registry)
    assert caught.value.details["field"] == "path"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["logs"]
    with pytest.raises(InputError, match="'path' must be a file path: got int"):
        export_prometheus_textfile(7, registry=registry)  # type: ignore[arg-type]


def test_snapshot_all_keeps_a_nan_gauge_as_nan() -> None:
    """A NaN gauge is NaN in snapshot_all (no fabricated None or 0): json.dumps writes NaN, strict JSON refuses it."""
    registry = MetricRegistry()
    name = metric_name("kl_reg")
    assert CATALOGUE[name].kind == "gauge"
    registry.set_gauge(name, math.nan)
    value = snapshot_all(registry=registry)[name]["value"]
    assert isinstance(value, float) and math.isnan(value)
    assert '"value": NaN' in json.dumps(snapshot_all(registry=registry))
    with pytest.raises(ValueError, match="JSON compliant"):
        json.dumps(snapshot_all(registry=registry), allow_nan=False)


# ------------------------------------------------------------------ family lines
@pytest.mark.parametrize(
    ("line", "where"),
    [
        (family_line(step=True), "step: must be a number, not bool True"),
        (family_line(step="3"), "step: must be a number, not str '3'"),
        (
            family_line(data={"name": "loss", "value": "1.5", "unit": "1", "kind": "gauge"}),
            "data.value: must be a number",
        ),
        (
            family_line(data={"name": "loss", "value": False, "unit": "1", "kind": "gauge"}),
            "data.value: must be a number",
        ),
        (family_line(ts=1735689600), "ts: must be an ISO 8601 date and time, not int"),
        (
            '{"schema_version":1,"timestamp":"2025-01-01T00:00:00Z","level":"info","event":"training.step",'
            '"component":"c","run_id":"r","step":true}',
            "step: must be a number, not bool True",
        ),
    ],
    ids=["step-true", "step-text", "value-text", "value-false", "ts-number", "own-format-step-true"],
)
def test_a_boolean_or_text_where_a_number_belongs_is_refused(line: str, where: str) -> None:
    """``true`` or ``"3"`` as a step or value, or a number as a time, is an InputError naming the field."""
    with pytest.raises(InputError, match=where.replace("(", r"\(")) as caught:
        parse_record(line)
    assert caught.value.details == {"field": "line", "kind": "record"}


def test_an_integral_float_step_reads_as_that_step() -> None:
    """``"step": 3.0`` (a float from Python's json module) is step 3."""
    assert parse_record(family_line(step=3.0)).step == 3


def test_a_time_with_an_offset_is_read_and_reported_in_utc(tmp_path: Path, capsys: Any) -> None:
    """``+02:00`` is converted to UTC, so the report's "UTC" times are right and ordered."""
    record = parse_record(family_line(ts="2025-01-01T02:00:00+02:00"))
    assert record.timestamp.isoformat() == "2025-01-01T00:00:00+00:00"
    path = tmp_path / "offset.jsonl"
    path.write_text(
        family_line(ts="2025-01-01T02:00:00+02:00", step=1)
        + "\n"
        + family_line(ts="2025-01-01T00:30:00Z", step=2)
        + "\n"
    )
    assert cli.main(["report", str(path)]) == cli.EXIT_OK
    assert "  time:     2025-01-01 00:00:00 .. 2025-01-01 00:30:00 UTC" in capsys.readouterr().out


@pytest.mark.parametrize(("severity", "level"), [("WARN", "warning"), ("Info", "info"), ("CRITICAL", "critical")])
def test_a_family_severity_is_read_in_lower_case(severity: str, level: str) -> None:
    """``WARN`` is level warning, like ``warn``; a name outside the family's four is kept, lower-cased."""
    assert parse_record(family_line(severity=severity)).level == level


@pytest.mark.parametrize("severity", ["ERROR", "critical", "Fatal"])
def test_a_run_end_written_as_an_error_in_any_spelling_failed(severity: str) -> None:
    """A family end without status at ERROR, critical or fatal is a failed run, not a completed one."""
    record = parse_record(family_line("training.run.end", {}, severity=severity))
    assert isinstance(record, RunEndRecord) and record.status == "failed"


def test_family_data_null_is_an_event_without_fields() -> None:
    """``"data": null`` reads like no data at all: the event with no fields of its own."""
    record = parse_record(family_line("training.epoch.end", None, epoch=2))
    assert isinstance(record, EventRecord) and record.fields == {"epoch": 2}


_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6))
_VALUE = st.recursive(
    _LEAF,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8,
)
_KEYS = [
    "ts",
    "severity",
    "event",
    "run_id",
    "component",
    "data",
    "step",
    "epoch",
    "duration_ms",
    "error_code",
    "non_finite",
    "pid",
    "x",
]
_DATA_KEYS = [
    "name",
    "value",
    "unit",
    "kind",
    "criterion",
    "threshold",
    "status",
    "config",
    "code",
    "details",
    "step",
    "ts",
    "data",
]


@st.composite
def _family_lines(draw: st.DrawFn) -> str:
    line: dict[str, Any] = {
        "ts": draw(st.one_of(st.just(TS), _VALUE)),
        "severity": draw(st.one_of(st.sampled_from(["debug", "info", "warn", "error", "WARN", "fatal"]), _VALUE)),
        "event": draw(
            st.one_of(
                st.sampled_from(
                    ["training.metric", "training.collapse.alert", "training.run.start", "training.run.end", "error"]
                ),
                _VALUE,
            )
        ),
        "run_id": "r",
        "component": "c",
        "data": draw(st.one_of(st.dictionaries(st.sampled_from(_DATA_KEYS), _VALUE, max_size=5), _VALUE)),
    }
    for key in draw(st.lists(st.sampled_from(_KEYS), max_size=3)):
        line[key] = draw(_VALUE)
    return json.dumps(line)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_family_lines(), min_size=1, max_size=4), st.booleans())
def test_any_family_line_is_a_record_or_an_input_error_and_load_log_goes_on(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str], bom: bool
) -> None:
    """parse_record raises nothing but InputError on family lines; load_log reads each as a record or a problem."""
    readable = 0
    for line in lines:
        try:
            parse_record(line)
            readable += 1
        except InputError:
            pass
    path = tmp_path_factory.mktemp("fuzz") / "family.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" * bom + "\n".join(lines).encode() + b"\n")
    loaded = load_log(path)
    assert len(loaded.records) == readable and len(loaded.problems) == len(lines) - readable
