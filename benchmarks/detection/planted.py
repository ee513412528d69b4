"""Planted collapses: embeddings drawn from a known distribution whose shape changes at a
known check, so the onset is a fact of the construction, not an estimate.

Every check draws a fresh batch: a latent ``u ~ N(0, I_16)`` mixed into ``D = 128``
dimensions by a fixed matrix (rows of equal norm), plus a full-rank part with a power-law spectrum, plus an
isotropic noise floor; targets are those embeddings, predictions the targets plus noise
(a predictor that explains most, not all, of them). The verification draws 2,048 more
rows of the same distribution and probes them for ``u``. Regimes:

* ``healthy_stationary`` — the distribution never changes;
* ``healthy_growing`` — the whole embedding grows tenfold in scale over the run, and its
  spectrum flattens as it does (a healthy run that learns);
* ``complete`` — from check ``ONSET`` the signal shrinks threefold per check towards a
  point of small norm, leaving the noise floor;
* ``dimensional`` — from check ``ONSET`` all but two of the latent directions and the
  full-rank part shrink threefold per check, while the two grow to keep the total
  variance.
"""

from __future__ import annotations

import math
import time
from functools import partial

import torch

from detection.records import Check, RunRecord, Truth
from detection.verify import probe_score, spectrum_statistics

LATENT, DIM, ROWS, EVALUATION = 16, 128, 256, 2048
CHECKS, ONSET, FALL = 17, 6, 3.0
NOISE_FLOOR, PREDICTION_NOISE = 0.01, 0.3
REGIMES: dict[str, Truth] = {
    "healthy_stationary": "healthy",
    "healthy_growing": "healthy",
    "complete": "complete_collapse",
    "dimensional": "dimensional_collapse",
}


def _scales(regime: str, index: int) -> tuple[torch.Tensor, float, float]:
    """Per-latent scales, the full-rank part's scale, and the overall scale at check ``index``."""
    latent = torch.ones(LATENT)
    rest, overall = 1.0, 1.0
    past = max(0, index - ONSET + 1)
    if regime == "healthy_growing":
        overall = 10.0 ** (index / (CHECKS - 1))
        rest = 0.5 + 0.5 * index / (CHECKS - 1)
    elif regime == "complete" and past:
        overall = FALL**-past
    elif regime == "dimensional" and past:
        shrink = FALL**-past
        latent[2:] = shrink
        rest = shrink
        share = DIM / LATENT  # the variance one latent direction carries at scale 1
        kept = share * LATENT + 0.5 * DIM
        latent[:2] = math.sqrt((kept - share * (LATENT - 2) * shrink**2 - 0.5 * DIM * shrink**2) / (2.0 * share))
    return latent, rest, overall


def _draw(
    regime: str,
    index: int,
    rows: int,
    *,
    mixing: torch.Tensor,
    spectrum: torch.Tensor,
    centre: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` embeddings at check ``index``, and their latents."""
    latent_scale, rest, overall = _scales(regime, index)
    u = torch.randn(rows, LATENT, generator=generator, dtype=torch.float64)
    full = torch.randn(rows, DIM, generator=generator, dtype=torch.float64) * spectrum
    signal = (u * latent_scale.double()) @ mixing + math.sqrt(0.5) * rest * full
    noise = NOISE_FLOOR * torch.randn(rows, DIM, generator=generator, dtype=torch.float64)
    return centre + overall * signal + noise, u


def run(regime: str, seed: int) -> RunRecord:
    """Draw one planted run of ``regime``."""
    generator = torch.Generator().manual_seed(20_000 + seed)
    mixing = torch.randn(LATENT, DIM, generator=generator, dtype=torch.float64)
    mixing *= math.sqrt(DIM / LATENT) / mixing.norm(dim=1, keepdim=True)
    power = torch.arange(1, DIM + 1, dtype=torch.float64) ** -0.5
    spectrum = (power / power.square().mean().sqrt())[torch.randperm(DIM, generator=generator)]
    centre = 0.1 * torch.randn(DIM, generator=generator, dtype=torch.float64)
    record = RunRecord("planted", regime, seed, REGIMES[regime])
    started = time.perf_counter()
    draw = partial(_draw, mixing=mixing, spectrum=spectrum, centre=centre, generator=generator)
    for index in range(CHECKS):
        target, _ = draw(regime, index, ROWS)
        noise = torch.randn(ROWS, DIM, generator=generator, dtype=torch.float64)
        prediction = target + PREDICTION_NOISE * float(target.std()) * noise
        embedded, latents = draw(regime, index, EVALUATION)
        verification = spectrum_statistics(embedded)
        verification["probe"] = probe_score(embedded, latents)
        record.checks.append(Check(25 * index, prediction.float(), target.float(), None, verification))
    record.seconds = time.perf_counter() - started
    return record
