"""Prediction dynamics of classification heads: entropy, confidence and class spread of
the softmax of logits, with alerts for mode collapse and for random guessing.

From a batch of logits ``[N, C]`` (nested sequences, NumPy arrays or tensors), each row
is turned into a softmax distribution with a log-sum-exp shift (huge logits stay
finite) and summarised by:

* ``pred_entropy`` — mean entropy ``-sum p log p`` in nats, in ``[0, log C]``;
* ``pred_entropy_normalized`` — the same divided by ``log C``, in ``[0, 1]``;
* ``pred_confidence`` — mean largest probability, in ``[1/C, 1]``;
* ``top_class_fraction`` — share of rows whose argmax is the most frequent class;
* ``argmax_spread`` — entropy of the argmax histogram divided by ``log C``: 1 when the
  predictions spread evenly over the classes, 0 when they all name one class.

Near-zero normalised entropy or one class taking most predictions is the classifier's
mode collapse; normalised entropy near 1 means it is guessing at random. Definitions and
conventions: ``rfcs/0009-training-dynamics.md``.

The pieces mirror :mod:`geno_lewm.training.collapse`: :func:`prediction_statistics`
(sufficient statistics, mergeable across batches or ranks),
:func:`compute_prediction_metrics`, :func:`detect_prediction_alerts`,
:func:`record_prediction_metrics`, the scheduled :class:`PredictionMonitor`, and
:func:`watch_predictions`, a forward hook that feeds a torch module's outputs to a
monitor. Only the standard library is imported until a NumPy array or tensor arrives.

Example
-------
>>> metrics = compute_prediction_metrics([[0.0, 0.0, 0.0], [9.0, 0.0, 0.0]])
>>> round(metrics.pred_entropy_normalized, 3), metrics.class_counts
(0.501, (2, 0, 0))
>>> [alert.criterion for alert in detect_prediction_alerts(metrics)]
['class_dominance']
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

from geno_lewm._events import FieldSpec, declare_event
from geno_lewm._protocols import MetricLogger, MetricSink
from geno_lewm._validation import (
    check_callable,
    check_instance,
    check_non_negative_int,
    check_positive_finite,
    fail,
)
from geno_lewm.backends import check_backend_name, get_backend
from geno_lewm.errors import InputError, TrainingAlertError
from geno_lewm.metrics import MetricRegistry
from geno_lewm.training._criteria import Alert, Criterion, Direction, Fixed, evaluate
from geno_lewm.training._family import Family, MetricRow, MetricTable
from geno_lewm.training._pipeline import FamilyMonitor
from geno_lewm.training._recording import BatchInfo, Measurement, batch_fields, record_check
from geno_lewm.training.alerting import AlertPolicy

if TYPE_CHECKING:
    import torch

__all__ = [
    "ALERT_EVENT",
    "LOGIT_KEYS",
    "METRIC_NAMES",
    "PredictionAlert",
    "PredictionCheck",
    "PredictionMetrics",
    "PredictionMonitor",
    "PredictionStatistics",
    "PredictionThresholds",
    "PredictionWatcher",
    "compute_prediction_metrics",
    "detect_prediction_alerts",
    "extract_logits",
    "metric_name",
    "prediction_statistics",
    "record_prediction_metrics",
    "watch_predictions",
]

ALERT_EVENT = "training.dynamics.alert"
"""The log event of one tripped prediction-dynamics criterion."""

LOGIT_KEYS: tuple[str, ...] = ("logits", "out", "preds")
"""Keys looked up, in this order, when a module returns a mapping."""


# --------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class PredictionMetrics:
    """The prediction-dynamics numbers of one batch of logits.

    Attributes
    ----------
    pred_entropy:
        Mean over rows of the softmax entropy ``-sum_c p_c log p_c`` (nats), with
        ``0 log 0 = 0``; in ``[0, log C]``.
    pred_entropy_normalized:
        ``pred_entropy / log C``, clamped to ``[0, 1]``.
    pred_confidence:
        Mean over rows of the largest softmax probability; in ``[1/C, 1]``.
    top_class_fraction:
        Largest entry of ``class_counts`` divided by the number of rows.
    argmax_spread:
        Entropy of the distribution ``class_counts / N`` divided by ``log C``, in ``[0, 1]``.
    class_counts:
        How many rows have their argmax (the first maximum on ties) in each class.
    """

    pred_entropy: float
    pred_entropy_normalized: float
    pred_confidence: float
    top_class_fraction: float
    argmax_spread: float
    class_counts: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        """``C``, the number of classes."""
        return len(self.class_counts)

    @property
    def batch_size(self) -> int:
        """``N``, the number of rows."""
        return sum(self.class_counts)

    def as_dict(self) -> dict[str, float]:
        """Gauge name suffix -> value for the five scalar metrics, in declaration order."""
        return {name: getattr(self, name) for name in METRIC_NAMES}


METRIC_NAMES: tuple[str, ...] = tuple(f.name for f in fields(PredictionMetrics) if f.name != "class_counts")
"""The scalar fields of :class:`PredictionMetrics`, in order; each is a registry gauge."""


def metric_name(field_name: str) -> str:
    """Registry and log name of a :class:`PredictionMetrics` field, e.g.
    ``geno_lewm.training.dynamics.pred_entropy``.
    """
    return DYNAMICS_METRICS.name(field_name)


DYNAMICS_METRICS = MetricTable(
    family="dynamics",
    noun="Prediction-dynamics",
    rows=(
        MetricRow("pred_entropy", "nats", "row_mean,exact_logsumexp", "Mean softmax entropy of the logits' rows."),
        MetricRow(
            "pred_entropy_normalized",
            "1",
            "row_mean,divided_by_log_C",
            "Mean softmax entropy of the logits' rows divided by log C.",
        ),
        MetricRow(
            "pred_confidence", "1", "row_mean,max_probability", "Mean largest softmax probability of the logits' rows."
        ),
        MetricRow(
            "top_class_fraction",
            "1",
            "argmax_first_on_ties",
            "Share of rows predicting the most frequently predicted class.",
        ),
        MetricRow(
            "argmax_spread",
            "1",
            "argmax_histogram_entropy,divided_by_log_C",
            "Entropy of the argmax histogram over classes divided by log C.",
        ),
    ),
)
"""The prediction-dynamics gauges: the scalar fields of :class:`PredictionMetrics`."""

DYNAMICS_CRITERIA: tuple[Criterion, ...] = (
    Criterion(
        "mode_collapse",
        "pred_entropy_normalized",
        "below",
        Fixed("min_normalized_entropy"),
        summary="the classifier puts (nearly) all its probability on one class per row",
    ),
    Criterion(
        "class_dominance",
        "top_class_fraction",
        "above",
        Fixed("max_top_class_fraction"),
        min_rows=2,
        summary="one class takes most predictions (a single row always names one class)",
    ),
    Criterion(
        "random_guessing",
        "pred_entropy_normalized",
        "above",
        Fixed("max_normalized_entropy"),
        summary="the softmax is nearly uniform: the classifier is guessing",
    ),
)
"""The prediction-dynamics criteria, in the order they are evaluated."""

declare_event(
    ALERT_EVENT,
    summary="A prediction-dynamics criterion was crossed (mode collapse, class dominance, random guessing).",
    fields={
        "criterion": FieldSpec("string", required=True, description="The criterion that tripped"),
        "metric": FieldSpec("string", required=True, description="The metric compared with the threshold"),
        "value": FieldSpec("number", required=True, description="The metric's value"),
        "threshold": FieldSpec("number", required=True, description="The bound it crossed"),
    },
)


def _entropy_of_counts(counts: Sequence[int]) -> float:
    total = sum(counts)
    return -math.fsum(c / total * math.log(c / total) for c in counts if c > 0)


def _unit_interval(value: float) -> float:
    return min(1.0, max(0.0, value))


@dataclass(frozen=True, slots=True)
class PredictionStatistics:
    """Sufficient statistics of one or more batches of logits with the same ``C``.

    Statistics of several batches (or of the shards held by several ranks) combine with
    :meth:`merge`; :meth:`finalize` turns them into :class:`PredictionMetrics`, equal to
    the metrics of the concatenated batches.

    Example
    -------
    >>> a = prediction_statistics([[0.0, 0.0]])
    >>> b = prediction_statistics([[50.0, 0.0]])
    >>> a.merge(b).finalize().class_counts
    (2, 0)
    """

    rows: int
    entropy_sum: float
    confidence_sum: float
    class_counts: tuple[int, ...]

    def merge(self, other: PredictionStatistics) -> PredictionStatistics:
        """The statistics of both batches together; they must have the same number of classes."""
        if not isinstance(other, PredictionStatistics):
            raise InputError(
                f"'other' must be a PredictionStatistics: got {type(other).__name__}",
                details={"field": "other", "type": type(other).__name__},
            )
        if len(other.class_counts) != len(self.class_counts):
            raise InputError(
                f"cannot merge statistics of {len(self.class_counts)} and {len(other.class_counts)} classes",
                details={"field": "other", "classes": [len(self.class_counts), len(other.class_counts)]},
            )
        return PredictionStatistics(
            self.rows + other.rows,
            self.entropy_sum + other.entropy_sum,
            self.confidence_sum + other.confidence_sum,
            tuple(a + b for a, b in zip(self.class_counts, other.class_counts)),
        )

    def finalize(self) -> PredictionMetrics:
        """The :class:`PredictionMetrics` these statistics describe."""
        log_c = math.log(len(self.class_counts))
        entropy = min(self.entropy_sum / self.rows, log_c)
        return PredictionMetrics(
            pred_entropy=entropy,
            pred_entropy_normalized=_unit_interval(entropy / log_c),
            pred_confidence=_unit_interval(self.confidence_sum / self.rows),
            top_class_fraction=max(self.class_counts) / self.rows,
            argmax_spread=_unit_interval(_entropy_of_counts(self.class_counts) / log_c),
            class_counts=self.class_counts,
        )


# ------------------------------------------------------------------ thresholds
@dataclass(frozen=True, slots=True)
class PredictionThresholds:
    """Alert thresholds for prediction dynamics; each must lie in ``(0, 1]``.

    Attributes
    ----------
    min_normalized_entropy:
        Mode collapse when ``pred_entropy_normalized < min_normalized_entropy``.
    max_normalized_entropy:
        Random guessing when ``pred_entropy_normalized > max_normalized_entropy``
        (1.0 switches the criterion off). Must exceed ``min_normalized_entropy``.
    max_top_class_fraction:
        Class dominance when ``top_class_fraction > max_top_class_fraction`` in a batch of
        at least two rows (1.0 switches the criterion off).
    """

    min_normalized_entropy: float = 0.05
    max_normalized_entropy: float = 0.95
    max_top_class_fraction: float = 0.9

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            checked = check_positive_finite(f.name, value)
            if checked > 1.0:
                raise fail(f.name, "<= 1", value)
            object.__setattr__(self, f.name, checked)
        if self.min_normalized_entropy >= self.max_normalized_entropy:
            raise InputError(
                "'min_normalized_entropy' must be < 'max_normalized_entropy': "
                f"got {self.min_normalized_entropy!r} and {self.max_normalized_entropy!r}",
                details={"field": "min_normalized_entropy", "value": self.min_normalized_entropy},
            )


class PredictionAlert(Alert):
    """An :class:`~geno_lewm.training._criteria.Alert` of the prediction-dynamics family:
    ``PredictionAlert(criterion, metric, value, threshold)`` — ``criterion`` names it
    (``mode_collapse``, ``class_dominance`` or ``random_guessing``), ``metric`` is the
    field compared, and the direction is read from the criteria table.

    Example
    -------
    >>> PredictionAlert("mode_collapse", "pred_entropy_normalized", 0.01, 0.05).direction
    'below'
    """

    __slots__ = ()

    def __init__(
        self, criterion: str, metric: str, value: float, threshold: float, direction: Direction | None = None
    ) -> None:
        if direction is None:
            row = DYNAMICS.criterion(criterion) if isinstance(criterion, str) else None
            if row is None:
                known = ", ".join(row.name for row in DYNAMICS_CRITERIA)
                raise fail(
                    "criterion", f"a prediction-dynamics criterion ({known}) when no direction is given", criterion
                )
            direction = row.direction
        Alert.__init__(self, criterion, value, threshold, direction, metric)


@dataclass(frozen=True, slots=True)
class PredictionCheck:
    """The outcome of one observed batch of logits: its metrics and the alerts they raised."""

    metrics: PredictionMetrics
    alerts: tuple[PredictionAlert, ...] = ()
    step: int | None = None
    batch: BatchInfo | None = None

    @property
    def tripped(self) -> bool:
        """Whether any criterion raised an alert."""
        return bool(self.alerts)


DYNAMICS = Family(
    metrics=DYNAMICS_METRICS,
    criteria=DYNAMICS_CRITERIA,
    alert_event=ALERT_EVENT,
    alert_names_metric=True,
    alert_type=PredictionAlert,
    error_type=TrainingAlertError,
    headline="prediction dynamics alert",
)
"""The prediction-dynamics family, as the generic monitor runs it."""

DYNAMICS_METRICS.declare()


# ------------------------------------------------------------------- computing
def _measure(logits: Any, backend: str, name: str = "logits") -> tuple[PredictionStatistics, BatchInfo]:
    """Validate, compute and time one batch; raises before any result exists."""
    started = time.perf_counter()
    kernels = get_backend(backend, logits)
    prepared = kernels.prepare(logits, name)
    shape = kernels.describe(prepared)
    if shape.dim < 2:
        raise InputError(
            f"{name!r} must have at least 2 classes (columns) for a softmax: got {shape.dim}",
            details={"field": name, "columns": shape.dim},
        )
    sums = kernels.prediction_sums(prepared)
    elapsed = time.perf_counter() - started
    statistics = PredictionStatistics(shape.rows, sums.entropy_sum, sums.confidence_sum, sums.class_counts)
    return statistics, BatchInfo(shape.rows, shape.dim, shape.dtype, kernels.NAME, shape.device, elapsed)


def prediction_statistics(logits: Any, *, backend: str = "auto") -> PredictionStatistics:
    """Sufficient statistics of one batch of logits ``[N, C]`` (``C >= 2``).

    ``logits`` may be nested sequences of real numbers, a NumPy array or a tensor (any
    device; read, never modified). ``backend`` is ``"auto"``, ``"python"``, ``"numpy"``
    or ``"torch"``. Raises :class:`InputError` for anything that is not a finite,
    non-empty 2-D batch with at least two columns.
    """
    return _measure(logits, check_backend_name(backend))[0]


def compute_prediction_metrics(logits: Any, *, backend: str = "auto") -> PredictionMetrics:
    """Compute the prediction-dynamics metrics of one batch of logits ``[N, C]``.

    Parameters
    ----------
    logits:
        Unnormalised class scores, one row per sample: nested sequences of real numbers,
        a NumPy array or a tensor. Finite values of any magnitude are handled.
    backend:
        ``"auto"`` (default), ``"python"``, ``"numpy"`` or ``"torch"``.

    Raises
    ------
    InputError
        For empty, ragged, non-2-D or non-finite input or fewer than two columns; the
        message names the row and column.

    Example
    -------
    >>> m = compute_prediction_metrics([[1.0, 1.0], [1e30, -1e30]])
    >>> round(m.pred_entropy, 6), m.pred_confidence
    (0.346574, 0.75)
    """
    return _measure(logits, check_backend_name(backend))[0].finalize()


def _check_thresholds(thresholds: Any) -> PredictionThresholds:
    if thresholds is None:
        return PredictionThresholds()
    return check_instance("thresholds", thresholds, PredictionThresholds)


def detect_prediction_alerts(
    metrics: PredictionMetrics, *, thresholds: PredictionThresholds | None = None
) -> tuple[PredictionAlert, ...]:
    """Apply the prediction-dynamics criteria to ``metrics``.

    Strict inequalities, checked in this order:

    1. ``mode_collapse``: ``pred_entropy_normalized < min_normalized_entropy``;
    2. ``class_dominance``: ``top_class_fraction > max_top_class_fraction``, only for a
       batch of at least two rows (one row always names a single class);
    3. ``random_guessing``: ``pred_entropy_normalized > max_normalized_entropy``.

    Example
    -------
    >>> m = PredictionMetrics(0.01, 0.01, 0.99, 1.0, 0.0, (8, 0, 0))
    >>> [a.criterion for a in detect_prediction_alerts(m)]
    ['mode_collapse', 'class_dominance']
    """
    check_instance("metrics", metrics, PredictionMetrics)
    readings = evaluate(
        DYNAMICS_CRITERIA,
        metrics.as_dict(),
        thresholds=_check_thresholds(thresholds),
        baselines={},
        rows=metrics.batch_size,
        alert_type=PredictionAlert,
    )
    return tuple(reading for reading in readings if reading.tripped)


# ------------------------------------------------------------------- recording
def _measurement(metrics: PredictionMetrics, batch: BatchInfo | None) -> Measurement:
    context = {**batch_fields(batch), "batch_size": metrics.batch_size, "dim": metrics.num_classes}
    return Measurement(metrics.as_dict(), batch, metrics.batch_size, context, source=metrics)


def record_prediction_metrics(
    metrics: PredictionMetrics,
    *,
    alerts: Sequence[PredictionAlert] = (),
    logger: MetricLogger | None = None,
    step: int | None = None,
    batch: BatchInfo | None = None,
    thresholds: PredictionThresholds | None = None,
    registry: MetricRegistry | None = None,
) -> None:
    """Publish one check: gauges and counters in the registry, events in ``logger``.

    Sets the gauge ``geno_lewm.training.dynamics.<field>`` for each scalar metric, adds
    one to ``geno_lewm.training.dynamics.checks`` and the number of alerts to
    ``geno_lewm.training.dynamics.alert``, and, when ``batch`` is known, the compute time
    to a histogram. With a logger (anything with structlog-style ``info``/``warning``),
    emits one ``training.metric`` event per metric — with its unit, ``variant``,
    ``threshold`` (the bound of ``top_class_fraction``; ``None`` for the normalised
    entropy, which has two, and for the metrics without a criterion), the batch's rows
    (``batch_size``) and classes (``dim``) and, when ``batch`` is given, its dtype,
    backend, device and compute time — and one ``training.dynamics.alert`` warning per
    alert.
    """
    check_instance("metrics", metrics, PredictionMetrics)
    chosen = _check_thresholds(thresholds)
    for alert in alerts:
        check_instance("alerts", alert, PredictionAlert, "a sequence of PredictionAlert")
    if batch is not None:
        check_instance("batch", batch, BatchInfo)
    checked_step = None if step is None else check_non_negative_int("step", step)
    record_check(
        DYNAMICS,
        _measurement(metrics, batch),
        alerts,
        step=checked_step,
        registry=registry,
        logger=logger,
        thresholds=chosen,
        baselines={},
        alert_fields={},
    )


# --------------------------------------------------------------------- monitor
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
            _check_thresholds(thresholds),
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
        statistics, batch = _measure(logits, self._backend)
        return self._conclude(_measurement(statistics.finalize(), batch), step=step, logger=logger)

    def _make_check(self, measurement: Measurement, alerts: tuple[Any, ...], step: int) -> PredictionCheck:
        return PredictionCheck(measurement.source, alerts, step, measurement.batch)

    def __repr__(self) -> str:
        return (
            f"PredictionMonitor(log_every_steps={self._every}, thresholds={self._thresholds!r}, "
            f"backend={self._backend!r})"
        )


# ------------------------------------------------------------------ torch hook
def extract_logits(output: Any, *, class_dim: int = 1) -> torch.Tensor | None:
    """The logits in a module's output, as a detached ``[rows, C]`` tensor, or ``None``.

    A mapping is unwrapped by the first of :data:`LOGIT_KEYS` it holds, a tuple or list
    by its first element. What remains is used only if it is a floating-point tensor of
    at least two dimensions whose ``class_dim`` has at least two classes; dimensions other
    than ``class_dim`` are flattened into rows (``[N, C, H, W]`` gives ``N*H*W`` rows).
    Anything else gives ``None``: it is not a classifier's output.
    """
    if isinstance(output, Mapping):
        output = next((output[key] for key in LOGIT_KEYS if key in output), None)
    elif isinstance(output, (tuple, list)):
        output = output[0] if output else None
    torch_module = sys.modules.get("torch")
    if torch_module is None or not isinstance(output, torch_module.Tensor):
        return None
    if not output.is_floating_point() or output.ndim < 2 or not -output.ndim <= class_dim < output.ndim:
        return None
    classes = int(output.shape[class_dim])
    if classes < 2 or output.numel() == 0:
        return None
    tensor: torch.Tensor = output.detach()
    if output.ndim > 2 or class_dim % output.ndim != 1:
        tensor = tensor.movedim(class_dim, -1).reshape(-1, classes)
    return tensor


class PredictionWatcher:
    """A forward hook that feeds a torch module's outputs to a :class:`PredictionMonitor`.

    Built by :func:`watch_predictions`. Each forward call (in training mode, unless
    ``training_only=False``) advances a call counter; the step given to the monitor is
    that counter, or ``step_fn()`` when a step function was given (e.g. the trainer's
    global step). On a scheduled step the output is unwrapped by :func:`extract_logits`
    and observed once per step (gradient accumulation calls forward several times per
    step; only the first usable output of a step is observed). Outputs that are not
    logits are counted in :attr:`skipped` and otherwise ignored. Bad logits on a
    scheduled step (NaN, infinities) raise :class:`InputError` from the forward call:
    a diverged model is not something to train through silently.

    :meth:`detach` removes the hook; the watcher is also a context manager that detaches
    on exit.
    """

    __slots__ = (
        "_calls",
        "_class_dim",
        "_handle",
        "_last_step",
        "_logger",
        "_monitor",
        "_skipped",
        "_step_fn",
        "_training_only",
    )

    def __init__(
        self,
        module: torch.nn.Module,
        monitor: PredictionMonitor,
        *,
        logger: MetricLogger | None,
        class_dim: int,
        training_only: bool,
        step_fn: Callable[[], int] | None,
    ) -> None:
        self._monitor = monitor
        self._logger = logger
        self._class_dim = class_dim
        self._training_only = training_only
        self._step_fn = step_fn
        self._calls = 0
        self._skipped = 0
        self._last_step: int | None = None
        self._handle: Any = module.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, inputs: Any, output: Any) -> None:
        if self._training_only and not module.training:
            return
        self._calls += 1
        step = self._calls if self._step_fn is None else self._step_fn()
        if step == self._last_step or not self._monitor.should_log(step):
            return
        logits = extract_logits(output, class_dim=self._class_dim)
        if logits is None:
            self._skipped += 1
            return
        self._monitor.observe(logits, step=step, logger=self._logger)
        self._last_step = step

    @property
    def monitor(self) -> PredictionMonitor:
        """The monitor the outputs are fed to."""
        return self._monitor

    @property
    def attached(self) -> bool:
        """Whether the hook is still registered."""
        return self._handle is not None

    @property
    def calls(self) -> int:
        """Forward calls counted so far."""
        return self._calls

    @property
    def skipped(self) -> int:
        """Scheduled calls whose output held no usable logits."""
        return self._skipped

    @property
    def last_check(self) -> PredictionCheck | None:
        """The monitor's most recent check."""
        return self._monitor.last_check

    def detach(self) -> None:
        """Remove the forward hook (idempotent)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> PredictionWatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.detach()


def watch_predictions(
    module: torch.nn.Module,
    monitor: PredictionMonitor | None = None,
    *,
    logger: MetricLogger | None = None,
    class_dim: int = 1,
    training_only: bool = True,
    step_fn: Callable[[], int] | None = None,
) -> PredictionWatcher:
    """Attach a forward hook to ``module`` that watches its outputs' prediction dynamics.

    Parameters
    ----------
    module:
        A ``torch.nn.Module`` returning logits (a tensor, a tuple whose first element is
        the logits, or a mapping with a ``logits``, ``out`` or ``preds`` entry).
    monitor:
        Where the outputs go; ``PredictionMonitor()`` (every 50 steps) when omitted.
    logger:
        Optional structured logger passed to each check.
    class_dim:
        The classes' dimension of the output (1: ``[N, C]`` or ``[N, C, H, W]``).
    training_only:
        Count only forward calls made in training mode (``module.training``).
    step_fn:
        Returns the current step; the watcher counts forward calls when omitted.

    Example
    -------
    >>> import torch
    >>> model = torch.nn.Linear(4, 3)
    >>> with watch_predictions(model, PredictionMonitor(log_every_steps=2)) as watcher:
    ...     _ = model(torch.randn(8, 4)), model(torch.randn(8, 4))
    >>> watcher.last_check.step, watcher.attached
    (2, False)
    """
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(module, torch.nn.Module):
        raise InputError(
            f"'module' must be a torch.nn.Module: got {type(module).__name__}",
            details={"field": "module", "type": type(module).__name__},
        )
    monitor = PredictionMonitor() if monitor is None else check_instance("monitor", monitor, PredictionMonitor)
    if type(class_dim) is not int:
        raise fail("class_dim", "an integer", class_dim)
    if step_fn is not None:
        check_callable("step_fn", step_fn)
    return PredictionWatcher(
        module, monitor, logger=logger, class_dim=class_dim, training_only=bool(training_only), step_fn=step_fn
    )
