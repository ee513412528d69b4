"""The torch backend: precision that does not depend on global TF32 switches, no
autograd graph, one host synchronisation, reduced-precision dtypes within their
documented tolerance, devices, bounded memory and the deferred finiteness check.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from geno_lewm.backends import _python  # noqa: E402
from geno_lewm.backends import _torch as backend  # noqa: E402
from geno_lewm.errors import InputError  # noqa: E402
from geno_lewm.training.collapse import CollapseMonitor, compute_collapse_metrics  # noqa: E402

Values = tuple[float, float, float, float, float, float]
ROOT = Path(__file__).resolve().parent.parent

RTOL_FLOAT64 = 1e-9
ATOL_FLOAT64_BOUNDED = 1e-14
RTOL_FLOAT32 = 1e-5
"""The documented tolerance for float32, float16 and bfloat16 tensors (relative)..."""
ATOL_FLOAT32_BOUNDED = 1e-6
"""...and, for the cosine and the correlation (bounded, can cancel to 0), absolute."""

DEVICES = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
SYNCHRONISING_OPS = frozenset(
    {
        "aten._local_scalar_dense.default",
        "aten.nonzero.default",
        "aten.is_nonzero.default",
        "aten.equal.default",
        "aten.masked_select.default",
        "aten._unique2.default",
    }
)
"""Operators that copy data-dependent values to the host (``item()``, ``bool(t)``,
``nonzero``, ...); ``tolist()`` is not an operator, so the one intended transfer is
not among them."""


def _reference(prediction: Any, target: Any) -> Values:
    return _python.collapse_values(_python.prepare(prediction, "prediction"), _python.prepare(target, "target"))


def _ours(prediction: Any, target: Any) -> Values:
    p, t, _ = backend.prepare_pair(prediction, target)
    return backend.collapse_values(p, t)


def assert_within(values: Values, reference: Values, rtol: float, atol_bounded: float) -> None:
    """Relative agreement, with an absolute floor for the cosine (0) and correlation (4)."""
    for index, (value, expected) in enumerate(zip(values, reference)):
        slack = atol_bounded if index in (0, 4) else 0.0
        assert abs(value - expected) <= rtol * abs(expected) + slack, (index, value, expected)


def _batch(n: int, d: int, *, seed: int, dtype: Any = None, loc: float = 0.0, scale: float = 1.0) -> Any:
    generator = torch.Generator().manual_seed(seed)
    values = loc + scale * torch.randn(n, d, generator=generator, dtype=torch.float64)
    return values if dtype is None else values.to(dtype)


class _OpRecorder(TorchDispatchMode):
    """Counts every aten operator that runs while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))

    def synchronisations(self) -> int:
        return sum(count for op, count in self.ops.items() if op in SYNCHRONISING_OPS)


@pytest.fixture
def precision_settings() -> Iterator[None]:
    """Put the global float32 matmul settings back as they were after the test."""
    legacy = torch.get_float32_matmul_precision()
    holders = [h for h in (torch.backends.cuda.matmul, torch.backends.mkldnn.matmul) if hasattr(h, "fp32_precision")]
    saved = [(h, h.fp32_precision) for h in holders]
    yield
    torch.set_float32_matmul_precision(legacy)
    for holder, value in saved:
        holder.fp32_precision = value
    assert torch.get_float32_matmul_precision() == legacy


def _settings() -> tuple[str, ...]:
    holders = [h for h in (torch.backends.cuda.matmul, torch.backends.mkldnn.matmul) if hasattr(h, "fp32_precision")]
    if holders:
        return tuple(h.fp32_precision for h in holders)
    return (torch.get_float32_matmul_precision(), str(torch.backends.cuda.matmul.allow_tf32))


# ------------------------------------------------------------------- agreement
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("n", "d", "loc", "scale"),
    [(2, 3, 0.0, 1.0), (64, 48, 0.0, 1.0), (700, 5, -2.0, 3.0), (150, 16, 1e3, 1e-3)],
    ids=["tiny", "square", "many blocks", "cancellation"],
)
def test_float64_tensors_agree_with_reference(device: str, n: int, d: int, loc: float, scale: float) -> None:
    """float64 tensors give the reference's six numbers to 1e-9, on every device."""
    prediction = _batch(n, d, seed=n + d, loc=loc, scale=scale)
    target = _batch(n, d, seed=n * d, loc=loc, scale=scale)
    values = _ours(prediction.to(device), target.to(device))
    assert_within(values, _reference(prediction, target), RTOL_FLOAT64, ATOL_FLOAT64_BOUNDED)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize(("n", "d", "loc"), [(96, 64, 0.0), (300, 4, 3.0), (40, 200, 0.0)])
