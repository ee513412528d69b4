"""The structured JSON-lines logger: catalogue checks, strict JSON, durability, concurrency, manners."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from datetime import timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geno_lewm.errors import InputError
from geno_lewm.logs import AlertRecord, EventRecord, MetricRecord, RunEndRecord, RunStartRecord, load_log, read_log
from geno_lewm.metrics import MetricRegistry
from geno_lewm.observability import (
    LOG_DIR_ENV,
    MAX_LINE_BYTES,
    RUN_ID_ENV,
    SCHEMA_VERSION,
    FieldSpec,
    declare_event,
    get_logger,
)
from geno_lewm.training.collapse import METRIC_NAMES, CollapseMonitor, metric_name

ROOT = Path(__file__).resolve().parent.parent
POSIX_ONLY = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals and O_APPEND semantics")


def _python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that imports geno_lewm from this checkout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def _strict_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of ``path`` parsed as strict JSON (bare NaN/Infinity rejected)."""

    def reject(name: str) -> Any:
        raise AssertionError(f"non-strict JSON constant {name} in the log")

    return [json.loads(line, parse_constant=reject) for line in path.read_text(encoding="utf-8").splitlines()]


def _metric(log: Any, **overrides: Any) -> None:
    fields = {"name": "m", "value": 0.5, "unit": "1", "kind": "gauge", "step": 1, **overrides}
    log.info("training.metric", **fields)


# ---------------------------------------------------------------- round trip
def test_records_round_trip_field_by_field(tmp_path: Path) -> None:
    """What is logged comes back from read_log field by field, typed by event, in order."""
    log = get_logger("training", log_dir=tmp_path, run_id="round-trip", level="debug")  # the default is info
    metric = {
        "name": "geno_lewm.training.collapse.kl_reg",
        "value": 0.1 + 0.2,
        "unit": "nats",
        "kind": "gauge",
        "variant": "caller_supplied",
        "threshold": 10.0,
        "batch_size": 256,
        "dim": 1024,
        "dtype": "float32",
        "backend": "python",
        "device": "cpu",
        "compute_seconds": 1.25e-3,
    }
    alert = {"criterion": "kl_reg", "value": 12.5, "threshold": 10.0, "diagnosis": "encoder drift"}
    with log.run(config={"lr": 3e-4, "layers": [1, 2, 3], "name": "x"}, description="a run"):
        log.info("training.metric", step=500, **metric)
        log.warning("training.collapse.alert", step=500, **alert)
        log.debug("training.metric", **{**metric, "threshold": None})
    records = list(read_log(log.path, strict=True))
    assert [type(r) for r in records] == [RunStartRecord, MetricRecord, AlertRecord, MetricRecord, RunEndRecord]
    start, logged_metric, logged_alert, unstepped, end = records
    assert start.config == {"lr": 3e-4, "layers": [1, 2, 3], "name": "x"}
    assert start.description == "a run"
    assert start.python_version == ".".join(map(str, sys.version_info[:3]))
    for key, value in metric.items():
        assert getattr(logged_metric, key) == value, key
    for key, value in alert.items():
        assert getattr(logged_alert, key) == value, key
    assert (logged_metric.step, logged_alert.step, unstepped.step) == (500, 500, None)
    assert unstepped.threshold is None
    assert [r.level for r in records] == ["info", "info", "warning", "debug", "info"]
    assert end.status == "completed"
    assert end.duration_seconds is not None and end.duration_seconds >= 0


def test_every_record_carries_the_standard_fields(tmp_path: Path) -> None:
    """schema_version, a UTC timestamp, level, event, component, run_id and pid are on every line;
    step only where known.
    """
    log = get_logger("eval", log_dir=tmp_path, run_id="standard")
    _metric(log, step=7)
    _metric(log, step=None)
    lines = _strict_lines(log.path)
    for line in lines:
        assert list(line)[:7] == ["schema_version", "timestamp", "level", "event", "component", "run_id", "pid"]
        assert line["schema_version"] == SCHEMA_VERSION
        assert line["timestamp"].endswith("Z")
        assert (line["component"], line["run_id"], line["pid"]) == ("eval", "standard", os.getpid())
    assert lines[0]["step"] == 7
    assert "step" not in lines[1]
    for record in read_log(log.path):
        assert record.timestamp.utcoffset() == timezone.utc.utcoffset(None)


