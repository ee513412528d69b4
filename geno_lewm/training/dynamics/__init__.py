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

from geno_lewm.training.dynamics._metrics import (
    ALERT_EVENT,
    DYNAMICS_CRITERIA,
    DYNAMICS_METRICS,
    METRIC_NAMES,
    PredictionAlert,
    PredictionCheck,
    PredictionMetrics,
    PredictionStatistics,
    PredictionThresholds,
    compute_prediction_metrics,
    detect_prediction_alerts,
    metric_name,
    prediction_statistics,
    record_prediction_metrics,
)
from geno_lewm.training.dynamics._monitor import PredictionMonitor
from geno_lewm.training.dynamics._watch import (
    LOGIT_KEYS,
    PredictionWatcher,
    check_class_dim,
    extract_logits,
    logits_as_rows,
    watch_predictions,
)

__all__ = [
    "ALERT_EVENT",
    "DYNAMICS_CRITERIA",
    "DYNAMICS_METRICS",
    "LOGIT_KEYS",
    "METRIC_NAMES",
    "PredictionAlert",
    "PredictionCheck",
    "PredictionMetrics",
    "PredictionMonitor",
    "PredictionStatistics",
    "PredictionThresholds",
    "PredictionWatcher",
    "check_class_dim",
    "compute_prediction_metrics",
    "detect_prediction_alerts",
    "extract_logits",
    "logits_as_rows",
    "metric_name",
    "prediction_statistics",
    "record_prediction_metrics",
    "watch_predictions",
]
