"""The event catalogue and the strict-JSON encoding of one log record (RFC-0006).

Standard library only, so the writer (:mod:`geno_lewm.observability`) and the reader
(:mod:`geno_lewm.logs`) share one definition of the format without either importing the
other's dependency.

A record is one JSON object on one line. It starts with the standard fields
(:data:`STANDARD_FIELDS`), followed by the event's own fields as declared in
:data:`EVENTS`, and ends with ``non_finite`` when a number was NaN or infinite: strict
JSON has no spelling for those, so such a number is written as ``null`` and
``non_finite`` maps its field (a path such as ``value`` or ``spectrum/3`` for nested
data) to ``"nan"``, ``"inf"`` or ``"-inf"``.
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args

from geno_lewm.errors import InputError
from geno_lewm.metrics import MetricKind

__all__ = [
    "EVENTS",
    "LEVELS",
    "MAX_DEPTH",
    "MAX_LINE_BYTES",
    "SCHEMA_VERSION",
    "STANDARD_FIELDS",
    "EventSpec",
    "FieldSpec",
    "FieldType",
    "declare_event",
    "encode_line",
    "event_spec",
    "non_finite_label",
    "normalise_fields",
    "normalise_step",
]

SCHEMA_VERSION = 1
"""Version of the record format. Adding an event or an optional field keeps it; removing,
renaming or retyping a field, or changing a convention, increments it."""

LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")
"""The levels a record can have, least severe first."""

STANDARD_FIELDS: tuple[str, ...] = (
    "schema_version",
    "timestamp",
    "level",
    "event",
    "component",
    "run_id",
    "pid",
    "step",
    "non_finite",
)
"""Fields every record may carry whatever its event; no event may declare them."""

MAX_LINE_BYTES = 1 << 20
"""A record that encodes to more than this many bytes (1 MiB) is refused."""

FieldType = Literal["string", "integer", "number", "boolean", "array", "object"]
"""The JSON type of a field. ``number`` accepts NaN and infinities (written as ``null``
plus a ``non_finite`` entry); ``array`` and ``object`` hold any JSON data."""

_FIELD_TYPES: tuple[str, ...] = get_args(FieldType)
_EVENT_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

MAX_DEPTH = 32
"""How deep the value of an ``array`` or ``object`` field may nest; deeper data is refused
when the record is written."""


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """The declaration of one field of an event.

    Attributes
    ----------
    type:
        Its JSON type (:data:`FieldType`).
    required:
        Whether every record of the event must carry it.
    nullable:
        Whether ``None`` (written as ``null``) is an accepted value.
    description:
        What it means, for the JSON Schema and the RFC.
    choices:
        For a string field, the only values accepted (empty: any string).
    """

    type: FieldType
    required: bool = False
    nullable: bool = False
    description: str = ""
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in _FIELD_TYPES:
            raise InputError(
                f"'type' must be one of {', '.join(map(repr, _FIELD_TYPES))}: got {self.type!r}",
                details={"field": "type", "value": self.type},
            )
        if self.choices and (self.type != "string" or not all(isinstance(c, str) for c in self.choices)):
            raise InputError(
                f"'choices' must be strings of a string field: got {self.choices!r} for a {self.type} field",
                details={"field": "choices", "value": self.choices},
            )
        object.__setattr__(self, "choices", tuple(self.choices))


@dataclass(frozen=True, slots=True)
class EventSpec:
    """The declaration of one event: its name, what it records, and its fields.

    ``open_fields`` marks an event whose fields are not all known in advance (the GenoLeWM
    family's run, step, epoch and checkpoint events carry whatever the caller's training
    loop passes): its declared fields are still checked, and any other field is accepted
    as JSON data (a standard field's name excepted).
    """

    name: str
    summary: str
    fields: Mapping[str, FieldSpec] = field(default_factory=dict)
    open_fields: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _EVENT_NAME.fullmatch(self.name):
            raise InputError(
                f"'name' must be lower-case dotted identifiers such as 'training.metric': got {self.name!r}",
                details={"field": "name", "value": self.name},
            )
        for name, spec in self.fields.items():
            if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
                raise InputError(
                    f"field names must be identifiers: got {name!r} in event {self.name!r}",
                    details={"field": "fields", "value": name},
                )
            if name in STANDARD_FIELDS:
                raise InputError(
                    f"field {name!r} of event {self.name!r} is a standard field of every record and cannot be declared",
                    details={"field": "fields", "value": name},
                )
            if not isinstance(spec, FieldSpec):
                raise InputError(
                    f"field {name!r} of event {self.name!r} must be a FieldSpec: got {type(spec).__name__}",
                    details={"field": "fields", "value": name, "type": type(spec).__name__},
                )
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EventSpec):
            return NotImplemented
        mine = (self.name, self.summary, dict(self.fields), self.open_fields)
        return mine == (other.name, other.summary, dict(other.fields), other.open_fields)

    def __hash__(self) -> int:
        return hash((self.name, self.summary, tuple(self.fields.items()), self.open_fields))


EVENTS: dict[str, EventSpec] = {}
"""Every declared event, by name. Extend it with :func:`declare_event`."""
_EVENTS_LOCK = threading.Lock()


def declare_event(name: str, *, summary: str, fields: Mapping[str, FieldSpec], open_fields: bool = False) -> EventSpec:
    """Add an event to :data:`EVENTS`; declaring the same event twice is harmless.

    A metric family with records of its own declares them once, at import, and then
    logs them like the built-in events. ``open_fields=True`` also accepts fields not
    declared, as JSON data (see :class:`EventSpec`; a path is written as its string).

    Raises
    ------
    InputError
        For a malformed declaration, or a name already declared differently.

    Example
    -------
    >>> spec = declare_event(
    ...     "example.spectrum",
    ...     summary="Eigenvalues of the prediction covariance.",
    ...     fields={"eigenvalues": FieldSpec("array", required=True)},
    ... )
    >>> sorted(spec.fields)
    ['eigenvalues']
    """
    spec = EventSpec(name, summary, fields, open_fields)
    with _EVENTS_LOCK:
        existing = EVENTS.get(spec.name)
        if existing is not None and existing != spec:
            raise InputError(
                f"event {spec.name!r} is already declared differently: {existing!r}",
                details={"field": "name", "value": spec.name},
            )
        EVENTS[spec.name] = spec
    return spec


def event_spec(name: object) -> EventSpec:
    """The declaration of event ``name``; :class:`InputError` naming close matches when unknown."""
    spec = EVENTS.get(name) if isinstance(name, str) else None
    if spec is None:
        close = difflib.get_close_matches(name, list(EVENTS), n=1) if isinstance(name, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(
            f"unknown event {name!r}{hint}: declare it with geno_lewm.observability.declare_event first; "
            f"known events: {', '.join(sorted(EVENTS))}",
            details={"field": "event", "value": name},
        )
    return spec


# ---------------------------------------------------------------- built-in events
_S: FieldType = "string"
_N: FieldType = "number"
_I: FieldType = "integer"

declare_event(
    "training.metric",
    summary="One value of a named metric at a training step.",
    fields={
        "name": FieldSpec(_S, required=True, description="Dotted metric name, e.g. geno_lewm.training.collapse.kl_reg"),
        "value": FieldSpec(_N, required=True, description="The metric's value (non-finite: null plus non_finite)"),
        "unit": FieldSpec(_S, required=True, description="Unit of the value, '1' for a ratio"),
        "kind": FieldSpec(_S, required=True, choices=get_args(MetricKind), description="Kind of metric"),
        "variant": FieldSpec(_S, nullable=True, description="The convention used where there is more than one"),
        "threshold": FieldSpec(_N, nullable=True, description="Alert bound in force; null when none applies"),
        "batch_size": FieldSpec(_I, description="Rows N of the batch the value was computed on"),
        "dim": FieldSpec(_I, description="Dimension D of the batch"),
        "dtype": FieldSpec(_S, description="Data type of the batch"),
        "backend": FieldSpec(_S, description="Backend that computed the value"),
        "device": FieldSpec(_S, description="Device the value was computed on"),
        "compute_seconds": FieldSpec(_N, description="Time taken to compute the metrics of the batch"),
    },
)
declare_event(
    "training.collapse.alert",
    summary="A collapse criterion was crossed.",
    fields={
        "criterion": FieldSpec(_S, required=True, description="The metric whose criterion tripped"),
        "value": FieldSpec(_N, required=True, description="The metric's value"),
        "threshold": FieldSpec(_N, required=True, description="The bound it crossed"),
        "diagnosis": FieldSpec(_S, description="What the failure most likely is"),
        "detail": FieldSpec(
            _S, description="Where the values behind the alert are (a diverged check's non-finite values)"
        ),
    },
)
_RUN_START_FIELDS = {
    "config": FieldSpec("object", description="The run's configuration"),
    "description": FieldSpec(_S, description="Free text about the run"),
    "geno_lewm_version": FieldSpec(_S, description="Version of geno_lewm (filled in when absent)"),
    "python_version": FieldSpec(_S, description="Version of Python (filled in when absent)"),
    "hostname": FieldSpec(_S, description="Machine the run ran on (filled in when absent)"),
}
_RUN_END_FIELDS = {
    "duration_seconds": FieldSpec(_N, description="Wall-clock time since run.start"),
    "error": FieldSpec(_S, description="The exception that ended a failed run"),
}
declare_event("run.start", summary="A run began; its configuration and environment.", fields=_RUN_START_FIELDS)
declare_event(
    "run.end",
    summary="A run ended.",
    fields={
        "status": FieldSpec(_S, required=True, choices=("completed", "failed", "interrupted"), description="Outcome"),
        **_RUN_END_FIELDS,
    },
)

# The GenoLeWM family's own lifecycle events, so that code written for the family's logger
# runs unchanged on this one. Their data is the caller's (a training loop's numbers, a
# checkpoint's path...), so they are open; what is known of them is declared and checked.
# The start and end are read back as run.start and run.end (RunStartRecord, RunEndRecord),
# so every field those records type is declared with that type here too: what this logger
# writes, it reads back.
_RUN_STATUS = ("completed", "failed", "interrupted")
declare_event(
    "training.run.start",
    summary="A training run began (the GenoLeWM family's start event); the caller's start data.",
    fields=_RUN_START_FIELDS,
    open_fields=True,
)
declare_event(
    "training.run.end",
    summary="A training run ended (the GenoLeWM family's end event).",
    fields={
        "status": FieldSpec(_S, choices=_RUN_STATUS, description="Outcome"),
        "duration_ms": FieldSpec(_N, description="Wall-clock time since the start, in milliseconds"),
        **_RUN_END_FIELDS,
    },
    open_fields=True,
)
declare_event(
    "training.step",
    summary="One optimisation step of a training loop; the loop's own numbers.",
    fields={},
    open_fields=True,
)
declare_event(
    "training.epoch.end",
    summary="A training epoch ended; the loop's own numbers.",
    fields={"epoch": FieldSpec(_I, description="The epoch that ended")},
    open_fields=True,
)
declare_event(
    "training.checkpoint.write",
    summary="A checkpoint was written.",
    fields={},
    open_fields=True,
)
declare_event(
    "error",
    summary="A GenoLeWMError ended a logged run (geno_lewm.observability.logged_run), as the family writes it.",
    fields={
        "code": FieldSpec(_S, required=True, description="Stable name of the error's class, e.g. input_error"),
        "message": FieldSpec(_S, required=True, description="The error's message"),
        "details": FieldSpec("object", description="The error's details for programs (field, value...)"),
        "remediation": FieldSpec(_S, nullable=True, description="What to do about it; null when nothing more"),
    },
)


# ------------------------------------------------------------------ values
def non_finite_label(value: float) -> str:
    """``"nan"``, ``"inf"`` or ``"-inf"``: how ``non_finite`` names a non-finite float."""
    if math.isnan(value):
        return "nan"
    return "inf" if value > 0 else "-inf"


def _escape(key: str) -> str:
    """A key as one segment of a ``non_finite`` path (RFC 6901 escaping)."""
    return key.replace("~", "~0").replace("/", "~1")


class _Normaliser:
    """Turns the fields of one call into JSON-ready values, collecting non-finite numbers."""

    __slots__ = ("event", "non_finite")

    def __init__(self, event: str) -> None:
        self.event = event
        self.non_finite: dict[str, str] = {}

    def fail(self, path: str, condition: str, value: object) -> InputError:
        return InputError(
            f"{path!r} of event {self.event!r} must be {condition}: got {value!r}",
            details={"field": path, "event": self.event, "value": value, "type": type(value).__name__},
        )

    def _scalar(self, value: Any) -> Any:
        """Unwrap a NumPy scalar or a one-element tensor; anything else unchanged."""
        if isinstance(value, (str, bytes, list, tuple, dict)) or not hasattr(value, "item"):
            return value
        try:
            return value.item()
        except (TypeError, ValueError, RuntimeError):
            return value

    def number(self, path: str, value: Any) -> float | None:
        if type(value) is float:
            result = value
        else:
            scalar = self._scalar(value)
            if isinstance(scalar, bool) or type(scalar).__name__ == "bool_" or not isinstance(scalar, numbers.Real):
                raise self.fail(path, "a real number", value)
            try:
                result = float(scalar)
            except OverflowError:
                result = math.copysign(math.inf, scalar)
        if math.isfinite(result):
            return result
        self.non_finite[path] = non_finite_label(result)
        return None

    def integer(self, path: str, value: Any) -> int:
        scalar = value if type(value) is int else self._scalar(value)
        if isinstance(scalar, bool) or type(scalar).__name__ == "bool_" or not isinstance(scalar, numbers.Integral):
            raise self.fail(path, "an integer", value)
        return int(scalar)

    def string(self, path: str, value: Any, choices: tuple[str, ...] = ()) -> str:
        if not isinstance(value, str):
            raise self.fail(path, "a string", value)
        if choices and value not in choices:
            raise self.fail(path, f"one of {', '.join(map(repr, choices))}", value)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise self.fail(path, "valid Unicode text", value) from None
        return str(value)

    def boolean(self, path: str, value: Any) -> bool:
        scalar = self._scalar(value)
        if not (isinstance(scalar, bool) or type(scalar).__name__ == "bool_"):
            raise self.fail(path, "a boolean", value)
        return bool(scalar)

    def json(self, path: str, value: Any, depth: int = 0) -> Any:  # noqa: PLR0911 - one return per JSON type
        """Any JSON value: nested lists and string-keyed mappings of scalars."""
        if depth > MAX_DEPTH:
            raise self.fail(path, f"JSON data nested at most {MAX_DEPTH} deep", type(value).__name__)
        if value is None:
            return None
        if isinstance(value, str):
            return self.string(path, value)
        if isinstance(value, Mapping):
            out = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise self.fail(f"{path}/{key!r}", "under a string key", key)
                out[key] = self.json(f"{path}/{_escape(key)}", item, depth + 1)
            return out
        if not isinstance(value, (list, tuple)) and hasattr(value, "tolist") and bool(getattr(value, "ndim", 0)):
            data = value.detach() if hasattr(value, "detach") else value
            value = (data.cpu() if hasattr(data, "cpu") else data).tolist()
        if isinstance(value, (list, tuple)):
            return [self.json(f"{path}/{index}", item, depth + 1) for index, item in enumerate(value)]
        scalar = self._scalar(value)
        if isinstance(scalar, bool) or type(scalar).__name__ == "bool_":
            return bool(scalar)
        if isinstance(scalar, numbers.Integral):
            return int(scalar)
        if isinstance(scalar, numbers.Real):
            return self.number(path, scalar)
        raise self.fail(path, "JSON data (numbers, strings, booleans, None, lists, string-keyed mappings)", value)

    def value(self, path: str, spec: FieldSpec, value: Any) -> Any:
        if value is None:
            if spec.nullable:
                return None
            raise self.fail(path, f"a {spec.type}, not None", value)
        kind = spec.type
        if kind == "number":
            return self.number(path, value)
        if kind == "string":
            return self.string(path, value, spec.choices)
        if kind == "integer":
            return self.integer(path, value)
        if kind == "boolean":
            return self.boolean(path, value)
        result = self.json(path, value)
        expected = dict if kind == "object" else list
        if not isinstance(result, expected):
            raise self.fail(path, "a mapping" if kind == "object" else "a sequence", value)
        return result


def normalise_fields(event: str, fields: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Check ``fields`` against the declaration of ``event`` and make them JSON-ready.

    Returns the converted fields (NumPy and torch scalars become Python numbers, arrays
    and tensors become lists, non-finite numbers become ``None``) and the ``non_finite``
    map. Raises :class:`InputError` for an unknown event, an undeclared field, a
    missing required field or a value of the wrong type; ``fields`` is not modified.
    """
    spec = event_spec(event)
    normaliser = _Normaliser(event)
    out: dict[str, Any] = {}
    declared = spec.fields
    for name, value in fields.items():
        field_spec = declared.get(name)
        if field_spec is None and spec.open_fields and name not in STANDARD_FIELDS:
            out[name] = normaliser.json(name, os.fspath(value) if isinstance(value, os.PathLike) else value)
            continue
        if field_spec is None:
            close = difflib.get_close_matches(name, list(declared), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(
                f"event {event!r} has no field {name!r}{hint}; its fields: {', '.join(declared) or 'none'}",
                details={"field": name, "event": event},
            )
        out[name] = normaliser.value(name, field_spec, value)
    for name, field_spec in declared.items():
        if field_spec.required and name not in out:
            raise InputError(
                f"event {event!r} needs field {name!r}", details={"field": name, "event": event, "missing": True}
            )
    return out, normaliser.non_finite


def normalise_step(event: str, step: Any) -> int:
    """``step`` as a non-negative ``int`` (NumPy and 0-d tensor integers accepted)."""
    normaliser = _Normaliser(event)
    try:
        result = normaliser.integer("step", step)
    except InputError:
        result = -1
    if result < 0:
        raise normaliser.fail("step", "a non-negative integer", step)
    return result


def encode_line(record: Mapping[str, Any]) -> bytes:
    """One record as strict JSON on one line, UTF-8, newline-terminated.

    Raises :class:`InputError` when the line would exceed :data:`MAX_LINE_BYTES`.
    """
    line = json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n"
    data = line.encode("utf-8")
    if len(data) > MAX_LINE_BYTES:
        raise InputError(
            f"a record of event {record.get('event')!r} would be {len(data)} bytes, over the "
            f"{MAX_LINE_BYTES}-byte limit of one log line: log a summary instead of the raw data",
            details={"field": "record", "event": record.get("event"), "bytes": len(data)},
        )
    return data
