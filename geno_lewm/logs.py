"""Reading run logs back: typed records, damaged lines reported, series and summaries (RFC-0006).

:func:`read_log` yields each line of a ``.jsonl`` log written by
:mod:`geno_lewm.observability` as a pydantic model, chosen by its ``event``:
:class:`MetricRecord`, :class:`AlertRecord`, :class:`RunStartRecord`,
:class:`RunEndRecord`, :class:`AlertRaisedRecord`, :class:`AlertClearedRecord`, or
:class:`EventRecord` for any other event (so a log from a
newer writer, or with events of other metric families, still reads). Numbers that were
NaN or infinite, written as ``null`` plus a ``non_finite`` entry (or as the bare ``NaN``
and ``Infinity`` tokens of Python's json module), are restored.

Lines of the GenoLeWM family's logs (``ts``, ``severity``, the event's fields in
``data``) are read into the same records, in a file of their own or mixed with this
package's lines: ``training.run.start`` and ``training.run.end`` become
:class:`RunStartRecord` and :class:`RunEndRecord`, the fields of ``data`` become the
record's, severity ``warn`` is level ``warning``. Nothing downstream needs to know which
package wrote a line; ``record.log_format`` (``geno_lewm`` or ``family``) and
``record.wire_event`` tell those who care.

A line that cannot be read (the torn last line of a killed writer, bytes that are not
UTF-8 text, text that is not strict JSON, JSON that is not a record) is reported with its
line number: a :class:`LogLineWarning` by default, :class:`CorruptLogError` with
``strict=True``, or appended to a list you pass. It is never silently skipped, and it
never stops the rest of the file from being read.

:func:`metric_series`, :func:`alerts`, :func:`summarize` and :func:`to_dataframe` turn
records into what a report, a plot or pandas needs; :func:`errors` lists the ``error``
events (the family's record of a failure, with its code and message).

Example
-------
>>> import tempfile
>>> from geno_lewm.observability import get_logger
>>> log = get_logger("training", log_dir=tempfile.mkdtemp(), run_id="example")
>>> for step, value in [(100, 0.9), (200, 0.4)]:
...     log.info("training.metric", name="m", value=value, unit="1", kind="gauge", step=step)
>>> metric_series(read_log(log.path))["m"].as_dict()
{100: 0.9, 200: 0.4}
"""

from __future__ import annotations

import importlib
import math
import os
import stat
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from geno_lewm._events import SCHEMA_VERSION
from geno_lewm._records import (
    AlertClearedRecord,
    AlertRaisedRecord,
    AlertRecord,
    EventRecord,
    LineError,
    LineKind,
    LogFormat,
    LogRecord,
    MetricRecord,
    RunEndRecord,
    RunStartRecord,
    could_be_cut_record,
    parse_line,
    parse_record,
    record_json_schema,
)
from geno_lewm.errors import InputError

__all__ = [
    "ERROR_EVENT",
    "SCHEMA_VERSION",
    "Alert",
    "AlertClearedRecord",
    "AlertRaisedRecord",
    "AlertRecord",
    "CorruptLogError",
    "EventRecord",
    "LineProblem",
    "LoadedLog",
    "LogFormat",
    "LogLineWarning",
    "LogRecord",
    "LogVersionWarning",
    "LoggedError",
    "MetricRecord",
    "MetricSeries",
    "MetricSummary",
    "Point",
    "RunEndRecord",
    "RunStartRecord",
    "RunSummary",
    "alerts",
    "errors",
    "load_log",
    "metric_series",
    "parse_record",
    "read_log",
    "record_json_schema",
    "summarize",
    "to_dataframe",
]


# ------------------------------------------------------------------- reading
@dataclass(frozen=True, slots=True)
class LineProblem:
    """A line of a log that could not be read.

    ``kind`` is ``torn`` (the last line, without its line end, the beginning of a record:
    the writer stopped mid-record), ``encoding`` (not UTF-8 text, or NUL bytes: binary
    data, or zeros a crash left), ``json`` (not a JSON object; the bare ``NaN`` and
    ``Infinity`` tokens are accepted) or ``record`` (JSON, but not a valid record of
    either format).
    """

    path: str
    line: int
    kind: LineKind
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class LogLineWarning(UserWarning):
    """A line of a log could not be read (the default way :func:`read_log` reports it)."""


class LogVersionWarning(UserWarning):
    """A log was written in a newer format than this reader knows."""


