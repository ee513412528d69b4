"""``python -m geno_lewm``: the ``geno-lewm`` command line (see :mod:`geno_lewm.cli`)."""

from __future__ import annotations

from geno_lewm.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
