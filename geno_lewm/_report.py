"""The report of one or more run logs, as text for people and as strict JSON for programs.

What ``geno-lewm report`` prints (and the demo shows at its end): for each run, every
metric's first, last, min and max with their steps, every alert, every recorded error
(the ``error`` events of the GenoLeWM family's logs), and then the state of each file
(records read, lines that could not be). This package's lines and the family's read
into the same records, so the report is the same whichever package wrote them. It also decides what the command
line needs around the report: which files a directory argument stands for, which runs
raised alerts (for ``--fail-on-alert``), and the exit code. Reading layer: it works on
what :mod:`geno_lewm.logs` reads and knows no metric family.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geno_lewm._events import non_finite_label
from geno_lewm.errors import InputError

__all__ = [
    "EXIT_ALERT",
    "EXIT_DAMAGED",
    "EXIT_MISSING_EXTRA",
    "EXIT_OK",
    "EXIT_UNREADABLE",
    "EXIT_USAGE",
    "ReportInputs",
    "format_problems",
    "format_report",
    "load_inputs",
    "printable",
    "report_json",
    "runs_phrase",
]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_UNREADABLE = 3
EXIT_DAMAGED = 4
EXIT_MISSING_EXTRA = 5
EXIT_ALERT = 6

if TYPE_CHECKING:
    from geno_lewm.logs import LineProblem, LoadedLog, LoggedError, LogRecord, MetricSummary, Point, RunSummary


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""Characters a terminal acts on rather than shows: C0/C1 controls (escape sequences, line breaks,
tabs), Unicode line separators and bidirectional overrides."""


def printable(text: str) -> str:
    r"""``text`` with every character a terminal would act on written as an escape (``\x1b``,
    ``\n``, ``\u202e``): strings read from a log cannot recolour or clear the terminal, or
    fake a line of the report.
    """
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


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

    def not_text(self, log: LoadedLog) -> LineProblem | None:
        """The first line showing that ``log`` is not a text log at all, else ``None``.

        A file none of whose lines is a record, and some of whose lines are not text (not
        UTF-8, or NUL bytes), is a binary file named by mistake rather than a log damaged
        line by line: it is reported as such, and its lines are not listed one by one.
        """
        if log.records:
            return None
        return next((p for p in log.problems if p.kind == "encoding"), None)

    def unreadable_reason(self, log: LoadedLog) -> str | None:
        """Why ``log`` gave no record at all (``None`` when it gave some, or was empty)."""
        if log.records or not log.problems:
            return None
        binary = self.not_text(log)
        if binary is not None:
            return f"not a text log: no line of it is a record, and line {binary.line} is {binary.message}"
        count = len(log.problems)
        return f"no line of it is a record ({count} unreadable line{'s' * (count != 1)})"

    def unreadable(self) -> dict[str, str]:
        """Path -> reason, for every log named that gave no record: those that could not be
        opened, directories without logs, and logs none of whose lines is a record.
        """
        reasons = dict(self.failures)
        for log in self.logs:
            reason = self.unreadable_reason(log)
            if reason is not None:
                reasons[log.path] = reason
        return reasons

    @property
    def run_ids(self) -> list[str]:
        """Every run found in the logs, in order of first appearance."""
        return list(dict.fromkeys(record.run_id for log in self.logs for record in log.records))

    def alerted_runs(self, run_id: str | None = None) -> list[str]:
        """The runs (only ``run_id`` when given) that raised at least one alert, in order of
        first appearance.

        An alert counts once it was raised, whether or not it was cleared later: any
        ``*.alert`` record (an alert in force at a check) or ``training.alert.raised``
        record (an alert policy's alert beginning). A collapse that happened and went
        away is still what a CI job watching the run should see.
        """
        alerted = {
            record.run_id
            for log in self.logs
            for record in log.records
            if (run_id is None or record.run_id == run_id) and _is_alert(record)
        }
        return [run for run in self.run_ids if run in alerted]

    def exit_code_for(self, *, run_id: str | None = None, fail_on_alert: bool = False) -> int:
        """The command line's exit code for these logs (see :mod:`geno_lewm.cli`).

        The worst applies, in this order: :data:`EXIT_UNREADABLE` (a log named gave no
        record, or ``run_id`` names no run of the logs: the report is incomplete or
        empty), :data:`EXIT_ALERT` (with ``fail_on_alert``, a reported run raised an
        alert; before damaged lines, since a killed run's log often ends in a torn one),
        :data:`EXIT_DAMAGED`, :data:`EXIT_OK`.
        """
        statuses = [self.status(log) for log in self.logs]
        if self.failures or "unreadable" in statuses or (run_id is not None and run_id not in self.run_ids):
            return EXIT_UNREADABLE
        if fail_on_alert and self.alerted_runs(run_id):
            return EXIT_ALERT
        return EXIT_DAMAGED if "damaged" in statuses else EXIT_OK

    @property
    def exit_code(self) -> int:
        """The command line's exit code for these logs, every run reported and alerts not failing it."""
        return self.exit_code_for()


