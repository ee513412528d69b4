"""The detection evaluation suite: real and planted collapses, verified independently, on
which the collapse monitor's criteria are measured (``rfcs/0013-detection-calibration.md``).

Run ``python benchmarks/detection/run.py``; it prints, for the ``rfc`` and ``calibrated``
criteria, the alerted checks of healthy runs, the first detection after each collapse's
onset and the accuracy of the diagnosis, and writes JSON to ``benchmarks/results/``.
"""
