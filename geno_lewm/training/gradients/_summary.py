"""What the output-gradient lens records: per-layer aggregates of one epoch, the running
statistics behind them, and the log event and registry names they are published under.

Definitions: ``rfcs/0009-training-dynamics.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from geno_lewm._events import FieldSpec, declare_event
from geno_lewm._layer_series import BANDS, LAYER_EVENT, Band
from geno_lewm.errors import InputError
from geno_lewm.metrics import METRIC_NAMESPACE

__all__ = [
    "LAYER_EVENT",
    "GradientEpochSummary",
    "LayerGradientStats",
    "LineAggregation",
    "RangeAggregation",
    "SeriesStats",
    "gradient_metric_name",
]

PREFIX = f"{METRIC_NAMESPACE}.gradients"
"""The public prefix of the lens's registry names."""

LineAggregation = Literal["mean", "median"]
RangeAggregation = Band
BAND_STATS: dict[str, tuple[str, ...]] = {"std": ("std",), "minmax": ("min", "max")}
STATS = ("mean", "std", "min", "max")


def _number(description: str, *, nullable: bool = False) -> FieldSpec:
    return FieldSpec("number", required=not nullable, nullable=nullable, description=description)


declare_event(
    LAYER_EVENT,
    summary="One layer's output-gradient geometry over one epoch: a line and bands.",
    fields={
        "layer": FieldSpec("string", required=True, description="Module name in the unwrapped model"),
        "quantity": FieldSpec(
            "string",
            required=True,
            choices=("l2", "rms", "log10_l2", "log10_rms"),
            description="What was measured per backward pass",
        ),
        "epoch": FieldSpec("integer", required=True, description="Epoch number"),
        "line": FieldSpec("string", required=True, choices=("mean", "median"), description="The line's aggregate"),
        "bands": FieldSpec(
            "string",
            choices=("std", "minmax", "std+minmax"),
            description="The bands the monitor was asked for (range_aggregation); every statistic is logged",
        ),
        "count": FieldSpec("integer", required=True, description="Finite values aggregated"),
        "mean": _number("Mean of the values"),
        "std": _number("Population standard deviation of the values"),
        "min": _number("Smallest value"),
        "max": _number("Largest value"),
        "median": _number("Median of the values (kept values only)", nullable=True),
        "nonfinite": FieldSpec("integer", required=True, description="Passes with a NaN or infinite value"),
        "zeros": FieldSpec("integer", required=True, description="Zero gradients left out of a log scale"),
        "correlation_count": FieldSpec("integer", description="Cosines aggregated"),
        "correlation_mean": _number("Mean cosine with the previous pass's gradient", nullable=True),
        "correlation_std": _number("Population standard deviation of the cosines", nullable=True),
        "correlation_min": _number("Smallest cosine", nullable=True),
        "correlation_max": _number("Largest cosine", nullable=True),
        "correlation_skipped": FieldSpec("integer", description="Passes whose gradient changed shape"),
    },
)


# --------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class SeriesStats:
    """Aggregates of the finite values one layer recorded in one epoch.

    ``std`` is the population standard deviation (divide by ``count``). When ``count`` is
    0 every aggregate is NaN (the layer received only non-finite values). ``median`` and
    ``values`` are present only when the values were kept (``keep_values=True``).
    """

    count: int
    mean: float
    std: float
    min: float
    max: float
    median: float | None = None
    values: tuple[float, ...] | None = None

    def aggregate(self, name: str) -> float:
        """The aggregate called ``name`` (``mean``, ``std``, ``min``, ``max``, ``median``)."""
        if name == "median":
            if self.median is None:
                raise InputError(
                    "the median needs the values: build GradientGeometry with keep_values=True",
                    details={"field": "line_aggregation", "value": name},
                )
            return self.median
        if name not in STATS:
            raise InputError(
                f"'name' must be one of 'mean', 'std', 'min', 'max', 'median': got {name!r}",
                details={"field": "name", "value": name},
            )
        value: float = getattr(self, name)
        return value


