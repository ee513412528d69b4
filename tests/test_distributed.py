"""Collapse checks across torch.distributed ranks: exact gathering of unequal shards,
float64 sufficient statistics, rank-0 recording, identical alerts, and a bad shard that
makes every rank raise instead of hanging.

The multi-process tests start two real processes on the gloo backend (``file://``
rendezvous in a temporary directory); this file is also their worker script.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
WORLD = 2
SHARD_ROWS = (3, 5)
WIDTH = 6


# ======================================================================= worker
def _metrics_dict(metrics: Any) -> dict[str, float]:
    return dict(metrics.as_dict())


def _shards(seed: int, offset: float = 0.0) -> tuple[Any, Any]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    rows = sum(SHARD_ROWS)
    prediction = torch.randn(rows, WIDTH, generator=generator, dtype=torch.float64) + offset
    target = torch.randn(rows, WIDTH, generator=generator, dtype=torch.float64) + offset
    return prediction, target


def _mine(rank: int, whole: Any) -> Any:
    start = sum(SHARD_ROWS[:rank])
    return whole[start : start + SHARD_ROWS[rank]]


def _capture(action: Any) -> dict[str, Any]:
    try:
        value = action()
    except Exception as error:
        return {"error": type(error).__name__, "message": str(error)}
    return {"value": value}


def _worker(rank: int, init: str, out: Path) -> None:
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    from geno_lewm.integrations.distributed import (
        all_gather_rows,
        distributed_collapse_metrics,
        world_size,
    )
    from geno_lewm.integrations.sinks import CSVSink
    from geno_lewm.metrics import MetricRegistry
    from geno_lewm.observability import get_logger
    from geno_lewm.training.alerting import AlertPolicy
    from geno_lewm.training.collapse import CollapseMonitor, compute_collapse_metrics

    results: dict[str, Any] = {"world_size": world_size()}
    prediction, target = _shards(0)
    p, t = _mine(rank, prediction), _mine(rank, target)

    # exact gather: tensors, then nested lists (each through the backend a single process picks)
    metrics, batch, _ = distributed_collapse_metrics(p, t, kl_reg=0.5, step=10)
    results["gather_tensor"] = _metrics_dict(metrics)
    results["gather_tensor_rows"] = batch.batch_size
    results["reference_tensor"] = _metrics_dict(compute_collapse_metrics(prediction, target, kl_reg=0.5))
    metrics, batch, _ = distributed_collapse_metrics(p.tolist(), t.tolist(), kl_reg=0.5, step=10)
    results["gather_list"] = _metrics_dict(metrics)
    results["gather_list_backend"] = batch.backend
    reference = compute_collapse_metrics(prediction.tolist(), target.tolist(), kl_reg=0.5)
    results["reference_list"] = _metrics_dict(reference)
    float32 = compute_collapse_metrics(prediction.float(), target.float(), kl_reg=0.5)
    metrics, _, _ = distributed_collapse_metrics(p.float(), t.float(), kl_reg=0.5, step=10)
    results["gather_float32"] = [_metrics_dict(metrics), _metrics_dict(float32)]

    # spectra of the whole batch
    from geno_lewm.training.spectrum import collapse_spectrum

    _, _, spectra = distributed_collapse_metrics(p, t, kl_reg=0.5, step=10, spectrum=True)
    assert spectra is not None
    whole = collapse_spectrum(prediction, target)
    results["spectrum"] = [spectra.prediction.effective_rank, whole.prediction.effective_rank]

    # sufficient statistics (with a large common offset, where uncentred sums would cancel)
    shifted_p, shifted_t = _shards(1, offset=1e6)
    metrics, batch, _ = distributed_collapse_metrics(
        _mine(rank, shifted_p), _mine(rank, shifted_t), kl_reg=0.5, step=10, mode="statistics"
    )
    results["statistics"] = _metrics_dict(metrics)
    results["statistics_rows"] = batch.batch_size
    results["statistics_shift_data"] = [shifted_p.tolist(), shifted_t.tolist()]

    # kl_reg: the mean over ranks; None on every rank in both modes; a mix refused everywhere
    metrics, _, _ = distributed_collapse_metrics(p, t, kl_reg=1.0 + rank, step=10)
    results["kl_mean"] = metrics.kl_reg
    absent = [
        distributed_collapse_metrics(p, t, kl_reg=None, step=10, mode=mode)[0] for mode in ("gather", "statistics")
    ]
    results["kl_absent"] = [[m.kl_reg, sorted(m.as_dict())] for m in absent]
    results["kl_mixed"] = _capture(lambda: distributed_collapse_metrics(p, t, kl_reg=None if rank else 0.5, step=10))

    # a bad shard on rank 1, a width mismatch, a step mismatch: every rank raises, none hangs
    bad = p.clone()
    if rank == 1:
        bad[1, 2] = float("nan")
    results["bad_shard"] = _capture(lambda: distributed_collapse_metrics(bad, t, kl_reg=0.5, step=10))
    narrow = p[:, :4] if rank == 1 else p
    results["width_mismatch"] = _capture(
        lambda: distributed_collapse_metrics(narrow, narrow, kl_reg=0.5, step=10, mode="statistics")
    )
    results["step_mismatch"] = _capture(lambda: distributed_collapse_metrics(p, t, kl_reg=0.5, step=10 + rank))
    metrics, _, _ = distributed_collapse_metrics(p, t, kl_reg=0.5, step=20)
    results["after_errors"] = _metrics_dict(metrics)

    # the monitor: rank-0 recording by default, every rank with record_on="all"
    for record_on in ("rank0", "all"):
        registry = MetricRegistry()
        logger = get_logger("training", log_dir=out / f"log-{record_on}-{rank}", run_id="run")
        sink = CSVSink(out / f"sink-{record_on}-{rank}.csv")
        monitor = CollapseMonitor(log_every_steps=10, registry=registry, sinks=[sink], record_on=record_on)
        check = monitor.observe(p, t, kl_reg=0.5, step=10, logger=logger)
        assert check is not None
        results[f"monitor_{record_on}"] = {
            "metrics": _metrics_dict(check.metrics),
            "registry": registry.snapshot(),
            "baseline": monitor.initial_pairwise_pred_dist_mean,
        }

    # identical alerts, and a fail-fast policy that stops every rank at the same step
    collapsing = [p * 0.05, p * 0.05]
    monitor = CollapseMonitor(log_every_steps=10, registry=MetricRegistry(), policy=AlertPolicy(on_alert="raise"))
    outcomes = []
    for step, scale in zip((10, 20, 30), (1.0, *collapsing)):
        try:
            check = monitor.observe(p * scale if isinstance(scale, float) else scale, t, kl_reg=0.5, step=step)
            outcomes.append({"step": step, "alerts": [a.criterion for a in check.alerts] if check else None})
        except Exception as error:
            outcomes.append(
                {"step": step, "error": type(error).__name__, "alerts": [a.criterion for a in error.alerts]}
            )
            break
    results["raise_policy"] = outcomes

    # a 'statistics' monitor logs the within-shard convention of the pairwise distance
    logger = get_logger("training", log_dir=out / f"log-statistics-{rank}", run_id="run")
    CollapseMonitor(log_every_steps=10, registry=MetricRegistry(), distributed="statistics").observe(
        p, t, kl_reg=0.5, step=10, logger=logger
    )

    # one-row shards have no pairs within them: their 0 does not become the baseline
    monitor = CollapseMonitor(log_every_steps=10, registry=MetricRegistry(), distributed="statistics")
    monitor.observe(p[:1], t[:1], kl_reg=0.5, step=10)
    results["single_row_baseline"] = [monitor.initial_pairwise_pred_dist_mean]
    check = monitor.observe(p, t, kl_reg=0.5, step=20)
    assert check is not None
    results["single_row_baseline"].append(monitor.initial_pairwise_pred_dist_mean)
    results["single_row_baseline"].append(check.metrics.pairwise_pred_dist_mean)

    # a monitor with distributed='off' checks its own shard
    check = CollapseMonitor(log_every_steps=10, registry=MetricRegistry(), distributed="off").observe(
        p, t, kl_reg=0.5, step=10
    )
    assert check is not None
    results["off"] = [check.batch.batch_size if check.batch else None, _metrics_dict(check.metrics)]
    results["own_shard"] = _metrics_dict(compute_collapse_metrics(p, t, kl_reg=0.5))

    # divergence: NaN on rank 1 only; every rank records the same diverged check, then recovers
    diverging = CollapseMonitor(log_every_steps=10, registry=MetricRegistry(), policy=AlertPolicy())
    diverging.observe(p, t, kl_reg=0.5, step=10)
    nan_shard = p.clone()
    if rank == 1:
        nan_shard[0, 1] = float("nan")
        nan_shard[2, 0] = float("inf")
    diverged = diverging.observe(nan_shard, t, kl_reg=0.5, step=20)
    recovered = diverging.observe(p, t, kl_reg=0.5, step=30)
    results["divergence"] = {
        "alerts": [[a.criterion, a.value] for a in diverged.alerts],
        "count": None if diverged.non_finite is None else diverged.non_finite.count,
        "rows": None if diverged.non_finite is None else diverged.non_finite.rows,
        "first": None if diverged.non_finite is None else diverged.non_finite.first,
        "recovered": [a.criterion for a in recovered.alerts],
        "baseline": diverging.initial_pairwise_pred_dist_mean,
    }

    # the helper: rows of unequal counts concatenated in rank order on every rank
    gathered = all_gather_rows(torch.arange(SHARD_ROWS[rank] * 2, dtype=torch.int64).reshape(-1, 2) + 100 * rank)
    results["all_gather_rows"] = gathered.tolist()

    dist.barrier()
    dist.destroy_process_group()
    (out / f"rank{rank}.json").write_text(json.dumps(results))


# ======================================================================== tests
@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Run the two-rank gloo job once; each rank's results, in rank order."""
    pytest.importorskip("torch")
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    out = tmp_path_factory.mktemp("gloo")
    init = f"file://{out / 'rendezvous'}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, str(rank), init, str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(WORLD)
    ]
    logs = []
    try:
        for worker in workers:
            logs.append(worker.communicate(timeout=240)[0])
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    for rank, (worker, log) in enumerate(zip(workers, logs)):
        assert worker.returncode == 0, f"rank {rank} failed:\n{log[-4000:]}"
    results = [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(WORLD)]
    for result in results:
        result["out"] = out
    return results