def test_collapse_monitor_logs_every_metric_with_its_context(tmp_path: Path) -> None:
    """CollapseMonitor.observe(..., logger=get_logger(...)) writes one metric record per metric,
    with shape, dtype, backend, variant and threshold, and one alert record per alert.
    """
    monitor = CollapseMonitor(log_every_steps=10, backend="python", registry=MetricRegistry())
    spread = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]
    collapsed = [[0.01 * x for x in row] for row in spread]
    log = get_logger("training", log_dir=tmp_path, run_id="monitor")
    first = monitor.observe(spread, spread, kl_reg=0.5, step=10, logger=log)
    second = monitor.observe(collapsed, spread, kl_reg=11.0, step=20, logger=log)
    assert first is not None and second is not None and second.tripped
    records = list(read_log(log.path, strict=True))
    metrics = [r for r in records if isinstance(r, MetricRecord)]
    logged_alerts = [r for r in records if isinstance(r, AlertRecord)]
    assert [r.name for r in metrics] == [metric_name(f) for f in METRIC_NAMES] * 2
    for check, chunk in ((first, metrics[:7]), (second, metrics[7:])):
        assert [r.value for r in chunk] == list(check.metrics.as_dict().values())
        assert {(r.step, r.batch_size, r.dim, r.backend, r.dtype) for r in chunk} == {
            (check.step, 4, 2, "python", "float64")
        }
    kl_record = metrics[-1]
    assert (kl_record.threshold, kl_record.variant, kl_record.unit) == (10.0, "caller_supplied", "nats")
    assert [(a.criterion, a.value, a.threshold, a.step) for a in logged_alerts] == [
        (a.criterion, a.value, a.threshold, 20) for a in second.alerts
    ]


# ---------------------------------------------------------------- strict JSON
def test_nan_and_infinities_are_null_with_a_non_finite_entry(tmp_path: Path) -> None:
    """Non-finite numbers are written as null and named in non_finite, never as bare NaN/Infinity,
    and read back as the same non-finite floats, nested ones included.
    """
    log = get_logger("training", log_dir=tmp_path, run_id="non-finite")
    _metric(log, value=math.nan, threshold=math.inf)
    log.warning("training.collapse.alert", criterion="kl_reg", value=-math.inf, threshold=10.0)
    log.info("run.start", config={"a/b": [1.0, math.nan], "c~": {"d": math.inf}})
    raw = _strict_lines(log.path)
    assert (raw[0]["value"], raw[0]["threshold"]) == (None, None)
    assert raw[0]["non_finite"] == {"value": "nan", "threshold": "inf"}
    assert raw[1]["non_finite"] == {"value": "-inf"}
    assert raw[2]["config"] == {"a/b": [1.0, None], "c~": {"d": None}}
    assert raw[2]["non_finite"] == {"config/a~1b/1": "nan", "config/c~0/d": "inf"}
    metric, alert, start = read_log(log.path, strict=True)
    assert math.isnan(metric.value) and metric.threshold == math.inf
    assert alert.value == -math.inf
    assert start.config is not None
    assert start.config["a/b"][0] == 1.0 and math.isnan(start.config["a/b"][1])
    assert start.config["c~"] == {"d": math.inf}


