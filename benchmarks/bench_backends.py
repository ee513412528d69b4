"""Time the vectorised collapse backends against their floors.

Rows of the table (each result is checked against a reference before its time is kept,
so a fast wrong answer cannot pass):

1. ``lists``: the RFC's validation batch (256 x 1024) as Python lists through the NumPy
   backend, conversion included, against a straightforward pure-Python implementation of
   the same definitions (generator expressions) and against the pure-Python backend.
2. ``numpy``: float64 arrays, 4096 x 1024, against one bare Gram product ``x @ x.T``
   (the floor for exact pairwise distances; the backend needs only half the pairs).
3. ``torch-cpu``: float32 tensors on the CPU, 4096 x 1024, against one ``x @ x.T``.
4. ``torch-cuda`` (only when CUDA is available): float32 tensors, 256 x 1024, 4096 x 1024
   against one float32 Gram product, and 16,384 x 1024 with the peak extra GPU memory.
5. ``observe``: one unscheduled ``CollapseMonitor.observe`` step.
6. ``auto``: pure Python against NumPy on small list batches, the data behind
   ``AUTO_NUMPY_MIN_WORK``.

Usage::

    python benchmarks/bench_backends.py            # the default sizes
    python benchmarks/bench_backends.py --quick    # smaller sizes, fewer repeats
    python benchmarks/bench_backends.py --threads 1

Prints a table and writes ``benchmarks/results/bench_backends.json``. The environment
variables ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` (set on some machines for old
OpenBLAS builds) slow NumPy's products; the JSON records them.
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
import timeit
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _naive import Values, naive_values  # noqa: E402  (benchmarks/ is this script's folder)

from geno_lewm.backends import AUTO_NUMPY_MIN_WORK, _python, auto_backend, python_work  # noqa: E402
from geno_lewm.training.collapse import CollapseMonitor, compute_collapse_metrics  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bench_backends.json"
NAMES = ("cos", "l2", "target_var", "pred_var", "corr", "pairwise")


# ------------------------------------------------------------------- helpers
def metrics_values(prediction: Any, target: Any, backend: str) -> Values:
    """The public call, reduced to the six batch statistics."""
    m = compute_collapse_metrics(prediction, target, kl_reg=0.0, backend=backend)
    return (
        m.pred_cos_mean,
        m.pred_l2_mean,
        m.target_var_per_dim,
        m.pred_var_per_dim,
        m.pred_target_corr,
        m.pairwise_pred_dist_mean,
    )


def check_close(label: str, got: Values, expected: Values, rtol: float, atol_bounded: float) -> float:
    """Raise if ``got`` is not within tolerance of ``expected``; return the worst error."""
    worst = 0.0
    for index, (name, a, b) in enumerate(zip(NAMES, got, expected)):
        slack = atol_bounded if index in (0, 4) else 0.0
        error = abs(a - b)
        if error > rtol * abs(b) + slack:
            raise SystemExit(f"{label}: {name} differs: {a!r} against {b!r}")
        worst = max(worst, error / abs(b) if b else error)
    return worst


def best_seconds(work: Callable[[], object], *, budget: float, repeats: int, sync: bool = False) -> float:
    """Fastest of up to ``repeats`` runs after one warm-up, stopping once ``budget`` seconds
    are spent; with ``sync``, each run waits for the GPU to finish.
    """
    work()
    if sync:
        torch.cuda.synchronize()
    best, spent = math.inf, 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        if sync:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        best, spent = min(best, elapsed), spent + elapsed
        if spent >= budget:
            break
    return best


def gaussian_pair(generator: np.random.Generator, n: int, d: int) -> tuple[Any, Any]:
    """A prediction batch and a target correlated with it, float64."""
    p = generator.standard_normal((n, d))
    return p, p + 0.5 * generator.standard_normal((n, d))


# ----------------------------------------------------------------------- rows
def bench_lists(n: int, d: int, repeats: int) -> dict[str, Any]:
    rng = random.Random(0)
    p = [[rng.gauss(0.0, 1.0) for _ in range(d)] for _ in range(n)]
    t = [[x + 0.5 * rng.gauss(0.0, 1.0) for x in row] for row in p]
    reference = metrics_values(p, t, "python")
    error = check_close("lists/numpy", metrics_values(p, t, "numpy"), reference, 1e-9, 1e-14)
    check_close("lists/naive", naive_values(p, t), reference, 1e-9, 1e-12)
    numpy_s = best_seconds(lambda: metrics_values(p, t, "numpy"), budget=3.0, repeats=repeats * 4)
    python_s = best_seconds(lambda: metrics_values(p, t, "python"), budget=4.0, repeats=repeats)
    naive_s = best_seconds(lambda: naive_values(p, t), budget=6.0, repeats=2)
    return {
        "row": "lists",
        "shape": [n, d],
        "numpy_ms": numpy_s * 1e3,
        "python_backend_ms": python_s * 1e3,
        "naive_python_ms": naive_s * 1e3,
        "speedup_vs_naive": naive_s / numpy_s,
        "max_rel_error": error,
    }


def bench_numpy(n: int, d: int, repeats: int) -> dict[str, Any]:
    from geno_lewm.backends import _numpy

    p, t = gaussian_pair(np.random.default_rng(1), n, d)
    values = metrics_values(p, t, "numpy")
    reference = metrics_values(torch.from_numpy(p), torch.from_numpy(t), "torch")
    error = check_close("numpy vs torch float64", values, reference, 1e-9, 1e-14)
    pp, tp = _numpy.prepare(p, "prediction"), _numpy.prepare(t, "target")
    kernel_s = best_seconds(lambda: _numpy.collapse_values(pp, tp), budget=6.0, repeats=repeats)
    full_s = best_seconds(lambda: metrics_values(p, t, "numpy"), budget=6.0, repeats=repeats)
    gram_s = best_seconds(lambda: p @ p.T, budget=6.0, repeats=repeats)
    return {
        "row": "numpy",
        "shape": [n, d],
        "dtype": "float64",
        "kernel_ms": kernel_s * 1e3,
        "with_validation_ms": full_s * 1e3,
        "gram_ms": gram_s * 1e3,
        "ratio_to_gram": full_s / gram_s,
        "max_rel_error_vs_torch_float64": error,
    }


def bench_torch(n: int, d: int, device: str, repeats: int) -> dict[str, Any]:
    sync = device != "cpu"
    p64, t64 = (torch.from_numpy(a) for a in gaussian_pair(np.random.default_rng(2), n, d))
    p, t = p64.to(device=device, dtype=torch.float32), t64.to(device=device, dtype=torch.float32)
    reference = metrics_values(p.cpu().double().numpy(), t.cpu().double().numpy(), "numpy")
    error = check_close(f"torch {device} float32", metrics_values(p, t, "torch"), reference, 1e-5, 1e-6)
    ours_s = best_seconds(lambda: metrics_values(p, t, "torch"), budget=6.0, repeats=repeats, sync=sync)
    gram_s = best_seconds(lambda: p @ p.T, budget=6.0, repeats=repeats, sync=sync)
    row: dict[str, Any] = {
        "row": f"torch-{device}",
        "shape": [n, d],
        "dtype": "float32",
        "ms": ours_s * 1e3,
        "gram_ms": gram_s * 1e3,
        "ratio_to_gram": ours_s / gram_s,
        "max_rel_error_vs_numpy": error,
    }
    if sync:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        metrics_values(p, t, "torch")
        row["peak_extra_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
        row["device_name"] = torch.cuda.get_device_name()
    return row


def bench_observe() -> dict[str, Any]:
    monitor = CollapseMonitor(log_every_steps=500)
    batch = [[1.0, 0.0], [0.0, 1.0]]
    assert monitor.observe(batch, batch, kl_reg=0.0, step=1) is None
    calls = 1_000_000
    timer = timeit.Timer(lambda: monitor.observe(batch, batch, kl_reg=0.0, step=499))
    seconds = min(timer.repeat(repeat=5, number=calls)) / calls
    empty = min(timeit.Timer(lambda: None).repeat(repeat=5, number=calls)) / calls
    return {"row": "observe", "unscheduled_us": seconds * 1e6, "empty_lambda_us": empty * 1e6}


def bench_auto(sizes: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
    rows = []
    for n, d in sizes:
        rng = random.Random(n * d)
        p = [[rng.gauss(0.0, 1.0) for _ in range(d)] for _ in range(n)]
        t = [[rng.gauss(0.0, 1.0) for _ in range(d)] for _ in range(n)]
        python_s = best_seconds(partial(metrics_values, p, t, "python"), budget=1.0, repeats=20)
        numpy_s = best_seconds(partial(metrics_values, p, t, "numpy"), budget=1.0, repeats=20)
        rows.append(
            {
                "row": "auto",
                "shape": [n, d],
                "python_work": python_work(p),
                "python_ms": python_s * 1e3,
                "numpy_ms": numpy_s * 1e3,
                "auto_picks": auto_backend(p, t),
                "faster": "numpy" if numpy_s < python_s else "python",
            }
        )
    return rows


# ----------------------------------------------------------------------- main
def _describe(row: dict[str, Any]) -> str:
    kind = row["row"]
    shape = "x".join(map(str, row.get("shape", []))) or "-"
    if kind == "lists":
        return (
            f"{kind:<11} {shape:>11}  numpy {row['numpy_ms']:9.2f} ms"
            f"   python backend {row['python_backend_ms']:9.1f} ms   naive {row['naive_python_ms']:9.1f} ms"
            f"   speed-up vs naive {row['speedup_vs_naive']:7.1f}x"
        )
    if kind == "numpy":
        return (
            f"{kind:<11} {shape:>11}  ours {row['with_validation_ms']:9.1f} ms (kernel {row['kernel_ms']:.1f})"
            f"   x @ x.T {row['gram_ms']:9.1f} ms   ratio {row['ratio_to_gram']:5.2f}"
        )
    if kind.startswith("torch"):
        extra = f"   peak extra {row['peak_extra_mib']:.0f} MiB" if "peak_extra_mib" in row else ""
        return (
            f"{kind:<11} {shape:>11}  ours {row['ms']:9.3f} ms   x @ x.T {row['gram_ms']:9.3f} ms"
            f"   ratio {row['ratio_to_gram']:5.2f}{extra}"
        )
    if kind == "observe":
        return (
            f"{kind:<11} {'-':>11}  unscheduled step {row['unscheduled_us']:.3f} us"
            f" (empty call {row['empty_lambda_us']:.3f} us)"
        )
    return (
        f"{kind:<11} {shape:>11}  python {row['python_ms']:8.3f} ms   numpy {row['numpy_ms']:8.3f} ms"
        f"   work {row['python_work']:>10}   auto -> {row['auto_picks']:<6} (faster: {row['faster']})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON results")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 7
    big = 1024 if args.quick else 4096
    rows: list[dict[str, Any]] = []

    def report(row: dict[str, Any]) -> None:
        rows.append(row)
        print(_describe(row), flush=True)

    report(bench_lists(256, 1024, repeats))
    report(bench_numpy(big, 1024, repeats))
    report(bench_torch(big, 1024, "cpu", repeats))
    if torch.cuda.is_available():
        for n in (256, big) if args.quick else (256, 4096, 16_384):
            report(bench_torch(n, 1024, "cuda", repeats * 3))
    report(bench_observe())
    auto_sizes = ((8, 8), (16, 16), (24, 64), (32, 32), (48, 16), (64, 8), (64, 64), (96, 96), (128, 128))
    for row in bench_auto(auto_sizes[:5] if args.quick else auto_sizes):
        report(row)
    result = {
        "benchmark": "vectorised collapse backends against their floors",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "openblas_env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")},
        "auto_numpy_min_work": AUTO_NUMPY_MIN_WORK,
        "reference": _python.NAME,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "timing": "best of repeated runs after a warm-up, wall clock (time.perf_counter); GPU runs synchronised",
        "results": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
