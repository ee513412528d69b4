"""Time one scheduled collapse check per kind of criteria, on every backend.

For each backend (``python`` on lists, ``numpy`` on float64 arrays, ``torch`` on float32
CPU tensors, and CUDA tensors when a GPU is present) and each shape (the RFC's
256 x 1024 validation batch, and 512 x 64), the same batch is checked by three monitors:

* ``rfc`` — RFC-0005's criteria, no spectra;
* ``spectrum`` — RFC-0005's criteria with ``spectrum=True`` (the spectra of predictions
  and targets, and the diagnosis they allow);
* ``calibrated`` — RFC-0013's calibrated criteria (spectra, the reference distributions
  of the shape, the history).

The figure that matters is ``calibrated / spectrum``: the calibrated criteria promise at
most twice the cost of a spectrum check. Each time is the fastest of several scheduled
``observe`` calls after a warm-up (the first, forced, check at step 0 builds the shape's
reference values, which are cached). The calibrated monitor's alerts are checked to be
empty: the batch is the same at every check, so any alert would be a bug.

Usage::

    python benchmarks/bench_checks.py            # both shapes, every backend
    python benchmarks/bench_checks.py --quick    # fewer repeats

Prints a table and writes ``benchmarks/results/bench_checks.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from geno_lewm.training.collapse import CollapseMonitor  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bench_checks.json"
SHAPES = ((256, 1024), (512, 64))
KINDS: dict[str, dict[str, Any]] = {
    "rfc": {},
    "spectrum": {"spectrum": True},
    "calibrated": {"criteria": "calibrated"},
}


def _batches(backend: str, n: int, d: int) -> tuple[Any, Any, float]:
    """A prediction and target batch in the backend's native type, and a ``kl_reg``."""
    generator = np.random.default_rng(n * 1009 + d)
    target = generator.standard_normal((n, d))
    prediction = target + 0.5 * generator.standard_normal((n, d))
    if backend == "python":
        return prediction.tolist(), target.tolist(), 1.0
    if backend == "numpy":
        return prediction, target, 1.0
    device = "cuda" if backend == "cuda" else "cpu"
    as_tensor: Callable[[Any], torch.Tensor] = lambda a: torch.tensor(a, dtype=torch.float32, device=device)  # noqa: E731
    return as_tensor(prediction), as_tensor(target), 1.0


def _time_kind(backend: str, kind: str, n: int, d: int, repeats: int) -> float:
    """Fastest scheduled check of one monitor kind, in seconds."""
    prediction, target, kl = _batches(backend, n, d)
    monitor = CollapseMonitor(log_every_steps=1, backend="torch" if backend == "cuda" else backend, **KINDS[kind])
    monitor.observe(prediction, target, kl_reg=kl, step=0, force=True)
    best = math.inf
    for step in range(1, repeats + 1):
        if backend == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        check = monitor.observe(prediction, target, kl_reg=kl, step=step)
        if backend == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
        assert (check is not None and check.alerts == ()) or kind != "calibrated", check
    return best


def main(argv: Sequence[str] | None = None) -> int:
    """Run the table; exit status 1 when a calibrated check costs more than twice a spectrum one."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON results")
    args = parser.parse_args(argv)
    backends = ["python", "numpy", "torch"] + (["cuda"] if torch.cuda.is_available() else [])
    rows: list[dict[str, Any]] = []
    print(f"{'backend':<8} {'shape':<10} {'rfc ms':>10} {'spectrum ms':>12} {'calibrated ms':>14} {'cal/spec':>9}")
    for backend in backends:
        for n, d in SHAPES:
            repeats = (2 if args.quick else 3) if backend == "python" else (5 if args.quick else 15)
            times = {kind: _time_kind(backend, kind, n, d, repeats) for kind in KINDS}
            ratio = times["calibrated"] / times["spectrum"]
            rows.append(
                {"backend": backend, "n": n, "d": d, **{f"{k}_ms": v * 1e3 for k, v in times.items()}, "ratio": ratio}
            )
            print(
                f"{backend:<8} {f'{n}x{d}':<10} {times['rfc'] * 1e3:>10.2f} {times['spectrum'] * 1e3:>12.2f} "
                f"{times['calibrated'] * 1e3:>14.2f} {ratio:>9.2f}",
                flush=True,
            )
    result = {
        "benchmark": "one scheduled collapse check per kind of criteria",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "timing": "best of scheduled observe calls after a forced warm-up check; GPU runs synchronised",
        "results": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return 0 if all(row["ratio"] <= 2.0 for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
