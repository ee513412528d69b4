"""The report of one or more run logs, as text for people and as strict JSON for programs.

What ``geno-lewm report`` prints (and the demo shows at its end): for each run, every
metric's first, last, min and max with their steps, every alert, and then the state of
each file (records read, lines that could not be). Reading layer: it works on what
:mod:`geno_lewm.logs` reads and knows no metric family.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geno_lewm._events import non_finite_label
from geno_lewm.errors import InputError

__all__ = [
    "EXIT_DAMAGED",
    "EXIT_MISSING_EXTRA",
    "EXIT_OK",
    "EXIT_UNREADABLE",
    "EXIT_USAGE",
    "ReportInputs",
    "format_problems",
    "format_report",
    "load_inputs",
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
class ReportInputs:
    """The logs named on the command line: those read, and why the others could not be."""

    logs: tuple[LoadedLog, ...]
    failures: dict[str, str]

    def status(self, log: LoadedLog) -> str:
        """``ok``, ``empty``, ``damaged`` (some lines unreadable) or ``unreadable`` (no record read)."""
        if log.problems and not log.records:
            return "unreadable"
        if log.problems:
            return "damaged"
        return "ok" if log.records else "empty"

    @property
    def exit_code(self) -> int:
        """The command line's exit code for these logs (see :mod:`geno_lewm.cli`)."""
        statuses = [self.status(log) for log in self.logs]
        if self.failures or "unreadable" in statuses:
            return EXIT_UNREADABLE
        return EXIT_DAMAGED if "damaged" in statuses else EXIT_OK


def load_inputs(paths: Sequence[str]) -> ReportInputs:
    """Read every log in ``paths``; a log that cannot be opened is kept as a failure with its reason."""
    from geno_lewm.logs import load_log

    logs, failures = [], {}
    for path in paths:
        try:
            logs.append(load_log(path))
        except InputError as error:
            failures[path] = str(error)
    return ReportInputs(tuple(logs), failures)


def _select(inputs: ReportInputs, run_id: str | None) -> list[RunSummary]:
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


def format_problems(inputs: ReportInputs) -> list[str]:
    """One line per log named: its records and unreadable lines, or why it cannot be read."""
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
    inputs = ReportInputs(tuple(logs), dict(failures or {}))
    lines: list[str] = []
    runs = _select(inputs, run_id)
    for run in runs:
        lines += _format_run(run)
        lines.append("")
    if not runs:
        lines += [f"no records of run {run_id!r}" if run_id else "no records", ""]
    lines += format_problems(inputs)
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
    inputs = ReportInputs(tuple(logs), dict(failures or {}))
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
