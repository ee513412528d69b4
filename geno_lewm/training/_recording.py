"""Publishing one check of a metric family: registry writes and ``training.metric`` events.

Every family (collapse, prediction dynamics, ...) declares its gauges as
``<prefix>.<field>`` plus three shared series — ``<prefix>.checks`` and
``<prefix>.alert`` counters and a ``<prefix>.compute_seconds`` histogram — and logs one
``training.metric`` event per gauge with the same context fields. This module does both
the same way for all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from geno_lewm.metrics import CATALOGUE, MetricRegistry

if TYPE_CHECKING:
    from geno_lewm.integrations.sinks import MetricSink

__all__ = ["BatchInfo", "MetricLogger", "batch_fields", "checked_sinks", "log_metric_events", "publish_check"]


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """What a reader of the logs needs to compare checks: the batch's shape and dtype,
    where and by which backend it was computed, and how long that took.
    """

    batch_size: int
    dim: int
    dtype: str
    backend: str
    device: str
    compute_seconds: float


class MetricLogger(Protocol):
    """What publishing needs of a logger: structlog-style methods taking an event name
    and keyword fields.
    """

    def info(self, event: str, **fields: Any) -> Any:
        """Record an informational event."""

    def warning(self, event: str, **fields: Any) -> Any:
        """Record a warning event."""


def publish_check(
    registry: MetricRegistry, prefix: str, values: Mapping[str, float], *, alerts: int, batch: BatchInfo | None
) -> None:
    """Set the gauge ``<prefix>.<field>`` of each value, count the check and its alerts,
    and add the compute time to the family's histogram when the batch is known.
    """
    for field_name, value in values.items():
        registry.set_gauge(f"{prefix}.{field_name}", value)
    registry.inc(f"{prefix}.checks")
    if alerts:
        registry.inc(f"{prefix}.alert", alerts)
    if batch is not None:
        registry.observe(f"{prefix}.compute_seconds", batch.compute_seconds)


def batch_fields(batch: BatchInfo | None) -> dict[str, Any]:
    """The context fields a metric event carries about its batch (none when unknown)."""
    if batch is None:
        return {}
    return {
        "batch_size": batch.batch_size,
        "dim": batch.dim,
        "dtype": batch.dtype,
        "backend": batch.backend,
        "device": batch.device,
        "compute_seconds": batch.compute_seconds,
    }


def log_metric_events(
    logger: MetricLogger,
    prefix: str,
    values: Mapping[str, float],
    *,
    step: int | None,
    variants: Mapping[str, str],
    thresholds: Mapping[str, float | None],
    context: Mapping[str, Any],
) -> None:
    """One ``training.metric`` event (info) per value, with its unit from the catalogue,
    its convention (``variant``), the threshold in force (``None`` when none applies)
    and the batch ``context``.
    """
    for field_name, value in values.items():
        name = f"{prefix}.{field_name}"
        logger.info(
            "training.metric",
            name=name,
            value=value,
            unit=CATALOGUE[name].unit,
            kind="gauge",
            step=step,
            variant=variants[field_name],
            threshold=thresholds.get(field_name),
            **context,
        )


def checked_sinks(sinks: object) -> tuple[MetricSink, ...]:
    """A monitor's ``sinks`` argument as a tuple (``None``: none), validated; the sinks
    module is imported only when there are sinks.
    """
    if sinks is None:
        return ()
    from geno_lewm.integrations.sinks import check_sinks

    return check_sinks(sinks)
