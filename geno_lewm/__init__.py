"""geno_lewm: diagnostics for JEPA-style world models, above all representation collapse.

The core (``geno_lewm.training.collapse``, ``geno_lewm.metrics``, ``geno_lewm.errors``)
needs only the standard library; NumPy and torch backends, the structured logger and the
log reader are loaded only when used. Importing this package imports none of them.

Example
-------
>>> from geno_lewm.training.collapse import compute_collapse_metrics
>>> m = compute_collapse_metrics([[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]], kl_reg=0.0)
>>> m.pred_cos_mean
1.0
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
