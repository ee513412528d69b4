"""The error hierarchy of geno_lewm.

Every error the library raises on purpose derives from :class:`GenoLeWMError`, so a
caller can catch "anything geno_lewm refused" in one clause. Each concrete error also
derives from the builtin a caller would naturally expect (``ValueError`` for bad input,
``ImportError`` for a missing optional dependency), so generic handlers keep working.

Example
-------
>>> from geno_lewm.errors import InputError
>>> try:
...     raise InputError("'kl_reg' must be finite: got nan", details={"field": "kl_reg"})
... except ValueError as error:
...     error.details["field"]
'kl_reg'
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

__all__ = [
    "RECORD_TEXT_LIMIT",
    "BackendUnavailableError",
    "CollapseDetectedError",
    "DistributedError",
    "GenoLeWMError",
    "InputError",
    "TrainingAlertError",
]


class GenoLeWMError(Exception):
    """Root of every error raised deliberately by geno_lewm.

    Every one pickles whole (its class, message, ``details`` and other attributes), so an
    error raised in another process (a DataLoader worker, a spawned rank, a process pool)
    reaches the parent as it was raised, whatever its constructor takes.

    Every one also says what a structured ``error`` log record needs (the GenoLeWM
    family's shape, see :meth:`record_fields`): ``code``, a short stable string per class
    (``input_error``...) that programs can match on when the message changes, and
    ``remediation``, what the caller can do about it (``None`` when there is nothing more
    to say than the message).
    """

    code: ClassVar[str] = "geno_lewm_error"
    """A short, stable name of the error's class, for log records and programs."""

    remediation: str | None = None
    """What to do about the error, when the message alone does not say; set per instance."""

    def record_fields(self) -> dict[str, Any]:
        """The fields of an ``error`` log record: ``code``, ``message``, ``details`` (a plain
        dict, empty when the error has none) and ``remediation``.

        A detail that JSON cannot hold (any object a check put there) is given as its
        ``repr``, so the record of an error can always be written. So that it also fits on
        one log line, a message or remediation over :data:`RECORD_TEXT_LIMIT` characters is
        cut there and says so, and details longer than that as JSON are replaced by
        ``{"cut": "<why>"}``.

        Example
        -------
        >>> InputError("'step' must be >= 0: got -1", details={"field": "step"}).record_fields()["code"]
        'input_error'
        """
        details = getattr(self, "details", None)
        data = _json_data(dict(details)) if isinstance(details, Mapping) else {}
        size = len(json.dumps(data))
        if size > RECORD_TEXT_LIMIT:
            data = {"cut": f"{size} characters of details as JSON, too long for a log record"}
        return {
            "code": self.code,
            "message": _cut(str(self)),
            "details": data,
            "remediation": None if self.remediation is None else _cut(self.remediation),
        }

    def mark_recorded(self, where: Hashable) -> bool:
        """Note that this error's ``error`` record is written to ``where`` (a log file's path):
        ``True`` the first time, ``False`` after, so a writer that sees the error again on its
        way out (nested :func:`~geno_lewm.observability.logged_run` blocks of one run) writes
        one record. The note travels with the error, pickled included.
        """
        recorded: set[Hashable] = self.__dict__.setdefault("_recorded_in", set())
        first = where not in recorded
        recorded.add(where)
        return first

    def __reduce__(self) -> tuple[Any, ...]:
        state = {name: _plain(value) for name, value in vars(self).items()}
        if isinstance(self, ImportError):  # kept by ImportError outside __dict__
            state.update(name=self.name, path=self.path)
        return (_rebuild, (type(self), self.args, state))


RECORD_TEXT_LIMIT = 16_384
"""The most characters an error record's message, remediation or details (as JSON) take, so
the record stays far below a log line's limit (1 MiB) whatever the error holds."""


def _cut(text: str) -> str:
    """``text``, cut at :data:`RECORD_TEXT_LIMIT` characters with a note of its full length."""
    if len(text) <= RECORD_TEXT_LIMIT:
        return text
    return f"{text[:RECORD_TEXT_LIMIT]}... (cut: {len(text)} characters)"


def _json_data(value: Any, depth: int = 0) -> Any:
    """``value`` with anything JSON cannot hold (or nested over 8 deep) replaced by its ``repr``."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if depth < 8 and isinstance(value, Mapping):
        return {str(key): _json_data(item, depth + 1) for key, item in value.items()}
    if depth < 8 and isinstance(value, (list, tuple)):
        return [_json_data(item, depth + 1) for item in value]
    return repr(value)


def _plain(value: Any) -> Any:
    """A read-only mapping as a dict (``MappingProxyType`` does not pickle); anything else as it is."""
    return dict(value) if isinstance(value, MappingProxyType) else value


def _rebuild(cls: type[GenoLeWMError], args: tuple[Any, ...], state: dict[str, Any]) -> GenoLeWMError:
    """The error :meth:`GenoLeWMError.__reduce__` took apart, without calling its constructor."""
    error = cls.__new__(cls)
    error.args = args
    for name, value in state.items():
        setattr(error, name, MappingProxyType(value) if name == "details" else value)
    return error


class InputError(GenoLeWMError, ValueError):
    """A value passed to the library is unusable; the message says what and where.

    ``details`` is a read-only mapping for programs: typically ``field`` (the argument's
    name), and where relevant ``row``, ``column``, ``value`` and ``type``;
    ``remediation`` optionally says what to do about it.
    """

    code: ClassVar[str] = "input_error"

    def __init__(
        self, message: str, *, details: Mapping[str, Any] | None = None, remediation: str | None = None
    ) -> None:
        super().__init__(message)
        self.details: Mapping[str, Any] = MappingProxyType(dict(details or {}))
        if remediation is not None:
            self.remediation = remediation


class BackendUnavailableError(GenoLeWMError, ImportError):
    """A computation backend was requested whose optional dependency is not installed."""

    code: ClassVar[str] = "backend_unavailable"

    def __init__(self, backend: str, extra: str) -> None:
        super().__init__(
            f"the {backend!r} backend needs an optional dependency that is not installed: "
            f"pip install 'geno-lewm[{extra}]'",
            name=extra,
        )
        self.backend = backend
        self.extra = extra
        self.remediation = f"pip install 'geno-lewm[{extra}]', or choose another backend"


class DistributedError(GenoLeWMError, RuntimeError):
    """Another rank of a ``torch.distributed`` group could not do its part of a collective
    check; the message names the rank and its error.

    Every rank raises together (the failing rank its own error, the others this one, or an
    :class:`InputError` when the failing rank's error was one), so none is left waiting in
    a collective.
    """

    code: ClassVar[str] = "distributed_error"


class TrainingAlertError(GenoLeWMError, RuntimeError):
    """A monitor whose alert policy says ``on_alert="raise"`` found alerts in force.

    Raised after the check has been recorded (registry, log, sinks), so the evidence is
    on disk when training stops. ``check`` is the monitor's check object (e.g. a
    :class:`~geno_lewm.training.collapse.CollapseCheck`), ``alerts`` the alerts in force
    and ``step`` the step of the check. Under ``torch.distributed`` every rank raises it
    at the same step, so all of them stop together.
    """

    code: ClassVar[str] = "training_alert"

    def __init__(
        self, message: str, *, check: Any = None, alerts: tuple[Any, ...] = (), step: int | None = None
    ) -> None:
        super().__init__(message)
        self.check = check
        self.alerts = tuple(alerts)
        self.step = step


class CollapseDetectedError(TrainingAlertError):
    """The collapse monitor's alerts stopped the run (a :class:`TrainingAlertError`)."""

    code: ClassVar[str] = "collapse_detected"