def test_two_ranks_form_the_group(ranks: list[dict[str, Any]]) -> None:
    """Both workers ran in a group of two."""
    assert [r["world_size"] for r in ranks] == [WORLD, WORLD]


def test_gather_equals_one_process_on_the_concatenation(ranks: list[dict[str, Any]]) -> None:
    """Unequal shards (3 and 5 rows) give, on every rank, exactly the metrics of the concatenated batch."""
    for result in ranks:
        assert result["gather_tensor"] == result["reference_tensor"]
        assert result["gather_tensor_rows"] == sum(SHARD_ROWS)
        assert result["gather_list"] == result["reference_list"]
        assert result["gather_list_backend"] == "python"
        gathered, single = result["gather_float32"]
        assert gathered == single
    assert ranks[0]["gather_tensor"] == ranks[1]["gather_tensor"]


def test_gather_computes_spectra_of_the_whole_batch(ranks: list[dict[str, Any]]) -> None:
    """With spectra on, the effective rank is the whole batch's, on every rank."""
    for result in ranks:
        gathered, whole = result["spectrum"]
        assert gathered == whole


def _exact_variance(columns: list[list[float]]) -> Fraction:
    total = Fraction(0)
    for column in columns:
        exact = [Fraction(v) for v in column]
        mean = sum(exact) / len(exact)
        total += sum((v - mean) ** 2 for v in exact) / len(exact)
    return total / len(columns)


