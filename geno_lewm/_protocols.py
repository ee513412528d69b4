"""What a monitor writes to, as protocols: a structured logger and metric sinks.

Telemetry, beside the core: standard library only, and no knowledge of any metric
family. A monitor is handed objects that satisfy these protocols (the library's own
JSON-lines logger, a GenoLeWM family logger, a structlog or standard-library logger, a
user's tracker adapter) and never imports what implements them: :func:`adapt_logger`
puts any accepted logger behind one calling convention where it enters. The adapters
for W&B, MLflow, TensorBoard and CSV live in :mod:`geno_lewm.integrations.sinks`.

Example
-------
>>> class Printer:
...     def log_metrics(self, metrics, step):
...         print(step, sorted(metrics))
>>> publish_metrics(check_sinks(Printer()), {"b": 1.0, "a": 2.0}, step=7)
7 ['a', 'b']
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any, Protocol, TypeAlias, runtime_checkable

from geno_lewm.errors import InputError

__all__ = [
    "FULL_RECORDS_MARKER",
    "STDLIB_FIELDS_KEY",
    "EventLogger",
    "MetricLogger",
    "MetricSink",
    "adapt_logger",
    "check_logger",
    "check_sinks",
    "publish_metrics",
    "wants_full_records",
]


MetricLogger: TypeAlias = Any
"""What a caller may pass wherever a logger is accepted (checked at run time by
:func:`adapt_logger`, so the static type is open):

* this package's :class:`~geno_lewm.observability.GenoLeWMLogger`;
* a GenoLeWM family logger: ``debug``/``info``/``warn``/``error(event, **fields)``
  (``warn``, not ``warning``);
* a structlog logger, bound or a lazy proxy (``structlog.get_logger()``,
  ``structlog.stdlib.get_logger()``);
* a standard-library :class:`logging.Logger` or :class:`logging.LoggerAdapter`;
* anything else with ``info(event, **fields)`` and ``warning`` or ``warn`` of the same shape.
"""

FULL_RECORDS_MARKER = "geno_lewm_full_records"
"""The class attribute by which a logger asks for this package's full description of a check.

A logger whose ``geno_lewm_full_records`` attribute is ``True`` (this package's own
:class:`~geno_lewm.observability.GenoLeWMLogger`, or a wrapper around it) gets every
field this package knows: the batch's shape, dtype, backend and compute time, the
convention and bound of each metric, diagnoses, alert-state changes. Every other logger
is someone else's and gets only the GenoLeWM family's records, in the family's minimal
shape (RFC-0006, "Writing to loggers this package did not create").
"""

STDLIB_FIELDS_KEY = "geno_lewm"
"""The ``extra`` key under which a standard-library log record carries an event's fields.

:class:`logging.Logger` takes no arbitrary keyword fields, and an ``extra`` key that names
a :class:`logging.LogRecord` attribute (``name``, ``msg``...) is an error there. So an
event reaches it as a message ``"<event> key=value ..."`` plus one ``extra`` entry, the
record attribute ``geno_lewm``: a dict holding ``event`` and the fields, for handlers
and formatters that want the values rather than the text.
"""


class EventLogger:
    """A caller's logger behind one calling convention: ``info(event, **fields)`` and
    ``warning(event, **fields)``.

    Built by :func:`adapt_logger` once, where a logger enters the package; everything
    further in writes to this object and never asks what is behind it. ``full`` says
    whether the logger asked for this package's full description of a check
    (:data:`FULL_RECORDS_MARKER`); ``target`` is the logger as given.
    """

    __slots__ = ("_info", "_stdlib", "_warning", "full", "target")

    def __init__(self, target: Any, *, full: bool, info: Any, warning: Any, stdlib: bool) -> None:
        self.target = target
        self.full = full
        self._info = info
        self._warning = warning
        self._stdlib = stdlib

    def info(self, event: str, **fields: Any) -> None:
        """Record ``event`` at the logger's informational level."""
        if self._stdlib:
            _stdlib_write(self.target, logging.INFO, event, fields)
        else:
            self._info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Record ``event`` at the logger's warning level (its ``warning``, else its ``warn``)."""
        if self._warning is None:
            raise InputError(
                f"the logger {type(self.target).__name__} was accepted for info() only and cannot record {event!r}",
                details={"field": "logger", "type": type(self.target).__name__, "event": event},
            )
        if self._stdlib:
            _stdlib_write(self.target, logging.WARNING, event, fields)
        else:
            self._warning(event, **fields)

    def __repr__(self) -> str:
        return f"EventLogger({self.target!r}, full={self.full})"


def _stdlib_write(target: logging.Logger | logging.LoggerAdapter[Any], level: int, event: str, fields: Any) -> None:
    """One event to a standard-library logger: a readable message, the values in ``extra``."""
    if not target.isEnabledFor(level):
        return
    message: Any = " ".join([event, *(f"{key}={value}" for key, value in fields.items())])
    options: MutableMapping[str, Any] = {}
    extra: dict[str, Any] = {}
    logger: Any = target
    # An adapter's process() replaces the extra it is given by its own, so each adapter of
    # a chain (an adapter over an adapter) is applied here in turn, from the outermost in,
    # and their extras merged (the outer's value wins); the event's fields go on top.
    while isinstance(logger, logging.LoggerAdapter):
        message, options = logger.process(message, options)
        extra = {**(options.pop("extra", None) or {}), **extra}
        logger = logger.logger
    extra[STDLIB_FIELDS_KEY] = {"event": event, **fields}
    logger.log(level, "%s", message, extra=extra, **options)


def wants_full_records(logger: object) -> bool:
    """Whether ``logger`` asked for this package's full description (:data:`FULL_RECORDS_MARKER`)."""
    return getattr(logger, FULL_RECORDS_MARKER, False) is True


