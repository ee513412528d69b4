"""Where telemetry files go when the caller names no directory.

Telemetry, beside the core (standard library only): the run logs
(:func:`geno_lewm.observability.get_logger`) and the Prometheus text file
(:func:`geno_lewm.metrics.metrics_path`) share one default directory, the GenoLeWM
family's: ``$GENO_LEWM_LOG_DIR`` when set, else ``~/.geno-lewm/logs``.

Example
-------
>>> import os
>>> os.environ["GENO_LEWM_LOG_DIR"] = "/tmp/runs"
>>> str(default_log_dir())
'/tmp/runs'
>>> del os.environ["GENO_LEWM_LOG_DIR"]
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEFAULT_LOG_DIR", "LOG_DIR_ENV", "default_log_dir"]

LOG_DIR_ENV = "GENO_LEWM_LOG_DIR"
"""Environment variable naming the log directory when a call gives none."""

DEFAULT_LOG_DIR = "~/.geno-lewm/logs"
"""The log directory when neither the argument nor :data:`LOG_DIR_ENV` gives one (``~`` is
the user's home)."""


def default_log_dir() -> Path:
    """``$GENO_LEWM_LOG_DIR`` if set and not empty, else ``~/.geno-lewm/logs``, with ``~`` expanded."""
    return Path(os.environ.get(LOG_DIR_ENV) or DEFAULT_LOG_DIR).expanduser()
