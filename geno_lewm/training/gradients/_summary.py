"""What the output-gradient lens records: per-layer aggregates of one epoch, the running
statistics behind them, and the log event and registry names they are published under.

Definitions: ``rfcs/0009-training-dynamics.md``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from types import MappingProxyType
from typing import Any, Literal

from geno_lewm._events import FieldSpec, declare_event
from geno_lewm._layer_series import BANDS, LAYER_EVENT
from geno_lewm._validation import fail
from geno_lewm.errors import InputError
from geno_lewm.metrics import METRIC_NAMESPACE

__all__ = [
    "LAYER_EVENT",
    "LINE_AGGREGATIONS",
    "LINE_ALIASES",
    "RANGE_AGGREGATIONS",
    "RANGE_ALIASES",
    "GradientEpochSummary",
    "LayerGradientStats",
    "LineAggregation",
    "LineAlias",
    "RangeAggregation",
    "RangeAlias",
    "SeriesStats",
    "check_line_aggregation",
    "check_range_aggregation",
    "gradient_metric_name",
    "quantile",
]

PREFIX = f"{METRIC_NAMESPACE}.gradients"
"""The public prefix of the lens's registry names."""

LineAggregation = Literal["mean", "median", "min", "max", "q1", "q3", "iqr"]
"""The aggregate drawn and logged as a layer's line (canonical names)."""

LINE_AGGREGATIONS: tuple[LineAggregation, ...] = ("mean", "median", "min", "max", "q1", "q3", "iqr")
"""Every line, in the order error messages list them."""

LineAlias = Literal["Q1", "Q3", "IQR"]
"""The reference's (monitorch's) spellings of lines whose canonical name differs."""

LINE_ALIASES: Mapping[str, LineAggregation] = MappingProxyType({"Q1": "q1", "Q3": "q3", "IQR": "iqr"})
"""Reference spelling -> canonical line name."""

RangeAggregation = Literal["std", "minmax", "q1q3"]
"""A band around the line: ``std`` (line ± standard deviation), ``minmax`` (smallest to
largest value) or ``q1q3`` (first to third quartile)."""

RANGE_AGGREGATIONS: tuple[RangeAggregation, ...] = ("std", "minmax", "q1q3")
"""Every band, in the order a selection is stored and named."""

RangeAlias = Literal["min-max", "Q1-Q3"]
"""The reference's (monitorch's) spellings of bands whose canonical name differs."""

RANGE_ALIASES: Mapping[str, RangeAggregation] = MappingProxyType({"min-max": "minmax", "Q1-Q3": "q1q3"})
"""Reference spelling -> canonical band name."""

BAND_STATS: dict[str, tuple[str, ...]] = {"std": ("std",), "minmax": ("min", "max"), "q1q3": ("q1", "q3")}
"""The aggregates each band is drawn from (and whose gauges it sets)."""

STATS = ("mean", "std", "min", "max")
"""Aggregates the running statistics always have."""

VALUE_STATS = ("median", "q1", "q3", "iqr")
"""Aggregates that need every value of the epoch (``keep_values=True``)."""


