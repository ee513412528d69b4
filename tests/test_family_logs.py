"""Reading the GenoLeWM family's logs: every event kind, the same numbers, report and plot, mixed files, damage."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geno_lewm import cli
from geno_lewm.errors import InputError
from geno_lewm.logs import (
    AlertRecord,
    EventRecord,
    MetricRecord,
    RunEndRecord,
    RunStartRecord,
    alerts,
    errors,
    load_log,
    metric_series,
    parse_record,
    read_log,
    record_json_schema,
    summarize,
)
from geno_lewm.observability import get_logger
from geno_lewm.training.collapse import CollapseMonitor

PREFIX = "geno_lewm.training.collapse."
GAUGES = (
    "pred_cos_mean",
    "pred_l2_mean",
    "target_var_per_dim",
    "pred_var_per_dim",
    "pred_target_corr",
    "pairwise_pred_dist_mean",
    "kl_reg",
)
STEPS = (10, 20, 30, 40, 50)
VALUES: dict[str, tuple[float, ...]] = {
    "pred_cos_mean": (0.05, 0.2, math.nan, 0.7, 0.95),
    "pred_l2_mean": (3.5, 2.25, 1.5, math.inf, 0.75),
    "target_var_per_dim": (1.0, 0.98, 1.02, 0.99, 1.01),
    "pred_var_per_dim": (0.8, 0.6, 0.3, 0.1, 0.01),
    "pred_target_corr": (0.5, 0.55, 0.4, 0.2, -0.125),
    "pairwise_pred_dist_mean": (5.0, 4.0, 2.5, -math.inf, 0.5),
    "kl_reg": (5.0, 12.0, 20.0, 8.0, 30.0),
}
"""What the family run logs at each of STEPS, NaN and both infinities included."""
KL_THRESHOLD = 10.0
START = datetime(2026, 1, 5, 10, 0, 0, 123000, tzinfo=timezone.utc)


def _ts(moment: datetime) -> str:
    """A moment as the family writes it: UTC, ISO 8601, milliseconds, ``Z``."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def family_line(
    event: str,
    data: dict[str, Any],
    *,
    run_id: str,
    at: datetime,
    severity: str = "info",
    component: str = "training",
    **top: Any,
) -> str:
    """One line of the family's wire format, with ``json.dumps`` defaults (bare NaN/Infinity).

    ``top`` holds the optional top-level fields (step, epoch, phase, duration_ms, trace_id,
    span_id, error_code); those that are None are left out, as the family leaves out what is not set.
    """
    line: dict[str, Any] = {
        "ts": _ts(at),
        "severity": severity,
        "event": event,
        "run_id": run_id,
        "component": component,
        "data": data,
    }
    line.update({key: value for key, value in top.items() if value is not None})
    return json.dumps(line)


