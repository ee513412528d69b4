"""The calibrated collapse criteria (``CollapseMonitor(criteria="calibrated")``, RFC-0013):
no alerts on Gaussian batches over a grid of shapes, detection and diagnosis of planted
complete and dimensional collapses, the history's checkpoint, and the configuration.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from geno_lewm.config import load_config
from geno_lewm.errors import InputError
from geno_lewm.training._calibration import f_cdf, gaussian_effective_rank
from geno_lewm.training._collapse_calibrated import (
    CALIBRATED_CRITERIA,
    HISTORY_CHECKS,
    calibrated_bounds,
)
from geno_lewm.training.collapse import CalibratedThresholds, CollapseCheck, CollapseMonitor
from geno_lewm.training.spectrum import gaussian_kl, spectral_metrics

torch = pytest.importorskip("torch")

Batch = Callable[[int], tuple[Any, Any]]


def _monitor(**options: Any) -> CollapseMonitor:
    return CollapseMonitor(log_every_steps=1, criteria="calibrated", **options)


def _run(monitor: CollapseMonitor, batches: Iterator[tuple[Any, Any, float | None]]) -> list[CollapseCheck]:
    """Feed batches as steps 0, 1, ... (step 0 forced, as documented)."""
    checks = []
    for step, (prediction, target, kl) in enumerate(batches):
        check = monitor.observe(prediction, target, kl_reg=kl, step=step, force=step == 0)
        assert check is not None
        checks.append(check)
    return checks


def _gaussian_run(
    n: int, d: int, checks: int, *, seed: int, offset: float = 0.0, anisotropy: float = 0.0
) -> Iterator[tuple[Any, Any, float]]:
    """A stationary run: targets from one fixed Gaussian (mean ``offset`` times a random
    direction, per-dimension scales spread by ``anisotropy`` decades), predictions the
    targets plus noise, and the KL of the targets as ``kl_reg``.
    """
    generator = torch.Generator().manual_seed(seed)
    mean = offset * torch.randn(d, generator=generator, dtype=torch.float64)
    scales = torch.logspace(0.0, -anisotropy, d, dtype=torch.float64)
    for _ in range(checks):
        target = torch.randn(n, d, generator=generator, dtype=torch.float64) * scales + mean
        prediction = target + 0.5 * torch.randn(n, d, generator=generator, dtype=torch.float64)
        yield prediction, target, 0.5 * float(gaussian_kl(target, backend="torch"))


GRID = [(n, d) for n in (16, 64, 256, 1024, 4096) for d in (4, 16, 64, 256, 1024)]


@pytest.mark.parametrize(("n", "d"), GRID, ids=[f"{n}x{d}" for n, d in GRID])
def test_gaussian_runs_never_alert_over_the_grid(n: int, d: int) -> None:
    """Stationary Gaussian runs (isotropic, offset, anisotropic) trip no criterion at any N
    from 16 to 4096 and D from 4 to 1024, the small-N bias of the effective rank included.
    """
    checks = 3 if n * d >= 1 << 20 else 12
    for seed, (offset, anisotropy) in enumerate([(0.0, 0.0), (3.0, 0.0), (0.0, 1.0)]):
        tripped = [
            c.step
            for c in _run(_monitor(), _gaussian_run(n, d, checks, seed=seed, offset=offset, anisotropy=anisotropy))
            if c.alerts
        ]
        assert tripped == [], f"{n}x{d} offset {offset} anisotropy {anisotropy}: alerts at {tripped}"


@pytest.mark.parametrize(("n", "d"), [(16, 4), (16, 64), (64, 16)])
def test_false_alarm_rate_on_long_small_runs_is_below_the_stated_rate(n: int, d: int) -> None:
    """Over 2,000 checks of a stationary Gaussian run at the noisiest shapes, the alerted
    checks stay below what the stated rate (1e-3 per check) allows: at most 6 (the 99.5%
    point of a binomial with mean 2).
    """
    checks = _run(_monitor(), _gaussian_run(n, d, 2000, seed=n + d, offset=1.0))
    assert sum(bool(c.alerts) for c in checks) <= 6


@pytest.mark.parametrize(("n", "d"), [(16, 4), (16, 64), (64, 4), (4096, 4)])
def test_direction_and_rank_statistics_stay_far_from_their_bounds_on_gaussian_batches(n: int, d: int) -> None:
    """Over 1,000 Gaussian batches, the smallest direction spread is above half the largest
    (the criterion needs 0.3) and the smallest Gaussian-normalised rank is above the 0.9
    floor: the two criteria without a closed-form tail have room to spare.
    """
    generator = torch.Generator().manual_seed(n * 31 + d)
    offset = torch.randn(d, generator=generator, dtype=torch.float64)
    directions, ranks = [], []
    for _ in range(1000):
        target = torch.randn(n, d, generator=generator, dtype=torch.float64) + offset
        metrics = spectral_metrics(target, backend="torch")
        directions.append(metrics.normalized_std)
        ranks.append(metrics.effective_rank / gaussian_effective_rank(n, d))
    assert min(directions) > 0.5 * max(directions)
    assert min(ranks) > 0.9


def test_spread_floor_is_the_exact_f_tail_when_noise_could_reach_the_ratio() -> None:
    """Where two Gaussian batches' total variances could differ tenfold by chance (few rows
    and dimensions), the spread bound drops to the F quantile at the criterion's share of
    the rate over HISTORY_CHECKS; elsewhere it is the configured ratio.
    """
    thresholds = CalibratedThresholds()
    share = thresholds.false_alarm_rate / len(CALIBRATED_CRITERIA) / HISTORY_CHECKS
    for n, d in [(2, 1), (3, 2), (16, 4), (256, 64)]:
        bound = calibrated_bounds(thresholds, n, d).spread_ratio
        freedom = d * (n - 1)
        assert f_cdf(bound, freedom, freedom) <= share * (1.0 + 1e-6)
        if bound < thresholds.spread_ratio:
            assert f_cdf(bound, freedom, freedom) == pytest.approx(share, rel=1e-6)
    assert calibrated_bounds(thresholds, 256, 64).spread_ratio == thresholds.spread_ratio
    assert calibrated_bounds(thresholds, 2, 1).spread_ratio < 1e-6


def test_batch_size_changes_do_not_look_like_dimensional_collapse() -> None:
    """A reference at N = 1024 then checks at N = 32 of the same D = 64 Gaussian trip nothing,
    though the raw effective rank falls by half: the rank is judged against a Gaussian batch
    of the same shape.
    """
    generator = torch.Generator().manual_seed(3)
    monitor = _monitor()
    raw = []
    for step, n in enumerate([1024, 32, 32, 32]):
        target = torch.randn(n, 64, generator=generator, dtype=torch.float64)
        check = monitor.observe(target, target, kl_reg=None, step=step, force=step == 0)
        assert check is not None and check.alerts == ()
        raw.append(spectral_metrics(target, backend="torch").effective_rank)
    assert raw[1] < 0.6 * raw[0]


# ------------------------------------------------------------------ planted collapses
def _planted(
    kind: str, *, checks: int = 14, onset: int = 5, n: int = 256, d: int = 64
) -> Iterator[tuple[Any, Any, None]]:
    """A healthy stationary run that, from check ``onset``, collapses: ``small_point`` shrinks
    threefold per check towards a point near the origin, ``far_point`` gathers around a point
    far from it (spread kept, mean growing), ``dimensional`` folds into two directions with
    the total variance kept, ``growing`` is healthy and grows tenfold in scale.
    """
    generator = torch.Generator().manual_seed(7)
    mixing, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    centre = torch.randn(d, generator=generator, dtype=torch.float64)
    for index in range(checks):
        past = max(0, index - onset + 1)
        scales = torch.ones(d, dtype=torch.float64)
        mean = 0.1 * centre
        if kind == "small_point":
            scales *= 3.0**-past
        elif kind == "far_point":
            mean = centre * (1.0 + 4.0 * past)
        elif kind == "dimensional":
            scales[2:] = 3.0**-past
            scales[:2] = math.sqrt((d - (d - 2) * 9.0**-past) / 2.0)
        elif kind == "growing":
            scales *= math.sqrt(10.0) ** (index / (checks - 1))
        target = (torch.randn(n, d, generator=generator, dtype=torch.float64) * scales) @ mixing + mean
        prediction = target + 0.3 * target.std() * torch.randn(n, d, generator=generator, dtype=torch.float64)
        yield prediction, target, None


@pytest.mark.parametrize(
    ("kind", "diagnosis", "within"),
    [
        ("small_point", "complete_collapse", 2),
        ("far_point", "complete_collapse", 2),
        ("dimensional", "dimensional_collapse", 3),
    ],
)
def test_planted_collapses_are_flagged_in_time_with_the_right_diagnosis(kind: str, diagnosis: str, within: int) -> None:
    """A complete collapse (onto a small point or a far one) alerts within 2 checks of its
    onset, a dimensional one within 3; nothing alerts before; every alert names the kind.
    """
    checks = _run(_monitor(), _planted(kind))
    alerted = [i for i, c in enumerate(checks) if c.alerts]
    assert alerted and 5 <= alerted[0] <= 5 + within
    assert alerted == list(range(alerted[0], len(checks)))
    assert {c.diagnosis.kind for c in checks if c.diagnosis is not None} == {diagnosis}


def test_a_healthy_run_that_grows_tenfold_never_alerts() -> None:
    """Scale growth is not collapse: the spread's history is its peak, which only rises."""
    assert all(c.alerts == () for c in _run(_monitor(), _planted("growing")))