def test_statistics_match_the_whole_batch_despite_a_large_offset(ranks: list[dict[str, Any]]) -> None:
    """Merged float64 statistics give the variances of the whole batch to 1e-9 relative, at an offset of 1e6."""
    from geno_lewm.training.collapse import compute_collapse_metrics

    shifted_p, shifted_t = ranks[0]["statistics_shift_data"]
    reference = compute_collapse_metrics(shifted_p, shifted_t, kl_reg=0.5, backend="python")
    exact_pred = _exact_variance([list(c) for c in zip(*shifted_p)])
    exact_target = _exact_variance([list(c) for c in zip(*shifted_t)])
    for result in ranks:
        stats = result["statistics"]
        assert result["statistics_rows"] == sum(SHARD_ROWS)
        assert stats["pred_var_per_dim"] == pytest.approx(float(exact_pred), rel=1e-9)
        assert stats["target_var_per_dim"] == pytest.approx(float(exact_target), rel=1e-9)
        for name in ("pred_cos_mean", "pred_l2_mean", "pred_target_corr"):
            assert stats[name] == pytest.approx(getattr(reference, name), rel=1e-9, abs=1e-12)
    assert ranks[0]["statistics"] == ranks[1]["statistics"]


def test_statistics_pairwise_is_the_within_shard_mean(ranks: list[dict[str, Any]]) -> None:
    """The statistics mode's pairwise distance averages over pairs inside each shard."""
    shifted_p = ranks[0]["statistics_shift_data"][0]
    total, pairs, start = 0.0, 0, 0
    for rows in SHARD_ROWS:
        shard = shifted_p[start : start + rows]
        total += math.fsum(math.dist(a, b) for i, a in enumerate(shard) for b in shard[i + 1 :])
        pairs += rows * (rows - 1) // 2
        start += rows
    assert ranks[0]["statistics"]["pairwise_pred_dist_mean"] == pytest.approx(total / pairs, rel=1e-9)
    log = ranks[0]["out"] / "log-statistics-0" / "run.jsonl"
    from geno_lewm.logs import read_log

    variants = {r.name: r.variant for r in read_log(log) if r.event == "training.metric"}
    assert variants["geno_lewm.training.collapse.pairwise_pred_dist_mean"].startswith("unordered_pairs_within_shards")


