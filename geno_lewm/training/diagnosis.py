"""What a tripped collapse check most likely is, and where to look.

:func:`diagnose_collapse` classifies a tripped check from its RFC metrics and the
spectra of its predictions and targets together, against the spectra of the run's
first check: ``trivial_agreement``, ``complete_collapse``, ``dimensional_collapse``,
``scale_drift`` or ``unclassified`` (:data:`DIAGNOSES`). The collapse monitor attaches
the :class:`Diagnosis` to a tripped check when it computes spectra. Definitions and the
evidence behind each rule: ``rfcs/0008-dimensional-collapse.md``.
"""

from __future__ import annotations

import math

from geno_lewm._validation import check_instance, check_positive_finite
from geno_lewm.training._collapse_metrics import DIAGNOSES, CollapseAlert, CollapseMetrics, Diagnosis
from geno_lewm.training._spectral import CollapseSpectrum, SpectralMetrics

__all__ = ["DIAGNOSES", "Diagnosis", "classify", "classify_calibrated", "diagnose_collapse"]


def _subject(prediction: bool, target: bool) -> str:
    if prediction and target:
        return "both"
    return "prediction" if prediction else "target"


_NAMES = {"prediction": "prediction", "target": "target", "both": "prediction and target"}


def diagnose_collapse(
    metrics: CollapseMetrics,
    spectrum: CollapseSpectrum,
    *,
    initial: CollapseSpectrum | None = None,
    alerts: tuple[CollapseAlert, ...] = (),
    rank_ratio: float = 0.5,
    agreement_cosine: float = 0.95,
    spread_floor: float = 1e-4,
    scale_factor: float = 2.0,
) -> Diagnosis:
    """Classify a tripped check from its predictions and targets together.

    Tested in this order (the first that holds is the diagnosis):

    1. ``trivial_agreement`` — ``pred_cos_mean >= agreement_cosine`` while the *target*
       collapses (its rows alike, or its effective rank below ``rank_ratio`` times its
       initial value): the loss is small because there is nothing left to predict.
    2. ``complete_collapse`` — the prediction or target rows are (nearly) all the same
       vector: ``spread_share < spread_floor``.
    3. ``dimensional_collapse`` — an effective rank fell below ``rank_ratio`` times its
       initial value: the embeddings fold into fewer directions than they used to.
       (Predictions are not compared with targets here: a good predictor outputs the
       predictable part of the target, which has fewer directions and less variance.)
    4. ``scale_drift`` — the shape is kept but the scale is not: the predictions' total
       variance differs from the targets' by more than ``scale_factor`` either way, or a
       total variance moved that much from its initial value.
    5. ``unclassified`` — none of these (e.g. only ``kl_reg`` tripped with shape and
       scale intact).

    Parameters
    ----------
    metrics:
        The check's RFC metrics (for the cosine).
    spectrum:
        The check's spectra.
    initial:
        The spectra of the first check (the monitor's baseline), when known.
    alerts:
        The check's alerts, named in the ``unclassified`` summary.

    Example
    -------
    >>> m = CollapseMetrics(0.2, 1.0, 1.0, 0.1, 0.5, 0.5, 1.0)
    >>> s = SpectralMetrics(50.0, 0.2, 0.03, 60, 64.0, 1.0, 10, 256, 64)
    >>> small = SpectralMetrics(50.0, 0.2, 0.03, 60, 6.4, 1.0, 10, 256, 64)
    >>> diagnose_collapse(m, CollapseSpectrum(small, s)).kind
    'scale_drift'
    """
    check_instance("metrics", metrics, CollapseMetrics)
    check_instance("spectrum", spectrum, CollapseSpectrum)
    if initial is not None:
        check_instance("initial", initial, CollapseSpectrum)
    return classify(
        metrics,
        spectrum,
        initial=initial,
        alerts=alerts,
        rank_ratio=check_positive_finite("rank_ratio", rank_ratio),
        agreement_cosine=check_positive_finite("agreement_cosine", agreement_cosine),
        spread_floor=check_positive_finite("spread_floor", spread_floor),
        scale_factor=check_positive_finite("scale_factor", scale_factor),
    )


