"""The collapse family's definitions: its metrics table, its criteria table, and the
computations and checks of one batch (RFC-0005 §3.6, and the spectral criteria of
RFC-0008).

Everything :mod:`geno_lewm.training.collapse` (the public module and the monitor) and
:mod:`geno_lewm.training.spectrum` publish about the collapse family is defined here once:
the seven RFC metrics and six spectral gauges with their units and conventions
(:data:`COLLAPSE_METRICS`), the five criteria (:data:`COLLAPSE_CRITERIA`), and the
functions that compute and check a batch. Standard library only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from geno_lewm._protocols import MetricLogger
from geno_lewm._validation import as_finite_real, check_instance, check_positive_finite, fail
from geno_lewm.backends import Backend, PreparedPair, check_backend_name, get_backend
from geno_lewm.errors import CollapseDetectedError
from geno_lewm.training._criteria import (
    Alert,
    Criterion,
    Direction,
    Fixed,
    RatioOfBaseline,
    RatioOfMetric,
    bounds_by_metric,
    evaluate,
)
from geno_lewm.training._family import Family, MetricRow, MetricTable
from geno_lewm.training._recording import BatchInfo

if TYPE_CHECKING:  # the spectral modules are imported only when spectra are requested
    from geno_lewm.training._spectral import CollapseSpectrum

__all__ = [
    "COLLAPSE",
    "COLLAPSE_CRITERIA",
    "COLLAPSE_METRICS",
    "DIAGNOSES",
    "METRIC_NAMES",
    "SPECTRAL_CRITERIA",
    "SPECTRAL_GAUGES",
    "BatchInfo",
    "CollapseAlert",
    "CollapseCheck",
    "CollapseLogger",
    "CollapseMetrics",
    "CollapseThresholds",
    "Diagnosis",
    "NonFinite",
    "baselines_of",
    "check_initial",
    "check_kl_reg",
    "check_values",
    "compute_collapse_metrics",
    "detect_collapse",
    "detect_rank_collapse",
    "measure",
    "metric_name",
    "rank_bounds",
    "spectral_baselines",
    "spectral_gauge_values",
    "spectral_variants",
]


# ------------------------------------------------------------------ results
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
        The Gaussian regulariser of RFC-0005 §3.2, as supplied by the caller; ``None`` when
        the loss has no Gaussian term (the metric is then absent and its criterion is not
        evaluated).
    """

    pred_cos_mean: float
    pred_l2_mean: float
    target_var_per_dim: float
    pred_var_per_dim: float
    pred_target_corr: float
    pairwise_pred_dist_mean: float
    kl_reg: float | None

    def as_dict(self) -> dict[str, float]:
        """Field name -> value, in declaration order; ``kl_reg`` is left out when it is ``None``."""
        values = {name: getattr(self, name) for name in METRIC_NAMES}
        if self.kl_reg is None:
            del values["kl_reg"]
        return values


METRIC_NAMES: tuple[str, ...] = tuple(f.name for f in fields(CollapseMetrics))
"""The field names of :class:`CollapseMetrics`, in order."""


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


class CollapseAlert(Alert):
    """An :class:`~geno_lewm.training._criteria.Alert` of the collapse family:
    ``CollapseAlert(criterion, value, threshold)``, its direction read from the criteria
    table (``kl_reg`` trips above its bound, the others below).

    Example
    -------
    >>> CollapseAlert("kl_reg", 12.0, 10.0).direction
    'above'
    """

    __slots__ = ()

    def __init__(
        self, criterion: str, value: float, threshold: float, direction: Direction | None = None, metric: str = ""
    ) -> None:
        if direction is None:
            row = COLLAPSE.criterion(criterion) if isinstance(criterion, str) else None
            if row is None:
                known = ", ".join(row.name for row in COLLAPSE_CRITERIA)
                raise fail("criterion", f"a collapse criterion ({known}) when no direction is given", criterion)
            direction = row.direction
        Alert.__init__(self, criterion, value, threshold, direction, metric)


