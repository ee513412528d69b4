"""What every backend provides: a typed contract, its results, and the shared tuning.

A backend is a module (``_python``, ``_numpy``, ``_torch``) that satisfies
:class:`Backend`; its spectral kernels are a second module, loaded on demand through
:meth:`Backend.spectral`, that satisfies :class:`SpectralKernels`. Results are
NamedTuples, so a caller reads them by name and a test can still compare them with a
plain tuple. mypy checks each module against the protocols where
:func:`geno_lewm.backends.get_backend` returns it.

Validation happens once, in ``prepare`` (or ``prepare_pair``): every other kernel takes
what ``prepare`` returned and trusts it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from geno_lewm._inputs import shape_mismatch_error

__all__ = [
    "FLAG_RATIO_FLOAT32",
    "FLAG_RATIO_FLOAT64",
    "PAIRWISE_BLOCK_BYTES",
    "Backend",
    "BatchShape",
    "CollapseValues",
    "GaussianKLTerms",
    "PredictionSums",
    "PreparedPair",
    "SpectralKernels",
    "SpectralValues",
    "pairwise_block_rows",
    "prepare_each",
]

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


# ------------------------------------------------------------------ results
class BatchShape(NamedTuple):
    """What the logs say about a prepared batch: its shape, dtype and device."""

    rows: int
    dim: int
    dtype: str
    device: str


class PreparedPair(NamedTuple):
    """A prediction/target pair validated and converted for one backend."""

    prediction: Any
    target: Any
    shape: BatchShape


class CollapseValues(NamedTuple):
    """The six batch statistics of RFC-0005 §3.6 (``kl_reg`` is the caller's)."""

    pred_cos_mean: float
    pred_l2_mean: float
    target_var_per_dim: float
    pred_var_per_dim: float
    pred_target_corr: float
    pairwise_pred_dist_mean: float


class PredictionSums(NamedTuple):
    """Sufficient statistics of a batch of logits: per-row softmax entropies and largest
    probabilities summed over the rows, and how many rows have their argmax in each class.
    """

    entropy_sum: float
    confidence_sum: float
    class_counts: tuple[int, ...]


class SpectralValues(NamedTuple):
    """The spectral metrics of one batch (definitions: ``rfcs/0008-dimensional-collapse.md``)."""

    effective_rank: float
    top_k_share: float
    normalized_std: float
    numerical_rank: int
    total_variance: float
    spread_share: float


class GaussianKLTerms(NamedTuple):
    """The parts of the Gaussian KL of a batch and how the log-determinant was taken
    (``"cholesky"``, ``"eigenvalues"``, or ``"overflow"`` when the norms are not finite).
    """

    mean_sq_norm: float
    trace: float
    log_det: float
    method: str


# ------------------------------------------------------------------ protocols
class SpectralKernels(Protocol):
    """The spectral kernels of one backend, on matrices its ``prepare`` returned."""

    def spectral_values(self, matrix: Any, top_k: int) -> SpectralValues:
        """Effective rank, top-k share, normalised std, numerical rank, total variance, spread share."""

    def covariance_eigenvalues(self, matrix: Any) -> list[float]:
        """The population covariance's eigenvalues above the rounding floor, descending."""

    def gaussian_kl_terms(self, matrix: Any, eps: float) -> GaussianKLTerms:
        """The parts of the Gaussian KL, as Python floats."""

    def gaussian_kl_value(self, source: Any, matrix: Any, eps: float) -> Any:
        """The Gaussian KL as the backend's natural result: a float, or for torch a 0-d
        tensor that is differentiable through ``source`` when it requires grad.
        """

    def sigreg_value(self, matrix: Any, seed: int, slices: int, knots: int, t_max: float) -> float:
        """The SIGReg statistic, as a Python float."""

    def sigreg_result(self, source: Any, matrix: Any, *, seed: int, slices: int, knots: int, t_max: float) -> Any:
        """The SIGReg statistic as the backend's natural result (see :meth:`gaussian_kl_value`)."""


class Backend(Protocol):
    """One way of computing every metric: the pure-Python reference, NumPy or torch."""

    @property
    def NAME(self) -> str:  # noqa: N802 - a module constant, as the backends define it
        """The backend's name: ``python``, ``numpy`` or ``torch``."""

    def prepare(self, value: Any, name: str) -> Any:
        """Validate and convert one ``[N, D]`` input; :class:`~geno_lewm.errors.InputError`
        naming ``name``, the row and the column when it is unusable.
        """

    def prepare_pair(self, prediction: Any, target: Any) -> PreparedPair:
        """Both inputs of a collapse check, with the reference's error order: everything
        wrong with ``prediction``, then ``target``, then a shape mismatch.
        """

    def describe(self, matrix: Any) -> BatchShape:
        """Shape, dtype and device of a prepared matrix."""

    def collapse_values(self, prediction: Any, target: Any) -> CollapseValues:
        """The RFC-0005 statistics of a prepared pair."""

    def prediction_sums(self, logits: Any) -> PredictionSums:
        """Softmax statistics of prepared logits ``[N, C]``."""

    def spectral(self) -> SpectralKernels:
        """The backend's spectral kernels (imported on first use)."""


# ------------------------------------------------------------------ shared helpers
def prepare_each(
    prepare: Callable[[Any, str], Any], describe: Callable[[Any], BatchShape], prediction: Any, target: Any
) -> PreparedPair:
    """:meth:`Backend.prepare_pair` for a backend that prepares each input on its own."""
    p = prepare(prediction, "prediction")
    t = prepare(target, "target")
    shape = describe(p)
    other = describe(t)
    if shape[:2] != other[:2]:
        raise shape_mismatch_error(shape[:2], other[:2])
    return PreparedPair(p, t, shape)


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
