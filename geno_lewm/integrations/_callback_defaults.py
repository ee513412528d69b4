"""The defaults of the Lightning callbacks' own options, in a module that imports no
framework: the callbacks take their defaults from here, and so does the monitoring
configuration (:mod:`geno_lewm.config`), which must not import Lightning to describe them.

What the monitors themselves default to (schedules, thresholds, policies) is read from
the monitors' own signatures and dataclasses, not restated here.
"""

from __future__ import annotations

import os
from typing import Literal

__all__ = [
    "COLLAPSE_LOG_PREFIX",
    "COLLAPSE_NUM_BATCHES",
    "DYNAMICS_LOG_PREFIX",
    "GRADIENTS_LOG_PREFIX",
    "METRICS_LOG_TO_MODULE",
    "METRICS_NAME_FORMAT",
    "METRICS_VAL_EVERY_N_EPOCHS",
    "PROG_BAR",
    "RECORD_ON",
    "STAGES",
    "Stage",
    "auto_log_pretty",
]

Stage = Literal["train", "val", "test"]

COLLAPSE_LOG_PREFIX = "collapse/"
"""Prefix of the names the collapse callback gives ``pl_module.log``."""
COLLAPSE_NUM_BATCHES = 1
"""Validation batches whose rows make up one checked batch."""
DYNAMICS_LOG_PREFIX = "dynamics/"
"""Prefix of the names the prediction-dynamics callback gives ``pl_module.log``."""
GRADIENTS_LOG_PREFIX = "gradients/"
"""Prefix of the names the gradient-geometry callback gives ``pl_module.log``."""
PROG_BAR = False
"""Whether the callbacks show their values in the progress bar."""
STAGES: tuple[Stage, ...] = ("train", "val", "test")
"""The stages the metrics callback watches."""
METRICS_VAL_EVERY_N_EPOCHS = 1
"""The metrics callback's validation report period, in epochs."""
METRICS_LOG_TO_MODULE = True
"""Whether the metrics callback sends its values to ``pl_module.log``."""
METRICS_NAME_FORMAT = "{stage}/{name}"
"""The name the metrics callback gives ``pl_module.log``."""
RECORD_ON: Literal["rank0", "all"] = "rank0"
"""Which ranks write the registry, the log and the sinks."""


def auto_log_pretty() -> bool:
    """The ``pretty`` of the run log a callback opens itself (``logger="auto"``): the
    human-readable mirror on standard error only when ``GENO_LEWM_LOG_FORMAT=pretty`` asks
    for it, not merely because standard error is a terminal, where it would interleave with
    Lightning's progress bar and its own console output. The JSON file is written either way.
    """
    from geno_lewm.observability import LOG_FORMAT_ENV

    return os.environ.get(LOG_FORMAT_ENV, "").strip().lower() == "pretty"
