"""The distribution-free confidence interval of the median (order statistics, binomial ranks).

Torch-free: the timing harness, compare and the gate all use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache


@lru_cache(maxsize=4096)
def order_stat_ranks(n: int, confidence: float) -> tuple[int, int] | None:
    """1-based ranks ``(l, n + 1 - l)`` of the order-statistic CI of the median, or None if n is too small.

    The number of samples below the true median is Binomial(n, 1/2), so
    ``P(x_(l) <= median <= x_(n+1-l)) = 1 - 2 * P(B <= l - 1)``. ``l`` is the largest rank whose
    coverage is still at least ``confidence`` (conservative: coverage >= confidence, never less).
    """
    alpha_half = (1.0 - confidence) / 2.0
    log_half_n = n * math.log(0.5)
    log_nfact = math.lgamma(n + 1)
    cdf = 0.0  # P(B <= k)
    best: int | None = None
    for k in range(0, (n + 1) // 2):
        cdf += math.exp(log_nfact - math.lgamma(k + 1) - math.lgamma(n - k + 1) + log_half_n)
        if cdf > alpha_half:
            break
        best = k + 1  # l - 1 = k  ->  l = k + 1
    return None if best is None else (best, n + 1 - best)


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median: a pair of order statistics.

    Returns ``(x_(l), x_(n+1-l))`` of the sorted samples, with the binomial ranks of
    ``order_stat_ranks`` (exact coverage >= ``confidence``; no interpolation). When there are too few
    samples for any pair of order statistics to reach that coverage (n < 6 at 95 %), returns
    ``(min, max)``, whose coverage ``1 - 2**(1-n)`` is then below ``confidence``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = len(samples)
    if n == 0:
        raise ValueError("median_ci needs at least one sample")
    xs = sorted(samples)
    ranks = order_stat_ranks(n, confidence)
    if ranks is None:
        return xs[0], xs[-1]
    lo, hi = ranks
    return xs[lo - 1], xs[hi - 1]
