"""The typed backend contract: every backend returns the contract's NamedTuples, and a
monitored batch is validated and converted once, whatever the check computes from it.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import convert

from geno_lewm.backends import (
    BatchShape,
    CollapseValues,
    GaussianKLTerms,
    PredictionSums,
    PreparedPair,
    SpectralValues,
    _python,
    get_backend,
    load_backend,
    select_backend,
)
from geno_lewm.metrics import MetricRegistry
from geno_lewm.training.collapse import CollapseMonitor

ROWS = [[1.0, 0.5, -0.25], [0.0, 2.0, 1.0], [-1.5, 0.25, 0.75], [0.5, -1.0, 2.0]]
TARGET = [[0.75, 0.5, 0.0], [0.25, 1.5, 1.25], [-1.0, 0.0, 0.5], [1.0, -0.5, 1.5]]


@pytest.mark.parametrize("name", ["python", "numpy", "torch"])
def test_every_backend_returns_the_contracts_named_results(name: str) -> None:
    """prepare_pair, describe, collapse_values, prediction_sums and the spectral kernels give
    the contract's NamedTuples, field by field the same numbers as the reference's.
    """
    backend = get_backend(name, convert(ROWS, name))
    reference = get_backend("python")
    pair = backend.prepare_pair(convert(ROWS, name), convert(TARGET, name))
    assert isinstance(pair, PreparedPair) and isinstance(pair.shape, BatchShape)
    assert (pair.shape.rows, pair.shape.dim) == (4, 3)
    values = backend.collapse_values(pair.prediction, pair.target)
    expected = reference.collapse_values(*reference.prepare_pair(ROWS, TARGET)[:2])
    assert isinstance(values, CollapseValues)
    assert values._fields == expected._fields
    assert values == pytest.approx(expected, rel=1e-12, abs=1e-15)
    sums = backend.prediction_sums(pair.prediction)
    assert isinstance(sums, PredictionSums) and sum(sums.class_counts) == 4
    spectral = backend.spectral()
    assert isinstance(spectral.spectral_values(pair.prediction, 2), SpectralValues)
    assert isinstance(spectral.gaussian_kl_terms(pair.prediction, 1e-6), GaussianKLTerms)


def test_one_way_to_get_a_backend_under_three_names() -> None:
    """select_backend and load_backend are get_backend: the same module, and load_backend
    refuses the 'auto' rule.
    """
    assert select_backend("auto", ROWS) is get_backend("auto", ROWS) is load_backend("python") is _python
    with pytest.raises(ValueError, match="concrete backend"):
        load_backend("auto")


def test_a_check_with_spectra_prepares_each_batch_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """With spectra on, the RFC metrics and the spectra are computed from one validation and
    conversion of each input (two calls to prepare for a prediction and a target).
    """
    calls: list[str] = []
    original = _python.prepare

    def counting(value: Any, name: str) -> Any:
        calls.append(name)
        return original(value, name)

    monkeypatch.setattr(_python, "prepare", counting)
    monitor = CollapseMonitor(1, backend="python", spectrum=True, registry=MetricRegistry())
    check = monitor.observe(ROWS, TARGET, kl_reg=0.0, step=1)
    assert check is not None and check.spectrum is not None
    assert calls == ["prediction", "target"]