def test_kl_reg_is_the_mean_over_ranks(ranks: list[dict[str, Any]]) -> None:
    """Ranks passing kl_reg 1 and 2 both get 1.5."""
    assert [r["kl_mean"] for r in ranks] == [1.5, 1.5]


def test_kl_reg_absent_on_every_rank_is_absent_and_a_mix_is_refused(ranks: list[dict[str, Any]]) -> None:
    """kl_reg=None on every rank gives metrics without kl_reg in both modes; None on one rank and
    a number on another makes every rank raise InputError.
    """
    fields = {"pred_cos_mean", "pred_l2_mean", "target_var_per_dim", "pred_var_per_dim"}
    for result in ranks:
        for kl_reg, names in result["kl_absent"]:
            assert kl_reg is None and "kl_reg" not in names and fields <= set(names)
        assert result["kl_mixed"]["error"] == "InputError"
        assert "every rank must pass a kl_reg, or every rank None" in result["kl_mixed"]["message"]


def test_a_bad_shard_on_one_rank_makes_every_rank_raise(ranks: list[dict[str, Any]]) -> None:
    """Rank 1's NaN raises its own InputError there and one naming rank 1 on rank 0; the group stays usable."""
    failing, other = ranks[1]["bad_shard"], ranks[0]["bad_shard"]
    assert failing == {"error": "InputError", "message": "'prediction' has a non-finite value nan at row 1, column 2"}
    assert other["error"] == "InputError"
    assert other["message"].startswith("rank 1 of 2 could not check its shard")
    assert failing["message"] in other["message"]
    assert ranks[0]["after_errors"] == ranks[1]["after_errors"] == ranks[0]["gather_tensor"]


def test_a_diverged_shard_is_one_diverged_check_on_every_rank(ranks: list[dict[str, Any]]) -> None:
    """Non-finite values on rank 1 alone give every rank the same non_finite alert, counted over ranks; rank 1 says
    where; the next finite check clears it.
    """
    zero, one = ranks[0]["divergence"], ranks[1]["divergence"]
    assert zero["alerts"] == one["alerts"] == [["non_finite", 2.0]]
    assert zero["count"] == one["count"] == 2 and zero["rows"] == sum(SHARD_ROWS)
    assert zero["first"] == "on rank 1" and one["first"] == "on rank 1: prediction[0, 1] = nan"
    assert zero["recovered"] == one["recovered"] == []
    assert zero["baseline"] == one["baseline"] == ranks[0]["monitor_rank0"]["baseline"]


def test_mismatched_widths_and_steps_are_refused_on_every_rank(ranks: list[dict[str, Any]]) -> None:
    """Different D or different steps raise the same InputError on both ranks."""
    for scenario, fragment in (("width_mismatch", "same width D"), ("step_mismatch", "same step")):
        outcomes = [r[scenario] for r in ranks]
        assert outcomes[0] == outcomes[1]
        assert outcomes[0]["error"] == "InputError" and fragment in outcomes[0]["message"]