@dataclass
class FamilyRun:
    """A family log written line by line, remembering what each line said."""

    run_id: str
    start: datetime = START
    lines: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    times: list[datetime] = field(default_factory=list)

    def write(self, event: str, data: dict[str, Any], **kwargs: Any) -> None:
        """Append one line, a second after the previous one."""
        at = self.start + timedelta(seconds=len(self.lines), milliseconds=7)
        self.lines.append(family_line(event, data, run_id=self.run_id, at=at, **kwargs))
        self.events.append(event)
        self.times.append(at)

    def save(self, path: Path) -> Path:
        """Write the lines to ``path`` (one per line, each ending in a newline)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(line + "\n" for line in self.lines), encoding="utf-8")
        return path


ERROR = {"code": "E_DATA", "message": "batch 3 had no targets", "details": {"batch": 3}, "remediation": "check loader"}


def _family_run(
    run_id: str = "fam", *, steps: tuple[int, ...] = STEPS, end: bool = True, start: datetime = START
) -> FamilyRun:
    """A family run using every event kind: start, steps, the seven gauges, alerts, epoch ends,
    a checkpoint, an error and the end (which carries no status, as the family may write it).
    """
    run = FamilyRun(run_id, start)
    run.write("training.run.start", {"config": {"lr": 0.001, "steps": steps[-1]}}, trace_id="t-1", span_id="s-0")
    for index, step in enumerate(steps):
        run.write("training.step", {"loss": 1.0 / (index + 1)}, step=step, epoch=index // 2, phase="train")
        for name in GAUGES:
            data = {"name": PREFIX + name, "value": VALUES[name][index], "unit": "unitless", "kind": "gauge"}
            run.write("training.metric", data, step=step, span_id=f"s-{step}")
        if VALUES["kl_reg"][index] > KL_THRESHOLD:
            alert = {"criterion": "kl_reg", "value": VALUES["kl_reg"][index], "threshold": KL_THRESHOLD}
            run.write("training.collapse.alert", alert, severity="warn", step=step)
        if index % 2 == 1:
            run.write("training.epoch.end", {"loss": 0.5}, step=step, epoch=index // 2, duration_ms=812.5)
    run.write("training.checkpoint.write", {"path": "ckpt/last.pt", "bytes": 1024}, step=steps[-1])
    run.write("error", ERROR, severity="error", step=steps[2], error_code="E_DATA")
    if end:
        run.write("training.run.end", {}, duration_ms=1234)
    return run


def _same(a: float, b: float) -> bool:
    """Equal, NaN equal to NaN."""
    return (math.isnan(a) and math.isnan(b)) or a == b


def _expected(name: str) -> dict[str, tuple[int, float] | None]:
    """First, last, min and max of a gauge as the test wrote it (NaN left out of min and max)."""
    points = list(zip(STEPS, VALUES[name]))
    comparable = [p for p in points if not math.isnan(p[1])]
    return {
        "first": points[0],
        "last": points[-1],
        "min": min(comparable, key=lambda p: p[1]) if comparable else None,
        "max": max(comparable, key=lambda p: p[1]) if comparable else None,
    }


def _json_point(point: tuple[int, float] | None) -> dict[str, Any] | None:
    """A point as the JSON report writes it (non-finite as null plus non_finite)."""
    if point is None:
        return None
    step, value = point
    if math.isfinite(value):
        return {"step": step, "value": value}
    label = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return {"step": step, "value": None, "non_finite": {"value": label}}


def _main(capsys: Any, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------- records
def test_the_test_writer_puts_bare_non_finite_tokens_on_the_line() -> None:
    """The family's writer is json.dumps with its defaults: NaN and infinities are bare tokens."""
    line = family_line("training.metric", {"value": math.nan, "v": -math.inf}, run_id="r", at=START)
    assert '"value": NaN' in line and '"v": -Infinity' in line
    assert line.startswith('{"ts": "2026-01-05T10:00:00.123Z", "severity": "info"')


def test_every_family_event_reads_without_problems(tmp_path: Path) -> None:
    """Every line of a family log is a record of the model its event calls for, marked as the family's."""
    run = _family_run()
    loaded = load_log(run.save(tmp_path / "fam.jsonl"))
    assert loaded.problems == ()
    assert len(loaded.records) == len(run.lines)
    assert set(run.events) == {
        "training.run.start",
        "training.step",
        "training.metric",
        "training.collapse.alert",
        "training.epoch.end",
        "training.checkpoint.write",
        "error",
        "training.run.end",
    }
    expected_type = {
        "training.run.start": RunStartRecord,
        "training.run.end": RunEndRecord,
        "training.metric": MetricRecord,
        "training.collapse.alert": AlertRecord,
    }
    for record, event, at in zip(loaded.records, run.events, run.times):
        assert type(record) is expected_type.get(event, EventRecord)
        assert record.log_format == "family" and record.wire_event == event
        assert record.timestamp == at and record.run_id == "fam" and record.component == "training"
        assert record.pid is None and record.non_finite == {}