def test_numpy_scalars_are_written_as_numbers(tmp_path: Path) -> None:
    """NumPy scalars and arrays become JSON numbers and lists, not their repr."""
    np = pytest.importorskip("numpy")
    log = get_logger("training", log_dir=tmp_path, run_id="numpy")
    _metric(log, value=np.float32(0.25), step=np.int64(3), batch_size=np.int32(8), threshold=np.float64("nan"))
    log.info("run.start", config={"eigenvalues": np.array([1.0, 0.5]), "flag": np.bool_(True)})
    metric, start = _strict_lines(log.path)
    assert (metric["value"], metric["step"], metric["batch_size"], metric["threshold"]) == (0.25, 3, 8, None)
    assert metric["non_finite"] == {"threshold": "nan"}
    assert start["config"] == {"eigenvalues": [1.0, 0.5], "flag": True}


def test_torch_scalars_are_written_as_numbers(tmp_path: Path) -> None:
    """0-d torch tensors (including ones needing grad) become JSON numbers, not 'tensor(...)'."""
    torch = pytest.importorskip("torch")
    log = get_logger("training", log_dir=tmp_path, run_id="torch")
    value = torch.tensor(0.75, requires_grad=True) * 1.0
    _metric(log, value=value, step=torch.tensor(5), threshold=torch.tensor(float("-inf")))
    (metric,) = _strict_lines(log.path)
    assert (metric["value"], metric["step"], metric["threshold"]) == (0.75, 5, None)
    assert metric["non_finite"] == {"threshold": "-inf"}
    assert "tensor" not in log.path.read_text(encoding="utf-8")


def test_float_values_round_trip_exactly(tmp_path: Path) -> None:
    """Any float, finite or not, and any text come back exactly (property test)."""
    hypothesis = pytest.importorskip("hypothesis")
    strategies = pytest.importorskip("hypothesis.strategies")
    log = get_logger("training", log_dir=tmp_path, run_id="property")
    written: list[tuple[float, str]] = []

    @hypothesis.settings(max_examples=60, deadline=None)
    @hypothesis.given(value=strategies.floats(allow_nan=True, allow_infinity=True), name=strategies.text(max_size=20))
    def write(value: float, name: str) -> None:
        _metric(log, value=value, name=name, step=len(written))
        written.append((value, name))

    write()
    records = list(read_log(log.path, strict=True))
    assert len(records) == len(written)
    for record, (value, name) in zip(records, written):
        assert isinstance(record, MetricRecord)
        assert record.name == name
        assert (math.isnan(record.value) and math.isnan(value)) or record.value == value


# ---------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    ("event", "fields", "words"),
    [
        ("training.metrc", {}, ["unknown event 'training.metrc'", "did you mean 'training.metric'"]),
        ("training.metric", {"value": "0.5"}, ["'value'", "real number", "'0.5'"]),
        ("training.metric", {"value": True}, ["'value'", "real number"]),
        ("training.metric", {"name": 3}, ["'name'", "a string"]),
        ("training.metric", {"kind": "gauges"}, ["'kind'", "'gauge'"]),
        ("training.metric", {"batch_size": 2.5}, ["'batch_size'", "an integer"]),
        ("training.metric", {"unit": None}, ["'unit'", "not None"]),
        ("training.metric", {"valeu": 1.0}, ["no field 'valeu'", "did you mean 'value'"]),
        ("training.metric", {"timestamp": "now"}, ["no field 'timestamp'"]),
        ("training.metric", {"step": -1}, ["'step'", "non-negative integer"]),
        ("training.metric", {"step": 1.0}, ["'step'", "non-negative integer"]),
        ("training.collapse.alert", {"criterion": "kl_reg", "value": 1.0}, ["needs field 'threshold'"]),
        ("run.end", {"status": "done"}, ["'status'", "'completed'"]),
        ("run.start", {"config": [1, 2]}, ["'config'", "a mapping"]),
        ("run.start", {"config": {"a": object()}}, ["'config/a'", "JSON data"]),
        ("run.start", {"config": {1: "a"}}, ["string key"]),
        ("run.start", {"description": "\ud800"}, ["'description'", "valid Unicode"]),
    ],
)
def test_bad_events_are_refused_and_nothing_is_written(
    tmp_path: Path, event: str, fields: dict[str, Any], words: list[str]
) -> None:
    """An unknown event or a field of the wrong type raises InputError naming it; the log is unchanged."""
    log = get_logger("training", log_dir=tmp_path, run_id="refusals")
    _metric(log)
    before = log.path.read_bytes()
    if event == "training.metric":
        fields = {"name": "m", "value": 0.5, "unit": "1", "kind": "gauge", **fields}
    with pytest.raises(InputError) as caught:
        log.info(event, **fields)
    for word in words:
        assert word in str(caught.value)
    assert log.path.read_bytes() == before


