"""The scheduled prediction-dynamics monitor: the shared pipeline on batches of logits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from geno_lewm._protocols import MetricLogger, MetricSink, adapt_logger
from geno_lewm._validation import check_non_negative_int
from geno_lewm.metrics import MetricRegistry
from geno_lewm.training._pipeline import FamilyMonitor
from geno_lewm.training._recording import Measurement
from geno_lewm.training.alerting import AlertPolicy
from geno_lewm.training.dynamics._metrics import (
    DYNAMICS,
    PredictionCheck,
    PredictionThresholds,
    check_thresholds,
    measure,
    measurement,
)

__all__ = ["PredictionMonitor"]


class PredictionMonitor(FamilyMonitor[PredictionCheck]):
    """Check a batch of logits every ``log_every_steps`` steps.

    The schedule is :class:`~geno_lewm.training.collapse.CollapseMonitor`'s: call
    :meth:`observe` on every step; on unscheduled steps it returns ``None`` after an
    integer check and never looks at the logits; on scheduled ones (``step > 0`` and
    ``step % log_every_steps == 0``, or ``force=True``) it computes the metrics, applies
    the criteria, records to the registry and logger, and returns the
    :class:`PredictionCheck`. A rejected batch changes nothing.

    Parameters
    ----------
    log_every_steps:
        The schedule's period (default 50).
    thresholds:
        Alert thresholds; :class:`PredictionThresholds` defaults when omitted.
    backend:
        ``"auto"``, ``"python"``, ``"numpy"`` or ``"torch"``.
    registry:
        Where gauges go; the process default when omitted.
    policy, on_alert:
        The alert policy (warm-up, patience, hysteresis; see
        :mod:`geno_lewm.training.alerting`), or ``on_alert`` alone; with
        ``on_alert="raise"`` a check with alerts in force raises
        :class:`~geno_lewm.errors.TrainingAlertError` after it has been recorded. Neither:
        every tripped check is an alert and nothing raises.
    sinks:
        Metric sinks (:class:`~geno_lewm.integrations.sinks.MetricSink`) that get every
        check's gauges, by registry name.

    Example
    -------
    >>> monitor = PredictionMonitor(log_every_steps=10)
    >>> monitor.observe([[2.0, 0.0], [0.0, 2.0]], step=5) is None
    True
    >>> monitor.observe([[2.0, 0.0], [0.0, 2.0]], step=10).metrics.argmax_spread
    1.0
    """

    family = DYNAMICS

    __slots__ = ()

    def __init__(
        self,
        log_every_steps: int = 50,
        thresholds: PredictionThresholds | None = None,
        *,
        backend: str = "auto",
        registry: MetricRegistry | None = None,
        policy: AlertPolicy | None = None,
        on_alert: Literal["log", "raise"] | None = None,
        sinks: Sequence[MetricSink] | MetricSink | None = None,
    ) -> None:
        super().__init__(
            log_every_steps,
            check_thresholds(thresholds),
            backend=backend,
            registry=registry,
            policy=policy,
            on_alert=on_alert,
            sinks=sinks,
        )

    @property
    def thresholds(self) -> PredictionThresholds:
        """The thresholds in force."""
        chosen: PredictionThresholds = self._thresholds
        return chosen

    def observe(
        self, logits: Any, *, step: int, logger: MetricLogger | None = None, force: bool = False
    ) -> PredictionCheck | None:
        """Check one batch of logits if ``step`` is scheduled (or ``force``).

        Returns the :class:`PredictionCheck`, or ``None`` on an unscheduled step. Raises
        :class:`InputError` for a negative or non-integer step and, on a scheduled step,
        for bad logits; state is unchanged then.
        """
        if type(step) is not int or step < 0:
            step = check_non_negative_int("step", step)
        if not force and (step == 0 or step % self._every):
            return None
        logger = adapt_logger(logger)  # a wrong logger is refused before the logits are read
        statistics, batch = measure(logits, self._backend)
        return self._conclude(measurement(statistics.finalize(), batch), step=step, logger=logger)

    def _make_check(self, measurement: Measurement, alerts: tuple[Any, ...], step: int) -> PredictionCheck:
        return PredictionCheck(measurement.source, alerts, step, measurement.batch)

    def __repr__(self) -> str:
        return (
            f"PredictionMonitor(log_every_steps={self._every}, thresholds={self._thresholds!r}, "
            f"backend={self._backend!r})"
        )
