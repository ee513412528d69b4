"""The prediction-dynamics family's definitions: its metrics and criteria tables, the
results of one batch of logits, and the functions that compute, check and record them.

See :mod:`geno_lewm.training.dynamics`; definitions: ``rfcs/0009-training-dynamics.md``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from geno_lewm._events import FieldSpec, declare_event
from geno_lewm._protocols import MetricLogger, adapt_logger
from geno_lewm._validation import check_instance, check_non_negative_int, check_positive_finite, fail
from geno_lewm.backends import check_backend_name, get_backend
from geno_lewm.errors import InputError, TrainingAlertError
from geno_lewm.metrics import MetricRegistry
from geno_lewm.training._criteria import Alert, Criterion, Direction, Fixed, evaluate
from geno_lewm.training._family import Family, MetricRow, MetricTable
from geno_lewm.training._recording import BatchInfo, Measurement, batch_fields, record_check

__all__ = [
    "ALERT_EVENT",
    "DYNAMICS",
    "DYNAMICS_CRITERIA",
    "DYNAMICS_METRICS",
    "METRIC_NAMES",
    "PredictionAlert",
    "PredictionCheck",
    "PredictionMetrics",
    "PredictionStatistics",
    "PredictionThresholds",
    "check_thresholds",
    "compute_prediction_metrics",
    "detect_prediction_alerts",
    "measure",
    "measurement",
    "metric_name",
    "prediction_statistics",
    "record_prediction_metrics",
]

ALERT_EVENT = "training.dynamics.alert"
"""The log event of one tripped prediction-dynamics criterion."""


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
        check_instance("other", other, PredictionStatistics)
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
def measure(logits: Any, backend: str, name: str = "logits") -> tuple[PredictionStatistics, BatchInfo]:
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
    return measure(logits, check_backend_name(backend))[0]


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
    return measure(logits, check_backend_name(backend))[0].finalize()


def check_thresholds(thresholds: Any) -> PredictionThresholds:
    """``thresholds`` as given, or the defaults for ``None``."""
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
        thresholds=check_thresholds(thresholds),
        baselines={},
        rows=metrics.batch_size,
        alert_type=PredictionAlert,
    )
    return tuple(reading for reading in readings if reading.tripped)


# ------------------------------------------------------------------- recording
def measurement(metrics: PredictionMetrics, batch: BatchInfo | None) -> Measurement:
    """One check as the pipeline publishes it (``dim`` is the number of classes)."""
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
    to a histogram. With this package's own logger, emits one ``training.metric`` event
    per metric — with its unit, ``variant``, ``threshold`` (the bound of
    ``top_class_fraction``; ``None`` for the normalised entropy, which has two, and for
    the metrics without a criterion), the batch's rows
    (``batch_size``) and classes (``dim``) and, when ``batch`` is given, its dtype,
    backend, device and compute time — and one ``training.dynamics.alert`` warning per
    alert. Any other accepted logger (a GenoLeWM family logger, structlog, ``logging``)
    gets the family's minimal records instead (RFC-0006).
    """
    logger = adapt_logger(logger)
    check_instance("metrics", metrics, PredictionMetrics)
    chosen = check_thresholds(thresholds)
    for alert in alerts:
        check_instance("alerts", alert, PredictionAlert, "a sequence of PredictionAlert")
    if batch is not None:
        check_instance("batch", batch, BatchInfo)
    checked_step = None if step is None else check_non_negative_int("step", step)
    record_check(
        DYNAMICS,
        measurement(metrics, batch),
        alerts,
        step=checked_step,
        registry=registry,
        logger=logger,
        thresholds=chosen,
        baselines={},
        alert_fields={},
    )
