"""The ``geno-lewm`` command line (also ``python -m geno_lewm``).

Commands
--------
``report LOG... [--run RUN_ID] [--json]``
    A summary of each run: every metric's first, last, min and max with their steps,
    every alert, and every line that could not be read.
``plot LOG --out FILE.png [--run RUN_ID]``
    One panel per metric over steps, thresholds drawn, alerts marked (needs the ``plot``
    extra: matplotlib).
``schema``
    The JSON Schema of one log record.
``config-schema``
    The JSON Schema of a monitoring configuration (:mod:`geno_lewm.config`).
``demo [--out DIR]``
    A simulated training run whose predictions collapse part-way, watched by the monitor.

Exit codes
----------
0
    Success: every log was read in full.
2
    Usage error (unknown command or option, as argparse reports).
3
    A log could not be read at all: missing, unreadable, or no line of it is a record;
    or there is nothing to plot.
4
    Every log was read but some lines could not be (torn or corrupt); they are listed,
    and the rest is reported or plotted.
5
    An optional dependency is missing (``plot`` without matplotlib); the message names
    the extra to install.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from geno_lewm._events import non_finite_label
from geno_lewm._version import __version__
from geno_lewm.errors import BackendUnavailableError, InputError

__all__ = [
    "EXIT_DAMAGED",
    "EXIT_MISSING_EXTRA",
    "EXIT_OK",
    "EXIT_UNREADABLE",
    "EXIT_USAGE",
    "build_parser",
    "format_report",
    "main",
    "report_json",
]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_UNREADABLE = 3
EXIT_DAMAGED = 4
EXIT_MISSING_EXTRA = 5

if TYPE_CHECKING:
    from geno_lewm.logs import LineProblem, LoadedLog, MetricSummary, Point, RunSummary


# ------------------------------------------------------------------- reading
@dataclass(frozen=True, slots=True)
class _Inputs:
    """The logs named on the command line: those read, and why the others could not be."""

    logs: tuple[LoadedLog, ...]
    failures: dict[str, str]

    def status(self, log: LoadedLog) -> str:
        if log.problems and not log.records:
            return "unreadable"
        if log.problems:
            return "damaged"
        return "ok" if log.records else "empty"

    @property
    def exit_code(self) -> int:
        statuses = [self.status(log) for log in self.logs]
        if self.failures or "unreadable" in statuses:
            return EXIT_UNREADABLE
        return EXIT_DAMAGED if "damaged" in statuses else EXIT_OK


def _load(paths: Sequence[str]) -> _Inputs:
    from geno_lewm.logs import load_log

    logs, failures = [], {}
    for path in paths:
        try:
            logs.append(load_log(path))
        except InputError as error:
            failures[path] = str(error)
    return _Inputs(tuple(logs), failures)


def _select(inputs: _Inputs, run_id: str | None) -> list[RunSummary]:
    from geno_lewm.logs import summarize

    runs = summarize(inputs.logs)
    return [run for run in runs if run_id is None or run.run_id == run_id]


# -------------------------------------------------------------------- format
def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}" if math.isfinite(value) else non_finite_label(value)


def _point(point: Point | None) -> str:
    if point is None:
        return "-"
    return _number(point.value) + ("" if point.step is None else f" @{point.step}")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = []
    for row in (header, *rows):
        cells = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def _format_run(run: RunSummary) -> list[str]:
    lines = [f"run {run.run_id}"]
    for path in run.paths:
        lines.append(f"  log:      {path}")
    processes = f"{len(run.pids)} process" + ("es" if len(run.pids) != 1 else "")
    lines.append(f"  records:  {run.records} from {', '.join(run.components)} ({processes})")
    start, end = run.first_timestamp, run.last_timestamp
    lines.append(f"  time:     {start:%Y-%m-%d %H:%M:%S} .. {end:%Y-%m-%d %H:%M:%S} UTC")
    if run.first_step is not None:
        lines.append(f"  steps:    {run.first_step} .. {run.last_step}")
    if run.status is None:
        lines.append("  status:   no run.end record (still running, or stopped without one)")
    else:
        took = "" if run.duration_seconds is None else f" after {run.duration_seconds:.3g} s"
        lines.append(f"  status:   {run.status}{took}")
    lines.append("")
    if run.metrics:
        rows = [_metric_row(m) for m in run.metrics.values()]
        header = ("metric", "unit", "n", "first", "last", "min", "max")
        lines += _table(header, rows, right={2})
    else:
        lines.append("  no metric records")
    lines.append("")
    if run.alerts:
        first = next((a.step for a in run.alerts if a.step is not None), None)
        at = "" if first is None else f", first at step {first}"
        lines.append(f"  alerts: {len(run.alerts)}{at}")
        rows = [
            (
                "-" if a.step is None else str(a.step),
                a.criterion,
                _number(a.value),
                _number(a.threshold),
                a.diagnosis or "",
            )
            for a in run.alerts
        ]
        lines += _table(("step", "criterion", "value", "threshold", "diagnosis"), rows, right={0, 2, 3})
    else:
        lines.append("  alerts: none")
    return lines


def _metric_row(metric: MetricSummary) -> tuple[str, ...]:
    count = str(metric.count) + (f" ({metric.non_finite} non-finite)" if metric.non_finite else "")
    return (
        metric.name,
        metric.unit,
        count,
        _point(metric.first),
        _point(metric.last),
        _point(metric.min),
        _point(metric.max),
    )


def _format_problems(inputs: _Inputs) -> list[str]:
    lines = []
    for path, reason in inputs.failures.items():
        lines.append(f"log {path}: cannot be read: {reason}")
    for log in inputs.logs:
        status = inputs.status(log)
        if not log.problems:
            detail = "no records" if status == "empty" else "every line readable"
            lines.append(f"log {log.path}: {len(log.records)} records, {detail}")
            continue
        count = len(log.problems)
        lines.append(f"log {log.path}: {len(log.records)} records, {count} unreadable line{'s' * (count != 1)}")
        lines += [f"  line {p.line}: {p.message}" for p in log.problems]
    return lines


def format_report(
    logs: Sequence[LoadedLog], *, failures: dict[str, str] | None = None, run_id: str | None = None
) -> str:
    """The human-readable report of ``logs``: each run, then the state of each file.

    ``failures`` maps the paths that could not be opened to the reason; ``run_id``
    restricts the runs shown.
    """
    inputs = _Inputs(tuple(logs), dict(failures or {}))
    lines: list[str] = []
    runs = _select(inputs, run_id)
    for run in runs:
        lines += _format_run(run)
        lines.append("")
    if not runs:
        lines += [f"no records of run {run_id!r}" if run_id else "no records", ""]
    lines += _format_problems(inputs)
    return "\n".join(lines) + "\n"


def _strict(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with non-finite floats as ``None`` and named in ``non_finite``, as in the logs."""
    out: dict[str, Any] = {}
    non_finite: dict[str, str] = {}
    for key, value in fields.items():
        finite = not isinstance(value, float) or math.isfinite(value)
        out[key] = value if finite else None
        if not finite:
            non_finite[key] = non_finite_label(value)
    if non_finite:
        out["non_finite"] = non_finite
    return out


