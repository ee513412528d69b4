"""Training diagnostics: the metric families and the pipeline they share.

Families: ``collapse`` (RFC-0005 §3.6, with ``spectrum`` and ``diagnosis``, RFC-0008),
``dynamics``, ``gradients`` and ``credit`` (RFC-0009), ``output_metrics`` (RFC-0011).
Shared: ``alerting`` (the alert policy) and the private pipeline modules ``_criteria``,
``_family``, ``_recording`` and ``_pipeline`` (RFC-0012).
"""