DIAGNOSES: tuple[str, ...] = (
    "trivial_agreement",
    "complete_collapse",
    "dimensional_collapse",
    "scale_drift",
    "unclassified",
)
"""The kinds a :class:`Diagnosis` can have, in the order they are tested."""


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """What a tripped check most likely is, and what to look at.

    Attributes
    ----------
    kind:
        One of :data:`DIAGNOSES`.
    subject:
        ``"prediction"``, ``"target"`` or ``"both"``: where the failure shows.
    summary:
        One or two sentences for a human: the evidence and where to look.
    """

    kind: str
    subject: str
    summary: str


@dataclass(frozen=True, slots=True)
class NonFinite:
    """Where a diverged check's non-finite values are.

    Attributes
    ----------
    prediction, target:
        How many entries of each ``[N, D]`` batch are NaN or infinite.
    kl_reg:
        Whether ``kl_reg`` itself is NaN or infinite.
    first:
        The first non-finite value found, e.g. ``"prediction[3, 7] = nan"``.
    rows, dim:
        The batch's ``N`` and ``D``.
    dtype, device:
        The predictions' element type and device (``float64`` and ``cpu`` for lists).
    """

    prediction: int
    target: int
    kl_reg: bool
    first: str
    rows: int
    dim: int
    dtype: str = "float64"
    device: str = "cpu"

    @property
    def count(self) -> int:
        """Non-finite values in all: entries of both batches, and ``kl_reg``."""
        return self.prediction + self.target + int(self.kl_reg)

    def describe(self) -> str:
        """One line for the alert's ``detail``."""
        size = self.rows * self.dim
        parts = [f"prediction {self.prediction} of {size}", f"target {self.target} of {size}"]
        if self.kl_reg:
            parts.append("kl_reg")
        return f"non-finite values: {', '.join(parts)}; first {self.first}"


@dataclass(frozen=True, slots=True)
class CollapseCheck:
    """The outcome of one observed batch: its metrics and the alerts they raised.

    ``spectrum`` (the predictions' and targets' spectral metrics) is set when the monitor
    computes spectra, and ``diagnosis`` (what a tripped check most likely is) when such
    a check trips; both are ``None`` otherwise (see :mod:`geno_lewm.training.spectrum`).
    ``non_finite`` is set on a diverged check (its inputs held NaN or infinite values):
    its metrics are then NaN and its one alert is ``non_finite``.
    """

    metrics: CollapseMetrics
    alerts: tuple[CollapseAlert, ...] = ()
    step: int | None = None
    batch: BatchInfo | None = None
    spectrum: CollapseSpectrum | None = None
    diagnosis: Diagnosis | None = None
    non_finite: NonFinite | None = None

    @property
    def tripped(self) -> bool:
        """Whether any criterion raised an alert."""
        return bool(self.alerts)


CollapseLogger = MetricLogger
"""What :func:`~geno_lewm.training.collapse.record_collapse_metrics` and the monitor accept as a
logger: this package's, a GenoLeWM family logger (``warn``), a structlog logger or a
standard-library ``logging.Logger`` (see :data:`geno_lewm._protocols.MetricLogger`)."""


# ------------------------------------------------------------------ the tables
_SPECTRAL_ROWS = (
    ("effective_rank", "dims", "rankme,centred,singular_values", "Effective rank (RankMe) of the centred {side}."),
    ("top_k_share", "1", "top_k,centred,variance", "Share of the {side} variance in the top-k directions."),
    (
        "normalized_std",
        "1",
        "l2_normalised_rows,population,mean_over_dims",
        "Mean per-dimension std of the L2-normalised {side} rows.",
    ),
)
_SIDES = (("pred", "prediction"), ("target", "target"))

_SHARED = "unitless"  # the GenoLeWM family's unit for the seven RFC-0005 gauges

