"""Criteria as data: one row per criterion, one alert type, one evaluation.

A metric family states its alert criteria as a table of :class:`Criterion` rows: which
metric is compared, on which side it trips (``below``: ``value < bound``; ``above``:
``value > bound``), and how its bound is derived from the family's thresholds —

* :class:`Fixed` — a threshold as it is (``kl_reg > kl_reg_max``);
* :class:`RatioOfMetric` — a threshold times another metric of the same check
  (``pred_var_per_dim < pred_var_to_target_var * target_var_per_dim``);
* :class:`RatioOfBaseline` — a threshold times a baseline the monitor learned from the
  run (``pairwise_pred_dist_mean < pairwise_to_initial * its first value``);
* :class:`OffsetOfBaseline` — a baseline plus a threshold (a rise above the lowest value);
* :class:`Lowest` / :class:`Highest` — several of these at once (history *and* noise floor).

:func:`evaluate` turns the table, a check's values, the thresholds and the baselines
into :class:`Alert` objects — one per criterion that can be evaluated, tripped or not —
and every other piece (the alert policy, the log events, the error message) reads the
criterion, the value, the bound and the direction from them. Adding a criterion to a
family is adding a row (``rfcs/0012-architecture.md`` walks through an example).

Standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from geno_lewm._validation import fail

__all__ = [
    "Alert",
    "BoundRule",
    "Criterion",
    "Direction",
    "Fixed",
    "Highest",
    "Lowest",
    "OffsetOfBaseline",
    "RatioOfBaseline",
    "RatioOfMetric",
    "bounds_by_metric",
    "evaluate",
]

Direction = Literal["below", "above"]
"""``below``: the criterion trips when ``value < threshold``; ``above``: when ``value > threshold``."""

_SYMBOLS = {"below": "<", "above": ">"}


# ------------------------------------------------------------------ the alert
def _real(name: str, value: object) -> float:
    if type(value) is float:
        return value
    if isinstance(value, (bool, str, bytes)):
        raise fail(name, "a real number", value)
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise fail(name, "a real number", value) from None


@dataclass(frozen=True, slots=True)
class Alert:
    """One criterion evaluated at one check: the metric's ``value``, the ``threshold`` in
    force and the ``direction`` that trips it. A check's alerts are the tripped ones.

    Attributes
    ----------
    criterion:
        The criterion's name (for the RFC-0005 criteria, the metric's own name).
    value:
        The metric's value at the check.
    threshold:
        The bound it is compared with: a number, infinite when the bound overflowed
        (``pred_var_per_dim < 0.5 * inf``), never NaN.
    direction:
        ``"below"`` or ``"above"``: the side that trips.
    metric:
        The metric compared; the criterion's name when not given.

    Example
    -------
    >>> alert = Alert("kl_reg", 12.0, 10.0, "above")
    >>> alert.tripped, alert.describe()
    (True, 'kl_reg = 12 > 10')
    """

    criterion: str
    value: float
    threshold: float
    direction: Direction
    metric: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.criterion, str) or not self.criterion:
            raise fail("criterion", "a non-empty string", self.criterion)
        if self.direction not in _SYMBOLS:
            raise fail("direction", "'below' or 'above'", self.direction)
        threshold = _real("threshold", self.threshold)
        if math.isnan(threshold):
            raise fail("threshold", "a number, not NaN", self.threshold)
        object.__setattr__(self, "threshold", threshold)
        object.__setattr__(self, "value", _real("value", self.value))
        if not self.metric:
            object.__setattr__(self, "metric", self.criterion)
        elif not isinstance(self.metric, str):
            raise fail("metric", "a string", self.metric)

    @property
    def tripped(self) -> bool:
        """Whether the value is past the threshold (strictly; NaN never trips)."""
        if self.direction == "below":
            return self.value < self.threshold
        return self.value > self.threshold

    @property
    def symbol(self) -> str:
        """``<`` or ``>``: the comparison that trips."""
        return _SYMBOLS[self.direction]

    def describe(self) -> str:
        """The comparison in words, e.g. ``pred_var_per_dim = 0.1 < 0.5``; the metric is
        named as well when it is not the criterion (``mode_collapse: pred_entropy = ...``).
        """
        comparison = f"{self.metric} = {self.value:.6g} {self.symbol} {self.threshold:.6g}"
        return comparison if self.metric == self.criterion else f"{self.criterion}: {comparison}"

    def clear_bound(self, hysteresis: float) -> float:
        """The value an alert on this criterion must get back to before it clears."""
        margin = hysteresis * abs(self.threshold)
        return self.threshold + margin if self.direction == "below" else self.threshold - margin

    def recovered(self, hysteresis: float) -> bool:
        """Whether the value is back to (or past) :meth:`clear_bound` (NaN never recovers)."""
        bound = self.clear_bound(hysteresis)
        return self.value >= bound if self.direction == "below" else self.value <= bound


# ------------------------------------------------------------------ bound rules
@dataclass(frozen=True, slots=True)
class Fixed:
    """The bound is the threshold ``threshold`` (an attribute of the family's thresholds)."""

    threshold: str

    def bound(
        self, thresholds: object, values: Mapping[str, float], baselines: Mapping[str, float | None]
    ) -> float | None:
        """The threshold's value; ``None`` when it is switched off (``None``)."""
        factor: float | None = getattr(thresholds, self.threshold)
        return factor

    def describe(self) -> str:
        """The rule in words, for documentation."""
        return self.threshold


@dataclass(frozen=True, slots=True)
class RatioOfMetric:
    """The bound is the threshold ``threshold`` times the metric ``metric`` of the same check."""

    threshold: str
    metric: str

    def bound(
        self, thresholds: object, values: Mapping[str, float], baselines: Mapping[str, float | None]
    ) -> float | None:
        """``threshold * values[metric]``; ``None`` when either is unknown."""
        factor: float | None = getattr(thresholds, self.threshold)
        other = values.get(self.metric)
        return None if factor is None or other is None else factor * other

    def describe(self) -> str:
        """The rule in words, for documentation."""
        return f"{self.threshold} x {self.metric}"


@dataclass(frozen=True, slots=True)
class RatioOfBaseline:
    """The bound is the threshold ``threshold`` times the run's baseline ``baseline`` (a
    value the monitor learned, e.g. at its first check); no bound while it is unknown.
    """

    threshold: str
    baseline: str

    def bound(
        self, thresholds: object, values: Mapping[str, float], baselines: Mapping[str, float | None]
    ) -> float | None:
        """``threshold * baselines[baseline]``; ``None`` when either is unknown."""
        factor: float | None = getattr(thresholds, self.threshold)
        reference = baselines.get(self.baseline)
        return None if factor is None or reference is None else factor * reference

    def describe(self) -> str:
        """The rule in words, for documentation."""
        return f"{self.threshold} x initial {self.baseline}"


@dataclass(frozen=True, slots=True)
class OffsetOfBaseline:
    """The bound is the run's baseline ``baseline`` plus the threshold ``threshold`` (a rise
    of so much above the lowest value seen, say); no bound while the baseline is unknown.
    """

    threshold: str
    baseline: str

    def bound(
        self, thresholds: object, values: Mapping[str, float], baselines: Mapping[str, float | None]
    ) -> float | None:
        """``baselines[baseline] + threshold``; ``None`` when either is unknown."""
        offset: float | None = getattr(thresholds, self.threshold)
        reference = baselines.get(self.baseline)
        return None if offset is None or reference is None else reference + offset

    def describe(self) -> str:
        """The rule in words, for documentation."""
        return f"lowest {self.baseline} + {self.threshold}"


@dataclass(frozen=True, slots=True)
class Lowest:
    """The bound is the lowest of several rules' bounds: for a ``below`` criterion, the value
    must be past every one of them (a ratio of the run's history *and* a floor that noise
    alone does not reach); no bound while any of them is unknown.
    """

    rules: tuple[Fixed | RatioOfMetric | RatioOfBaseline | OffsetOfBaseline, ...]

    def bound(
        self, thresholds: object, values: Mapping[str, float], baselines: Mapping[str, float | None]
    ) -> float | None:
        """The smallest of the rules' bounds."""
        bounds = [rule.bound(thresholds, values, baselines) for rule in self.rules]
        return None if any(b is None for b in bounds) else min(b for b in bounds if b is not None)

    def describe(self) -> str:
        """The rule in words, for documentation."""
        return "min(" + ", ".join(rule.describe() for rule in self.rules) + ")"


@dataclass(frozen=True, slots=True)
class Highest:
    """The bound is the highest of several rules' bounds: an ``above`` criterion's value must
    be past every one of them; no bound while any of them is unknown.
    """

    rules: tuple[Fixed | RatioOfMetric | RatioOfBaseline | OffsetOfBaseline, ...]

    def bound(
        self, thresholds: object, values: Mapping[str, float], baselines: Mapping[str, float | None]
    ) -> float | None:
        """The largest of the rules' bounds."""
        bounds = [rule.bound(thresholds, values, baselines) for rule in self.rules]
        return None if any(b is None for b in bounds) else max(b for b in bounds if b is not None)

    def describe(self) -> str:
        """The rule in words, for documentation."""
        return "max(" + ", ".join(rule.describe() for rule in self.rules) + ")"


BoundRule = Fixed | RatioOfMetric | RatioOfBaseline | OffsetOfBaseline | Lowest | Highest
"""How a criterion's bound is derived."""


# ------------------------------------------------------------------ the table
@dataclass(frozen=True, slots=True)
class Criterion:
    """One row of a family's criteria table.

    Attributes
    ----------
    name:
        The criterion's name, as alerts and log events carry it.
    metric:
        The metric compared (a key of the family's values).
    direction:
        ``"below"`` or ``"above"``.
    bound:
        How the bound is derived (:class:`Fixed`, :class:`RatioOfMetric`,
        :class:`RatioOfBaseline`).
    min_rows:
        The criterion is evaluated only on batches of at least this many rows (a batch
        of one row always names a single class, say).
    summary:
        What a tripped criterion means, for documentation.
    """

    name: str
    metric: str
    direction: Direction
    bound: BoundRule
    min_rows: int = 0
    summary: str = ""

    def rule(self) -> str:
        """The criterion as a formula, e.g. ``kl_reg > kl_reg_max``."""
        return f"{self.metric} {_SYMBOLS[self.direction]} {self.bound.describe()}"


AlertT = TypeVar("AlertT", bound=Alert)


def evaluate(
    criteria: Sequence[Criterion],
    values: Mapping[str, float],
    *,
    thresholds: object,
    baselines: Mapping[str, float | None],
    rows: int,
    alert_type: type[AlertT],
) -> tuple[AlertT, ...]:
    """Every criterion of ``criteria`` that can be evaluated at this check, tripped or not,
    in table order.

    A criterion is left out when its metric is not among ``values`` (e.g. spectra not
    computed), when the batch has fewer than ``min_rows`` rows, or when its bound is
    unknown (a baseline not yet learned). An infinite bound (a variance too large for a
    float) is compared like any other. Inputs are the family's own,
    already checked: nothing is validated here.
    """
    readings: list[AlertT] = []
    for criterion in criteria:
        value = values.get(criterion.metric)
        if value is None or rows < criterion.min_rows:
            continue
        bound = criterion.bound.bound(thresholds, values, baselines)
        if bound is None or math.isnan(bound):
            continue
        readings.append(_trusted(alert_type, criterion, value, bound))
    return tuple(readings)


def _trusted(alert_type: type[AlertT], criterion: Criterion, value: float, bound: float) -> AlertT:
    """An alert of ``alert_type`` built from a table row and the family's own computed
    numbers, which need no checking again (a public constructor checks what users pass).
    """
    alert = object.__new__(alert_type)
    for name, field_value in (
        ("criterion", criterion.name),
        ("value", float(value)),
        ("threshold", float(bound)),
        ("direction", criterion.direction),
        ("metric", criterion.metric),
    ):
        object.__setattr__(alert, name, field_value)
    return alert


def bounds_by_metric(
    criteria: Sequence[Criterion],
    values: Mapping[str, float],
    *,
    thresholds: object,
    baselines: Mapping[str, float | None],
) -> dict[str, Any]:
    """The bound in force for each metric that exactly one criterion compares (what a
    metric's log event calls its ``threshold``); a metric with two criteria (a band) has
    none, and neither has a metric whose bound is unknown.
    """
    counts: dict[str, int] = {}
    for criterion in criteria:
        counts[criterion.metric] = counts.get(criterion.metric, 0) + 1
    return {
        criterion.metric: criterion.bound.bound(thresholds, values, baselines)
        for criterion in criteria
        if counts[criterion.metric] == 1
    }
