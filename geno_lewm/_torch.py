"""torch and NumPy on demand: importing torch for the lenses that need it (gradients,
credit), and recognising a tensor or an array without importing either (a value can only
be one when its library is already in ``sys.modules``).
"""

from __future__ import annotations

import sys
from typing import Any, Literal

from geno_lewm.errors import BackendUnavailableError

__all__ = ["array_kind", "is_numpy_array", "is_torch_tensor", "require_torch"]


def require_torch() -> Any:
    """The ``torch`` module, imported if needed; :class:`BackendUnavailableError` (an
    ``ImportError`` naming the ``torch`` extra) when it is not installed.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch
    try:
        import torch
    except ImportError as error:
        raise BackendUnavailableError("torch", "torch") from error
    return torch


def is_torch_tensor(value: object) -> bool:
    """Whether ``value`` is a ``torch.Tensor``, asked without importing torch."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def is_numpy_array(value: object) -> bool:
    """Whether ``value`` is a ``numpy.ndarray``, asked without importing NumPy."""
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.ndarray)


def array_kind(value: object) -> Literal["torch", "numpy"] | None:
    """``"torch"`` for a tensor, ``"numpy"`` for an array, else ``None`` (importing neither)."""
    if is_torch_tensor(value):
        return "torch"
    if is_numpy_array(value):
        return "numpy"
    return None