COLLAPSE_METRICS = MetricTable(
    family="collapse",
    noun="Collapse",
    rows=(
        MetricRow(
            "pred_cos_mean",
            "1",
            "row_mean,zero_norm_is_0",
            "Mean cosine similarity of prediction rows with their target rows.",
            _SHARED,
        ),
        MetricRow(
            "pred_l2_mean",
            "latent",
            "row_mean",
            "Mean Euclidean distance between prediction and target rows.",
            _SHARED,
        ),
        MetricRow(
            "target_var_per_dim",
            "latent^2",
            "population,mean_over_dims",
            "Per-dimension population variance of targets, averaged.",
            _SHARED,
        ),
        MetricRow(
            "pred_var_per_dim",
            "latent^2",
            "population,mean_over_dims",
            "Per-dimension population variance of predictions, averaged.",
            _SHARED,
        ),
        MetricRow(
            "pred_target_corr",
            "1",
            "pearson_flattened,no_variance_is_0",
            "Pearson correlation of flattened predictions and targets.",
            _SHARED,
        ),
        MetricRow(
            "pairwise_pred_dist_mean",
            "latent",
            "unordered_pairs,single_row_is_0",
            "Mean Euclidean distance over unordered pairs of prediction rows.",
            _SHARED,
        ),
        MetricRow(
            "kl_reg",
            "nats",
            "caller_supplied",
            "Gaussian regulariser of the encoder outputs, as supplied by the caller.",
            _SHARED,
        ),
        *(
            MetricRow(f"{prefix}_{name}", unit, convention, summary.format(side=side))
            for prefix, side in _SIDES
            for name, unit, convention, summary in _SPECTRAL_ROWS
        ),
        *(
            MetricRow(
                f"{prefix}_total_variance",
                "latent^2",
                "population,trace",
                f"Total variance (trace of the population covariance) of the {side}s.",
            )
            for prefix, side in _SIDES
        ),
        *(
            MetricRow(
                f"{prefix}_direction_spread",
                "1",
                "normalized_std_times_sqrt_dim",
                f"Spread of the {side}s' directions: the normalised std times sqrt(D); about 1 for isotropic "
                "zero-mean rows, 0 when every row points the same way.",
            )
            for prefix, side in _SIDES
        ),
        *(
            MetricRow(
                f"{prefix}_rank_to_gaussian",
                "1",
                "rankme_over_marchenko_pastur",
                f"Effective rank of the {side}s over that of an isotropic Gaussian batch of the same shape.",
            )
            for prefix, side in _SIDES
        ),
        MetricRow(
            "kl_excess_per_dim",
            "nats",
            "kl_over_weight_minus_gaussian_expectation,per_dim",
            "Gaussian KL above its expectation for an isotropic Gaussian batch of the same shape, per dimension.",
        ),
    ),
)
"""The collapse family's gauges: the seven RFC-0005 metrics, the spectral ones, and those of
the calibrated criteria (RFC-0013)."""

SPECTRAL_GAUGES: tuple[str, ...] = tuple(f"{prefix}_{name}" for prefix, _ in _SIDES for name, _, _, _ in _SPECTRAL_ROWS)
"""The spectral gauges the monitor publishes, as ``geno_lewm.training.collapse.<name>``."""

COLLAPSE_CRITERIA: tuple[Criterion, ...] = (
    Criterion(
        "pred_var_per_dim",
        "pred_var_per_dim",
        "below",
        RatioOfMetric("pred_var_to_target_var", "target_var_per_dim"),
        summary="the predictions lost their spread relative to the targets'",
    ),
    Criterion(
        "pairwise_pred_dist_mean",
        "pairwise_pred_dist_mean",
        "below",
        RatioOfBaseline("pairwise_to_initial", "pairwise_pred_dist_mean"),
        summary="the predictions moved together compared with the start of the run",
    ),
    Criterion(
        "kl_reg",
        "kl_reg",
        "above",
        Fixed("kl_reg_max"),
        summary="the encoder's distribution drifted strongly from N(0, I)",
    ),
    Criterion(
        "pred_effective_rank",
        "pred_effective_rank",
        "below",
        RatioOfBaseline("effective_rank_to_initial", "pred_effective_rank"),
        summary="the predictions fold into fewer directions than at the start of the run",
    ),
    Criterion(
        "target_effective_rank",
        "target_effective_rank",
        "below",
        RatioOfBaseline("effective_rank_to_initial", "target_effective_rank"),
        summary="the targets fold into fewer directions than at the start of the run",
    ),
)
"""The collapse criteria, in the order they are evaluated: RFC-0005's three, then the
opt-in effective-rank criteria of RFC-0008 (off while ``effective_rank_to_initial`` is ``None``)."""