def test_metric_records_carry_the_numbers_written(tmp_path: Path) -> None:
    """Each gauge's series is the steps and values written, NaN and infinities as floats; unit 'unitless' is '1'."""
    path = _family_run().save(tmp_path / "fam.jsonl")
    series = metric_series(read_log(path, strict=True))
    assert list(series) == [PREFIX + name for name in GAUGES]
    for name in GAUGES:
        got = series[PREFIX + name]
        assert got.steps == STEPS and got.unit == "1" and got.run_id == "fam"
        assert all(_same(a, b) for a, b in zip(got.values, VALUES[name], strict=True)), name
    kinds = {r.kind for r in read_log(path) if isinstance(r, MetricRecord)}
    assert kinds == {"gauge"}


def test_envelope_and_data_fields_are_normalised(tmp_path: Path) -> None:
    """Severity warn is level warning; data fields are the record's; top-level step, epoch, phase,
    duration_ms, trace_id, span_id and error_code are kept.
    """
    records = load_log(_family_run().save(tmp_path / "fam.jsonl")).records
    start = next(r for r in records if isinstance(r, RunStartRecord))
    assert start.config == {"lr": 0.001, "steps": STEPS[-1]} and start.model_extra == {
        "trace_id": "t-1",
        "span_id": "s-0",
    }
    alert = next(r for r in records if isinstance(r, AlertRecord))
    assert (alert.level, alert.step, alert.criterion, alert.threshold) == ("warning", 20, "kl_reg", KL_THRESHOLD)
    step = next(r for r in records if isinstance(r, EventRecord) and r.event == "training.step")
    assert step.step == STEPS[0] and step.fields == {"epoch": 0, "phase": "train", "loss": 1.0}
    epoch = next(r for r in records if isinstance(r, EventRecord) and r.event == "training.epoch.end")
    assert epoch.fields["duration_ms"] == 812.5 and epoch.fields["epoch"] == 0
    checkpoint = next(r for r in records if isinstance(r, EventRecord) and r.event == "training.checkpoint.write")
    assert checkpoint.fields == {"path": "ckpt/last.pt", "bytes": 1024}
    error = next(r for r in records if isinstance(r, EventRecord) and r.event == "error")
    assert error.level == "error" and error.fields == {**ERROR, "error_code": "E_DATA"}
    metric = next(r for r in records if isinstance(r, MetricRecord))
    assert metric.model_extra == {"span_id": f"s-{STEPS[0]}"} and metric.threshold is None


@pytest.mark.parametrize(
    ("data", "top", "severity", "status", "seconds"),
    [
        ({}, {"duration_ms": 1234}, "info", "completed", 1.234),
        ({}, {}, "error", "failed", None),
        ({}, {"error_code": "E_OOM"}, "info", "failed", None),
        ({"status": "interrupted", "duration_seconds": 2.5}, {"duration_ms": 9}, "info", "interrupted", 2.5),
    ],
)
def test_run_end_status_and_duration(
    data: dict[str, Any], top: dict[str, Any], severity: str, status: str, seconds: float | None
) -> None:
    """The end's status is its own when it has one, else failed when written as an error, else completed;
    duration_ms gives duration_seconds unless the end says it.
    """
    line = family_line("training.run.end", data, run_id="r", at=START, severity=severity, **top)
    record = parse_record(line)
    assert isinstance(record, RunEndRecord) and record.event == "run.end"
    assert record.status == status and record.duration_seconds == seconds


def test_data_entries_never_overwrite_standard_fields() -> None:
    """A data entry named like a standard or top-level field is kept in 'data', not mistaken for it."""
    data = {"run_id": "other", "timestamp": "yesterday", "step": 99, "level": "debug", "loss": 0.25}
    record = parse_record(family_line("training.step", data, run_id="r", at=START, step=7))
    assert (record.run_id, record.timestamp, record.step, record.level) == ("r", START, 7, "info")
    assert isinstance(record, EventRecord)
    assert record.fields == {
        "loss": 0.25,
        "data": {"run_id": "other", "timestamp": "yesterday", "step": 99, "level": "debug"},
    }


