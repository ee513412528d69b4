"""Reading logs back: typed records, damaged lines reported with their number, schema, helpers."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geno_lewm.errors import InputError
from geno_lewm.logs import (
    SCHEMA_VERSION,
    AlertRecord,
    CorruptLogError,
    EventRecord,
    LineProblem,
    LogLineWarning,
    LogVersionWarning,
    alerts,
    load_log,
    metric_series,
    parse_record,
    read_log,
    record_json_schema,
    summarize,
    to_dataframe,
)
from geno_lewm.observability import FieldSpec, declare_event, get_logger

VALUES = [0.9, 0.4, math.nan, 0.1, 0.7]
STEPS = [100, 200, 300, 400, 500]


def _write_run(log_dir: Path, run_id: str = "run-a", values: list[float] = VALUES) -> Path:
    """A small real log: two metrics over five steps, with an alert wherever 'var' < 0.5."""
    log = get_logger("training", log_dir=log_dir, run_id=run_id)
    with log.run(config={"steps": 500}):
        for step, value in zip(STEPS, values):
            log.info("training.metric", name="x.var", value=value, unit="latent^2", kind="gauge", step=step,
                     threshold=0.5)  # fmt: skip
            log.info("training.metric", name="x.cos", value=1.0 - value, unit="1", kind="gauge", step=step)
            if value < 0.5:
                log.warning("training.collapse.alert", criterion="var", value=value, threshold=0.5, step=step)
    return log.path


def _torn_copy(path: Path, keep: int) -> Path:
    """The log with its last record cut after ``keep`` bytes, as a writer killed mid-write leaves it."""
    lines = path.read_bytes().splitlines(keepends=True)
    torn = path.with_name("torn.jsonl")
    torn.write_bytes(b"".join(lines[:-1]) + lines[-1][:keep])
    return torn


# ---------------------------------------------------------------- reading
def test_read_log_yields_typed_records_in_order(tmp_path: Path) -> None:
    """Records come back in file order, each as the model of its event."""
    path = _write_run(tmp_path)
    kinds = [type(r).__name__ for r in read_log(path, strict=True)]
    assert kinds[0] == "RunStartRecord" and kinds[-1] == "RunEndRecord"
    assert kinds.count("MetricRecord") == 10 and kinds.count("AlertRecord") == 2
    assert len(kinds) == len(path.read_text(encoding="utf-8").splitlines())


def test_torn_last_line_is_reported_with_its_number(tmp_path: Path) -> None:
    """A last line cut mid-record is a LogLineWarning naming its line (default), a CorruptLogError
    (strict), or a LineProblem in the given list; every record before it is read.
    """
    path = _write_run(tmp_path)
    total = len(path.read_bytes().splitlines())
    torn = _torn_copy(path, keep=37)
    with pytest.warns(LogLineWarning, match=rf"torn\.jsonl:{total}: torn last line"):
        records = list(read_log(torn))
    assert len(records) == total - 1
    with pytest.raises(CorruptLogError) as caught:
        list(read_log(torn, strict=True))
    assert caught.value.problem.line == total and caught.value.problem.kind == "torn"
    problems: list[LineProblem] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(list(read_log(torn, problems=problems))) == total - 1
    assert [(p.line, p.kind) for p in problems] == [(total, "torn")]


def test_last_record_missing_only_its_newline_is_kept(tmp_path: Path) -> None:
    """A final record complete but for its line end is read, not reported (nothing was lost)."""
    path = _write_run(tmp_path)
    lines = path.read_bytes().splitlines()
    torn = _torn_copy(path, keep=len(lines[-1]))
    loaded = load_log(torn)
    assert loaded.problems == ()
    assert len(loaded.records) == len(lines)


@pytest.mark.parametrize(
    ("garbage", "kind", "words"),
    [
        (b"\xff\xfe not text", "encoding", "not UTF-8"),
        (b"this is not json", "json", "not valid strict JSON"),
        (b'{"schema_version": 1, "value": NaN}', "record", "a record without an 'event' field"),
        (b'{"schema_version": 1, "value": nan}', "json", "not valid strict JSON"),
        (b"[1, 2, 3]", "json", "not an object"),
        (b'{"schema_version": 1, "event": "training.metric"}', "record", "'training.metric' record"),
        (b"\x00\x00\x00\x00", "encoding", "not text: 4 NUL bytes"),
    ],
)
def test_corrupt_middle_line_is_reported_and_reading_goes_on(
    tmp_path: Path, garbage: bytes, kind: str, words: str
) -> None:
    """A corrupt line in the middle is reported with its number and kind; the lines after it are read."""
    path = _write_run(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_bytes(b"".join(lines[:3]) + garbage + b"\n" + b"".join(lines[3:]))
    loaded = load_log(damaged)
    assert len(loaded.records) == len(lines)
    ((problem),) = loaded.problems
    assert (problem.line, problem.kind) == (4, kind)
    assert words in problem.message


def test_record_with_a_bad_field_names_it(tmp_path: Path) -> None:
    """A record whose value is null without a non_finite entry, or whose non_finite entry names a
    non-null value, is reported, not read as a number.
    """
    path = _write_run(tmp_path)
    line = json.loads(path.read_text(encoding="utf-8").splitlines()[1])
    null_value = {**line, "value": None}
    wrong_flag = {**line, "non_finite": {"value": "nan"}}
    damaged = tmp_path / "bad-field.jsonl"
    damaged.write_text(json.dumps(null_value) + "\n" + json.dumps(wrong_flag) + "\n", encoding="utf-8")
    first, second = load_log(damaged).problems
    assert "value" in first.message and "valid number" in first.message
    assert "non_finite names 'value'" in second.message


def test_crlf_and_blank_lines_are_read(tmp_path: Path) -> None:
    """Lines ending in CRLF (a log copied through Windows) and blank lines do not break reading."""
    path = _write_run(tmp_path)
    lines = path.read_bytes().splitlines()
    copy = tmp_path / "crlf.jsonl"
    copy.write_bytes(b"\r\n".join(lines) + b"\r\n\r\n")
    loaded = load_log(copy)
    assert loaded.problems == () and len(loaded.records) == len(lines)


def test_missing_log_raises_input_error_at_once(tmp_path: Path) -> None:
    """read_log on a missing file raises InputError naming the path when called, not when iterated."""
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(InputError, match=r"nope\.jsonl"):
        read_log(missing)
    with pytest.raises(InputError, match="must be a path"):
        load_log(3)  # type: ignore[arg-type]


def test_unknown_events_and_newer_versions_fall_back_to_event_records(tmp_path: Path) -> None:
    """An event this reader does not know, or a record of a newer format, is read as EventRecord
    with its fields (a newer format also warns once) instead of failing.
    """
    base = {"timestamp": "2025-01-01T00:00:00Z", "level": "info", "component": "c", "run_id": "r"}
    lines = [
        {**base, "schema_version": SCHEMA_VERSION, "event": "future.thing", "weight": 2, "step": 3},
        {**base, "schema_version": SCHEMA_VERSION + 1, "event": "training.metric", "renamed": 1.0},
        {**base, "schema_version": SCHEMA_VERSION + 1, "event": "training.metric", "renamed": 2.0},
    ]
    path = tmp_path / "future.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    with pytest.warns(LogVersionWarning) as caught:
        records = list(read_log(path, strict=True))
    assert len([w for w in caught if issubclass(w.category, LogVersionWarning)]) == 1
    assert all(isinstance(r, EventRecord) for r in records)
    assert records[0].fields == {"weight": 2} and records[0].step == 3
    assert [r.fields["renamed"] for r in records[1:]] == [1.0, 2.0]


def test_parse_record_reads_one_line() -> None:
    """parse_record types a single line and explains why a bad one is not a record."""
    line = (
        '{"schema_version":1,"timestamp":"2025-01-01T00:00:00.5Z","level":"warning",'
        '"event":"training.collapse.alert","component":"t","run_id":"r","step":9,'
        '"criterion":"kl_reg","value":null,"threshold":10.0,"non_finite":{"value":"inf"}}\n'
    )
    record = parse_record(line)
    assert isinstance(record, AlertRecord)
    assert (record.step, record.value, record.threshold) == (9, math.inf, 10.0)
    with pytest.raises(InputError, match="not a log record"):
        parse_record('{"event": "run.end"}')


# ---------------------------------------------------------------- schema
def test_json_schema_accepts_real_records_and_rejects_broken_ones(tmp_path: Path) -> None:
    """The exported JSON Schema is valid draft 2020-12, accepts every line the logger writes and
    rejects a metric record without its name.
    """
    jsonschema = pytest.importorskip("jsonschema")
    schema = record_json_schema()
    validator = jsonschema.Draft202012Validator(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    path = _write_run(tmp_path)
    log = get_logger("training", log_dir=tmp_path, run_id="run-a")
    log.info("run.start", config={"nested": [math.inf]}, description="x")
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for line in lines:
        validator.validate(line)
    metric = next(line for line in lines if line["event"] == "training.metric")
    assert not validator.is_valid({k: v for k, v in metric.items() if k != "name"})
    assert not validator.is_valid({**metric, "step": -1})
    assert validator.is_valid({**metric, "event": "someone.elses", "anything": [1]})


# ---------------------------------------------------------------- helpers
def test_metric_series_and_alerts_match_what_was_logged(tmp_path: Path) -> None:
    """metric_series gives step -> value per metric (NaN kept) and alerts every alert, in order."""
    path = _write_run(tmp_path)
    records = list(read_log(path))
    series = metric_series(records)
    assert list(series) == ["x.var", "x.cos"]
    var = series["x.var"]
    assert var.steps == tuple(STEPS) and var.unit == "latent^2" and var.thresholds == (0.5,) * 5
    assert [v for v in var.values if not math.isnan(v)] == [v for v in VALUES if not math.isnan(v)]
    assert math.isnan(var.as_dict()[300])
    cos = series["x.cos"].as_dict()
    assert {s: v for s, v in cos.items() if s != 300} == {s: 1.0 - v for s, v in zip(STEPS, VALUES) if s != 300}
    found = alerts(records)
    assert [(a.step, a.criterion, a.value, a.threshold) for a in found] == [
        (s, "var", v, 0.5) for s, v in zip(STEPS, VALUES) if v < 0.5
    ]


def test_helpers_refuse_to_mix_runs(tmp_path: Path) -> None:
    """metric_series over several runs needs run_id: mixing two runs in one series would be wrong."""
    first = _write_run(tmp_path, "run-a")
    second = _write_run(tmp_path, "run-b", values=[0.3] * 5)
    records = list(read_log(first)) + list(read_log(second))
    with pytest.raises(InputError, match="2 runs"):
        metric_series(records)
    assert metric_series(records, run_id="run-b")["x.var"].values == (0.3,) * 5
    assert {a.run_id for a in alerts(records, run_id="run-b")} == {"run-b"}


def test_to_dataframe_builds_a_long_table_or_names_pandas(tmp_path: Path) -> None:
    """to_dataframe gives one row per metric record with pandas installed, else an ImportError naming pandas."""
    records = list(read_log(_write_run(tmp_path)))
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install pandas"):
            to_dataframe(records)
        return
    frame = to_dataframe(records)
    assert list(frame.columns) == ["run_id", "step", "name", "value", "unit", "threshold", "timestamp"]
    assert len(frame) == 10


def test_summary_gives_first_last_min_max_with_steps(tmp_path: Path) -> None:
    """summarize: per metric the first, last, min and max (NaN left out) with their steps, and the alerts."""
    (run,) = summarize([load_log(_write_run(tmp_path))])
    var = run.metrics["x.var"]
    finite = [(s, v) for s, v in zip(STEPS, VALUES) if not math.isnan(v)]
    assert (var.first.step, var.first.value) == (STEPS[0], VALUES[0])
    assert (var.last.step, var.last.value) == (STEPS[-1], VALUES[-1])
    assert var.min is not None and var.max is not None
    assert (var.min.step, var.min.value) == min(finite, key=lambda p: p[1])
    assert (var.max.step, var.max.value) == max(finite, key=lambda p: p[1])
    assert (var.count, var.non_finite) == (5, 1)
    assert (run.first_step, run.last_step, run.status, run.components) == (100, 500, "completed", ("training",))
    assert [a.step for a in run.alerts] == [s for s, v in zip(STEPS, VALUES) if v < 0.5]


def test_nan_metric_summary_has_no_extremes(tmp_path: Path) -> None:
    """A metric whose every value is NaN has first/last but no min or max."""
    (run,) = summarize([load_log(_write_run(tmp_path, values=[math.nan] * 5))])
    var = run.metrics["x.var"]
    assert var.min is None and var.max is None and var.non_finite == 5
    assert math.isnan(var.first.value) and math.isnan(var.last.value)


# ---------------------------------------------------------------- hostile lines
def _with_line(path: Path, line: bytes, after: int) -> Path:
    """A copy of the log with ``line`` inserted after its first ``after`` lines."""
    lines = path.read_bytes().splitlines(keepends=True)
    copy = path.with_name("hostile.jsonl")
    copy.write_bytes(b"".join(lines[:after]) + line + b"\n" + b"".join(lines[after:]))
    return copy


def test_a_deeply_nested_line_is_a_line_problem_and_the_rest_is_read(tmp_path: Path) -> None:
    """A line of thousands of nested brackets is reported like any damaged line; the records after it come back."""
    path = _write_run(tmp_path)
    intact = load_log(path).records
    hostile = _with_line(path, b"[" * 5000 + b"]" * 5000, after=3)
    loaded = load_log(hostile)
    assert loaded.records == intact
    assert [(p.line, p.kind) for p in loaded.problems] == [(4, "json")]
    assert "nested 5000 deep" in loaded.problems[0].message
    problems: list[LineProblem] = []
    assert list(read_log(hostile, problems=problems)) == list(intact)
    assert problems == list(loaded.problems)
    with pytest.raises(CorruptLogError):
        list(read_log(hostile, strict=True))
    with pytest.raises(InputError, match="nested 3001 deep"):
        parse_record("{" + '"a":{' * 3000 + "}" * 3001)


def test_nesting_is_counted_outside_strings_only(tmp_path: Path) -> None:
    """Brackets inside strings do not count, and a record nested as deep as the writer allows reads back."""
    declare_event(
        "test.nesting",
        summary="A deeply nested field and a string full of brackets.",
        fields={"data": FieldSpec("array", required=True), "note": FieldSpec("string", required=True)},
    )
    log = get_logger("training", log_dir=tmp_path, run_id="deep")
    nested: object = 1
    for _ in range(32):
        nested = [nested]
    log.info("test.nesting", data=nested, note="[" * 500 + "{" * 500 + '\\"[[[')
    (record,) = load_log(log.path).records
    assert record.model_extra is not None and record.model_extra["note"].startswith("[" * 500)
    assert json.dumps(record.model_extra["data"]) == json.dumps(nested)


@settings(max_examples=120, deadline=None)
@given(
    depth=st.integers(min_value=0, max_value=6000),
    opener=st.sampled_from(["[", '{"k":']),
    noise=st.text(alphabet='[]{}"\\ab', max_size=40),
    record=st.booleans(),
)
def test_any_nesting_is_a_record_or_a_line_problem(depth: int, opener: str, noise: str, record: bool) -> None:
    """Arbitrarily deep or unbalanced nesting, with brackets and quotes in strings, never escapes as another error."""
    closer = "]" if opener == "[" else "}"
    inner = opener * depth + json.dumps(noise) + closer * depth
    line = (
        '{"schema_version":1,"timestamp":"2025-01-01T00:00:00Z","level":"info","event":"run.end",'
        f'"component":"training","run_id":"r","status":"completed","extra":{inner}}}'
        if record
        else inner + noise
    )
    try:
        parsed = parse_record(line)
    except InputError as error:
        assert depth + 1 > 64 or "nested" not in str(error)
    else:
        assert record and depth + 1 <= 64 and parsed.event == "run.end"


# ---------------------------------------------------------------- what a problem is called
_BASE = '"schema_version":1,"timestamp":"2025-01-01T00:00:00Z","level":"info","component":"c","run_id":"r"'


def test_a_line_without_an_event_says_what_is_missing(tmp_path: Path) -> None:
    """A record with no 'event' field is reported as such, not as 'not a valid None record'."""
    path = tmp_path / "no-event.jsonl"
    path.write_text("{" + _BASE + "}\n" + '{"event":3,' + _BASE + "}\n", encoding="utf-8")
    missing, not_a_string = load_log(path).problems
    assert missing.kind == "record" and "without an 'event' field" in missing.message
    assert "None" not in missing.message
    assert not_a_string.kind == "record" and "'event' must be a string" in not_a_string.message
    with pytest.raises(InputError, match="without an 'event' field"):
        parse_record("{" + _BASE + "}")


def test_a_binary_file_has_encoding_problems_not_a_torn_line(tmp_path: Path) -> None:
    """A file of binary data (NUL bytes, not UTF-8) without a final line end gives encoding problems, never 'torn'."""
    path = tmp_path / "binary.jsonl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00\xff\xfe")
    loaded = load_log(path)
    assert loaded.records == () and "encoding" in {p.kind for p in loaded.problems}
    assert "torn" not in {p.kind for p in loaded.problems}
    assert loaded.problems[-1].kind == "encoding" and "NUL" in loaded.problems[-1].message


def test_zeros_left_at_the_end_of_a_log_are_named_as_such(tmp_path: Path) -> None:
    """Zero bytes where the last records should be (a crash before they reached the disk) are an encoding
    problem naming the NUL bytes, not a torn record; the records before them are read.
    """
    path = _write_run(tmp_path)
    zeroed = tmp_path / "zeroed.jsonl"
    zeroed.write_bytes(path.read_bytes() + b"\x00" * 300)
    loaded = load_log(zeroed)
    assert len(loaded.records) == len(load_log(path).records)
    ((problem),) = loaded.problems
    assert problem.kind == "encoding" and "NUL" in problem.message


def test_a_record_cut_inside_a_character_is_still_torn(tmp_path: Path) -> None:
    """A last line cut in the middle of a multi-byte UTF-8 character is a torn record, as the writer left it."""
    log = get_logger("training", log_dir=tmp_path, run_id="accents")
    log.info("run.start", description="données é")
    log.info("run.end", status="completed", error="échec")
    data = log.path.read_bytes()
    cut = data[: data.rindex("é".encode()) + 1]
    torn = tmp_path / "cut.jsonl"
    torn.write_bytes(cut)
    ((problem),) = load_log(torn).problems
    assert problem.kind == "torn"


def test_a_byte_order_mark_does_not_cost_the_first_record(tmp_path: Path) -> None:
    """A UTF-8 byte order mark at the start of a log is skipped, so its first record is read."""
    path = _write_run(tmp_path)
    with_bom = tmp_path / "bom.jsonl"
    with_bom.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    loaded = load_log(with_bom)
    assert loaded.problems == ()
    assert loaded.records == load_log(path).records
    problems: list[LineProblem] = []
    assert list(read_log(with_bom, problems=problems)) == list(loaded.records) and problems == []
