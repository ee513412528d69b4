"""Reading run logs back: typed records, damaged lines reported, series and summaries (RFC-0006).

:func:`read_log` yields each line of a ``.jsonl`` log written by
:mod:`geno_lewm.observability` as a pydantic model, chosen by its ``event``:
:class:`MetricRecord`, :class:`AlertRecord`, :class:`RunStartRecord`,
:class:`RunEndRecord`, :class:`AlertRaisedRecord`, :class:`AlertClearedRecord`, or
:class:`EventRecord` for any other event (so a log from a
newer writer, or with events of other metric families, still reads). Numbers that were
NaN or infinite, written as ``null`` plus a ``non_finite`` entry, are restored.

A line that cannot be read (the torn last line of a killed writer, bytes that are not
UTF-8, text that is not strict JSON, JSON that is not a record) is reported with its
line number: a :class:`LogLineWarning` by default, :class:`CorruptLogError` with
``strict=True``, or appended to a list you pass. It is never silently skipped, and it
never stops the rest of the file from being read.

:func:`metric_series`, :func:`alerts`, :func:`summarize` and :func:`to_dataframe` turn
records into what a report, a plot or pandas needs.

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
import json
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from geno_lewm._events import SCHEMA_VERSION
from geno_lewm.errors import InputError

if TYPE_CHECKING:
    import os

__all__ = [
    "SCHEMA_VERSION",
    "Alert",
    "AlertClearedRecord",
    "AlertRaisedRecord",
    "AlertRecord",
    "CorruptLogError",
    "EventRecord",
    "LineProblem",
    "LoadedLog",
    "LogLineWarning",
    "LogRecord",
    "LogVersionWarning",
    "MetricRecord",
    "MetricSeries",
    "MetricSummary",
    "Point",
    "RunEndRecord",
    "RunStartRecord",
    "RunSummary",
    "alerts",
    "load_log",
    "metric_series",
    "parse_record",
    "read_log",
    "record_json_schema",
    "summarize",
    "to_dataframe",
]

NonFiniteLabel = Literal["nan", "inf", "-inf"]
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}

LogNumber = Annotated[
    float,
    WithJsonSchema(
        {"type": ["number", "null"], "description": "a number; null when non-finite, named then in non_finite"}
    ),
]
"""A float on disk: a JSON number, or ``null`` with its ``non_finite`` entry."""


# ------------------------------------------------------------------- records
def _unescape(segment: str) -> str:
    return segment.replace("~1", "/").replace("~0", "~")


def _restore(container: Any, segments: list[str], value: float, path: str) -> Any:
    """A copy of ``container`` with the ``null`` at ``segments`` replaced by ``value``."""
    head, rest = segments[0], segments[1:]
    if isinstance(container, dict):
        key: Any = _unescape(head)
        if key not in container:
            raise ValueError(f"non_finite names {path!r}, which the record does not have")
        copy: Any = dict(container)
    elif isinstance(container, list) and head.isdigit() and int(head) < len(container):
        key = int(head)
        copy = list(container)
    else:
        raise ValueError(f"non_finite names {path!r}, which the record does not have")
    if rest:
        copy[key] = _restore(copy[key], rest, value, path)
    elif copy[key] is not None:
        raise ValueError(f"non_finite names {path!r}, whose value is {copy[key]!r}, not null")
    else:
        copy[key] = value
    return copy


class _Record(BaseModel):
    """The standard fields of every record."""

    model_config = ConfigDict(extra="allow", frozen=True)

    schema_version: int = Field(ge=1, description="Version of the record format")
    timestamp: AwareDatetime = Field(description="When the record was written (UTC, ISO 8601)")
    level: str = Field(description="debug, info, warning or error")
    event: str = Field(description="What happened; decides the record's other fields")
    component: str = Field(description="Which part of the program wrote the record")
    run_id: str = Field(description="The run the record belongs to")
    pid: int | None = Field(default=None, description="Process that wrote the record")
    step: int | None = Field(default=None, ge=0, description="Training step, when known")
    non_finite: dict[str, NonFiniteLabel] = Field(
        default_factory=dict, description="Path of each number written as null because it was NaN or infinite"
    )

    @model_validator(mode="before")
    @classmethod
    def _restore_non_finite(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("non_finite"), dict):
            return data
        for path, label in data["non_finite"].items():
            if isinstance(path, str) and path and label in _NON_FINITE:
                data = _restore(data, path.split("/"), _NON_FINITE[label], path)
        return data


class MetricRecord(_Record):
    """``training.metric``: one value of a named metric, with what is needed to compare runs."""

    event: Literal["training.metric"]
    name: str
    value: LogNumber
    unit: str
    kind: str
    variant: str | None = None
    threshold: LogNumber | None = None
    batch_size: int | None = None
    dim: int | None = None
    dtype: str | None = None
    backend: str | None = None
    device: str | None = None
    compute_seconds: LogNumber | None = None


class AlertRecord(_Record):
    """``training.collapse.alert``: a collapse criterion tripped."""

    event: Literal["training.collapse.alert"]
    criterion: str
    value: LogNumber
    threshold: LogNumber
    diagnosis: str | None = None


class RunStartRecord(_Record):
    """``run.start``: a run began."""

    event: Literal["run.start"]
    config: dict[str, Any] | None = None
    description: str | None = None
    geno_lewm_version: str | None = None
    python_version: str | None = None
    hostname: str | None = None


class RunEndRecord(_Record):
    """``run.end``: a run ended, ``completed``, ``failed`` or ``interrupted``."""

    event: Literal["run.end"]
    status: str
    duration_seconds: LogNumber | None = None
    error: str | None = None


class AlertRaisedRecord(_Record):
    """``training.alert.raised``: an alert began under a monitor's alert policy."""

    event: Literal["training.alert.raised"]
    source: str
    criterion: str
    value: LogNumber
    threshold: LogNumber
    direction: str
    consecutive: int
    since_step: int | None = None


