"""What a metric family declares: its metrics table and its criteria, in one place each.

A family (collapse, prediction dynamics, ...) is a :class:`Family`: a
:class:`MetricTable` (every gauge it publishes, with unit, convention and summary, under
a stable public prefix), a table of :class:`~geno_lewm.training._criteria.Criterion`
rows, and how its alerts are written and raised. The generic monitor
(:mod:`geno_lewm.training._pipeline`) and the publishing functions
(:mod:`geno_lewm.training._recording`) read everything else from it.

Public metric names are stable strings written once in a family's table, never derived
from module paths: moving a module renames no Prometheus series and no log metric.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from geno_lewm.errors import TrainingAlertError
from geno_lewm.metrics import METRIC_NAMESPACE, MetricSpec, declare_metric
from geno_lewm.training._criteria import Alert, Criterion

__all__ = ["Family", "MetricRow", "MetricTable"]


@dataclass(frozen=True, slots=True)
class MetricRow:
    """One gauge of a family: its name within the family, unit, convention and summary.

    ``convention`` is what a log record calls the metric's ``variant``: the convention
    used where there is more than one (population variance, zero-norm rows count as 0...).
    ``shared_unit`` is the unit the GenoLeWM family's own loggers give the metric, where it
    differs from ``unit``; a logger this package did not create gets that one (RFC-0006).
    """

    name: str
    unit: str
    convention: str
    summary: str
    shared_unit: str | None = None

    @property
    def foreign_unit(self) -> str:
        """The unit written to a logger this package did not create: ``shared_unit``, else ``unit``."""
        return self.unit if self.shared_unit is None else self.shared_unit


@dataclass(frozen=True, slots=True)
class MetricTable:
    """Every gauge a family publishes, plus its three bookkeeping series.

    Attributes
    ----------
    family:
        The family's short name; its metrics are called
        ``geno_lewm.training.<family>.<metric>``.
    noun:
        How the bookkeeping series' summaries name the family (``"Collapse"``).
    rows:
        The gauges, in the order they are published and logged.
    """

    family: str
    noun: str
    rows: tuple[MetricRow, ...]
    _names: dict[str, str] = field(init=False, repr=False, compare=False)
    _rows: dict[str, MetricRow] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Names and rows are looked up for every gauge of every check: build them once.
        object.__setattr__(self, "_rows", {row.name: row for row in self.rows})
        names = {name: f"{self.prefix}.{name}" for name in (*self._rows, "alert", "checks", "compute_seconds")}
        object.__setattr__(self, "_names", names)

    @property
    def prefix(self) -> str:
        """The public prefix of the family's metric names."""
        return f"{METRIC_NAMESPACE}.{self.family}"

    def name(self, metric: str) -> str:
        """The registry and log name of ``metric``, e.g. ``geno_lewm.training.collapse.kl_reg``."""
        return self._names.get(metric) or f"{self.prefix}.{metric}"

    def row(self, metric: str) -> MetricRow:
        """The row of ``metric`` (``KeyError`` when it has none)."""
        return self._rows[metric]

    def __iter__(self) -> Iterator[MetricRow]:
        return iter(self.rows)

    def gauge_specs(self) -> tuple[MetricSpec, ...]:
        """The registry declarations of the gauges, one per row."""
        return tuple(MetricSpec(self.name(row.name), "gauge", row.unit, row.summary) for row in self.rows)

    def specs(self) -> tuple[MetricSpec, ...]:
        """The registry declarations of a monitored family: one gauge per row, the
        ``checks`` and ``alert`` counters and the ``compute_seconds`` histogram.
        """
        return (
            *self.gauge_specs(),
            MetricSpec(self.name("alert"), "counter", "1", f"{self.noun} alerts raised since the process started."),
            MetricSpec(self.name("checks"), "counter", "1", f"{self.noun} checks computed since the process started."),
            MetricSpec(
                self.name("compute_seconds"),
                "histogram",
                "seconds",
                f"Time to compute the {self.noun.lower()} metrics of one batch.",
            ),
        )

    def declare(self, *, bookkeeping: bool = True) -> None:
        """Declare :meth:`specs` in the registry's catalogue (idempotent); only the gauges
        without ``bookkeeping`` (a family with no monitor of its own).
        """
        for spec in self.specs() if bookkeeping else self.gauge_specs():
            declare_metric(spec)


@dataclass(frozen=True, slots=True)
class Family:
    """A metric family, as the generic monitor runs it.

    Attributes
    ----------
    metrics:
        Its metrics table.
    criteria:
        Its criteria table, in the order criteria are evaluated and reported.
    alert_event:
        The log event of one alert in force (e.g. ``training.collapse.alert``).
    alert_names_metric:
        Whether that event carries the compared ``metric`` apart from the ``criterion``.
    alert_type:
        The family's :class:`~geno_lewm.training._criteria.Alert` class.
    error_type:
        What a monitor raises under ``on_alert="raise"``.
    headline:
        The first words of that error's message (``"collapse detected"``).
    """

    metrics: MetricTable
    criteria: tuple[Criterion, ...]
    alert_event: str
    alert_names_metric: bool
    alert_type: type[Alert]
    error_type: type[TrainingAlertError]
    headline: str

    def criterion(self, name: str) -> Criterion | None:
        """The row called ``name``, ``None`` when the family has none."""
        return next((row for row in self.criteria if row.name == name), None)
