"""The structured JSON-lines run log (RFC-0006).

:func:`get_logger` returns a :class:`GenoLeWMLogger` that appends one strict-JSON object
per line to ``<log_dir>/<run_id>.jsonl``. It is a structlog logger built with
``structlog.wrap_logger`` over this module's own file sink and processors: it never calls
``structlog.configure()`` and never touches the standard ``logging`` module, so an
application's own logging setup is unaffected, and its setup does not change these
records.

What a record promises (details in ``rfcs/0006-structured-logs.md``):

* **checked**: every event name is in the catalogue (:data:`EVENTS`, extended with
  :func:`declare_event`) and every field has its declared type, else
  :class:`~geno_lewm.errors.InputError` and nothing is written;
* **self-describing**: ``schema_version``, a UTC ISO-8601 ``timestamp``, ``level``,
  ``event``, ``component``, ``run_id``, ``pid`` and ``step`` when known;
* **strict JSON**: NaN and infinities are written as ``null`` with a ``non_finite``
  entry naming the field; NumPy and torch scalars are written as numbers;
* **durable**: each record is one ``write()`` on a file opened with ``O_APPEND``, so it
  is in the operating system's hands when the call returns (a SIGKILL loses nothing
  already logged; ``fsync=True`` also survives power loss), and concurrent writers
  never interleave partial lines on a local filesystem.

It also speaks the GenoLeWM family's logging API, so code written for the family's
logger runs on it unchanged: :func:`get_logger` takes the family's ``level`` and
``pretty`` (and their environment variables), the logger has ``warn`` beside
``warning``, the family's lifecycle events are in the catalogue, and :func:`logged_run`
and :func:`shutdown_run` bracket and close a run. What it writes stays this package's
strict-JSON format (RFC-0006 says why).

Example
-------
>>> import tempfile
>>> from geno_lewm.logs import read_log
>>> log = get_logger("training", log_dir=tempfile.mkdtemp(), run_id="example")
>>> log.info("training.metric", name="loss", value=float("nan"), unit="1", kind="gauge", step=10)
>>> record = next(iter(read_log(log.path)))
>>> record.name, record.step, record.non_finite
('loss', 10, {'value': 'nan'})
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import secrets
import sys
import threading
import time
from collections.abc import Iterator, Mapping, MutableMapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Protocol

import structlog

from geno_lewm._events import (
    EVENTS,
    LEVELS,
    MAX_LINE_BYTES,
    SCHEMA_VERSION,
    STANDARD_FIELDS,
    EventSpec,
    FieldSpec,
    FieldType,
    declare_event,
    encode_line,
    normalise_fields,
    normalise_step,
)
from geno_lewm._paths import DEFAULT_LOG_DIR, LOG_DIR_ENV, default_log_dir
from geno_lewm._validation import shown
from geno_lewm._version import __version__
from geno_lewm.errors import GenoLeWMError, InputError

__all__ = [
    "DEFAULT_LOG_DIR",
    "EVENTS",
    "LEVELS",
    "LOG_DIR_ENV",
    "LOG_FORMAT_ENV",
    "LOG_LEVEL_ENV",
    "MAX_LINE_BYTES",
    "RUN_ID_ENV",
    "RUN_ID_PATTERN",
    "SCHEMA_VERSION",
    "STANDARD_FIELDS",
    "EventSpec",
    "FieldSpec",
    "FieldType",
    "GenoLeWMLogger",
    "TextSink",
    "declare_event",
    "default_run_id",
    "get_logger",
    "logged_run",
    "new_run_id",
    "shutdown_run",
]

RUN_ID_ENV = "GENO_LEWM_RUN_ID"
"""Environment variable naming the run when ``get_logger`` is given none (e.g. shared by
every rank of a distributed job)."""
LOG_LEVEL_ENV = "GENO_LEWM_LOG_LEVEL"
"""Environment variable naming the least severe level written when ``get_logger`` is given
none: ``debug``, ``info`` (the default), ``warn`` (or ``warning``) or ``error``."""
LOG_FORMAT_ENV = "GENO_LEWM_LOG_FORMAT"
"""Environment variable that, set to ``pretty``, turns on the human-readable mirror on
standard error when ``get_logger`` is given neither ``mirror`` nor ``pretty``."""

_LEVEL_NAMES = {"debug": 0, "info": 1, "warn": 2, "warning": 2, "error": 3}
"""Accepted level names (the family's ``warn`` and this package's ``warning`` alike) -> rank."""

RUN_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
"""What a run id may be: 1 to 128 letters, digits, ``.``, ``_`` or ``-``, not starting with
one of the last three. It becomes a file name, so it can name nothing but a file directly
inside the log directory (no separator, never ``.`` or ``..``)."""
_RUN_ID = re.compile(RUN_ID_PATTERN)
_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class TextSink(Protocol):
    """Where the human-readable mirror goes: anything with ``write(str)``."""

    def write(self, text: str, /) -> Any:
        """Write ``text``."""


# ------------------------------------------------------------------ run ids
def new_run_id() -> str:
    """A fresh run id in the GenoLeWM family's form: ``run-`` and 12 random hex digits,
    e.g. ``run-1a2b3c4d5e6f``; safe as a file name.
    """
    return f"run-{secrets.token_hex(6)}"


_DEFAULT_RUN_ID: str | None = None
_RUN_ID_LOCK = threading.Lock()


def default_run_id() -> str:
    """The run id used when none is given: :data:`RUN_ID_ENV` if set, else one fresh id
    created on first use and kept for the life of the process.

    Every logger of a process (and of its forked workers) that is not given a run id so
    writes to the same run file, however often :func:`get_logger` is called.
    """
    global _DEFAULT_RUN_ID  # noqa: PLW0603 - one lazily created id per process
    from_env = os.environ.get(RUN_ID_ENV)
    if from_env:
        return _check_run_id(from_env, RUN_ID_ENV)
    with _RUN_ID_LOCK:
        if _DEFAULT_RUN_ID is None:
            _DEFAULT_RUN_ID = new_run_id()
        return _DEFAULT_RUN_ID


def _check_run_id(value: object, name: str = "run_id") -> str:
    if not isinstance(value, str) or not _RUN_ID.fullmatch(value):
        raise InputError(
            f"{name!r} must be 1 to 128 letters, digits, '.', '_' or '-', not starting with '.', '_' or '-': "
            f"got {shown(value)}",
            details={"field": name, "value": shown(value)},
        )
    return value


# --------------------------------------------------------------------- sink
class _FileSink:
    """One append-only log file, shared by every logger of the process that writes to it.

    Each record goes out in a single ``os.write`` on an ``O_APPEND`` descriptor: no
    user-space buffer can hold it back, and the kernel places it at the end of the file
    in one piece. The file is opened on first write (creating its directory) and reopened
    after :meth:`close`.
    """

    __slots__ = ("_fd", "_lock", "_torn", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._torn = False

    def _open(self, fsync: bool) -> int:
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(self.path, flags, 0o644)
        if created and fsync and hasattr(os, "O_DIRECTORY"):
            directory = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        self._fd = fd
        return fd

    def write(self, data: bytes, *, fsync: bool) -> None:
        """Append ``data`` (one newline-terminated record); ``fsync`` also forces it to disk.

        If an earlier write failed part-way (a full disk), the next record starts on a new
        line, so the torn fragment stays a line of its own that a reader reports.
        """
        with self._lock:
            fd = self._fd if self._fd is not None else self._open(fsync)
            if self._torn:
                data = b"\n" + data
            view = memoryview(data)
            written = 0
            try:
                while written < len(view):
                    written += os.write(fd, view[written:])
            except BaseException:
                self._torn = self._torn or written > 0
                raise
            self._torn = False
            if fsync:
                os.fsync(fd)

    def close(self) -> None:
        """Close the descriptor; the next write reopens the file."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def flush(self) -> None:
        """Force what was written to stable storage (each record already reached the
        operating system in its own ``write``; this survives power loss too).
        """
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)

    def after_fork(self) -> None:
        self._lock = threading.Lock()


