"""Watching a torch module's outputs: a forward hook that feeds its logits to a
:class:`~geno_lewm.training.dynamics.PredictionMonitor`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from geno_lewm._protocols import MetricLogger
from geno_lewm._validation import check_callable, check_instance, fail
from geno_lewm.errors import InputError
from geno_lewm.training.dynamics._metrics import PredictionCheck
from geno_lewm.training.dynamics._monitor import PredictionMonitor

if TYPE_CHECKING:
    import torch

__all__ = ["LOGIT_KEYS", "PredictionWatcher", "extract_logits", "watch_predictions"]

LOGIT_KEYS: tuple[str, ...] = ("logits", "out", "preds")
"""Keys looked up, in this order, when a module returns a mapping."""


def extract_logits(output: Any, *, class_dim: int = 1) -> torch.Tensor | None:
    """The logits in a module's output, as a detached ``[rows, C]`` tensor, or ``None``.

    A mapping is unwrapped by the first of :data:`LOGIT_KEYS` it holds, a tuple or list
    by its first element. What remains is used only if it is a floating-point tensor of
    at least two dimensions whose ``class_dim`` has at least two classes; dimensions other
    than ``class_dim`` are flattened into rows (``[N, C, H, W]`` gives ``N*H*W`` rows).
    Anything else gives ``None``: it is not a classifier's output.
    """
    if isinstance(output, Mapping):
        output = next((output[key] for key in LOGIT_KEYS if key in output), None)
    elif isinstance(output, (tuple, list)):
        output = output[0] if output else None
    torch_module = sys.modules.get("torch")
    if torch_module is None or not isinstance(output, torch_module.Tensor):
        return None
    if not output.is_floating_point() or output.ndim < 2 or not -output.ndim <= class_dim < output.ndim:
        return None
    classes = int(output.shape[class_dim])
    if classes < 2 or output.numel() == 0:
        return None
    tensor: torch.Tensor = output.detach()
    if output.ndim > 2 or class_dim % output.ndim != 1:
        tensor = tensor.movedim(class_dim, -1).reshape(-1, classes)
    return tensor


class PredictionWatcher:
    """A forward hook that feeds a torch module's outputs to a :class:`PredictionMonitor`.

    Built by :func:`watch_predictions`. Each forward call (in training mode, unless
    ``training_only=False``) advances a call counter; the step given to the monitor is
    that counter, or ``step_fn()`` when a step function was given (e.g. the trainer's
    global step). On a scheduled step the output is unwrapped by :func:`extract_logits`
    and observed once per step (gradient accumulation calls forward several times per
    step; only the first usable output of a step is observed). Outputs that are not
    logits are counted in :attr:`skipped` and otherwise ignored. Bad logits on a
    scheduled step (NaN, infinities) raise :class:`InputError` from the forward call:
    a diverged model is not something to train through silently.

    :meth:`detach` removes the hook; the watcher is also a context manager that detaches
    on exit.
    """

    __slots__ = (
        "_calls",
        "_class_dim",
        "_handle",
        "_last_step",
        "_logger",
        "_monitor",
        "_skipped",
        "_step_fn",
        "_training_only",
    )

    def __init__(
        self,
        module: torch.nn.Module,
        monitor: PredictionMonitor,
        *,
        logger: MetricLogger | None,
        class_dim: int,
        training_only: bool,
        step_fn: Callable[[], int] | None,
    ) -> None:
        self._monitor = monitor
        self._logger = logger
        self._class_dim = class_dim
        self._training_only = training_only
        self._step_fn = step_fn
        self._calls = 0
        self._skipped = 0
        self._last_step: int | None = None
        self._handle: Any = module.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, inputs: Any, output: Any) -> None:
        if self._training_only and not module.training:
            return
        self._calls += 1
        step = self._calls if self._step_fn is None else self._step_fn()
        if step == self._last_step or not self._monitor.should_log(step):
            return
        logits = extract_logits(output, class_dim=self._class_dim)
        if logits is None:
            self._skipped += 1
            return
        self._monitor.observe(logits, step=step, logger=self._logger)
        self._last_step = step

    @property
    def monitor(self) -> PredictionMonitor:
        """The monitor the outputs are fed to."""
        return self._monitor

    @property
    def attached(self) -> bool:
        """Whether the hook is still registered."""
        return self._handle is not None

    @property
    def calls(self) -> int:
        """Forward calls counted so far."""
        return self._calls

    @property
    def skipped(self) -> int:
        """Scheduled calls whose output held no usable logits."""
        return self._skipped

    @property
    def last_check(self) -> PredictionCheck | None:
        """The monitor's most recent check."""
        return self._monitor.last_check

    def detach(self) -> None:
        """Remove the forward hook (idempotent)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> PredictionWatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.detach()


def watch_predictions(
    module: torch.nn.Module,
    monitor: PredictionMonitor | None = None,
    *,
    logger: MetricLogger | None = None,
    class_dim: int = 1,
    training_only: bool = True,
    step_fn: Callable[[], int] | None = None,
) -> PredictionWatcher:
    """Attach a forward hook to ``module`` that watches its outputs' prediction dynamics.

    Parameters
    ----------
    module:
        A ``torch.nn.Module`` returning logits (a tensor, a tuple whose first element is
        the logits, or a mapping with a ``logits``, ``out`` or ``preds`` entry).
    monitor:
        Where the outputs go; ``PredictionMonitor()`` (every 50 steps) when omitted.
    logger:
        Optional structured logger passed to each check.
    class_dim:
        The classes' dimension of the output (1: ``[N, C]`` or ``[N, C, H, W]``).
    training_only:
        Count only forward calls made in training mode (``module.training``).
    step_fn:
        Returns the current step; the watcher counts forward calls when omitted.

    Example
    -------
    >>> import torch
    >>> model = torch.nn.Linear(4, 3)
    >>> with watch_predictions(model, PredictionMonitor(log_every_steps=2)) as watcher:
    ...     _ = model(torch.randn(8, 4)), model(torch.randn(8, 4))
    >>> watcher.last_check.step, watcher.attached
    (2, False)
    """
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(module, torch.nn.Module):
        raise InputError(
            f"'module' must be a torch.nn.Module: got {type(module).__name__}",
            details={"field": "module", "type": type(module).__name__},
        )
    monitor = PredictionMonitor() if monitor is None else check_instance("monitor", monitor, PredictionMonitor)
    if type(class_dim) is not int:
        raise fail("class_dim", "an integer", class_dim)
    if step_fn is not None:
        check_callable("step_fn", step_fn)
    return PredictionWatcher(
        module, monitor, logger=logger, class_dim=class_dim, training_only=bool(training_only), step_fn=step_fn
    )