@dataclass(frozen=True, slots=True)
class LayerGradientStats:
    """One layer's epoch: its output-gradient magnitudes and, optionally, correlations.

    Attributes
    ----------
    layer:
        The module's name in the (unwrapped) model, ``"root"`` for a model that is itself
        a leaf.
    quantity:
        What was measured: ``l2``, ``rms``, ``log10_l2`` or ``log10_rms``.
    value:
        Aggregates of the per-backward-pass magnitudes.
    correlation:
        Aggregates of the cosines with the previous pass's gradient; ``None`` when the
        correlation is not computed.
    nonfinite:
        Passes whose gradient norm (or cosine) was NaN or infinite, left out of the
        aggregates and counted here instead.
    zeros:
        In log scale, passes with a zero gradient (log10 of 0 is not a number), left out
        of the aggregates and counted here; always 0 in linear scale.
    correlation_skipped:
        Passes whose gradient had a different shape from the previous one (e.g. a
        smaller last batch), so no cosine was defined.
    """

    layer: str
    quantity: str
    value: SeriesStats
    correlation: SeriesStats | None
    nonfinite: int = 0
    zeros: int = 0
    correlation_skipped: int = 0


@dataclass(frozen=True, slots=True)
class GradientEpochSummary:
    """The per-layer aggregates of one epoch, output layer first.

    ``layers`` holds the watched layers that received at least one gradient this epoch;
    ``silent_layers`` the others (e.g. frozen or unused branches).
    """

    epoch: int
    step: int | None
    quantity: str
    line_aggregation: str
    layers: tuple[LayerGradientStats, ...]
    silent_layers: tuple[str, ...] = ()
    range_aggregation: tuple[str, ...] = BANDS

    def layer(self, name: str) -> LayerGradientStats:
        """The statistics of layer ``name``; :class:`InputError` if it has none this epoch."""
        for stats in self.layers:
            if stats.layer == name:
                return stats
        raise InputError(
            f"no gradient statistics for layer {name!r} in epoch {self.epoch}",
            details={"field": "name", "value": name},
        )


# -------------------------------------------------------------- accumulation
class RunningStats:
    """Welford's running mean and sum of squared deviations, with min, max and
    optionally every value.
    """

    __slots__ = ("count", "high", "low", "m2", "mean", "values")

    def __init__(self, keep_values: bool) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.low = math.inf
        self.high = -math.inf
        self.values: list[float] | None = [] if keep_values else None

    def add(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        if self.values is not None:
            self.values.append(value)

    def stats(self) -> SeriesStats:
        if self.count == 0:
            nan = math.nan
            if self.values is None:
                return SeriesStats(0, nan, nan, nan, nan)
            return SeriesStats(0, nan, nan, nan, nan, nan, ())
        median = None
        values = None
        if self.values is not None:
            values = tuple(self.values)
            ordered = sorted(values)
            middle = len(ordered) // 2
            median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        std = math.sqrt(max(self.m2, 0.0) / self.count)
        return SeriesStats(self.count, self.mean, std, self.low, self.high, median, values)


def layer_event_fields(summary: GradientEpochSummary, stats: LayerGradientStats) -> dict[str, Any]:
    """The fields of the :data:`LAYER_EVENT` record of one layer's epoch."""
    value = stats.value
    fields: dict[str, Any] = {
        "layer": stats.layer,
        "quantity": stats.quantity,
        "epoch": summary.epoch,
        "line": summary.line_aggregation,
        "bands": "+".join(summary.range_aggregation),
        "count": value.count,
        "mean": value.mean,
        "std": value.std,
        "min": value.min,
        "max": value.max,
        "median": value.median,
        "nonfinite": stats.nonfinite,
        "zeros": stats.zeros,
    }
    correlation = stats.correlation
    if correlation is not None:
        fields.update(
            correlation_count=correlation.count,
            correlation_mean=correlation.mean,
            correlation_std=correlation.std,
            correlation_min=correlation.min,
            correlation_max=correlation.max,
            correlation_skipped=stats.correlation_skipped,
        )
    return fields


def gradient_metric_name(layer_key: str, quantity: str, stat: str) -> str:
    """Registry name of one aggregate of one layer, e.g.
    ``geno_lewm.training.gradients.encoder.0.rms.mean`` (``quantity`` is ``correlation``
    for the cosines).
    """
    return f"{PREFIX}.{layer_key}.{quantity}.{stat}"
