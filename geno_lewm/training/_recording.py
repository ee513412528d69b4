"""Publishing one check of any family: registry writes, ``training.metric`` events and
alert events, the same way for all of them.

For every gauge of a :class:`Measurement` the family's metrics table gives the public
name, the unit and the convention (``variant``); the registry gets the gauge, the
family's ``checks`` and ``alert`` counters and its ``compute_seconds`` histogram; a
logger gets one ``training.metric`` event (info) per gauge and one alert event (warning)
per alert in force. Nothing here knows a particular family.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from geno_lewm._protocols import MetricLogger, check_logger
from geno_lewm.metrics import MetricRegistry, default_registry
from geno_lewm.training._criteria import Alert, bounds_by_metric
from geno_lewm.training._family import Family, MetricTable

__all__ = [
    "BatchInfo",
    "Measurement",
    "batch_fields",
    "log_metric_events",
    "record_check",
    "set_gauges",
    "sink_values",
]


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


@dataclass(frozen=True, slots=True)
class Measurement:
    """Everything a family computed at one check, as the pipeline publishes it.

    Attributes
    ----------
    values:
        Every gauge of the check by its name in the family's table, in publishing order.
    batch:
        The batch the values describe (``None`` when unknown).
    rows:
        The batch's rows (criteria with ``min_rows`` need it).
    context:
        The batch fields of every metric event.
    variants:
        Conventions that differ from the table's at this check (a metric computed
        across ranks by another rule, a top-k whose k is known only now).
    contexts:
        Per-metric replacements of context fields (spectra timed on their own).
    source:
        The family's own results (its metrics dataclass, say), for its check object.
    step:
        The step of the check, for families that keep a history.
    """

    values: Mapping[str, float]
    batch: BatchInfo | None
    rows: int
    context: Mapping[str, Any]
    variants: Mapping[str, str] = field(default_factory=dict)
    contexts: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: Any = None
    step: int | None = None


def set_gauges(table: MetricTable, values: Mapping[str, float], registry: MetricRegistry | None) -> None:
    """Set the gauge of each value (in the process default registry when ``registry`` is ``None``)."""
    target = default_registry() if registry is None else registry
    for name, value in values.items():
        target.set_gauge(table.name(name), value)


def log_metric_events(
    table: MetricTable,
    values: Mapping[str, float],
    logger: MetricLogger,
    *,
    step: int | None,
    context: Mapping[str, Any],
    variants: Mapping[str, str],
    bounds: Mapping[str, float | None],
    contexts: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """One ``training.metric`` event (info) per value, with its unit and convention from
    the table (``variants`` overriding), the bound in force (``bounds``; ``None`` where no
    criterion applies) and the batch ``context`` (``contexts`` overriding per metric).
    """
    check_logger(logger)
    for name, value in values.items():
        row = table.row(name)
        fields = context if contexts is None or name not in contexts else {**context, **contexts[name]}
        logger.info(
            "training.metric",
            name=table.name(name),
            value=value,
            unit=row.unit,
            kind="gauge",
            step=step,
            variant=variants.get(name, row.convention),
            threshold=bounds.get(name),
            **fields,
        )


def record_check(
    family: Family,
    measurement: Measurement,
    alerts: Sequence[Alert],
    *,
    step: int | None,
    registry: MetricRegistry | None,
    logger: MetricLogger | None,
    thresholds: object,
    baselines: Mapping[str, float | None],
    alert_fields: Mapping[str, Any],
) -> None:
    """Publish one check: the registry always, the logger when there is one.

    The registry gets every gauge, one more check, the number of alerts in force and the
    compute time; the logger one ``training.metric`` event per gauge (see
    :func:`log_metric_events`; each carries the bound the family's criteria put on it,
    from ``thresholds`` and ``baselines``) and one alert event (warning) per alert, with
    ``alert_fields`` (a diagnosis, say) added to each.
    """
    check_logger(logger)
    table = family.metrics
    target = default_registry() if registry is None else registry
    set_gauges(table, measurement.values, target)
    target.inc(table.name("checks"))
    if alerts:
        target.inc(table.name("alert"), len(alerts))
    if measurement.batch is not None:
        target.observe(table.name("compute_seconds"), measurement.batch.compute_seconds)
    if logger is None:
        return
    bounds = bounds_by_metric(family.criteria, measurement.values, thresholds=thresholds, baselines=baselines)
    log_metric_events(
        table,
        measurement.values,
        logger,
        step=step,
        context=measurement.context,
        variants=measurement.variants,
        bounds=bounds,
        contexts=measurement.contexts,
    )
    for alert in alerts:
        named = {"metric": alert.metric} if family.alert_names_metric else {}
        logger.warning(
            family.alert_event,
            criterion=alert.criterion,
            **named,
            value=alert.value,
            threshold=alert.threshold,
            step=step,
            **alert_fields,
        )


def sink_values(family: Family, measurement: Measurement) -> dict[str, float]:
    """What sinks get: every gauge of the check, by its public name."""
    table = family.metrics
    return {table.name(name): value for name, value in measurement.values.items()}
