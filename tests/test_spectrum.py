"""Spectral metrics of a batch: the pure-Python linear algebra, known spectra, the edge
cases that collapse produces, agreement across backends, and input handling.
"""

from __future__ import annotations

import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from conftest import convert
from hypothesis import given, settings
from hypothesis import strategies as st

from geno_lewm._linalg import cholesky_log_det, symmetric_eigenvalues, tridiagonal_eigenvalues
from geno_lewm.errors import InputError
from geno_lewm.training.collapse import compute_collapse_metrics
from geno_lewm.training.spectrum import (
    SpectralMetrics,
    collapse_spectrum,
    covariance_eigenvalues,
    spectral_metrics,
)

BACKENDS = ["python", "numpy", "torch"]


def hadamard(order: int) -> list[list[int]]:
    """Sylvester's Hadamard matrix of a power-of-two order: +-1 entries, orthogonal rows and columns."""
    matrix = [[1]]
    while len(matrix) < order:
        matrix = [row + row for row in matrix] + [row + [-x for x in row] for row in matrix]
    return matrix


def low_rank_batch(n: int, d: int, scales: list[float]) -> list[list[float]]:
    """``sum_i scales[i] * u_i v_i^T`` with orthogonal, zero-mean +-1 columns u_i (length n)
    and orthogonal +-1 vectors v_i (length d): singular values ``scales[i] * sqrt(n * d)``.
    """
    hn, hd = hadamard(n), hadamard(d)
    u = [[hn[r][i + 1] for r in range(n)] for i in range(len(scales))]  # column 0 is all ones: skipped
    v = [hd[i + 1] for i in range(len(scales))]
    return [[sum(s * u[i][r] * v[i][c] for i, s in enumerate(scales)) for c in range(d)] for r in range(n)]


def entropy_rank(weights: list[float]) -> float:
    """Exp of the Shannon entropy of ``weights`` normalised to sum to 1."""
    total = sum(weights)
    return math.exp(-sum(w / total * math.log(w / total) for w in weights if w > 0))


def close(a: float, b: float, rel: float = 1e-9, abs_: float = 1e-12) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def assert_spectra_agree(a: SpectralMetrics, b: SpectralMetrics, rel: float = 1e-9) -> None:
    assert a.numerical_rank == b.numerical_rank
    assert (a.top_k, a.batch_size, a.dim) == (b.top_k, b.batch_size, b.dim)
    for name in ("effective_rank", "top_k_share", "normalized_std", "total_variance", "spread_share"):
        assert close(getattr(a, name), getattr(b, name), rel), name


# ------------------------------------------------------------- linear algebra
@pytest.mark.parametrize("n", [1, 2, 3, 7, 40])
def test_eigenvalues_match_numpy_eigvalsh(n: int) -> None:
    """Householder + QL eigenvalues of a random symmetric matrix agree with LAPACK's to 1e-13 of the norm."""
    np = pytest.importorskip("numpy")
    a = np.random.default_rng(n).standard_normal((n, n))
    a = a + a.T
    ours = np.array(symmetric_eigenvalues(a.tolist()))
    reference = np.linalg.eigvalsh(a)
    assert np.max(np.abs(ours - reference)) <= 1e-13 * np.max(np.abs(reference))


def test_eigenvalues_of_a_rank_deficient_gram_matrix() -> None:
    """A 60 x 60 Gram matrix of rank 3 gives its 3 eigenvalues and 57 that are zero to rounding."""
    np = pytest.importorskip("numpy")
    x = np.random.default_rng(0).standard_normal((60, 3))
    gram = x @ x.T
    ours = np.array(symmetric_eigenvalues(gram.tolist()))
    reference = np.linalg.eigvalsh(gram)
    assert np.max(np.abs(ours - reference)) <= 1e-12 * reference[-1]
    assert np.all(np.abs(ours[:-3]) <= 1e-12 * reference[-1])