def test_a_step_known_only_in_data_is_the_records_step() -> None:
    """A step the family put in data (not at top level) is still the record's step."""
    record = parse_record(family_line("training.step", {"step": 12}, run_id="r", at=START))
    assert record.step == 12


@settings(max_examples=150, deadline=None)
@given(value=st.floats(allow_nan=True, allow_infinity=True), threshold=st.floats(allow_nan=True))
def test_any_float_round_trips_through_a_family_line(value: float, threshold: float) -> None:
    """A family alert's value and threshold come back as the same float, non-finite included."""
    line = family_line(
        "training.collapse.alert", {"criterion": "c", "value": value, "threshold": threshold}, run_id="r", at=START
    )
    record = parse_record(line)
    assert isinstance(record, AlertRecord)
    assert _same(record.value, value) and _same(record.threshold, threshold)


def test_this_packages_lines_read_bare_non_finite_tokens_too(tmp_path: Path) -> None:
    """A line of this package's format holding bare NaN / -Infinity reads them as floats."""
    log = get_logger("training", log_dir=tmp_path, run_id="own")
    log.info("training.metric", name="m", value=0.5, unit="1", kind="gauge", step=1)
    text = log.path.read_text(encoding="utf-8").replace('"value":0.5', '"value":NaN')
    text = text.rstrip("\n")[:-1] + ',"compute_seconds":-Infinity}\n'
    (record,) = load_log(_write(tmp_path / "bare.jsonl", text)).records
    assert isinstance(record, MetricRecord) and record.log_format == "geno_lewm"
    assert math.isnan(record.value) and record.compute_seconds == -math.inf


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- summaries
def test_summary_and_errors_of_a_family_run(tmp_path: Path) -> None:
    """The summary has the gauges' first/last/min/max as written, the alerts, the status and the error."""
    run = _family_run()
    (summary,) = summarize([load_log(run.save(tmp_path / "fam.jsonl"))])
    assert summary.records == len(run.lines) and summary.pids == ()
    assert (summary.status, summary.duration_seconds) == ("completed", 1.234)
    assert (summary.first_step, summary.last_step) == (STEPS[0], STEPS[-1])
    assert (summary.first_timestamp, summary.last_timestamp) == (run.times[0], run.times[-1])
    for name in GAUGES:
        metric = summary.metrics[PREFIX + name]
        expected = _expected(name)
        got = {"first": metric.first, "last": metric.last, "min": metric.min, "max": metric.max}
        for key, point in expected.items():
            shown = got[key]
            assert (shown is None) == (point is None)
            if point is not None and shown is not None:
                assert shown.step == point[0] and _same(shown.value, point[1]), (name, key)
        assert metric.count == len(STEPS)
        assert metric.non_finite == sum(not math.isfinite(v) for v in VALUES[name])
    alerted = [(s, v) for s, v in zip(STEPS, VALUES["kl_reg"]) if v > KL_THRESHOLD]
    assert [(a.step, a.value, a.threshold, a.criterion) for a in summary.alerts] == [
        (s, v, KL_THRESHOLD, "kl_reg") for s, v in alerted
    ]
    (error,) = summary.errors
    assert (error.code, error.message, error.remediation, error.details) == (
        ERROR["code"],
        ERROR["message"],
        ERROR["remediation"],
        ERROR["details"],
    )
    assert error.step == STEPS[2] and error.run_id == "fam"


def test_errors_fall_back_to_the_error_code() -> None:
    """An error event whose data has no code takes the line's error_code."""
    record = parse_record(family_line("error", {"message": "m"}, run_id="r", at=START, error_code="E_X"))
    ((found),) = errors([record])
    assert (found.code, found.message, found.remediation) == ("E_X", "m", None)