SPECTRAL_CRITERIA: tuple[str, ...] = ("pred_effective_rank", "target_effective_rank")
"""The opt-in alert criteria, in the order they are checked."""

COLLAPSE = Family(
    metrics=COLLAPSE_METRICS,
    criteria=COLLAPSE_CRITERIA,
    alert_event="training.collapse.alert",  # a built-in event of the record format (RFC-0006)
    alert_names_metric=False,
    alert_type=CollapseAlert,
    error_type=CollapseDetectedError,
    headline="collapse detected",
)
"""The collapse family, as the generic monitor runs it."""

COLLAPSE_METRICS.declare()


def metric_name(field_name: str) -> str:
    """Registry and log name of a :class:`CollapseMetrics` field or spectral gauge, e.g.
    ``geno_lewm.training.collapse.kl_reg``.
    """
    return COLLAPSE_METRICS.name(field_name)


# ------------------------------------------------------------------ computing
def check_kl_reg(value: Any) -> float | None:
    """``kl_reg`` as given by a caller: ``None`` (the loss has no Gaussian term) or a finite number."""
    return None if value is None else as_finite_real("kl_reg", value)


def measure(
    prediction: Any, target: Any, kl_reg: float | None, backend: str
) -> tuple[CollapseMetrics, BatchInfo, Backend, PreparedPair]:
    """Validate, compute and time one batch (``kl_reg`` already checked); raises before
    any result exists. Returns the metrics, the batch, and the backend with the pair it
    prepared (so spectra are computed from the same matrices, validated once).
    """
    started = time.perf_counter()
    kernels = get_backend(backend, prediction, target)
    prepared = kernels.prepare_pair(prediction, target)
    values = kernels.collapse_values(prepared.prediction, prepared.target)
    elapsed = time.perf_counter() - started
    shape = prepared.shape
    batch = BatchInfo(shape.rows, shape.dim, shape.dtype, kernels.NAME, shape.device, elapsed)
    return CollapseMetrics(*values, kl_reg), batch, kernels, prepared


