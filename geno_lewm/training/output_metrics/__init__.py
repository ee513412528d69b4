"""Any metric on what training, validation and test steps return: the framework-free core.

:class:`OutputMetrics` takes the metrics a user cares about (accuracy, F1, an
alignment score of embeddings, a scikit-learn score) and computes them from each step's
outputs, so a plain training loop needs three calls::

    metrics = OutputMetrics({"acc": accuracy_score}, needs={"acc": ["target", "label_pred"]})
    for batch in loader:
        outputs = step(batch)            # a mapping: {"label_pred": ..., "target": ...}
        metrics.update(outputs)
    print(metrics.compute())             # {'acc': 0.93}
    metrics.reset()

The Lightning :class:`~geno_lewm.integrations.metrics_callback.MetricsCallback` is a thin
layer over it. Definitions and conventions: ``rfcs/0011-metrics-callback-and-config.md``.

What a metric can be
    A torchmetrics ``Metric`` (driven through its own ``update`` / ``compute`` /
    ``reset``, so its accumulation and its distributed synchronisation apply unchanged), a
    scikit-learn metric function (tensors reach it as NumPy arrays), or any callable
    returning a number. Metrics come as a mapping ``name -> metric``, a sequence, or one
    metric; names are inferred from a function's ``__name__`` or, for an object, from its
    class name in snake case (``MulticlassAccuracy`` -> ``multiclass_accuracy``).

What feeds it (``needs``)
    ``None`` infers each required parameter of the metric's signature (``update`` for a
    torchmetrics metric) from the output keys: the key of the same name, else the one key
    of the same meaning (:data:`PREDICTION_KEYS`, :data:`TARGET_KEYS`: ``y_pred`` finds
    ``preds``, ``y_true`` finds ``labels``). It never guesses: a missing key, two
    candidates, or only a key of another meaning (``logits`` for scikit-learn's
    ``y_pred``, which wants labels) is an :class:`~geno_lewm.errors.InputError` naming
    the metric, the parameter and the keys, raised at the first step, before any metric
    is called. (A torchmetrics metric's ``preds`` takes logits, probabilities or labels,
    as torchmetrics documents.) A sequence gives positional sources, a mapping keyword
    sources; a source is an output key or a callable applied to the outputs mapping. A
    mapping whose keys are metric names gives each named metric its own ``needs`` — one
    source (``needs={"x": "z1"}`` for a metric ``x`` of one argument), a sequence, a
    mapping or ``None`` — and the others are inferred; one that could equally be read as
    keyword sources for every metric, and would feed them differently, is refused.

How it is computed (``mode``)
    ``"step"`` (cheap): a callable is evaluated on every batch and the epoch's value is
    the mean of the batch values weighted by the batch sizes (not a mean of means).
    ``"epoch"`` (exact, more memory): each source is collected, detached (on the CPU with
    ``collect_on_cpu=True``), and the metric is evaluated once on the concatenation. A
    torchmetrics metric is exact in both modes: its own state accumulates.

Distributed
    When a ``torch.distributed`` group of more than one rank is initialised,
    :meth:`OutputMetrics.compute` is collective (every rank must call it): per-step
    values are combined as sums of ``value x batch size`` and of batch sizes over all
    ranks; collected outputs are gathered from all ranks (shards of unequal sizes, in
    rank order) and the metric is evaluated on the whole; every rank gets the same
    numbers. A rank whose own data cannot be concatenated makes every rank raise.

Only the standard library is imported here; torch, NumPy and torchmetrics are looked up
in ``sys.modules`` (a tensor cannot exist without its module having been imported).
"""

from __future__ import annotations

from geno_lewm.training.output_metrics._core import DistributedMetricsError, OutputMetrics
from geno_lewm.training.output_metrics._definitions import (
    PREDICTION_KEYS,
    TARGET_KEYS,
    MetricDefinition,
    MetricValue,
    Mode,
    Needs,
    Source,
    define_metrics,
    infer_metric_name,
    resolve_needs,
)

__all__ = [
    "PREDICTION_KEYS",
    "TARGET_KEYS",
    "DistributedMetricsError",
    "MetricDefinition",
    "MetricValue",
    "Mode",
    "Needs",
    "OutputMetrics",
    "Source",
    "define_metrics",
    "infer_metric_name",
    "resolve_needs",
]
