"""Choosing a backend: the ``auto`` rules, explicit names, lazy imports and the error
for a backend whose library is missing (checked in real subprocesses in which NumPy or
torch cannot be imported).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from geno_lewm import backends
from geno_lewm.backends import (
    AUTO_NUMPY_MIN_WORK,
    auto_backend,
    check_backend_name,
    load_backend,
    python_work,
    select_backend,
)
from geno_lewm.errors import BackendUnavailableError, GenoLeWMError, InputError
from geno_lewm.training.collapse import CollapseMonitor, compute_collapse_metrics

ROOT = Path(__file__).resolve().parent.parent


def _rows(n: int, d: int, offset: float = 0.0) -> list[list[float]]:
    return [[offset + ((7 * i + 3 * j) % 11) / 5.0 for j in range(d)] for i in range(n)]


def _run(script: str, *args: str) -> dict[str, Any]:
    """Run ``script`` in a fresh interpreter with the repository importable; return its JSON."""
    prologue = f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
    completed = subprocess.run(
        [sys.executable, "-c", prologue + textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


# ------------------------------------------------------------------ auto rules
def _smallest_square_for_numpy() -> int:
    n = 2
    while python_work(_rows(n, n)) < AUTO_NUMPY_MIN_WORK:
        n += 1
    return n


def test_small_nested_lists_stay_in_pure_python() -> None:
    """Below the work threshold, nested lists are computed by the reference itself."""
    n = _smallest_square_for_numpy() - 1
    assert python_work(_rows(n, n)) < AUTO_NUMPY_MIN_WORK
    assert auto_backend(_rows(n, n), _rows(n, n)) == "python"
    check = CollapseMonitor(log_every_steps=1).observe(_rows(n, n), _rows(n, n, 1.0), kl_reg=0.0, step=1)
    assert check is not None and check.batch is not None
    assert check.batch.backend == "python"


def test_large_nested_lists_go_to_numpy() -> None:
    """From the work threshold on, nested lists are computed by NumPy when it is installed."""
    pytest.importorskip("numpy")
    n = _smallest_square_for_numpy()
    assert python_work(_rows(n, n)) >= AUTO_NUMPY_MIN_WORK
    assert auto_backend(_rows(n, n), _rows(n, n)) == "numpy"
    check = CollapseMonitor(log_every_steps=1).observe(_rows(n, n), _rows(n, n, 1.0), kl_reg=0.0, step=1)
    assert check is not None and check.batch is not None
    assert (check.batch.backend, check.batch.device, check.batch.dtype) == ("numpy", "cpu", "float64")


def test_python_work_counts_pairs_times_dimension() -> None:
    """The cost estimate is N(N-1)/2 pairs times (D + 32); 0 when the shape is unknown."""
    assert python_work(_rows(10, 5)) == 45 * 37
    assert python_work(_rows(1, 1000)) == 0
    assert python_work([]) == 0
    assert python_work(5.0) == 0
    assert python_work([1.0, 2.0]) == 0


def test_numpy_arrays_go_to_numpy() -> None:
    """An array among the inputs selects NumPy, however small the batch."""
    np = pytest.importorskip("numpy")
    assert auto_backend(np.zeros((2, 2)), [[1.0, 2.0], [3.0, 4.0]]) == "numpy"
    assert auto_backend([[1.0, 2.0], [3.0, 4.0]], np.zeros((2, 2))) == "numpy"
    assert select_backend("auto", np.zeros((2, 2)), np.zeros((2, 2))).NAME == "numpy"


def test_torch_tensors_go_to_torch_whatever_the_other_input() -> None:
    """A tensor among the inputs selects torch, even next to an array or a list."""
    torch = pytest.importorskip("torch")
    np = pytest.importorskip("numpy")
    tensor = torch.zeros(2, 2)
    assert auto_backend(tensor, np.zeros((2, 2))) == "torch"
    assert auto_backend([[1.0, 2.0], [3.0, 4.0]], tensor) == "torch"
    check = CollapseMonitor(log_every_steps=1).observe(torch.tensor(_rows(4, 3)), _rows(4, 3, 1.0), kl_reg=0.0, step=1)
    assert check is not None and check.batch is not None
    assert (check.batch.backend, check.batch.device) == ("torch", "cpu")


@pytest.mark.parametrize("name", ["python", "numpy", "torch"])
def test_a_named_backend_is_used_for_any_input(name: str) -> None:
    """Asking for a backend by name uses it, for lists as for arrays, with the same answer."""
    if name != "python":
        pytest.importorskip(name)
    prediction, target = _rows(6, 3), _rows(6, 3, 0.5)
    chosen = select_backend(name, prediction, target)
    assert chosen is load_backend(name)
    reference = compute_collapse_metrics(prediction, target, kl_reg=0.0, backend="python")
    metrics = compute_collapse_metrics(prediction, target, kl_reg=0.0, backend=name)
    for value, expected in zip(metrics.as_dict().values(), reference.as_dict().values()):
        assert value == pytest.approx(expected, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("value", ["Auto", "cupy", "", None, 1])
def test_unknown_backend_names_are_refused(value: Any) -> None:
    """Only the four names are accepted, with the one error shape for bad configuration."""
    with pytest.raises(InputError, match="'backend' must be one of 'auto', 'python', 'numpy', 'torch'"):
        check_backend_name(value)
    with pytest.raises(InputError):
        compute_collapse_metrics(_rows(2, 2), _rows(2, 2), kl_reg=0.0, backend=value)


def test_load_backend_needs_a_concrete_name() -> None:
    """``auto`` is a rule, not a module: load_backend refuses it."""
    with pytest.raises(InputError, match="concrete backend"):
        load_backend("auto")


# -------------------------------------------------------------- lazy imports
def test_importing_the_package_imports_no_backend_library() -> None:
    """Importing geno_lewm and computing on small lists never loads NumPy or torch."""
    result = _run(
        """
        import json
        import geno_lewm, geno_lewm.backends
        from geno_lewm.training.collapse import compute_collapse_metrics
        compute_collapse_metrics([[1.0, 2.0], [3.0, 5.0]], [[0.0, 1.0], [1.0, 1.0]], kl_reg=0.0)
        print(json.dumps({name: name in sys.modules for name in ("numpy", "torch")}))
        """
    )
    assert result == {"numpy": False, "torch": False}


LAZY_SCRIPT = """
import json
from geno_lewm.backends import AUTO_NUMPY_IMPORT_WORK, AUTO_NUMPY_MIN_WORK, auto_backend, python_work
from geno_lewm.training.collapse import compute_collapse_metrics