def test_oversized_record_is_refused(tmp_path: Path) -> None:
    """A record over MAX_LINE_BYTES raises InputError and writes nothing."""
    log = get_logger("training", log_dir=tmp_path, run_id="oversized")
    with pytest.raises(InputError, match="byte limit"):
        log.info("run.start", description="x" * MAX_LINE_BYTES)
    assert not log.path.exists()


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"component": ""}, "component"),
        ({"component": "a/b"}, "component"),
        ({"run_id": "../escape"}, "run_id"),
        ({"run_id": ""}, "run_id"),
        ({"mirror": "stderr"}, "mirror"),
        ({"fsync": 1}, "fsync"),
        ({"log_dir": 3}, "log_dir"),
    ],
)
def test_bad_logger_arguments_are_refused(tmp_path: Path, arguments: dict[str, Any], field: str) -> None:
    """Malformed component, run id, mirror, fsync or log_dir raise InputError naming the argument."""
    call = {"component": "training", "log_dir": tmp_path, "run_id": "ok", **arguments}
    component = call.pop("component")
    with pytest.raises(InputError) as caught:
        get_logger(component, **call)
    assert caught.value.details["field"] == field


def test_log_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    """A log_dir naming an existing file is refused at get_logger, before any record."""
    target = tmp_path / "file"
    target.write_text("x", encoding="utf-8")
    with pytest.raises(InputError, match="must be a directory"):
        get_logger("training", log_dir=target, run_id="r")


def test_declared_events_are_logged_and_read_back_generically(tmp_path: Path) -> None:
    """declare_event extends the catalogue; its records are checked on write and read as EventRecord."""
    declare_event(
        "test.observability.spectrum",
        summary="Eigenvalues of a batch.",
        fields={"eigenvalues": FieldSpec("array", required=True), "rank": FieldSpec("integer")},
    )
    declare_event(  # the same declaration again is harmless
        "test.observability.spectrum",
        summary="Eigenvalues of a batch.",
        fields={"eigenvalues": FieldSpec("array", required=True), "rank": FieldSpec("integer")},
    )
    with pytest.raises(InputError, match="already declared differently"):
        declare_event("test.observability.spectrum", summary="Other.", fields={})
    with pytest.raises(InputError, match="standard field"):
        declare_event("test.observability.bad", summary="Bad.", fields={"step": FieldSpec("integer")})
    log = get_logger("training", log_dir=tmp_path, run_id="declared")
    log.info("test.observability.spectrum", eigenvalues=[2.0, math.nan], rank=1, step=3)
    with pytest.raises(InputError, match="'rank'"):
        log.info("test.observability.spectrum", eigenvalues=[], rank="one")
    (record,) = read_log(log.path, strict=True)
    assert isinstance(record, EventRecord)
    assert record.step == 3 and record.fields["rank"] == 1
    assert record.fields["eigenvalues"][0] == 2.0 and math.isnan(record.fields["eigenvalues"][1])


