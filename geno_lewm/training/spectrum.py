"""Dimensional collapse: the shape of an embedding distribution, not only its scale.

The RFC-0005 criteria (:mod:`geno_lewm.training.collapse`) look at the *scale* of the
predictions: per-dimension variance and pairwise distances. A run can collapse
*dimensionally* with both intact (an encoder ending in BatchNorm whose outputs fold into
a few directions), and a healthy run whose predictor outputs smaller vectors than its
targets trips the variance criterion at every check. This module measures the *shape*.
Definitions, conventions and the evidence: ``rfcs/0008-dimensional-collapse.md``.

* :func:`spectral_metrics` / :func:`collapse_spectrum` — effective rank (RankMe), the
  share of variance in the top-k directions and the SimSiam std of L2-normalised rows,
  for one batch or for predictions and targets together;
* :func:`gaussian_kl` — the Gaussian regulariser of RFC-0005 §3.2 computed from the
  embeddings, with a stable log-determinant (differentiable for torch tensors that
  require grad); :func:`gaussian_kl_terms` gives its parts;
* :func:`sigreg` — the LeJEPA SIGReg statistic (Epps–Pulley test of normality along
  random directions), a scale-aware isotropy measure;
* :func:`detect_rank_collapse` and :func:`diagnose_collapse` — the opt-in effective-rank
  criteria of the collapse family and the classification of a tripped check.

The computations live in :mod:`geno_lewm.training._spectral`, the criteria and gauges in
the collapse family's tables (:mod:`geno_lewm.training._collapse_metrics`) and the
classification in :mod:`geno_lewm.training.diagnosis`; this module gathers them where
users import them.

Example
-------
>>> rows = [[1.0, 1.0, 0.0], [-1.0, -1.0, 0.0], [2.0, 2.0, 0.0], [-2.0, -2.0, 0.0]]
>>> s = spectral_metrics(rows)
>>> s.effective_rank, s.numerical_rank, s.top_k_share
(1.0, 1, 1.0)
"""

from __future__ import annotations

from geno_lewm.training._collapse_metrics import SPECTRAL_CRITERIA, SPECTRAL_GAUGES, detect_rank_collapse, rank_bounds
from geno_lewm.training._collapse_records import log_spectral_metrics, set_spectral_gauges
from geno_lewm.training._spectral import (
    DEFAULT_EPS,
    DEFAULT_KNOTS,
    DEFAULT_SLICES,
    DEFAULT_T_MAX,
    DEFAULT_TOP_K,
    CollapseSpectrum,
    GaussianKL,
    SpectralMetrics,
    collapse_spectrum,
    covariance_eigenvalues,
    gaussian_kl,
    gaussian_kl_terms,
    sigreg,
    sigreg_gaussian_value,
    spectral_metrics,
)
from geno_lewm.training.diagnosis import DIAGNOSES, Diagnosis, diagnose_collapse

__all__ = [
    "DEFAULT_EPS",
    "DEFAULT_KNOTS",
    "DEFAULT_SLICES",
    "DEFAULT_TOP_K",
    "DEFAULT_T_MAX",
    "DIAGNOSES",
    "SPECTRAL_CRITERIA",
    "SPECTRAL_GAUGES",
    "CollapseSpectrum",
    "Diagnosis",
    "GaussianKL",
    "SpectralMetrics",
    "collapse_spectrum",
    "covariance_eigenvalues",
    "detect_rank_collapse",
    "diagnose_collapse",
    "gaussian_kl",
    "gaussian_kl_terms",
    "log_spectral_metrics",
    "rank_bounds",
    "set_spectral_gauges",
    "sigreg",
    "sigreg_gaussian_value",
    "spectral_metrics",
]