def _is_alert(record: LogRecord) -> bool:
    """Whether ``record`` says an alert was raised: any ``*.alert`` event, or an alert policy's raise."""
    from geno_lewm.logs import AlertRaisedRecord, alerts

    return isinstance(record, AlertRaisedRecord) or bool(alerts([record]))


def _expand(paths: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The files ``paths`` name, directories replaced by the ``*.jsonl`` files directly in
    them (sorted), each file once; and the directories that hold none, with the reason.
    """
    files: list[str] = []
    empty: dict[str, str] = {}
    seen: set[str] = set()
    for path in paths:
        if os.path.isdir(path):
            found = sorted(entry for entry in Path(path).glob("*.jsonl") if not entry.is_dir())
            if not found:
                empty[path] = "a directory with no *.jsonl log in it (its subdirectories are not searched)"
            named = [str(entry) for entry in found]
        else:
            named = [path]
        for name in named:
            # The same file reached twice (through its directory and by name) would count its records twice.
            key = os.path.realpath(name)
            if key not in seen:
                seen.add(key)
                files.append(name)
    return files, empty


def load_inputs(paths: Sequence[str]) -> ReportInputs:
    """Read every log in ``paths`` (a directory stands for the ``*.jsonl`` files directly in
    it, in sorted order); a log that cannot be opened, or a directory without logs, is kept
    as a failure with its reason.
    """
    from geno_lewm.logs import load_log

    files, failures = _expand(paths)
    logs = []
    for path in files:
        try:
            logs.append(load_log(path))
        except InputError as error:
            failures[path] = str(error)
    return ReportInputs(tuple(logs), failures)


def runs_phrase(run_ids: Sequence[str]) -> str:
    """``the logs hold runs a, b`` (or ``no run``), for a message about a run that is not there."""
    if not run_ids:
        return "the logs hold no run"
    return f"the logs hold run{'s' * (len(run_ids) != 1)} {', '.join(run_ids)}"


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
    # The family's lines name no process: say how many processes only when some line did.
    processes = f" ({len(run.pids)} process" + ("es" if len(run.pids) != 1 else "") + ")" if run.pids else ""
    lines.append(f"  records:  {run.records} from {', '.join(run.components)}{processes}")
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
    if run.errors:
        # Only a run that recorded errors gets this section: other reports read as they always did.
        lines.append("")
        lines += _format_errors(run.errors)
    return lines


def _format_errors(found: Sequence[LoggedError]) -> list[str]:
    """The errors section of a run: how many, then one row each (step, code, message, remediation)."""
    lines = [f"  errors: {len(found)}"]
    rows = [
        ("-" if e.step is None else str(e.step), e.code or "-", e.message or "", e.remediation or "") for e in found
    ]
    return lines + _table(("step", "code", "message", "remediation"), rows, right={0})


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
        if inputs.not_text(log) is not None:
            lines.append(f"log {log.path}: cannot be read: {inputs.unreadable_reason(log)}")
            continue
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
        lines += [f"no records of run {run_id!r}; {runs_phrase(inputs.run_ids)}" if run_id else "no records", ""]
    lines += format_problems(inputs)
    # One entry per line: a line break inside one came from the log, and is escaped with the rest.
    return "\n".join(printable(line) for line in lines) + "\n"


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
    logs: Sequence[LoadedLog],
    *,
    failures: dict[str, str] | None = None,
    run_id: str | None = None,
    fail_on_alert: bool = False,
) -> dict[str, Any]:
    """The report as a JSON-ready dict (strict JSON: non-finite numbers are ``null`` with
    ``non_finite`` beside them, as in the logs).

    Besides ``logs`` and ``runs`` (only ``run_id`` when given), ``run_ids`` lists every run
    of the logs, ``alerted_runs`` the reported runs that raised an alert, and
    ``exit_code`` is the command line's (``fail_on_alert`` as ``--fail-on-alert``).
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
            "error": inputs.unreadable_reason(log),
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
                "errors": [
                    {
                        "step": e.step,
                        "component": e.component,
                        "code": e.code,
                        "message": e.message,
                        "remediation": e.remediation,
                        "timestamp": e.timestamp.isoformat(),
                    }
                    for e in run.errors
                ],
            }
        )
        for run in _select(inputs, run_id)
    ]
    return {
        "exit_code": inputs.exit_code_for(run_id=run_id, fail_on_alert=fail_on_alert),
        "logs": files,
        "run_ids": inputs.run_ids,
        "alerted_runs": inputs.alerted_runs(run_id),
        "runs": runs,
    }
