"""Ratio of medians of raw per-iteration samples (one process per side): bootstrap CI, Mann-Whitney p.

Honest only about what it covers: the noise *within* one process and time window. Separate
processes on these machines drift up to 46 % apart while this CI says +-2 %; compare repeats
(``ratio_from_repeats``) or interleaved slices (``ratio_from_slices``) for a verdict across processes.
Torch-free; scipy is imported lazily.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from bench.stats.estimate import RatioEstimate, check_confidence, check_positive, unbounded

#: Below this many samples on a side the percentile bootstrap of a median under-covers badly (the
#: bootstrap median takes only a handful of values); the CI is then reported as (0, inf).
MIN_BOOTSTRAP_N = 5

#: Side sizes up to this use an exact / permutation Mann-Whitney null when there are ties
#: (scipy's "auto" would fall back to the normal approximation, poor at small n).
_SMALL_MWU_N = 8


def bootstrap_medians(sorted_x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` medians of bootstrap resamples of ``sorted_x`` (sorted ascending), in O(n_boot).

    Resampling n values uniformly from the n sorted samples is ``x[floor(n * U_i)]`` for iid
    uniform ``U_i``; ``x`` is sorted, so the k-th order statistic of the resample is
    ``x[floor(n * U_(k))]``, and ``U_(k) ~ Beta(k, n + 1 - k)``. Odd n: the median is the
    ``m = (n + 1) / 2``-th order statistic. Even n: the mean of the m-th and (m+1)-th (``m = n / 2``);
    given ``U_(m) = u`` the other ``n - m`` draws are iid uniform on ``(u, 1)``, so
    ``U_(m+1) = u + (1 - u) * Beta(1, n - m)``. This has exactly the distribution of the medians of
    ``x[rng.integers(0, n, size=(n_boot, n))]`` (the plain bootstrap, checked in the tests) without
    building the ``n_boot x n`` matrix, so any n costs the same.
    """
    n = sorted_x.size
    if n % 2:
        m = (n + 1) // 2
        u = rng.beta(m, n + 1 - m, size=n_boot)
        return sorted_x[np.minimum((n * u).astype(np.int64), n - 1)]
    m = n // 2
    u1 = rng.beta(m, n + 1 - m, size=n_boot)
    u2 = u1 + (1.0 - u1) * rng.beta(1, n - m, size=n_boot)
    i1 = np.minimum((n * u1).astype(np.int64), n - 1)
    i2 = np.minimum((n * u2).astype(np.int64), n - 1)
    return 0.5 * (sorted_x[i1] + sorted_x[i2])


def _mwu_normal_p(base: np.ndarray, new: np.ndarray) -> float:
    """Two-sided Mann-Whitney p from the normal approximation, tie- and continuity-corrected.

    ``U = R_new - n_new (n_new + 1) / 2`` (``R_new``: the sum of new's mid-ranks in the pooled
    sample), ``mu = n_b n_n / 2``, ``sigma^2 = n_b n_n / 12 * (n + 1 - sum(t^3 - t) / (n (n - 1)))``
    over tie groups of size t, ``z = (|U - mu| - 1/2) / sigma``, ``p = erfc(z / sqrt 2)``: scipy's
    "asymptotic" method (the tests check they agree), in numpy so the common large-n path needs no
    ``scipy.stats`` import (about a second).
    """
    nb, nn = base.size, new.size
    n = nb + nn
    _, inv, counts = np.unique(np.concatenate([base, new]), return_inverse=True, return_counts=True)
    mid_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based average rank of each distinct value
    u = float(mid_rank[inv[nb:]].sum()) - nn * (nn + 1) / 2.0
    ties = float(np.sum(counts.astype(np.float64) ** 3 - counts))
    var = nb * nn / 12.0 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0.0:
        return 1.0
    z = max(abs(u - nb * nn / 2.0) - 0.5, 0.0) / math.sqrt(var)
    return min(1.0, math.erfc(z / math.sqrt(2.0)))