def test_report_text_shows_the_written_numbers(tmp_path: Path, capsys: Any) -> None:
    """`geno-lewm report` on a family log: every gauge's first/last/min/max as written, alerts, status, error."""
    run = _family_run()
    path = run.save(tmp_path / "fam.jsonl")
    code, out, err = _main(capsys, "report", str(path))
    assert code == cli.EXIT_OK, err
    lines = out.splitlines()
    assert f"log {path}: {len(run.lines)} records, every line readable" in lines
    assert "  status:   completed after 1.23 s" in lines
    assert f"  records:  {len(run.lines)} from training" in lines
    for name in GAUGES:
        row = next(line for line in lines if line.strip().startswith(PREFIX + name + " "))
        assert row.split()[1] == "1"
        for point in _expected(name).values():
            assert point is not None
            assert f"{point[1]:.6g} @{point[0]}" in row, (name, row)
    alerted = [(s, v) for s, v in zip(STEPS, VALUES["kl_reg"]) if v > KL_THRESHOLD]
    assert f"  alerts: {len(alerted)}, first at step {alerted[0][0]}" in lines
    for step, value in alerted:
        assert any(line.split()[:4] == [str(step), "kl_reg", f"{value:.6g}", f"{KL_THRESHOLD:.6g}"] for line in lines)
    assert "  errors: 1" in lines
    error_row = next(line for line in lines if ERROR["code"] in line and line.strip().startswith(str(STEPS[2])))
    assert ERROR["message"] in error_row and ERROR["remediation"] in error_row


def test_report_json_shows_the_written_numbers(tmp_path: Path, capsys: Any) -> None:
    """`geno-lewm report --json` on a family log: strict JSON with the written first/last/min/max,
    alerts, status and error.
    """
    path = _family_run().save(tmp_path / "fam.jsonl")
    code, out, _ = _main(capsys, "report", str(path), "--json", "--fail-on-alert")
    payload = json.loads(out, parse_constant=lambda name: pytest.fail(f"bare {name}"))
    assert code == payload["exit_code"] == cli.EXIT_ALERT and payload["alerted_runs"] == ["fam"]
    (run,) = payload["runs"]
    assert (run["status"], run["duration_seconds"], run["pids"]) == ("completed", 1.234, [])
    for name in GAUGES:
        metric = run["metrics"][PREFIX + name]
        assert metric["unit"] == "1" and metric["count"] == len(STEPS)
        for key, point in _expected(name).items():
            assert metric[key] == _json_point(point), (name, key)
    alerted = [(s, v) for s, v in zip(STEPS, VALUES["kl_reg"]) if v > KL_THRESHOLD]
    assert [(a["step"], a["criterion"], a["value"], a["threshold"]) for a in run["alerts"]] == [
        (s, "kl_reg", v, KL_THRESHOLD) for s, v in alerted
    ]
    (error,) = run["errors"]
    assert (error["step"], error["code"], error["message"], error["remediation"]) == (
        STEPS[2],
        ERROR["code"],
        ERROR["message"],
        ERROR["remediation"],
    )
    assert payload["logs"][0]["status"] == "ok" and payload["logs"][0]["problems"] == []


def test_report_of_a_family_run_without_an_end(tmp_path: Path, capsys: Any) -> None:
    """A family run without its end event has no status, as a run of this package's without run.end."""
    path = _family_run(end=False).save(tmp_path / "fam.jsonl")
    code, out, _ = _main(capsys, "report", str(path))
    assert code == cli.EXIT_OK and "status:   no run.end record" in out