def test_the_rfc_criteria_miss_the_planted_dimensional_collapse() -> None:
    """The blind spot the calibrated criteria close: per-dimension variance is kept, so the
    RFC criteria never trip on the planted dimensional collapse.
    """
    monitor = CollapseMonitor(log_every_steps=1)
    assert all(c.alerts == () for c in _run(monitor, _planted("dimensional")))


def test_kl_excess_rise_alerts_and_is_diagnosed_from_the_evidence() -> None:
    """Targets whose scale drifts fourfold keep their shape; the KL excess rises past its
    bound, and the diagnosis is scale drift, not collapse.
    """

    def drifting() -> Iterator[tuple[Any, Any, float]]:
        generator = torch.Generator().manual_seed(11)
        for index in range(8):
            target = torch.randn(256, 16, generator=generator, dtype=torch.float64) * (1.0 + 1.0 * max(0, index - 3))
            prediction = target + 0.3 * torch.randn(256, 16, generator=generator, dtype=torch.float64)
            yield prediction, target, 0.5 * float(gaussian_kl(target, backend="torch"))

    checks = _run(_monitor(), drifting())
    alerted = [c for c in checks if c.alerts]
    assert alerted and all({a.criterion for a in c.alerts} == {"kl_excess_per_dim"} for c in alerted)
    assert {c.diagnosis.kind for c in alerted if c.diagnosis is not None} == {"scale_drift"}
    assert checks[0].alerts == ()


