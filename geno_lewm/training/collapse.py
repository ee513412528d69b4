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

This module needs only the standard library; NumPy and torch backends are loaded only
when a batch asks for them.

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

import importlib
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

from geno_lewm._validation import as_finite_real, check_non_negative_int, check_positive_finite
from geno_lewm.backends import check_backend_name, prepare_inputs, select_backend
from geno_lewm.errors import CollapseDetectedError, InputError
from geno_lewm.metrics import MetricRegistry, default_registry
from geno_lewm.training._recording import (
    BatchInfo,
    MetricLogger,
    batch_fields,
    checked_sinks,
    log_metric_events,
    publish_check,
)
from geno_lewm.training._schedule import ScheduledMonitor
from geno_lewm.training.alerting import AlertPolicy, AlertTracker, Reading, check_policy, log_alert_changes

if TYPE_CHECKING:  # the spectral module is imported only when spectra are requested
    from types import ModuleType

    from geno_lewm.integrations.sinks import MetricSink
    from geno_lewm.training.spectrum import CollapseSpectrum, Diagnosis

__all__ = [
    "METRIC_NAMES",
    "BatchInfo",
    "CollapseAlert",
    "CollapseCheck",
    "CollapseLogger",
    "CollapseMetrics",
    "CollapseMonitor",
    "CollapseThresholds",
    "compute_collapse_metrics",
    "detect_collapse",
    "metric_name",
    "record_collapse_metrics",
]

_PREFIX = "geno_lewm.training.collapse"


@dataclass(frozen=True, slots=True)
class CollapseMetrics:
    """The seven RFC-0005 §3.6 numbers of one validation batch.

    Attributes
    ----------
    pred_cos_mean:
        Mean cosine similarity of each prediction row with its target row; a row pair in
        which either row has zero norm contributes 0.
    pred_l2_mean:
        Mean Euclidean distance between each prediction row and its target row.
    target_var_per_dim, pred_var_per_dim:
        Population variance (divide by N) of each dimension over the batch, averaged over
        the D dimensions.
    pred_target_corr:
        Pearson correlation of the flattened prediction and target matrices; 0 when either
        has no variance.
    pairwise_pred_dist_mean:
        Mean Euclidean distance over the N(N-1)/2 unordered pairs of prediction rows; 0
        for a single row.
    kl_reg:
        The Gaussian regulariser of RFC-0005 §3.2, as supplied by the caller.
    """

    pred_cos_mean: float
    pred_l2_mean: float
    target_var_per_dim: float
    pred_var_per_dim: float
    pred_target_corr: float
    pairwise_pred_dist_mean: float
    kl_reg: float

    def as_dict(self) -> dict[str, float]:
        """Field name -> value, in declaration order."""
        return {name: getattr(self, name) for name in METRIC_NAMES}


METRIC_NAMES: tuple[str, ...] = tuple(f.name for f in fields(CollapseMetrics))
"""The field names of :class:`CollapseMetrics`, in order."""

_VARIANTS = {
    "pred_cos_mean": "row_mean,zero_norm_is_0",
    "pred_l2_mean": "row_mean",
    "target_var_per_dim": "population,mean_over_dims",
    "pred_var_per_dim": "population,mean_over_dims",
    "pred_target_corr": "pearson_flattened,no_variance_is_0",
    "pairwise_pred_dist_mean": "unordered_pairs,single_row_is_0",
    "kl_reg": "caller_supplied",
}


def metric_name(field_name: str) -> str:
    """Registry and log name of a :class:`CollapseMetrics` field, e.g.
    ``geno_lewm.training.collapse.kl_reg``.
    """
    return f"{_PREFIX}.{field_name}"


@dataclass(frozen=True, slots=True)
class CollapseThresholds:
    """Alert thresholds of RFC-0005 §3.6; each must be a finite number > 0.

    Attributes
    ----------
    pred_var_to_target_var:
        Alert when ``pred_var_per_dim < pred_var_to_target_var * target_var_per_dim``.
    pairwise_to_initial:
        Alert when ``pairwise_pred_dist_mean < pairwise_to_initial * initial value``.
    kl_reg_max:
        Alert when ``kl_reg > kl_reg_max``.
    effective_rank_to_initial:
        Opt-in, beyond the RFC (``rfcs/0008-dimensional-collapse.md``): when set, alert
        (criteria ``pred_effective_rank`` / ``target_effective_rank``) when an effective
        rank falls below this fraction of its first observed value. ``None`` (default)
        leaves the RFC behaviour unchanged; setting it turns on the monitor's spectra.
    """

    pred_var_to_target_var: float = 0.5
    pairwise_to_initial: float = 0.5
    kl_reg_max: float = 10.0
    effective_rank_to_initial: float | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name == "effective_rank_to_initial":
                continue
            object.__setattr__(self, f.name, check_positive_finite(f.name, value))