def test_only_rank_zero_records_by_default(ranks: list[dict[str, Any]]) -> None:
    """record_on='rank0': registry, JSON log and sink are written on rank 0 only; both ranks get the check."""
    out = ranks[0]["out"]
    zero, one = ranks[0]["monitor_rank0"], ranks[1]["monitor_rank0"]
    assert zero["metrics"] == one["metrics"] == ranks[0]["gather_tensor"]
    assert zero["baseline"] == one["baseline"]
    assert zero["registry"]["geno_lewm.training.collapse.checks"] == 1.0
    assert one["registry"] == {}
    assert (out / "log-rank0-0" / "run.jsonl").exists() and (out / "sink-rank0-0.csv").exists()
    assert not (out / "log-rank0-1").exists() and not (out / "sink-rank0-1.csv").exists()


def test_record_on_all_writes_on_every_rank(ranks: list[dict[str, Any]]) -> None:
    """record_on='all': each rank writes its registry, log and sink with the same numbers."""
    out = ranks[0]["out"]
    assert ranks[0]["monitor_all"]["registry"] == ranks[1]["monitor_all"]["registry"] != {}
    for rank in range(WORLD):
        assert (out / f"log-all-{rank}" / "run.jsonl").exists() and (out / f"sink-all-{rank}.csv").exists()


def test_alerts_and_fail_fast_are_identical_on_every_rank(ranks: list[dict[str, Any]]) -> None:
    """A collapsing batch raises CollapseDetectedError on both ranks at the same step with the same alerts."""
    assert ranks[0]["raise_policy"] == ranks[1]["raise_policy"]
    first, last = ranks[0]["raise_policy"][0], ranks[0]["raise_policy"][-1]
    assert first == {"step": 10, "alerts": []}
    assert last["step"] == 20 and last["error"] == "CollapseDetectedError"
    assert "pred_var_per_dim" in last["alerts"]


def test_statistics_baseline_waits_for_pairs_within_shards(ranks: list[dict[str, Any]]) -> None:
    """Shards of one row give no within-shard pair, so the baseline is taken at the next check instead."""
    for result in ranks:
        before, after, pairwise = result["single_row_baseline"]
        assert before is None
        assert after == pairwise > 0.0


def test_distributed_off_checks_the_own_shard(ranks: list[dict[str, Any]]) -> None:
    """distributed='off' computes each rank's own shard, as before the group existed."""
    for rank, result in enumerate(ranks):
        rows, metrics = result["off"]
        assert rows == SHARD_ROWS[rank]
        assert metrics == result["own_shard"]


def test_all_gather_rows_concatenates_in_rank_order(ranks: list[dict[str, Any]]) -> None:
    """Integer rows of unequal counts come back concatenated in rank order, on every rank."""
    expected = [[2 * i, 2 * i + 1] for i in range(SHARD_ROWS[0])]
    expected += [[100 + 2 * i, 100 + 2 * i + 1] for i in range(SHARD_ROWS[1])]
    assert ranks[0]["all_gather_rows"] == ranks[1]["all_gather_rows"] == expected


# ------------------------------------------------------------ single process
def test_statistics_merge_equals_the_concatenation() -> None:
    """Statistics of unequal shards, merged in any order, give the whole batch's metrics (pairwise aside)."""
    torch = pytest.importorskip("torch")
    from geno_lewm.integrations.distributed import collapse_statistics, merge_statistics
    from geno_lewm.training.collapse import compute_collapse_metrics

    generator = torch.Generator().manual_seed(3)
    p = torch.randn(11, 4, generator=generator, dtype=torch.float64)
    t = p + 0.3 * torch.randn(11, 4, generator=generator, dtype=torch.float64)
    cuts = [(0, 2), (2, 3), (3, 11)]
    parts = [collapse_statistics(p[a:b], t[a:b]) for a, b in cuts]
    reference = compute_collapse_metrics(p, t, kl_reg=0.25)
    for order in (parts, parts[::-1]):
        merged = merge_statistics(order).finalize(0.25)
        for name in ("pred_cos_mean", "pred_l2_mean", "target_var_per_dim", "pred_var_per_dim", "pred_target_corr"):
            assert getattr(merged, name) == pytest.approx(getattr(reference, name), rel=1e-12)
        assert merged.kl_reg == 0.25
    assert merge_statistics(parts).rows == 11
    one = collapse_statistics(p, t)
    assert one.finalize(0.25).pairwise_pred_dist_mean == pytest.approx(reference.pairwise_pred_dist_mean, rel=1e-12)


