"""Choosing the computation backend for a batch: :func:`get_backend`, the one way to get one.

Three backends compute the same numbers: ``python`` (the standard-library reference,
always available), ``numpy`` and ``torch`` (vectorised, optional extras). Each is a
private module that satisfies the :class:`Backend` protocol (validation and conversion,
the RFC-0005 statistics, softmax statistics of logits) and hands out its spectral
kernels (:class:`SpectralKernels`) on demand; results are NamedTuples
(:class:`CollapseValues`, :class:`SpectralValues`, ...). The contract is
:mod:`geno_lewm.backends._contract`.

A backend's module is imported the first time it is used, and ``auto`` never imports
NumPy or torch to find out whether a value is one of theirs: it looks in
``sys.modules`` (a tensor cannot exist unless torch was already imported).

The ``auto`` rules, in order:

1. any torch tensor among the inputs: ``torch``, on the (first) tensor's device;
2. any NumPy array: ``numpy``;
3. nested sequences whose pure-Python cost (:func:`python_work`) reaches
   :data:`AUTO_NUMPY_MIN_WORK` when NumPy is already imported, or
   :data:`AUTO_NUMPY_IMPORT_WORK` when it is installed but not yet imported: ``numpy``;
4. otherwise ``python``.

A backend asked for by name that is not installed raises
:class:`~geno_lewm.errors.BackendUnavailableError`; under ``auto`` the pure-Python
backend is used instead.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any, Literal

from geno_lewm._torch import is_numpy_array, is_torch_tensor
from geno_lewm.backends._contract import (
    FLAG_RATIO_FLOAT32,
    FLAG_RATIO_FLOAT64,
    PAIRWISE_BLOCK_BYTES,
    Backend,
    BatchShape,
    CollapseValues,
    GaussianKLTerms,
    PredictionSums,
    PreparedPair,
    SpectralKernels,
    SpectralValues,
    pairwise_block_rows,
    prepare_each,
)
from geno_lewm.errors import BackendUnavailableError, InputError

__all__ = [
    "AUTO_NUMPY_IMPORT_WORK",
    "AUTO_NUMPY_MIN_WORK",
    "BACKENDS",
    "FLAG_RATIO_FLOAT32",
    "FLAG_RATIO_FLOAT64",
    "PAIRWISE_BLOCK_BYTES",
    "Backend",
    "BackendName",
    "BatchShape",
    "CollapseValues",
    "GaussianKLTerms",
    "PredictionSums",
    "PreparedPair",
    "SpectralKernels",
    "SpectralValues",
    "auto_backend",
    "check_backend_name",
    "get_backend",
    "load_backend",
    "pairwise_block_rows",
    "prepare_each",
    "prepare_inputs",
    "python_work",
    "select_backend",
]

BackendName = Literal["auto", "python", "numpy", "torch"]
BACKENDS: tuple[str, ...] = ("auto", "python", "numpy", "torch")

AUTO_NUMPY_MIN_WORK = 4_096
"""Nested sequences go to NumPy under ``auto`` once :func:`python_work` reaches this,
when NumPy is already imported: below it, the pure-Python kernel finishes before
NumPy's fixed costs (a few dozen array calls) are paid back. Measured with
``benchmarks/bench_backends.py`` (the crossover lies near 16 x 16)."""

AUTO_NUMPY_IMPORT_WORK = 4_000_000
"""The same threshold while NumPy is installed but not yet imported: importing it takes
about 60-100 ms once, as long as the pure-Python kernel takes at this size, so a
script that never needed NumPy does not pay for it on a small batch."""

_installed: dict[str, bool] = {}


def check_backend_name(name: object) -> str:
    """Return ``name`` if it is one of :data:`BACKENDS`, else raise :class:`InputError`."""
    if name not in BACKENDS:
        raise InputError(
            f"'backend' must be one of {', '.join(map(repr, BACKENDS))}: got {name!r}",
            details={"field": "backend", "value": name},
        )
    return str(name)


def _load(name: str) -> Backend:
    """Import backend ``name`` (a concrete one); :class:`BackendUnavailableError` naming
    the extra to install when its library is missing.
    """
    if name == "python":
        from geno_lewm.backends import _python

        return _python
    try:
        if name == "numpy":
            from geno_lewm.backends import _numpy

            return _numpy
        from geno_lewm.backends import _torch

        return _torch
    except ImportError as error:
        if _is_missing(error, name):
            raise BackendUnavailableError(name, name) from error
        raise


def _is_missing(error: ImportError, package: str) -> bool:
    """Whether ``error`` says that ``package`` (or one of its submodules) cannot be
    imported; an error that names no module counts too (a library broken at import).
    """
    missing = error.name
    return missing is None or missing == package or missing.startswith(package + ".")


def _numpy_installed() -> bool:
    """Whether NumPy can be imported, without importing it (the answer is cached)."""
    if sys.modules.get("numpy") is not None:
        return True
    if "numpy" not in _installed:
        try:
            _installed["numpy"] = importlib.util.find_spec("numpy") is not None
        except (ImportError, ValueError):
            _installed["numpy"] = False
    return _installed["numpy"]


def python_work(value: object) -> int:
    """A cost estimate of the pure-Python kernel on ``value``, in element operations.

    ``N (N - 1) / 2 * (D + 32)`` for a nested sequence of ``N`` rows of ``D`` elements:
    the pairwise distance dominates, with about 32 elements' worth of overhead per pair.
    0 when the shape is not cheap to know.

    Example
    -------
    >>> python_work([[0.0] * 3] * 4)
    210
    """
    try:
        n = len(value)  # type: ignore[arg-type]
        d = len(value[0]) if n else 0  # type: ignore[index]
    except (TypeError, IndexError, KeyError):
        return 0
    return n * (n - 1) // 2 * (d + 32)


def auto_backend(*values: Any) -> str:
    """The backend ``auto`` picks for these inputs (see the module's rules)."""
    if any(is_torch_tensor(v) for v in values):
        return "torch"
    if any(is_numpy_array(v) for v in values):
        return "numpy"
    if values:
        work = python_work(values[0])
        if work >= AUTO_NUMPY_MIN_WORK and sys.modules.get("numpy") is not None:
            return "numpy"
        if work >= AUTO_NUMPY_IMPORT_WORK and _numpy_installed():
            return "numpy"
    return "python"


def get_backend(requested: str = "auto", *values: Any) -> Backend:
    """The backend for ``requested`` given the inputs it will receive.

    ``requested`` is ``"auto"`` (the module's rules applied to ``values``; if the backend
    they pick cannot be imported, its library missing or broken, the reference is used
    instead) or a backend's name. A backend asked for by name that is not installed
    raises :class:`~geno_lewm.errors.BackendUnavailableError` (an ``ImportError`` naming
    the extra); an unknown name raises :class:`~geno_lewm.errors.InputError`.

    Example
    -------
    >>> get_backend("python").NAME, get_backend("auto", [[1.0, 2.0]]).NAME
    ('python', 'python')
    """
    if check_backend_name(requested) != "auto":
        return _load(requested)
    try:
        return _load(auto_backend(*values))
    except ImportError:
        return _load("python")


def select_backend(requested: str, *values: Any) -> Backend:
    """:func:`get_backend` under the name earlier releases gave it."""
    return get_backend(requested, *values)


def load_backend(name: str) -> Backend:
    """The backend called ``name``, which must be a concrete one (``auto`` is a rule, not a
    backend): :func:`get_backend` without inputs to choose from.

    Example
    -------
    >>> load_backend("python").NAME
    'python'
    """
    if name == "auto":
        raise InputError("'backend' must name a concrete backend here: got 'auto'", details={"field": "backend"})
    return get_backend(name)


def prepare_inputs(kernels: Backend, prediction: Any, target: Any) -> PreparedPair:
    """Validate and convert a prediction/target pair for ``kernels``: its ``prepare_pair``."""
    return kernels.prepare_pair(prediction, target)
