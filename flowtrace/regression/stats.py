"""Robust two-sample statistics for timings from a noisy machine.

The shift between two runs is the Hodges–Lehmann estimator (the median of
all pairwise differences), with the distribution-free confidence interval
that inverts the Mann–Whitney test. Both are rank-based, so a few GC pauses
or scheduler hiccups in either run barely move them, unlike a mean.
"""

from __future__ import annotations

from math import ceil, sqrt
from statistics import NormalDist, median

#: Per side, larger samples are thinned to this many evenly spaced quantiles,
#: which keeps the pairwise differences (n × m) cheap without biasing them.
MAX_SAMPLES = 300


def thin(values: list[float], limit: int = MAX_SAMPLES) -> list[float]:
    ordered = sorted(values)
    if len(ordered) <= limit:
        return ordered
    last = len(ordered) - 1
    return [ordered[round(i * last / (limit - 1))] for i in range(limit)]


def hodges_lehmann(
    base: list[float], current: list[float], confidence: float = 0.95
) -> tuple[float, float, float]:
    """(shift, low, high): current minus base, with its confidence interval."""
    xs, ys = thin(base), thin(current)
    n, m = len(xs), len(ys)
    if not n or not m:
        raise ValueError("empty sample")
    diffs = sorted(y - x for y in ys for x in xs)
    total = n * m
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    k = int(total / 2 - z * sqrt(n * m * (n + m + 1) / 12))
    k = min(max(k, 0), (total - 1) // 2)
    return median(diffs), diffs[k], diffs[total - 1 - k]


def nearest_rank(values: list[float], q: float) -> float:
    """The nearest-rank percentile: the ⌈q·n⌉-th smallest value (``q`` in [0, 1]).

    On small samples the high percentiles reach the tail (p99 of 20 values is
    the largest), and the result is always a value that was measured.
    """
    if not values:
        raise ValueError("empty sample")
    ordered = sorted(values)
    return ordered[max(1, ceil(q * len(ordered) - 1e-9)) - 1]