_SINKS: dict[str, _FileSink] = {}
_SINKS_LOCK = threading.Lock()


def _sink_for(path: Path) -> _FileSink:
    key = os.path.normcase(str(path))
    with _SINKS_LOCK:
        sink = _SINKS.get(key)
        if sink is None:
            sink = _SINKS[key] = _FileSink(path)
        return sink


def _after_fork_in_child() -> None:
    global _SINKS_LOCK, _RUN_ID_LOCK, _LOGGERS_LOCK  # noqa: PLW0603 - locks held by other threads at fork
    _SINKS_LOCK = threading.Lock()
    _RUN_ID_LOCK = threading.Lock()
    _LOGGERS_LOCK = threading.Lock()
    for sink in _SINKS.values():
        sink.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --------------------------------------------------------------- processors
def _utc_timestamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class _BuildRecord:
    """Structlog processor: check the event against the catalogue and build the record.

    The standard fields come first, in a fixed order, then the event's own fields, then
    ``non_finite`` when there is anything to say.
    """

    __slots__ = ("component", "run_id")

    def __init__(self, component: str, run_id: str) -> None:
        self.component = component
        self.run_id = run_id

    def __call__(self, _logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
        event = event_dict.pop("event")
        step = event_dict.pop("step", None)
        if method_name not in LEVELS:
            raise InputError(f"'level' must be one of {', '.join(LEVELS)}: got {method_name!r}")
        if event == "run.start":
            event_dict.setdefault("geno_lewm_version", __version__)
            event_dict.setdefault("python_version", platform.python_version())
            event_dict.setdefault("hostname", platform.node())
        fields, non_finite = normalise_fields(event, event_dict)
        record: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "timestamp": _utc_timestamp(),
            "level": method_name,
            "event": event,
            "component": self.component,
            "run_id": self.run_id,
            "pid": os.getpid(),
        }
        if step is not None:
            record["step"] = step if type(step) is int and step >= 0 else normalise_step(event, step)
        record.update(fields)
        if non_finite:
            record["non_finite"] = non_finite
        return record