def test_statistics_vector_round_trip_and_merge_errors() -> None:
    """as_vector/from_vector are inverses; merging nothing or different widths is refused."""
    pytest.importorskip("torch")
    from geno_lewm.errors import InputError
    from geno_lewm.integrations.distributed import CollapseStatistics, collapse_statistics, merge_statistics

    stats = collapse_statistics([[1.0, 2.0], [3.0, 5.0]], [[0.0, 1.0], [1.0, 1.0]])
    assert CollapseStatistics.from_vector(stats.as_vector(), stats.dim) == stats
    with pytest.raises(InputError, match="at least one"):
        merge_statistics([])
    other = collapse_statistics([[1.0]], [[2.0]])
    with pytest.raises(InputError, match="different widths"):
        merge_statistics([stats, other])


def test_no_group_means_no_distributed_work(registry: Any) -> None:
    """With torch imported but no process group, world_size is 1 and the monitor computes locally."""
    torch = pytest.importorskip("torch")
    from geno_lewm.integrations.distributed import rank, world_size
    from geno_lewm.training.collapse import CollapseMonitor, compute_collapse_metrics

    assert (world_size(), rank()) == (1, 0)
    batch = torch.arange(12, dtype=torch.float64).reshape(4, 3).sin()
    check = CollapseMonitor(log_every_steps=1, registry=registry).observe(batch, batch, kl_reg=0.0, step=1)
    assert check is not None and check.metrics == compute_collapse_metrics(batch, batch, kl_reg=0.0)


def test_distributed_metrics_need_a_group() -> None:
    """Calling the distributed computation without a group is a clear InputError."""
    pytest.importorskip("torch")
    from geno_lewm.errors import InputError
    from geno_lewm.integrations.distributed import distributed_collapse_metrics

    with pytest.raises(InputError, match=r"no torch\.distributed process group is initialised"):
        distributed_collapse_metrics([[1.0]], [[1.0]], kl_reg=0.0)


def test_monitor_refuses_bad_distributed_settings() -> None:
    """Unknown modes, statistics with spectra, and unknown record_on are refused at construction."""
    from geno_lewm.errors import InputError
    from geno_lewm.training.collapse import CollapseMonitor

    with pytest.raises(InputError, match="'distributed' must be 'gather', 'statistics' or 'off': got 'ring'"):
        CollapseMonitor(distributed="ring")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="spectra need the whole batch"):
        CollapseMonitor(distributed="statistics", spectrum=True)
    with pytest.raises(InputError, match="'record_on' must be 'rank0' or 'all'"):
        CollapseMonitor(record_on="leader")  # type: ignore[arg-type]


def test_importing_the_module_imports_no_framework() -> None:
    """geno_lewm.integrations.distributed and .sinks load without torch or numpy."""
    code = (
        "import sys; import geno_lewm.integrations.distributed, geno_lewm.integrations.sinks, "
        "geno_lewm.training.collapse; "
        "print(sorted(m for m in ('torch', 'numpy', 'lightning', 'structlog') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_single_rank_group_computes_locally(tmp_path: Path, registry: Any) -> None:
    """A group of one rank does no distributed work: the monitor's check is the local one."""
    torch = pytest.importorskip("torch")
    import torch.distributed as dist

    from geno_lewm.training.collapse import CollapseMonitor, compute_collapse_metrics

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/rendezvous", rank=0, world_size=1)
    try:
        batch = torch.arange(12, dtype=torch.float64).reshape(4, 3).cos()
        check = CollapseMonitor(log_every_steps=1, registry=registry).observe(batch, batch, kl_reg=0.0, step=1)
        assert check is not None and check.metrics == compute_collapse_metrics(batch, batch, kl_reg=0.0)
        assert registry.value("geno_lewm.training.collapse.checks") == 1.0
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    _worker(int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