@pytest.mark.parametrize(("n", "a", "b"), [(1, 2.0, 0.0), (5, 2.0, -1.0), (31, 0.5, 3.0)])
def test_tridiagonal_eigenvalues_match_the_toeplitz_closed_form(n: int, a: float, b: float) -> None:
    """A tridiagonal Toeplitz matrix has eigenvalues a + 2 b cos(k pi / (n + 1))."""
    expected = sorted(a + 2 * b * math.cos(k * math.pi / (n + 1)) for k in range(1, n + 1))
    ours = tridiagonal_eigenvalues([a] * n, [b] * (n - 1))
    assert all(math.isclose(x, y, abs_tol=1e-13 * (abs(a) + 2 * abs(b))) for x, y in zip(ours, expected))


def test_eigenvalues_of_diagonal_and_zero_matrices_are_exact() -> None:
    """Diagonal matrices need no iteration: their entries come back exactly, sorted."""
    assert symmetric_eigenvalues([[3.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 2.0]]) == [-1.0, 2.0, 3.0]
    assert symmetric_eigenvalues([[0.0] * 4 for _ in range(4)]) == [0.0] * 4
    assert symmetric_eigenvalues([]) == []


@settings(max_examples=25)
@given(
    st.integers(1, 9).flatmap(
        lambda n: st.lists(
            st.lists(st.floats(-100, 100, allow_nan=False), min_size=n, max_size=n), min_size=n, max_size=n
        )
    )
)
def test_eigenvalues_sum_to_the_trace_and_ignore_permutations(rows: list[list[float]]) -> None:
    """The eigenvalues sum to the trace, and a symmetric permutation of the matrix leaves them unchanged."""
    n = len(rows)
    sym = [[(rows[i][j] + rows[j][i]) / 2 for j in range(n)] for i in range(n)]
    values = symmetric_eigenvalues(sym)
    scale = max(1.0, *(abs(x) for row in sym for x in row))
    assert math.isclose(math.fsum(values), math.fsum(sym[i][i] for i in range(n)), abs_tol=1e-11 * n * scale)
    order = list(range(n))[::-1]
    permuted = [[sym[i][j] for j in order] for i in order]
    assert all(math.isclose(x, y, abs_tol=1e-11 * n * scale) for x, y in zip(values, symmetric_eigenvalues(permuted)))


def test_cholesky_log_det_matches_exact_determinants() -> None:
    """The log-determinant by Cholesky equals the log of the exact (Fraction) determinant; non-PD matrices give None."""
    a = [[4, 2, 0], [2, 5, 1], [0, 1, 3]]
    det = Fraction(4) * (5 * 3 - 1) - 2 * (2 * 3 - 0)  # cofactor expansion, exact
    log_det = cholesky_log_det([[float(x) for x in row] for row in a])
    assert log_det is not None
    assert math.isclose(log_det, math.log(det), rel_tol=1e-14)
    assert cholesky_log_det([[1.0, 2.0], [2.0, 1.0]]) is None
    assert cholesky_log_det([[1.0, 1.0], [1.0, 1.0]]) is None