# ---------------------------------------------------------------- configuration
def test_log_dir_comes_from_argument_then_environment_then_the_family_default(tmp_path: Path, monkeypatch: Any) -> None:
    """log_dir: the argument, else GENO_LEWM_LOG_DIR, else ~/.geno-lewm/logs (HOME patched); file <run_id>.jsonl."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(LOG_DIR_ENV, raising=False)
    assert get_logger("t", run_id="r1").path == tmp_path / "home" / ".geno-lewm" / "logs" / "r1.jsonl"
    assert not (tmp_path / "logs").exists()
    monkeypatch.setenv(LOG_DIR_ENV, str(tmp_path / "from-env"))
    assert get_logger("t", run_id="r1").path == tmp_path / "from-env" / "r1.jsonl"
    assert get_logger("t", run_id="r1", log_dir=tmp_path / "arg").path == tmp_path / "arg" / "r1.jsonl"


def test_run_id_is_shared_by_the_process_unless_given(tmp_path: Path, monkeypatch: Any) -> None:
    """Without a run id, every logger of the process writes to one fresh run file (or GENO_LEWM_RUN_ID's)."""
    monkeypatch.delenv(RUN_ID_ENV, raising=False)
    first = get_logger("training", log_dir=tmp_path)
    second = get_logger("evaluation", log_dir=tmp_path)
    assert first.path == second.path and first.run_id == second.run_id
    assert get_logger("training", log_dir=tmp_path) is first
    monkeypatch.setenv(RUN_ID_ENV, "shared-by-ranks")
    assert get_logger("training", log_dir=tmp_path).path.name == "shared-by-ranks.jsonl"


def test_mirror_writes_a_readable_line_per_record(tmp_path: Path) -> None:
    """mirror=stream writes each record as one human-readable line besides the JSON file."""
    stream = io.StringIO()
    log = get_logger("training", log_dir=tmp_path, run_id="mirror", mirror=stream, fsync=True)
    _metric(log, value=math.nan, step=42)
    line = stream.getvalue()
    assert line.count("\n") == 1
    for word in ("info", "training.metric", "step=42", "name=m", "value=nan"):
        assert word in line
    assert len(_strict_lines(log.path)) == 1


def test_run_context_records_a_failure(tmp_path: Path) -> None:
    """An exception inside log.run() ends the run with status failed and the error, and propagates."""
    log = get_logger("training", log_dir=tmp_path, run_id="failed")
    with pytest.raises(RuntimeError), log.run():
        raise RuntimeError("diverged")
    start, end = read_log(log.path, strict=True)
    assert isinstance(start, RunStartRecord) and isinstance(end, RunEndRecord)
    assert (end.status, end.error, end.level) == ("failed", "RuntimeError: diverged", "error")


def test_close_then_log_again_reopens_the_file(tmp_path: Path) -> None:
    """close() releases the file; a later record reopens it and appends."""
    log = get_logger("training", log_dir=tmp_path, run_id="reopen")
    _metric(log, step=1)
    log.close()
    _metric(log, step=2)
    assert [r.step for r in read_log(log.path, strict=True)] == [1, 2]


# ---------------------------------------------------------------- durability
_OBSERVE_THEN_KILL = """
    import os, signal, sys
    from geno_lewm.metrics import MetricRegistry
    from geno_lewm.observability import get_logger
    from geno_lewm.training.collapse import CollapseMonitor

    log = get_logger("training", log_dir=sys.argv[1], run_id="killed")
    monitor = CollapseMonitor(log_every_steps=1, backend="python", registry=MetricRegistry())
    rows = [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [3.0, 1.0, 0.0]]
    for step in range(1, 4):
        monitor.observe(rows, rows, kl_reg=0.1, step=step, logger=log)
    shrunk = [[0.001 * x for x in row] for row in rows]
    check = monitor.observe(shrunk, rows, kl_reg=20.0, step=4, logger=log)
    print(len(check.alerts), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


@POSIX_ONLY
def test_sigkill_right_after_observe_loses_nothing(tmp_path: Path) -> None:
    """A process killed with SIGKILL right after observe returns leaves a complete, parseable log."""
    result = _python(_OBSERVE_THEN_KILL, str(tmp_path))
    assert result.returncode == -signal.SIGKILL, result.stderr
    alert_count = int(result.stdout)
    loaded = load_log(tmp_path / "killed.jsonl")
    assert loaded.problems == ()
    metrics = [r for r in loaded.records if isinstance(r, MetricRecord)]
    assert len(metrics) == 4 * len(METRIC_NAMES)
    assert [r.step for r in metrics[-len(METRIC_NAMES) :]] == [4] * len(METRIC_NAMES)
    assert alert_count == 3
    assert [r.criterion for r in loaded.records if isinstance(r, AlertRecord)] == [
        "pred_var_per_dim",
        "pairwise_pred_dist_mean",
        "kl_reg",
    ]


_WRITER = """
    import sys, time
    from geno_lewm.observability import get_logger

    log_dir, tag = sys.argv[1], sys.argv[2]
    count, padding, start = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    log = get_logger("writer-" + tag, log_dir=log_dir, run_id="shared")
    while time.time() < start:
        time.sleep(0.001)
    for i in range(count):
        log.info("run.start", description=tag * padding, config={"i": i})
"""


def _write_concurrently(tmp_path: Path, count: int, padding: int) -> list[dict[str, Any]]:
    import time

    start = str(time.time() + 1.5)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_WRITER), str(tmp_path), tag, str(count), str(padding), start],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    for writer in writers:
        _, stderr = writer.communicate(timeout=120)
        assert writer.returncode == 0, stderr
    return _strict_lines(tmp_path / "shared.jsonl")


@POSIX_ONLY
def test_two_processes_appending_never_interleave(tmp_path: Path) -> None:
    """Two processes writing 1,000 records each into one file leave 2,000 intact lines, each
    process's records complete and in order.
    """
    lines = _write_concurrently(tmp_path, count=1000, padding=20)
    assert len(lines) == 2000
    for tag in ("a", "b"):
        mine = [line for line in lines if line["component"] == f"writer-{tag}"]
        assert [line["config"]["i"] for line in mine] == list(range(1000))
        assert all(line["description"] == tag * 20 for line in mine)
    assert len(list(read_log(tmp_path / "shared.jsonl", strict=True))) == 2000


@POSIX_ONLY
def test_large_records_from_two_processes_stay_whole(tmp_path: Path) -> None:
    """Records far above PIPE_BUF (256 KiB each) are still single writes that never interleave."""
    lines = _write_concurrently(tmp_path, count=40, padding=256 * 1024)
    assert len(lines) == 80
    for tag in ("a", "b"):
        mine = [line for line in lines if line["component"] == f"writer-{tag}"]
        assert [line["config"]["i"] for line in mine] == list(range(40))
        assert all(line["description"] == tag * 256 * 1024 for line in mine)


_FAILED_WRITE = """
    import resource, signal, sys
    from geno_lewm.observability import get_logger

    log = get_logger("training", log_dir=sys.argv[1], run_id="full-disk")
    log.info("run.start", description="first")
    size = log.path.stat().st_size
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, hard))
    try:
        log.info("run.start", description="x" * 500)
    except OSError as error:
        print("refused:", error.errno)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    log.info("run.start", description="after")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs RLIMIT_FSIZE partial writes")