@runtime_checkable
class MetricSink(Protocol):
    """Anything that accepts a monitor's numbers: ``log_metrics(metrics, step)``.

    ``metrics`` maps metric names to floats (NaN and infinities possible); ``step`` is the
    training step of the check, a non-negative ``int``. The mapping is the sink's own
    copy.
    """

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record ``metrics`` at ``step``."""


def adapt_logger(logger: object, name: str = "logger", *, warnings: bool = True) -> EventLogger | None:
    """``logger`` behind :class:`EventLogger`'s convention; ``None`` for ``None``.

    ``warnings=False`` accepts a logger that only needs ``info`` (a caller that never
    warns). An :class:`EventLogger` is returned as it is, so an inner function may adapt
    what its caller already adapted at no cost.

    Raises
    ------
    InputError
        Naming the missing method, when ``logger`` has no ``info`` callable as
        ``info(event, **fields)``, or (with ``warnings``) neither ``warning`` nor ``warn``
        of that shape; naming the attribute, when reading one of them (or
        :data:`FULL_RECORDS_MARKER`) raises. Call this where a logger enters,
        before anything is computed or recorded, so a wrong logger changes nothing
        instead of failing half-way through publishing a check.

    Example
    -------
    >>> import logging
    >>> adapted = adapt_logger(logging.getLogger("example"))
    >>> adapted.full, type(adapted).__name__
    (False, 'EventLogger')
    """
    if logger is None or isinstance(logger, EventLogger):
        return logger
    if logger is logging:
        # The module's info() and warning() are the root logger's, less the basicConfig()
        # they call first: write to the root logger itself.
        logger = logging.getLogger()
    full = _attribute(logger, FULL_RECORDS_MARKER, name) is True
    if isinstance(logger, (logging.Logger, logging.LoggerAdapter)):
        return EventLogger(logger, full=full, info=logger.info, warning=logger.warning, stdlib=True)
    info = _method(logger, "info", name)
    warning = _method(logger, "warning", name) or _method(logger, "warn", name)
    missing = [] if info is not None else ["info()"]
    if warnings and warning is None:
        missing.append("warning() or warn()")
    if missing:
        needs = "info() and warning() methods (or warn())" if warnings else "an info() method"
        raise InputError(
            f"{name!r} must be a logger with {needs}, such as geno_lewm.observability.get_logger('training'), "
            f"a GenoLeWM family logger, a structlog logger or a logging.Logger: got {type(logger).__name__} "
            f"without {' and '.join(missing)} (each taking an event and keyword fields: info(event, **fields))",
            details={"field": name, "type": type(logger).__name__, "missing": missing},
        )
    return EventLogger(logger, full=full, info=info, warning=warning, stdlib=False)


def _attribute(logger: object, attribute: str, name: str) -> object:
    """``logger``'s ``attribute`` (``None`` when it has none); an :class:`InputError` when
    looking it up raises (a property that fails), so a broken logger is refused where it
    enters rather than half-way through publishing a check.
    """
    try:
        return getattr(logger, attribute, None)
    except Exception as error:
        raise InputError(
            f"{name!r} is a logger whose {attribute!r} cannot be read: {type(error).__name__}: {error}",
            details={"field": name, "type": type(logger).__name__, "attribute": attribute},
        ) from error


def _method(logger: object, attribute: str, name: str) -> Any:
    """``logger``'s ``attribute`` when it is callable as ``(event, **fields)``, else ``None``.

    A method whose signature cannot take an event and keyword fields (structlog's raw
    ``PrintLogger.info(message)``, an unbound ``logging.Logger.info``) is not that method:
    calling it would fail only once a check is half published. A callable whose signature
    cannot be read is taken at its word.
    """
    method = _attribute(logger, attribute, name)
    if not callable(method):
        return None
    try:
        signature = inspect.signature(method)
    except (TypeError, ValueError):
        return method
    try:
        signature.bind("event", field=None)
    except TypeError:
        return None
    return method


def check_logger(logger: object, name: str = "logger", *, warnings: bool = True) -> MetricLogger | None:
    """``logger`` unchanged when :func:`adapt_logger` accepts it, else its :class:`InputError`.

    For callers that keep the logger as given (a callback checking its argument at
    construction, a monitor adapting it on each check).
    """
    adapt_logger(logger, name, warnings=warnings)
    return logger


def check_sinks(sinks: object) -> tuple[MetricSink, ...]:
    """``sinks`` as a tuple, each checked to have a callable ``log_metrics``.

    Accepts one sink or a sequence of them (``None``: no sink); raises
    :class:`InputError` naming the position of anything that is not a sink.
    """
    if sinks is None:
        return ()
    if callable(getattr(sinks, "log_metrics", None)):
        return (sinks,)  # type: ignore[return-value]
    if isinstance(sinks, (str, bytes)) or not isinstance(sinks, Iterable):
        raise InputError(
            f"'sinks' must be a sequence of objects with a log_metrics(metrics, step) method: "
            f"got {type(sinks).__name__}",
            details={"field": "sinks", "type": type(sinks).__name__},
        )
    result = tuple(sinks)
    for index, sink in enumerate(result):
        if not callable(getattr(sink, "log_metrics", None)):
            raise InputError(
                f"'sinks' item {index} has no log_metrics(metrics, step) method: got {type(sink).__name__}",
                details={"field": "sinks", "index": index, "type": type(sink).__name__},
            )
    return result


def publish_metrics(sinks: Sequence[MetricSink], metrics: Mapping[str, float], step: int) -> None:
    """Call ``log_metrics`` of each sink in order, each with its own copy of ``metrics``.

    An exception from a sink propagates; the sinks after it are not called.
    """
    for sink in sinks:
        sink.log_metrics(dict(metrics), step)
