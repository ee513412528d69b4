"""The collapse family's calibrated criteria (``CollapseMonitor(criteria="calibrated")``):
statistics compared with the run's own history and with what an isotropic Gaussian batch
of the same shape does by chance, so that a healthy batch alerts at a stated rate.

Statistics per check, from the spectra of the predictions and the targets; the criteria
judge the *targets* (the representation), the predictions' statistics are recorded for the
diagnosis (a predictor that is learning shrinks and concentrates its output long before it
is any good, healthy or not):

* ``<side>_total_variance`` — the spread; a **complete collapse** onto a point of small
  norm is a fall of the targets' below ``spread_ratio`` times its largest value since the
  run's reference check;
* ``<side>_direction_spread`` — the spread of the rows' directions (the normalised std
  times ``sqrt(D)``); a **complete collapse** onto a point away from the origin, which a
  cosine loss meets as well as any, is a fall of the targets' below ``direction_ratio``
  times its largest value;
* ``<side>_rank_to_gaussian`` — the effective rank divided by that of a Gaussian batch of
  the same ``N`` and ``D`` (so its small-``N`` bias does not count as collapse); a
  **dimensional collapse** is a fall of the targets' below ``rank_ratio`` times its largest
  value, and below a floor no Gaussian batch reaches;
* ``kl_excess_per_dim`` (with ``kl_reg``) — the Gaussian KL above its expectation for a
  Gaussian batch of the same shape, per dimension; an alert is a rise of ``kl_rise`` nats
  per dimension above its lowest value, and above what Gaussian noise gives.

The reference is the first check: a forced check before the first update
(``observe(..., step=0, force=True)``) makes it the untrained model's. Definitions, the
false-alarm arithmetic and the evaluation: ``rfcs/0013-detection-calibration.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

from geno_lewm._validation import check_positive_finite, fail
from geno_lewm.errors import InputError
from geno_lewm.training._calibration import f_quantile, gaussian_effective_rank, gaussian_kl_reference
from geno_lewm.training._collapse_metrics import COLLAPSE, CollapseMetrics
from geno_lewm.training._criteria import Criterion, Fixed, Highest, Lowest, OffsetOfBaseline, RatioOfBaseline

if TYPE_CHECKING:
    from geno_lewm.training._spectral import CollapseSpectrum

__all__ = [
    "CALIBRATED_CRITERIA",
    "CALIBRATED_GAUGES",
    "COLLAPSE_CALIBRATED",
    "HISTORY_CHECKS",
    "PEAKED",
    "RANK_FLOOR",
    "CalibratedBounds",
    "CalibratedThresholds",
    "History",
    "calibrated_bounds",
    "calibrated_values",
]

SIDES = ("pred", "target")

HISTORY_CHECKS = 10_000
"""The longest run, in checks, whose spread peak the noise floor of the spread criterion
allows for: the peak is the largest of that many values, so the F quantile is taken at
the criterion's share of the false-alarm rate divided by this (a union bound)."""

RANK_FLOOR = 0.9
"""The Gaussian floor of ``<side>_rank_to_gaussian``: over ``N`` from 16 to 4096 and ``D``
from 4 to 1024 the ratio of an isotropic Gaussian batch has a mean within 1% of 1 and a
relative standard deviation of at most 2.6% (RFC-0013 §3), so 0.9 lies about four of them
below it; a rank criterion needs the ratio below this *and* below its history bound."""


@dataclass(frozen=True, slots=True)
class CalibratedThresholds:
    """The calibrated criteria's settings; each must be a finite number > 0.

    Attributes
    ----------
    false_alarm_rate:
        The chance, per check, that an isotropic Gaussian batch trips any criterion: shared
        equally by the four criteria, it bounds the noise floors (default 1e-3).
    spread_ratio:
        Complete collapse: the targets' total variance below this fraction of its largest
        value since the reference (default 0.1, a tenfold fall).
    direction_ratio:
        Complete collapse: the targets' direction spread below this fraction of its largest
        value (default 0.3; the spread is a standard deviation, so about a tenfold fall of
        the directions' variance).
    rank_ratio:
        Dimensional collapse: the targets' Gaussian-normalised effective rank below this
        fraction of its largest value since the reference (default 0.7).
    kl_rise:
        ``kl_reg``: a rise of the per-dimension excess over the Gaussian expectation by this
        many nats above its lowest value (default 1.0).
    kl_weight:
        The weight ``gamma`` in ``kl_reg = gamma * KL`` (RFC-0005 §3.2: 0.5).
    kl_eps:
        The ridge of the KL's log-determinant (that of :func:`~geno_lewm.training.spectrum.gaussian_kl`).
    agreement_ratio:
        Diagnosis: predictions agree with collapsing targets *trivially* when their error
        ``1 - pred_cos_mean`` is below this fraction of its lowest value on healthy checks.
    """

    false_alarm_rate: float = 1e-3
    spread_ratio: float = 0.1
    direction_ratio: float = 0.3
    rank_ratio: float = 0.7
    kl_rise: float = 1.0
    kl_weight: float = 0.5
    kl_eps: float = 1e-6
    agreement_ratio: float = 0.25

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, check_positive_finite(f.name, getattr(self, f.name)))
        for name in ("false_alarm_rate", "spread_ratio", "direction_ratio", "rank_ratio", "agreement_ratio"):
            if getattr(self, name) >= 1.0:
                raise fail(name, "< 1", getattr(self, name))


