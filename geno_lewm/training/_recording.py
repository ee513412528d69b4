"""Publishing one check of any family: registry writes, ``training.metric`` events and
alert events, the same way for all of them.

For every gauge of a :class:`Measurement` the family's metrics table gives the public
name, the unit and the convention (``variant``); the registry gets the gauge, the
family's ``checks`` and ``alert`` counters and its ``compute_seconds`` histogram; a
logger gets one ``training.metric`` event (info) per gauge and one alert event (warning)
per alert in force. Nothing here knows a particular family.

What a metric or alert event carries depends on whose logger it is (RFC-0006): this
package's own logger (:data:`~geno_lewm._protocols.FULL_RECORDS_MARKER`) gets the full
description (batch, convention, bound, diagnosis); any other logger gets the GenoLeWM
family's minimal records, ``training.metric`` with ``name``, ``value``, ``unit``, ``kind``
and an alert with ``criterion``, ``value``, ``threshold``, each with ``step`` when known.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from geno_lewm._protocols import EventLogger, MetricLogger, adapt_logger
from geno_lewm.metrics import MetricRegistry, default_registry
from geno_lewm.training._criteria import Alert, bounds_by_metric
from geno_lewm.training._family import Family, MetricTable

__all__ = [
    "BatchInfo",
    "Measurement",
    "batch_fields",
    "log_alert_events",
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


def _with_step(fields: dict[str, Any], step: int | None) -> dict[str, Any]:
    """``fields`` plus ``step`` when it is known (the family's records leave it out otherwise)."""
    if step is not None:
        fields["step"] = step
    return fields


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
    """One ``training.metric`` event (info) per value.

    To this package's own logger each event carries its unit and convention from the
    table (``variants`` overriding), the bound in force (``bounds``; ``None`` where no
    criterion applies) and the batch ``context`` (``contexts`` overriding per metric). To
    any other logger it is the family's record: ``name``, ``value``, ``unit`` (the row's
    :attr:`~geno_lewm.training._family.MetricRow.foreign_unit`), ``kind`` and ``step``
    when known, nothing else.
    """
    adapted = adapt_logger(logger)
    if adapted is None:
        return
    for name, value in values.items():
        row = table.row(name)
        if not adapted.full:
            fields = {"name": table.name(name), "value": value, "unit": row.foreign_unit, "kind": "gauge"}
            adapted.info("training.metric", **_with_step(fields, step))
            continue
        extra = context if contexts is None or name not in contexts else {**context, **contexts[name]}
        adapted.info(
            "training.metric",
            name=table.name(name),
            value=value,
            unit=row.unit,
            kind="gauge",
            step=step,
            variant=variants.get(name, row.convention),
            threshold=bounds.get(name),
            **extra,
        )


def log_alert_events(
    family: Family,
    alerts: Sequence[Alert],
    logger: EventLogger,
    *,
    step: int | None,
    alert_fields: Mapping[str, Any],
) -> None:
    """One alert event (warning) per alert: the family's ``criterion``, ``value``,
    ``threshold`` and ``step`` when known to any logger; to this package's own, also the
    metric (where the family names it) and ``alert_fields`` (a diagnosis, say).
    """
    for alert in alerts:
        if not logger.full:
            fields = {"criterion": alert.criterion, "value": alert.value, "threshold": alert.threshold}
            logger.warning(family.alert_event, **_with_step(fields, step))
            continue
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
    :func:`log_metric_events`; to this package's own logger each carries the bound the
    family's criteria put on it, from ``thresholds`` and ``baselines``) and one alert
    event (warning) per alert (see :func:`log_alert_events`).
    """
    adapted = adapt_logger(logger)
    table = family.metrics
    target = default_registry() if registry is None else registry
    set_gauges(table, measurement.values, target)
    target.inc(table.name("checks"))
    if alerts:
        target.inc(table.name("alert"), len(alerts))
    if measurement.batch is not None:
        target.observe(table.name("compute_seconds"), measurement.batch.compute_seconds)
    if adapted is None:
        return
    bounds = (
        bounds_by_metric(family.criteria, measurement.values, thresholds=thresholds, baselines=baselines)
        if adapted.full
        else {}
    )
    log_metric_events(
        table,
        measurement.values,
        adapted,
        step=step,
        context=measurement.context,
        variants=measurement.variants,
        bounds=bounds,
        contexts=measurement.contexts,
    )
    log_alert_events(family, alerts, adapted, step=step, alert_fields=alert_fields)


def sink_values(family: Family, measurement: Measurement) -> dict[str, float]:
    """What sinks get: every gauge of the check, by its public name."""
    table = family.metrics
    return {table.name(name): value for name, value in measurement.values.items()}