def test_a_collapse_met_by_agreement_says_so_in_its_reason() -> None:
    """When predictions match collapsing targets far better than on any healthy check, the
    diagnosis stays the kind of collapse and its reason points at the stop-gradient.
    """
    generator = torch.Generator().manual_seed(5)

    def batches() -> Iterator[tuple[Any, Any, None]]:
        for index in range(8):
            target = torch.randn(128, 32, generator=generator, dtype=torch.float64) * (1.0 if index < 4 else 0.01)
            noise = 0.5 if index < 4 else 1e-4
            yield (
                target + noise * target.std() * torch.randn(128, 32, generator=generator, dtype=torch.float64),
                target,
                None,
            )

    checks = _run(_monitor(), batches())
    diagnosis = checks[4].diagnosis
    assert diagnosis is not None and diagnosis.kind == "complete_collapse"
    assert "stop-gradient" in diagnosis.summary
    healthy = checks[3].diagnosis
    assert healthy is None


# ------------------------------------------------------------------ state and configuration
def test_state_dict_round_trip_continues_the_run_identically() -> None:
    """A monitor restored from a checkpoint in the middle of a run says, check for check,
    what the original says: the reference, peaks and lowest values come back.
    """
    batches = list(_planted("dimensional", checks=10))
    original = _monitor()
    _run(original, iter(batches[:5]))
    restored = _monitor()
    restored.load_state_dict(original.state_dict())
    assert restored.reference_step == original.reference_step == 0
    for step, (prediction, target, kl) in enumerate(batches[5:], start=5):
        first = original.observe(prediction, target, kl_reg=kl, step=step)
        second = restored.observe(prediction, target, kl_reg=kl, step=step)
        assert first is not None and second is not None
        assert [a.criterion for a in first.alerts] == [a.criterion for a in second.alerts]
        assert [a.threshold for a in first.alerts] == [a.threshold for a in second.alerts]