class CorruptLogError(InputError):
    """A line of a log could not be read and the reader was asked to be strict."""

    def __init__(self, problem: LineProblem) -> None:
        super().__init__(
            str(problem), details={"field": "path", "path": problem.path, "line": problem.line, "kind": problem.kind}
        )
        self.problem = problem


def _open(path: str | os.PathLike[str]) -> tuple[str, Any]:
    try:
        name = str(Path(path))
    except TypeError:
        raise InputError(
            f"'path' must be a path: got {type(path).__name__}", details={"field": "path", "type": type(path).__name__}
        ) from None
    try:
        mode = os.stat(name).st_mode
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
            # /dev/zero or /dev/urandom never end: reading one would fill memory, not give a log.
            raise InputError(
                f"cannot read log {name!r}: a device or socket, not a file (a pipe is read as one)",
                details={"field": "path", "path": name},
            )
        return name, open(name, "rb")
    except OSError as error:
        raise InputError(
            f"cannot read log {name!r}: {error.strerror or error}", details={"field": "path", "path": name}
        ) from error


_BOM = b"\xef\xbb\xbf"
"""The UTF-8 byte order mark some editors put at the start of a text file they save."""


def _lines(name: str, handle: Any) -> Iterator[LogRecord | LineProblem]:
    """Each record or problem of an open log, in order.

    A UTF-8 byte order mark at the very start of the file is skipped (a log saved by an
    editor that adds one keeps its first record). An unterminated last line that does
    not parse is ``torn`` only when it could be a record cut short; binary data or zeros
    there keep the kind :func:`parse_line` gives them.
    """
    newer_warned = False
    with handle:
        number = 0
        for number, read in enumerate(handle, start=1):
            raw = read[len(_BOM) :] if number == 1 and read.startswith(_BOM) else read
            terminated = raw.endswith(b"\n")
            body = raw.rstrip(b"\r\n")
            if not body.strip():
                continue
            try:
                record = parse_line(body)
            except LineError as error:
                if not terminated and could_be_cut_record(body):
                    yield LineProblem(
                        name, number, "torn", f"torn last line (no line end: the writer stopped mid-record): {error}"
                    )
                else:
                    yield LineProblem(name, number, error.kind, str(error))
                continue
            if record.schema_version > SCHEMA_VERSION and not newer_warned:
                newer_warned = True
                warnings.warn(
                    f"{name}:{number}: written in log format {record.schema_version}, newer than this reader's "
                    f"{SCHEMA_VERSION}: its records are read as EventRecord; upgrade geno_lewm to read them fully",
                    LogVersionWarning,
                    stacklevel=3,
                )
            yield record


def read_log(
    path: str | os.PathLike[str], *, strict: bool = False, problems: list[LineProblem] | None = None
) -> Iterator[LogRecord]:
    """The records of the log at ``path``, typed and in file order.

    Parameters
    ----------
    path:
        A ``.jsonl`` log. It is opened at once, so a missing or unreadable file raises
        here rather than at the first record.
    strict:
        Raise :class:`CorruptLogError` at the first line that cannot be read.
    problems:
        Otherwise, unreadable lines are appended to this list as :class:`LineProblem`
        when it is given, else each is reported as a :class:`LogLineWarning`. Reading
        always goes on with the next line.

    Raises
    ------
    InputError
        When the file cannot be opened (its message names the path and the reason).
    """
    name, handle = _open(path)

    def records() -> Iterator[LogRecord]:
        for item in _lines(name, handle):
            if not isinstance(item, LineProblem):
                yield item
            elif strict:
                raise CorruptLogError(item)
            elif problems is not None:
                problems.append(item)
            else:
                warnings.warn(str(item), LogLineWarning, stacklevel=2)

    return records()


@dataclass(frozen=True, slots=True)
class LoadedLog:
    """A whole log in memory: its records and the lines that could not be read."""

    path: str
    records: tuple[LogRecord, ...]
    problems: tuple[LineProblem, ...]


def load_log(path: str | os.PathLike[str]) -> LoadedLog:
    """Read the whole log at ``path``, collecting unreadable lines instead of warning.

    Raises :class:`InputError` when the file cannot be opened.
    """
    name, handle = _open(path)
    records: list[LogRecord] = []
    problems: list[LineProblem] = []
    for item in _lines(name, handle):
        (problems if isinstance(item, LineProblem) else records).append(item)  # type: ignore[arg-type]
    return LoadedLog(name, tuple(records), tuple(problems))


