"""The one pipeline every monitored family runs: schedule -> compute -> criteria ->
alert policy -> registry -> log -> sinks -> raise.

A family's monitor subclasses :class:`FamilyMonitor`, names its
:class:`~geno_lewm.training._family.Family`, and writes only what is its own: the
``observe`` signature (which validates and computes, returning a
:class:`~geno_lewm.training._recording.Measurement`), the baselines it learns from the
run, and the check object it returns. Everything after the numbers happens in
:meth:`FamilyMonitor._conclude`, the same way for every family:

1. the family learns its baselines from the measurement (:meth:`~FamilyMonitor._learn`);
2. the criteria table is evaluated (:func:`~geno_lewm.training._criteria.evaluate`);
3. the alert policy, when there is one, decides which tripped criteria are alerts and
   which alerts begin or end;
4. the check object is built (:meth:`~FamilyMonitor._make_check`);
5. on the ranks that write: the registry, the log (metric events, alert events, alert
   state changes; a logger this package did not create gets only the GenoLeWM family's
   metric and alert records, see ``_recording.py``) and the sinks get the check;
6. under ``on_alert="raise"`` with alerts in force, the family's error is raised, after
   all of the above, with a message written from the alerts' own comparisons.

A walk through one ``observe`` call: ``rfcs/0012-architecture.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from geno_lewm._protocols import MetricLogger, MetricSink, adapt_logger, check_sinks, publish_metrics
from geno_lewm._validation import check_instance, check_non_negative_int, check_positive_int
from geno_lewm.backends import check_backend_name
from geno_lewm.metrics import MetricRegistry
from geno_lewm.training._criteria import Alert, evaluate
from geno_lewm.training._family import Family
from geno_lewm.training._recording import Measurement, record_check, sink_values
from geno_lewm.training.alerting import AlertChange, AlertPolicy, AlertTracker, check_policy, log_alert_changes

__all__ = ["FamilyMonitor"]

CheckT = TypeVar("CheckT")


class FamilyMonitor(Generic[CheckT]):
    """Base of the scheduled monitors: the schedule, the backend, the registry, the alert
    policy and the sinks, and the pipeline that runs after a family's compute step.

    Parameters
    ----------
    log_every_steps:
        The schedule's period: steps ``> 0`` that are multiples of it are checked.
    thresholds:
        The family's thresholds object, already checked by the subclass.
    backend:
        ``"auto"``, ``"python"``, ``"numpy"`` or ``"torch"``.
    registry:
        Where gauges go; the process default when ``None``.
    policy, on_alert:
        The alert policy (see :mod:`geno_lewm.training.alerting`); neither: every
        tripped check is an alert and nothing raises.
    sinks:
        Metric sinks that get every check's gauges, by public name.
    """

    family: ClassVar[Family]

    __slots__ = ("_backend", "_every", "_family", "_last_check", "_registry", "_sinks", "_thresholds", "_tracker")

    def __init__(
        self,
        log_every_steps: int,
        thresholds: Any,
        *,
        backend: str,
        registry: MetricRegistry | None,
        policy: AlertPolicy | None,
        on_alert: str | None,
        sinks: object,
        family: Family | None = None,
    ) -> None:
        self._family = type(self).family if family is None else family
        self._every = check_positive_int("log_every_steps", log_every_steps)
        self._backend = check_backend_name(backend)
        self._registry = None if registry is None else check_instance("registry", registry, MetricRegistry)
        self._thresholds = thresholds
        checked = check_policy(policy, on_alert)
        self._tracker = None if checked is None else AlertTracker(checked, source=self._family.metrics.prefix)
        self._sinks = check_sinks(sinks)
        self._last_check: CheckT | None = None

    # ------------------------------------------------------------ settings
    @property
    def log_every_steps(self) -> int:
        """The schedule's period."""
        return self._every

    @property
    def backend(self) -> str:
        """The requested backend."""
        return self._backend

    @property
    def policy(self) -> AlertPolicy | None:
        """The alert policy; ``None`` for the default behaviour (every tripped check is an
        alert, nothing raises).
        """
        return None if self._tracker is None else self._tracker.policy

    @property
    def sinks(self) -> tuple[MetricSink, ...]:
        """The sinks each check is sent to."""
        return self._sinks

    @property
    def last_check(self) -> CheckT | None:
        """The most recent check, ``None`` before the first."""
        return self._last_check

    def should_log(self, step: int) -> bool:
        """Whether ``step`` is scheduled: ``step > 0 and step % log_every_steps == 0``."""
        if type(step) is not int or step < 0:
            step = check_non_negative_int("step", step)
        return step > 0 and step % self._every == 0

    # ------------------------------------------------------------ family hooks
    def _learn(self, measurement: Measurement) -> None:
        """Take baselines from this check before the criteria are evaluated (none by default)."""

    def _baselines(self) -> Mapping[str, float | None]:
        """The baselines :class:`~geno_lewm.training._criteria.RatioOfBaseline` rows read."""
        return {}

    def _thresholds_for(self, measurement: Measurement) -> object:
        """The thresholds the criteria read at this check (the monitor's own by default)."""
        return self._thresholds

    def _readings(
        self, measurement: Measurement, thresholds: object, baselines: Mapping[str, float | None]
    ) -> tuple[Alert, ...]:
        """Every criterion evaluated at this check (the family's table, by default)."""
        family = self._family
        return tuple(
            evaluate(
                family.criteria,
                measurement.values,
                thresholds=thresholds,
                baselines=baselines,
                rows=measurement.rows,
                alert_type=family.alert_type,
            )
        )

    def _make_check(self, measurement: Measurement, alerts: tuple[Alert, ...], step: int) -> CheckT:
        """The family's check object."""
        raise NotImplementedError

    def _alert_fields(self, check: CheckT) -> dict[str, Any]:
        """Extra fields of this check's alert events (none by default)."""
        return {}

    def _reason(self, check: CheckT) -> str | None:
        """A word on what the alerts most likely mean, for the error message (none by default)."""
        return None

    # ------------------------------------------------------------ the pipeline
    def _conclude(
        self, measurement: Measurement, *, step: int, logger: MetricLogger | None, writes: bool = True
    ) -> CheckT:
        """Everything after the numbers: baselines, criteria, the alert policy, the check,
        recording (when ``writes``), sinks, and raising under ``on_alert="raise"``.

        ``logger`` is normally already adapted by the family's ``observe``
        (:func:`~geno_lewm._protocols.adapt_logger` at entry, before any work); adapting
        it again here costs nothing. Alert-state changes are this package's own events:
        only a logger that asked for full records gets them.
        """
        family = self._family
        adapted = adapt_logger(logger)
        self._learn(measurement)
        baselines = self._baselines()
        thresholds = self._thresholds_for(measurement)
        readings = self._readings(measurement, thresholds, baselines)
        tracker = self._tracker
        changes: tuple[AlertChange, ...] = ()
        if tracker is None:
            alerts = tuple(reading for reading in readings if reading.tripped)
        else:
            decision = tracker._apply(step, readings)
            alerts, changes = decision.active, decision.changes
        check = self._make_check(measurement, alerts, step)
        self._last_check = check
        if writes:
            record_check(
                family,
                measurement,
                alerts,
                step=step,
                registry=self._registry,
                logger=adapted,
                thresholds=thresholds,
                baselines=baselines,
                alert_fields=self._alert_fields(check),
            )
            if changes and adapted is not None and adapted.full:
                log_alert_changes(changes, adapted, source=family.metrics.prefix)
            if self._sinks:
                publish_metrics(self._sinks, sink_values(family, measurement), step)
        if alerts and tracker is not None and tracker.policy.on_alert == "raise":
            raise family.error_type(self._message(check, alerts, step), check=check, alerts=alerts, step=step)
        return check

    def _message(self, check: CheckT, alerts: Sequence[Alert], step: int) -> str:
        """One line naming each alert of a check, for the family's error."""
        reason = self._reason(check)
        why = "" if reason is None else f" ({reason})"
        return f"{self._family.headline} at step {step}{why}: " + "; ".join(alert.describe() for alert in alerts)