@pytest.mark.parametrize(
    ("history", "field"),
    [
        ({"reference_step": -1}, "state.history.reference_step"),
        ({"peaks": {"target_total_variance": math.nan}}, "state.history.peaks.target_total_variance"),
        ({"peaks": {"unknown": 1.0}}, "state.history.peaks"),
        ({"lowest_kl": "low"}, "state.history.lowest_kl"),
        ("not a mapping", "state.history"),
    ],
)
def test_a_malformed_history_is_refused_and_changes_nothing(history: Any, field: str) -> None:
    """load_state_dict names the bad field of the history and leaves the monitor as it was."""
    monitor = _monitor()
    _run(monitor, _gaussian_run(64, 8, 2, seed=1))
    before = monitor.state_dict()
    state = dict(before, history=history)
    with pytest.raises(InputError, match=field.replace(".", r"\.")):
        monitor.load_state_dict(state)
    assert monitor.state_dict() == before


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"spread_ratio": 0.0}, "'spread_ratio' must be > 0: got 0.0"),
        ({"direction_ratio": 1.0}, "'direction_ratio' must be < 1: got 1.0"),
        ({"false_alarm_rate": math.inf}, "'false_alarm_rate' must be"),
        ({"kl_rise": -1.0}, "'kl_rise' must be > 0: got -1.0"),
    ],
)
def test_bad_calibrated_thresholds_are_refused_with_one_error_shape(settings: dict[str, float], message: str) -> None:
    """Each setting is checked on construction, with the library's uniform message."""
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        CalibratedThresholds(**settings)


def test_the_monitor_refuses_calibrated_criteria_with_summed_statistics() -> None:
    """Calibrated criteria need spectra, which summed statistics cannot give."""
    with pytest.raises(InputError, match="spectra need the whole batch"):
        CollapseMonitor(criteria="calibrated", distributed="statistics")


def test_configuration_builds_a_calibrated_monitor() -> None:
    """criteria: calibrated with a calibration section builds a monitor with those settings."""
    config = load_config(
        {"log": {"enabled": False}, "collapse": {"criteria": "calibrated", "calibration": {"rank_ratio": 0.6}}}
    )
    built = config.build()
    assert built.collapse is not None and built.collapse.criteria == "calibrated"
    assert built.collapse.thresholds == CalibratedThresholds(rank_ratio=0.6)
    with pytest.raises(ValueError, match="direction_ratio"):
        load_config({"collapse": {"criteria": "calibrated", "calibration": {"direction_ratio": 1.5}}})


def test_configuration_passes_the_reference_check_to_the_lightning_callback() -> None:
    """collapse.reference_check reaches the Lightning callback (null by default: decided by the criteria)."""
    pytest.importorskip("lightning")
    for setting in (None, False, True):
        config = load_config(
            {"log": {"enabled": False}, "collapse": {"criteria": "calibrated", "reference_check": setting}}
        )
        (callback,) = [c for c in config.build(lightning=True).callbacks if hasattr(c, "reference_check")]
        assert callback.reference_check is setting