# ------------------------------------------------------------- known spectra
@pytest.mark.parametrize("backend", BACKENDS)
def test_identity_like_batch_has_full_effective_rank(backend: str) -> None:
    """Rows +-e_i (2D rows in D dims): effective rank D, top-k share k/D, normalised std 1/sqrt(D)."""
    d = 8
    rows = [[float(s) if j == i else 0.0 for j in range(d)] for i in range(d) for s in (1, -1)]
    s = spectral_metrics(convert(rows, backend), top_k=3, backend=backend)
    assert close(s.effective_rank, d)
    assert close(s.top_k_share, 3 / d)
    assert close(s.normalized_std, 1 / math.sqrt(d))
    assert s.numerical_rank == d
    assert close(s.total_variance, 1.0)  # each dimension: variance 2 / (2 d)
    assert close(s.spread_share, 1.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scales", [[1.0], [1.0, 1.0], [3.0, 2.0, 0.5], [1.0, 1e-3, 1e-6, 1.0]])
def test_rank_k_batch_has_the_closed_form_effective_rank(backend: str, scales: list[float]) -> None:
    """A batch built from k orthogonal directions has numerical rank k and RankMe exp(H(s / sum s))."""
    rows = low_rank_batch(16, 32, scales)
    s = spectral_metrics(convert(rows, backend), top_k=len(scales), backend=backend)
    assert s.numerical_rank == len(scales)
    assert close(s.effective_rank, entropy_rank(scales))
    assert close(s.top_k_share, 1.0)
    assert close(s.total_variance, sum(x * x for x in scales) * 32)  # sum of squared singular values / N


@pytest.mark.parametrize("backend", BACKENDS)
def test_batchnorm_style_batch_keeps_unit_variance_but_has_rank_two(backend: str) -> None:
    """Every column a copy of one of two orthogonal +-1 patterns: per-dimension variance 1, like
    isotropic data, so the RFC metrics see nothing; its effective rank is 2.
    """
    h = hadamard(32)
    a, b = h[1], h[2]
    rows = [[float(a[r] if c % 2 == 0 else b[r]) for c in range(64)] for r in range(32)]
    data = convert(rows, backend)
    s = spectral_metrics(data, backend=backend)
    assert close(s.effective_rank, 2.0)
    assert s.numerical_rank == 2
    assert close(s.top_k_share, 1.0)
    metrics = compute_collapse_metrics(data, data, kl_reg=0.0, backend=backend)
    assert close(metrics.pred_var_per_dim, 1.0)


def test_covariance_eigenvalues_match_numpy() -> None:
    """The covariance eigenvalues equal numpy.linalg.eigvalsh of the population covariance, N < D and N > D."""
    np = pytest.importorskip("numpy")
    for shape in [(20, 50), (80, 12)]:
        x = np.random.default_rng(1).standard_normal(shape) + 3.0
        ours = np.array(covariance_eigenvalues(x.tolist(), backend="python"))
        reference = np.linalg.eigvalsh(np.cov(x.T, bias=True))[::-1][: min(shape[0] - 1, shape[1])]
        assert ours.shape == reference.shape
        assert np.max(np.abs(ours - reference)) <= 1e-12 * reference[0]


def test_pure_python_spectrum_matches_eigvalsh_at_the_rfc_batch_size() -> None:
    """At 256 x 1024 (N <= D: the 256 x 256 Gram side), the pure-Python eigenvalues equal
    numpy.linalg.eigvalsh of the covariance's Gram form to 1e-12 of the largest, and the
    effective rank agrees to 1e-12 relative.
    """
    np = pytest.importorskip("numpy")
    x = np.random.default_rng(256).standard_normal((256, 1024))
    ours = np.array(covariance_eigenvalues(x.tolist(), backend="python"))
    centred = x - x.mean(axis=0)
    reference = np.linalg.eigvalsh(centred @ centred.T / 256)[::-1][:255]
    assert ours.shape == (255,)
    assert np.max(np.abs(ours - reference)) <= 1e-12 * reference[0]
    singular = np.sqrt(reference)
    p = singular / singular.sum()
    assert close(spectral_metrics(x.tolist(), backend="python").effective_rank, math.exp(-(p * np.log(p)).sum()), 1e-12)


def test_isotropic_effective_rank_is_biased_low_at_small_batch() -> None:
    """Isotropic D = 256 data: about 205 at N = 256 and 247 at N = 1024 (the documented bias)."""
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(0)
    small = spectral_metrics(rng.standard_normal((256, 256)), backend="numpy").effective_rank
    large = spectral_metrics(rng.standard_normal((1024, 256)), backend="numpy").effective_rank
    assert 200 < small < 210
    assert 243 < large < 251


# ---------------------------------------------------------- collapse edge cases
@pytest.mark.parametrize("backend", BACKENDS)
def test_identical_rows_give_numbers(backend: str) -> None:
    """A batch of identical rows: effective rank 0, top-k share 1, normalised std 0, rank 0, no spread."""
    rows = [[0.1, -2.5, 3.0, 7.25]] * 6
    s = spectral_metrics(convert(rows, backend), backend=backend)
    assert (s.effective_rank, s.top_k_share, s.normalized_std, s.numerical_rank) == (0.0, 1.0, 0.0, 0)
    assert (s.total_variance, s.spread_share) == (0.0, 0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nearly_identical_rows_give_finite_numbers(backend: str) -> None:
    """Rows equal up to 1e-12 relative noise: finite metrics, a spread share near 0."""
    noise = [[((7 * r + 3 * c) % 11 - 5) * 1e-12 for c in range(5)] for r in range(9)]
    rows = [[1.0 + 2.0 * c + e for c, e in enumerate(row)] for row in noise]
    s = spectral_metrics(convert(rows, backend), backend=backend)
    assert all(math.isfinite(x) for x in (s.effective_rank, s.top_k_share, s.normalized_std, s.total_variance))
    assert s.spread_share < 1e-20
    assert s.normalized_std < 1e-10


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(1, 5), (2, 5), (5, 50), (9, 1)])
def test_small_and_wide_batches_give_numbers(backend: str, shape: tuple[int, int]) -> None:
    """One row, two rows, N <= D and D = 1 all give finite metrics within their ranges."""
    n, d = shape
    rows = [[math.sin(1.0 + 3 * r + 7 * c) for c in range(d)] for r in range(n)]
    s = spectral_metrics(convert(rows, backend), backend=backend)
    assert 0.0 <= s.effective_rank <= min(n - 1, d) + 1e-9
    assert s.numerical_rank <= min(n - 1, d)
    assert 0.0 <= s.top_k_share <= 1.0
    assert 0.0 <= s.normalized_std <= 1.0
    assert 0.0 <= s.spread_share <= 1.0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [1e-300, 1e-150, 1e150, 1e300])
