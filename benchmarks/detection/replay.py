"""Replaying a recorded run through a collapse monitor, and scoring what it said against
what the verification found.

A replay feeds the run's checks, in order, to a fresh :class:`CollapseMonitor` scheduled
at the run's check interval, the first at step 0 with ``force=True`` (the documented
practice: a check before the first update), without warm-up or patience. Scores:

* a healthy run — how many checks alerted (every one is a false alarm);
* a collapsing run — the delay, in checks, from the verified onset to the first alerted
  check (negative when the monitor saw it first; ``None`` when it never did), and how
  many alerted checks named the right kind of collapse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from detection.records import RunRecord
from geno_lewm.training.collapse import CalibratedThresholds, CollapseMonitor

Mode = Literal["rfc", "calibrated"]
MODES: tuple[Mode, ...] = ("rfc", "calibrated")


@dataclass
class Replay:
    """What one monitor said about one run, check by check."""

    mode: Mode
    alerted: list[bool] = field(default_factory=list)
    criteria: list[list[str]] = field(default_factory=list)
    diagnoses: list[str | None] = field(default_factory=list)


def replay(record: RunRecord, mode: Mode, calibration: CalibratedThresholds | None = None) -> Replay:
    """Feed ``record``'s checks to a fresh monitor of ``mode`` (with ``calibration`` for the
    calibrated criteria, their defaults when ``None``) and keep what it said.
    """
    every = record.checks[1].step - record.checks[0].step
    thresholds = calibration if mode == "calibrated" else None
    monitor = CollapseMonitor(
        log_every_steps=every, thresholds=thresholds, spectrum=True, criteria=mode, backend="torch"
    )
    said = Replay(mode)
    for check in record.checks:
        result = monitor.observe(
            check.prediction, check.target, kl_reg=check.kl_reg, step=check.step, force=check.step == 0
        )
        assert result is not None, f"{record.name}: step {check.step} was not checked"
        said.alerted.append(bool(result.alerts))
        said.criteria.append([alert.criterion for alert in result.alerts])
        said.diagnoses.append(None if result.diagnosis is None else result.diagnosis.kind)
    return said


@dataclass(frozen=True)
class Score:
    """One run's score under one mode (see the module documentation)."""

    alerted_checks: int
    checks: int
    delay: int | None
    diagnosed: int
    diagnosed_right: int

    def as_dict(self) -> dict[str, Any]:
        """The score as JSON-ready data."""
        return {
            "alerted_checks": self.alerted_checks,
            "checks": self.checks,
            "delay": self.delay,
            "diagnosed": self.diagnosed,
            "diagnosed_right": self.diagnosed_right,
        }


def score(record: RunRecord, said: Replay) -> Score:
    """Score what a monitor said about ``record``."""
    alerted = [index for index, flag in enumerate(said.alerted) if flag]
    delay = None
    right = diagnosed = 0
    if record.truth != "healthy" and record.onset is not None:
        delay = alerted[0] - record.onset if alerted else None
        diagnosed = len(alerted)
        right = sum(said.diagnoses[index] == record.truth for index in alerted)
    return Score(len(alerted), len(said.alerted), delay, diagnosed, right)
