"""Dimensional collapse, seen or missed: a tiny self-supervised model trained twice.

A small JEPA-style model (an MLP encoder ending in BatchNorm, a linear predictor) learns
to predict the embedding of one noisy view of a sample from another view of it. The
data are 64-dimensional observations of an 8-dimensional latent variable, so there is
more to represent than one direction.

* ``healthy``: prediction loss plus the Gaussian regulariser ``gaussian_kl`` of the
  embeddings (the RFC-0005 §3.2 term, computed by geno_lewm, differentiable).
* ``collapsing``: the prediction loss alone. BatchNorm keeps every dimension's variance
  at 1, so the embeddings cannot shrink to a point; they fold into a few directions
  instead: dimensional collapse.

Both runs are watched by the same :class:`CollapseMonitor` (RFC thresholds plus
``effective_rank_to_initial=0.5``) on a held-out batch, with ``kl_reg`` the Gaussian KL
of the target embeddings. The script prints each check and, per run, the first step at
which each criterion fired; it writes the same as JSON under ``benchmarks/results/``.

Run: ``python benchmarks/experiment_dimensional_collapse.py`` (torch, CPU, well under a minute);
``--timing`` also times the spectral functions per backend at the RFC's 256 x 1024.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from geno_lewm.metrics import MetricRegistry  # noqa: E402
from geno_lewm.training.collapse import CollapseMonitor, CollapseThresholds  # noqa: E402
from geno_lewm.training.spectrum import gaussian_kl, sigreg, spectral_metrics  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "experiment_dimensional_collapse.json"

OBSERVED = 64
LATENT = 8
EMBEDDING = 32
HIDDEN = 128
NOISE = 0.6
BATCH = 256
VALIDATION = 512
KL_WEIGHT = 0.02
LATENT_DECAY = 0.7


class Encoder(nn.Module):
    """MLP ending in a BatchNorm without affine parameters: unit variance per dimension."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(OBSERVED, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, EMBEDDING),
            nn.BatchNorm1d(EMBEDDING, affine=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed a batch of observations."""
        out: torch.Tensor = self.net(x)
        return out


@dataclass
class World:
    """The data: observations ``A s`` of a latent ``s`` in R^8, and two noisy views."""

    mixing: torch.Tensor
    generator: torch.Generator

    def sample(self, n: int) -> torch.Tensor:
        """``n`` clean observations; latent scales decay by ``LATENT_DECAY`` per dimension."""
        scales = LATENT_DECAY ** torch.arange(LATENT, dtype=torch.float32)
        latent = torch.randn(n, LATENT, generator=self.generator) * scales
        return latent @ self.mixing

    def views(self, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two views of each observation, with independent Gaussian noise."""
        noise = torch.randn(2, *clean.shape, generator=self.generator) * NOISE
        return clean + noise[0], clean + noise[1]


@dataclass
class Run:
    """One training run's record."""

    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    first_alert: dict[str, int] = field(default_factory=dict)
    diagnoses: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def prediction_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """RFC-0005 §3.1: ``alpha (1 - cos) + beta ||pred - target||^2 / d`` with 1.0 and 0.1."""
    cosine = nn.functional.cosine_similarity(pred, target, dim=1)
    squared = (pred - target).square().sum(dim=1) / pred.shape[1]
    return (1.0 * (1.0 - cosine) + 0.1 * squared).mean()


def train(name: str, *, regularise: bool, steps: int, every: int, seed: int) -> Run:
    """Train one model and watch it; returns the record."""
    torch.manual_seed(seed)
    data = torch.Generator().manual_seed(seed)
    world = World(torch.randn(LATENT, OBSERVED, generator=data) / LATENT**0.5, data)
    encoder, predictor = Encoder(), nn.Linear(EMBEDDING, EMBEDDING)
    optimiser = torch.optim.Adam([*encoder.parameters(), *predictor.parameters()], lr=1e-3)
    held_out = world.views(world.sample(VALIDATION))
    monitor = CollapseMonitor(
        every,
        CollapseThresholds(effective_rank_to_initial=0.5),
        backend="torch",
        registry=MetricRegistry(),
    )
    run = Run(name)
    started = time.perf_counter()
    for step in range(1, steps + 1):
        encoder.train()
        context, target_view = world.views(world.sample(BATCH))
        z_context, z_target = encoder(context), encoder(target_view)
        loss = prediction_loss(predictor(z_context), z_target)
        if regularise:
            loss = loss + KL_WEIGHT * gaussian_kl(z_target)
        optimiser.zero_grad()
        torch.autograd.backward([loss])
        optimiser.step()
        if step % every:
            continue
        encoder.eval()
        with torch.no_grad():
            pred = predictor(encoder(held_out[0]))
            target = encoder(held_out[1])
            kl = float(gaussian_kl(target))
            isotropy = float(sigreg(target, slices=64))
        check = monitor.observe(pred, target, kl_reg=kl, step=step, force=True)
        assert check is not None and check.spectrum is not None
        spectrum = check.spectrum
        alerts = [a.criterion for a in check.alerts]
        row: dict[str, Any] = {
            "step": step,
            "loss": float(loss.detach()),
            "pred_var_per_dim": check.metrics.pred_var_per_dim,
            "target_var_per_dim": check.metrics.target_var_per_dim,
            "pairwise_pred_dist_mean": check.metrics.pairwise_pred_dist_mean,
            "kl_reg": kl,
            "sigreg": isotropy,
            "pred_effective_rank": spectrum.prediction.effective_rank,
            "target_effective_rank": spectrum.target.effective_rank,
            "target_top_k_share": spectrum.target.top_k_share,
            "target_normalized_std": spectrum.target.normalized_std,
            "alerts": alerts,
            "diagnosis": check.diagnosis.kind if check.diagnosis else None,
        }
        run.rows.append(row)
        for criterion in alerts:
            run.first_alert.setdefault(criterion, step)
        if check.diagnosis is not None:
            run.diagnoses.setdefault(check.diagnosis.kind, step)
    run.seconds = time.perf_counter() - started
    return run


COLUMNS = (
    ("step", "step", "{:>5d}"),
    ("loss", "loss", "{:>6.3f}"),
    ("pred_var_per_dim", "pred_var", "{:>8.3f}"),
    ("target_var_per_dim", "targ_var", "{:>8.3f}"),
    ("pairwise_pred_dist_mean", "pairwise", "{:>8.2f}"),
    ("kl_reg", "kl_reg", "{:>7.2f}"),
    ("sigreg", "sigreg", "{:>7.2f}"),
    ("pred_effective_rank", "erank_p", "{:>7.2f}"),
    ("target_effective_rank", "erank_t", "{:>7.2f}"),
    ("target_top_k_share", "top10_t", "{:>7.3f}"),
    ("target_normalized_std", "nstd_t", "{:>6.3f}"),
)


def print_run(run: Run) -> None:
    print(f"\n== {run.name} ({run.seconds:.1f} s)")
    print(" ".join(f"{title:>{len(fmt.format(0 if 'd' in fmt else 0.0))}}" for _, title, fmt in COLUMNS), " alerts")
    for row in run.rows:
        cells = " ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS)
        alerts = ",".join(row["alerts"]) or "-"
        diagnosis = f" [{row['diagnosis']}]" if row["diagnosis"] else ""
        print(f"{cells}  {alerts}{diagnosis}")


def print_summary(runs: list[Run]) -> None:
    criteria = ("pred_var_per_dim", "pairwise_pred_dist_mean", "kl_reg", "pred_effective_rank", "target_effective_rank")
    print("\nFirst step at which each criterion fired (- : never)")
    print(f"{'criterion':<26}" + "".join(f"{run.name:>12}" for run in runs))
    for criterion in criteria:
        print(f"{criterion:<26}" + "".join(f"{run.first_alert.get(criterion, '-')!s:>12}" for run in runs))
    for run in runs:
        found = ", ".join(f"{kind} (from step {step})" for kind, step in run.diagnoses.items()) or "none"
        print(f"diagnosis, {run.name}: {found}")


def time_backends(n: int, d: int, repeats: int) -> list[dict[str, Any]]:
    """Best-of-``repeats`` seconds of each spectral function on an ``[n, d]`` Gaussian batch,
    per backend (Python lists for ``python``, a float64 array for ``numpy``, a float32
    tensor for ``torch``).
    """
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(n, d, generator=generator)
    inputs: dict[str, Any] = {"python": batch.double().tolist(), "torch": batch}
    try:
        import numpy

        inputs["numpy"] = numpy.asarray(batch.double())
    except ImportError:
        pass
    functions: dict[str, Callable[[Any, str], Any]] = {
        "spectral_metrics": lambda x, b: spectral_metrics(x, backend=b),
        "gaussian_kl": lambda x, b: gaussian_kl(x, backend=b),
        "sigreg": lambda x, b: sigreg(x, backend=b),
    }
    table = []
    for backend in ("python", "numpy", "torch"):
        if backend not in inputs:
            continue
        row: dict[str, Any] = {"backend": backend, "n": n, "d": d}
        for name, function in functions.items():
            function(inputs[backend], backend)  # warm-up: imports, cached directions
            best = math.inf
            for _ in range(repeats):
                started = time.perf_counter()
                function(inputs[backend], backend)
                best = min(best, time.perf_counter() - started)
            row[name] = best
        table.append(row)
    return table


def print_timings(table: list[dict[str, Any]]) -> None:
    print(f"\nSeconds per call (best of repeats), {table[0]['n']} x {table[0]['d']}")
    print(f"{'backend':<8}{'spectral_metrics':>18}{'gaussian_kl':>14}{'sigreg':>10}")
    for row in table:
        print(f"{row['backend']:<8}{row['spectral_metrics']:>18.4f}{row['gaussian_kl']:>14.4f}{row['sigreg']:>10.4f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timing", action="store_true", help="also time the spectral functions at 256 x 1024")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    runs = [
        train("healthy", regularise=True, steps=args.steps, every=args.every, seed=args.seed),
        train("collapsing", regularise=False, steps=args.steps, every=args.every, seed=args.seed),
    ]
    for run in runs:
        print_run(run)
    print_summary(runs)
    timings = time_backends(256, 1024, args.repeats) if args.timing else []
    if timings:
        print_timings(timings)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "config": vars(args),
        "timings": timings,
        "runs": {
            run.name: {"rows": run.rows, "first_alert": run.first_alert, "diagnoses": run.diagnoses} for run in runs
        },
    }
    RESULTS.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
