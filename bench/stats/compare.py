"""Comparison statistics for ``dlbench compare`` and the regression gate; the one import point.

Why three methods: separate benchmark processes on these machines drift up to 46 % apart (between
processes and time windows) while each run's own CI of the median says +-2 %. So

1. one process per side (R = 1): ``ratio_from_samples`` -- bootstrap over raw per-iteration
   samples; honest only about within-process noise;
2. R independent processes per side: ``ratio_from_repeats`` -- the process is the unit, the CI
   comes from the per-repeat figures (hierarchical), never from pooled samples;
3. the gate, which times A and B interleaved in the same time windows: ``ratio_from_slices`` --
   the CI is over the per-slice ratios, in which the drift cancels.

Plus ``exact_ratio`` for deterministic figures, ``hierarchical_summary`` for the row of a
``dlbench run --repeat R``, and ``verdict`` / ``is_regression``. Torch-free; scipy (``scipy.special``,
``scipy.stats``) is imported lazily inside functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from bench.stats.bootstrap import MIN_BOOTSTRAP_N, ratio_from_samples
from bench.stats.estimate import (
    DICT_KEYS,
    RatioEstimate,
    check_confidence,
    check_positive,
    exact_ratio,
    unbounded,
)
from bench.stats.median import median_ci, order_stat_ranks
from bench.stats.verdict import Verdict, is_regression, verdict

__all__ = [
    "DICT_KEYS",
    "MIN_BOOTSTRAP_N",
    "LocationCI",
    "RatioEstimate",
    "Verdict",
    "exact_ratio",
    "hierarchical_summary",
    "is_regression",
    "ratio_from_repeats",
    "ratio_from_samples",
    "range_coverage",
    "ratio_from_slices",
    "sign_test_p",
    "verdict",
]


def _t_quantile(df: float, q: float) -> float:
    from scipy.special import stdtrit

    return float(stdtrit(df, q))


def _t_two_sided_p(df: float, t: float) -> float:
    from scipy.special import stdtr

    return min(1.0, 2.0 * float(stdtr(df, -abs(t))))


def ratio_from_repeats(
    base_medians: Sequence[float] | np.ndarray,
    new_medians: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
) -> RatioEstimate:
    """Ratio from per-repeat figures (one per independent process): Welch t on their logs.

    With ``x_i = log base_i`` (R_b of them) and ``y_j = log new_j`` (R_n):
    ``d = mean(y) - mean(x)``, ``ratio = exp(d)`` (the ratio of geometric means);
    ``v_b = s_x^2 / R_b``, ``v_n = s_y^2 / R_n``, ``se = sqrt(v_b + v_n)``; Welch-Satterthwaite
    ``df = (v_b + v_n)^2 / (v_b^2 / (R_b - 1) + v_n^2 / (R_n - 1))``;
    ``CI = exp(d -+ t_{df, (1+c)/2} * se)``; ``p = 2 P(T_df > |d| / se)``.

    Why: the process is the unit, so the spread between processes is estimated from the
    per-process figures themselves, not from within-process samples (which would cover none of
    the drift). Logs make the interval multiplicative (a ratio, symmetric in new/base) and tame the
    right skew of timings; Welch does not assume equal spread on both sides.

    Edge cases: one repeat on a side -> no estimate of the process variance: CI ``(0, inf)``, no
    p-value (never a fake tight interval). Zero spread on both sides (all repeats identical) -> the
    interval is the point and ``p`` is 1 (equal) or 0 (different), with a note.
    """
    c = check_confidence(confidence)
    b = check_positive("base_medians", base_medians)
    w = check_positive("new_medians", new_medians)
    lb, lw = np.log(b), np.log(w)
    d = float(lw.mean() - lb.mean())
    ratio = math.exp(d)
    if b.size < 2 or w.size < 2:
        return unbounded(
            ratio,
            "repeats",
            b.size,
            w.size,
            c,
            "one repeat on a side: the spread between processes is unknown, the ratio is unbounded",
        )
    vb = float(lb.var(ddof=1)) / b.size
    vw = float(lw.var(ddof=1)) / w.size
    se2 = vb + vw
    if se2 == 0.0:
        p = 1.0 if d == 0.0 else 0.0
        note = "zero spread across repeats on both sides (deterministic or quantised figures?)"
        return RatioEstimate(ratio, ratio, ratio, p, "repeats", b.size, w.size, c, note)
    df = se2**2 / (vb**2 / (b.size - 1) + vw**2 / (w.size - 1))
    se = math.sqrt(se2)
    half = _t_quantile(df, (1.0 + c) / 2.0) * se
    p = _t_two_sided_p(df, d / se)
    note = f"Welch t on log per-repeat figures, df={df:.1f}"
    return RatioEstimate(ratio, math.exp(d - half), math.exp(d + half), p, "repeats", b.size, w.size, c, note)


def sign_test_p(ratios: Sequence[float] | np.ndarray) -> float:
    """Two-sided exact sign test of "the median ratio is 1": ``p = min(1, 2 P(B <= min(k_>, k_<)))``.

    ``k_>`` / ``k_<``: ratios above / below 1; ratios exactly 1 carry no sign and are dropped
    (the usual convention); ``B ~ Binomial(k_> + k_<, 1/2)``, summed exactly in integers.
    """
    r = np.asarray(ratios, dtype=np.float64)
    above, below = int(np.sum(r > 1.0)), int(np.sum(r < 1.0))
    m = above + below
    if m == 0:
        return 1.0
    k = min(above, below)
    tail = sum(math.comb(m, j) for j in range(k + 1)) / 2**m
    return min(1.0, 2.0 * tail)


def ratio_from_slices(ratios: Sequence[float] | np.ndarray, *, confidence: float = 0.95) -> RatioEstimate:
    """The gate's per-slice ratios (``new_time / base_time`` per interleaved slice).

    ``ratio = median(ratios)``; CI: the distribution-free order-statistic CI of the median
    (``median_ci``: ``(r_(l), r_(n+1-l))`` with binomial ranks, coverage >= confidence);
    p-value: the two-sided exact sign test (``sign_test_p``).

    Why the sign test rather than Wilcoxon signed-rank on log ratios: it is the exact dual of the
    order-statistic CI -- the CI excludes 1 iff ``p <= 1 - confidence`` (no ratio exactly 1) -- so
    the verdict (from the CI) and the p-value never disagree; it needs no symmetry of the log
    ratios (a slice hit by another process is a one-sided outlier), whereas Wilcoxon assumes it
    and is dual to the Hodges-Lehmann estimate, not the median we report. The price is power
    (about 64 % efficiency under normal noise): add slices.

    Fewer slices than any order-statistic pair can cover at ``confidence`` (n < 6 at 95 %): CI
    ``(0, inf)`` (``median_ci``'s (min, max) would cover less than claimed); the sign test's p is
    still reported (it cannot be below ``2 / 2**n`` then).
    """
    c = check_confidence(confidence)
    r = check_positive("ratios", ratios)
    n = r.size
    point = float(np.median(r))
    p = sign_test_p(r)
    if order_stat_ranks(n, c) is None:
        note = f"{n} slice(s): too few for an order-statistic CI of the median at {c:g}"
        return unbounded(point, "slices", n, n, c, note, p_value=p)
    lo, hi = median_ci(r.tolist(), c)
    return RatioEstimate(point, float(lo), float(hi), p, "slices", n, n, c, "interleaved slices")


class LocationCI(NamedTuple):
    """A row's center and CI across repeats: ``(center, low, high)`` (unpacks as a 3-tuple)."""

    center: float
    low: float
    high: float


def range_coverage(r: int) -> float:
    """``1 - 2^(1-r)``: the probability that the range of ``r`` i.i.d. values covers their median."""
    return 1.0 - 2.0 ** (1 - r) if r >= 1 else 0.0


def hierarchical_summary(repeat_samples: Sequence[Sequence[float]], confidence: float = 0.95) -> LocationCI:
    """A ``dlbench run --repeat R`` row: the median across R processes and its CI across processes.

    Each repeat (process) is reduced to its median ``m_1..m_R``; ``center = median(m)``, which
    ignores one wild process (another job on the cores made steps up to 7x slower here). The CI
    is built from the ``m_i`` alone -- the process is the unit; pooling raw samples would cover
    within-process noise only -- and never reaches beyond them:

    - R = 1: ``(0, inf)`` -- one process says nothing about the spread between processes.
    - 2 <= R and too few for an order-statistic CI at ``confidence`` (R < 6 at 95 %): the range
      ``(min(m), max(m))``, distribution-free, whose coverage of the median process location is
      ``range_coverage(R) = 1 - 2^(1-R)`` (50 % at R = 2, 94 % at R = 5), below ``confidence``:
      the caller says so (``bench.run.execute.RepeatedTiming`` flags the row). A t-interval would
      claim the nominal level by extrapolating from R - 1 degrees of freedom: at R = 2 its
      quantile is 12.7, and two processes 90x apart gave a "330.9 ms +- 2.5e12 ms" row.
    - R >= 6 (at 95 %): ``median_ci(m)``, distribution-free (coverage >= confidence for the median
      process location whatever the drift's distribution) and robust to a contaminated process,
      matching the median center. Coverage of both regimes is checked by simulation in the tests.
    """
    c = check_confidence(confidence)
    if isinstance(repeat_samples, (str, bytes)) or len(repeat_samples) == 0:
        raise ValueError("repeat_samples: needs at least one repeat (a list of sample lists)")
    meds = np.array(
        [float(np.median(check_positive(f"repeat_samples[{i}]", s))) for i, s in enumerate(repeat_samples)]
    )
    center = float(np.median(meds))
    r = meds.size
    if r == 1:
        return LocationCI(center, 0.0, math.inf)
    if order_stat_ranks(r, c) is not None:
        lo, hi = median_ci(meds.tolist(), c)
        return LocationCI(center, float(lo), float(hi))
    return LocationCI(center, float(meds.min()), float(meds.max()))
