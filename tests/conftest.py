"""Shared fixtures for the test suite: the repository on ``sys.path``, a registry per test,
a logger that records what it is told, a session log directory (so nothing is written
under the real home directory) and a hypothesis profile sized for a shared CPU.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is a test extra; the property tests skip without it
    pass
else:
    settings.register_profile(
        "geno_lewm",
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile("geno_lewm")

from geno_lewm.metrics import MetricRegistry  # noqa: E402


@dataclass
class RecordingLogger:
    """A structlog-shaped logger that keeps every call as ``(level, event, fields)``.

    It stands in for this package's own logger: like that one it asks for the full
    description of each check (``geno_lewm_full_records``), so tests see every field the
    package knows. A logger without the marker gets only the GenoLeWM family's records
    (tests/test_family_loggers.py).
    """

    geno_lewm_full_records = True
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def info(self, event: str, **fields: Any) -> None:
        """Record an informational event."""
        self.calls.append(("info", event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        """Record a warning event."""
        self.calls.append(("warning", event, fields))

    def events(self, level: str | None = None, event: str | None = None) -> list[dict[str, Any]]:
        """The fields of the recorded calls, filtered by level and event name."""
        return [f for lv, ev, f in self.calls if (level is None or lv == level) and (event is None or ev == event)]


class FamilyLogger:
    """Shaped like the GenoLeWM family's logger: ``debug``/``info``/``warn``/``error(event,
    **fields)`` and no ``warning``; keeps every call as ``(method, event, fields)``. Without
    the full-records marker it gets only the family's records.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def debug(self, event: str, **fields: Any) -> None:
        """Record a debug event."""
        self.calls.append(("debug", event, fields))

    def info(self, event: str, **fields: Any) -> None:
        """Record an informational event."""
        self.calls.append(("info", event, fields))

    def warn(self, event: str, **fields: Any) -> None:
        """Record a warning (the family's spelling)."""
        self.calls.append(("warn", event, fields))

    def error(self, event: str, **fields: Any) -> None:
        """Record an error event."""
        self.calls.append(("error", event, fields))


@pytest.fixture(scope="session", autouse=True)
def session_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """GENO_LEWM_LOG_DIR points at a temporary directory for the whole session, so a logger
    given no directory never writes under the real ``~/.geno-lewm/logs``.
    """
    directory = tmp_path_factory.mktemp("geno-lewm-logs")
    previous = os.environ.get("GENO_LEWM_LOG_DIR")
    os.environ["GENO_LEWM_LOG_DIR"] = str(directory)
    yield directory
    if previous is None:
        os.environ.pop("GENO_LEWM_LOG_DIR", None)
    else:
        os.environ["GENO_LEWM_LOG_DIR"] = previous


@pytest.fixture
def registry() -> MetricRegistry:
    """A fresh registry over the global catalogue, so tests do not see each other's values."""
    return MetricRegistry()


@pytest.fixture
def fresh_default(monkeypatch: pytest.MonkeyPatch) -> MetricRegistry:
    """A fresh default registry (and empty handle caches) for one test; the process's own
    registry and handles come back untouched afterwards.
    """
    import geno_lewm.metrics as metrics_module

    fresh = MetricRegistry()
    monkeypatch.setattr(metrics_module, "_DEFAULT", fresh)
    for cache in ("_COUNTERS", "_GAUGES", "_HISTOGRAMS"):
        monkeypatch.setattr(metrics_module, cache, {})
    return fresh


def parse_prometheus(text: str) -> dict[str, Any]:
    """Exposition text parsed by prometheus_client: family name -> family."""
    parser = pytest.importorskip("prometheus_client.parser")
    return {family.name: family for family in parser.text_string_to_metric_families(text)}


@pytest.fixture
def recording_logger() -> RecordingLogger:
    """A logger that records its calls."""
    return RecordingLogger()


@pytest.fixture
def repo_root() -> Path:
    """The repository root (the directory holding ``geno_lewm/``)."""
    return REPO_ROOT


def convert(rows: list[list[float]], backend: str) -> Any:
    """``rows`` in the form a backend is usually given: lists, a float64 array or a float64 tensor."""
    if backend == "numpy":
        np = pytest.importorskip("numpy")
        return np.array(rows, dtype=np.float64)
    if backend == "torch":
        torch = pytest.importorskip("torch")
        return torch.tensor(rows, dtype=torch.float64)
    return [list(row) for row in rows]


def as_float(value: Any) -> float:
    """A Python float from a float, a NumPy scalar or a 0-d tensor."""
    return float(value.item()) if hasattr(value, "item") else float(value)
