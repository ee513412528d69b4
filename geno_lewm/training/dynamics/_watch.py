"""Watching a torch module's outputs: a forward hook that feeds its logits to a
:class:`~geno_lewm.training.dynamics.PredictionMonitor`.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from geno_lewm._protocols import MetricLogger, check_logger
from geno_lewm._torch import array_kind
from geno_lewm._validation import check_callable, check_instance, fail
from geno_lewm.errors import InputError
from geno_lewm.training.dynamics._metrics import PredictionCheck
from geno_lewm.training.dynamics._monitor import PredictionMonitor

if TYPE_CHECKING:
    import torch

__all__ = [
    "LOGIT_KEYS",
    "PredictionWatcher",
    "check_class_dim",
    "extract_logits",
    "logits_as_rows",
    "watch_predictions",
]

LOGIT_KEYS: tuple[str, ...] = ("logits", "out", "preds")
"""Keys looked up, in this order, when a module returns a mapping."""


def check_class_dim(class_dim: object) -> int | None:
    """``class_dim`` as an ``int`` if it is an integer (a NumPy integer too, not a bool) or
    ``None``; :class:`InputError` otherwise.
    """
    if class_dim is None:
        return None
    if not isinstance(class_dim, numbers.Integral) or type(class_dim).__name__ in ("bool", "bool_"):
        raise fail("class_dim", "an integer or None", class_dim)
    return int(class_dim)


def logits_as_rows(logits: Any, class_dim: int | None = None) -> Any:
    """Tensor or array logits with their classes along ``class_dim``, as ``[rows, C]``.

    The class dimension is moved last and every other dimension is flattened into rows,
    in their order: ``[N, C, H, W]`` with ``class_dim=1`` gives ``N*H*W`` rows (one per
    pixel), ``[B, T, C]`` with ``class_dim=-1`` gives ``B*T`` rows (one per position).
    The softmax is then taken over the classes, which is what a prediction-dynamics
    check needs. Anything that is not a tensor or an array (nested lists, read as
    ``[rows, classes]``), and tensors or arrays of fewer than two dimensions, come back
    unchanged: the monitor's own validation describes what is wrong with them.

    ``class_dim=None`` means dimension 1 — PyTorch's ``[N, C, ...]`` convention, and the
    reference's softmax over dimension 1 — except for 3-D logits, which are refused:
    ``[batch, classes, length]`` (a 1-D segmentation) and ``[batch, time, classes]`` (a
    sequence model) are both common, and reading one as the other gives wrong metrics
    without any error.

    Raises
    ------
    InputError
        For 3-D logits with ``class_dim=None``, a ``class_dim`` outside the logits'
        dimensions, or a ``class_dim`` other than 1 or -1 for nested lists.

    Example
    -------
    >>> import numpy as np
    >>> logits_as_rows(np.zeros((2, 3, 4)), class_dim=1).shape
    (8, 3)
    """
    class_dim = check_class_dim(class_dim)
    kind = array_kind(logits)
    if kind is None:
        if class_dim not in (None, 1, -1):
            raise InputError(
                f"'class_dim' {class_dim} needs a tensor or an array: nested lists are read as [rows, classes]",
                details={"field": "class_dim", "value": class_dim, "type": type(logits).__name__},
            )
        return logits
    ndim = int(logits.ndim)
    if ndim < 2:
        return logits
    shape = tuple(int(size) for size in logits.shape)
    if class_dim is None:
        if ndim == 3:
            raise InputError(
                f"3-D logits of shape {list(shape)} are ambiguous: [batch, classes, length] or [batch, time, classes]? "
                "pass class_dim=1 for the first, class_dim=-1 for the second",
                details={"field": "class_dim", "value": None, "shape": list(shape)},
            )
        class_dim = 1
    if not -ndim <= class_dim < ndim:
        raise InputError(
            f"'class_dim' {class_dim} is outside the {ndim} dimensions of logits of shape {list(shape)}",
            details={"field": "class_dim", "value": class_dim, "shape": list(shape)},
        )
    if ndim == 2 and class_dim % ndim == 1:
        return logits
    classes = shape[class_dim]
    # The row count is given, not inferred: with no classes (or no rows) -1 could be anything.
    rows = math.prod(size for axis, size in enumerate(shape) if axis != class_dim % ndim)
    if kind == "torch":
        return logits.movedim(class_dim, -1).reshape(rows, classes)
    numpy = sys.modules["numpy"]
    return numpy.moveaxis(logits, class_dim, -1).reshape(rows, classes)


def extract_logits(output: Any, *, class_dim: int | None = 1) -> torch.Tensor | None:
    """The logits in a module's output, as a detached ``[rows, C]`` tensor, or ``None``.

    A mapping is unwrapped by the first of :data:`LOGIT_KEYS` it holds, a tuple or list
    by its first element. What remains is used only if it is a floating-point tensor of
    at least two dimensions whose ``class_dim`` has at least two classes; dimensions other
    than ``class_dim`` are flattened into rows (``[N, C, H, W]`` gives ``N*H*W`` rows,
    :func:`logits_as_rows`). Anything else gives ``None``: it is not a classifier's output.

    ``class_dim=None`` reads dimension 1 but raises :class:`InputError` for 3-D logits,
    whose class dimension cannot be told from their shape (see :func:`logits_as_rows`).
    """
    if isinstance(output, Mapping):
        output = next((output[key] for key in LOGIT_KEYS if key in output), None)
    elif isinstance(output, (tuple, list)):
        output = output[0] if output else None
    torch_module = sys.modules.get("torch")
    if torch_module is None or not isinstance(output, torch_module.Tensor):
        return None
    if not output.is_floating_point() or output.ndim < 2:
        return None
    if class_dim is None and output.ndim == 3:
        logits_as_rows(output, None)  # raises: the class dimension is ambiguous
    dim = 1 if class_dim is None else class_dim
    if not -output.ndim <= dim < output.ndim:
        return None
    if int(output.shape[dim]) < 2 or output.numel() == 0:
        return None
    tensor: torch.Tensor = logits_as_rows(output.detach(), dim)
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
    check_logger(logger)  # refused here, not at the first scheduled forward pass
    return PredictionWatcher(
        module, monitor, logger=logger, class_dim=class_dim, training_only=bool(training_only), step_fn=step_fn
    )