# ---------------------------------------------------------------- plot
def test_plot_draws_the_written_series(tmp_path: Path, capsys: Any) -> None:
    """The figure of a family log has one panel per gauge whose line is the steps and values written
    (non-finite values as gaps), and `geno-lewm plot` writes it.
    """
    pytest.importorskip("matplotlib")
    from geno_lewm._plot import draw_records

    path = _family_run().save(tmp_path / "fam.jsonl")
    figure = draw_records(list(read_log(path)))
    axes = {ax.get_title(): ax for sub in figure.subfigs for ax in sub.axes if ax.get_visible()}
    assert set(axes) == set(GAUGES)
    for name in GAUGES:
        line = axes[name].get_lines()[0]
        assert list(line.get_xdata()) == list(STEPS)
        drawn = [float(y) for y in line.get_ydata()]
        assert all(_same(d, v if math.isfinite(v) else math.nan) for d, v in zip(drawn, VALUES[name], strict=True))
    marks = axes["kl_reg"].collections
    crosses = [tuple(offset) for c in marks if hasattr(c, "get_offsets") for offset in c.get_offsets()]
    assert {(s, v) for s, v in zip(STEPS, VALUES["kl_reg"]) if v > KL_THRESHOLD} <= set(crosses)
    code, out, _ = _main(capsys, "plot", str(path), "--out", str(tmp_path / "fam.png"))
    assert code == cli.EXIT_OK and (tmp_path / "fam.png").stat().st_size > 0 and "wrote" in out


# ---------------------------------------------------------------- mixed
def _mixed_log(tmp_path: Path) -> tuple[Path, list[str], FamilyRun]:
    """One file: this package's run start, its check at step 1 (kl_reg 20, an alert), the family's
    lines for the same run, and this package's run end last.
    """
    log = get_logger("training", log_dir=tmp_path / "own", run_id="mixed")
    monitor = CollapseMonitor(log_every_steps=1)
    target = [[float((i * 7 + j * 3) % 5) - 2.0 for j in range(4)] for i in range(6)]
    prediction = [[0.5 * x + 0.01 * j for j, x in enumerate(row)] for row in target]
    with log.run(config={"lr": 0.001}):
        monitor.observe(prediction, target, kl_reg=20.0, step=1, logger=log)
    own = log.path.read_text(encoding="utf-8").splitlines()
    family = _family_run("mixed", start=datetime.now(timezone.utc))
    lines = [*own[:-1], *(line for line in family.lines if '"training.run.' not in line), own[-1]]
    path = _write(tmp_path / "mixed.jsonl", "".join(line + "\n" for line in lines))
    return path, own, family


def test_a_mixed_file_reads_as_one_run(tmp_path: Path, capsys: Any) -> None:
    """Family lines and this package's lines of one run in one file: every line a record, one run, each
    gauge's series the two writers' values in order, alerts of both, the status from this package's end.
    """
    path, own, _ = _mixed_log(tmp_path)
    loaded = load_log(path)
    assert loaded.problems == () and len(loaded.records) == len(path.read_text().splitlines())
    assert {r.log_format for r in loaded.records} == {"geno_lewm", "family"}
    own_records = [r for r in loaded.records if r.log_format == "geno_lewm"]
    assert len(own_records) == len(own)
    series = metric_series(loaded.records)
    for name in GAUGES:
        first = next(r for r in own_records if isinstance(r, MetricRecord) and r.name == PREFIX + name)
        got = series[PREFIX + name]
        assert got.steps == (1, *STEPS)
        assert all(_same(a, b) for a, b in zip(got.values, (first.value, *VALUES[name]), strict=True))
    assert series[PREFIX + "kl_reg"].values[0] == 20.0
    (summary,) = summarize([loaded])
    assert summary.run_id == "mixed" and summary.status == "completed" and len(summary.pids) == 1
    own_alerts = [(r.step, r.value) for r in own_records if isinstance(r, AlertRecord)]
    assert (1, 20.0) in own_alerts
    assert [(a.step, a.value) for a in summary.alerts] == [
        *own_alerts,
        *((s, v) for s, v in zip(STEPS, VALUES["kl_reg"]) if v > KL_THRESHOLD),
    ]
    assert len(summary.errors) == 1
    code, out, _ = _main(capsys, "report", str(path), "--json")
    payload = json.loads(out)
    assert code == cli.EXIT_OK and payload["run_ids"] == ["mixed"]
    (run,) = payload["runs"]
    kl = run["metrics"][PREFIX + "kl_reg"]
    assert kl["count"] == len(STEPS) + 1 and kl["first"] == {"step": 1, "value": 20.0}
    assert kl["last"] == {"step": STEPS[-1], "value": VALUES["kl_reg"][-1]} and kl["unit"] == "nats"
    assert run["status"] == "completed" and len(run["alerts"]) == len(summary.alerts) and len(run["errors"]) == 1