@dataclass(frozen=True, slots=True)
class CollapseAlert:
    """One tripped criterion: ``criterion`` is the metric's field name, ``value`` its
    value and ``threshold`` the bound it crossed.
    """

    criterion: str
    value: float
    threshold: float


@dataclass(frozen=True, slots=True)
class CollapseCheck:
    """The outcome of one observed batch: its metrics and the alerts they raised.

    ``spectrum`` (the predictions' and targets' spectral metrics) is set when the monitor
    computes spectra, and ``diagnosis`` (what a tripped check most likely is) when such
    a check trips; both are ``None`` otherwise (see :mod:`geno_lewm.training.spectrum`).
    """

    metrics: CollapseMetrics
    alerts: tuple[CollapseAlert, ...] = ()
    step: int | None = None
    batch: BatchInfo | None = None
    spectrum: CollapseSpectrum | None = None
    diagnosis: Diagnosis | None = None

    @property
    def tripped(self) -> bool:
        """Whether any criterion raised an alert."""
        return bool(self.alerts)


CollapseLogger = MetricLogger
"""What :func:`record_collapse_metrics` needs of a logger: structlog-style ``info`` and
``warning`` methods taking an event name and keyword fields."""


# ------------------------------------------------------------------- computing
def _evaluate(prediction: Any, target: Any, kl_reg: Any, backend: str) -> tuple[CollapseMetrics, BatchInfo]:
    """Validate, compute and time one batch; raises before any result exists."""
    check_backend_name(backend)
    kl = as_finite_real("kl_reg", kl_reg)
    started = time.perf_counter()
    kernels = select_backend(backend, prediction, target)
    p, t, (n, d, dtype, device) = prepare_inputs(kernels, prediction, target)
    cos_mean, l2_mean, target_var, pred_var, corr, pairwise = kernels.collapse_values(p, t)
    elapsed = time.perf_counter() - started
    metrics = CollapseMetrics(cos_mean, l2_mean, target_var, pred_var, corr, pairwise, kl)
    return metrics, BatchInfo(n, d, dtype, kernels.NAME, device, elapsed)


def compute_collapse_metrics(prediction: Any, target: Any, *, kl_reg: Any, backend: str = "auto") -> CollapseMetrics:
    """Compute the RFC-0005 §3.6 metrics of one ``[N, D]`` batch.

    Parameters
    ----------
    prediction, target:
        Equal-shaped batches: nested sequences of real numbers, NumPy arrays or tensors.
        They are read, never modified.
    kl_reg:
        The Gaussian regulariser (a finite real number or 0-d tensor), passed through.
    backend:
        ``"auto"`` (default), ``"python"``, ``"numpy"`` or ``"torch"``.

    Raises
    ------
    InputError
        For anything that is not two finite, non-empty, equal-shaped 2-D batches and a
        finite ``kl_reg``; the message names the argument, row and column.

    Example
    -------
    >>> m = compute_collapse_metrics([[0.0, 1.0], [2.0, 1.0]], [[0.0, 2.0], [2.0, 2.0]], kl_reg=0.5)
    >>> m.pred_var_per_dim, m.pairwise_pred_dist_mean
    (0.5, 2.0)
    """
    return _evaluate(prediction, target, kl_reg, backend)[0]


def _thresholds_in_force(
    metrics: CollapseMetrics, thresholds: CollapseThresholds, initial: float | None
) -> dict[str, float | None]:
    """The bound each metric is compared with, ``None`` where no criterion applies."""
    bounds: dict[str, float | None] = dict.fromkeys(METRIC_NAMES)
    bounds["pred_var_per_dim"] = thresholds.pred_var_to_target_var * metrics.target_var_per_dim
    if initial is not None:
        bounds["pairwise_pred_dist_mean"] = thresholds.pairwise_to_initial * initial
    bounds["kl_reg"] = thresholds.kl_reg_max
    return bounds