def rows(n, d):
    return [[((7 * i + 3 * j) % 11) / 5.0 for j in range(d)] for i in range(n)]

def smallest(threshold, d):
    n = 2
    while python_work(rows(n, d)) < threshold:
        n += 1
    return rows(n, d)

middle = smallest(AUTO_NUMPY_MIN_WORK, 16)
large = smallest(AUTO_NUMPY_IMPORT_WORK, 64)
report = {"middle_before_import": auto_backend(middle, middle)}
compute_collapse_metrics(middle, middle, kl_reg=0.0)
report["numpy_after_middle"] = "numpy" in sys.modules
check = compute_collapse_metrics(large, large, kl_reg=0.0)
report["numpy_after_large"] = "numpy" in sys.modules
report["middle_after_import"] = auto_backend(middle, middle)
report["torch"] = "torch" in sys.modules
print(json.dumps(report))
"""


def test_numpy_is_imported_only_for_batches_that_pay_for_it() -> None:
    """In a fresh interpreter, a middle-sized list batch stays in pure Python rather than
    import NumPy; a large one imports it (and never torch); once NumPy is loaded the
    middle-sized batch goes to NumPy too.
    """
    pytest.importorskip("numpy")
    result = _run(LAZY_SCRIPT)
    assert result == {
        "middle_before_import": "python",
        "numpy_after_middle": False,
        "numpy_after_large": True,
        "middle_after_import": "numpy",
        "torch": False,
    }


# ---------------------------------------------------------- missing libraries
BLOCK_BY_NONE = """
sys.modules[{name!r}] = None
"""

BLOCK_BY_FINDER = """
import importlib.abc

class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == {name!r} or fullname.startswith({name!r} + "."):
            raise ModuleNotFoundError(f"No module named {{fullname!r}}", name=fullname)
        return None