def classify(
    metrics: CollapseMetrics,
    spectrum: CollapseSpectrum,
    *,
    initial: CollapseSpectrum | None,
    alerts: tuple[CollapseAlert, ...],
    rank_ratio: float,
    agreement_cosine: float = 0.95,
    spread_floor: float = 1e-4,
    scale_factor: float = 2.0,
) -> Diagnosis:
    """:func:`diagnose_collapse` on arguments the caller has already checked (the monitor's own)."""
    ratio, cosine, floor, factor = rank_ratio, agreement_cosine, spread_floor, scale_factor
    pred, targ = spectrum.prediction, spectrum.target
    pred0 = initial.prediction if initial is not None else None
    targ0 = initial.target if initial is not None else None

    def alike(s: SpectralMetrics) -> bool:
        return s.spread_share < floor

    def fell(s: SpectralMetrics, s0: SpectralMetrics | None) -> bool:
        return s0 is not None and s.effective_rank < ratio * s0.effective_rank

    def was(s0: SpectralMetrics | None) -> str:
        return f", was {s0.effective_rank:.1f}" if s0 is not None else ""

    target_collapsing = alike(targ) or fell(targ, targ0)
    if metrics.pred_cos_mean >= cosine and target_collapsing:
        how = (
            f"its rows are nearly identical (spread share {targ.spread_share:.1e})"
            if alike(targ)
            else f"its effective rank fell to {targ.effective_rank:.1f}{was(targ0)}"
        )
        return Diagnosis(
            "trivial_agreement",
            "target",
            f"predictions agree with their targets (mean cosine {metrics.pred_cos_mean:.3f}) but the target "
            f"itself collapsed: {how}. The loss is small because there is little left to predict; look at the "
            "target encoder (EMA rate, stop-gradient) and the weight of the Gaussian regulariser.",
        )
    if alike(pred) or alike(targ):
        subject = _subject(alike(pred), alike(targ))
        share = min(pred.spread_share, targ.spread_share)
        return Diagnosis(
            "complete_collapse",
            subject,
            f"all {_NAMES[subject]} rows are nearly the same vector (spread is {share:.1e} of the mean squared "
            "norm): the network's output no longer depends on its input. Look at the learning rate, the "
            "regulariser's weight, and whether the loss can be met by a constant.",
        )
    pred_low, targ_low = fell(pred, pred0), fell(targ, targ0)
    if pred_low or targ_low:
        subject = _subject(pred_low, targ_low)
        s, s0 = (pred, pred0) if pred_low else (targ, targ0)
        scale = ""
        if s0 is not None and s0.total_variance > 0.0:
            scale = f"; total variance {s.total_variance / s0.total_variance:.2g}x its initial value"
        return Diagnosis(
            "dimensional_collapse",
            subject,
            f"the {_NAMES[subject]} effective rank fell to {s.effective_rank:.1f}{was(s0)} (top-{s.top_k} "
            f"directions hold {s.top_k_share:.0%} of the variance{scale}): the embeddings fold into a few "
            "directions. Look at the decorrelation or isotropy term (SIGReg, the Gaussian KL, a covariance "
            "penalty), BatchNorm at the encoder's output, and the projector's width.",
        )
    drifts: list[tuple[str, float, str]] = []
    if targ.total_variance > 0.0:
        drifts.append(("prediction", pred.total_variance / targ.total_variance, "of the targets'"))
    for name, s, s0 in (("prediction", pred, pred0), ("target", targ, targ0)):
        if s0 is not None and s0.total_variance > 0.0:
            drifts.append((name, s.total_variance / s0.total_variance, "of its initial value"))
    for name, change, reference in drifts:
        if not 1.0 / factor <= change <= factor:
            return Diagnosis(
                "scale_drift",
                name,
                f"the {name} total variance is {change:.3g}x {reference} while its shape is kept (effective rank "
                f"{(pred if name == 'prediction' else targ).effective_rank:.1f}): a change of scale, not a collapse "
                "of the representation. Look at the predictor's output scale and normalisation layers; the "
                "scale-free criteria (effective rank, cosine) are the ones to trust here.",
            )
    tripped = ", ".join(a.criterion for a in alerts) or "no criterion"
    return Diagnosis(
        "unclassified",
        "both",
        f"the shape and scale of predictions and targets look intact (effective ranks {pred.effective_rank:.1f} "
        f"and {targ.effective_rank:.1f}); the alert came from {tripped}. For kl_reg, look at the encoder's mean "
        "and covariance against N(0, I).",
    )


