"""Where users train: experiment trackers, Lightning and ``torch.distributed``.

* :mod:`geno_lewm.integrations.sinks` — the adapters of the
  :class:`~geno_lewm.integrations.sinks.MetricSink` protocol (W&B, MLflow, TensorBoard, CSV, memory); standard library
  only until an adapter needs its package.
* :mod:`geno_lewm.integrations.lightning` — Lightning callbacks for the collapse monitor
  and the dynamics lenses; importing it imports ``lightning``.
* :mod:`geno_lewm.integrations.metrics_callback` — ``MetricsCallback``: any metric
  (torchmetrics, scikit-learn, a plain callable) on the step outputs; importing it
  imports ``lightning``.
* :mod:`geno_lewm.integrations.distributed` — the ``torch.distributed`` names users import
  (rank, world size, gathering rows, the collapse check of a batch held in shards); the
  calls themselves live in :mod:`geno_lewm._distributed`, below the training families.

Importing this package imports none of the optional frameworks. Design and trade-offs:
``rfcs/0010-integrations.md``, ``rfcs/0011-metrics-callback-and-config.md`` and the layers
of ``rfcs/0012-architecture.md``.
"""

from __future__ import annotations

__all__: list[str] = []
