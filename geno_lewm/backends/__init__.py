"""Choosing the computation backend for a batch.

Three backends compute the same numbers: ``python`` (the standard-library reference,
always available), ``numpy`` and ``torch`` (vectorised, optional extras). Each lives in
its own private module exposing the same three functions:

``prepare(value, name)``
    validate and convert one input, raising :class:`~geno_lewm.errors.InputError`;
``describe(matrix)``
    ``(N, D, dtype, device)`` of a prepared matrix, for the logs;
``collapse_values(prediction, target)``
    the six RFC-0005 batch statistics as Python floats.

A backend's module is imported the first time it is used, and ``auto`` never imports
NumPy or torch to find out whether a value is one of theirs: it looks in
``sys.modules`` (a tensor cannot exist unless torch was already imported).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any, Literal

from geno_lewm.errors import BackendUnavailableError, InputError

__all__ = ["BACKENDS", "BackendName", "check_backend_name", "load_backend", "select_backend"]

BackendName = Literal["auto", "python", "numpy", "torch"]
BACKENDS: tuple[str, ...] = ("auto", "python", "numpy", "torch")

AUTO_NUMPY_MIN_ELEMENTS = 4096
"""Nested sequences at least this large (N * D, per input) go to NumPy under ``auto``
when it is installed: below it, converting to an array costs more than it saves."""

_MODULES = {
    "python": "geno_lewm.backends._python",
    "numpy": "geno_lewm.backends._numpy",
    "torch": "geno_lewm.backends._torch",
}
_EXTRAS = {"numpy": "numpy", "torch": "torch"}


def check_backend_name(name: object) -> str:
    """Return ``name`` if it is one of :data:`BACKENDS`, else raise :class:`InputError`."""
    if name not in BACKENDS:
        raise InputError(
            f"'backend' must be one of {', '.join(map(repr, BACKENDS))}: got {name!r}",
            details={"field": "backend", "value": name},
        )
    return str(name)


def load_backend(name: str) -> ModuleType:
    """Import and return the module of backend ``name`` (not ``auto``).

    Raises :class:`BackendUnavailableError` (an ``ImportError``) naming the extra to
    install when the backend's library is missing, and :class:`InputError` for an
    unknown name.
    """
    if name == "auto":
        raise InputError("'backend' must name a concrete backend here: got 'auto'", details={"field": "backend"})
    module_name = _MODULES[check_backend_name(name)]
    module = sys.modules.get(module_name)
    if module is not None:
        return module
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        if name in _EXTRAS and error.name in {name, None} | {_EXTRAS[name]}:
            raise BackendUnavailableError(name, _EXTRAS[name]) from error
        raise


def _is_torch_tensor(value: object) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _is_numpy_array(value: object) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.ndarray)


def _numpy_installed() -> bool:
    if "numpy" in sys.modules:
        return True
    return importlib.util.find_spec("numpy") is not None


def _approximate_size(value: object) -> int:
    """``len(value) * len(value[0])`` for a nested sequence, 0 when that is not cheap to know."""
    try:
        return len(value) * len(value[0])  # type: ignore[arg-type,index]
    except (TypeError, IndexError, KeyError):
        return 0


def _auto(*values: Any) -> str:
    if any(_is_torch_tensor(v) for v in values):
        return "torch"
    if any(_is_numpy_array(v) for v in values):
        return "numpy" if _numpy_installed() else "python"
    if min(map(_approximate_size, values)) >= AUTO_NUMPY_MIN_ELEMENTS and _numpy_installed():
        return "numpy"
    return "python"


def select_backend(requested: str, *values: Any) -> ModuleType:
    """Return the backend module for ``requested`` given the inputs it will receive.

    ``auto`` picks torch for torch tensors (computing on their own device), NumPy for
    NumPy arrays and for nested sequences of at least :data:`AUTO_NUMPY_MIN_ELEMENTS`
    elements when NumPy is installed, and the pure-Python reference otherwise. If an
    ``auto`` choice turns out not to be importable (a module broken at import), the
    pure-Python backend is used instead.
    """
    if check_backend_name(requested) != "auto":
        return load_backend(requested)
    choice = _auto(*values)
    try:
        return load_backend(choice)
    except BackendUnavailableError:
        return load_backend("python")
