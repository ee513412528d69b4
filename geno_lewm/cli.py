"""The ``geno-lewm`` command line (also ``python -m geno_lewm``).

Commands
--------
``report LOG... [--run RUN_ID] [--json] [--fail-on-alert]``
    A summary of each run: every metric's first, last, min and max with their steps,
    every alert, every recorded error, and every line that could not be read.
    ``--fail-on-alert`` makes an alert in a reported run fail the command (exit 6), for
    CI jobs.
``plot LOG... --out FILE.png [--run RUN_ID]``
    One panel per metric over steps, every run of every log in the same figure,
    thresholds drawn, alerts marked (needs the ``plot`` extra: matplotlib).
``schema``
    The JSON Schema of one log record (this package's format).
``config-schema``
    The JSON Schema of a monitoring configuration (:mod:`geno_lewm.config`).
``demo [--out DIR]``
    A simulated training run whose predictions collapse part-way, watched by the monitor.

A ``LOG`` may be written by this package or by the GenoLeWM family's (``ts``/``severity``/
``data`` lines), or hold lines of both: ``report`` and ``plot`` read them alike (RFC-0006).
A ``LOG`` may be a directory: it stands for every ``*.jsonl`` file directly in it, in
sorted order (subdirectories are not searched); a directory without one counts as a log
that cannot be read. A file named twice is read once.

Exit codes
----------
0
    Success: every log was read in full.
2
    Usage error (unknown command or option, as argparse reports), or ``plot --out`` that
    names no ``.png`` file that can be written (a directory, another suffix).
3
    A log could not be read at all: missing, unreadable, not a text log, a directory
    without logs, or no line of it is a record; or there is nothing to report or plot
    (``--run`` names no run of the logs, whose runs the message lists).
4
    Every log was read but some lines could not be (torn or corrupt); they are listed,
    and the rest is reported or plotted.
5
    An optional dependency is missing (``plot`` without matplotlib); the message names
    the extra to install.
6
    ``report --fail-on-alert`` only: a reported run raised an alert (cleared later or
    not). Everything was reported as usual.

With several of these, the first in the order 3, 6, 4 applies (an alert outranks damaged
lines: a killed run's log often ends in a torn line, and must not hide its collapse).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from geno_lewm._report import (
    EXIT_ALERT,
    EXIT_DAMAGED,
    EXIT_MISSING_EXTRA,
    EXIT_OK,
    EXIT_UNREADABLE,
    EXIT_USAGE,
    format_problems,
    format_report,
    load_inputs,
    printable,
    report_json,
    runs_phrase,
)
from geno_lewm._version import __version__
from geno_lewm.errors import BackendUnavailableError, InputError

__all__ = [
    "EXIT_ALERT",
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


# ------------------------------------------------------------------ commands
def _say(err: TextIO, message: str) -> None:
    """Write one line of ``message`` to ``err``, with what a terminal would act on escaped
    (run ids, paths and line contents come from the logs).
    """
    err.write(printable(message) + "\n")


def _report(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    inputs = load_inputs(args.logs)
    if args.json:
        payload = report_json(inputs.logs, failures=inputs.failures, run_id=args.run, fail_on_alert=args.fail_on_alert)
        out.write(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    else:
        out.write(format_report(inputs.logs, failures=inputs.failures, run_id=args.run))
    # Standard error says why the exit code is not 0, whatever standard output holds.
    for path, reason in inputs.unreadable().items():
        _say(err, f"geno-lewm report: {path}: {reason}")
    if args.run is not None and args.run not in inputs.run_ids:
        _say(err, f"geno-lewm report: no records of run {args.run!r}; {runs_phrase(inputs.run_ids)}")
    alerted = inputs.alerted_runs(args.run) if args.fail_on_alert else []
    if alerted:
        _say(
            err,
            f"geno-lewm report: --fail-on-alert: {len(alerted)} run{'s' * (len(alerted) != 1)} "
            f"raised alerts: {', '.join(alerted)}",
        )
    return inputs.exit_code_for(run_id=args.run, fail_on_alert=args.fail_on_alert)


def _plot(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from geno_lewm._plot import check_png_path, plot_records

    try:
        check_png_path(args.out)
    except InputError as error:
        _say(err, f"geno-lewm plot: --out: {error}")
        return EXIT_USAGE
    inputs = load_inputs(args.logs)
    records = [record for log in inputs.logs for record in log.records]
    if not records:
        for line in format_problems(inputs):
            _say(err, f"geno-lewm plot: {line}")
        return EXIT_UNREADABLE
    if args.run is not None and args.run not in inputs.run_ids:
        _say(err, f"geno-lewm plot: nothing to plot: no records of run {args.run!r}; {runs_phrase(inputs.run_ids)}")
        return EXIT_UNREADABLE
    try:
        written = plot_records(records, args.out, run_id=args.run)
    except ImportError as error:
        _say(err, f"geno-lewm plot: {error}")
        return EXIT_MISSING_EXTRA
    except InputError as error:
        _say(err, f"geno-lewm plot: {error}")
        return EXIT_USAGE if error.details.get("field") == "out" else EXIT_UNREADABLE
    # What could be read is drawn; what could not is listed, and the exit code says so.
    unreadable = inputs.unreadable()
    for path, reason in unreadable.items():
        _say(err, f"geno-lewm plot: {path}: {reason}")
    for log in inputs.logs:
        if log.path not in unreadable:
            for problem in log.problems:
                _say(err, f"geno-lewm plot: {problem}")
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
        _say(err, f"geno-lewm demo: {error}")
        return EXIT_MISSING_EXTRA
    except InputError as error:
        _say(err, f"geno-lewm demo: {error}")
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


_LOG_HELP = "a .jsonl run log, or a directory: every *.jsonl file directly in it"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``geno-lewm`` (its ``--help`` lists the exit codes)."""
    parser = argparse.ArgumentParser(
        prog="geno-lewm",
        description="Read, summarise and plot geno_lewm run logs; run the collapse-monitoring demo.",
        epilog=(
            "exit codes: 0 success; 2 usage error; 3 a log cannot be read at all, or nothing to report or plot "
            "(e.g. --run names no run of the logs); 4 some lines of a log are torn or corrupt (listed; the rest "
            "is used); 5 an optional extra is missing; 6 report --fail-on-alert: a reported run raised an alert. "
            "The first of 3, 6, 4 that applies wins."
        ),
    )
    parser.add_argument("--version", action="version", version=f"geno-lewm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    report = commands.add_parser("report", help="summarise runs: metrics, alerts and unreadable lines")
    report.add_argument("logs", nargs="+", metavar="LOG", help=_LOG_HELP)
    report.add_argument("--run", metavar="RUN_ID", help="only this run (exit 3 when the logs hold no such run)")
    report.add_argument("--json", action="store_true", help="machine-readable JSON instead of text")
    report.add_argument(
        "--fail-on-alert",
        action="store_true",
        help="exit 6 when a reported run raised an alert, even one cleared later (for CI jobs)",
    )
    report.set_defaults(handler=_report)

    plot = commands.add_parser(
        "plot", help="one panel per metric over steps, every run in one figure (needs geno-lewm[plot])"
    )
    plot.add_argument("logs", nargs="+", metavar="LOG", help=_LOG_HELP)
    plot.add_argument("--out", required=True, metavar="FILE.png", help="where to write the PNG")
    plot.add_argument("--run", metavar="RUN_ID", help="only this run (exit 3 when the logs hold no such run)")
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