def compute_collapse_metrics(prediction: Any, target: Any, *, kl_reg: Any, backend: str = "auto") -> CollapseMetrics:
    """Compute the RFC-0005 §3.6 metrics of one ``[N, D]`` batch.

    Parameters
    ----------
    prediction, target:
        Equal-shaped batches: nested sequences of real numbers, NumPy arrays or tensors.
        They are read, never modified.
    kl_reg:
        The Gaussian regulariser (a finite real number or 0-d tensor), passed through;
        ``None`` when the loss has no Gaussian term.
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
    check_backend_name(backend)
    return measure(prediction, target, check_kl_reg(kl_reg), backend)[0]


# ------------------------------------------------------------------ criteria
def check_initial(value: Any, name: str = "initial_pairwise_pred_dist_mean") -> float | None:
    """A baseline as given by a caller: ``None``, or a finite number >= 0."""
    if value is None:
        return None
    result = as_finite_real(name, value)
    if result < 0.0:
        raise fail(name, ">= 0", value)
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
    check_instance("metrics", metrics, CollapseMetrics)
    chosen = (
        CollapseThresholds() if thresholds is None else check_instance("thresholds", thresholds, CollapseThresholds)
    )
    baselines = {"pairwise_pred_dist_mean": check_initial(initial_pairwise_pred_dist_mean)}
    readings = evaluate(
        COLLAPSE_CRITERIA, metrics.as_dict(), thresholds=chosen, baselines=baselines, rows=0, alert_type=CollapseAlert
    )
    return tuple(reading for reading in readings if reading.tripped)


def spectral_gauge_values(spectrum: CollapseSpectrum) -> dict[str, float]:
    """The spectral gauges of a check, by name, in :data:`SPECTRAL_GAUGES` order."""
    values: dict[str, float] = {}
    for prefix, side in (("pred", spectrum.prediction), ("target", spectrum.target)):
        for name, _, _, _ in _SPECTRAL_ROWS:
            values[f"{prefix}_{name}"] = float(getattr(side, name))
    return values


def spectral_variants(spectrum: CollapseSpectrum) -> dict[str, str]:
    """The conventions of the spectral gauges known only at a check: the k of the top-k share."""
    return {
        f"{prefix}_top_k_share": f"top_{side.top_k},centred,variance"
        for prefix, side in (("pred", spectrum.prediction), ("target", spectrum.target))
    }


def spectral_baselines(initial: CollapseSpectrum | None) -> dict[str, float | None]:
    """The effective-rank baselines of :data:`COLLAPSE_CRITERIA` from a first spectrum."""
    if initial is None:
        return dict.fromkeys(SPECTRAL_CRITERIA)
    return {
        "pred_effective_rank": initial.prediction.effective_rank,
        "target_effective_rank": initial.target.effective_rank,
    }


def rank_bounds(ratio: float | None, initial: CollapseSpectrum | None) -> dict[str, float | None]:
    """The bound each effective rank is compared with (``None`` where no criterion applies)."""
    bounds: dict[str, float | None] = dict.fromkeys(SPECTRAL_CRITERIA)
    if ratio is None or initial is None:
        return bounds
    found = bounds_by_metric(
        COLLAPSE_CRITERIA,
        {},
        thresholds=CollapseThresholds(effective_rank_to_initial=ratio),
        baselines=spectral_baselines(initial),
    )
    return {name: found[name] for name in bounds}


def _check_spectrum(name: str, value: object) -> CollapseSpectrum:
    from geno_lewm.training._spectral import CollapseSpectrum

    return check_instance(name, value, CollapseSpectrum)


def detect_rank_collapse(
    spectrum: CollapseSpectrum, *, ratio: float, initial: CollapseSpectrum | None
) -> tuple[CollapseAlert, ...]:
    """The opt-in effective-rank criteria: an alert when a rank falls below ``ratio`` times
    its first observed value (``initial``; no alert while it is unknown).

    Criteria, checked in this order: ``pred_effective_rank`` and ``target_effective_rank``,
    each a strict ``<``. Each alert's ``threshold`` is ``ratio * initial``.

    Example
    -------
    >>> from geno_lewm.training.spectrum import CollapseSpectrum, SpectralMetrics
    >>> one = SpectralMetrics(100.0, 0.1, 0.03, 200, 256.0, 1.0, 10, 256, 256)
    >>> low = SpectralMetrics(30.0, 0.6, 0.03, 200, 256.0, 1.0, 10, 256, 256)
    >>> [a.criterion for a in detect_rank_collapse(CollapseSpectrum(low, one), ratio=0.5,
    ...                                            initial=CollapseSpectrum(one, one))]
    ['pred_effective_rank']
    """
    _check_spectrum("spectrum", spectrum)
    bound_ratio = check_positive_finite("ratio", ratio)
    if initial is not None:
        _check_spectrum("initial", initial)
    readings = evaluate(
        COLLAPSE_CRITERIA,
        spectral_gauge_values(spectrum),
        thresholds=CollapseThresholds(effective_rank_to_initial=bound_ratio),
        baselines=spectral_baselines(initial),
        rows=0,
        alert_type=CollapseAlert,
    )
    return tuple(reading for reading in readings if reading.tripped)


def check_values(metrics: CollapseMetrics, spectrum: CollapseSpectrum | None) -> dict[str, float]:
    """Every gauge of a check by name, in :data:`COLLAPSE_METRICS` order."""
    values = metrics.as_dict()
    if spectrum is not None:
        values.update(spectral_gauge_values(spectrum))
    return values


def baselines_of(
    initial_pairwise: float | None, initial_spectrum: CollapseSpectrum | None
) -> Mapping[str, float | None]:
    """The baselines the collapse criteria compare with."""
    return {"pairwise_pred_dist_mean": initial_pairwise, **spectral_baselines(initial_spectrum)}