def _json_point(point: Point | None) -> dict[str, Any] | None:
    return None if point is None else _strict({"step": point.step, "value": point.value})


def _problem_json(problem: LineProblem) -> dict[str, Any]:
    return {"line": problem.line, "kind": problem.kind, "message": problem.message}


def report_json(
    logs: Sequence[LoadedLog], *, failures: dict[str, str] | None = None, run_id: str | None = None
) -> dict[str, Any]:
    """The report as a JSON-ready dict (strict JSON: non-finite numbers are ``null`` with
    ``non_finite`` beside them, as in the logs).
    """
    inputs = _Inputs(tuple(logs), dict(failures or {}))
    files: list[dict[str, Any]] = [
        {"path": path, "status": "unreadable", "records": 0, "error": reason, "problems": []}
        for path, reason in inputs.failures.items()
    ]
    files += [
        {
            "path": log.path,
            "status": inputs.status(log),
            "records": len(log.records),
            "error": None,
            "problems": [_problem_json(p) for p in log.problems],
        }
        for log in inputs.logs
    ]
    runs = [
        _strict(
            {
                "run_id": run.run_id,
                "paths": list(run.paths),
                "records": run.records,
                "components": list(run.components),
                "pids": list(run.pids),
                "first_timestamp": run.first_timestamp.isoformat(),
                "last_timestamp": run.last_timestamp.isoformat(),
                "first_step": run.first_step,
                "last_step": run.last_step,
                "status": run.status,
                "duration_seconds": run.duration_seconds,
                "metrics": {
                    m.name: {
                        "unit": m.unit,
                        "count": m.count,
                        "non_finite_count": m.non_finite,
                        "first": _json_point(m.first),
                        "last": _json_point(m.last),
                        "min": _json_point(m.min),
                        "max": _json_point(m.max),
                    }
                    for m in run.metrics.values()
                },
                "alerts": [
                    _strict(
                        {
                            "step": a.step,
                            "event": a.event,
                            "criterion": a.criterion,
                            "value": a.value,
                            "threshold": a.threshold,
                            "diagnosis": a.diagnosis,
                            "timestamp": a.timestamp.isoformat(),
                        }
                    )
                    for a in run.alerts
                ],
            }
        )
        for run in _select(inputs, run_id)
    ]
    return {"exit_code": inputs.exit_code, "logs": files, "runs": runs}