def test_a_write_that_fails_midway_leaves_the_next_record_intact(tmp_path: Path) -> None:
    """When the file system refuses a write part-way, the error reaches the caller, the fragment
    stays on a line of its own (reported by the reader) and the next record is whole.
    """
    result = _python(_FAILED_WRITE, str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("refused:")
    loaded = load_log(tmp_path / "full-disk.jsonl")
    assert [r.description for r in loaded.records if isinstance(r, RunStartRecord)] == ["first", "after"]
    assert [(p.line, p.kind) for p in loaded.problems] == [(2, "json")]


# ---------------------------------------------------------------- manners
_USER_CONFIGURATION = """
    import io, json, logging, sys
    import structlog

    user_stream = io.StringIO()
    logging.basicConfig(stream=user_stream, level=logging.WARNING, format="%(name)s|%(message)s")
    captured = []
    def capture(logger, method, event_dict):
        captured.append(dict(event_dict))
        raise structlog.DropEvent
    structlog.configure(processors=[capture], cache_logger_on_first_use=False)
    before = (structlog.get_config(), logging.root.handlers[:], logging.root.level,
              sorted(logging.Logger.manager.loggerDict))

    from geno_lewm.observability import get_logger
    log = get_logger("training", log_dir=sys.argv[1], run_id="manners", mirror=True)
    log.info("training.metric", name="m", value=1.0, unit="1", kind="gauge", step=1)
    log.warning("training.collapse.alert", criterion="kl_reg", value=11.0, threshold=10.0)
    after = (structlog.get_config(), logging.root.handlers[:], logging.root.level,
             sorted(logging.Logger.manager.loggerDict))

    structlog.get_logger().warning("user.event", answer=42)
    logging.getLogger("user").warning("user message")
    print(json.dumps({
        "unchanged": before == after,
        "captured": [e["event"] for e in captured],
        "user_log": user_stream.getvalue(),
    }))
"""


def test_user_logging_and_structlog_configuration_are_untouched(tmp_path: Path) -> None:
    """The logger neither changes nor goes through the application's logging/structlog setup."""
    result = _python(_USER_CONFIGURATION, str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["unchanged"] is True
    assert report["captured"] == ["user.event"]
    assert report["user_log"] == "user|user message\n"
    assert [line["event"] for line in _strict_lines(tmp_path / "manners.jsonl")] == [
        "training.metric",
        "training.collapse.alert",
    ]
    assert "training.metric" in result.stderr  # the mirror, on standard error only


def test_core_imports_stay_free_of_structlog_and_pydantic() -> None:
    """Importing geno_lewm and the collapse core imports neither structlog nor pydantic; the reader
    imports pydantic but not structlog; the logger adds structlog; none imports numpy or torch.
    """
    result = _python(
        """
        import sys
        def loaded():
            return ",".join(m for m in ("structlog", "pydantic", "numpy", "torch") if m in sys.modules) or "-"
        import geno_lewm, geno_lewm.training.collapse
        core = loaded()
        import geno_lewm.logs
        reader = loaded()
        import geno_lewm.observability
        print(core, reader, loaded())
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["-", "pydantic", "structlog,pydantic"]


# ------------------------------------------------------------------ run ids and paths
def _files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


@settings(max_examples=200, deadline=None)
@given(run_id=st.one_of(st.text(max_size=140), st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_./\\-]{0,140}", fullmatch=True)))
def test_no_run_id_writes_outside_the_log_directory(run_id: str) -> None:
    """Any run id, given directly or through GENO_LEWM_RUN_ID, is refused with InputError or names a file directly
    inside the log directory; nothing is written anywhere else.
    """
    import tempfile

    with tempfile.TemporaryDirectory() as root_name:
        root = Path(root_name)
        log_dir = root / "deep" / "logs"
        for use_env in (False, True):
            saved = os.environ.get(RUN_ID_ENV)
            try:
                if use_env:
                    os.environ[RUN_ID_ENV] = run_id
                log = get_logger("training", log_dir=log_dir, run_id=None if use_env else run_id)
            except InputError as error:
                assert len(str(error)) < 400
                continue
            except ValueError:  # the environment cannot hold this string (a NUL)
                assert use_env and "\x00" in run_id
                continue
            finally:
                if saved is None:
                    os.environ.pop(RUN_ID_ENV, None)
                else:
                    os.environ[RUN_ID_ENV] = saved
            log.info("run.end", status="completed")
            assert log.run_id == run_id or (use_env and not run_id)  # an empty variable means "not set"
            assert log.path.parent == log_dir and log.path.name == f"{log.run_id}.jsonl"
            assert _files_under(root) <= {log_dir / f"{r}.jsonl" for r in (run_id, log.run_id)}


def test_a_long_bad_run_id_is_named_and_shortened() -> None:
    """A 10 MB run id is refused naming the argument, and the message quotes only its beginning."""
    with pytest.raises(InputError, match=r"'run_id' must be .*\(10,000,00\d characters\)") as caught:
        get_logger("training", log_dir="unused", run_id="../" + "x" * 10_000_000)
    assert len(str(caught.value)) < 400