def test_reduced_precision_tensors_stay_within_documented_tolerance(
    device: str, dtype: str, n: int, d: int, loc: float
) -> None:
    """float32/float16/bfloat16 tensors (accumulated in float32) agree with the reference
    computed on the very same values to 1e-5 relative (1e-6 absolute for cosine and correlation).
    """
    kind = getattr(torch, dtype)
    prediction = _batch(n, d, seed=n, dtype=kind, loc=loc)
    target = (0.5 * prediction.double() + _batch(n, d, seed=d)).to(kind)
    values = _ours(prediction.to(device), target.to(device))
    assert_within(values, _reference(prediction, target), RTOL_FLOAT32, ATOL_FLOAT32_BOUNDED)


def test_integer_tensors_are_converted_exactly() -> None:
    """Integer tensors are computed in float64, exactly as the reference converts them."""
    prediction = torch.randint(-1000, 1000, (30, 7), generator=torch.Generator().manual_seed(1))
    target = torch.randint(0, 5, (30, 7), generator=torch.Generator().manual_seed(2), dtype=torch.int16)
    assert backend.describe(backend.prepare(prediction, "prediction"))[2] == "float64"
    assert_within(_ours(prediction, target), _reference(prediction, target), RTOL_FLOAT64, ATOL_FLOAT64_BOUNDED)


def test_mixed_dtypes_compute_in_the_wider_one() -> None:
    """A float32 prediction with a float64 target is computed in float64."""
    prediction = _batch(50, 6, seed=3, dtype=torch.float32)
    target = _batch(50, 6, seed=4)
    assert_within(_ours(prediction, target), _reference(prediction, target), RTOL_FLOAT64, ATOL_FLOAT64_BOUNDED)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_nearly_duplicate_rows_are_recomputed_exactly(dtype: str) -> None:
    """Duplicated and nearly duplicated rows keep their exact (tiny) distances, in float32 too."""
    kind = getattr(torch, dtype)
    prediction = _batch(400, 12, seed=8)
    prediction[::4] = prediction[0]
    prediction[1::4] = prediction[2::4] + 1e-6
    prediction = prediction.to(kind)
    target = _batch(400, 12, seed=9, dtype=kind)
    rtol, atol = (RTOL_FLOAT64, ATOL_FLOAT64_BOUNDED) if kind == torch.float64 else (RTOL_FLOAT32, ATOL_FLOAT32_BOUNDED)
    assert_within(_ours(prediction, target), _reference(prediction, target), rtol, atol)


# ------------------------------------------------------------------- precision
def _plain_matmul_error(setting: str) -> float:
    """Largest error of a plain float32 product under ``setting`` (against float64)."""
    torch.set_float32_matmul_precision(setting)
    x = _batch(256, 512, seed=5, dtype=torch.float32)
    exact = x.double() @ x.double().T
    return float(((x @ x.T).double() - exact).abs().max() / exact.abs().max())


@pytest.mark.usefixtures("precision_settings")
@pytest.mark.parametrize("device", DEVICES)
def test_results_do_not_depend_on_global_reduced_precision_switches(device: str) -> None:
    """With TF32 (CUDA) and bfloat16 (oneDNN) allowed for float32 products, the Gram
    blocks still run in full float32: bit-identical results, and the caller's settings
    are back afterwards.
    """
    prediction = _batch(300, 256, seed=6, dtype=torch.float32).to(device)
    target = _batch(300, 256, seed=7, dtype=torch.float32).to(device)
    torch.set_float32_matmul_precision("highest")
    strict = _ours(prediction, target)
    torch.set_float32_matmul_precision("medium")
    before = _settings()
    relaxed = _ours(prediction, target)
    assert _settings() == before
    assert torch.get_float32_matmul_precision() == "medium"
    assert relaxed == strict
    assert_within(relaxed, _reference(prediction.cpu(), target.cpu()), RTOL_FLOAT32, ATOL_FLOAT32_BOUNDED)


