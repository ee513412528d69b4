"""``torch.distributed`` for users: who this rank is, gathering rows, and the collapse check
of a validation batch held in shards.

The moving of data lives in one place, :mod:`geno_lewm._distributed`, below the training
families, so that a monitor works under ``torchrun`` in a plain loop without importing
any integration; the collapse family's mathematics across ranks (sufficient statistics,
the exact gather) lives with the family, in :mod:`geno_lewm.training.collapse`. This
module is where users have found these names, and keeps them importable:

* :func:`rank`, :func:`world_size` — the default process group, without importing torch;
* :func:`all_gather_rows` — concatenate the ranks' ``[n_r, ...]`` tensors in rank order,
  e.g. to feed another lens the whole batch;
* :func:`distributed_collapse_metrics`, :class:`CollapseStatistics`,
  :func:`collapse_statistics`, :func:`merge_statistics` — the collapse check across ranks
  (modes ``gather`` and ``statistics``; see RFC-0010);
* :class:`DistributedCheckError` — another rank could not take part
  (:class:`~geno_lewm.errors.DistributedError`).

Importing this module imports nothing beyond the standard library.
"""

from __future__ import annotations

from geno_lewm._distributed import all_gather_rows, rank, world_size
from geno_lewm.errors import DistributedError
from geno_lewm.training.collapse import (
    DISTRIBUTED_MODES,
    WITHIN_SHARD_VARIANT,
    CollapseStatistics,
    DistributedMode,
    collapse_statistics,
    distributed_collapse_metrics,
    merge_statistics,
)

__all__ = [
    "DISTRIBUTED_MODES",
    "WITHIN_SHARD_VARIANT",
    "CollapseStatistics",
    "DistributedCheckError",
    "DistributedMode",
    "all_gather_rows",
    "collapse_statistics",
    "distributed_collapse_metrics",
    "merge_statistics",
    "rank",
    "world_size",
]

DistributedCheckError = DistributedError
"""Another rank could not take part in a check: :class:`~geno_lewm.errors.DistributedError`."""
