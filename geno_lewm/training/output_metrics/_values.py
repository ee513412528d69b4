"""What a metric's inputs and results are: tensors, arrays, sequences and numbers, and how
a step's values are kept and joined over an epoch. torch and NumPy are looked up in
``sys.modules``, never imported.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Sequence
from typing import Any

from geno_lewm._torch import is_numpy_array, is_torch_tensor
from geno_lewm.errors import InputError

__all__ = [
    "as_number",
    "collected",
    "concatenate",
    "descriptor",
    "detached",
    "for_sklearn",
    "is_tensor",
    "row_count",
    "torch_module",
]


def torch_module() -> Any:
    return sys.modules.get("torch")


def is_tensor(value: Any) -> bool:
    """Whether ``value`` is a ``torch.Tensor`` (torch is never imported to ask)."""
    return is_torch_tensor(value)


def row_count(value: Any) -> int | None:
    """Leading length of an argument: rows of a tensor or array, length of a list."""
    if is_tensor(value) or is_numpy_array(value):
        return int(value.shape[0]) if value.ndim >= 1 else None
    if isinstance(value, (list, tuple)):
        return len(value)
    return None


def as_number(name: str, value: Any) -> float:
    """A metric's result as a float (a real number, or a one-element tensor or array)."""
    scalar = value
    if not isinstance(value, numbers.Number) and hasattr(value, "item"):
        size = getattr(value, "numel", None)
        count = size() if callable(size) else getattr(value, "size", 1)
        if count != 1:
            shape = tuple(getattr(value, "shape", ()))
            raise InputError(
                f"metric {name!r} must return one number: got a {type(value).__name__} of shape {shape}",
                details={"field": "metrics", "metric": name, "type": type(value).__name__},
            )
        scalar = value.item()
    if isinstance(scalar, bool) or type(scalar).__name__ == "bool_" or not isinstance(scalar, numbers.Real):
        raise InputError(
            f"metric {name!r} must return a real number: got {value!r}",
            details={"field": "metrics", "metric": name, "type": type(value).__name__},
        )
    try:
        return float(scalar)
    except OverflowError:
        return math.copysign(math.inf, scalar)


def for_sklearn(value: Any) -> Any:
    """A tensor as a NumPy array (scikit-learn reads arrays); anything else unchanged."""
    if not is_tensor(value):
        return value
    torch = torch_module()
    data = value.detach()
    if data.dtype in (torch.bfloat16,):
        data = data.float()
    return data.cpu().numpy()


def detached(value: Any) -> Any:
    return value.detach() if is_tensor(value) else value


def collected(value: Any, on_cpu: bool) -> Any:
    """A private copy of one step's argument, safe to keep until the epoch ends."""
    if is_tensor(value):
        device = "cpu" if on_cpu else value.device
        return value.detach().to(device=device, copy=True)
    if is_numpy_array(value):
        return value.copy()
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, numbers.Number) or (hasattr(value, "item") and hasattr(value, "dtype")):
        return value
    raise InputError(
        f"cannot collect a {type(value).__name__} over an epoch: a metric's inputs must be tensors, arrays, "
        "sequences or numbers",
        details={"field": "outputs", "type": type(value).__name__},
    )


def concatenate(label: str, parts: Sequence[Any]) -> Any:
    """One epoch's collected values of one source joined along the first dimension."""
    first = parts[0]
    if is_tensor(first):
        torch = torch_module()
        if not all(is_tensor(p) for p in parts):
            raise _mixed(label, parts)
        if all(p.ndim == 0 for p in parts):
            return torch.stack(list(parts))
        shapes = {tuple(p.shape[1:]) for p in parts if p.ndim}
        if any(p.ndim == 0 for p in parts) or len(shapes) > 1:
            raise InputError(
                f"{label}: the steps returned tensors whose shapes cannot be joined along the first dimension: "
                f"{sorted({tuple(p.shape) for p in parts})}",
                details={"field": "outputs", "source": label},
            )
        devices = {p.device for p in parts}
        if len(devices) > 1:
            parts = [p.to(first.device) for p in parts]
        return torch.cat(list(parts))
    if is_numpy_array(first):
        numpy = sys.modules["numpy"]
        if not all(is_numpy_array(p) for p in parts):
            raise _mixed(label, parts)
        if all(p.ndim == 0 for p in parts):
            return numpy.stack(list(parts))
        if any(p.ndim == 0 for p in parts) or len({p.shape[1:] for p in parts}) > 1:
            raise InputError(
                f"{label}: the steps returned arrays whose shapes cannot be joined along the first dimension: "
                f"{sorted({p.shape for p in parts})}",
                details={"field": "outputs", "source": label},
            )
        return numpy.concatenate(list(parts))
    if all(isinstance(p, list) for p in parts):
        return [item for part in parts for item in part]
    if all(not isinstance(p, list) for p in parts):
        return list(parts)
    raise _mixed(label, parts)


def _mixed(label: str, parts: Sequence[Any]) -> InputError:
    kinds = sorted({type(p).__name__ for p in parts})
    return InputError(
        f"{label}: the steps returned values of different kinds ({', '.join(kinds)}), which cannot be joined",
        details={"field": "outputs", "source": label, "types": kinds},
    )


def descriptor(value: Any) -> tuple[Any, ...]:
    if is_tensor(value):
        return ("tensor", str(value.dtype).removeprefix("torch."), tuple(value.shape[1:]) if value.ndim else ())
    return ("other",)
