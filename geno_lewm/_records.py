"""One line of a run log as a typed record: the pydantic models of RFC-0006, their JSON
Schema, and the parsing of one line (non-finite numbers restored).

Two formats of line are read into the same records. This package's own (``schema_version``,
``timestamp``, ``level``, the event's fields beside them, non-finite numbers as ``null``
named in ``non_finite``), and the GenoLeWM family's (``ts``, ``severity``, the event's
fields inside ``data``, non-finite numbers as the bare ``NaN``/``Infinity`` tokens of
Python's json module). A family line is translated into this package's fields first
(:func:`_from_family`), so whoever reads a record need not know which package wrote it;
:attr:`_Record.log_format` says so for those who care.

:mod:`geno_lewm.logs` reads whole files with these; this module knows the record formats
only, not any metric family.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from geno_lewm._events import MAX_DEPTH, SCHEMA_VERSION
from geno_lewm.errors import InputError

__all__ = [
    "AlertClearedRecord",
    "AlertRaisedRecord",
    "AlertRecord",
    "EventRecord",
    "LineError",
    "LineKind",
    "LogFormat",
    "LogRecord",
    "MetricRecord",
    "RunEndRecord",
    "RunStartRecord",
    "could_be_cut_record",
    "is_family_line",
    "parse_line",
    "parse_record",
    "record_json_schema",
]

LogFormat = Literal["geno_lewm", "family"]
"""The format a line was written in: ``geno_lewm`` (this package's records, RFC-0006) or
``family`` (the GenoLeWM family's ``ts``/``severity``/``data`` lines)."""

NonFiniteLabel = Literal["nan", "inf", "-inf"]
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _number_not_text(value: Any) -> Any:
    """Refuse a boolean or a string where a number belongs: pydantic would read ``true`` as
    1, and ``"nan"`` or ``"12"`` as numbers no writer of either format puts there.
    """
    if isinstance(value, (bool, str)):
        raise PydanticCustomError(
            "number_type",
            "must be a number, not {kind} {shown}",
            {"kind": type(value).__name__, "shown": _shortened(value)},
        )
    return value


def _timestamp_text(value: Any) -> Any:
    """Refuse anything but text where a timestamp belongs: pydantic would read a number as
    seconds since 1970, a time no writer meant.
    """
    if not isinstance(value, str):
        raise PydanticCustomError(
            "timestamp_type",
            "must be an ISO 8601 date and time, not {kind} {shown}",
            {"kind": type(value).__name__, "shown": _shortened(value)},
        )
    return value


LogInt = Annotated[int, BeforeValidator(_number_not_text)]
"""An integer on disk: a JSON integer (an integral float too), never ``true`` or a string."""

# A bound goes before the validator, or the JSON Schema spells it ``ge``, not ``minimum``.
_Version = Annotated[int, Field(ge=1), BeforeValidator(_number_not_text)]
_Step = Annotated[int, Field(ge=0), BeforeValidator(_number_not_text)]


def _in_utc(value: datetime) -> datetime:
    """``value`` in UTC: a line written with an offset (``+02:00``) is read as the same instant
    in UTC, so every record's time (and the report's "UTC") means one clock.
    """
    return value if value.utcoffset() == timedelta(0) else value.astimezone(timezone.utc)


LogTimestamp = Annotated[AwareDatetime, BeforeValidator(_timestamp_text), AfterValidator(_in_utc)]
"""A timestamp on disk: ISO 8601 text with a time zone (``Z`` or an offset), read in UTC."""

LogNumber = Annotated[
    float,
    BeforeValidator(_number_not_text),
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

    schema_version: _Version = Field(description="Version of the record format")
    timestamp: LogTimestamp = Field(description="When the record was written (UTC, ISO 8601)")
    level: str = Field(description="debug, info, warning or error")
    event: str = Field(description="What happened; decides the record's other fields")
    component: str = Field(description="Which part of the program wrote the record")
    run_id: str = Field(description="The run the record belongs to")
    pid: LogInt | None = Field(default=None, description="Process that wrote the record")
    step: _Step | None = Field(default=None, description="Training step, when known")
    non_finite: dict[str, NonFiniteLabel] = Field(
        default_factory=dict, description="Path of each number written as null because it was NaN or infinite"
    )

    # Where the record came from is not one of its fields: a private attribute keeps it out
    # of model_dump, the JSON Schema and EventRecord.fields, so this package's records dump
    # exactly as before.
    _log_format: LogFormat = PrivateAttr(default="geno_lewm")
    _wire_event: str | None = PrivateAttr(default=None)

    @property
    def log_format(self) -> LogFormat:
        """The format of the line the record was read from: ``geno_lewm`` or ``family``."""
        return self._log_format

    @property
    def wire_event(self) -> str:
        """The event name as the line spelled it: the family's ``training.run.start`` and
        ``training.run.end`` are read as :attr:`event` ``run.start`` and ``run.end``.
        """
        return self._wire_event or self.event

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
    batch_size: LogInt | None = None
    dim: LogInt | None = None
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
    detail: str | None = None


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
    consecutive: LogInt
    since_step: LogInt | None = None


class AlertClearedRecord(_Record):
    """``training.alert.cleared``: an alert ended (its metric got back past the margin)."""

    event: Literal["training.alert.cleared"]
    source: str
    criterion: str
    value: LogNumber
    threshold: LogNumber
    direction: str
    clear_bound: LogNumber
    raised_step: LogInt | None = None


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
    events match the last alternative, whose event name is any but the typed ones. It
    describes this package's lines only: the GenoLeWM family's lines, which the reader
    also takes (see :func:`is_family_line`), are not described by it, and its
    description says so.
    """
    schema = _ADAPTER.json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "geno_lewm log record",
        "description": (
            f"One line of a geno_lewm JSON-lines run log, schema_version {SCHEMA_VERSION} "
            "(see rfcs/0006-structured-logs.md). The reader also takes the lines of the GenoLeWM family's "
            "logs (ts, severity, event, run_id, component, data; no schema_version; bare NaN/Infinity), "
            "which it translates into these records; this schema does not describe them."
        ),
        **schema,
    }


def _describe(error: ValidationError, *, skip: str | None = None, origin: Callable[[str], str] | None = None) -> str:
    """The first three of ``error``'s complaints, each with its field; those about the
    top-level field ``skip`` are left out (the caller has said it already). ``origin``
    names, for a translated family line, where a record field is (or belongs) on the line
    (``timestamp`` is ``ts``, an event's field is ``data.<name>``), so the message points
    at what the line holds.
    """
    items = []
    for item in error.errors():
        location = [str(part) for part in item["loc"]]
        if location and (location[0] in _TYPED or location[0] == "other"):
            location = location[1:]
        if skip is not None and location == [skip]:
            continue
        if origin is not None and location:
            location = [origin(location[0]), *location[1:]]
        items.append((".".join(location), item["msg"]))
    parts = [f"{where}: {message}" if where else message for where, message in items[:3]]
    more = len(items) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _record_problem(data: dict[str, Any], error: ValidationError, origin: Callable[[str], str] | None = None) -> str:
    """Why the JSON object ``data`` is not a record, starting with its event (or its lack of one).

    ``origin`` is given for a family line (``data`` is then the line as written): see :func:`_describe`.
    """
    what = "GenoLeWM family line" if origin is not None else "record"
    if "event" not in data or not isinstance(data["event"], str):
        # Say first what is wrong with the field that decides the record's type: without
        # it the other complaints (checked against the generic record) matter less.
        headline = (
            "a record without an 'event' field"
            if "event" not in data
            else f"not a valid record: 'event' must be a string, not {type(data['event']).__name__} "
            f"{_shortened(data['event'])}"
        )
        rest = _describe(error, skip="event", origin=origin)
        return headline + (f"; also {rest}" if rest else "")
    return f"not a valid {data['event']!r} {what}: {_describe(error, origin=origin)}"


def _shortened(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to about ``limit`` characters, so a huge value cannot flood the message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -------------------------------------------------------------- family lines
_FAMILY_EVENTS = {"training.run.start": "run.start", "training.run.end": "run.end"}
"""Family event names read as this package's events of the same meaning."""

_FAMILY_SEVERITIES = {"warn": "warning"}
"""Family severities spelled otherwise in this package's ``level``."""

_ERROR_LEVELS = frozenset({"error", "critical", "fatal"})
"""Levels (lower case) that make a run's end without a ``status`` a failure."""

_FAMILY_UNITS = {"unitless": "1"}
"""Family metric units spelled otherwise here (``1`` is this package's dimensionless unit)."""

_FAMILY_RENAMED = {"ts": "timestamp", "severity": "level"}
"""Family envelope fields and the record fields they become."""

_RECORD_FIELDS = frozenset(
    {"schema_version", "timestamp", "level", "event", "component", "run_id", "pid", "non_finite"}
)
"""The standard fields of this package's records."""
_STANDARD = _RECORD_FIELDS | {"ts", "severity", "data"}
"""Names a ``data`` entry may not take at the record's top level: they would overwrite (or be
mistaken for) a standard field."""


def is_family_line(data: Mapping[str, Any]) -> bool:
    """Whether the JSON object ``data`` is a GenoLeWM family line rather than this package's record.

    This package's records always carry ``schema_version`` and never ``ts`` or ``severity``;
    the family's carry ``ts`` and ``severity`` and no ``schema_version``. An object with
    neither is judged as this package's, so its problems are reported as they always were.
    """
    return "schema_version" not in data and ("ts" in data or "severity" in data)


def _from_family(line: Mapping[str, Any], fields: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The family ``line`` (whose ``data`` object is ``fields``) as this package's record
    fields, and where each record field that was renamed or lifted came from (for messages).

    The envelope is renamed (``ts`` -> ``timestamp``, ``severity`` -> ``level`` in lower
    case, ``warn`` -> ``warning``), the start and end events take this package's names, and every entry
    of ``data`` becomes a field of the record, beside the line's own top-level fields
    (``step``, ``epoch``, ``phase``, ``duration_ms``, ...). A ``data`` entry that would
    overwrite one of those, or a standard field, is kept unchanged in a ``data`` field
    instead. A ``training.metric`` unit ``unitless`` is read as ``1``. A run's end without
    a ``status`` is ``failed`` when written as an error (severity ``error``, ``critical`` or ``fatal``, or an
    ``error_code``) and ``completed`` otherwise, and its ``duration_ms`` also gives
    ``duration_seconds``.
    """
    record: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
    origin = {field: key for key, field in _FAMILY_RENAMED.items()}
    kept: dict[str, Any] = {}
    for key, value in line.items():
        if key in _FAMILY_RENAMED:
            record[_FAMILY_RENAMED[key]] = value
        elif key in _STANDARD and key not in {"event", "component", "run_id"}:
            if key != "data":
                kept[key] = value  # a stray standard field beside the family's envelope
        else:
            record[key] = value
    if isinstance(record.get("level"), str):
        level = record["level"].lower()  # a severity's case says nothing: WARN is warn
        record["level"] = _FAMILY_SEVERITIES.get(level, level)
    for key, value in fields.items():
        if key in _STANDARD or key in record:
            kept[key] = value
        else:
            record[key] = value
            origin[key] = f"data.{key}"
    if kept:
        record["data"] = kept
    if record.get("event") == "training.metric" and isinstance(record.get("unit"), str):
        record["unit"] = _FAMILY_UNITS.get(record["unit"], record["unit"])
    _as_run_event(record)
    return record, origin


def _as_run_event(record: dict[str, Any]) -> None:
    """The family's start and end events, in ``record`` (a line's fields, changed in place),
    as this package's ``run.start`` and ``run.end``, whichever package wrote the line
    (this package's logger writes them too, e.g. from ``logged_run``). An end without a
    ``status`` is ``failed`` when written as an error (level ``error``, ``critical`` or
    ``fatal``, or an ``error_code``) and ``completed`` otherwise; its ``duration_ms`` also gives
    ``duration_seconds``.
    """
    event = record.get("event")
    if not isinstance(event, str) or event not in _FAMILY_EVENTS:
        return
    record["event"] = _FAMILY_EVENTS[event]
    if record["event"] == "run.end":
        if "status" not in record:
            level = record.get("level")
            failed = (isinstance(level, str) and level in _ERROR_LEVELS) or record.get("error_code") is not None
            record["status"] = "failed" if failed else "completed"
        millis = record.get("duration_ms")
        if "duration_seconds" not in record and isinstance(millis, (int, float)) and not isinstance(millis, bool):
            record["duration_seconds"] = millis / 1000


def _parse_family(line: dict[str, Any]) -> LogRecord:
    """The GenoLeWM family ``line`` (a parsed JSON object) as a record; :class:`LineError` saying why not."""
    fields = line.get("data")
    if fields is None:  # no data, or data null: an event without fields of its own
        fields = {}
    if not isinstance(fields, dict):
        event = line.get("event")
        named = f"{event!r} " if isinstance(event, str) else ""
        raise LineError(
            "record",
            f"not a valid {named}GenoLeWM family line: data: must be an object, not {type(fields).__name__} "
            f"{_shortened(fields)}",
        )
    record, origin = _from_family(line, fields)

    def where(name: str) -> str:
        """Where the record field ``name`` is on the line, or would be: an event's own field is in ``data``."""
        if name in origin:
            return origin[name]
        return name if name in _RECORD_FIELDS or name in line else f"data.{name}"

    try:
        parsed = _ADAPTER.validate_python(record)
    except ValidationError as error:
        raise LineError("record", _record_problem(line, error, where)) from None
    parsed._log_format = "family"
    parsed._wire_event = line["event"]
    return parsed


LineKind = Literal["torn", "encoding", "json", "record"]
"""What is wrong with a line: cut short, not UTF-8 text (or NUL bytes), not JSON, or not a record."""


class LineError(Exception):
    """Why one line is not a record: ``kind`` (``encoding``, ``json``, ``record``) and a message."""

    def __init__(self, kind: LineKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


MAX_LINE_DEPTH = 2 * MAX_DEPTH
"""The deepest nesting of arrays and objects a line may have. The writer nests a field's
value at most ``MAX_DEPTH`` deep inside the record object; twice that leaves room for other
writers, and refusing deeper lines before parsing keeps a hostile line (thousands of
``[``) from exhausting the interpreter's recursion in the JSON parser or the record model."""


def _nesting(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in a line, brackets inside strings aside."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def _check_nesting(raw: bytes) -> None:
    """Refuse a line nested deeper than :data:`MAX_LINE_DEPTH` (a cheap count rules most out)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_LINE_DEPTH:
        return
    depth = _nesting(raw)
    if depth > MAX_LINE_DEPTH:
        raise LineError("json", f"nested {depth} deep, more than the {MAX_LINE_DEPTH} a log line may be")


_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0a-\x1f]")
"""Bytes strict JSON never holds outside an escape (every control character but tab)."""


def could_be_cut_record(raw: bytes) -> bool:
    """Whether ``raw`` could be the beginning of a record whose writer stopped mid-write.

    It must open an object, as every record does, be UTF-8 text up to at most one
    character cut at its very end, and hold no control byte (JSON escapes them). Binary
    data, or the zeros a crash can leave where records never reached the disk, is not a
    cut record: :mod:`geno_lewm.logs` calls such a last line what it is instead of torn.
    """
    if not raw.startswith(b"{") or _CONTROL_BYTES.search(raw):
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return error.reason == "unexpected end of data" and error.end == len(raw)
    return True


def parse_line(raw: bytes) -> LogRecord:
    """One line's bytes (without its newline) as a record; :class:`LineError` saying why not."""
    zeros = raw.count(0)
    if zeros:
        # NUL is valid UTF-8 but never part of a log's text: name the bytes rather than
        # let the JSON parser stumble on them.
        raise LineError(
            "encoding",
            f"not text: {zeros} NUL byte{'s' * (zeros != 1)} (binary data, or zeros a crash left where "
            "records had not reached the disk)",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise LineError("encoding", f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    _check_nesting(raw)
    try:
        # The bare NaN, Infinity and -Infinity tokens are read as those floats: the family's
        # writer (Python's json module) puts them on its lines, and a number is a number
        # whichever package wrote it. Anything else that is not JSON is refused.
        data = json.loads(text)
    except ValueError as error:
        raise LineError("json", f"not valid strict JSON (nor JSON with bare NaN or Infinity): {error}") from None
    except RecursionError:  # only reachable when called with little stack to spare
        raise LineError("json", "nested too deep to parse") from None
    if not isinstance(data, dict):
        raise LineError("json", f"a JSON {type(data).__name__}, not an object")
    if is_family_line(data):
        return _parse_family(data)
    wire_event = data.get("event")
    record = data
    if isinstance(wire_event, str) and wire_event in _FAMILY_EVENTS:
        record = dict(data)
        _as_run_event(record)
    try:
        parsed = _ADAPTER.validate_python(record)
    except ValidationError as error:
        raise LineError("record", _record_problem(data, error)) from None
    if record is not data:
        parsed._wire_event = wire_event
    return parsed


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

    A GenoLeWM family line reads into the same record types:

    >>> family = (
    ...     '{"ts": "2025-01-01T00:00:00.000Z", "severity": "warn", "event": "training.collapse.alert", '
    ...     '"run_id": "r", "component": "training", "step": 3, '
    ...     '"data": {"criterion": "kl_reg", "value": NaN, "threshold": 10.0}}'
    ... )
    >>> record = parse_record(family)
    >>> type(record).__name__, record.level, record.step, record.value, record.log_format
    ('AlertRecord', 'warning', 3, nan, 'family')
    """
    raw = line.encode("utf-8") if isinstance(line, str) else bytes(line)
    try:
        return parse_line(raw.rstrip(b"\r\n"))
    except LineError as error:
        raise InputError(
            f"'line' is not a log record: {error}", details={"field": "line", "kind": error.kind}
        ) from None
