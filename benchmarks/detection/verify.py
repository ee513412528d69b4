"""Independent verification of a run's regime: the singular values of the embeddings of a
large evaluation set (not the monitor's validation batch), and a linear probe of what the
embeddings should carry (the world's latent state, or the digit's class).

A collapse's onset is the first check where the verification sees it:

* complete collapse — the evaluation embeddings' total variance, or that of their
  directions (the rows scaled to unit length), below 10% of its largest value so far: the
  output shrinks to a point, or gathers around one far from the origin, which a cosine
  loss meets just as well. The probe is recorded, not required: a network that shrinks its
  whole output keeps its information at a vanishing scale for a long time, and a loss that
  compares distances is met by the shrinking all the same;
* dimensional collapse — the number of principal directions holding 90% of the variance
  at most half of its largest value so far, with the total variance kept (at least 10%).

A healthy run is one where neither ever happens and whose probe ends within 10% of its
best (it learned, and kept, what the embeddings should carry). The thresholds are those
of the truth, chosen once here; the monitor's criteria are measured against them and
never read them.
"""

from __future__ import annotations

import math

import torch

COMPLETE_SPREAD = 0.1
DIMENSIONAL_DIRECTIONS = 0.5
PROBE_KEPT = 0.9


def spectrum_statistics(embeddings: torch.Tensor) -> dict[str, float]:
    """Total variance, that of the unit-length rows, the principal directions holding 90%
    of the variance, and the effective rank of ``[N, D]`` embeddings.
    """
    z = embeddings.detach().double()
    centred = z - z.mean(dim=0)
    singular = torch.linalg.svdvals(centred)
    variances = singular.square() / z.shape[0]
    total = float(variances.sum())
    units = z / z.norm(dim=1, keepdim=True).clamp(min=1e-300)
    direction = float(units.var(dim=0, correction=0).sum())
    if total <= 0.0:
        return {"total_variance": 0.0, "direction_variance": direction, "directions_90": 0.0, "effective_rank": 0.0}
    shares = (variances / total).cumsum(dim=0)
    directions = int(torch.searchsorted(shares, torch.tensor(0.9, dtype=shares.dtype)).item()) + 1
    p = singular / singular.sum()
    p = p[p > 0]
    rank = math.exp(float(-(p * p.log()).sum()))
    return {
        "total_variance": total,
        "direction_variance": direction,
        "directions_90": float(directions),
        "effective_rank": rank,
    }


def probe_score(embeddings: torch.Tensor, labels: torch.Tensor, *, classes: int | None = None) -> float:
    """How much of ``labels`` a ridge-regression probe recovers from ``embeddings``, fitted on
    one half and scored on the other: R² for real-valued labels, accuracy for class indices
    (``classes`` given).
    """
    z = embeddings.detach().double()
    z = (z - z.mean(dim=0)) / (z.std(dim=0) + 1e-12)
    z = torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype)], dim=1)
    y = labels.double() if classes is None else torch.nn.functional.one_hot(labels.long(), classes).double()
    if y.ndim == 1:
        y = y[:, None]
    half = z.shape[0] // 2
    a, b = z[:half], z[half:]
    gram = a.T @ a + 1e-3 * torch.eye(a.shape[1], dtype=z.dtype)
    weights = torch.linalg.solve(gram, a.T @ y[:half])
    fitted = b @ weights
    if classes is not None:
        return float((fitted.argmax(dim=1) == labels[half:].long()).double().mean())
    residual = (y[half:] - fitted).square().sum()
    spread = (y[half:] - y[half:].mean(dim=0)).square().sum()
    return float(1.0 - residual / spread) if float(spread) > 0.0 else 0.0


def onset_of(verification: list[dict[str, float]], truth: str) -> int | None:
    """The index of the check where the verification first sees the ``truth`` collapse (see
    the module documentation); ``None`` when it never does.
    """
    peak_spread = peak_direction = peak_directions = -math.inf
    for index, stats in enumerate(verification):
        peak_spread = max(peak_spread, stats["total_variance"])
        peak_direction = max(peak_direction, stats["direction_variance"])
        peak_directions = max(peak_directions, stats["directions_90"])
        spread_kept = (
            stats["total_variance"] >= COMPLETE_SPREAD * peak_spread
            and stats["direction_variance"] >= COMPLETE_SPREAD * peak_direction
        )
        folded = stats["directions_90"] <= DIMENSIONAL_DIRECTIONS * peak_directions
        if truth == "complete_collapse" and not spread_kept:
            return index
        if truth == "dimensional_collapse" and spread_kept and folded:
            return index
    return None


def healthy(verification: list[dict[str, float]]) -> bool:
    """Whether no collapse of either kind ever shows and the probe ends near its best."""
    probes = [stats["probe"] for stats in verification]
    return (
        onset_of(verification, "complete_collapse") is None
        and onset_of(verification, "dimensional_collapse") is None
        and probes[-1] >= PROBE_KEPT * max(probes)
    )