def mann_whitney_p(base: np.ndarray, new: np.ndarray, *, seed: int = 0) -> float:
    """Two-sided Mann-Whitney U p-value of "base and new come from one distribution".

    - Every value equal (both sides): 1.0 (no evidence of any difference; the normal
      approximation would divide by a zero tie-corrected variance).
    - Both sides > 8 values: the normal approximation with tie and continuity corrections
      (``_mwu_normal_p``), accurate there.
    - A side of <= 8 values: ``scipy.stats.mannwhitneyu`` with its exact null if there are no
      ties, else a permutation null (``PermutationMethod``: exact when the splits number <= 9999,
      otherwise 9999 resamples seeded by ``seed``) -- scipy's "auto" would use the normal
      approximation for tied small samples, poor there.

    It tests stochastic ordering, not medians alone; with thousands of autocorrelated
    per-iteration samples it flags differences far smaller than the drift between processes.
    """
    both = np.concatenate([base, new])
    if np.all(both == both[0]):
        return 1.0
    if min(base.size, new.size) > _SMALL_MWU_N:
        return _mwu_normal_p(base, new)
    from scipy import stats

    if np.unique(both).size < both.size:
        method: object = stats.PermutationMethod(n_resamples=9999, rng=np.random.default_rng(seed))
    else:
        method = "exact"
    p = float(stats.mannwhitneyu(new, base, alternative="two-sided", method=method).pvalue)
    return 1.0 if math.isnan(p) else min(1.0, p)


def ratio_from_samples(
    base: Sequence[float] | np.ndarray,
    new: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> RatioEstimate:
    """Ratio of medians ``median(new) / median(base)`` of raw samples, percentile-bootstrap CI.

    CI: each side is resampled independently (``bootstrap_medians``), ``n_boot`` times; the CI is
    the ``(1 - c) / 2`` and ``(1 + c) / 2`` quantiles of ``median(new*) / median(base*)``.
    Percentile rather than BCa: BCa's acceleration comes from the jackknife, which is inconsistent
    for the median (a leave-one-out median takes only two values), and its bias correction ``z0``
    is unstable when much of the bootstrap mass sits exactly on the observed median; the percentile
    interval is, like BCa, invariant under the log (the same interval for ratio and log-ratio).
    A/A simulation (lognormal samples) gives coverage >= 95 % from 5 samples a side (the tests
    check n = 5 and n = 200), 67 % at 2. With fewer than ``MIN_BOOTSTRAP_N`` samples on a side
    the CI is ``(0, inf)`` (the p-value, exact there, is still given).

    p-value: two-sided Mann-Whitney U (``mann_whitney_p``). Both assume iid samples inside a
    process; the CI covers within-process noise only (see the module docstring). Deterministic for
    a given ``seed``.
    """
    c = check_confidence(confidence)
    b = check_positive("base", base)
    w = check_positive("new", new)
    if int(n_boot) < 100:
        raise ValueError(f"n_boot must be >= 100, got {n_boot!r}")
    ratio = float(np.median(w) / np.median(b))
    p = mann_whitney_p(b, w, seed=seed)
    if min(b.size, w.size) < MIN_BOOTSTRAP_N:
        note = f"fewer than {MIN_BOOTSTRAP_N} samples on a side: the bootstrap cannot bound the ratio"
        return unbounded(ratio, "bootstrap-samples", b.size, w.size, c, note, p_value=p)
    rng = np.random.default_rng(seed)
    mb = bootstrap_medians(np.sort(b), int(n_boot), rng)
    mw = bootstrap_medians(np.sort(w), int(n_boot), rng)
    lo, hi = np.quantile(mw / mb, [(1.0 - c) / 2.0, (1.0 + c) / 2.0])
    return RatioEstimate(
        ratio,
        float(lo),
        float(hi),
        p,
        "bootstrap-samples",
        b.size,
        w.size,
        c,
        "within-process noise only: drift between processes is not covered",
    )
