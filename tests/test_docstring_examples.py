"""Every example in the package's docstrings runs and shows what it says: each module's
doctests, run in place (so an example cannot drift from the code it documents when a
module is split or moved).
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import geno_lewm

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(geno_lewm.__path__, "geno_lewm.") if not info.name.endswith("__main__")
)


@pytest.mark.parametrize("name", ["geno_lewm", *MODULES])
def test_the_examples_of_a_module_run(name: str) -> None:
    """The doctests of ``name`` pass (modules whose optional dependency is missing are skipped)."""
    if name.endswith(("lightning", "metrics_callback")):
        pytest.importorskip("lightning")
    if name.endswith("gradients._series"):
        pytest.importorskip("matplotlib").use("Agg")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed"


def test_the_package_has_examples_to_run() -> None:
    """The sweep is not empty: the package documents itself with runnable examples."""
    attempted = sum(
        doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, report=False).attempted
        for name in ("geno_lewm", "geno_lewm.training.collapse", "geno_lewm.backends", "geno_lewm._validation")
    )
    assert attempted >= 10
