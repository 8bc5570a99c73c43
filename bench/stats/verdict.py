"""From a ``RatioEstimate`` to a word: faster / slower / same / inconclusive. Torch-free."""

from __future__ import annotations

import math
from typing import Literal

from bench.stats.estimate import RatioEstimate

Verdict = Literal["faster", "slower", "same", "inconclusive"]


def threshold_band(threshold: float) -> tuple[float, float]:
    """The band of immaterial ratios ``[1 / (1 + t), 1 + t]`` (symmetric in log: 5 % either way)."""
    t = float(threshold)
    if not (math.isfinite(t) and t >= 0.0):
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")
    return 1.0 / (1.0 + t), 1.0 + t


def verdict(est: RatioEstimate, *, threshold: float, higher_is_better: bool = False) -> Verdict:
    """The word for ``est`` (ratio = new / base) with the materiality band ``[1/(1+t), 1+t]``.

    Rules, in order (``significant``: the CI excludes 1):

    1. significant and the point ratio outside the band -> a real, material change:
       "slower" if the change is worse, "faster" if better;
    2. the CI inside the band (``1/(1+t) <= ci_low`` and ``ci_high <= 1+t``) -> "same": any change
       is immaterial, significant or not;
    3. significant but the point inside the band -> "same" (real, but below the threshold);
    4. otherwise -> "inconclusive": the CI contains 1 and reaches outside the band ("wider than
       the band" means: not contained in it), so the data can rule out neither "no change" nor a
       material one.

    Direction: for time (``higher_is_better=False``) a ratio > 1 is worse ("slower"); for
    throughput / MFU (``higher_is_better=True``) a ratio > 1 is better ("faster"). An unbounded CI
    ``(0, inf)`` is therefore always "inconclusive". An ``"exact"`` estimate (CI = the point) is
    never inconclusive: any difference is real, and ``threshold=0`` calls every change a change.
    The p-value is not consulted; the CI at the estimate's confidence decides.
    """
    lo_band, hi_band = threshold_band(threshold)
    r = est.ratio
    if est.significant and (r > hi_band or r < lo_band):
        worse = r < 1.0 if higher_is_better else r > 1.0
        return "slower" if worse else "faster"
    if lo_band <= est.ci_low and est.ci_high <= hi_band:
        return "same"
    if est.significant:
        return "same"
    return "inconclusive"


def is_regression(est: RatioEstimate, threshold: float, higher_is_better: bool = False) -> bool:
    """True iff ``verdict`` says worse ("slower" -- for higher-is-better metrics too, whose words flip)."""
    return verdict(est, threshold=threshold, higher_is_better=higher_is_better) == "slower"
