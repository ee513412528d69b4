"""Where users train: experiment trackers, Lightning and ``torch.distributed``.

* :mod:`geno_lewm.integrations.sinks` — the :class:`~geno_lewm.integrations.sinks.MetricSink`
  protocol and its adapters (W&B, MLflow, TensorBoard, CSV, memory); standard library
  only until an adapter needs its package.
* :mod:`geno_lewm.integrations.lightning` — Lightning callbacks for the collapse monitor
  and the dynamics lenses; importing it imports ``lightning``.
* :mod:`geno_lewm.integrations.metrics_callback` — ``MetricsCallback``: any metric
  (torchmetrics, scikit-learn, a plain callable) on the step outputs; importing it
  imports ``lightning``.
* :mod:`geno_lewm.integrations.distributed` — gathering a validation batch held in shards
  by the ranks of a process group; ``torch`` is imported only when a group is in use.

Importing this package imports none of the optional frameworks. Design and trade-offs:
``rfcs/0010-integrations.md`` and ``rfcs/0011-metrics-callback-and-config.md``.
"""

from __future__ import annotations

__all__: list[str] = []