def quantile(ordered: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of the sorted, non-empty ``ordered`` by linear interpolation.

    The quantile sits at position ``h = (n - 1) * fraction`` of the sorted values (0-based)
    and is ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``: numpy's
    default (``method="linear"``, Hyndman and Fan's type 7), the same as
    ``statistics.quantiles(..., method="inclusive")``. Like numpy, it interpolates from the
    nearer of the two values (equal to ``numpy.quantile`` bit for bit). At ``fraction = 0.5`` this is the
    median (the mean of the two middle values for an even count), so every quantile of the
    lens follows one rule.

    >>> quantile([1.0, 2.0, 3.0, 4.0], 0.25), quantile([1.0, 2.0, 3.0, 4.0], 0.75)
    (1.75, 3.25)

    Raises
    ------
    InputError
        When ``ordered`` is empty, holds a value that is not a finite real, or is not
        sorted (naming the first such position), or ``fraction`` is not a real in [0, 1].
    """
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0.0 <= fraction <= 1.0:
        raise fail("fraction", "a real number in [0, 1]", fraction)
    if not ordered:
        raise fail("ordered", "a non-empty sorted sequence of finite numbers", ordered)
    for index, item in enumerate(ordered):
        if isinstance(item, bool) or not isinstance(item, numbers.Real) or not math.isfinite(item):
            raise fail(f"ordered[{index}]", "a finite real number", item)
        if index and item < ordered[index - 1]:
            raise fail(f"ordered[{index}]", f"at least the value before it ({ordered[index - 1]!r}): sorted", item)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    weight = position - low
    below = ordered[low]
    if weight == 0.0:
        return below
    above = ordered[low + 1]
    # From the nearer end, as numpy does: from below, a weight near 1 would leave the rounding error
    # of the whole gap in a result near ``above``.
    gap = above - below
    value = below + weight * gap if weight < 0.5 else above - (1.0 - weight) * gap
    if not math.isfinite(value):  # a gap past the float range: weigh the two ends instead
        value = (1.0 - weight) * below + weight * above
    return value


def _midpoint(low: float, high: float) -> float:
    """``(low + high) / 2`` as ``statistics.median`` computes it, halved first when the sum
    would leave the float range (two values near the largest float have a finite mean).
    """
    total = low + high
    return total / 2 if math.isfinite(total) else low / 2 + high / 2


def check_line_aggregation(value: object, *, keep_values: bool) -> LineAggregation:
    """``value`` as a canonical line name; the reference's spellings (``"Q1"``, ``"Q3"``,
    ``"IQR"``) are accepted as aliases. The median, quartiles and IQR need the values, so
    they are refused unless ``keep_values``.
    """
    chosen = LINE_ALIASES.get(value, value) if isinstance(value, str) else value
    matches = [line for line in LINE_AGGREGATIONS if line == chosen]
    if not matches:
        listed = ", ".join(map(repr, LINE_AGGREGATIONS))
        raise fail("line_aggregation", f"one of {listed} (or 'Q1', 'Q3', 'IQR')", value)
    line = matches[0]
    if line in VALUE_STATS and not keep_values:
        raise InputError(
            f"'line_aggregation' {line!r} needs keep_values=True: running aggregates have no {line}",
            details={"field": "line_aggregation", "value": value},
        )
    return line


def check_range_aggregation(value: object, *, keep_values: bool) -> tuple[RangeAggregation, ...]:
    """``value`` (one band or a sequence of bands) as a tuple of canonical band names in
    :data:`RANGE_AGGREGATIONS` order: a non-empty selection, each band once; the reference's
    spellings (``"min-max"``, ``"Q1-Q3"``) are accepted as aliases. The quartile band needs
    the values, so it is refused unless ``keep_values``.
    """
    given = (value,) if isinstance(value, str) else value
    condition = "a non-empty selection of 'std', 'minmax' and 'q1q3' (or 'min-max', 'Q1-Q3'), each once"
    if not isinstance(given, (list, tuple)) or not given:
        raise fail("range_aggregation", condition, value)
    chosen = [RANGE_ALIASES.get(band, band) if isinstance(band, str) else band for band in given]
    if any(band not in RANGE_AGGREGATIONS for band in chosen) or len(set(chosen)) != len(chosen):
        raise fail("range_aggregation", condition, value)
    if "q1q3" in chosen and not keep_values:
        raise InputError(
            "'range_aggregation' 'q1q3' needs keep_values=True: running aggregates have no quartiles",
            details={"field": "range_aggregation", "value": value},
        )
    return tuple(band for band in RANGE_AGGREGATIONS if band in chosen)


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
        "line": FieldSpec("string", required=True, choices=LINE_AGGREGATIONS, description="The line's aggregate"),
        "bands": FieldSpec(
            "string",
            choices=tuple(
                "+".join(chosen)
                for size in range(1, len(RANGE_AGGREGATIONS) + 1)
                for chosen in combinations(RANGE_AGGREGATIONS, size)
            ),
            description="The bands the monitor was asked for (range_aggregation); every statistic is logged",
        ),
        "count": FieldSpec("integer", required=True, description="Finite values aggregated"),
        "mean": _number("Mean of the values"),
        "std": _number("Population standard deviation of the values"),
        "min": _number("Smallest value"),
        "max": _number("Largest value"),
        "median": _number(
            "Median of the values: mean of the two middle ones for an even count (kept values only)", nullable=True
        ),
        "q1": _number("First quartile of the values, linear interpolation (kept values only)", nullable=True),
        "q3": _number("Third quartile of the values, linear interpolation (kept values only)", nullable=True),
        "nonfinite": FieldSpec("integer", required=True, description="Passes with a NaN or infinite value"),
        "zeros": FieldSpec("integer", required=True, description="Zero gradients left out of a log scale"),
        "correlation_count": FieldSpec("integer", description="Cosines aggregated"),
        "correlation_mean": _number("Mean cosine with the previous pass's gradient", nullable=True),
        "correlation_std": _number("Population standard deviation of the cosines", nullable=True),
        "correlation_min": _number("Smallest cosine", nullable=True),
        "correlation_max": _number("Largest cosine", nullable=True),
        "correlation_median": _number("Median cosine (kept values only)", nullable=True),
        "correlation_q1": _number("First quartile of the cosines (kept values only)", nullable=True),
        "correlation_q3": _number("Third quartile of the cosines (kept values only)", nullable=True),
        "correlation_skipped": FieldSpec("integer", description="Passes whose gradient changed shape"),
    },
)


# --------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class SeriesStats:
    """Aggregates of the finite values one layer recorded in one epoch.

    ``std`` is the population standard deviation (divide by ``count``). When ``count`` is
    0 every aggregate is NaN (the layer received only non-finite values). ``median``,
    ``q1``, ``q3`` and ``values`` are present only when the values were kept
    (``keep_values=True``); :attr:`iqr` is ``q3 - q1``.

    Quantiles use linear interpolation between the sorted values (:func:`quantile`;
    numpy's default method, ``statistics.quantiles(..., method="inclusive")``): the
    median is therefore the mean of the two middle values when the count is even, as
    ``statistics.median`` and ``numpy.median`` give it. monitorch picks the observation
    closest to the middle instead (``method="closest_observation"``); this lens keeps the
    interpolated median so that one rule defines the median and both quartiles (the
    median is the second quartile), and so that the numbers match what a reader gets
    from numpy or ``statistics`` on the logged values.
    """

    count: int
    mean: float
    std: float
    min: float
    max: float
    median: float | None = None
    values: tuple[float, ...] | None = None
    q1: float | None = None
    q3: float | None = None

    @property
    def iqr(self) -> float | None:
        """The interquartile range ``q3 - q1``; ``None`` without kept values."""
        if self.q1 is None or self.q3 is None:
            return None
        return self.q3 - self.q1

    def aggregate(self, name: str) -> float:
        """The aggregate called ``name``: ``mean``, ``std``, ``min``, ``max``, or, with kept
        values, ``median``, ``q1``, ``q3``, ``iqr`` (the reference's ``Q1``, ``Q3``, ``IQR``
        are accepted too).
        """
        name = LINE_ALIASES.get(name, name)
        if name in VALUE_STATS:
            value = self.iqr if name == "iqr" else getattr(self, name)
            if value is None:
                raise InputError(
                    f"the {name} needs the values: build GradientGeometry with keep_values=True",
                    details={"field": "line_aggregation", "value": name},
                )
            found: float = value
            return found
        if name not in STATS:
            raise InputError(
                f"'name' must be one of 'mean', 'std', 'min', 'max', 'median', 'q1', 'q3', 'iqr': got {name!r}",
                details={"field": "name", "value": name},
            )
        result: float = getattr(self, name)
        return result


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
            return SeriesStats(0, nan, nan, nan, nan, nan, (), nan, nan)
        median = q1 = q3 = None
        values = None
        if self.values is not None:
            values = tuple(self.values)
            ordered = sorted(values)
            middle = len(ordered) // 2
            median = ordered[middle] if len(ordered) % 2 else _midpoint(ordered[middle - 1], ordered[middle])
            q1 = quantile(ordered, 0.25)
            q3 = quantile(ordered, 0.75)
        std = math.sqrt(max(self.m2, 0.0) / self.count)
        return SeriesStats(self.count, self.mean, std, self.low, self.high, median, values, q1, q3)


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
        "q1": value.q1,
        "q3": value.q3,
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
            correlation_median=correlation.median,
            correlation_q1=correlation.q1,
            correlation_q3=correlation.q3,
            correlation_skipped=stats.correlation_skipped,
        )
    return fields


def gradient_metric_name(layer_key: str, quantity: str, stat: str) -> str:
    """Registry name of one aggregate of one layer, e.g.
    ``geno_lewm.training.gradients.encoder.0.rms.mean`` (``quantity`` is ``correlation``
    for the cosines).
    """
    return f"{PREFIX}.{layer_key}.{quantity}.{stat}"
