"""Importing torch on demand for the lenses that need it (gradients, credit)."""

from __future__ import annotations

import sys
from typing import Any

from geno_lewm.errors import BackendUnavailableError

__all__ = ["require_torch"]


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