def _check_initial(value: Any, name: str = "initial_pairwise_pred_dist_mean") -> float | None:
    if value is None:
        return None
    result = as_finite_real(name, value)
    if result < 0.0:
        raise InputError(f"{name!r} must be >= 0: got {value!r}", details={"field": name, "value": value})
    return result


def detect_collapse(
    metrics: CollapseMetrics,
    *,
    thresholds: CollapseThresholds | None = None,
    initial_pairwise_pred_dist_mean: float | None = None,
) -> tuple[CollapseAlert, ...]:
    """Apply the RFC-0005 alert criteria to ``metrics``.

    The criteria are strict inequalities, checked in this order:

    1. ``pred_var_per_dim < pred_var_to_target_var * target_var_per_dim``;
    2. ``pairwise_pred_dist_mean < pairwise_to_initial * initial`` (only when an initial
       value is known);
    3. ``kl_reg > kl_reg_max``.

    Each alert's ``threshold`` is the right-hand side it was compared with.

    Example
    -------
    >>> m = CollapseMetrics(0.99, 0.1, 1.0, 0.1, 0.9, 0.2, 12.0)
    >>> [a.criterion for a in detect_collapse(m, initial_pairwise_pred_dist_mean=1.0)]
    ['pred_var_per_dim', 'pairwise_pred_dist_mean', 'kl_reg']
    """
    if not isinstance(metrics, CollapseMetrics):
        raise InputError(
            f"'metrics' must be a CollapseMetrics: got {type(metrics).__name__}",
            details={"field": "metrics", "type": type(metrics).__name__},
        )
    if thresholds is None:
        thresholds = CollapseThresholds()
    elif not isinstance(thresholds, CollapseThresholds):
        raise InputError(
            f"'thresholds' must be a CollapseThresholds: got {type(thresholds).__name__}",
            details={"field": "thresholds", "type": type(thresholds).__name__},
        )
    initial = _check_initial(initial_pairwise_pred_dist_mean)
    bounds = _thresholds_in_force(metrics, thresholds, initial)
    alerts = []
    pred_var_bound = bounds["pred_var_per_dim"]
    if pred_var_bound is not None and metrics.pred_var_per_dim < pred_var_bound:
        alerts.append(CollapseAlert("pred_var_per_dim", metrics.pred_var_per_dim, pred_var_bound))
    pairwise_bound = bounds["pairwise_pred_dist_mean"]
    if pairwise_bound is not None and metrics.pairwise_pred_dist_mean < pairwise_bound:
        alerts.append(CollapseAlert("pairwise_pred_dist_mean", metrics.pairwise_pred_dist_mean, pairwise_bound))
    if metrics.kl_reg > thresholds.kl_reg_max:
        alerts.append(CollapseAlert("kl_reg", metrics.kl_reg, thresholds.kl_reg_max))
    return tuple(alerts)


# ------------------------------------------------------------------- recording
def _wrong_type(name: str, expected: str, value: object) -> InputError:
    return InputError(
        f"{name!r} must be {expected}: got {type(value).__name__}",
        details={"field": name, "type": type(value).__name__},
    )


def _check_record_arguments(
    metrics: object, alerts: object, step: object, batch: object, thresholds: object
) -> int | None:
    """Refuse bad arguments to :func:`record_collapse_metrics` before anything is recorded;
    return ``step`` as a plain ``int`` (or ``None``).
    """
    if not isinstance(metrics, CollapseMetrics):
        raise _wrong_type("metrics", "a CollapseMetrics", metrics)
    if isinstance(alerts, (str, bytes)) or not isinstance(alerts, Sequence):
        raise _wrong_type("alerts", "a sequence of CollapseAlert", alerts)
    for alert in alerts:
        if not isinstance(alert, CollapseAlert):
            raise _wrong_type("alerts", "a sequence of CollapseAlert", alert)
    if batch is not None and not isinstance(batch, BatchInfo):
        raise _wrong_type("batch", "a BatchInfo", batch)
    if thresholds is not None and not isinstance(thresholds, CollapseThresholds):
        raise _wrong_type("thresholds", "a CollapseThresholds", thresholds)
    return None if step is None else check_non_negative_int("step", step)


