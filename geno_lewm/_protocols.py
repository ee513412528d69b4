"""What a monitor writes to, as protocols: a structured logger and metric sinks.

Telemetry, beside the core: standard library only, and no knowledge of any metric
family. A monitor is handed objects that satisfy these protocols (the library's own
JSON-lines logger, a structlog logger, a user's tracker adapter) and never imports
what implements them; the adapters for W&B, MLflow, TensorBoard and CSV live in
:mod:`geno_lewm.integrations.sinks`.

Example
-------
>>> class Printer:
...     def log_metrics(self, metrics, step):
...         print(step, sorted(metrics))
>>> publish_metrics(check_sinks(Printer()), {"b": 1.0, "a": 2.0}, step=7)
7 ['a', 'b']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from geno_lewm.errors import InputError

__all__ = ["MetricLogger", "MetricSink", "check_logger", "check_sinks", "publish_metrics"]


class MetricLogger(Protocol):
    """What a monitor needs of a logger: structlog-style methods taking an event name and
    keyword fields.
    """

    def info(self, event: str, **fields: Any) -> Any:
        """Record an informational event."""

    def warning(self, event: str, **fields: Any) -> Any:
        """Record a warning event."""


@runtime_checkable
class MetricSink(Protocol):
    """Anything that accepts a monitor's numbers: ``log_metrics(metrics, step)``.

    ``metrics`` maps metric names to floats (NaN and infinities possible); ``step`` is the
    training step of the check, a non-negative ``int``. The mapping is the sink's own
    copy.
    """

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record ``metrics`` at ``step``."""


def check_logger(logger: object, name: str = "logger") -> MetricLogger | None:
    """``logger`` if it is ``None`` or has callable ``info`` and ``warning`` methods (the
    :class:`MetricLogger` protocol), else an :class:`InputError` naming what is missing —
    raised before anything is computed or recorded, not as an ``AttributeError`` halfway
    through publishing a check.
    """
    if logger is None:
        return None
    missing = [method for method in ("info", "warning") if not callable(getattr(logger, method, None))]
    if missing:
        raise InputError(
            f"{name!r} must be a logger with info() and warning() methods, such as "
            f"geno_lewm.observability.get_logger('training'): got {type(logger).__name__} without "
            f"{' or '.join(f'{method}()' for method in missing)}",
            details={"field": name, "type": type(logger).__name__, "missing": missing},
        )
    return logger  # type: ignore[return-value]


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
