"""Measure the collapse monitor's criteria on the detection suite: one command.

    python benchmarks/detection/run.py [--seeds 3] [--fresh] [--set NAME=VALUE ...]
                                       [--out benchmarks/results/detection.json]

Trains (or reloads from ``benchmarks/results/detection_runs/``) every run of every family,
verifies each independently (``detection.verify``), replays it through the ``rfc`` and the
``calibrated`` criteria (``detection.replay``), prints one table and writes the JSON. A
cached run is reused only while the sources that made it are unchanged. ``--set`` changes
a calibrated threshold (``--set rank_ratio=0.8``), to measure how much room the defaults
leave. Everything runs on the CPU; each run takes seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent.parent)]

import torch  # noqa: E402

from detection import planted, records, replay, siamese, verify, worldmodel  # noqa: E402
from geno_lewm.training.collapse import CalibratedThresholds  # noqa: E402

FAMILIES: dict[str, ModuleType] = {"worldmodel": worldmodel, "siamese": siamese, "planted": planted}
CACHE = HERE.parent / "results" / "detection_runs"


def _fingerprint(family: ModuleType) -> str:
    """A digest of the sources a run of ``family`` depends on."""
    digest = hashlib.sha256()
    for module in (family, records, verify):
        digest.update(Path(str(module.__file__)).read_bytes())
    digest.update(torch.__version__.encode())
    return digest.hexdigest()[:16]


def _recorded(name: str, family: ModuleType, regime: str, seed: int, fresh: bool) -> records.RunRecord:
    """The run, from the cache when its sources are unchanged, else trained and verified now."""
    path = CACHE / f"{name}-{regime}-{seed}-{_fingerprint(family)}.pt"
    if path.exists() and not fresh:
        loaded: records.RunRecord = torch.load(path, weights_only=False)
        return loaded
    make: Callable[[str, int], records.RunRecord] = family.run
    record = make(regime, seed)
    stats = [check.verification for check in record.checks]
    if record.truth == "healthy":
        record.verified = verify.healthy(stats)
    else:
        record.onset = verify.onset_of(stats, record.truth)
        record.verified = record.onset is not None
    CACHE.mkdir(parents=True, exist_ok=True)
    for stale in CACHE.glob(f"{name}-{regime}-{seed}-*.pt"):
        stale.unlink()
    torch.save(record, path)
    return record


def _cell(scores: list[replay.Score], truth: str) -> tuple[str, str]:
    """The table's two cells for one regime under one mode: alerts or delays, diagnoses."""
    if truth == "healthy":
        alerted = sum(s.alerted_checks for s in scores)
        return f"{alerted}/{sum(s.checks for s in scores)} alerted", "-"
    delays = ",".join("missed" if s.delay is None else f"{s.delay:+d}" for s in scores)
    right, made = sum(s.diagnosed_right for s in scores), sum(s.diagnosed for s in scores)
    return f"delay {delays}", f"{right}/{made}"


def main(argv: list[str] | None = None) -> int:
    """Run the suite; exit status 1 when a run's regime could not be verified."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--fresh", action="store_true", help="retrain every run, ignoring the cache")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a calibrated threshold")
    parser.add_argument("--out", type=Path, default=HERE.parent / "results" / "detection.json")
    args = parser.parse_args(argv)
    settings = {name: float(value) for name, _, value in (item.partition("=") for item in args.set)}
    calibration = CalibratedThresholds(**settings)
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    unverified: list[str] = []
    for name, family in FAMILIES.items():
        for regime, truth in family.REGIMES.items():
            runs = [_recorded(name, family, regime, seed, args.fresh) for seed in range(args.seeds)]
            unverified += [run.name for run in runs if not run.verified]
            row: dict[str, Any] = {
                "family": name,
                "regime": regime,
                "truth": truth,
                "runs": [run.summary() for run in runs],
                "seconds_per_run": round(max(run.seconds for run in runs), 1),
            }
            for mode in replay.MODES:
                said = [replay.replay(run, mode, calibration) for run in runs]
                scored = [replay.score(run, s) for run, s in zip(runs, said)]
                row[mode] = {
                    "scores": [s.as_dict() for s in scored],
                    "alerts": [s.criteria for s in said],
                    "diagnoses": [s.diagnoses for s in said],
                    "cells": _cell(scored, truth),
                }
            rows.append(row)
            onsets = ",".join("-" if run.onset is None else str(run.onset) for run in runs)
            print(
                f"{name:<10} {regime:<18} {truth:<20} onset {onsets:<9}"
                + "".join(
                    f" | {mode}: {row[mode]['cells'][0]:<22} {row[mode]['cells'][1]:>6}" for mode in replay.MODES
                ),
                flush=True,
            )
    summary = {mode: _summary(rows, mode) for mode in replay.MODES}
    for mode, found in summary.items():
        print(
            f"{mode:<10} healthy alerted checks {found['healthy_alerted_checks']}/{found['healthy_checks']}, "
            f"largest delay complete {found['largest_delay']['complete_collapse']} dimensional "
            f"{found['largest_delay']['dimensional_collapse']}, diagnoses right {found['diagnoses_right']}/"
            f"{found['diagnoses']}"
        )
    payload = {
        "suite": "detection",
        "seeds": args.seeds,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - started, 1),
        "calibration": settings,
        "unverified": unverified,
        "summary": summary,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {args.out}")
    if unverified:
        print(f"unverified runs: {', '.join(unverified)}", file=sys.stderr)
    return 1 if unverified else 0


def _summary(rows: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """Totals over the suite for one mode."""
    healthy = [s for row in rows if row["truth"] == "healthy" for s in row[mode]["scores"]]
    largest: dict[str, int | str | None] = {}
    for truth in ("complete_collapse", "dimensional_collapse"):
        delays = [s["delay"] for row in rows if row["truth"] == truth for s in row[mode]["scores"]]
        largest[truth] = "missed" if None in delays else max(delays, default=None)
    collapsing = [s for row in rows if row["truth"] != "healthy" for s in row[mode]["scores"]]
    return {
        "healthy_alerted_checks": sum(s["alerted_checks"] for s in healthy),
        "healthy_checks": sum(s["checks"] for s in healthy),
        "largest_delay": largest,
        "diagnoses_right": sum(s["diagnosed_right"] for s in collapsing),
        "diagnoses": sum(s["diagnosed"] for s in collapsing),
    }


if __name__ == "__main__":
    raise SystemExit(main())
