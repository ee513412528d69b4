"""Representation-collapse monitoring for JEPA-style world models (RFC-0005 §3.6).

On a held-out validation batch every ``log_every_steps`` steps, compare the predictor's
outputs with their targets and raise an alert when the predictions lose their spread
(variance, pairwise distances) or the encoder's distribution drifts from N(0, I)
(``kl_reg``). Definitions and conventions: ``rfcs/0005-collapse-monitoring.md``.

The pieces, from the inside out:

* :func:`compute_collapse_metrics` — the seven numbers of one ``[N, D]`` batch;
* :func:`detect_collapse` — the RFC's alert criteria applied to them;
* :func:`record_collapse_metrics` — gauges and counters in the registry, and events in a
  logger;
* :class:`CollapseMonitor` — the three above on a schedule, with the pairwise baseline
  taken from the first observed batch.

The family's tables (metrics, units, conventions, criteria) are defined once, in
:mod:`geno_lewm.training._collapse_metrics`; the monitor runs the pipeline every family
shares (:mod:`geno_lewm.training._pipeline`). This module needs only the standard
library; NumPy and torch backends, and the spectral modules, are loaded only when a
batch or an option asks for them.

Example
-------
>>> monitor = CollapseMonitor(log_every_steps=100)
>>> batch = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]
>>> monitor.observe(batch, batch, kl_reg=0.1, step=50) is None  # not a scheduled step
True
>>> check = monitor.observe(batch, batch, kl_reg=0.1, step=100)
>>> check.tripped, round(check.metrics.pred_cos_mean, 6)
(False, 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any, Literal

from geno_lewm import _distributed
from geno_lewm._protocols import MetricSink, adapt_logger
from geno_lewm._validation import (
    check_bool,
    check_choice,
    check_instance,
    check_non_negative_int,
)
from geno_lewm.errors import InputError
from geno_lewm.metrics import MetricRegistry
from geno_lewm.training._collapse_calibrated import (
    COLLAPSE_CALIBRATED,
    CalibratedBounds,
    CalibratedThresholds,
    History,
    calibrated_bounds,
    calibrated_values,
)
from geno_lewm.training._collapse_distributed import (
    DISTRIBUTED_MODES,
    WITHIN_SHARD_VARIANT,
    CollapseStatistics,
    DistributedMode,
    collapse_statistics,
    distributed_collapse_metrics,
    distributed_non_finite,
    merge_statistics,
)
from geno_lewm.training._collapse_metrics import (
    COLLAPSE,
    METRIC_NAMES,
    BatchInfo,
    CollapseAlert,
    CollapseCheck,
    CollapseLogger,
    CollapseMetrics,
    CollapseThresholds,
    baselines_of,
    check_initial,
    check_kl_reg,
    compute_collapse_metrics,
    detect_collapse,
    measure,
    metric_name,
)
from geno_lewm.training._collapse_records import (
    check_spectrum,
    measurement_of,
    record_collapse_metrics,
)
from geno_lewm.training._collapse_state import spectrum_from_state
from geno_lewm.training._divergence import NON_FINITE, NonFinite, diverged_metrics, find_non_finite, non_finite_alert
from geno_lewm.training._pipeline import FamilyMonitor
from geno_lewm.training._recording import Measurement
from geno_lewm.training.alerting import AlertPolicy

if TYPE_CHECKING:  # the spectral modules are imported only when spectra are requested
    from geno_lewm.training._spectral import CollapseSpectrum

__all__ = [
    "DISTRIBUTED_MODES",
    "METRIC_NAMES",
    "WITHIN_SHARD_VARIANT",
    "BatchInfo",
    "CalibratedThresholds",
    "CollapseAlert",
    "CollapseCheck",
    "CollapseLogger",
    "CollapseMetrics",
    "CollapseMonitor",
    "CollapseStatistics",
    "CollapseThresholds",
    "Criteria",
    "DistributedMode",
    "check_kl_reg",
    "collapse_statistics",
    "compute_collapse_metrics",
    "detect_collapse",
    "distributed_collapse_metrics",
    "merge_statistics",
    "metric_name",
    "record_collapse_metrics",
]

_RECORD_ON = ("rank0", "all")
Criteria = Literal["rfc", "calibrated"]
CRITERIA: tuple[Criteria, ...] = ("rfc", "calibrated")
_STATE_VERSION = 1


# ------------------------------------------------------------------- recording
def _thresholds_of(value: object, kind: type[Any]) -> Any:
    """``thresholds`` checked against the kind the chosen criteria read."""
    if isinstance(value, (CollapseThresholds, CalibratedThresholds)) and not isinstance(value, kind):
        mode = "calibrated" if kind is CalibratedThresholds else "rfc"
        raise InputError(
            f"'thresholds' must be a {kind.__name__} with criteria={mode!r}: got {type(value).__name__}",
            details={"field": "thresholds", "type": type(value).__name__},
        )
    return check_instance("thresholds", value, kind)


def step_of(measurement: Measurement) -> int:
    """The step a measurement was taken at (0 when it was not said)."""
    return 0 if measurement.step is None else measurement.step


# --------------------------------------------------------------------- state
# --------------------------------------------------------------------- monitor
class CollapseMonitor(FamilyMonitor[CollapseCheck]):
    """Check a validation batch for collapse every ``log_every_steps`` steps.

    Call :meth:`observe` on every step from the training loop: on unscheduled steps it
    returns ``None`` after an integer check; on scheduled ones (``step > 0`` and
    ``step % log_every_steps == 0``, or ``force=True``) it computes the metrics, applies
    the criteria, records to the registry and logger, and returns the
    :class:`CollapseCheck`.

    The pairwise-distance criterion compares with a baseline: the
    ``initial_pairwise_pred_dist_mean`` given here, else the value of the first observed
    batch with at least two rows. A batch that is rejected (bad input) changes nothing,
    and in particular never becomes the baseline.

    Parameters
    ----------
    log_every_steps:
        The schedule's period (RFC-0005: 500).
    thresholds:
        Alert thresholds; RFC defaults when omitted.
    initial_pairwise_pred_dist_mean:
        A known baseline (finite, >= 0), e.g. restored from a checkpoint.
    backend:
        ``"auto"``, ``"python"``, ``"numpy"`` or ``"torch"``.
    registry:
        Where gauges go; the process default when omitted.
    spectrum:
        Also compute the spectral metrics of predictions and targets at each check
        (effective rank, top-k share, normalised std; :mod:`geno_lewm.training.spectrum`),
        publish them, and diagnose tripped checks. Off by default, so a check costs what
        the RFC metrics cost; on whenever ``thresholds.effective_rank_to_initial`` is set.
    initial_spectrum:
        A known spectral baseline (a :class:`~geno_lewm.training.spectrum.CollapseSpectrum`),
        e.g. restored from a checkpoint; else the first observed batch with at least two
        rows gives it.
    policy:
        An :class:`~geno_lewm.training.alerting.AlertPolicy` (warm-up, patience,
        hysteresis, ``on_alert``). Without one (the default) every tripped check is an
        alert and nothing raises, as RFC-0005 says; with one, the check's ``alerts`` are
        the alerts in force under it, and alerts raised and cleared are logged as
        ``training.alert.raised`` / ``training.alert.cleared`` events.
    on_alert:
        ``"log"`` or ``"raise"``: short for ``policy=AlertPolicy(on_alert=...)``. With
        ``"raise"``, a check with alerts in force raises
        :class:`~geno_lewm.errors.CollapseDetectedError` (carrying the check) after it has
        been recorded.
    sinks:
        :class:`~geno_lewm.integrations.sinks.MetricSink` objects (anything with
        ``log_metrics(metrics, step)``) called with the check's metrics, by registry name,
        after the registry and the log.
    distributed:
        What a scheduled check does when a ``torch.distributed`` default process group
        with more than one rank is initialised (every rank must then call ``observe`` on
        the same steps): ``"gather"`` (default) computes the metrics of the whole batch,
        the ranks' shards concatenated in rank order, exactly; ``"statistics"`` merges
        float64 sufficient statistics instead (the pairwise distance is then over pairs
        within shards); ``"off"`` checks each rank's own shard. See
        :mod:`geno_lewm.integrations.distributed`. Without such a group nothing
        distributed happens.
    record_on:
        Under ``torch.distributed``, which ranks write the registry, the log and the sinks:
        ``"rank0"`` (default) or ``"all"``. Every rank gets the check (and raises) alike.
    """

    family = COLLAPSE

    __slots__ = (
        "_baseline",
        "_bounds",
        "_criteria",
        "_distributed",
        "_diverged",
        "_history",
        "_initial_spectrum",
        "_record_on",
        "_spectrum",
    )

    def __init__(
        self,
        log_every_steps: int = 500,
        thresholds: CollapseThresholds | CalibratedThresholds | None = None,
        initial_pairwise_pred_dist_mean: float | None = None,
        *,
        backend: str = "auto",
        registry: MetricRegistry | None = None,
        spectrum: bool = False,
        initial_spectrum: CollapseSpectrum | None = None,
        policy: AlertPolicy | None = None,
        on_alert: Literal["log", "raise"] | None = None,
        sinks: Sequence[MetricSink] | MetricSink | None = None,
        distributed: DistributedMode = "gather",
        record_on: Literal["rank0", "all"] = "rank0",
        criteria: Criteria = "rfc",
    ) -> None:
        self._criteria = check_choice("criteria", criteria, CRITERIA)
        calibrated = self._criteria == "calibrated"
        chosen: CollapseThresholds | CalibratedThresholds
        if calibrated:
            chosen = CalibratedThresholds() if thresholds is None else _thresholds_of(thresholds, CalibratedThresholds)
        else:
            chosen = CollapseThresholds() if thresholds is None else _thresholds_of(thresholds, CollapseThresholds)
        super().__init__(
            log_every_steps,
            chosen,
            backend=backend,
            registry=registry,
            policy=policy,
            on_alert=on_alert,
            sinks=sinks,
            family=COLLAPSE_CALIBRATED if calibrated else None,
        )
        rank_criteria = isinstance(chosen, CollapseThresholds) and chosen.effective_rank_to_initial is not None
        self._spectrum = check_bool("spectrum", spectrum) or rank_criteria or calibrated
        self._initial_spectrum = check_spectrum("initial_spectrum", initial_spectrum)
        self._baseline = check_initial(initial_pairwise_pred_dist_mean)
        self._distributed = check_choice("distributed", distributed, DISTRIBUTED_MODES)
        if self._distributed == "statistics" and self._spectrum:
            raise InputError(
                "spectra need the whole batch: use distributed='gather' with spectrum=True or calibrated criteria",
                details={"field": "distributed", "value": distributed},
            )
        self._record_on = check_choice("record_on", record_on, _RECORD_ON)
        self._history = History() if calibrated else None
        self._diverged: NonFinite | None = None
        self._bounds: dict[tuple[int, int], CalibratedBounds] = {}

    # ------------------------------------------------------------ settings and state
    @property
    def thresholds(self) -> CollapseThresholds | CalibratedThresholds:
        """The thresholds in force: :class:`CollapseThresholds` for the RFC criteria,
        :class:`CalibratedThresholds` for the calibrated ones.
        """
        chosen: CollapseThresholds | CalibratedThresholds = self._thresholds
        return chosen

    @property
    def criteria(self) -> Criteria:
        """``"rfc"`` (RFC-0005's criteria, the default) or ``"calibrated"`` (RFC-0013's)."""
        return "calibrated" if self._history is not None else "rfc"

    @property
    def reference_step(self) -> int | None:
        """The step of the calibrated criteria's reference check (the first observed), ``None``
        before it or with the RFC criteria.
        """
        return None if self._history is None else self._history.reference_step

    @property
    def initial_pairwise_pred_dist_mean(self) -> float | None:
        """The pairwise baseline: given, or taken from the first observed batch; ``None`` until known."""
        return self._baseline

    @property
    def spectrum(self) -> bool:
        """Whether checks compute spectral metrics."""
        return self._spectrum

    @property
    def initial_spectrum(self) -> CollapseSpectrum | None:
        """The spectral baseline (rank criteria, diagnosis): given, or taken from the first
        observed batch when spectra are on; ``None`` until known.
        """
        return self._initial_spectrum

    @property
    def active_alerts(self) -> dict[str, int | None]:
        """Criterion -> step it was raised at, for the alerts in force under the policy
        (without a policy: the criteria the last check tripped).
        """
        if self._tracker is not None:
            return self._tracker.active
        check = self._last_check
        return {} if check is None else {alert.criterion: check.step for alert in check.alerts}

    def state_dict(self) -> dict[str, Any]:
        """What the monitor has learned from the run, as plain data for a checkpoint.

        The pairwise baseline, the spectral baseline and the alert policy's streaks, and
        with calibrated criteria their ``history``; not the configuration (thresholds,
        schedule, sinks), which the code that builds the monitor already holds. Restoring
        it on resume keeps the baselines of the start of the run: without it, the first
        batch after a restart (perhaps already collapsed) would become the reference.
        """
        spectrum = self._initial_spectrum
        state = {
            "version": _STATE_VERSION,
            "initial_pairwise_pred_dist_mean": self._baseline,
            "initial_spectrum": None if spectrum is None else asdict(spectrum),
            "alert_policy": None if self._tracker is None else self._tracker.state_dict(),
        }
        if self._history is not None:
            state["history"] = self._history.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state written by :meth:`state_dict`.

        Raises :class:`InputError` for a malformed state, in which case nothing changes.
        """
        version = state.get("version") if isinstance(state, Mapping) else None
        if type(version) is not int or version != _STATE_VERSION:
            raise InputError(
                f"'state' must be a mapping written by CollapseMonitor.state_dict (version {_STATE_VERSION})",
                details={"field": "state"},
            )
        baseline = check_initial(state.get("initial_pairwise_pred_dist_mean"), "state.initial_pairwise_pred_dist_mean")
        spectrum = spectrum_from_state(state.get("initial_spectrum"))
        history = History.from_state(state.get("history")) if self._history is not None else None
        policy_state = state.get("alert_policy")
        if self._tracker is not None and policy_state is not None:
            self._tracker.load_state_dict(policy_state)
        self._baseline = baseline
        self._initial_spectrum = spectrum
        if history is not None:
            self._history = history

    # ------------------------------------------------------------ observing
    def observe(
        self,
        prediction: Any,
        target: Any,
        *,
        kl_reg: Any,
        step: int,
        logger: CollapseLogger | None = None,
        force: bool = False,
    ) -> CollapseCheck | None:
        """Check one validation batch if ``step`` is scheduled (or ``force``).

        Returns the :class:`CollapseCheck`, or ``None`` on an unscheduled step (where the
        batch is not even looked at). Raises :class:`InputError` for a negative or
        non-integer step and, on a scheduled step, for a bad batch or ``kl_reg``; state
        is unchanged then. On a scheduled step, a ``logger`` that
        :func:`~geno_lewm._protocols.adapt_logger` refuses is an :class:`InputError` before
        the batch is looked at.
        """
        if type(step) is not int or step < 0:
            step = check_non_negative_int("step", step)
        if not force and (step == 0 or step % self._every):
            return None
        logger = adapt_logger(logger)
        spectra: CollapseSpectrum | None = None
        variants: dict[str, str] = {}
        writes = True
        if self._distributed != "off" and _distributed.world_size() > 1:
            found = distributed_non_finite(prediction, target, kl_reg)
            if found is not None:
                return self._divergence(
                    found, kl_reg, step, logger, writes=self._record_on == "all" or _distributed.rank() == 0
                )
            metrics, batch, spectra = distributed_collapse_metrics(
                prediction,
                target,
                kl_reg=kl_reg,
                step=step,
                backend=self._backend,
                mode=self._distributed,
                spectrum=self._spectrum,
            )
            writes = self._record_on == "all" or _distributed.rank() == 0
            if self._distributed == "statistics":
                variants = {"pairwise_pred_dist_mean": WITHIN_SHARD_VARIANT}
        else:
            try:
                metrics, batch, kernels, prepared = measure(prediction, target, check_kl_reg(kl_reg), self._backend)
            except InputError:
                found = find_non_finite(prediction, target, kl_reg)
                if found is None:
                    raise
                return self._divergence(found, kl_reg, step, logger, writes=True)
            if self._spectrum:
                from geno_lewm.training._spectral import DEFAULT_TOP_K, prepared_spectrum

                spectra = prepared_spectrum(
                    kernels, prepared.prediction, prepared.target, prepared.shape, DEFAULT_TOP_K
                )
        measurement = measurement_of(metrics, batch, spectra, variants, step)
        if self._history is not None and spectra is not None:
            thresholds: CalibratedThresholds = self._thresholds
            extra = calibrated_values(metrics, spectra, thresholds)
            measurement = replace(measurement, values={**measurement.values, **extra})
        return self._conclude(measurement, step=step, logger=logger, writes=writes)

    def _divergence(
        self, found: NonFinite, kl_reg: Any, step: int, logger: CollapseLogger | None, *, writes: bool
    ) -> CollapseCheck:
        """Record a check whose inputs hold non-finite values (``_divergence.py``): every
        metric NaN, one ``non_finite`` alert, then the alert policy as for any alert.
        """
        metrics = diverged_metrics(kl_reg)
        batch = BatchInfo(found.rows, found.dim, found.dtype, "none", found.device, 0.0)
        self._diverged = found
        try:
            return self._conclude(
                measurement_of(metrics, batch, None, {}, step), step=step, logger=logger, writes=writes
            )
        finally:
            self._diverged = None

    # ------------------------------------------------------------ pipeline hooks
    def _readings(
        self, measurement: Measurement, thresholds: object, baselines: Mapping[str, float | None]
    ) -> tuple[Any, ...]:
        """The criteria's readings; a diverged check has one, ``non_finite``, and a check
        after one also reads ``non_finite`` (untripped) so that its alert can clear.
        """
        if self._diverged is not None:
            return (non_finite_alert(self._diverged),)
        readings = super()._readings(measurement, thresholds, baselines)
        if self._tracker is not None and NON_FINITE in self._tracker.state_dict()["criteria"]:
            readings += (CollapseAlert(NON_FINITE, 0.0, 0.0, "above"),)
        return readings

    def _learn(self, measurement: Measurement) -> None:
        """The first batch of at least two rows gives the pairwise and spectral baselines
        (a diverged check gives nothing).

        Across ranks by statistics the pairwise distance is over pairs within shards:
        shards of one row have none, and their 0 must not become the baseline.
        """
        if self._diverged is not None:
            return
        metrics, spectra = measurement.source
        within_shards = "pairwise_pred_dist_mean" in measurement.variants
        if (
            self._baseline is None
            and measurement.rows >= 2
            and not (within_shards and metrics.pairwise_pred_dist_mean == 0.0)
        ):
            self._baseline = metrics.pairwise_pred_dist_mean
        if spectra is not None and self._initial_spectrum is None and measurement.rows >= 2:
            self._initial_spectrum = spectra
        if self._history is not None:
            self._history.learn(step_of(measurement), dict(measurement.values), measurement.rows)

    def _baselines(self) -> Mapping[str, float | None]:
        if self._history is not None:
            return self._history.baselines()
        return baselines_of(self._baseline, self._initial_spectrum)

    def _thresholds_for(self, measurement: Measurement) -> object:
        if self._history is None or self._diverged is not None:
            return self._thresholds
        _, spectra = measurement.source
        shape = (spectra.prediction.batch_size, spectra.prediction.dim)
        bounds = self._bounds.get(shape)
        if bounds is None:
            bounds = self._bounds[shape] = calibrated_bounds(self._thresholds, *shape)
        return bounds

    def _make_check(self, measurement: Measurement, alerts: tuple[Any, ...], step: int) -> CollapseCheck:
        metrics, spectra = measurement.source
        if self._diverged is not None:
            return CollapseCheck(metrics, alerts, step, measurement.batch, non_finite=self._diverged)
        if self._history is not None:
            return self._calibrated_check(measurement, alerts, step)
        diagnosis = None
        if alerts and spectra is not None:
            from geno_lewm.training.diagnosis import classify

            thresholds: CollapseThresholds = self._thresholds
            ratio = thresholds.effective_rank_to_initial
            diagnosis = classify(
                metrics,
                spectra,
                initial=self._initial_spectrum,
                alerts=alerts,
                rank_ratio=0.5 if ratio is None else ratio,
            )
        return CollapseCheck(metrics, alerts, step, measurement.batch, spectra, diagnosis)

    def _calibrated_check(self, measurement: Measurement, alerts: tuple[Any, ...], step: int) -> CollapseCheck:
        """A calibrated check: its diagnosis from the calibrated evidence, and the
        prediction error of a healthy check folded into the history.
        """
        metrics, spectra = measurement.source
        history = self._history
        assert history is not None
        diagnosis = None
        if alerts:
            from geno_lewm.training.diagnosis import classify_calibrated

            thresholds: CalibratedThresholds = self._thresholds
            diagnosis = classify_calibrated(
                metrics,
                spectra,
                alerts,
                dict(measurement.values),
                peaks=history.peaks or {},
                reference=history.reference or {},
                lowest_error=history.lowest_error,
                agreement_ratio=thresholds.agreement_ratio,
            )
        else:
            history.learn_agreement(1.0 - metrics.pred_cos_mean)
        return CollapseCheck(metrics, alerts, step, measurement.batch, spectra, diagnosis)

    def _alert_fields(self, check: CollapseCheck) -> dict[str, Any]:
        if check.non_finite is not None:
            return {"detail": check.non_finite.describe()}
        return {} if check.diagnosis is None else {"diagnosis": check.diagnosis.kind}

    def _reason(self, check: CollapseCheck) -> str | None:
        if check.non_finite is not None:
            return f"divergence: {check.non_finite.describe()}"
        return None if check.diagnosis is None else check.diagnosis.kind

    def __repr__(self) -> str:
        spectrum = ", spectrum=True" if self._spectrum else ""
        policy = "" if self._tracker is None else f", policy={self._tracker.policy!r}"
        criteria = ", criteria='calibrated'" if self._history is not None else ""
        return (
            f"CollapseMonitor(log_every_steps={self._every}, thresholds={self._thresholds!r}, "
            f"initial_pairwise_pred_dist_mean={self._baseline!r}, backend={self._backend!r}{spectrum}{policy}"
            f"{criteria})"
        )