class AlertClearedRecord(_Record):
    """``training.alert.cleared``: an alert ended (its metric got back past the margin)."""

    event: Literal["training.alert.cleared"]
    source: str
    criterion: str
    value: LogNumber
    threshold: LogNumber
    direction: str
    clear_bound: LogNumber
    raised_step: int | None = None


_TYPED: dict[str, type[_Record]] = {
    "training.metric": MetricRecord,
    "training.collapse.alert": AlertRecord,
    "run.start": RunStartRecord,
    "run.end": RunEndRecord,
    "training.alert.raised": AlertRaisedRecord,
    "training.alert.cleared": AlertClearedRecord,
}


class EventRecord(_Record):
    """Any other event (another metric family's, or a newer writer's): its own fields are
    in :attr:`fields`.
    """

    event: Annotated[str, WithJsonSchema({"type": "string", "not": {"enum": sorted(_TYPED)}})]

    @property
    def fields(self) -> dict[str, Any]:
        """The event's own fields (everything but the standard fields)."""
        return dict(self.model_extra or {})


LogRecord = Union[  # noqa: UP007 - a runtime alias on 3.10
    MetricRecord, AlertRecord, RunStartRecord, RunEndRecord, AlertRaisedRecord, AlertClearedRecord, EventRecord
]
"""Any record :func:`read_log` yields."""


def _tag(data: Any) -> str | None:
    if isinstance(data, BaseModel):
        return "other" if isinstance(data, EventRecord) else str(getattr(data, "event", ""))
    if not isinstance(data, dict):
        return None
    version = data.get("schema_version")
    if isinstance(version, int) and version > SCHEMA_VERSION:
        return "other"
    event = data.get("event")
    return event if isinstance(event, str) and event in _TYPED else "other"


_ADAPTER: TypeAdapter[LogRecord] = TypeAdapter(
    Annotated[
        Union[  # noqa: UP007 - Annotated needs a runtime union on 3.10
            Annotated[MetricRecord, Tag("training.metric")],
            Annotated[AlertRecord, Tag("training.collapse.alert")],
            Annotated[RunStartRecord, Tag("run.start")],
            Annotated[RunEndRecord, Tag("run.end")],
            Annotated[AlertRaisedRecord, Tag("training.alert.raised")],
            Annotated[AlertClearedRecord, Tag("training.alert.cleared")],
            Annotated[EventRecord, Tag("other")],
        ],
        Discriminator(_tag),
    ]
)