# ------------------------------------------------------------ calibrated criteria
_SPREADS = (("target_total_variance", "total variance"), ("target_direction_spread", "direction spread"))


def _agreement(error: float, lowest_error: float | None, agreement_ratio: float) -> str:
    """A sentence when the predictions agree with their targets far better than on any
    healthy check of the run, else nothing.
    """
    if lowest_error is None or not error < agreement_ratio * lowest_error:
        return ""
    return (
        f" The predictions agree with their targets better than on any healthy check (1 - cosine {error:.2e}, "
        f"lowest before {lowest_error:.2e}): the loss is being met trivially, so look at the stop-gradient or the "
        "target encoder's EMA rate first."
    )


def classify_calibrated(
    metrics: CollapseMetrics,
    spectrum: CollapseSpectrum,
    alerts: tuple[CollapseAlert, ...],
    values: dict[str, float],
    *,
    peaks: dict[str, float],
    reference: dict[str, float],
    lowest_error: float | None,
    agreement_ratio: float,
) -> Diagnosis:
    """The diagnosis of a check that tripped calibrated criteria (RFC-0013 §6), from the
    same evidence the criteria used; the first rule that holds wins.

    1. ``complete_collapse`` — a spread criterion tripped: the targets' total variance or
       direction spread fell far below its largest value, whatever the shape of what is
       left (small isotropic noise has a high effective rank).
    2. ``dimensional_collapse`` — the targets' rank criterion tripped with the spread kept.
    3. ``scale_drift`` — only the KL tripped and a total variance moved more than twofold
       from the reference check's: the distribution moved by a change of scale.
    4. ``trivial_agreement`` — only the KL tripped and the prediction error
       ``1 - pred_cos_mean`` is below ``agreement_ratio`` times its lowest value on the run's
       healthy checks: the run's own early agreement, not a fixed cosine, is the yardstick.
    5. ``unclassified`` — anything else.

    Agreement that far beyond the run's own is named in the reason of a collapse too: it
    says the loss is being met trivially, which points at the stop-gradient.
    """
    tripped = {alert.criterion for alert in alerts}
    agreement = _agreement(1.0 - metrics.pred_cos_mean, lowest_error, agreement_ratio)
    falls = [
        f"{label} {values[name] / peaks[name]:.2g}x" for name, label in _SPREADS if name in tripped and peaks.get(name)
    ]
    if falls:
        return Diagnosis(
            "complete_collapse",
            "target",
            f"the targets' spread fell far below its largest value in the run ({', '.join(falls)} of it): the "
            "encoder's output barely depends on its input any more. Look at the learning rate, the regulariser's "
            "weight, and whether the loss can be met by a constant." + agreement,
        )
    if "target_rank_to_gaussian" in tripped:
        part = spectrum.target
        return Diagnosis(
            "dimensional_collapse",
            "target",
            f"the target variance folds into fewer directions (effective rank {part.effective_rank:.1f}, "
            f"{values['target_rank_to_gaussian']:.2f} of a Gaussian batch's, best "
            f"{peaks.get('target_rank_to_gaussian', math.nan):.2f}) while its spread is kept. Look at the "
            "decorrelation or isotropy term (SIGReg, the Gaussian KL, a covariance penalty), BatchNorm at the "
            "encoder's output, and the projector's width." + agreement,
        )
    moved = [
        (side, values[f"{side}_total_variance"] / reference[f"{side}_total_variance"])
        for side in ("pred", "target")
        if reference.get(f"{side}_total_variance")
    ]
    drifted = [(side, change) for side, change in moved if not 0.5 <= change <= 2.0]
    if "kl_excess_per_dim" in tripped and drifted:
        side, change = drifted[0]
        name = "prediction" if side == "pred" else "target"
        return Diagnosis(
            "scale_drift",
            name,
            f"the Gaussian KL rose while the {name} total variance is {change:.3g}x the reference check's and its "
            "shape is kept: a change of scale, not a collapse. Look at normalisation layers and the output scale.",
        )
    if "kl_excess_per_dim" in tripped and agreement:
        return Diagnosis(
            "trivial_agreement",
            "both",
            "the Gaussian KL rose with spread and shape intact." + agreement,
        )
    return Diagnosis(
        "unclassified",
        "both",
        f"the alert came from {', '.join(sorted(tripped)) or 'no criterion'} with spread and shape intact. For the "
        "KL, look at the encoder's mean and covariance against N(0, I).",
    )