# ------------------------------------------------------------------- helpers
def _only_run(records: Iterable[LogRecord], run_id: str | None) -> list[LogRecord]:
    chosen = [r for r in records if run_id is None or r.run_id == run_id]
    runs = sorted({r.run_id for r in chosen})
    if run_id is None and len(runs) > 1:
        raise InputError(
            f"the records hold {len(runs)} runs ({', '.join(runs)}): pass 'run_id' to choose one",
            details={"field": "run_id", "runs": runs},
        )
    return chosen


@dataclass(frozen=True, slots=True)
class MetricSeries:
    """One metric of one run over steps, in log order (records without a step are left out)."""

    name: str
    unit: str
    run_id: str
    steps: tuple[int, ...]
    values: tuple[float, ...]
    thresholds: tuple[float | None, ...]

    def as_dict(self) -> dict[int, float]:
        """Step -> value (a step logged twice keeps its last value); ``pandas.Series(...)`` takes it as is."""
        return dict(zip(self.steps, self.values))


def metric_series(records: Iterable[LogRecord], *, run_id: str | None = None) -> dict[str, MetricSeries]:
    """Metric name -> :class:`MetricSeries`, from the ``training.metric`` records of one run.

    Raises :class:`InputError` when the records hold several runs and ``run_id`` does not
    pick one: mixing runs in one series would be silently wrong.
    """
    collected: dict[str, tuple[MetricRecord, list[int], list[float], list[float | None]]] = {}
    for record in _only_run(records, run_id):
        if isinstance(record, MetricRecord) and record.step is not None:
            entry = collected.setdefault(record.name, (record, [], [], []))
            entry[1].append(record.step)
            entry[2].append(record.value)
            entry[3].append(record.threshold)
    return {
        name: MetricSeries(name, first.unit, first.run_id, tuple(steps), tuple(values), tuple(thresholds))
        for name, (first, steps, values, thresholds) in collected.items()
    }


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert of any metric family: an ``*.alert`` event with a criterion and a value."""

    run_id: str
    step: int | None
    event: str
    criterion: str
    value: float
    threshold: float | None
    diagnosis: str | None
    timestamp: datetime


def _as_alert(record: LogRecord) -> Alert | None:
    if isinstance(record, AlertRecord):
        return Alert(
            record.run_id,
            record.step,
            record.event,
            record.criterion,
            record.value,
            record.threshold,
            record.diagnosis,
            record.timestamp,
        )
    if isinstance(record, EventRecord) and record.event.endswith(".alert"):
        # Every *.alert event is an alert, complete or not: one left out would be an alert no report shows.
        extra = record.fields
        criterion, value = extra.get("criterion"), _real(extra.get("value"))
        threshold, diagnosis = extra.get("threshold"), extra.get("diagnosis")
        return Alert(
            record.run_id,
            record.step,
            record.event,
            criterion if isinstance(criterion, str) else record.event,
            math.nan if value is None else value,
            _real(threshold),
            diagnosis if isinstance(diagnosis, str) else None,
            record.timestamp,
        )
    return None


def _real(value: Any) -> float | None:
    """``value`` as a float when it is a real number (not a bool), else ``None``."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def alerts(records: Iterable[LogRecord], *, run_id: str | None = None) -> list[Alert]:
    """Every alert in ``records`` (of ``run_id`` when given), in log order.

    Every ``*.alert`` event counts: one of another metric family without a text
    ``criterion`` has its event name as criterion, and one without a numeric ``value`` has
    NaN.
    """
    found = (_as_alert(r) for r in records if run_id is None or r.run_id == run_id)
    return [a for a in found if a is not None]


@dataclass(frozen=True, slots=True)
class LoggedError:
    """One ``error`` event: a failure the run recorded, with its code, message and what to do.

    The GenoLeWM family writes one (``data``: ``code``, ``message``, ``details``,
    ``remediation``) when something goes wrong; a missing ``code`` falls back to the line's
    ``error_code``. Fields that are not of the expected type are ``None``.
    """

    run_id: str
    step: int | None
    component: str
    code: str | None
    message: str | None
    remediation: str | None
    details: Any
    timestamp: datetime


ERROR_EVENT = "error"
"""The event name of a recorded failure (the GenoLeWM family's)."""


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _as_error(record: LogRecord) -> LoggedError | None:
    if not isinstance(record, EventRecord) or record.event != ERROR_EVENT:
        return None
    extra = record.fields
    return LoggedError(
        record.run_id,
        record.step,
        record.component,
        _text(extra.get("code")) or _text(extra.get("error_code")),
        _text(extra.get("message")),
        _text(extra.get("remediation")),
        extra.get("details"),
        record.timestamp,
    )


