"""Divergence: a scheduled check whose predictions, targets or ``kl_reg`` hold NaN or
infinite values.

``compute_collapse_metrics`` refuses such input (RFC-0005 §8), but a monitor inside a
training loop must not: a diverging run is the most common failure it sees, and an
``InputError`` out of ``observe`` leaves no trace in the run's records. The monitor
instead records the check as diverged — every metric NaN, and one alert of criterion
``non_finite`` whose value is the number of non-finite values and whose ``detail`` says
where the first of them is — and then follows its alert policy like any other alert.

Finding the values never imports NumPy or PyTorch: an array or tensor is recognised by
its type's module, as the backends do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from geno_lewm.training._collapse_metrics import METRIC_NAMES, CollapseAlert, CollapseMetrics, NonFinite

__all__ = ["NON_FINITE", "NonFinite", "diverged_metrics", "find_non_finite", "non_finite_alert"]

NON_FINITE = "non_finite"
"""The criterion of a diverged check's alert."""


def diverged_metrics(kl_reg: Any) -> CollapseMetrics:
    """The metrics of a diverged check: NaN, except ``kl_reg`` when it was given finite
    (``None`` stays ``None``: the loss has no Gaussian term).
    """
    kl: float | None = None
    if kl_reg is not None:
        try:
            value = _scalar(kl_reg)
            kl = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
        except (TypeError, ValueError, RuntimeError, OverflowError):
            kl = math.nan
    nan = dict.fromkeys((name for name in METRIC_NAMES if name != "kl_reg"), math.nan)
    return CollapseMetrics(**nan, kl_reg=kl)


def non_finite_alert(found: NonFinite) -> CollapseAlert:
    """The alert of a diverged check: its count of non-finite values, above 0."""
    return CollapseAlert(NON_FINITE, float(found.count), 0.0, "above")


def _module_of(value: object) -> str:
    return type(value).__module__.split(".", 1)[0]


def _count_tensor(value: Any, name: str) -> tuple[int, str]:
    import torch  # already imported: the value is a tensor

    if not value.is_floating_point():
        return 0, ""
    bad = ~torch.isfinite(value.detach())
    count = int(bad.sum().item())
    if not count:
        return 0, ""
    row, column = (int(i) for i in bad.nonzero()[0].tolist())
    return count, f"{name}[{row}, {column}] = {float(value[row, column].item())!r}"


def _count_ndarray(value: Any, name: str) -> tuple[int, str]:
    import numpy  # already imported: the value is an array

    if value.dtype.kind not in "fc":
        return 0, ""
    bad = ~numpy.isfinite(value)
    count = int(bad.sum())
    if not count:
        return 0, ""
    row, column = (int(i) for i in numpy.argwhere(bad)[0])
    return count, f"{name}[{row}, {column}] = {float(value[row, column])!r}"


def _count_array(value: Any, name: str) -> tuple[int, str] | None:
    """``(count, first)`` of a 2-D NumPy array or torch tensor, ``None`` if it is not one."""
    module = _module_of(value)
    shape = getattr(value, "shape", None)
    if module not in ("numpy", "torch") or shape is None or len(shape) != 2:
        return None
    return _count_tensor(value, name) if module == "torch" else _count_ndarray(value, name)


def _real(element: Any) -> float | int | None:
    """A Python or NumPy/torch scalar as a number; ``None`` for anything else."""
    if not isinstance(element, bool) and isinstance(element, (int, float)):
        return element
    item = getattr(element, "item", None)
    if callable(item) and _module_of(element) in ("numpy", "torch"):
        value = item()
        if not isinstance(value, bool) and isinstance(value, (int, float)):
            return value
    return None


def _count_rows(value: Any, name: str) -> tuple[int, str, int, int] | None:
    """``(count, first, N, D)`` of nested sequences of reals, ``None`` unless it is a
    rectangular ``[N, D]`` batch of real numbers (then validation reports what is wrong).
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        return None
    count, first, width = 0, "", None
    for row_index, row in enumerate(value):
        if isinstance(row, (str, bytes)) or not isinstance(row, Sequence):
            return None
        if width is None:
            width = len(row)
        if len(row) != width:
            return None
        for column, element in enumerate(row):
            number = _real(element)
            if number is None:
                return None
            if isinstance(number, float) and not math.isfinite(number):
                count += 1
                if not first:
                    first = f"{name}[{row_index}, {column}] = {number!r}"
    return count, first, len(value), width or 0


def _count(value: Any, name: str) -> tuple[int, str, int, int] | None:
    found = _count_array(value, name)
    if found is not None:
        rows, dim = (int(n) for n in value.shape)
        return found[0], found[1], rows, dim
    return _count_rows(value, name)


def _kl_non_finite(kl_reg: Any) -> bool:
    if kl_reg is None or isinstance(kl_reg, bool):
        return False
    try:
        scalar = _scalar(kl_reg)
    except (TypeError, ValueError, RuntimeError):
        return False
    return isinstance(scalar, float) and not math.isfinite(scalar)


def find_non_finite(prediction: Any, target: Any, kl_reg: Any) -> NonFinite | None:
    """Where the non-finite values of a check's inputs are; ``None`` when there are none,
    or when the inputs are not two ``[N, D]`` batches of the same shape (validation then
    says what is wrong with them).
    """
    predicted, targeted = _count(prediction, "prediction"), _count(target, "target")
    if predicted is None or targeted is None:
        return None
    p_count, p_first, rows, dim = predicted
    t_count, t_first, t_rows, t_dim = targeted
    if (rows, dim) != (t_rows, t_dim) or rows == 0 or dim == 0:
        return None
    kl_bad = _kl_non_finite(kl_reg)
    if not (p_count or t_count or kl_bad):
        return None
    first = p_first or t_first or "kl_reg = " + repr(_scalar(kl_reg))
    dtype = str(getattr(prediction, "dtype", "float64")).removeprefix("torch.")
    device = str(getattr(prediction, "device", "cpu"))
    return NonFinite(p_count, t_count, kl_bad, first, rows, dim, dtype, device)


def _scalar(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) and not isinstance(value, (int, float)) else value
