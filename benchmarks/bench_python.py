"""Time the pure-Python collapse metrics against a straightforward implementation.

For each batch size, both implementations receive the same Python lists (prediction and
target, Gaussian entries). "ours" is the public call
``compute_collapse_metrics(..., backend="python")``, validation included; "naive" is the
same six definitions written as plain generator expressions, which is what the C-level
helpers of :mod:`math` are meant to beat. The two results are compared before any time
is reported, so a fast wrong answer cannot pass.

Usage::

    python benchmarks/bench_python.py            # the default sizes, up to 256 x 1024
    python benchmarks/bench_python.py --quick    # small sizes only

Prints a table and writes ``benchmarks/results/bench_python.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from _naive import Rows, Values, naive_values  # noqa: E402  (benchmarks/ is this script's folder)

from geno_lewm.training.collapse import compute_collapse_metrics  # noqa: E402

SIZES: tuple[tuple[int, int], ...] = ((16, 64), (32, 128), (64, 256), (128, 512), (256, 1024))
QUICK_SIZES: tuple[tuple[int, int], ...] = ((16, 64), (32, 128), (64, 256))
RESULTS = Path(__file__).resolve().parent / "results" / "bench_python.json"


def ours_values(p: Rows, t: Rows) -> Values:
    """The library's public call on the pure-Python backend."""
    m = compute_collapse_metrics(p, t, kl_reg=0.0, backend="python")
    return (
        m.pred_cos_mean,
        m.pred_l2_mean,
        m.target_var_per_dim,
        m.pred_var_per_dim,
        m.pred_target_corr,
        m.pairwise_pred_dist_mean,
    )


# ------------------------------------------------------------------- timing
def best_time(function: Callable[[], object], *, budget: float, max_repeats: int) -> float:
    """Fastest of up to ``max_repeats`` runs, stopping once ``budget`` seconds are spent."""
    best = math.inf
    spent = 0.0
    for _ in range(max_repeats):
        started = time.perf_counter()
        function()
        elapsed = time.perf_counter() - started
        best = min(best, elapsed)
        spent += elapsed
        if spent >= budget:
            break
    return best


def batch(rng: random.Random, n: int, d: int) -> tuple[Rows, Rows]:
    """A prediction batch and a target correlated with it, as lists of floats."""
    p = [[rng.gauss(0.0, 1.0) for _ in range(d)] for _ in range(n)]
    t = [[x + 0.5 * rng.gauss(0.0, 1.0) for x in row] for row in p]
    return p, t


def run(sizes: Sequence[tuple[int, int]], *, seed: int = 0) -> list[dict[str, float | int]]:
    rng = random.Random(seed)
    rows: list[dict[str, float | int]] = []
    for n, d in sizes:
        p, t = batch(rng, n, d)
        ours, naive = ours_values(p, t), naive_values(p, t)
        for name, a, b in zip(("cos", "l2", "target_var", "pred_var", "corr", "pairwise"), ours, naive):
            if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
                raise SystemExit(f"results differ at {n}x{d} for {name}: ours {a!r}, naive {b!r}")
        ours_s = best_time(partial(ours_values, p, t), budget=2.0, max_repeats=7)
        naive_s = best_time(partial(naive_values, p, t), budget=3.0, max_repeats=3)
        rows.append({"n": n, "d": d, "ours_ms": ours_s * 1e3, "naive_ms": naive_s * 1e3, "speedup": naive_s / ours_s})
        print(f"{n:>5} {d:>6} {ours_s * 1e3:>10.2f} {naive_s * 1e3:>10.2f} {naive_s / ours_s:>9.1f}x", flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON results")
    args = parser.parse_args(argv)
    sizes = QUICK_SIZES if args.quick else SIZES
    print(f"{'N':>5} {'D':>6} {'ours ms':>10} {'naive ms':>10} {'speed-up':>10}")
    rows = run(sizes)
    report = {
        "benchmark": "pure-Python collapse metrics vs generator expressions",
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "timing": "best of repeated runs, wall clock (time.perf_counter)",
        "results": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
