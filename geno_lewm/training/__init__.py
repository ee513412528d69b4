"""Training diagnostics: one module per family of metrics (``collapse``: RFC-0005 §3.6)."""