sys.meta_path.insert(0, _Blocker())
"""

MISSING_SCRIPT = """
import json
from geno_lewm.backends import select_backend
from geno_lewm.errors import BackendUnavailableError, GenoLeWMError
from geno_lewm.training.collapse import compute_collapse_metrics

rows = [[float((3 * i + j) % 7) for j in range(40)] for i in range(120)]
other = [[float((5 * i + 2 * j) % 9) for j in range(40)] for i in range(120)]
try:
    compute_collapse_metrics(rows, other, kl_reg=0.0, backend={name!r})
    error = None
except BackendUnavailableError as caught:
    error = {{
        "message": str(caught),
        "import_error": isinstance(caught, ImportError),
        "library_error": isinstance(caught, GenoLeWMError),
        "extra": caught.extra,
    }}
auto = compute_collapse_metrics(rows, other, kl_reg=0.0).as_dict()
python = compute_collapse_metrics(rows, other, kl_reg=0.0, backend="python").as_dict()
print(json.dumps({{
    "error": error,
    "auto_backend": select_backend("auto", rows, other).NAME,
    "auto_matches_python": all(abs(auto[k] - python[k]) <= 1e-12 * abs(python[k]) for k in python),
}}))
"""


@pytest.mark.parametrize("blocker", [BLOCK_BY_NONE, BLOCK_BY_FINDER], ids=["sys.modules None", "meta-path finder"])
@pytest.mark.parametrize("name", ["numpy", "torch"])
def test_missing_library_names_the_extra_to_install(blocker: str, name: str) -> None:
    """With the library unimportable, asking for its backend raises an ImportError that is
    also a GenoLeWMError and names ``pip install 'geno-lewm[<extra>]'``; ``auto`` picks what
    is available (pure Python for lists while NumPy is not imported) and gives the
    reference's numbers.
    """
    result = _run(blocker.format(name=name) + MISSING_SCRIPT.format(name=name))
    error = result["error"]
    assert error is not None
    assert error["import_error"] and error["library_error"]
    assert f"pip install 'geno-lewm[{name}]'" in error["message"]
    assert error["extra"] == name
    assert result["auto_matches_python"]
    assert result["auto_backend"] == "python"


def test_torch_backend_works_without_numpy() -> None:
    """The torch backend needs only torch: nested lists are converted without NumPy."""
    pytest.importorskip("torch")
    script = (
        BLOCK_BY_NONE.format(name="numpy")
        + """
import json
try:
    import torch
except ImportError:
    print(json.dumps({"skipped": True}))
    raise SystemExit(0)
from geno_lewm.training.collapse import compute_collapse_metrics
rows = [[float((3 * i + j) % 7) for j in range(5)] for i in range(30)]
other = [[float((5 * i + 2 * j) % 9) for j in range(5)] for i in range(30)]
ours = compute_collapse_metrics(torch.tensor(rows), other, kl_reg=0.0)
listed = compute_collapse_metrics(rows, other, kl_reg=0.0, backend="torch")
python = compute_collapse_metrics(rows, other, kl_reg=0.0, backend="python")
close = lambda a, b: all(abs(x - y) <= 1e-6 * abs(y) + 1e-7 for x, y in zip(a.as_dict().values(), b.as_dict().values()))
print(json.dumps({"skipped": False, "tensor": close(ours, python), "lists": close(listed, python),
                  "numpy_loaded": sys.modules.get("numpy") is not None}))
"""
    )
    result = _run(script)
    if result["skipped"]:
        pytest.skip("this torch build cannot be imported without NumPy")
    assert result == {"skipped": False, "tensor": True, "lists": True, "numpy_loaded": False}


def test_backend_unavailable_error_carries_backend_and_extra() -> None:
    """The error class itself: an ImportError and a GenoLeWMError with the install hint."""
    error = BackendUnavailableError("numpy", "numpy")
    assert isinstance(error, ImportError) and isinstance(error, GenoLeWMError)
    assert (error.backend, error.extra, error.name) == ("numpy", "numpy", "numpy")
    assert "pip install 'geno-lewm[numpy]'" in str(error)
    assert backends.BACKENDS == ("auto", "python", "numpy", "torch")
