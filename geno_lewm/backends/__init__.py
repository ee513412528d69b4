"""Choosing the computation backend for a batch.

Three backends compute the same numbers: ``python`` (the standard-library reference,
always available), ``numpy`` and ``torch`` (vectorised, optional extras). Each lives in
its own private module exposing the same functions:

``NAME``
    the backend's name, as reported in :class:`~geno_lewm.training.collapse.BatchInfo`;
``prepare(value, name)``
    validate and convert one input, raising :class:`~geno_lewm.errors.InputError` with
    the reference's messages (the result is what the backend's kernels take: a tuple of
    float tuples, a float64 ``ndarray``, a detached tensor);
``describe(matrix)``
    ``(N, D, dtype, device)`` of a prepared matrix, for the logs;
``collapse_values(prediction, target)``
    the six RFC-0005 batch statistics as Python floats;
``prepare_pair(prediction, target)`` (optional)
    both inputs at once, for backends that can save work that way (see
    :func:`prepare_inputs`).

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

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any, Literal

from geno_lewm.errors import BackendUnavailableError, InputError

__all__ = [
    "AUTO_NUMPY_IMPORT_WORK",
    "AUTO_NUMPY_MIN_WORK",
    "BACKENDS",
    "FLAG_RATIO_FLOAT32",
    "FLAG_RATIO_FLOAT64",
    "PAIRWISE_BLOCK_BYTES",
    "BackendName",
    "auto_backend",
    "check_backend_name",
    "load_backend",
    "pairwise_block_rows",
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

PAIRWISE_BLOCK_BYTES = 64 * 2**20
"""Size of one block of the pairwise-distance computation (``rows x N`` entries). The
vectorised backends hold at most a few such blocks at once, so the pairwise distance
needs at most about 256 MiB beyond the ``[N, D]`` data, whatever ``N`` is."""

FLAG_RATIO_FLOAT64 = 2.0**-12
"""A pair whose squared distance from a float64 Gram block is below this fraction of
``|a|^2 + |b|^2`` (the two centred rows' squared norms) is recomputed from its
difference: there the Gram formula's rounding error, about ``1e-16 * (|a|^2 + |b|^2)``,
would no longer be negligible. Elsewhere the relative error of a distance stays below
about ``1e-16 / FLAG_RATIO_FLOAT64``."""

FLAG_RATIO_FLOAT32 = 2.0**-6
""":data:`FLAG_RATIO_FLOAT64` for Gram blocks computed in float32."""

_MODULES = {
    "python": "geno_lewm.backends._python",
    "numpy": "geno_lewm.backends._numpy",
    "torch": "geno_lewm.backends._torch",
}
_EXTRAS = {"numpy": "numpy", "torch": "torch"}
_installed: dict[str, bool] = {}


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

    Example
    -------
    >>> load_backend("python").NAME
    'python'
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
        extra = _EXTRAS.get(name)
        if extra is not None and _is_missing(error, extra):
            raise BackendUnavailableError(name, extra) from error
        raise


def _is_missing(error: ImportError, package: str) -> bool:
    """Whether ``error`` says that ``package`` (or one of its submodules) cannot be
    imported; an error that names no module counts too (a library broken at import).
    """
    missing = error.name
    return missing is None or missing == package or missing.startswith(package + ".")


def _is_torch_tensor(value: object) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _is_numpy_array(value: object) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.ndarray)


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
    if any(_is_torch_tensor(v) for v in values):
        return "torch"
    if any(_is_numpy_array(v) for v in values):
        return "numpy"
    if values:
        work = python_work(values[0])
        if work >= AUTO_NUMPY_MIN_WORK and sys.modules.get("numpy") is not None:
            return "numpy"
        if work >= AUTO_NUMPY_IMPORT_WORK and _numpy_installed():
            return "numpy"
    return "python"


def select_backend(requested: str, *values: Any) -> ModuleType:
    """Return the backend module for ``requested`` given the inputs it will receive.

    ``auto`` follows the module's rules; if the backend it picks cannot be imported
    (its library is missing or broken), the pure-Python backend is used instead.
    A backend requested by name that is not installed raises
    :class:`~geno_lewm.errors.BackendUnavailableError`.
    """
    if check_backend_name(requested) != "auto":
        return load_backend(requested)
    try:
        return load_backend(auto_backend(*values))
    except ImportError:
        return load_backend("python")


def prepare_inputs(kernels: ModuleType, prediction: Any, target: Any) -> tuple[Any, Any, tuple[int, int, str, str]]:
    """Validate and convert a prediction/target pair for ``kernels``.

    Errors come in the reference's order: everything wrong with ``prediction`` first,
    then ``target``, then a shape mismatch. Returns the two prepared matrices and
    ``describe`` of the prediction. A backend may provide ``prepare_pair`` to do this
    itself (torch does, to place both on one device and to fold the finiteness check
    into the kernel's single host synchronisation).
    """
    pair = getattr(kernels, "prepare_pair", None)
    if pair is not None:
        result: tuple[Any, Any, tuple[int, int, str, str]] = pair(prediction, target)
        return result
    from geno_lewm._inputs import shape_mismatch_error

    p = kernels.prepare(prediction, "prediction")
    t = kernels.prepare(target, "target")
    info = kernels.describe(p)
    tn, td, _, _ = kernels.describe(t)
    if info[:2] != (tn, td):
        raise shape_mismatch_error(info[:2], (tn, td))
    return p, t, info


def pairwise_block_rows(n: int, itemsize: int, budget: int = PAIRWISE_BLOCK_BYTES) -> int:
    """Rows per block of the pairwise-distance computation over ``n`` rows.

    At most ``budget`` bytes per ``rows x n`` block of ``itemsize``-byte numbers, and at
    most about ``n / 8`` rows, so that the upper-triangle blocking saves close to half
    of the work of a full Gram matrix; but at least 256 rows, since below that one
    product costs less than the extra calls (a batch of up to 256 rows is one block).

    Example
    -------
    >>> pairwise_block_rows(4096, 8), pairwise_block_rows(16384, 8), pairwise_block_rows(256, 8)
    (512, 512, 256)
    """
    by_memory = max(1, budget // (itemsize * n))
    by_balance = max(256, -(-n // 8))
    return max(1, min(n, by_memory, by_balance))
