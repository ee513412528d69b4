"""The RFC-0005 metrics written the straightforward way, as the benchmarks' yardstick.

One generator expression per definition, no compensated sums, no care for overflow or
cancellation: what a first implementation in plain Python looks like. The benchmarks
time the library against it and check that both agree on ordinary data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Rows = list[list[float]]
Values = tuple[float, float, float, float, float, float]


def _norm(row: Sequence[float]) -> float:
    return math.sqrt(sum(x * x for x in row))


def _distance(a: Sequence[float], b: Sequence[float]) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def _variance_per_dim(m: Rows) -> float:
    n, d = len(m), len(m[0])
    means = [sum(row[j] for row in m) / n for j in range(d)]
    return sum(sum((row[j] - means[j]) ** 2 for row in m) / n for j in range(d)) / d


def _pearson(xs: list[float], ys: list[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    vx = sum((x - mx) ** 2 for x in xs)
    vy = sum((y - my) ** 2 for y in ys)
    return 0.0 if vx == 0 or vy == 0 else cov / math.sqrt(vx * vy)


def naive_values(p: Rows, t: Rows) -> Values:
    """``(pred_cos_mean, pred_l2_mean, target_var_per_dim, pred_var_per_dim,
    pred_target_corr, pairwise_pred_dist_mean)``, one generator expression each.
    """
    n = len(p)
    cosines = []
    for a, b in zip(p, t):
        na, nb = _norm(a), _norm(b)
        cosines.append(0.0 if na == 0 or nb == 0 else sum(x * y for x, y in zip(a, b)) / (na * nb))
    cos_mean = sum(cosines) / n
    l2_mean = sum(_distance(a, b) for a, b in zip(p, t)) / n
    corr = _pearson([x for row in p for x in row], [y for row in t for y in row])
    pairs = n * (n - 1) // 2
    pairwise = sum(_distance(p[i], p[j]) for i in range(n) for j in range(i + 1, n)) / pairs if pairs else 0.0
    return cos_mean, l2_mean, _variance_per_dim(t), _variance_per_dim(p), corr, pairwise