def _render(_logger: Any, _method_name: str, record: MutableMapping[str, Any]) -> tuple[tuple[bytes], dict[str, Any]]:
    """Structlog processor: the record as one JSON line (the wrapped output also gets the dict)."""
    return (encode_line(record),), {"record": record}


def _human(record: Mapping[str, Any]) -> str:
    """One record as a short human-readable line for the stderr mirror."""
    non_finite = record.get("non_finite", {})
    parts = [record["timestamp"][11:23], f"{record['level']:<7}", record["component"], record["event"]]
    if "step" in record:
        parts.append(f"step={record['step']}")
    for key, value in record.items():
        if key in STANDARD_FIELDS:
            continue
        if key in non_finite:
            shown = non_finite[key]
        elif isinstance(value, float):
            shown = f"{value:.6g}"
        else:
            shown = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
        parts.append(f"{key}={shown}")
    return " ".join(parts) + "\n"


class _Output:
    """What structlog's bound logger forwards to: the file, and the optional mirror."""

    __slots__ = ("fsync", "mirror", "sink")

    def __init__(self, sink: _FileSink, mirror: bool | TextSink, fsync: bool) -> None:
        self.sink = sink
        self.mirror = mirror
        self.fsync = fsync

    def _emit(self, line: bytes, *, record: dict[str, Any]) -> None:
        self.sink.write(line, fsync=self.fsync)
        if self.mirror is not False:
            stream = sys.stderr if self.mirror is True else self.mirror
            stream.write(_human(record))

    debug = info = warning = error = _emit


