"""When a tripped criterion becomes an alert, when an alert ends, and what happens then.

A monitor evaluates its criteria at every check and hands the outcome to an
:class:`AlertTracker` as :class:`Reading` objects (criterion, value, bound, direction:
the library's one alert type, :class:`~geno_lewm.training._criteria.Alert`, under the
name that says what it is here).
The tracker applies an :class:`AlertPolicy`:

* **warm-up** — no alert at a check whose step is below ``warmup_steps``; tripped
  checks there do not count towards the patience either;
* **patience** — a criterion is *raised* once it has tripped at ``patience``
  consecutive checks;
* **hysteresis** — a raised criterion is *cleared* only once its value is back past the
  bound by a margin of ``hysteresis * |bound|`` (above the bound for a ``below``
  criterion, under it for an ``above`` one), so a metric hovering at its bound does
  not raise and clear at every check;
* **on_alert** — ``"log"`` records the alerts; ``"raise"`` also makes the monitor raise
  its :class:`~geno_lewm.errors.TrainingAlertError` (for the collapse monitor,
  :class:`~geno_lewm.errors.CollapseDetectedError`) once the check has been recorded.

Each state change is returned as an :class:`AlertChange` and can be written to a run log
as a ``training.alert.raised`` (warning) or ``training.alert.cleared`` (info) event with
:func:`log_alert_changes`; :func:`alert_episodes` reads them back as intervals, so a
reader sees when trouble began and when it ended.

``AlertPolicy()`` (every tripped check is an alert at once, a criterion clears as soon as
it no longer trips, nothing raises) reproduces the RFC-0005 behaviour; monitors built
without a policy do exactly that and emit no state-change events. Standard library only.

Example
-------
>>> tracker = AlertTracker(AlertPolicy(patience=2, hysteresis=0.1), source="example")
>>> low = [Reading("pred_var_per_dim", 0.2, 0.5, "below")]
>>> tracker.update(100, low).active, [c.kind for c in tracker.update(200, low).changes]
((), ['raised'])
>>> [c.kind for c in tracker.update(300, [Reading("pred_var_per_dim", 0.52, 0.5, "below")]).changes]
[]
>>> [c.kind for c in tracker.update(400, [Reading("pred_var_per_dim", 0.56, 0.5, "below")]).changes]
['cleared']
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from geno_lewm._events import FieldSpec, declare_event
from geno_lewm._protocols import MetricLogger, adapt_logger
from geno_lewm._validation import (
    as_finite_real,
    check_choice,
    check_instance,
    check_non_negative_int,
    check_positive_int,
    fail,
)
from geno_lewm.errors import InputError
from geno_lewm.training._criteria import Alert, Direction

__all__ = [
    "ALERT_CLEARED_EVENT",
    "ALERT_RAISED_EVENT",
    "AlertChange",
    "AlertDecision",
    "AlertEpisode",
    "AlertPolicy",
    "AlertTracker",
    "Direction",
    "OnAlert",
    "Reading",
    "alert_episodes",
    "check_policy",
    "log_alert_changes",
]

OnAlert = Literal["log", "raise"]
"""What a monitor does when a check has alerts in force."""
_ON_ALERT: tuple[OnAlert, ...] = ("log", "raise")

ALERT_RAISED_EVENT = "training.alert.raised"
"""Log event of a criterion becoming an alert (level warning)."""
ALERT_CLEARED_EVENT = "training.alert.cleared"
"""Log event of an alert ending (level info)."""

declare_event(
    ALERT_RAISED_EVENT,
    summary="An alert began: a criterion tripped at as many consecutive checks as the policy's patience.",
    fields={
        "source": FieldSpec("string", required=True, description="The monitor's metric family, e.g. its name prefix"),
        "criterion": FieldSpec("string", required=True, description="The criterion that became an alert"),
        "value": FieldSpec("number", required=True, description="The metric's value at this check"),
        "threshold": FieldSpec("number", required=True, description="The bound it crossed"),
        "direction": FieldSpec("string", required=True, choices=("below", "above"), description="Side that trips"),
        "since_step": FieldSpec("integer", description="Step of the first tripped check of the run of checks"),
        "consecutive": FieldSpec("integer", required=True, description="Consecutive tripped checks so far"),
    },
)
declare_event(
    ALERT_CLEARED_EVENT,
    summary="An alert ended: the metric came back past its bound by the policy's hysteresis margin.",
    fields={
        "source": FieldSpec("string", required=True, description="The monitor's metric family, e.g. its name prefix"),
        "criterion": FieldSpec("string", required=True, description="The criterion whose alert ended"),
        "value": FieldSpec("number", required=True, description="The metric's value at this check"),
        "threshold": FieldSpec("number", required=True, description="The criterion's bound at this check"),
        "direction": FieldSpec("string", required=True, choices=("below", "above"), description="Side that trips"),
        "clear_bound": FieldSpec("number", required=True, description="The value the metric had to get past"),
        "raised_step": FieldSpec("integer", description="Step at which the alert was raised"),
    },
)


# ------------------------------------------------------------------ policy
@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """How tripped criteria become alerts, when alerts end, and what an alert does.

    Attributes
    ----------
    on_alert:
        ``"log"`` (default): alerts are recorded and training goes on. ``"raise"``: a
        check with alerts in force also raises
        :class:`~geno_lewm.errors.CollapseDetectedError`, after it has been recorded.
    warmup_steps:
        No alert at checks whose step is below this (default 0: none). Early training
        is noisy by nature; tripped checks in the warm-up do not count towards patience.
    patience:
        Consecutive tripped checks needed to raise an alert (default 1: at once).
    hysteresis:
        Relative margin (>= 0, default 0) a raised alert's metric must get back past its
        bound before the alert clears: ``value >= bound + hysteresis * |bound|`` for a
        ``below`` criterion, ``value <= bound - hysteresis * |bound|`` for an ``above``
        one. With 0 an alert clears at the first check where it no longer trips.

    Example
    -------
    >>> AlertPolicy(on_alert="raise", warmup_steps=1000, patience=3, hysteresis=0.1).patience
    3
    """

    on_alert: OnAlert = "log"
    warmup_steps: int = 0
    patience: int = 1
    hysteresis: float = 0.0

    def __post_init__(self) -> None:
        check_choice("on_alert", self.on_alert, _ON_ALERT)
        object.__setattr__(self, "warmup_steps", check_non_negative_int("warmup_steps", self.warmup_steps))
        object.__setattr__(self, "patience", check_positive_int("patience", self.patience))
        hysteresis = as_finite_real("hysteresis", self.hysteresis)
        if hysteresis < 0.0:
            raise fail("hysteresis", ">= 0", self.hysteresis)
        object.__setattr__(self, "hysteresis", hysteresis)


def check_policy(policy: object, on_alert: object = None) -> AlertPolicy | None:
    """The policy a monitor gets from its ``policy`` and ``on_alert`` arguments.

    ``None`` for both means no policy (the RFC behaviour); ``on_alert`` alone is short for
    ``AlertPolicy(on_alert=on_alert)``. Raises :class:`InputError` for a ``policy`` that is
    not an :class:`AlertPolicy`, a bad ``on_alert``, or both given with different
    ``on_alert`` values.
    """
    chosen = None if policy is None else check_instance("policy", policy, AlertPolicy)
    if on_alert is None:
        return chosen
    action = check_choice("on_alert", on_alert, _ON_ALERT)
    if chosen is None:
        return AlertPolicy(on_alert=action)
    if chosen.on_alert != action:
        raise InputError(
            f"'on_alert' and 'policy' disagree: got {action!r} and a policy with on_alert={chosen.on_alert!r}",
            details={"field": "on_alert", "value": action},
        )
    return chosen


# ---------------------------------------------------------------- readings
@dataclass(frozen=True, slots=True)
class Reading(Alert):
    """One criterion evaluated at one check, built by hand: ``Reading(criterion, value,
    threshold, direction)`` — the library's one alert type
    (:class:`~geno_lewm.training._criteria.Alert`), with a finite threshold, as the
    policy's hysteresis margins need. Monitors hand the tracker their own alerts.
    """

    def __post_init__(self) -> None:
        as_finite_real("threshold", self.threshold)
        Alert.__post_init__(self)


@dataclass(frozen=True, slots=True)
class AlertChange:
    """A criterion's alert began (``kind="raised"``) or ended (``"cleared"``) at ``step``.

    ``reading`` is the criterion's reading at that check; ``since_step`` the first step of
    the run of tripped checks that raised it; ``consecutive`` the length of that run (0
    when cleared); ``raised_step`` when the alert began; ``clear_bound`` the value a
    cleared alert had to get back past (``None`` for a raised one).
    """

    kind: Literal["raised", "cleared"]
    reading: Alert
    step: int
    since_step: int | None = None
    consecutive: int = 0
    raised_step: int | None = None
    clear_bound: float | None = None


@dataclass(frozen=True, slots=True)
class AlertDecision:
    """What the policy made of one check.

    Attributes
    ----------
    active:
        Readings of the criteria whose alert is in force after this check, in reading
        order: the check's alerts.
    changes:
        Alerts raised or cleared at this check.
    suppressed:
        Readings that tripped but are not alerts (warm-up, or patience not yet reached).
    """

    active: tuple[Alert, ...] = ()
    changes: tuple[AlertChange, ...] = ()
    suppressed: tuple[Alert, ...] = ()

    @property
    def alerting(self) -> bool:
        """Whether any alert is in force."""
        return bool(self.active)


@dataclass(slots=True)
class _CriterionState:
    streak: int = 0
    since_step: int | None = None
    active: bool = False
    raised_step: int | None = None


class AlertTracker:
    """The alert state of one monitor's criteria under an :class:`AlertPolicy`.

    Call :meth:`update` once per check with a :class:`Reading` for every criterion that
    could be evaluated (tripped or not: clearing needs the values of healthy checks too).
    A criterion without a reading at a check (its bound is not known yet) keeps its
    alert state, and its run of tripped checks is broken.

    Parameters
    ----------
    policy:
        The policy; ``AlertPolicy()`` when omitted.
    source:
        Names the monitor in the state-change events (its metric prefix, e.g.
        ``geno_lewm.training.collapse``).
    """

    __slots__ = ("_policy", "_source", "_states")

    def __init__(self, policy: AlertPolicy | None = None, *, source: str) -> None:
        checked = check_policy(policy)
        self._policy = AlertPolicy() if checked is None else checked
        if not isinstance(source, str) or not source:
            raise fail("source", "a non-empty string", source)
        self._source = source
        self._states: dict[str, _CriterionState] = {}

    @property
    def policy(self) -> AlertPolicy:
        """The policy applied."""
        return self._policy

    @property
    def source(self) -> str:
        """The monitor named in the state-change events."""
        return self._source

    @property
    def active(self) -> dict[str, int | None]:
        """Criterion -> step at which its alert was raised, for every alert in force."""
        return {name: state.raised_step for name, state in self._states.items() if state.active}

    def update(self, step: int, readings: Sequence[Alert]) -> AlertDecision:
        """Apply the policy to the readings of the check at ``step``; return the decision.

        Raises :class:`InputError` (changing nothing) for a bad step, a reading that is
        not a :class:`Reading`, or two readings of one criterion.
        """
        if type(step) is not int or step < 0:
            step = check_non_negative_int("step", step)
        seen: set[str] = set()
        for reading in readings:
            if not isinstance(reading, Alert):
                raise InputError(
                    f"'readings' must hold Reading objects: got {type(reading).__name__}",
                    details={"field": "readings", "type": type(reading).__name__},
                )
            if reading.criterion in seen:
                raise InputError(
                    f"'readings' has criterion {reading.criterion!r} twice",
                    details={"field": "readings", "value": reading.criterion},
                )
            seen.add(reading.criterion)
        return self._apply(step, readings)

    def _apply(self, step: int, readings: Sequence[Alert]) -> AlertDecision:
        """:meth:`update` on readings a monitor built itself (a checked step, one reading
        per criterion): the policy without the argument checks.
        """
        policy = self._policy
        seen = {reading.criterion for reading in readings}
        for name, state in self._states.items():
            if name not in seen:
                state.streak = 0
                state.since_step = None
        if step < policy.warmup_steps:
            return AlertDecision(suppressed=tuple(r for r in readings if r.tripped))
        active: list[Alert] = []
        suppressed: list[Alert] = []
        changes: list[AlertChange] = []
        for reading in readings:
            state = self._states.setdefault(reading.criterion, _CriterionState())
            tripped = reading.tripped
            if tripped:
                state.streak += 1
                if state.since_step is None:
                    state.since_step = step
            else:
                state.streak = 0
                state.since_step = None
            if not state.active and state.streak >= policy.patience:
                state.active = True
                state.raised_step = step
                changes.append(AlertChange("raised", reading, step, state.since_step, state.streak, step))
            elif state.active and reading.recovered(policy.hysteresis):
                changes.append(
                    AlertChange(
                        "cleared",
                        reading,
                        step,
                        raised_step=state.raised_step,
                        clear_bound=reading.clear_bound(policy.hysteresis),
                    )
                )
                state.active = False
                state.raised_step = None
            if state.active:
                active.append(reading)
            elif tripped:
                suppressed.append(reading)
        return AlertDecision(tuple(active), tuple(changes), tuple(suppressed))

    def reset(self) -> None:
        """Forget every criterion's state (no events are emitted)."""
        self._states.clear()

    def state_dict(self) -> dict[str, Any]:
        """The tracker's state as JSON-ready data, for a checkpoint."""
        return {
            "criteria": {
                name: {
                    "streak": s.streak,
                    "since_step": s.since_step,
                    "active": s.active,
                    "raised_step": s.raised_step,
                }
                for name, s in self._states.items()
            }
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state written by :meth:`state_dict`; nothing changes if it is malformed."""
        criteria = state.get("criteria") if isinstance(state, Mapping) else None
        if not isinstance(criteria, Mapping):
            raise InputError("'state' must be a mapping with a 'criteria' mapping", details={"field": "state"})
        restored: dict[str, _CriterionState] = {}
        for name, entry in criteria.items():
            if not isinstance(name, str) or not isinstance(entry, Mapping):
                raise InputError(f"'state' has a malformed entry {name!r}", details={"field": "state", "value": name})
            active = entry.get("active", False)
            if not isinstance(active, bool):
                raise fail(f"state.criteria.{name}.active", "True or False", active)
            since, raised = entry.get("since_step"), entry.get("raised_step")
            restored[name] = _CriterionState(
                check_non_negative_int(f"state.criteria.{name}.streak", entry.get("streak", 0)),
                None if since is None else check_non_negative_int(f"state.criteria.{name}.since_step", since),
                active,
                None if raised is None else check_non_negative_int(f"state.criteria.{name}.raised_step", raised),
            )
        self._states = restored

    def __repr__(self) -> str:
        return f"AlertTracker(policy={self._policy!r}, source={self._source!r}, active={sorted(self.active)!r})"


# ----------------------------------------------------------------- logging
def log_alert_changes(changes: Iterable[AlertChange], logger: MetricLogger, *, source: str) -> None:
    """Write each change as a ``training.alert.raised`` (warning) or
    ``training.alert.cleared`` (info) event, at the change's step.

    These are this package's own events: the monitors send them only to a logger that
    asked for full records (:data:`~geno_lewm._protocols.FULL_RECORDS_MARKER`).
    """
    adapted = adapt_logger(logger)
    if adapted is None:
        return
    for change in changes:
        reading = change.reading
        common = {
            "source": source,
            "criterion": reading.criterion,
            "value": reading.value,
            "threshold": reading.threshold,
            "direction": reading.direction,
            "step": change.step,
        }
        if change.kind == "raised":
            adapted.warning(ALERT_RAISED_EVENT, since_step=change.since_step, consecutive=change.consecutive, **common)
        else:
            adapted.info(ALERT_CLEARED_EVENT, clear_bound=change.clear_bound, raised_step=change.raised_step, **common)


# ----------------------------------------------------------------- reading
@dataclass(frozen=True, slots=True)
class AlertEpisode:
    """One alert from the step it was raised to the step it cleared (``None``: still in
    force when the log ends).
    """

    source: str
    criterion: str
    raised_step: int | None
    cleared_step: int | None = None
    raised_value: float = math.nan
    threshold: float = math.nan


def _fields_of(record: Any) -> Mapping[str, Any]:
    if isinstance(record, Mapping):
        return record
    own = getattr(record, "fields", None)
    if isinstance(own, Mapping):
        return own
    dump = getattr(record, "model_dump", None)
    return dump() if callable(dump) else {}


def alert_episodes(records: Iterable[Any]) -> list[AlertEpisode]:
    """Pair the ``training.alert.raised`` and ``training.alert.cleared`` events of a log
    into episodes, in the order they began.

    ``records`` may be what :func:`geno_lewm.logs.read_log` yields or plain dicts (one
    parsed JSON line each); other events are ignored.

    Example
    -------
    >>> events = [
    ...     {"event": "training.alert.raised", "step": 500, "source": "s", "criterion": "kl_reg",
    ...      "value": 12.0, "threshold": 10.0},
    ...     {"event": "training.alert.cleared", "step": 1500, "source": "s", "criterion": "kl_reg"},
    ... ]
    >>> [(e.criterion, e.raised_step, e.cleared_step) for e in alert_episodes(events)]
    [('kl_reg', 500, 1500)]
    """
    episodes: list[AlertEpisode] = []
    open_at: dict[tuple[str, str], int] = {}
    for record in records:
        event = record.get("event") if isinstance(record, Mapping) else getattr(record, "event", None)
        if event not in (ALERT_RAISED_EVENT, ALERT_CLEARED_EVENT):
            continue
        data = _fields_of(record)
        step = record.get("step") if isinstance(record, Mapping) else getattr(record, "step", None)
        key = (str(data.get("source")), str(data.get("criterion")))
        if event == ALERT_RAISED_EVENT:
            value, threshold = data.get("value"), data.get("threshold")
            open_at[key] = len(episodes)
            episodes.append(
                AlertEpisode(
                    key[0],
                    key[1],
                    step,
                    raised_value=math.nan if value is None else float(value),
                    threshold=math.nan if threshold is None else float(threshold),
                )
            )
        elif key in open_at:
            index = open_at.pop(key)
            old = episodes[index]
            episodes[index] = AlertEpisode(
                old.source, old.criterion, old.raised_step, step, old.raised_value, old.threshold
            )
    return episodes