@pytest.mark.usefixtures("precision_settings")
def test_the_reduced_precision_switch_is_real_on_this_machine() -> None:
    """Where the switch changes plain products (bf16 on this CPU, TF32 on a GPU), our
    guard is what keeps the results identical; elsewhere this is reported as a skip.
    """
    strict, relaxed = _plain_matmul_error("highest"), _plain_matmul_error("medium")
    if relaxed == strict:
        pytest.skip("float32 products are unaffected by the precision setting on this machine")
    assert relaxed > strict


@pytest.mark.usefixtures("precision_settings")
def test_settings_are_restored_when_a_batch_is_refused() -> None:
    """A NaN found inside the kernel raises, and the caller's settings are still restored."""
    torch.set_float32_matmul_precision("medium")
    before = _settings()
    bad = _batch(5, 3, seed=1, dtype=torch.float32)
    bad[3, 1] = math.nan
    with pytest.raises(InputError, match="row 3, column 1"):
        compute_collapse_metrics(bad, bad.clone(), kl_reg=0.0)
    assert _settings() == before


# -------------------------------------------------------------- autograd, sync
def test_tensors_that_require_grad_are_fine_and_untouched() -> None:
    """Inputs in an autograd graph: same numbers as detached ones, no gradient, no graph
    kept, no in-place change (version counters unchanged), and backward still works.
    """
    leaf = _batch(40, 8, seed=2, dtype=torch.float32).requires_grad_()
    prediction = leaf * 2.0
    target = _batch(40, 8, seed=3, dtype=torch.float32)
    versions = (leaf._version, prediction._version, target._version)
    values = _ours(prediction, target)
    assert values == _ours(prediction.detach(), target)
    assert all(type(v) is float for v in values)
    assert (leaf._version, prediction._version, target._version) == versions
    assert leaf.grad is None
    prediction.sum().backward()
    assert leaf.grad is not None and torch.equal(leaf.grad, torch.full_like(leaf, 2.0))


def test_a_check_synchronises_with_the_host_once() -> None:
    """A normal call reads no value back before its single final transfer (no item(),
    bool(), nonzero()...); the recorder does see such reads where they are expected.
    """
    prediction = _batch(200, 32, seed=4, dtype=torch.float32)
    target = _batch(200, 32, seed=5, dtype=torch.float32)
    with _OpRecorder() as recorder:
        monitor = CollapseMonitor(log_every_steps=10)
        check = monitor.observe(prediction, target, kl_reg=torch.tensor(0.5), step=10)
    assert check is not None
    kl_item = 1  # kl_reg as a 0-d tensor is read with item() by the validation, before the kernel
    assert recorder.synchronisations() == kl_item
    assert recorder.ops["aten.addmm.default"] >= 1

    duplicates = prediction.clone()
    duplicates[1] = duplicates[0]
    with _OpRecorder() as recorder:
        _ours(duplicates, target)
    assert recorder.ops["aten.nonzero.default"] >= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_check_synchronises_exactly_once() -> None:
    """On a GPU, CUDA's own synchronisation detector sees exactly one sync per call."""
    prediction = _batch(256, 1024, seed=1, dtype=torch.float32).cuda()
    target = _batch(256, 1024, seed=2, dtype=torch.float32).cuda()
    p, t, _ = backend.prepare_pair(prediction, target)
    backend.collapse_values(p, t)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with pytest.warns(UserWarning, match="synchroniz") as caught:
            backend.collapse_values(p, t)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(caught) == 1


# ------------------------------------------------------------ inputs and errors
NAN = math.nan


def _nan_at(row: int, column: int, shape: tuple[int, int] = (3, 2)) -> Any:
    value = torch.ones(*shape)
    value[row, column] = NAN
    return value


def _pairs_with_two_problems() -> list[tuple[str, Any, Any]]:
    return [
        ("NaN prediction, bad target dtype", _nan_at(1, 0), torch.zeros(3, 2, dtype=torch.bool)),
        ("NaN prediction, 3-D target", _nan_at(2, 1), torch.zeros(3, 2, 1)),
        ("NaN prediction, shape mismatch", _nan_at(0, 1), torch.ones(4, 2)),
        ("NaN target, shape mismatch", torch.ones(3, 3), _nan_at(1, 1, (2, 3))),
        ("NaN in both", _nan_at(2, 0), _nan_at(0, 0)),
        ("inf target only", torch.ones(3, 2), torch.tensor([[1.0, 2.0], [3.0, -math.inf], [0.0, 0.0]])),
        ("NaN prediction, ragged list target", _nan_at(1, 1), [[1.0, 2.0], [3.0]]),
        ("bad list prediction, NaN target", [[1.0, True]], _nan_at(0, 0)),
    ]