@dataclass(frozen=True, slots=True)
class CalibratedBounds:
    """The thresholds in force at one check, for the criteria table: the settings, and the
    noise floors of the check's ``N`` and ``D``.
    """

    spread_ratio: float
    direction_ratio: float
    rank_ratio: float
    rank_floor: float
    kl_rise: float
    kl_floor: float


# ------------------------------------------------------------------ the table
CALIBRATED_GAUGES: tuple[str, ...] = (
    "pred_total_variance",
    "target_total_variance",
    "pred_direction_spread",
    "target_direction_spread",
    "pred_rank_to_gaussian",
    "target_rank_to_gaussian",
    "kl_excess_per_dim",
)
"""The gauges a calibrated check adds to the RFC metrics and the spectra."""

PEAKED: tuple[str, ...] = CALIBRATED_GAUGES[:6]
"""The gauges whose largest value since the reference the history keeps."""

CALIBRATED_CRITERIA: tuple[Criterion, ...] = (
    Criterion(
        "target_total_variance",
        "target_total_variance",
        "below",
        RatioOfBaseline("spread_ratio", "target_total_variance"),
        summary="complete collapse: the targets' spread fell far below its largest value",
    ),
    Criterion(
        "target_direction_spread",
        "target_direction_spread",
        "below",
        RatioOfBaseline("direction_ratio", "target_direction_spread"),
        summary="complete collapse: the targets point ever more the same way",
    ),
    Criterion(
        "target_rank_to_gaussian",
        "target_rank_to_gaussian",
        "below",
        Lowest((RatioOfBaseline("rank_ratio", "target_rank_to_gaussian"), Fixed("rank_floor"))),
        summary="dimensional collapse: the targets' variance folds into fewer directions than it did",
    ),
    Criterion(
        "kl_excess_per_dim",
        "kl_excess_per_dim",
        "above",
        Highest((Fixed("kl_floor"), OffsetOfBaseline("kl_rise", "kl_excess_per_dim"))),
        summary="the encoder's distribution moved away from N(0, I) since its closest approach",
    ),
)
"""The calibrated criteria, in the order they are evaluated."""

COLLAPSE_CALIBRATED = replace(COLLAPSE, criteria=CALIBRATED_CRITERIA)
"""The collapse family with its calibrated criteria."""


# ------------------------------------------------------------------ statistics
def calibrated_values(
    metrics: CollapseMetrics, spectrum: CollapseSpectrum, thresholds: CalibratedThresholds
) -> dict[str, float]:
    """The calibrated statistics of one check (``kl_excess_per_dim`` only with ``kl_reg``)."""
    n, d = spectrum.prediction.batch_size, spectrum.prediction.dim
    expected_rank = gaussian_effective_rank(n, d) if n >= 2 else 0.0
    parts = (spectrum.prediction, spectrum.target)
    values: dict[str, float] = {}
    for side, part in zip(SIDES, parts):
        values[f"{side}_total_variance"] = part.total_variance
    for side, part in zip(SIDES, parts):
        values[f"{side}_direction_spread"] = part.normalized_std * math.sqrt(d)
    for side, part in zip(SIDES, parts):
        values[f"{side}_rank_to_gaussian"] = part.effective_rank / expected_rank if expected_rank > 0.0 else 0.0
    if metrics.kl_reg is not None and n >= 2:
        reference = gaussian_kl_reference(n, d, thresholds.kl_eps)
        values["kl_excess_per_dim"] = (metrics.kl_reg / thresholds.kl_weight - reference.mean) / d
    return values


