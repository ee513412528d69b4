"""The geno-lewm command line on real logs: report (text and JSON), plot, schema, exit codes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from geno_lewm import cli
from geno_lewm.logs import AlertRecord, MetricRecord, load_log, read_log, record_json_schema
from geno_lewm.metrics import MetricRegistry
from geno_lewm.observability import get_logger
from geno_lewm.training.collapse import CollapseMonitor

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m geno_lewm ARGS`` (or ``python -c CODE ARGS``) in a fresh interpreter."""
    command = (
        [sys.executable, "-c", textwrap.dedent(code), *args] if code else [sys.executable, "-m", "geno_lewm", *args]
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.fixture
def real_log(tmp_path: Path) -> Path:
    """A log written by the monitor over a run whose predictions shrink from step 40 on."""
    log = get_logger("training", log_dir=tmp_path / "logs", run_id="cli-run")
    monitor = CollapseMonitor(log_every_steps=10, backend="python", registry=MetricRegistry())
    target = [[float((i * 7 + j * 3) % 5) - 2.0 for j in range(4)] for i in range(6)]
    with log.run(config={"steps": 80}):
        for step in range(10, 90, 10):
            scale = 1.0 if step < 40 else 0.3 ** ((step - 30) / 10)
            prediction = [[scale * x + 0.01 * j for j, x in enumerate(row)] for row in target]
            monitor.observe(prediction, target, kl_reg=0.2, step=step, logger=log)
    return log.path


def _main(capsys: Any, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------- report
def test_report_summarises_metrics_and_alerts(real_log: Path) -> None:
    """`python -m geno_lewm report LOG` exits 0 and shows every metric's first/last/min/max with
    steps and every alert with step, criterion, value and threshold.
    """
    result = _run("report", str(real_log))
    assert result.returncode == cli.EXIT_OK, result.stderr
    out = result.stdout
    records = list(read_log(real_log))
    assert "run cli-run" in out and "status:   completed" in out
    metric_records = [r for r in records if isinstance(r, MetricRecord)]
    for name in dict.fromkeys(r.name for r in metric_records):
        series = [r for r in metric_records if r.name == name]
        row = next(line for line in out.splitlines() if line.strip().startswith(name + " "))
        smallest = min(series, key=lambda r: r.value)
        for shown in (series[0], series[-1], smallest):
            assert f"{shown.value:.6g} @{shown.step}" in row
    alert_records = [r for r in records if isinstance(r, AlertRecord)]
    assert alert_records, "the fixture must produce alerts"
    assert f"alerts: {len(alert_records)}, first at step {alert_records[0].step}" in out
    for alert in alert_records:
        assert any(
            line.split()[:4] == [str(alert.step), alert.criterion, f"{alert.value:.6g}", f"{alert.threshold:.6g}"]
            for line in out.splitlines()
        )
    assert "every line readable" in out


def test_report_json_matches_the_records(real_log: Path, capsys: Any) -> None:
    """--json is strict JSON whose first/last/min/max and alerts equal the records'."""
    code, out, _ = _main(capsys, "report", str(real_log), "--json")
    assert code == cli.EXIT_OK
    payload = json.loads(out, parse_constant=lambda name: pytest.fail(f"bare {name}"))
    assert payload["exit_code"] == 0
    assert payload["logs"] == [
        {"path": str(real_log), "status": "ok", "records": len(load_log(real_log).records), "error": None,
         "problems": []}
    ]  # fmt: skip
    (run,) = payload["runs"]
    records = list(read_log(real_log))
    for name, summary in run["metrics"].items():
        series = [r for r in records if isinstance(r, MetricRecord) and r.name == name]
        assert summary["count"] == len(series)
        assert summary["first"] == {"step": series[0].step, "value": series[0].value}
        assert summary["last"] == {"step": series[-1].step, "value": series[-1].value}
        largest = max(series, key=lambda r: r.value)
        assert summary["max"] == {"step": largest.step, "value": largest.value}
    expected = [(r.step, r.criterion, r.value, r.threshold) for r in records if isinstance(r, AlertRecord)]
    assert [(a["step"], a["criterion"], a["value"], a["threshold"]) for a in run["alerts"]] == expected


def test_report_of_a_torn_log_exits_4_and_lists_the_line(real_log: Path, capsys: Any) -> None:
    """A log whose last line is torn still reports everything else, lists the line, and exits 4."""
    data = real_log.read_bytes()
    torn = real_log.with_name("torn.jsonl")
    torn.write_bytes(data + data.splitlines(keepends=True)[1][:25])
    line_number = len(data.splitlines()) + 1
    code, out, _ = _main(capsys, "report", str(torn))
    assert code == cli.EXIT_DAMAGED == 4
    assert f"line {line_number}: torn last line" in out
    assert "geno_lewm.training.collapse.kl_reg" in out
    code, out, _ = _main(capsys, "report", str(torn), "--json")
    payload = json.loads(out)
    assert code == payload["exit_code"] == 4
    assert payload["logs"][0]["status"] == "damaged"
    assert payload["logs"][0]["problems"][0]["line"] == line_number


def test_report_of_a_log_with_a_hostile_line_reports_the_rest(real_log: Path, capsys: Any) -> None:
    """A line of 5,000 nested brackets mid-log is listed as damaged (exit 4); the records after it are reported."""
    lines = real_log.read_bytes().splitlines(keepends=True)
    hostile = real_log.with_name("hostile.jsonl")
    hostile.write_bytes(b"".join(lines[:2]) + b"[" * 5000 + b"]" * 5000 + b"\n" + b"".join(lines[2:]))
    code, out, err = _main(capsys, "report", str(hostile), "--json")
    payload = json.loads(out)
    assert code == payload["exit_code"] == cli.EXIT_DAMAGED and "Traceback" not in err
    assert [p["line"] for p in payload["logs"][0]["problems"]] == [3]
    code, plain, _ = _main(capsys, "report", str(real_log), "--json")
    (intact,), (damaged,) = json.loads(plain)["runs"], payload["runs"]
    assert {**intact, "paths": None} == {**damaged, "paths": None}
    assert payload["logs"][0]["records"] == json.loads(plain)["logs"][0]["records"]


def test_report_exit_codes_for_missing_and_non_log_files(real_log: Path, tmp_path: Path) -> None:
    """A missing log or a file with no record in it exits 3 (even beside a good log); usage errors exit 2."""
    missing = _run("report", str(real_log), str(tmp_path / "missing.jsonl"))
    assert missing.returncode == cli.EXIT_UNREADABLE == 3
    assert "missing.jsonl" in missing.stderr and "run cli-run" in missing.stdout
    not_a_log = tmp_path / "notes.txt"
    not_a_log.write_text("hello\nworld\n", encoding="utf-8")
    assert _run("report", str(not_a_log)).returncode == 3
    usage = _run("report")
    assert usage.returncode == cli.EXIT_USAGE == 2
    assert "usage:" in usage.stderr


def test_report_shows_non_finite_values_and_stays_strict_json(tmp_path: Path, capsys: Any) -> None:
    """NaN and infinite values appear as nan/inf in text and as null plus non_finite in --json."""
    log = get_logger("training", log_dir=tmp_path, run_id="nan-run")
    for step, value in ((1, math.nan), (2, 0.5), (3, math.inf)):
        log.info("training.metric", name="loss", value=value, unit="1", kind="gauge", step=step)
    code, out, _ = _main(capsys, "report", str(log.path))
    assert code == 0
    row = next(line for line in out.splitlines() if line.strip().startswith("loss"))
    assert row.split()[1:] == ["1", "3", "(2", "non-finite)", "nan", "@1", "inf", "@3", "0.5", "@2", "inf", "@3"]
    code, out, _ = _main(capsys, "report", str(log.path), "--json")
    metric = json.loads(out)["runs"][0]["metrics"]["loss"]
    assert metric["first"] == {"step": 1, "value": None, "non_finite": {"value": "nan"}}
    assert metric["max"] == {"step": 3, "value": None, "non_finite": {"value": "inf"}}
    assert metric["non_finite_count"] == 2


def test_report_separates_runs_and_filters_by_run(tmp_path: Path, capsys: Any) -> None:
    """Two runs in two files are reported separately; --run keeps one."""
    paths = []
    for run_id in ("first-run", "second-run"):
        log = get_logger("training", log_dir=tmp_path, run_id=run_id)
        log.info("training.metric", name="m", value=1.0, unit="1", kind="gauge", step=1)
        paths.append(str(log.path))
    code, out, _ = _main(capsys, "report", *paths)
    assert code == 0 and "run first-run" in out and "run second-run" in out
    code, out, _ = _main(capsys, "report", *paths, "--run", "second-run")
    assert "run first-run" not in out and "run second-run" in out


def test_report_of_this_packages_log_is_unchanged_by_the_errors_section(real_log: Path, capsys: Any) -> None:
    """A run without error events gets no errors section in text, an empty list in --json, and its process count."""
    code, out, _ = _main(capsys, "report", str(real_log))
    assert code == cli.EXIT_OK and "errors:" not in out and "(1 process)" in out
    code, out, _ = _main(capsys, "report", str(real_log), "--json")
    (run,) = json.loads(out)["runs"]
    assert run["errors"] == [] and len(run["pids"]) == 1


def test_report_in_a_fresh_interpreter_reads_a_family_log(tmp_path: Path) -> None:
    """`python -m geno_lewm report` reads a GenoLeWM family log (bare NaN included) like its own."""
    lines = [
        {"ts": "2026-01-05T10:00:00.000Z", "severity": "info", "event": "training.run.start", "run_id": "f",
         "component": "training", "data": {}},
        {"ts": "2026-01-05T10:00:01.000Z", "severity": "info", "event": "training.metric", "run_id": "f",
         "component": "training", "data": {"name": "m", "value": 0.25, "unit": "unitless", "kind": "gauge"}, "step": 1},
        {"ts": "2026-01-05T10:00:02.000Z", "severity": "info", "event": "training.metric", "run_id": "f",
         "component": "training", "data": {"name": "m", "value": math.nan, "unit": "unitless", "kind": "gauge"},
         "step": 2},
        {"ts": "2026-01-05T10:00:03.000Z", "severity": "error", "event": "error", "run_id": "f",
         "component": "training", "data": {"code": "E1", "message": "boom"}, "step": 2},
        {"ts": "2026-01-05T10:00:04.000Z", "severity": "error", "event": "training.run.end", "run_id": "f",
         "component": "training", "data": {}},
    ]  # fmt: skip
    path = tmp_path / "family.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    assert "NaN" in path.read_text(encoding="utf-8")
    result = _run("report", str(path))
    assert result.returncode == cli.EXIT_OK, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.strip().startswith("m "))
    assert row.split()[:4] == ["m", "1", "2", "(1"] and "0.25 @1" in row and "nan @2" in row
    assert "status:   failed" in result.stdout and "errors: 1" in result.stdout and "boom" in result.stdout
    assert f"log {path}: 5 records, every line readable" in result.stdout


# ---------------------------------------------------------------- plot, schema
def test_plot_writes_a_png(real_log: Path, tmp_path: Path, capsys: Any) -> None:
    """The plot command draws the log into a PNG file."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "plots" / "run.png"
    code, stdout, _ = _main(capsys, "plot", str(real_log), "--out", str(out))
    assert code == 0 and str(out) in stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = _main(capsys, "plot", str(real_log), "--out", str(out), "--run", "no-such-run")
    assert code == cli.EXIT_UNREADABLE and "nothing to plot" in err


def test_plot_without_matplotlib_names_the_extra(real_log: Path, tmp_path: Path) -> None:
    """Without matplotlib, plot exits 5 with a message naming the [plot] extra, and writes nothing."""
    out = tmp_path / "run.png"
    result = _run(
        "plot",
        str(real_log),
        "--out",
        str(out),
        code="""
        import sys
        sys.modules["matplotlib"] = None
        from geno_lewm.cli import main
        raise SystemExit(main(sys.argv[1:]))
        """,
    )
    assert result.returncode == cli.EXIT_MISSING_EXTRA == 5
    assert "geno-lewm[plot]" in result.stderr
    assert not out.exists()


def test_schema_prints_the_record_schema(capsys: Any) -> None:
    """`schema` prints exactly the JSON Schema that record_json_schema returns."""
    code, out, _ = _main(capsys, "schema")
    assert code == 0
    assert json.loads(out) == record_json_schema()


def test_console_script_points_at_main() -> None:
    """The geno-lewm console script of pyproject.toml resolves to cli.main."""
    tomllib = pytest.importorskip("tomllib")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["geno-lewm"] == "geno_lewm.cli:main"
    version = _run("--version")
    assert version.returncode == 0 and version.stdout.startswith("geno-lewm ")


def _gradient_log(tmp_path: Path, *, with_metrics: bool) -> Path:
    """A real log of a tiny model trained for three epochs under GradientGeometry."""
    torch = pytest.importorskip("torch")
    from geno_lewm.training.gradients import GradientGeometry

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    logger = get_logger("training", log_dir=tmp_path / "logs", run_id="gradients")
    geometry = GradientGeometry(model, compute_correlation=True)
    monitor = CollapseMonitor(log_every_steps=5, registry=MetricRegistry())
    step = 0
    for _ in range(3):
        for _ in range(5):
            step += 1
            x = torch.randn(16, 4)
            output = model(x)
            output.pow(2).mean().backward()
            if with_metrics:
                monitor.observe(output.detach(), x[:, :2], kl_reg=0.1, step=step, logger=logger)
        geometry.end_epoch(step=step, logger=logger)
    geometry.detach()
    return tmp_path / "logs" / "gradients.jsonl"


@pytest.mark.parametrize("with_metrics", [True, False])
def test_plot_draws_gradient_geometry_when_logged(tmp_path: Path, capsys: Any, with_metrics: bool) -> None:
    """A log with gradient-geometry records plots (with or without collapse metrics) and the PNG grows a row."""
    pytest.importorskip("matplotlib")
    log = _gradient_log(tmp_path, with_metrics=with_metrics)
    code, out, _ = _main(capsys, "plot", str(log), "--out", str(tmp_path / "g.png"))
    assert code == 0, out
    from matplotlib.image import imread

    height = imread(tmp_path / "g.png").shape[0]
    if with_metrics:
        metrics_only = tmp_path / "metrics-only.jsonl"
        kept = [line for line in log.read_text().splitlines() if '"training.gradients.layer"' not in line]
        metrics_only.write_text("\n".join(kept) + "\n")
        assert _main(capsys, "plot", str(metrics_only), "--out", str(tmp_path / "m.png"))[0] == 0
        assert height > imread(tmp_path / "m.png").shape[0]


# ---------------------------------------------------------------- CI use: directories, runs, alerts
def _metric_log(log_dir: Path, run_id: str, *, alert_at: int | None = None) -> Path:
    """A small real log of one run: a metric at steps 1..3 and, at ``alert_at``, a collapse alert."""
    log = get_logger("training", log_dir=log_dir, run_id=run_id)
    with log.run(config={"steps": 3}):
        for step in (1, 2, 3):
            value = 0.1 if step == alert_at else 1.0
            log.info("training.metric", name="x.var", value=value, unit="1", kind="gauge", step=step, threshold=0.5)
            if step == alert_at:
                log.warning("training.collapse.alert", criterion="var", value=value, threshold=0.5, step=step)
    log.close()
    return log.path


def _recovering_log(log_dir: Path) -> Path:
    """A real monitor's log under an alert policy: predictions collapse at steps 40-50, then recover, so
    the alerts raised at step 40 are cleared at step 60.
    """
    from geno_lewm.training.alerting import AlertPolicy

    log = get_logger("training", log_dir=log_dir, run_id="recovered")
    monitor = CollapseMonitor(log_every_steps=10, backend="python", registry=MetricRegistry(), policy=AlertPolicy())
    target = [[float((i * 7 + j * 3) % 5) - 2.0 for j in range(4)] for i in range(6)]
    for step in range(10, 90, 10):
        scale = 0.01 if step in (40, 50) else 1.0
        prediction = [[scale * x + 0.01 * j for j, x in enumerate(row)] for row in target]
        monitor.observe(prediction, target, kl_reg=0.2, step=step, logger=log)
    log.close()
    return log.path


def test_report_reads_every_log_of_a_directory_in_sorted_order(tmp_path: Path, capsys: Any) -> None:
    """A directory argument stands for every *.jsonl file directly in it, sorted, alongside files named."""
    logs = tmp_path / "logs"
    second = _metric_log(logs, "b-run")
    first = _metric_log(logs, "a-run")
    (logs / "notes.txt").write_text("not a log\n", encoding="utf-8")
    (logs / "nested").mkdir()
    _metric_log(logs / "nested", "hidden-run")
    extra = _metric_log(tmp_path / "elsewhere", "c-run")
    code, out, err = _main(capsys, "report", str(logs), str(extra), "--json")
    assert code == cli.EXIT_OK, err
    payload = json.loads(out)
    assert [entry["path"] for entry in payload["logs"]] == [str(first), str(second), str(extra)]
    assert [run["run_id"] for run in payload["runs"]] == ["a-run", "b-run", "c-run"]
    code, text, _ = _main(capsys, "report", str(logs))
    assert code == cli.EXIT_OK and "run a-run" in text and "run b-run" in text and "hidden-run" not in text


def test_report_does_not_count_a_log_named_twice(tmp_path: Path, capsys: Any) -> None:
    """A log reached both through its directory and by name is read once, so its records are not counted twice."""
    path = _metric_log(tmp_path / "logs", "once")
    code, out, _ = _main(capsys, "report", str(path.parent), str(path), "--json")
    payload = json.loads(out)
    assert code == cli.EXIT_OK and len(payload["logs"]) == 1
    assert payload["runs"][0]["records"] == len(load_log(path).records)


def test_report_of_a_directory_without_logs_says_so_and_exits_3(tmp_path: Path, capsys: Any) -> None:
    """A directory with no *.jsonl file in it is named as such (not 'Is a directory') and exits 3."""
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("nothing here\n", encoding="utf-8")
    code, out, err = _main(capsys, "report", str(empty))
    assert code == cli.EXIT_UNREADABLE
    assert "no *.jsonl" in err and "no *.jsonl" in out and "Is a directory" not in err
    code, out, _ = _main(capsys, "report", str(empty), "--json")
    payload = json.loads(out)
    assert code == payload["exit_code"] == cli.EXIT_UNREADABLE
    assert payload["logs"][0]["path"] == str(empty) and "no *.jsonl" in payload["logs"][0]["error"]


def test_report_of_an_unknown_run_exits_3_and_names_the_runs(tmp_path: Path, capsys: Any) -> None:
    """--run naming no run of the logs exits 3 (nothing to report), in text and JSON, listing the runs there are."""
    paths = [str(_metric_log(tmp_path, run_id)) for run_id in ("first-run", "second-run")]
    code, out, err = _main(capsys, "report", *paths, "--run", "no-such-run")
    assert code == cli.EXIT_UNREADABLE
    assert "'no-such-run'" in err and "first-run, second-run" in err
    assert "first-run, second-run" in out
    code, out, err = _main(capsys, "report", *paths, "--run", "no-such-run", "--json")
    payload = json.loads(out)
    assert code == payload["exit_code"] == cli.EXIT_UNREADABLE
    assert payload["runs"] == [] and payload["run_ids"] == ["first-run", "second-run"]
    assert "first-run, second-run" in err


def test_fail_on_alert_exits_6_when_a_reported_run_alerted(tmp_path: Path, capsys: Any) -> None:
    """--fail-on-alert exits 6 when a reported run raised an alert, in text and JSON, and 0 otherwise."""
    alerted = str(_metric_log(tmp_path, "alerted", alert_at=2))
    healthy = str(_metric_log(tmp_path, "healthy"))
    assert _main(capsys, "report", alerted, healthy)[0] == cli.EXIT_OK
    code, out, err = _main(capsys, "report", alerted, healthy, "--fail-on-alert")
    assert code == cli.EXIT_ALERT == 6
    assert "run alerted" in out and "alerted" in err and "healthy" not in err
    code, out, _ = _main(capsys, "report", alerted, healthy, "--fail-on-alert", "--json")
    payload = json.loads(out)
    assert code == payload["exit_code"] == cli.EXIT_ALERT and payload["alerted_runs"] == ["alerted"]
    assert _main(capsys, "report", alerted, healthy, "--fail-on-alert", "--run", "healthy")[0] == cli.EXIT_OK
    code, out, _ = _main(capsys, "report", healthy, "--fail-on-alert", "--json")
    assert code == json.loads(out)["exit_code"] == cli.EXIT_OK and json.loads(out)["alerted_runs"] == []


def test_fail_on_alert_counts_alerts_that_were_later_cleared(tmp_path: Path, capsys: Any) -> None:
    """An alert raised and later cleared under an alert policy still fails the job: the collapse happened."""
    path = _recovering_log(tmp_path)
    events = [r.event for r in read_log(path)]
    assert "training.alert.raised" in events and "training.alert.cleared" in events
    code, _, err = _main(capsys, "report", str(path), "--fail-on-alert")
    assert code == cli.EXIT_ALERT and "recovered" in err


def test_fail_on_alert_sees_a_raised_event_without_alert_records(tmp_path: Path, capsys: Any) -> None:
    """A training.alert.raised record alone (another writer's log) counts as an alert for --fail-on-alert."""
    import geno_lewm.training.alerting  # noqa: F401 - declares the alert-policy events

    log = get_logger("training", log_dir=tmp_path, run_id="raised-only")
    log.warning("training.alert.raised", source="s", criterion="var", value=0.1, threshold=0.5,
                direction="below", consecutive=1, step=7)  # fmt: skip
    log.close()
    assert _main(capsys, "report", str(log.path), "--fail-on-alert")[0] == cli.EXIT_ALERT


def test_an_alert_outranks_damaged_lines_but_not_an_unreadable_log(real_log: Path, tmp_path: Path, capsys: Any) -> None:
    """With --fail-on-alert an alerted run exits 6 even when a line is torn (a killed run's log is often torn),
    while a log that cannot be read at all still exits 3.
    """
    data = real_log.read_bytes()
    torn = real_log.with_name("torn.jsonl")
    torn.write_bytes(data + data.splitlines(keepends=True)[1][:25])
    assert _main(capsys, "report", str(torn))[0] == cli.EXIT_DAMAGED
    assert _main(capsys, "report", str(torn), "--fail-on-alert")[0] == cli.EXIT_ALERT
    missing = str(tmp_path / "missing.jsonl")
    assert _main(capsys, "report", str(torn), missing, "--fail-on-alert")[0] == cli.EXIT_UNREADABLE


def test_report_of_a_binary_file_says_it_is_not_a_text_log(tmp_path: Path, capsys: Any) -> None:
    """A binary file (NUL bytes, not UTF-8) is reported as not a text log and exits 3, never as a torn line."""
    binary = tmp_path / "weights.jsonl"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00\xff\xfe\x00")
    code, out, _ = _main(capsys, "report", str(binary))
    assert code == cli.EXIT_UNREADABLE
    assert "not a text log" in out and "torn" not in out
    code, out, _ = _main(capsys, "report", str(binary), "--json")
    (entry,) = json.loads(out)["logs"]
    assert code == cli.EXIT_UNREADABLE and entry["status"] == "unreadable" and "not a text log" in entry["error"]
    assert all(problem["kind"] != "torn" for problem in entry["problems"])


def test_report_reads_the_first_record_after_a_byte_order_mark(real_log: Path, capsys: Any) -> None:
    """A log saved with a UTF-8 byte order mark (as some Windows editors do) is read in full, first record included."""
    with_bom = real_log.with_name("bom.jsonl")
    with_bom.write_bytes(b"\xef\xbb\xbf" + real_log.read_bytes())
    code, out, _ = _main(capsys, "report", str(with_bom), "--json")
    payload = json.loads(out)
    assert code == cli.EXIT_OK and payload["logs"][0]["problems"] == []
    assert payload["logs"][0]["records"] == len(load_log(real_log).records)


def test_plot_draws_several_logs_and_directories_in_one_figure(tmp_path: Path, capsys: Any) -> None:
    """The plot command takes several logs and directories and draws every run into one PNG."""
    pytest.importorskip("matplotlib")
    first = _metric_log(tmp_path / "one", "run-one", alert_at=2)
    second = _metric_log(tmp_path / "two", "run-two")
    out = tmp_path / "both.png"
    code, stdout, err = _main(capsys, "plot", str(first.parent), str(second), "--out", str(out))
    assert code == cli.EXIT_OK, err
    assert str(out) in stdout and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_a_directory_with_one_log_draws_that_log(real_log: Path, tmp_path: Path, capsys: Any) -> None:
    """Plotting a directory holding one log writes the same PNG, byte for byte, as plotting the log itself."""
    pytest.importorskip("matplotlib")
    alone, through_dir = tmp_path / "alone.png", tmp_path / "dir.png"
    assert _main(capsys, "plot", str(real_log), "--out", str(alone))[0] == cli.EXIT_OK
    assert _main(capsys, "plot", str(real_log.parent), "--out", str(through_dir))[0] == cli.EXIT_OK
    assert alone.read_bytes() == through_dir.read_bytes()


def test_plot_labels_each_run_of_several_logs_apart(tmp_path: Path) -> None:
    """Every run of several logs gets its own legend entry and its own colour or line style."""
    pytest.importorskip("matplotlib")
    from geno_lewm._plot import draw_records

    run_ids = [f"run-{index:02d}" for index in range(11)]
    records = [record for run_id in run_ids for record in load_log(_metric_log(tmp_path, run_id)).records]
    figure = draw_records(records)
    (legend,) = [legend for part in figure.subfigs for legend in part.legends]
    labels = [text.get_text() for text in legend.get_texts()]
    assert [label for label in labels if label.startswith("run-")] == run_ids
    (ax,) = [ax for ax in figure.get_axes() if ax.get_visible()]
    styles = {(line.get_color(), line.get_linestyle()) for line in ax.get_lines() if line.get_marker() == "o"}
    assert len(styles) == len(run_ids)


def test_plot_of_an_unknown_run_names_the_runs(real_log: Path, tmp_path: Path, capsys: Any) -> None:
    """Plotting with --run naming no run of the logs exits 3, lists the runs there are, and writes nothing."""
    pytest.importorskip("matplotlib")
    code, _, err = _main(capsys, "plot", str(real_log), "--out", str(tmp_path / "x.png"), "--run", "nope")
    assert code == cli.EXIT_UNREADABLE and "'nope'" in err and "cli-run" in err
    assert not (tmp_path / "x.png").exists()