def test_a_mixed_file_plots_one_line_per_gauge(tmp_path: Path) -> None:
    """The plot of a mixed file draws one run: each gauge's line holds both writers' points."""
    pytest.importorskip("matplotlib")
    from geno_lewm._plot import draw_records

    path, _, _ = _mixed_log(tmp_path)
    figure = draw_records(list(read_log(path)))
    axes = {ax.get_title(): ax for sub in figure.subfigs for ax in sub.axes if ax.get_visible()}
    assert list(axes["kl_reg"].get_lines()[0].get_xdata()) == [1, *STEPS]
    assert list(axes["kl_reg"].get_lines()[0].get_ydata()) == [20.0, *VALUES["kl_reg"]]


# ---------------------------------------------------------------- the reported log
def _reported_log(tmp_path: Path) -> Path:
    """A family log of 85 lines shaped like the one reported as '0 records, 85 unreadable lines':
    a start, ten checks of the seven gauges, a training step after each, three alerts and an end.
    """
    run = FamilyRun("reported")
    run.write("training.run.start", {"config": {"epochs": 1}})
    for index in range(10):
        step = 100 * (index + 1)
        for name in GAUGES:
            value = 12.0 + index if name == "kl_reg" else 1.0 / (index + 1)
            run.write("training.metric", {"name": PREFIX + name, "value": value, "unit": "unitless", "kind": "gauge"},
                      step=step)  # fmt: skip
        if index >= 7:
            run.write("training.collapse.alert", {"criterion": "kl_reg", "value": 12.0 + index, "threshold": 10.0},
                      severity="warn", step=step)  # fmt: skip
        run.write("training.step", {"loss": 1.0 / (index + 1)}, step=step)
    run.write("training.run.end", {"status": "completed"}, duration_ms=60000)
    return run.save(tmp_path / "reported.jsonl")


def test_the_reported_family_log_gives_85_records(tmp_path: Path, capsys: Any) -> None:
    """The reported family log of 85 lines reads as 85 records and no problem, and the report says so."""
    path = _reported_log(tmp_path)
    assert len(path.read_text(encoding="utf-8").splitlines()) == 85
    loaded = load_log(path)
    assert len(loaded.records) == 85 and loaded.problems == ()
    code, out, err = _main(capsys, "report", str(path))
    assert code == cli.EXIT_OK and err == ""
    assert f"log {path}: 85 records, every line readable" in out and "unreadable" not in out
    assert "status:   completed after 60 s" in out and "alerts: 3, first at step 800" in out


# ---------------------------------------------------------------- damage
@pytest.mark.parametrize(
    ("line", "kind", "words"),
    [
        (family_line("training.metric", {"name": "m", "value": "x", "unit": "1", "kind": "gauge"}, run_id="r",
                     at=START), "record", "not a valid 'training.metric' GenoLeWM family line: data.value"),
        ('{"ts": "2026-01-05T10:00:00.123", "severity": "info", "event": "e", "run_id": "r", "component": "c"}',
         "record", "ts: Input should have timezone info"),
        ('{"ts": "2026-01-05T10:00:00.123Z", "severity": "info", "event": "e", "run_id": "r", "component": "c", '
         '"data": [1]}', "record", "data: must be an object, not list"),
        ('{"ts": "2026-01-05T10:00:00.123Z", "severity": "info", "run_id": "r", "component": "c"}',
         "record", "a record without an 'event' field"),
        ('{"ts": "2026-01-05T10:00:00.123Z", "severity": "info", "data": ' + "[" * 200 + "]" * 200 + "}",
         "json", "nested"),
        ('{"ts": "2026-01-05T10:00:00.123Z", "value": nan}', "json", "not valid strict JSON"),
    ],
)  # fmt: skip
def test_damaged_family_lines_are_problems_and_reading_goes_on(
    tmp_path: Path, line: str, kind: str, words: str
) -> None:
    """A bad family line in the middle is a LineProblem of its kind naming the family's field; the rest is read."""
    run = _family_run()
    damaged = [*run.lines[:3], line, *run.lines[3:]]
    loaded = load_log(_write(tmp_path / "damaged.jsonl", "".join(item + "\n" for item in damaged)))
    assert len(loaded.records) == len(run.lines)
    (problem,) = loaded.problems
    assert (problem.line, problem.kind) == (4, kind) and words in problem.message, problem.message