def record_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one line of a log.

    It describes the stored form: non-finite numbers appear as ``null`` and are named in
    ``non_finite``. Readers of other languages can validate lines against it; unknown
    events match the last alternative, whose event name is any but the typed ones.
    """
    schema = _ADAPTER.json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "geno_lewm log record",
        "description": (
            f"One line of a geno_lewm JSON-lines run log, schema_version {SCHEMA_VERSION} "
            "(see rfcs/0006-structured-logs.md)."
        ),
        **schema,
    }


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not strict JSON")


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:3]:
        location = [str(part) for part in item["loc"]]
        if location and (location[0] in _TYPED or location[0] == "other"):
            location = location[1:]
        where = ".".join(location)
        parts.append(f"{where}: {item['msg']}" if where else item["msg"])
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


class _LineError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _parse(raw: bytes) -> LogRecord:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _LineError("encoding", f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except ValueError as error:
        raise _LineError("json", f"not valid strict JSON: {error}") from None
    if not isinstance(data, dict):
        raise _LineError("json", f"a JSON {type(data).__name__}, not an object")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as error:
        event = data.get("event")
        raise _LineError("record", f"not a valid {event!r} record: {_describe(error)}") from None


def parse_record(line: str | bytes) -> LogRecord:
    """Parse one line of a log into its typed record.

    Raises :class:`InputError` saying why the line is not a record.

    Example
    -------
    >>> line = (
    ...     '{"schema_version":1,"timestamp":"2025-01-01T00:00:00Z","level":"info","event":"run.end",'
    ...     '"component":"training","run_id":"r","status":"completed"}'
    ... )
    >>> parse_record(line).status
    'completed'
    """
    raw = line.encode("utf-8") if isinstance(line, str) else bytes(line)
    try:
        return _parse(raw.rstrip(b"\r\n"))
    except _LineError as error:
        raise InputError(
            f"'line' is not a log record: {error}", details={"field": "line", "kind": error.kind}
        ) from None


# ------------------------------------------------------------------- reading
@dataclass(frozen=True, slots=True)
class LineProblem:
    """A line of a log that could not be read.

    ``kind`` is ``torn`` (the last line, without its line end: the writer stopped
    mid-record), ``encoding`` (not UTF-8), ``json`` (not a strict-JSON object) or
    ``record`` (JSON, but not a valid record).
    """

    path: str
    line: int
    kind: Literal["torn", "encoding", "json", "record"]
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
        return name, open(name, "rb")
    except OSError as error:
        raise InputError(
            f"cannot read log {name!r}: {error.strerror or error}", details={"field": "path", "path": name}
        ) from error


def _lines(name: str, handle: Any) -> Iterator[LogRecord | LineProblem]:
    """Each record or problem of an open log, in order."""
    newer_warned = False
    with handle:
        number = 0
        for number, raw in enumerate(handle, start=1):
            terminated = raw.endswith(b"\n")
            body = raw.rstrip(b"\r\n")
            if not body.strip():
                continue
            try:
                record = _parse(body)
            except _LineError as error:
                if not terminated:
                    yield LineProblem(
                        name, number, "torn", f"torn last line (no line end: the writer stopped mid-record): {error}"
                    )
                else:
                    yield LineProblem(name, number, error.kind, str(error))  # type: ignore[arg-type]
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
        extra = record.fields
        criterion, value = extra.get("criterion"), extra.get("value")
        threshold, diagnosis = extra.get("threshold"), extra.get("diagnosis")
        if isinstance(criterion, str) and isinstance(value, (int, float)) and not isinstance(value, bool):
            return Alert(
                record.run_id,
                record.step,
                record.event,
                criterion,
                float(value),
                float(threshold) if isinstance(threshold, (int, float)) else None,
                diagnosis if isinstance(diagnosis, str) else None,
                record.timestamp,
            )
    return None


def alerts(records: Iterable[LogRecord], *, run_id: str | None = None) -> list[Alert]:
    """Every alert in ``records`` (of ``run_id`` when given), in log order."""
    found = (_as_alert(r) for r in records if run_id is None or r.run_id == run_id)
    return [a for a in found if a is not None]


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
            )
        )
    return summaries