@pytest.mark.parametrize(("case", "prediction", "target"), _pairs_with_two_problems(), ids=lambda c: str(c)[:40])
def test_errors_come_in_the_reference_order(case: str, prediction: Any, target: Any) -> None:
    """With the finiteness check deferred into the kernel, the first error reported is still
    the one the reference reports (prediction, then target, then shapes).
    """
    with pytest.raises(InputError) as expected:
        compute_collapse_metrics(prediction, target, kl_reg=0.0, backend="python")
    with pytest.raises(InputError) as ours:
        compute_collapse_metrics(prediction, target, kl_reg=0.0, backend="torch")
    assert str(ours.value) == str(expected.value)
    assert dict(ours.value.details) == pytest.approx(dict(expected.value.details), nan_ok=True)


def test_prepare_checks_finiteness_before_returning() -> None:
    """The stand-alone prepare() refuses a NaN at once, with the reference's message."""
    with pytest.raises(InputError, match="'embeddings' has a non-finite value nan at row 2, column 0"):
        backend.prepare(_nan_at(2, 0), "embeddings")


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        ("float64", "float64"),
        ("float32", "float32"),
        ("float16", "float32"),
        ("bfloat16", "float32"),
        ("int32", "float64"),
    ],
)
def test_prepared_tensors_are_detached_in_their_work_dtype(dtype: str, expected: str) -> None:
    """prepare() keeps the device, widens float16/bfloat16 to float32 and integers to float64."""
    source = torch.ones(3, 2, dtype=getattr(torch, dtype))
    prepared = backend.prepare(source, "prediction")
    assert backend.describe(prepared) == (3, 2, expected, "cpu")
    assert not prepared.requires_grad


@pytest.mark.parametrize("device", DEVICES)
def test_lists_and_arrays_join_the_tensor_on_its_device(device: str) -> None:
    """A tensor next to a list or an array: both computed on the tensor's device."""
    np = pytest.importorskip("numpy")
    prediction = _batch(20, 4, seed=11)
    target = _batch(20, 4, seed=12)
    reference = _reference(prediction, target)
    for first, second in (
        (prediction.to(device), target.tolist()),
        (prediction.tolist(), target.to(device)),
        (np.asarray(prediction), target.to(device)),
    ):
        check = CollapseMonitor(log_every_steps=1).observe(first, second, kl_reg=0.0, step=1)
        assert check is not None and check.batch is not None
        assert check.batch.backend == "torch"
        assert check.batch.device.startswith(device)
        values = tuple(check.metrics.as_dict().values())[:6]
        assert_within(values, reference, RTOL_FLOAT64, ATOL_FLOAT64_BOUNDED)  # type: ignore[arg-type]


# --------------------------------------------------------------- large batches
LARGE_SCRIPT = """
import json, math, resource, sys
sys.path.insert(0, {root!r})
import torch
from geno_lewm.backends import _torch as backend

n, d = 16_384, 256
prediction = torch.zeros(n, d)
prediction[torch.arange(n), torch.arange(n) % d] = 1.0
target = prediction.flip(0).contiguous()
p, t, _ = backend.prepare_pair(prediction, target)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
values = backend.collapse_values(p, t)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"pairwise": values[5], "peak_growth_kib": after - before}}))
"""


def test_large_batch_has_bounded_memory_and_the_closed_form_answer() -> None:
    """16,384 x 256 float32 on the CPU: the process's peak memory grows far less than one
    N x N float32 matrix (1 GiB), and the one-hot batch gives the closed-form mean
    distance, its 516,096 duplicate pairs recomputed exactly.
    """
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(LARGE_SCRIPT.format(root=str(ROOT)))],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    n, d = 16_384, 256
    assert result["peak_growth_kib"] * 1024 < n * n * 4 / 2
    pairs = n * (n - 1) // 2
    same = d * math.comb(n // d, 2)
    assert result["pairwise"] == pytest.approx(math.sqrt(2) * (pairs - same) / pairs, rel=RTOL_FLOAT32)