def test_a_torn_or_binary_family_tail_is_a_problem(tmp_path: Path) -> None:
    """A family log cut mid-line is torn; one ending in zeros is an encoding problem; every whole line is read."""
    run = _family_run()
    text = "".join(line + "\n" for line in run.lines)
    torn = load_log(_write(tmp_path / "torn.jsonl", text + run.lines[5][:40]))
    assert len(torn.records) == len(run.lines) and [p.kind for p in torn.problems] == ["torn"]
    zeros = tmp_path / "zeros.jsonl"
    zeros.write_bytes(text.encode() + b"\x00" * 64)
    loaded = load_log(zeros)
    assert len(loaded.records) == len(run.lines) and [p.kind for p in loaded.problems] == ["encoding"]


def test_parse_record_names_the_family_field() -> None:
    """parse_record raises InputError for a bad family line, naming the field as the line spells it."""
    with pytest.raises(InputError, match=r"data\.threshold"):
        parse_record(family_line("training.collapse.alert", {"criterion": "c", "value": 1.0}, run_id="r", at=START))


def test_schema_says_family_lines_are_read_too(capsys: Any) -> None:
    """The JSON Schema describes this package's lines and says the family's are read as well."""
    assert "GenoLeWM family" in record_json_schema()["description"]
    code, out, _ = _main(capsys, "schema")
    assert code == cli.EXIT_OK and "GenoLeWM family" in json.loads(out)["description"]


def test_alerts_helper_sees_family_alerts() -> None:
    """alerts() lists a family alert with its numbers, as any reader of records would expect."""
    line = family_line(
        "training.collapse.alert", {"criterion": "kl_reg", "value": 11.0, "threshold": 10.0}, run_id="r", at=START,
        severity="warn", step=3,
    )  # fmt: skip
    ((alert),) = alerts([parse_record(line)])
    assert (alert.step, alert.criterion, alert.value, alert.threshold, alert.timestamp) == (
        3,
        "kl_reg",
        11.0,
        10.0,
        START,
    )


def test_family_run_events_written_by_this_package_give_the_run_status(tmp_path: Path) -> None:
    """`logged_run` with the family's start and end events, written in this package's format, gives the
    run's start, status and duration as the family's own lines would.
    """
    from geno_lewm.observability import logged_run

    with logged_run(
        "training", run_id="r", log_dir=tmp_path, start_event="training.run.start", end_event="training.run.end"
    ) as log:
        log.info("training.metric", name="loss", value=0.5, unit="1", kind="gauge", step=1)
    loaded = load_log(tmp_path / "r.jsonl")
    assert loaded.problems == ()
    start, metric, end = loaded.records
    assert isinstance(start, RunStartRecord) and start.wire_event == "training.run.start"
    assert isinstance(metric, MetricRecord) and metric.wire_event == "training.metric"
    assert isinstance(end, RunEndRecord) and end.status == "completed" and end.wire_event == "training.run.end"
    assert end.log_format == "geno_lewm"
    (summary,) = summarize([loaded])
    assert summary.status == "completed"