def errors(records: Iterable[LogRecord], *, run_id: str | None = None) -> list[LoggedError]:
    """Every ``error`` event in ``records`` (of ``run_id`` when given), in log order."""
    found = (_as_error(r) for r in records if run_id is None or r.run_id == run_id)
    return [e for e in found if e is not None]


def to_dataframe(records: Iterable[LogRecord], *, run_id: str | None = None) -> Any:
    """The ``training.metric`` records as a long pandas DataFrame, one row per record.

    Columns: ``run_id``, ``step``, ``name``, ``value``, ``unit``, ``threshold``,
    ``timestamp``. Needs pandas (imported here, not by this module).
    """
    try:
        pandas = importlib.import_module("pandas")
    except ImportError as error:
        raise ImportError("to_dataframe needs pandas: pip install pandas", name="pandas") from error
    rows = [
        {
            "run_id": r.run_id,
            "step": r.step,
            "name": r.name,
            "value": r.value,
            "unit": r.unit,
            "threshold": r.threshold,
            "timestamp": r.timestamp,
        }
        for r in records
        if isinstance(r, MetricRecord) and (run_id is None or r.run_id == run_id)
    ]
    columns = ["run_id", "step", "name", "value", "unit", "threshold", "timestamp"]
    return pandas.DataFrame(rows, columns=columns)


# ----------------------------------------------------------------- summaries
@dataclass(frozen=True, slots=True)
class Point:
    """A value and the step it was logged at (``None`` when the record had none)."""

    step: int | None
    value: float


@dataclass(frozen=True, slots=True)
class MetricSummary:
    """One metric of one run: how many values, the first and last, the smallest and
    largest (NaN left out; ``None`` when every value was NaN).
    """

    name: str
    unit: str
    count: int
    non_finite: int
    first: Point
    last: Point
    min: Point | None
    max: Point | None


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a log says about one run."""

    run_id: str
    paths: tuple[str, ...]
    records: int
    components: tuple[str, ...]
    pids: tuple[int, ...]
    first_timestamp: datetime
    last_timestamp: datetime
    first_step: int | None
    last_step: int | None
    status: str | None
    duration_seconds: float | None
    metrics: dict[str, MetricSummary] = field(default_factory=dict)
    alerts: tuple[Alert, ...] = ()
    errors: tuple[LoggedError, ...] = ()


def _summarize_metric(name: str, records: Sequence[MetricRecord]) -> MetricSummary:
    points = [Point(r.step, r.value) for r in records]
    comparable = [p for p in points if not math.isnan(p.value)]
    return MetricSummary(
        name,
        records[0].unit,
        len(points),
        sum(not math.isfinite(p.value) for p in points),
        points[0],
        points[-1],
        min(comparable, key=lambda p: p.value) if comparable else None,
        max(comparable, key=lambda p: p.value) if comparable else None,
    )


def summarize(logs: Iterable[LoadedLog]) -> list[RunSummary]:
    """One :class:`RunSummary` per run found in ``logs``, in order of first appearance.

    A run may span several files (e.g. one per process) and a file may hold several runs.
    """
    by_run: dict[str, list[tuple[str, LogRecord]]] = {}
    for log in logs:
        for record in log.records:
            by_run.setdefault(record.run_id, []).append((log.path, record))
    summaries = []
    for run_id, entries in by_run.items():
        records = [r for _, r in entries]
        steps = [r.step for r in records if r.step is not None]
        metrics: dict[str, list[MetricRecord]] = {}
        for r in records:
            if isinstance(r, MetricRecord):
                metrics.setdefault(r.name, []).append(r)
        ends = [r for r in records if isinstance(r, RunEndRecord)]
        summaries.append(
            RunSummary(
                run_id=run_id,
                paths=tuple(dict.fromkeys(path for path, _ in entries)),
                records=len(records),
                components=tuple(dict.fromkeys(r.component for r in records)),
                pids=tuple(dict.fromkeys(r.pid for r in records if r.pid is not None)),
                first_timestamp=min(r.timestamp for r in records),
                last_timestamp=max(r.timestamp for r in records),
                first_step=min(steps) if steps else None,
                last_step=max(steps) if steps else None,
                status=ends[-1].status if ends else None,
                duration_seconds=ends[-1].duration_seconds if ends else None,
                metrics={name: _summarize_metric(name, rs) for name, rs in metrics.items()},
                alerts=tuple(alerts(records)),
                errors=tuple(errors(records)),
            )
        )
    return summaries