def record_collapse_metrics(
    metrics: CollapseMetrics,
    *,
    alerts: Sequence[CollapseAlert] = (),
    logger: CollapseLogger | None = None,
    step: int | None = None,
    batch: BatchInfo | None = None,
    thresholds: CollapseThresholds | None = None,
    initial_pairwise_pred_dist_mean: float | None = None,
    registry: MetricRegistry | None = None,
    spectrum: CollapseSpectrum | None = None,
    diagnosis: Diagnosis | None = None,
    initial_spectrum: CollapseSpectrum | None = None,
    variants: Mapping[str, str] | None = None,
) -> None:
    """Publish one check: gauges and counters in the registry, events in ``logger``.

    Sets the gauge ``geno_lewm.training.collapse.<field>`` for each metric, adds the
    number of alerts to the ``geno_lewm.training.collapse.alert`` counter and, when
    ``batch`` is known, the compute time to a histogram. With a logger, emits one
    ``training.metric`` event (info) per metric and one ``training.collapse.alert`` event
    (warning) per alert. Metric events carry the unit, the convention (``variant``), the
    threshold in force (from ``thresholds`` and the pairwise baseline) and, when
    ``batch`` is given, the batch's shape, dtype, backend, device and compute time.

    With a ``spectrum``, its gauges are set too and their ``training.metric`` events
    follow the RFC metrics' (the effective-rank thresholds come from ``thresholds`` and
    ``initial_spectrum``); with a ``diagnosis``, each alert event carries its kind. Without
    them, nothing differs from the RFC behaviour. ``variants`` replaces the ``variant`` of
    the fields it names (a metric computed by another convention, e.g. across ranks).
    """
    step = _check_record_arguments(metrics, alerts, step, batch, thresholds)
    conventions = _VARIANTS if variants is None else {**_VARIANTS, **variants}
    spectral = _spectral_arguments(spectrum, diagnosis, initial_spectrum)
    bounds = _thresholds_in_force(
        metrics, thresholds or CollapseThresholds(), _check_initial(initial_pairwise_pred_dist_mean)
    )
    registry = default_registry() if registry is None else registry
    values = metrics.as_dict()
    publish_check(registry, _PREFIX, values, alerts=len(alerts), batch=batch)
    if spectral is not None and spectrum is not None:
        spectral.set_spectral_gauges(spectrum, registry)
    if logger is None:
        return
    context = batch_fields(batch)
    log_metric_events(logger, _PREFIX, values, step=step, variants=conventions, thresholds=bounds, context=context)
    if spectral is not None and spectrum is not None:
        rank_bounds = spectral.rank_bounds(
            (thresholds or CollapseThresholds()).effective_rank_to_initial, initial_spectrum
        )
        spectral.log_spectral_metrics(spectrum, logger, step=step, context=context, bounds=rank_bounds)
    extra: dict[str, Any] = {} if diagnosis is None else {"diagnosis": diagnosis.kind}
    for alert in alerts:
        logger.warning(
            "training.collapse.alert",
            criterion=alert.criterion,
            value=alert.value,
            threshold=alert.threshold,
            step=step,
            **extra,
        )


_STATE_VERSION = 1


def _spectrum_from_state(data: object) -> CollapseSpectrum | None:
    """Rebuild a :class:`CollapseSpectrum` from ``dataclasses.asdict`` output."""
    if data is None:
        return None
    from geno_lewm.training import spectrum as spectral

    try:
        if not isinstance(data, Mapping):
            raise TypeError(f"expected a mapping, got {type(data).__name__}")
        return spectral.CollapseSpectrum(
            prediction=spectral.SpectralMetrics(**data["prediction"]),
            target=spectral.SpectralMetrics(**data["target"]),
            backend=data["backend"],
            compute_seconds=data["compute_seconds"],
        )
    except (KeyError, TypeError) as error:
        raise InputError(
            f"'state.initial_spectrum' is malformed: {error}", details={"field": "state.initial_spectrum"}
        ) from None


def _spectral_arguments(spectrum: object, diagnosis: object, initial_spectrum: object) -> ModuleType | None:
    """The spectral module when any spectral argument is given (checked), else ``None``
    without importing it.
    """
    if spectrum is None and diagnosis is None and initial_spectrum is None:
        return None
    from geno_lewm.training import spectrum as spectral

    for name, value, kind in (
        ("spectrum", spectrum, spectral.CollapseSpectrum),
        ("initial_spectrum", initial_spectrum, spectral.CollapseSpectrum),
        ("diagnosis", diagnosis, spectral.Diagnosis),
    ):
        if value is not None and not isinstance(value, kind):
            raise _wrong_type(name, f"a {kind.__name__}", value)
    return spectral


