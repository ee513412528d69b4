"""Output-gradient geometry: how large the gradient reaching each layer's output is, and
how it turns from one backward pass to the next.

:class:`GradientGeometry` watches the leaf modules of a torch model (activation modules
skipped by default). On every backward pass it records, per layer, the L2 norm of the
gradient with respect to the layer's output — or its RMS (norm / sqrt(numel)), either
optionally in log10 — and, when asked, the cosine between this gradient and the one the
layer received on the previous backward pass. :meth:`GradientGeometry.end_epoch`
aggregates the epoch per layer into a line (mean by default; median, min, max,
quartiles or IQR) and bands (std, min-max, and with kept values Q1-Q3), returned as
data, set as registry gauges and logged as events; :func:`plot_gradient_geometry` draws
the mean or median line with the std and min-max bands. Layers are listed output layer
first.

How the gradients are caught: a forward hook registers a gradient hook on the layer's
output tensor. Unlike ``register_full_backward_hook`` this does not wrap the output in a
custom autograd function, so models with in-place activations (``ReLU(inplace=True)``)
work unchanged, and the gradient seen is the one with respect to the value the layer
returned, before any in-place change.

Cost and memory: each backward pass adds one norm reduction per layer (and for the
correlation one dot product); the values stay on the device and come back to the host in
one transfer per device every :data:`FLUSH_EVERY` records and at the end of an epoch.
The correlation needs the previous gradient of every layer. A gradient with at most
``correlation_sketch_size`` elements is kept as it is (exact cosine); a larger one is
kept as a sign-randomised count sketch of exactly ``correlation_sketch_size`` float32
values, whose cosine estimates the true one without bias (error about
``1 / sqrt(correlation_sketch_size)``). The state is therefore bounded by
``layers * correlation_sketch_size * 4`` bytes (16 MiB for 64 layers at the default
65,536); ``correlation_sketch_size=None`` keeps full gradients (exact, as much memory as
one set of activations). :attr:`GradientGeometry.correlation_state_bytes` says what is
held. Definitions: ``rfcs/0009-training-dynamics.md``.

Example
-------
>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
>>> with GradientGeometry(model, normalize_by_size=True) as geometry:
...     for _ in range(3):
...         model(torch.randn(5, 3)).sum().backward()
...     summary = geometry.end_epoch()
>>> [(s.layer, s.value.count) for s in summary.layers]
[('2', 3), ('0', 3)]
"""

from __future__ import annotations

from geno_lewm._layer_series import LayerSeries
from geno_lewm.training.gradients._hooks import (
    DEFAULT_SKETCH_SIZE,
    FLUSH_EVERY,
    GradientGeometry,
    check_gradient_options,
)
from geno_lewm.training.gradients._series import gradient_series, plot_gradient_geometry
from geno_lewm.training.gradients._summary import (
    LAYER_EVENT,
    LINE_AGGREGATIONS,
    RANGE_AGGREGATIONS,
    GradientEpochSummary,
    LayerGradientStats,
    LineAggregation,
    LineAlias,
    RangeAggregation,
    RangeAlias,
    SeriesStats,
    gradient_metric_name,
    quantile,
)

__all__ = [
    "DEFAULT_SKETCH_SIZE",
    "FLUSH_EVERY",
    "LAYER_EVENT",
    "LINE_AGGREGATIONS",
    "RANGE_AGGREGATIONS",
    "GradientEpochSummary",
    "GradientGeometry",
    "LayerGradientStats",
    "LayerSeries",
    "LineAggregation",
    "LineAlias",
    "RangeAggregation",
    "RangeAlias",
    "SeriesStats",
    "check_gradient_options",
    "gradient_metric_name",
    "gradient_series",
    "plot_gradient_geometry",
    "quantile",
]
