"""Time the training-dynamics lenses: prediction metrics per backend, and the cost of
watching output gradients during training.

1. ``compute_prediction_metrics`` on ``N x C`` Gaussian logits (scale 3) per backend:
   the pure-Python reference on lists, NumPy on an array, torch on a float32 tensor.
   Every backend's result is compared with the reference before any time is reported.
2. One training step (forward, backward, SGD update) of an MLP with ``LAYERS`` linear
   layers of width ``WIDTH`` on a batch of ``BATCH`` rows, plain and under
   ``GradientGeometry`` with norms only, with the sketched correlation (default sketch
   size) and with the exact correlation; the state held for the correlation is reported
   next to its bound.

Usage::

    python benchmarks/bench_dynamics.py          # the default sizes
    python benchmarks/bench_dynamics.py --quick  # smaller sizes, fewer repeats
    python benchmarks/bench_dynamics.py --threads 1  # torch on one CPU thread (steadier on a busy machine)

Prints two tables and writes ``benchmarks/results/bench_dynamics.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from geno_lewm.metrics import MetricRegistry  # noqa: E402
from geno_lewm.training.dynamics import METRIC_NAMES, compute_prediction_metrics  # noqa: E402
from geno_lewm.training.gradients import GradientGeometry  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bench_dynamics.json"

LOGIT_SIZES = ((256, 10), (256, 1000), (4096, 1000))
QUICK_LOGIT_SIZES = ((256, 10), (256, 1000))
LAYERS, WIDTH, BATCH = 6, 512, 256
QUICK_LAYERS, QUICK_WIDTH, QUICK_BATCH = 3, 256, 128


def _median_seconds(work: Callable[[], object], repeats: int) -> float:
    work()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def bench_prediction(sizes: tuple[tuple[int, int], ...], repeats: int) -> list[dict[str, Any]]:
    """Median seconds per call of each backend, after checking it agrees with the reference."""
    rows: list[dict[str, Any]] = []
    generator = torch.Generator().manual_seed(0)
    for n, c in sizes:
        logits = torch.randn(n, c, generator=generator) * 3
        inputs: dict[str, Any] = {
            "python": logits.double().tolist(),
            "numpy": logits.double().numpy(),
            "torch": logits,
        }
        reference = compute_prediction_metrics(inputs["python"], backend="python")
        for backend, value in inputs.items():
            result = compute_prediction_metrics(value, backend=backend)
            tolerance = 1e-4 if backend == "torch" else 1e-10
            for name in METRIC_NAMES:
                expected, got = getattr(reference, name), getattr(result, name)
                if not math.isclose(got, expected, rel_tol=tolerance, abs_tol=tolerance):
                    raise SystemExit(f"{backend} disagrees with the reference on {name}: {got} vs {expected}")

            def call(value: Any = value, backend: str = backend) -> object:
                return compute_prediction_metrics(value, backend=backend)

            seconds = _median_seconds(call, repeats)
            rows.append({"rows": n, "classes": c, "backend": backend, "seconds": seconds})
    return rows


def _model(layers: int, width: int) -> torch.nn.Sequential:
    torch.manual_seed(0)
    modules: list[torch.nn.Module] = []
    for _ in range(layers - 1):
        modules += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    modules.append(torch.nn.Linear(width, 10))
    return torch.nn.Sequential(*modules)


def bench_gradients(layers: int, width: int, batch: int, steps: int) -> list[dict[str, Any]]:
    """Median seconds per training step, plain and under each GradientGeometry configuration."""
    configurations: list[tuple[str, dict[str, Any] | None]] = [
        ("no hooks", None),
        ("norms", {}),
        ("norms + sketched correlation", {"compute_correlation": True}),
        ("norms + exact correlation", {"compute_correlation": True, "correlation_sketch_size": None}),
    ]
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, width, generator=generator)
    y = torch.randint(0, 10, (batch,), generator=generator)
    rows: list[dict[str, Any]] = []
    for label, options in configurations:
        model = _model(layers, width)
        optimiser = torch.optim.SGD(model.parameters(), lr=1e-3)
        geometry = None if options is None else GradientGeometry(model, registry=MetricRegistry(), **options)

        def step(model: torch.nn.Module = model, optimiser: torch.optim.Optimizer = optimiser) -> None:
            optimiser.zero_grad()
            torch.autograd.backward(torch.nn.functional.cross_entropy(model(x), y))
            optimiser.step()

        seconds = _median_seconds(step, steps)
        row: dict[str, Any] = {"configuration": label, "seconds_per_step": seconds}
        if geometry is not None:
            geometry.end_epoch()
            row["state_bytes"] = geometry.correlation_state_bytes
            row["state_limit_bytes"] = geometry.correlation_state_limit_bytes
            geometry.detach()
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1), help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    repeats = 5 if args.quick else 15
    sizes = QUICK_LOGIT_SIZES if args.quick else LOGIT_SIZES
    shape = (QUICK_LAYERS, QUICK_WIDTH, QUICK_BATCH) if args.quick else (LAYERS, WIDTH, BATCH)

    prediction = bench_prediction(sizes, repeats)
    print(f"{'N':>6} {'C':>6} {'backend':>8} {'ms/call':>10}")
    for row in prediction:
        print(f"{row['rows']:>6} {row['classes']:>6} {row['backend']:>8} {1e3 * row['seconds']:>10.3f}")

    gradients = bench_gradients(*shape, steps=repeats * 2)
    baseline = gradients[0]["seconds_per_step"]
    print(f"\nMLP: {shape[0]} linear layers, width {shape[1]}, batch {shape[2]}")
    print(f"{'configuration':<30} {'ms/step':>9} {'overhead':>9} {'state KiB':>10} {'bound KiB':>10}")
    for row in gradients:
        overhead = row["seconds_per_step"] / baseline - 1
        state = row.get("state_bytes")
        limit = row.get("state_limit_bytes")
        print(
            f"{row['configuration']:<30} {1e3 * row['seconds_per_step']:>9.3f} {100 * overhead:>8.1f}% "
            f"{'' if state is None else f'{state / 1024:.0f}':>10} {'' if limit is None else f'{limit / 1024:.0f}':>10}"
        )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": {
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                    "numpy": np.__version__,
                    "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                },
                "prediction_metrics": prediction,
                "gradient_geometry": {"layers": shape[0], "width": shape[1], "batch": shape[2], "rows": gradients},
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