def test_extreme_magnitudes_give_the_unit_scale_shape(backend: str, scale: float) -> None:
    """The shape metrics of a batch scaled to 1e+-300 equal those at unit scale (power-of-two rescaling)."""
    rows = [[math.cos(0.5 + 2 * r + 5 * c) for c in range(6)] for r in range(10)]
    unit = spectral_metrics(convert(rows, backend), backend=backend)
    scaled = spectral_metrics(convert([[x * scale for x in row] for row in rows], backend), backend=backend)
    for name in ("effective_rank", "top_k_share", "normalized_std", "spread_share"):
        assert close(getattr(scaled, name), getattr(unit, name), rel=1e-12), name
    assert scaled.numerical_rank == unit.numerical_rank


@settings(max_examples=20)
@given(
    st.lists(
        st.lists(st.floats(-1e3, 1e3).filter(lambda x: x == 0.0 or abs(x) > 1e-100), min_size=3, max_size=3),
        min_size=2,
        max_size=8,
    ),
    st.integers(-200, 200),
)
def test_power_of_two_scaling_leaves_the_shape_bit_identical(rows: list[list[float]], exponent: int) -> None:
    """Multiplying a batch by 2**k changes no shape metric by a single bit (pure Python)."""
    scaled = [[math.ldexp(x, exponent) for x in row] for row in rows]
    a = spectral_metrics(rows, backend="python")
    b = spectral_metrics(scaled, backend="python")
    assert (a.effective_rank, a.top_k_share, a.numerical_rank, a.spread_share) == (
        b.effective_rank,
        b.top_k_share,
        b.numerical_rank,
        b.spread_share,
    )


# ------------------------------------------------------------ backend agreement
def random_batches() -> list[tuple[str, list[list[float]]]]:
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(7)
    return [
        ("tall", rng.standard_normal((60, 12)).tolist()),
        ("wide", rng.standard_normal((12, 60)).tolist()),
        ("square", rng.standard_normal((24, 24)).tolist()),
        ("offset", (1e3 + 1e-3 * rng.standard_normal((30, 20))).tolist()),
        ("rank3", (rng.standard_normal((40, 3)) @ rng.standard_normal((3, 25))).tolist()),
        ("heavy", rng.standard_cauchy((50, 10)).tolist()),
    ]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_vectorised_backends_agree_with_the_reference(backend: str) -> None:
    """NumPy and torch (float64) give the pure-Python spectra to 1e-9 relative on varied batches."""
    for name, rows in random_batches():
        reference = spectral_metrics(rows, top_k=4, backend="python")
        other = spectral_metrics(convert(rows, backend), top_k=4, backend=backend)
        try:
            assert_spectra_agree(other, reference)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from None


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_low_precision_tensors_are_analysed_in_float64(dtype: str) -> None:
    """A float32/float16/bfloat16 tensor gets the reference spectrum of its own (exactly representable) values."""
    torch = pytest.importorskip("torch")
    tensor = torch.randn(40, 16, generator=torch.Generator().manual_seed(3)).to(getattr(torch, dtype))
    reference = spectral_metrics(tensor.double().tolist(), backend="python")
    assert_spectra_agree(spectral_metrics(tensor, backend="torch"), reference)