# ------------------------------------------------------------------ commands
def _report(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    inputs = _load(args.logs)
    if args.json:
        payload = report_json(inputs.logs, failures=inputs.failures, run_id=args.run)
        out.write(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    else:
        out.write(format_report(inputs.logs, failures=inputs.failures, run_id=args.run))
    for path, reason in inputs.failures.items():
        err.write(f"geno-lewm report: {path}: {reason}\n")
    return inputs.exit_code


def _plot(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from geno_lewm._plot import plot_records

    inputs = _load([args.log])
    if inputs.failures or inputs.exit_code == EXIT_UNREADABLE:
        for line in _format_problems(inputs):
            err.write(f"geno-lewm plot: {line}\n")
        return EXIT_UNREADABLE
    log = inputs.logs[0]
    try:
        written = plot_records(log.records, args.out, run_id=args.run)
    except ImportError as error:
        err.write(f"geno-lewm plot: {error}\n")
        return EXIT_MISSING_EXTRA
    except InputError as error:
        err.write(f"geno-lewm plot: {error}\n")
        return EXIT_UNREADABLE
    for problem in log.problems:
        err.write(f"geno-lewm plot: {problem}\n")
    out.write(f"wrote {written}\n")
    return inputs.exit_code


def _schema(_args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    from geno_lewm.logs import record_json_schema

    out.write(json.dumps(record_json_schema(), indent=2) + "\n")
    return EXIT_OK


def _config_schema(_args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    from geno_lewm.config import config_json_schema

    out.write(json.dumps(config_json_schema(), indent=2) + "\n")
    return EXIT_OK


def _demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from geno_lewm.demo import run_demo

    try:
        run_demo(args.out, steps=args.steps, every=args.every, backend=args.backend, seed=args.seed, stream=out)
    except BackendUnavailableError as error:
        err.write(f"geno-lewm demo: {error}\n")
        return EXIT_MISSING_EXTRA
    except InputError as error:
        err.write(f"geno-lewm demo: {error}\n")
        return EXIT_USAGE
    return EXIT_OK


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer: got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer: got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``geno-lewm`` (its ``--help`` lists the exit codes)."""
    parser = argparse.ArgumentParser(
        prog="geno-lewm",
        description="Read, summarise and plot geno_lewm run logs; run the collapse-monitoring demo.",
        epilog=(
            "exit codes: 0 success; 2 usage error; 3 a log cannot be read at all (or nothing to plot); "
            "4 some lines of a log are torn or corrupt (listed; the rest is used); 5 an optional extra is missing"
        ),
    )
    parser.add_argument("--version", action="version", version=f"geno-lewm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    report = commands.add_parser("report", help="summarise runs: metrics, alerts and unreadable lines")
    report.add_argument("logs", nargs="+", metavar="LOG", help="a .jsonl run log")
    report.add_argument("--run", metavar="RUN_ID", help="only this run")
    report.add_argument("--json", action="store_true", help="machine-readable JSON instead of text")
    report.set_defaults(handler=_report)

    plot = commands.add_parser("plot", help="one panel per metric over steps (needs geno-lewm[plot])")
    plot.add_argument("log", metavar="LOG", help="a .jsonl run log")
    plot.add_argument("--out", required=True, metavar="FILE.png", help="where to write the PNG")
    plot.add_argument("--run", metavar="RUN_ID", help="only this run")
    plot.set_defaults(handler=_plot)

    schema = commands.add_parser("schema", help="print the JSON Schema of a log record")
    schema.set_defaults(handler=_schema)

    config_schema = commands.add_parser("config-schema", help="print the JSON Schema of a monitoring configuration")
    config_schema.set_defaults(handler=_config_schema)

    demo = commands.add_parser("demo", help="a simulated training run whose predictions collapse part-way")
    demo.add_argument("--out", default="demo-output", metavar="DIR", help="output directory (default: demo-output)")
    demo.add_argument("--steps", type=_positive, default=3000, help="training steps to simulate (default: 3000)")
    demo.add_argument("--every", type=_positive, default=100, help="steps between collapse checks (default: 100)")
    demo.add_argument(
        "--backend",
        choices=("auto", "python", "numpy", "torch"),
        default="auto",
        help="compute backend (default: auto, torch or NumPy when installed)",
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed of the simulation (default: 0)")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args, sys.stdout, sys.stderr)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (e.g. ``| head``): stop quietly, as other command-line tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    return code