# ------------------------------------------------------------------- logger
class GenoLeWMLogger:
    """A run log: checked, strict-JSON records appended to :attr:`path`.

    Build it with :func:`get_logger`. The methods ``debug``, ``info``, ``warning`` (and
    its GenoLeWM family spelling ``warn``) and ``error`` take an event name from the
    catalogue and that event's fields, plus ``step`` (a non-negative integer, or ``None``
    when unknown). They return once the record is in the file, and raise
    :class:`~geno_lewm.errors.InputError` (writing nothing) for an unknown event, an
    undeclared field, a missing required field or a value of the wrong type. A call below
    the logger's :attr:`level` does nothing. Safe to share between threads.

    The monitors give this logger the full description of each check (batch, convention,
    bound, diagnosis); a logger they did not create gets only the family's minimal records.
    They tell the two apart by :attr:`geno_lewm_full_records`, not by type, so the
    dependency-free core never imports this module.
    """

    __slots__ = ("_bound", "_component", "_floor", "_output", "_run_id")

    geno_lewm_full_records: ClassVar[bool] = True
    """This logger asks for the full records (``geno_lewm._protocols.FULL_RECORDS_MARKER``)."""

    def __init__(self, component: str, run_id: str, output: _Output, level: str = "debug") -> None:
        self._component = component
        self._run_id = run_id
        self._output = output
        self._floor = _LEVEL_NAMES[level]
        self._bound = structlog.wrap_logger(
            output,
            processors=[_BuildRecord(component, run_id), _render],
            wrapper_class=structlog.BoundLogger,
            context_class=dict,
            cache_logger_on_first_use=False,
        ).bind()

    @property
    def component(self) -> str:
        """The part of the program that writes these records, e.g. ``training``."""
        return self._component

    @property
    def run_id(self) -> str:
        """The run these records belong to."""
        return self._run_id

    @property
    def path(self) -> Path:
        """The file records are appended to: ``<log_dir>/<run_id>.jsonl``."""
        return self._output.sink.path

    @property
    def level(self) -> str:
        """The least severe level written: ``debug``, ``info``, ``warning`` or ``error``."""
        return LEVELS[self._floor]

    def debug(self, event: str, **fields: Any) -> None:
        """Record ``event`` at level debug."""
        if self._floor <= 0:
            self._bound.debug(event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        """Record ``event`` at level info."""
        if self._floor <= 1:
            self._bound.info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Record ``event`` at level warning."""
        if self._floor <= 2:
            self._bound.warning(event, **fields)

    def warn(self, event: str, **fields: Any) -> None:
        """Record ``event`` at level warning: the GenoLeWM family's name for :meth:`warning`."""
        if self._floor <= 2:
            self._bound.warning(event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        """Record ``event`` at level error."""
        self._bound.error(event, **fields)

    @contextlib.contextmanager
    def run(self, *, config: Mapping[str, Any] | None = None, description: str | None = None) -> Iterator[None]:
        """Bracket a run with ``run.start`` and ``run.end`` records.

        ``run.end`` says ``completed``, ``interrupted`` (KeyboardInterrupt) or ``failed``
        (any other exception, named in ``error``; the exception propagates), with the
        run's duration.

        Example
        -------
        >>> import tempfile
        >>> log = get_logger("training", log_dir=tempfile.mkdtemp(), run_id="example")
        >>> with log.run(config={"lr": 1e-3}):
        ...     log.info("training.metric", name="loss", value=0.5, unit="1", kind="gauge", step=1)
        """
        start: dict[str, Any] = {}
        if config is not None:
            start["config"] = config
        if description is not None:
            start["description"] = description
        self.info("run.start", **start)
        started = time.perf_counter()
        try:
            yield
        except KeyboardInterrupt:
            self.warning("run.end", status="interrupted", duration_seconds=time.perf_counter() - started)
            raise
        except BaseException as error:
            self.error(
                "run.end",
                status="failed",
                duration_seconds=time.perf_counter() - started,
                error=f"{type(error).__name__}: {error}",
            )
            raise
        self.info("run.end", status="completed", duration_seconds=time.perf_counter() - started)

    def close(self) -> None:
        """Close the file (shared with other loggers of the same path); a later record reopens it."""
        self._output.sink.close()

    def flush(self) -> None:
        """Force the records written so far to stable storage (see ``fsync`` of :func:`get_logger`)."""
        self._output.sink.flush()

    def __repr__(self) -> str:
        return f"GenoLeWMLogger(component={self._component!r}, run_id={self._run_id!r}, path={str(self.path)!r})"


_LOGGERS: dict[tuple[str, str, str, bool, bool, str], GenoLeWMLogger] = {}
_LOGGERS_LOCK = threading.Lock()


def _check_level(level: object) -> str:
    """``level`` (else a non-blank :data:`LOG_LEVEL_ENV`, else ``info``) as a level, case and spaces aside."""
    name = "level"
    if level is None:
        level, name = os.environ.get(LOG_LEVEL_ENV, "").strip() or "info", LOG_LEVEL_ENV
    rank = _LEVEL_NAMES.get(level.strip().lower()) if isinstance(level, str) else None
    if rank is None:
        raise InputError(
            f"{name!r} must be one of debug, info, warn, warning, error: got {level!r}",
            details={"field": name, "value": level},
        )
    return LEVELS[rank]


def _resolve_mirror(mirror: object, pretty: object) -> bool | TextSink:
    """Where the human-readable mirror goes: ``mirror`` when it is ``True`` or a stream;
    else ``pretty``; else standard error when :data:`LOG_FORMAT_ENV` is ``pretty`` or
    standard error is a terminal; else nowhere.
    """
    if mirror is not True and mirror is not False and not callable(getattr(mirror, "write", None)):
        raise InputError(
            f"'mirror' must be a bool or a text stream: got {type(mirror).__name__}",
            details={"field": "mirror", "type": type(mirror).__name__},
        )
    if pretty is not None and not isinstance(pretty, bool):
        raise InputError(
            f"'pretty' must be a bool or None: got {pretty!r}", details={"field": "pretty", "value": pretty}
        )
    if mirror is not False:
        return mirror  # type: ignore[return-value]
    if pretty is not None:
        return pretty
    if os.environ.get(LOG_FORMAT_ENV, "").strip().lower() == "pretty":
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # a closed or detached stream
        return False


def _directory(log_dir: object) -> Path:
    """``log_dir`` (else :func:`~geno_lewm._paths.default_log_dir`) as an absolute path."""
    if log_dir is None:
        log_dir = default_log_dir()
    try:
        return Path(os.path.abspath(Path(log_dir).expanduser()))  # type: ignore[arg-type]
    except TypeError:
        raise InputError(
            f"'log_dir' must be a path: got {type(log_dir).__name__}",
            details={"field": "log_dir", "type": type(log_dir).__name__},
        ) from None


def get_logger(
    component: str,
    *,
    run_id: str | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    level: str | None = None,
    pretty: bool | None = None,
    mirror: bool | TextSink = False,
    fsync: bool = False,
) -> GenoLeWMLogger:
    """The JSON-lines logger of ``component``, writing to ``<log_dir>/<run_id>.jsonl``.

    The GenoLeWM family's signature and environment variables, plus ``mirror`` and ``fsync``.

    Parameters
    ----------
    component:
        Which part of the program writes, e.g. ``"training"``; stored in every record.
    run_id:
        The run's id and file name; else ``GENO_LEWM_RUN_ID``, else the process's own
        fresh id, ``run-`` and 12 hex digits (:func:`default_run_id`).
    log_dir:
        The directory of the log (created on the first record); else the environment
        variable ``GENO_LEWM_LOG_DIR``, else ``~/.geno-lewm/logs``.
    level:
        The least severe level written: ``"debug"``, ``"info"``, ``"warn"`` (or
        ``"warning"``) or ``"error"``; calls below it write nothing. Else
        ``GENO_LEWM_LOG_LEVEL``, else ``"info"``.
    pretty:
        Also write each record as a short human-readable line to standard error. ``None``
        (default): only when ``GENO_LEWM_LOG_FORMAT=pretty`` or standard error is a
        terminal. The JSON file is written either way.
    mirror:
        Mirror to standard error (``True``) or to the given text stream, whatever
        ``pretty`` says; ``False`` (default) leaves the choice to ``pretty``.
    fsync:
        Force every record to stable storage before returning (survives power loss and
        kernel crashes, at the cost of a disk flush per record).

    Calling it again with the same arguments (and a ``bool`` mirror) returns the same
    logger, so it is cheap to call where the logger is needed.

    Raises
    ------
    InputError
        For a malformed ``component`` or ``run_id`` (they become part of a file name), an
        unknown level, or a ``log_dir`` that exists but is not a directory.

    Example
    -------
    >>> import tempfile
    >>> log = get_logger("training", log_dir=tempfile.mkdtemp(), run_id="example", pretty=False)
    >>> log.path.name, log.level
    ('example.jsonl', 'info')
    """
    if not isinstance(component, str) or not _COMPONENT.fullmatch(component):
        raise InputError(
            f"'component' must be 1 to 128 letters, digits, '.', '_' or '-': got {component!r}",
            details={"field": "component", "value": component},
        )
    run = default_run_id() if run_id is None else _check_run_id(run_id)
    chosen_level = _check_level(level)
    resolved = _resolve_mirror(mirror, pretty)
    if not isinstance(fsync, bool):
        raise InputError(f"'fsync' must be a bool: got {fsync!r}", details={"field": "fsync", "value": fsync})
    directory = _directory(log_dir)
    key = (component, str(directory), run, resolved, fsync, chosen_level) if isinstance(resolved, bool) else None
    with _LOGGERS_LOCK:
        logger = _LOGGERS.get(key) if key is not None else None
        if logger is not None:
            return logger
        if directory.exists() and not directory.is_dir():
            raise InputError(
                f"'log_dir' must be a directory: {str(directory)!r} is a file",
                details={"field": "log_dir", "value": str(directory)},
            )
        output = _Output(_sink_for(directory / f"{run}.jsonl"), resolved, fsync)
        logger = GenoLeWMLogger(component, run, output, chosen_level)
        if key is not None:
            _LOGGERS[key] = logger
        return logger


# -------------------------------------------------------------------- runs
@contextlib.contextmanager
def logged_run(
    component: str = "runtime",
    *,
    run_id: str | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    start_event: str | None = None,
    end_event: str | None = None,
    start_data: Mapping[str, Any] | None = None,
) -> Iterator[GenoLeWMLogger]:
    """Bracket a run, the GenoLeWM family's way: yields :func:`get_logger`'s logger.

    Writes ``start_event`` (info, with ``start_data`` as its fields) on entry when given
    and ``end_event`` (info) when the block completes. When a
    :class:`~geno_lewm.errors.GenoLeWMError` escapes the block, writes an ``error`` record
    (``code``, ``message``, ``details``, ``remediation``:
    :meth:`~geno_lewm.errors.GenoLeWMError.record_fields`) and re-raises it (once per error
    and file, however deeply blocks of one run nest); other exceptions pass through
    unrecorded. The file is flushed to stable storage on the way out, whatever happened.

    Example
    -------
    >>> import tempfile
    >>> from geno_lewm.errors import InputError
    >>> try:
    ...     with logged_run(run_id="example", log_dir=tempfile.mkdtemp(), start_event="training.run.start") as log:
    ...         raise InputError("'lr' must be > 0: got -1", details={"field": "lr"}, remediation="use lr > 0")
    ... except InputError:
    ...     pass
    >>> [line.count('"event":"error"') for line in log.path.read_text().splitlines()]
    [0, 1]
    """
    logger = get_logger(component, run_id=run_id, log_dir=log_dir)
    if start_data is not None and not isinstance(start_data, Mapping):
        raise InputError(
            f"'start_data' must be a mapping of field names to values: got {type(start_data).__name__}",
            details={"field": "start_data", "type": type(start_data).__name__},
        )
    if start_event is not None:
        logger.info(start_event, **dict(start_data or {}))
    try:
        yield logger
    except GenoLeWMError as error:
        # The error being raised matters more than its record: a record that cannot be
        # written (a full disk) must not replace it. Nested blocks of one run record it once.
        with contextlib.suppress(InputError, OSError):
            if error.mark_recorded(logger.path):
                logger.error("error", **error.record_fields())
        raise
    else:
        if end_event is not None:
            logger.info(end_event)
    finally:
        with contextlib.suppress(OSError):
            logger.flush()


def shutdown_run(run_id: str, log_dir: str | os.PathLike[str] | None = None) -> None:
    """Close run ``run_id`` in ``log_dir`` (default as for :func:`get_logger`): its file is closed and its
    cached loggers dropped (one still held reopens it if it writes; the next ``shutdown_run`` closes it again).
    """
    run = _check_run_id(run_id)
    directory = _directory(log_dir)
    path = directory / f"{run}.jsonl"
    with _LOGGERS_LOCK:
        for key in [key for key, logger in _LOGGERS.items() if logger.path == path]:
            del _LOGGERS[key]
    with _SINKS_LOCK:
        sink = _SINKS.get(os.path.normcase(str(path)))
    if sink is not None:
        sink.close()
