"""Time what the integrations add to a collapse check.

1. An unscheduled ``CollapseMonitor.observe`` step (the per-step cost in a training loop),
   for a plain monitor and one with a policy, a sink and the distributed settings.
2. A scheduled check of a small batch on the pure-Python backend, plain, with an alert
   policy, and with an alert policy plus a memory sink: the per-check overhead of the
   policy and the sink call.
3. A scheduled check of an ``N x D`` float32 CPU tensor split over two gloo processes
   (shards of unequal sizes), in ``gather`` and ``statistics`` mode, next to one process
   checking the whole batch. Each rank's ``gather`` result is compared with the single
   process's before any time is reported.

Usage::

    python benchmarks/bench_integrations.py          # N x D = 256 x 1024
    python benchmarks/bench_integrations.py --quick  # 64 x 128, fewer repeats

Prints a table and writes ``benchmarks/results/bench_integrations.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from geno_lewm.integrations.sinks import MemorySink  # noqa: E402
from geno_lewm.metrics import MetricRegistry  # noqa: E402
from geno_lewm.training.alerting import AlertPolicy  # noqa: E402
from geno_lewm.training.collapse import CollapseMonitor  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "bench_integrations.json"


def best_per_call(function: Any, number: int, repeats: int = 5) -> float:
    """Best mean seconds per call over ``repeats`` runs of ``number`` calls."""
    return min(timeit.repeat(function, number=number, repeat=repeats)) / number


def unscheduled(number: int) -> dict[str, float]:
    batch = [[1.0, 2.0]]
    plain = CollapseMonitor(log_every_steps=500)
    full = CollapseMonitor(
        log_every_steps=500, policy=AlertPolicy(patience=3, hysteresis=0.1), sinks=[MemorySink()], record_on="all"
    )
    return {
        "plain": best_per_call(lambda: plain.observe(batch, batch, kl_reg=0.1, step=7), number),
        "policy+sink": best_per_call(lambda: full.observe(batch, batch, kl_reg=0.1, step=7), number),
    }


def scheduled(number: int) -> dict[str, float]:
    batch = [[float((i * 7 + j * 3) % 11) for j in range(8)] for i in range(16)]
    monitors = {
        "plain": CollapseMonitor(log_every_steps=1, backend="python", registry=MetricRegistry()),
        "policy": CollapseMonitor(
            log_every_steps=1, backend="python", registry=MetricRegistry(), policy=AlertPolicy(patience=2)
        ),
        "policy+sink": CollapseMonitor(
            log_every_steps=1,
            backend="python",
            registry=MetricRegistry(),
            policy=AlertPolicy(patience=2),
            sinks=[MemorySink()],
        ),
    }
    return {
        name: best_per_call(lambda m=monitor: m.observe(batch, batch, kl_reg=0.1, step=1), number)
        for name, monitor in monitors.items()
    }


def worker(rank: int, init: str, *, rows: int, dim: int, repeats: int, out: Path) -> None:
    """One rank of the two-process measurement (run by this script in a subprocess)."""
    import torch
    import torch.distributed as dist

    from geno_lewm.training.collapse import compute_collapse_metrics

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    generator = torch.Generator().manual_seed(0)
    prediction = torch.randn(rows, dim, generator=generator)
    target = prediction + 0.1 * torch.randn(rows, dim, generator=generator)
    cut = rows // 2 - 3
    mine = slice(0, cut) if rank == 0 else slice(cut, rows)
    timings: dict[str, float] = {}
    for mode in ("gather", "statistics"):
        monitor = CollapseMonitor(log_every_steps=1, registry=MetricRegistry(), distributed=mode)
        check = monitor.observe(prediction[mine], target[mine], kl_reg=0.1, step=1)
        if mode == "gather":
            assert check is not None
            assert check.metrics == compute_collapse_metrics(prediction, target, kl_reg=0.1)
        best = float("inf")
        for _ in range(repeats):
            dist.barrier()
            started = time.perf_counter()
            monitor.observe(prediction[mine], target[mine], kl_reg=0.1, step=1)
            best = min(best, time.perf_counter() - started)
        timings[mode] = best
    dist.barrier()
    dist.destroy_process_group()
    (out / f"rank{rank}.json").write_text(json.dumps(timings))


def two_ranks(rows: int, dim: int, repeats: int) -> dict[str, float]:
    import torch

    from geno_lewm.training.collapse import compute_collapse_metrics

    generator = torch.Generator().manual_seed(0)
    prediction = torch.randn(rows, dim, generator=generator)
    target = prediction + 0.1 * torch.randn(rows, dim, generator=generator)
    single = min(
        timeit.repeat(lambda: compute_collapse_metrics(prediction, target, kl_reg=0.1), number=1, repeat=repeats)
    )
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory)
        init = f"file://{out / 'rendezvous'}"
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        command = [sys.executable, __file__, "--worker", init, str(rows), str(dim), str(repeats), str(out)]
        processes = [subprocess.Popen([*command, str(rank)], env=env) for rank in range(2)]
        for process in processes:
            if process.wait(timeout=600) != 0:
                raise SystemExit("a worker failed")
        ranks = [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(2)]
    return {
        "one process, whole batch": single,
        "2 ranks, gather": max(r["gather"] for r in ranks),
        "2 ranks, statistics": max(r["statistics"] for r in ranks),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--worker", nargs=6, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        init, rows, dim, repeats, out, rank = args.worker
        worker(int(rank), init, rows=int(rows), dim=int(dim), repeats=int(repeats), out=Path(out))
        return
    rows, dim = (64, 128) if args.quick else (256, 1024)
    repeats = 3 if args.quick else 10
    table: list[tuple[str, str, float]] = []
    for name, seconds in unscheduled(200_000 if args.quick else 1_000_000).items():
        table.append(("unscheduled observe", name, seconds))
    for name, seconds in scheduled(200 if args.quick else 2000).items():
        table.append(("scheduled check, 16 x 8 python", name, seconds))
    for name, seconds in two_ranks(rows, dim, repeats).items():
        table.append((f"scheduled check, {rows} x {dim} float32 torch", name, seconds))
    print(f"{'what':<42} {'variant':<26} {'time':>12}")
    for what, name, seconds in table:
        shown = f"{seconds * 1e9:.0f} ns" if seconds < 1e-5 else f"{seconds * 1e3:.3f} ms"
        print(f"{what:<42} {name:<26} {shown:>12}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": {
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                },
                "sizes": {"rows": rows, "dim": dim, "repeats": repeats},
                "seconds": [{"what": w, "variant": n, "seconds": s} for w, n, s in table],
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