def test_torch_input_requiring_grad_is_fine_and_untouched() -> None:
    """A tensor that requires grad is read without error and without building a graph on it."""
    torch = pytest.importorskip("torch")
    tensor = torch.randn(20, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    s = spectral_metrics(tensor)
    assert s.numerical_rank == 8
    assert tensor.grad is None


def test_collapse_spectrum_pairs_prediction_and_target() -> None:
    """collapse_spectrum gives each batch's own spectral metrics and names the backend."""
    pred = low_rank_batch(8, 8, [1.0])
    target = low_rank_batch(8, 8, [1.0, 1.0, 1.0])
    spectrum = collapse_spectrum(pred, target, backend="python")
    assert spectrum.prediction == spectral_metrics(pred, backend="python")
    assert spectrum.target == spectral_metrics(target, backend="python")
    assert spectrum.backend == "python"
    assert spectrum.compute_seconds >= 0.0


# ----------------------------------------------------------------- inputs
@pytest.mark.parametrize("top_k", [0, -1, 1.5, True, "3", None])
def test_bad_top_k_is_refused_with_the_common_message(top_k: Any) -> None:
    """top_k must be a positive integer; the message names it and the value."""
    with pytest.raises(InputError, match=r"^'top_k' must be a positive integer: got "):
        spectral_metrics([[1.0, 2.0], [3.0, 4.0]], top_k=top_k)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "'embeddings' is empty"),
        ([[1.0, float("nan")]], "'embeddings' has a non-finite value nan at row 0, column 1"),
        ([[1.0, 2.0], [3.0]], "'embeddings' is ragged"),
        ([1.0, 2.0], "'embeddings' must be 2-D"),
    ],
)
def test_bad_batches_are_refused(value: Any, message: str) -> None:
    """A bad batch raises InputError naming the argument, row and column."""
    with pytest.raises(InputError, match=message.replace("[", r"\[")):
        spectral_metrics(value)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_non_finite_arrays_and_tensors_are_refused(backend: str) -> None:
    """A NaN in an array or tensor is found (on the tensor's device) and named by row and column."""
    rows = [[1.0, 2.0], [3.0, float("nan")], [0.0, 1.0]]
    with pytest.raises(InputError, match="'embeddings' has a non-finite value nan at row 1, column 1"):
        spectral_metrics(convert(rows, backend), backend=backend)
    with pytest.raises(InputError, match="'prediction' has a non-finite value nan at row 1, column 1"):
        collapse_spectrum(convert(rows, backend), convert(rows, backend), backend=backend)


def test_mismatched_prediction_and_target_are_refused() -> None:
    """collapse_spectrum refuses batches of different shapes."""
    with pytest.raises(InputError, match="same shape"):
        collapse_spectrum([[1.0, 2.0]], [[1.0, 2.0, 3.0]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_inputs_are_not_modified(backend: str) -> None:
    """The batch is only read: lists, arrays and tensors are unchanged afterwards."""
    rows = [[1.0, 2.0, 3.0], [4.0, 5.0, 7.0], [1.0, 2.0, 3.0]]
    data = convert(rows, backend)
    before = data.tolist() if hasattr(data, "tolist") else [list(r) for r in data]
    spectral_metrics(data, backend=backend)
    after = data.tolist() if hasattr(data, "tolist") else [list(r) for r in data]
    assert after == before


def test_importing_the_spectrum_module_imports_no_heavy_library(repo_root: Path) -> None:
    """geno_lewm.training.spectrum imports neither numpy nor torch, and the collapse module does not import it."""
    code = (
        "import sys, geno_lewm.training.collapse as c\n"
        "assert 'geno_lewm.training.spectrum' not in sys.modules\n"
        "import geno_lewm.training.spectrum as s\n"
        "s.spectral_metrics([[1.0, 2.0], [3.0, 5.0]])\n"
        "print(sorted(m for m in ('numpy', 'torch', 'structlog', 'pydantic') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo_root)
    assert result.stdout.strip() == "[]"