# --------------------------------------------------------------------- monitor
class CollapseMonitor(ScheduledMonitor):
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

    __slots__ = (
        "_baseline",
        "_distributed",
        "_initial_spectrum",
        "_last_check",
        "_record_on",
        "_sinks",
        "_spectrum",
        "_thresholds",
        "_tracker",
    )

    def __init__(
        self,
        log_every_steps: int = 500,
        thresholds: CollapseThresholds | None = None,
        initial_pairwise_pred_dist_mean: float | None = None,
        *,
        backend: str = "auto",
        registry: MetricRegistry | None = None,
        spectrum: bool = False,
        initial_spectrum: CollapseSpectrum | None = None,
        policy: AlertPolicy | None = None,
        on_alert: Literal["log", "raise"] | None = None,
        sinks: Sequence[MetricSink] | MetricSink | None = None,
        distributed: Literal["gather", "statistics", "off"] = "gather",
        record_on: Literal["rank0", "all"] = "rank0",
    ) -> None:
        super().__init__(log_every_steps, backend, registry)
        if not isinstance(spectrum, bool):
            raise InputError(
                f"'spectrum' must be True or False: got {spectrum!r}",
                details={"field": "spectrum", "value": spectrum},
            )
        _spectral_arguments(None, None, initial_spectrum)
        if thresholds is not None and not isinstance(thresholds, CollapseThresholds):
            raise InputError(
                f"'thresholds' must be a CollapseThresholds: got {type(thresholds).__name__}",
                details={"field": "thresholds", "type": type(thresholds).__name__},
            )
        self._thresholds = thresholds or CollapseThresholds()
        self._baseline = _check_initial(initial_pairwise_pred_dist_mean)
        self._last_check: CollapseCheck | None = None
        self._spectrum = spectrum or self._thresholds.effective_rank_to_initial is not None
        self._initial_spectrum = initial_spectrum
        checked_policy = check_policy(policy, on_alert)
        self._tracker = None if checked_policy is None else AlertTracker(checked_policy, source=_PREFIX)
        self._sinks = checked_sinks(sinks)
        if distributed not in ("gather", "statistics", "off"):
            raise InputError(
                f"'distributed' must be 'gather', 'statistics' or 'off': got {distributed!r}",
                details={"field": "distributed", "value": distributed},
            )
        if distributed == "statistics" and self._spectrum:
            raise InputError(
                "spectra need the whole batch: use distributed='gather' with spectrum=True",
                details={"field": "distributed", "value": distributed},
            )
        self._distributed = distributed
        if record_on not in ("rank0", "all"):
            raise InputError(
                f"'record_on' must be 'rank0' or 'all': got {record_on!r}",
                details={"field": "record_on", "value": record_on},
            )
        self._record_on = record_on

    @property
    def thresholds(self) -> CollapseThresholds:
        """The thresholds in force."""
        return self._thresholds

    @property
    def initial_pairwise_pred_dist_mean(self) -> float | None:
        """The pairwise baseline: given, or taken from the first observed batch; ``None`` until known."""
        return self._baseline

    @property
    def last_check(self) -> CollapseCheck | None:
        """The most recent check, ``None`` before the first."""
        return self._last_check

    @property
    def spectrum(self) -> bool:
        """Whether checks compute spectral metrics."""
        return self._spectrum

    @property
    def policy(self) -> AlertPolicy | None:
        """The alert policy; ``None`` for the RFC behaviour."""
        return None if self._tracker is None else self._tracker.policy

    @property
    def active_alerts(self) -> dict[str, int | None]:
        """Criterion -> step it was raised at, for the alerts in force under the policy
        (without a policy: the criteria the last check tripped).
        """
        if self._tracker is not None:
            return self._tracker.active
        check = self._last_check
        return {} if check is None else {alert.criterion: check.step for alert in check.alerts}

    @property
    def sinks(self) -> tuple[MetricSink, ...]:
        """The sinks each check is sent to."""
        return self._sinks

    @property
    def initial_spectrum(self) -> CollapseSpectrum | None:
        """The spectral baseline (rank criteria, diagnosis): given, or taken from the first
        observed batch when spectra are on; ``None`` until known.
        """
        return self._initial_spectrum

    def state_dict(self) -> dict[str, Any]:
        """What the monitor has learned from the run, as plain data for a checkpoint.

        The pairwise baseline, the spectral baseline and the alert policy's streaks; not
        the configuration (thresholds, schedule, sinks), which the code that builds the
        monitor already holds. Restoring it on resume keeps the baselines of the start of
        the run: without it, the first batch after a restart (perhaps already collapsed)
        would become the reference.
        """
        spectrum = self._initial_spectrum
        return {
            "version": _STATE_VERSION,
            "initial_pairwise_pred_dist_mean": self._baseline,
            "initial_spectrum": None if spectrum is None else asdict(spectrum),
            "alert_policy": None if self._tracker is None else self._tracker.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state written by :meth:`state_dict`.

        Raises :class:`InputError` for a malformed state, in which case nothing changes.
        """
        if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION:
            raise InputError(
                f"'state' must be a mapping written by CollapseMonitor.state_dict (version {_STATE_VERSION})",
                details={"field": "state"},
            )
        baseline = _check_initial(state.get("initial_pairwise_pred_dist_mean"), "state.initial_pairwise_pred_dist_mean")
        spectrum = _spectrum_from_state(state.get("initial_spectrum"))
        policy_state = state.get("alert_policy")
        if self._tracker is not None and policy_state is not None:
            self._tracker.load_state_dict(policy_state)
        self._baseline = baseline
        self._initial_spectrum = spectrum

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
        is unchanged then.
        """
        if type(step) is not int or step < 0:
            step = check_non_negative_int("step", step)
        if not force and (step == 0 or step % self._every):
            return None
        spectra: CollapseSpectrum | None = None
        variants: dict[str, str] | None = None
        writes = True
        if self._distributed != "off" and _world_size() > 1:
            from geno_lewm.integrations import distributed

            metrics, batch, spectra = distributed.distributed_collapse_metrics(
                prediction,
                target,
                kl_reg=kl_reg,
                step=step,
                backend=self._backend,
                mode=self._distributed,
                spectrum=self._spectrum,
            )
            writes = self._record_on == "all" or distributed.rank() == 0
            if self._distributed == "statistics":
                variants = {"pairwise_pred_dist_mean": distributed.WITHIN_SHARD_VARIANT}
        else:
            metrics, batch = _evaluate(prediction, target, kl_reg, self._backend)
            if self._spectrum:
                from geno_lewm.training import spectrum as spectral

                spectra = spectral.collapse_spectrum(prediction, target, backend=self._backend)
        return self._conclude(metrics, batch, spectra, step=step, logger=logger, writes=writes, variants=variants)

    def _conclude(
        self,
        metrics: CollapseMetrics,
        batch: BatchInfo,
        spectra: CollapseSpectrum | None,
        *,
        step: int,
        logger: CollapseLogger | None,
        writes: bool,
        variants: dict[str, str] | None,
    ) -> CollapseCheck:
        """Everything after the metrics: baselines, criteria, the alert policy, the
        diagnosis, recording (when ``writes``), sinks, and raising under ``on_alert="raise"``.
        """
        # Across ranks by statistics the pairwise distance is over pairs within shards: shards
        # of one row have none, and their 0 must not become the baseline.
        within_shards = variants is not None and "pairwise_pred_dist_mean" in variants
        if (
            self._baseline is None
            and batch.batch_size >= 2
            and not (within_shards and metrics.pairwise_pred_dist_mean == 0.0)
        ):
            self._baseline = metrics.pairwise_pred_dist_mean
        if spectra is not None and self._initial_spectrum is None and batch.batch_size >= 2:
            self._initial_spectrum = spectra
        alerts = detect_collapse(metrics, thresholds=self._thresholds, initial_pairwise_pred_dist_mean=self._baseline)
        ratio = self._thresholds.effective_rank_to_initial
        spectral: ModuleType | None = None
        if spectra is not None:
            spectral = importlib.import_module("geno_lewm.training.spectrum")
            if ratio is not None:
                alerts += spectral.detect_rank_collapse(spectra, ratio=ratio, initial=self._initial_spectrum)
        decision = None
        if self._tracker is not None:
            decision = self._tracker.update(step, self._readings(metrics, spectra, spectral))
            alerts = tuple(CollapseAlert(r.criterion, r.value, r.threshold) for r in decision.active)
        diagnosis = None
        if alerts and spectral is not None and spectra is not None:
            diagnosis = spectral.diagnose_collapse(
                metrics,
                spectra,
                initial=self._initial_spectrum,
                alerts=alerts,
                rank_ratio=0.5 if ratio is None else ratio,
            )
        check = CollapseCheck(metrics, alerts, step, batch, spectra, diagnosis)
        self._last_check = check
        if writes:
            spectral_arguments: dict[str, Any] = {}
            if spectra is not None:
                spectral_arguments = {
                    "spectrum": spectra,
                    "diagnosis": diagnosis,
                    "initial_spectrum": self._initial_spectrum,
                }
            record_collapse_metrics(
                metrics,
                alerts=alerts,
                logger=logger,
                step=step,
                batch=batch,
                thresholds=self._thresholds,
                initial_pairwise_pred_dist_mean=self._baseline,
                registry=self._registry,
                variants=variants,
                **spectral_arguments,
            )
            if decision is not None and decision.changes and logger is not None:
                log_alert_changes(decision.changes, logger, source=_PREFIX)
            if self._sinks:
                from geno_lewm.integrations.sinks import publish_metrics

                publish_metrics(self._sinks, _sink_values(metrics, spectra), step)
        if alerts and self._tracker is not None and self._tracker.policy.on_alert == "raise":
            raise CollapseDetectedError(_alert_message(check), check=check, alerts=alerts, step=step)
        return check

    def _readings(
        self, metrics: CollapseMetrics, spectra: CollapseSpectrum | None, spectral: ModuleType | None
    ) -> list[Reading]:
        """Every criterion that can be evaluated at this check, tripped or not, in
        :func:`detect_collapse` order (then the rank criteria).
        """
        bounds = _thresholds_in_force(metrics, self._thresholds, self._baseline)
        candidates: list[tuple[str, float, float | None, Literal["below", "above"]]] = [
            ("pred_var_per_dim", metrics.pred_var_per_dim, bounds["pred_var_per_dim"], "below"),
            ("pairwise_pred_dist_mean", metrics.pairwise_pred_dist_mean, bounds["pairwise_pred_dist_mean"], "below"),
            ("kl_reg", metrics.kl_reg, self._thresholds.kl_reg_max, "above"),
        ]
        if spectral is not None and spectra is not None:
            rank_bounds = spectral.rank_bounds(self._thresholds.effective_rank_to_initial, self._initial_spectrum)
            candidates.append(
                ("pred_effective_rank", spectra.prediction.effective_rank, rank_bounds["pred_effective_rank"], "below")
            )
            candidates.append(
                ("target_effective_rank", spectra.target.effective_rank, rank_bounds["target_effective_rank"], "below")
            )
        return [
            Reading(name, value, bound, direction)
            for name, value, bound, direction in candidates
            if bound is not None and math.isfinite(bound)
        ]

    def __repr__(self) -> str:
        spectrum = ", spectrum=True" if self._spectrum else ""
        policy = "" if self._tracker is None else f", policy={self._tracker.policy!r}"
        return (
            f"CollapseMonitor(log_every_steps={self._every}, thresholds={self._thresholds!r}, "
            f"initial_pairwise_pred_dist_mean={self._baseline!r}, backend={self._backend!r}{spectrum}{policy})"
        )


def _world_size() -> int:
    """Ranks in the default ``torch.distributed`` group; 1 without one (imports nothing)."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return 1
    return int(dist.get_world_size())


def _sink_values(metrics: CollapseMetrics, spectra: CollapseSpectrum | None) -> dict[str, float]:
    """What the sinks get: every gauge of the check, by registry name."""
    values = {metric_name(name): value for name, value in metrics.as_dict().items()}
    if spectra is not None:
        from geno_lewm.training.spectrum import SPECTRAL_GAUGES

        for suffix in SPECTRAL_GAUGES:
            side, _, field_name = suffix.partition("_")
            source = spectra.prediction if side == "pred" else spectra.target
            values[metric_name(suffix)] = float(getattr(source, field_name))
    return values


def _alert_message(check: CollapseCheck) -> str:
    """One line naming each alert of a check, for :class:`CollapseDetectedError`."""
    parts = []
    for alert in check.alerts:
        sign = ">" if alert.criterion == "kl_reg" else "<"
        parts.append(f"{alert.criterion} = {alert.value:.6g} {sign} {alert.threshold:.6g}")
    where = "" if check.step is None else f" at step {check.step}"
    why = f" ({check.diagnosis.kind})" if check.diagnosis is not None else ""
    return f"collapse detected{where}{why}: " + "; ".join(parts)