def calibrated_bounds(thresholds: CalibratedThresholds, n: int, d: int) -> CalibratedBounds:
    """The bounds in force for a check of ``n`` rows of ``d`` dimensions.

    Each of the four criteria may trip a stationary isotropic Gaussian run with at most
    ``false_alarm_rate / 4`` per check. The spread ratio is lowered to the quantile of the
    ratio of two such batches' total variances (F with ``d (n - 1)`` degrees of freedom
    each) at that level divided by :data:`HISTORY_CHECKS`, when noise alone could reach it
    (only with very few rows or dimensions), and the direction ratio to its square root
    (the direction spread is a standard deviation of unit rows); the rank criterion needs
    the ratio below :data:`RANK_FLOOR`; the KL floor is that many standard deviations (an
    upper bound of them) above the Gaussian expectation.
    """
    alpha = thresholds.false_alarm_rate / len(CALIBRATED_CRITERIA)
    spread, direction = thresholds.spread_ratio, thresholds.direction_ratio
    freedom = float(d * (n - 1))
    if freedom > 0.0:
        noise = f_quantile(alpha / HISTORY_CHECKS, freedom, freedom)
        spread, direction = min(spread, noise), min(direction, math.sqrt(noise))
    z = NormalDist().inv_cdf(1.0 - alpha)
    kl_floor = z * gaussian_kl_reference(n, d, thresholds.kl_eps).std_bound / d if n >= 2 else math.inf
    return CalibratedBounds(spread, direction, thresholds.rank_ratio, RANK_FLOOR, thresholds.kl_rise, kl_floor)


# ------------------------------------------------------------------ history
@dataclass(slots=True)
class History:
    """What the calibrated criteria remember of a run: the reference check's step, the
    largest spreads and Gaussian-normalised ranks, the lowest KL excess, and the lowest
    prediction error of healthy checks.
    """

    reference_step: int | None = None
    reference: dict[str, float] | None = None
    peaks: dict[str, float] | None = None
    lowest_kl: float | None = None
    lowest_error: float | None = None

    def learn(self, step: int, values: dict[str, float], rows: int) -> None:
        """Fold one check's statistics in (before its criteria are evaluated)."""
        if rows < 2:
            return
        peaks = {} if self.peaks is None else self.peaks
        if self.reference_step is None:
            self.reference_step = step
            self.reference = {name: values[name] for name in PEAKED}
        for name in PEAKED:
            value = values[name]
            if math.isfinite(value) and value > peaks.get(name, -math.inf):
                peaks[name] = value
        self.peaks = peaks
        kl = values.get("kl_excess_per_dim")
        if kl is not None and math.isfinite(kl) and (self.lowest_kl is None or kl < self.lowest_kl):
            self.lowest_kl = kl

    def learn_agreement(self, error: float) -> None:
        """Fold in the prediction error ``1 - pred_cos_mean`` of a check without alerts."""
        if math.isfinite(error) and (self.lowest_error is None or error < self.lowest_error):
            self.lowest_error = error

    def baselines(self) -> dict[str, float | None]:
        """The baselines the calibrated criteria read."""
        peaks = self.peaks or {}
        found: dict[str, float | None] = {name: peaks.get(name) for name in PEAKED}
        found["kl_excess_per_dim"] = self.lowest_kl
        return found

    def state_dict(self) -> dict[str, Any]:
        """The history as JSON-ready data."""
        return {
            "reference_step": self.reference_step,
            "reference": None if self.reference is None else dict(self.reference),
            "peaks": None if self.peaks is None else dict(self.peaks),
            "lowest_kl": self.lowest_kl,
            "lowest_error": self.lowest_error,
        }

    @classmethod
    def from_state(cls, state: object) -> History:
        """Rebuild a history from :meth:`state_dict` output; :class:`InputError` naming the
        field for anything malformed.
        """
        if state is None:
            return cls()
        if not isinstance(state, dict):
            raise fail("state.history", "a mapping written by CollapseMonitor.state_dict", state)

        def number(name: str) -> float | None:
            value = state.get(name)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise fail(f"state.history.{name}", "a finite number or None", value)
            return float(value)

        def table(name: str) -> dict[str, float] | None:
            raw = state.get(name)
            if raw is None:
                return None
            if not isinstance(raw, dict) or not set(raw) <= set(PEAKED):
                raise InputError(f"'state.history.{name}' is malformed", details={"field": f"state.history.{name}"})
            found = {}
            for key, value in raw.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise fail(f"state.history.{name}.{key}", "a finite number", value)
                found[key] = float(value)
            return found

        step = state.get("reference_step")
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
            raise fail("state.history.reference_step", "a non-negative integer or None", step)
        return cls(step, table("reference"), table("peaks"), number("lowest_kl"), number("lowest_error"))
