"""The schedule every monitor shares: check every ``log_every_steps`` steps.

A monitor's ``observe`` is called on every training step and must return at once on
the steps it does not check, so subclasses repeat the two-line test of
:meth:`ScheduledMonitor.should_log` inline rather than paying for a method call.
"""

from __future__ import annotations

from geno_lewm._validation import check_non_negative_int, check_positive_int
from geno_lewm.backends import check_backend_name
from geno_lewm.metrics import MetricRegistry

__all__ = ["ScheduledMonitor"]


class ScheduledMonitor:
    """Base of the monitors: the schedule's period, the backend and the registry.

    Parameters
    ----------
    log_every_steps:
        The schedule's period: steps ``> 0`` that are multiples of it are checked.
    backend:
        ``"auto"``, ``"python"``, ``"numpy"`` or ``"torch"``.
    registry:
        Where gauges go; the process default when ``None``.
    """

    __slots__ = ("_backend", "_every", "_registry")

    def __init__(self, log_every_steps: int, backend: str, registry: MetricRegistry | None) -> None:
        self._every = check_positive_int("log_every_steps", log_every_steps)
        self._backend = check_backend_name(backend)
        self._registry = registry

    @property
    def log_every_steps(self) -> int:
        """The schedule's period."""
        return self._every

    @property
    def backend(self) -> str:
        """The requested backend."""
        return self._backend

    def should_log(self, step: int) -> bool:
        """Whether ``step`` is scheduled: ``step > 0 and step % log_every_steps == 0``."""
        if type(step) is not int or step < 0:
            step = check_non_negative_int("step", step)
        return step > 0 and step % self._every == 0
