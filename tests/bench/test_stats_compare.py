"""Comparison statistics (bench.stats.compare): synthetic samples with known answers, fixed seeds."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import stats

from bench.stats.bootstrap import _mwu_normal_p, bootstrap_medians, mann_whitney_p
from bench.stats.compare import (
    DICT_KEYS,
    RatioEstimate,
    exact_ratio,
    hierarchical_summary,
    is_regression,
    range_coverage,
    ratio_from_repeats,
    ratio_from_samples,
    ratio_from_slices,
    sign_test_p,
    verdict,
)


def _lognormal(rng: np.random.Generator, n: int, sigma: float, scale: float = 1.0) -> np.ndarray:
    return scale * np.exp(rng.normal(0.0, sigma, n))


def _drifting_processes(
    rng: np.random.Generator, r: int, n: int, scale: float = 1.0, drift: float = 0.2, noise: float = 0.05
) -> list[np.ndarray]:
    """R processes, each with its own offset (1 + U(-drift, drift)) and lognormal noise inside."""
    return [_lognormal(rng, n, noise, scale * (1.0 + rng.uniform(-drift, drift))) for _ in range(r)]


# --- layering ------------------------------------------------------------------------------------


def test_compare_imports_no_heavy_modules() -> None:
    code = (
        "import sys, bench.stats.compare; "
        "print(','.join(m for m in ('torch', 'rich', 'typer', 'pandas', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --- RatioEstimate -------------------------------------------------------------------------------


def test_to_dict_keys_types_and_json_round_trip() -> None:
    est = ratio_from_samples([1.0, 1.1, 0.9, 1.05, 0.95, 1.0], [1.2, 1.3, 1.1, 1.25, 1.15, 1.2])
    d = est.to_dict()
    assert tuple(d) == DICT_KEYS
    assert set(d) == {"ratio", "ci_low", "ci_high", "p_value", "method", "n_base", "n_new", "confidence"}
    for k in ("ratio", "ci_low", "ci_high", "p_value", "confidence"):
        assert type(d[k]) is float, k
    assert type(d["n_base"]) is int and type(d["n_new"]) is int
    back = RatioEstimate.from_dict(json.loads(json.dumps(d)))
    assert back.to_dict() == d
    # an unbounded CI survives Python's JSON (Infinity)
    one = ratio_from_repeats([1.0], [1.1, 1.2])
    assert RatioEstimate.from_dict(json.loads(json.dumps(one.to_dict()))).ci_high == math.inf


def test_unknown_method_is_rejected() -> None:
    with pytest.raises(ValueError, match="method"):
        RatioEstimate(1.0, 1.0, 1.0, None, "pooled", 1, 1, 0.95)  # type: ignore[arg-type]


# --- the bootstrap of raw samples ----------------------------------------------------------------


@pytest.mark.parametrize("n", [7, 8])
def test_bootstrap_medians_match_plain_resampling(n: int) -> None:
    """The Beta order-statistic shortcut has the distribution of medians of plain resamples."""
    xs = np.sort(np.random.default_rng(3).lognormal(0.0, 0.5, n))
    b = 40_000
    fast = bootstrap_medians(xs, b, np.random.default_rng(11))
    idx = np.random.default_rng(12).integers(0, n, size=(b, n))
    slow = np.median(xs[idx], axis=1)
    grid = np.union1d(fast, slow)
    cdf_fast = np.searchsorted(np.sort(fast), grid, side="right") / b
    cdf_slow = np.searchsorted(np.sort(slow), grid, side="right") / b
    assert np.max(np.abs(cdf_fast - cdf_slow)) < 0.015
    if n % 2:
        assert np.isin(fast, xs).all()  # odd n: the median is always one of the samples


def test_aa_bootstrap_coverage_and_width() -> None:
    """200 A/A experiments: the 95 % CI holds 1.0 in >= 90 %, not in (almost) all, and is not too wide."""
    rng = np.random.default_rng(2024)
    n, sigma, trials = 200, 0.1, 200
    covered, log_widths = 0, []
    for i in range(trials):
        est = ratio_from_samples(_lognormal(rng, n, sigma), _lognormal(rng, n, sigma), n_boot=1000, seed=i)
        covered += est.ci_low <= 1.0 <= est.ci_high
        log_widths.append(math.log(est.ci_high / est.ci_low))
    coverage = covered / trials
    assert 0.90 <= coverage <= 0.99, coverage
    # asymptotic: se(log median) = sigma * sqrt(pi / 2) / sqrt(n) per side
    expected_width = 2 * 1.96 * math.sqrt(2.0) * sigma * math.sqrt(math.pi / 2.0) / math.sqrt(n)
    assert 0.75 <= float(np.mean(log_widths)) / expected_width <= 1.35


def test_aa_bootstrap_coverage_small_n() -> None:
    rng = np.random.default_rng(5)
    trials = 300
    covered = sum(
        (e := ratio_from_samples(_lognormal(rng, 5, 0.1), _lognormal(rng, 5, 0.1), n_boot=500, seed=i)).ci_low
        <= 1.0
        <= e.ci_high
        for i in range(trials)
    )
    assert covered / trials >= 0.90


def test_bootstrap_speed_2000_resamples_of_2x1000() -> None:
    rng = np.random.default_rng(0)
    base, new = _lognormal(rng, 1000, 0.1), _lognormal(rng, 1000, 0.1, 1.02)
    ratio_from_samples(base, new)  # warm-up
    t0 = time.perf_counter()
    est = ratio_from_samples(base, new, n_boot=2000)
    assert time.perf_counter() - t0 < 0.5
    assert est.method == "bootstrap-samples" and est.n_base == est.n_new == 1000


def test_bootstrap_deterministic_given_seed() -> None:
    rng = np.random.default_rng(9)
    base, new = _lognormal(rng, 50, 0.2), _lognormal(rng, 50, 0.2)
    a = ratio_from_samples(base, new, seed=4)
    assert a == ratio_from_samples(base, new, seed=4)
    b = ratio_from_samples(base, new, seed=5)
    assert (a.ci_low, a.ci_high) != (b.ci_low, b.ci_high)
    assert a.ratio == b.ratio and a.p_value == b.p_value


def test_bootstrap_point_is_ratio_of_medians() -> None:
    est = ratio_from_samples([1.0, 2.0, 3.0, 4.0, 100.0], [2.0, 4.0, 6.0, 8.0, 9.0])
    assert est.ratio == pytest.approx(6.0 / 3.0)
    assert est.ci_low <= est.ratio <= est.ci_high


def test_bootstrap_small_n_is_unbounded_never_fake_tight() -> None:
    for base, new in (([1.0], [1.5]), ([1.0, 1.01, 0.99, 1.0], [1.5, 1.49, 1.51, 1.5])):
        est = ratio_from_samples(base, new)
        assert (est.ci_low, est.ci_high) == (0.0, math.inf)
        assert est.p_value is not None and 0.0 < est.p_value <= 1.0
        assert verdict(est, threshold=0.05) == "inconclusive"


def test_bootstrap_identical_samples() -> None:
    est = ratio_from_samples([2.0] * 10, [2.0] * 10)
    assert (est.ratio, est.ci_low, est.ci_high, est.p_value) == (1.0, 1.0, 1.0, 1.0)
    assert verdict(est, threshold=0.0) == "same"


def test_mann_whitney_normal_path_matches_scipy_with_ties() -> None:
    rng = np.random.default_rng(1)
    for shift in (0.0, 0.3, 1.0):
        base = np.round(rng.normal(10.0, 1.0, 40))  # heavy ties
        new = np.round(rng.normal(10.0 + shift, 1.0, 55))
        ref = stats.mannwhitneyu(new, base, alternative="two-sided", method="asymptotic").pvalue
        assert _mwu_normal_p(base, new) == pytest.approx(ref, rel=1e-9)
        assert mann_whitney_p(base, new) == pytest.approx(ref, rel=1e-9)


def test_mann_whitney_small_n_with_ties_is_exact() -> None:
    """n = 3 a side with ties: the p-value is the exact permutation one, enumerated here by hand."""
    base, new = np.array([1.0, 1.0, 2.0]), np.array([2.0, 3.0, 3.0])
    pooled = np.concatenate([base, new])
    ranks = stats.rankdata(pooled)

    def dev(idx: tuple[int, ...]) -> float:
        return abs(ranks[list(idx)].sum() - 3 * 4 / 2 - 3 * 3 / 2)

    observed = dev((3, 4, 5))
    splits = list(itertools.combinations(range(6), 3))
    exact = sum(dev(s) >= observed - 1e-12 for s in splits) / len(splits)
    assert mann_whitney_p(base, new) == pytest.approx(exact)
    # no ties, small n: scipy's exact null (1 / C(6, 3) per extreme split, both tails)
    assert mann_whitney_p(np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])) == pytest.approx(0.1)


# --- repeats: the process is the unit ------------------------------------------------------------


def test_repeats_keep_coverage_under_drift_while_pooled_samples_do_not() -> None:
    """Every process gets a +-20 % offset: repeats cover ~95 %, the pooled bootstrap far less."""
    rng = np.random.default_rng(77)
    trials, r, n = 200, 5, 100
    cov_repeats = cov_pooled = 0
    for i in range(trials):
        base = _drifting_processes(rng, r, n)
        new = _drifting_processes(rng, r, n)
        rep = ratio_from_repeats([np.median(x) for x in base], [np.median(x) for x in new])
        pooled = ratio_from_samples(np.concatenate(base), np.concatenate(new), n_boot=500, seed=i)
        cov_repeats += rep.ci_low <= 1.0 <= rep.ci_high
        cov_pooled += pooled.ci_low <= 1.0 <= pooled.ci_high
    assert cov_repeats / trials >= 0.90
    assert cov_pooled / trials <= 0.50  # pooled samples cover within-process noise only


def test_repeats_match_scipy_welch_on_logs() -> None:
    rng = np.random.default_rng(8)
    base, new = _lognormal(rng, 4, 0.1), _lognormal(rng, 6, 0.05, 1.1)
    est = ratio_from_repeats(base, new, confidence=0.9)
    ref = stats.ttest_ind(np.log(new), np.log(base), equal_var=False)
    lo, hi = ref.confidence_interval(confidence_level=0.9)
    assert est.ratio == pytest.approx(math.exp(np.log(new).mean() - np.log(base).mean()))
    assert est.p_value == pytest.approx(ref.pvalue)
    assert (est.ci_low, est.ci_high) == pytest.approx((math.exp(lo), math.exp(hi)))
    assert (est.method, est.n_base, est.n_new, est.confidence) == ("repeats", 4, 6, 0.9)


def test_repeats_one_repeat_is_unbounded() -> None:
    for base, new in (([1.0], [1.2, 1.21, 1.19]), ([1.0, 1.01], [1.2])):
        est = ratio_from_repeats(base, new)
        assert (est.ci_low, est.ci_high, est.p_value) == (0.0, math.inf, None)
        assert not est.bounded and "one repeat" in est.note
        assert verdict(est, threshold=0.05) == "inconclusive"


def test_repeats_zero_variance() -> None:
    same = ratio_from_repeats([2.0, 2.0, 2.0], [2.0, 2.0])
    assert (same.ratio, same.ci_low, same.ci_high, same.p_value) == (1.0, 1.0, 1.0, 1.0)
    assert verdict(same, threshold=0.0) == "same"
    diff = ratio_from_repeats([2.0, 2.0], [2.2, 2.2])
    assert diff.ci_low == diff.ci_high == pytest.approx(1.1) and diff.p_value == 0.0
    assert verdict(diff, threshold=0.05) == "slower"
    # zero spread on one side only: Welch with the other side's df, a finite honest interval
    one = ratio_from_repeats([2.0, 2.0, 2.0], [2.1, 2.3, 2.2])
    assert 0.0 < one.ci_low < one.ratio < one.ci_high < math.inf
    ref = stats.ttest_1samp(np.log([2.1, 2.3, 2.2]), math.log(2.0))
    assert one.p_value == pytest.approx(ref.pvalue)


# --- slices: the gate ----------------------------------------------------------------------------


def test_slices_aa_coverage_skewed_ratios() -> None:
    """Slice ratios with a one-sided (exponential) tail and median 1: distribution-free coverage."""
    rng = np.random.default_rng(31)
    trials = 300
    covered = 0
    for _ in range(trials):
        ratios = np.exp(0.05 * (rng.exponential(1.0, 20) - math.log(2.0)))
        est = ratio_from_slices(ratios)
        covered += est.ci_low <= 1.0 <= est.ci_high
    assert covered / trials >= 0.93  # exact coverage at n = 20 is 95.9 %


def test_slices_ci_and_sign_test_are_dual() -> None:
    rng = np.random.default_rng(4)
    for _ in range(300):
        n = int(rng.integers(6, 41))
        ratios = np.exp(rng.normal(rng.uniform(-0.05, 0.05), 0.05, n))
        est = ratio_from_slices(ratios)
        assert est.p_value is not None
        assert est.significant == (est.p_value <= 0.05)
        assert est.ci_low <= est.ratio <= est.ci_high
        assert (est.n_base, est.n_new, est.method) == (n, n, "slices")


def test_sign_test_values() -> None:
    assert sign_test_p([1.1] * 5) == pytest.approx(2 / 32)
    assert sign_test_p([1.1] * 9 + [0.9]) == pytest.approx(2 * 11 / 1024)
    assert sign_test_p([1.0, 1.0, 1.0]) == 1.0
    assert sign_test_p([1.0, 1.1, 0.9]) == 1.0  # the 1.0 is dropped, one each way
    assert sign_test_p([1.1] * 40) == pytest.approx(2 / 2**40)


def test_slices_too_few_is_unbounded_but_keeps_p() -> None:
    est = ratio_from_slices([1.2, 1.21, 1.19, 1.2, 1.22])
    assert (est.ci_low, est.ci_high) == (0.0, math.inf)
    assert est.p_value == pytest.approx(2 / 32)
    assert verdict(est, threshold=0.05) == "inconclusive"
    assert ratio_from_slices([1.2] * 6).bounded  # 6 slices suffice at 95 %


def test_slices_aa_gate_false_alarm_rate() -> None:
    rng = np.random.default_rng(12)
    alarms = sum(
        is_regression(ratio_from_slices(np.exp(rng.normal(0.0, 0.03, 24))), 0.05) for _ in range(300)
    )
    assert alarms / 300 <= 0.02


# --- power: a planted 10 % slowdown ---------------------------------------------------------------


def test_power_planted_slowdown_detected() -> None:
    rng = np.random.default_rng(10)
    trials, thr = 200, 0.05
    hits = {"samples": 0, "repeats": 0, "slices": 0}
    for i in range(trials):
        s = ratio_from_samples(
            _lognormal(rng, 100, 0.02), _lognormal(rng, 100, 0.02, 1.1), n_boot=500, seed=i
        )
        r = ratio_from_repeats(_lognormal(rng, 5, 0.02), _lognormal(rng, 5, 0.02, 1.1))
        g = ratio_from_slices(_lognormal(rng, 30, 0.02, 1.1))
        hits["samples"] += verdict(s, threshold=thr) == "slower"
        hits["repeats"] += verdict(r, threshold=thr) == "slower"
        hits["slices"] += verdict(g, threshold=thr) == "slower"
    for k, v in hits.items():
        assert v / trials >= 0.95, (k, v)


def test_power_throughput_drop_is_regression() -> None:
    rng = np.random.default_rng(13)
    est = ratio_from_repeats(_lognormal(rng, 5, 0.02, 100.0), _lognormal(rng, 5, 0.02, 90.0))
    assert verdict(est, threshold=0.05, higher_is_better=True) == "slower"
    assert is_regression(est, 0.05, higher_is_better=True)
    assert verdict(est, threshold=0.05) == "faster" and not is_regression(est, 0.05)


# --- verdict -------------------------------------------------------------------------------------


def _est(ratio: float, lo: float, hi: float) -> RatioEstimate:
    return RatioEstimate(ratio, lo, hi, None, "slices", 20, 20, 0.95)


@pytest.mark.parametrize(
    ("ratio", "lo", "hi", "thr", "time_word", "throughput_word"),
    [
        (1.10, 1.07, 1.13, 0.05, "slower", "faster"),  # significant, beyond the band
        (0.90, 0.88, 0.93, 0.05, "faster", "slower"),
        (1.06, 1.01, 1.11, 0.05, "slower", "faster"),  # significant, point beyond the band
        (1.02, 1.01, 1.03, 0.05, "same", "same"),  # significant but immaterial
        (1.04, 1.01, 1.07, 0.05, "same", "same"),  # significant, point inside, CI reaching out
        (1.00, 0.98, 1.02, 0.05, "same", "same"),  # CI inside the band
        (1.00, 0.90, 1.10, 0.05, "inconclusive", "inconclusive"),  # wider than the band
        (1.06, 0.99, 1.12, 0.05, "inconclusive", "inconclusive"),  # point beyond, not significant
        (1.03, 0.99, 1.06, 0.05, "inconclusive", "inconclusive"),  # narrow, but reaches out of the band
        (1.20, 0.00, math.inf, 0.05, "inconclusive", "inconclusive"),  # unbounded
        (1.001, 1.0005, 1.0015, 0.0, "slower", "faster"),  # threshold 0: any significant change
        (1.00, 1.00, 1.00, 0.0, "same", "same"),
    ],
)
def test_verdict_truth_table(
    ratio: float, lo: float, hi: float, thr: float, time_word: str, throughput_word: str
) -> None:
    est = _est(ratio, lo, hi)
    assert verdict(est, threshold=thr) == time_word
    assert verdict(est, threshold=thr, higher_is_better=True) == throughput_word
    assert is_regression(est, thr) == (time_word == "slower")
    assert is_regression(est, thr, True) == (throughput_word == "slower")


def test_verdict_band_is_symmetric_in_log() -> None:
    # 1 / 1.05 = 0.95238...: a 4.9 % speed-up is inside the band, 5 % is beyond it
    assert verdict(_est(0.953, 0.952, 0.954), threshold=0.05) == "same"
    assert verdict(_est(0.951, 0.950, 0.952), threshold=0.05) == "faster"


@pytest.mark.parametrize("thr", [-0.1, math.nan, math.inf])
def test_verdict_rejects_bad_threshold(thr: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        verdict(_est(1.0, 0.9, 1.1), threshold=thr)


# --- exact figures -------------------------------------------------------------------------------


def test_exact_ratio() -> None:
    est = exact_ratio(1000, 1100)
    assert est.ratio == est.ci_low == est.ci_high == pytest.approx(1.1)
    assert (est.method, est.p_value, est.n_base, est.n_new, est.confidence) == ("exact", None, 1, 1, 1.0)
    assert verdict(est, threshold=0.0) == "slower"
    assert verdict(est, threshold=0.2) == "same"  # real but below the given threshold
    assert verdict(exact_ratio(1000, 999), threshold=0.0) == "faster"
    assert verdict(exact_ratio(2**40, 2**40), threshold=0.0) == "same"
    assert exact_ratio(0, 0).ratio == 1.0
    assert exact_ratio(0, 5).ratio == math.inf and verdict(exact_ratio(0, 5), threshold=0.0) == "slower"
    assert tuple(est.to_dict()) == DICT_KEYS


def test_exact_never_inconclusive() -> None:
    for new in (1, 999, 1000, 1001, 2000):
        assert verdict(exact_ratio(1000, new), threshold=0.0) != "inconclusive"


# --- hierarchical summary ------------------------------------------------------------------------


@pytest.mark.parametrize("r", [2, 3, 5, 8, 12])
def test_hierarchical_summary_coverage(r: int) -> None:
    """Process locations drift lognormally (sigma 0.1) around 1: the CI covers 1 as often as it says.

    R >= 6: the order-statistic CI, >= 90 % of 300 trials (95 % nominal). R < 6: the range of the R
    medians, whose coverage is exactly 1 - 2^(1-R) (range_coverage); never wider than the data.
    """
    rng = np.random.default_rng(100 + r)
    trials = 300
    covered = 0
    for _ in range(trials):
        repeats = [_lognormal(rng, 40, 0.02, math.exp(rng.normal(0.0, 0.1))) for _ in range(r)]
        center, lo, hi = hierarchical_summary(repeats)
        meds = [float(np.median(x)) for x in repeats]
        assert lo <= center <= hi
        assert min(meds) <= lo and hi <= max(meds)  # inside what the data allow
        covered += lo <= 1.0 <= hi
    expected = 0.95 if r >= 6 else range_coverage(r)
    assert covered / trials >= expected - 0.06
    if r < 6:
        assert covered / trials <= expected + 0.06  # it does not claim more than it covers


def test_hierarchical_summary_skewed_drift_uses_median_ci() -> None:
    """R = 12 with one-sided drift (a busy machine only slows): still covers the median process."""
    rng = np.random.default_rng(55)
    trials, covered = 300, 0
    for _ in range(trials):
        repeats = [_lognormal(rng, 30, 0.01, 1.0 + rng.exponential(0.2)) for _ in range(12)]
        _, lo, hi = hierarchical_summary(repeats)
        covered += lo <= 1.0 + 0.2 * math.log(2.0) <= hi
    assert covered / trials >= 0.93


def test_hierarchical_summary_robust_to_one_wild_process() -> None:
    rng = np.random.default_rng(6)
    repeats = [_lognormal(rng, 50, 0.02, 1.0 + 0.01 * i) for i in range(8)] + [_lognormal(rng, 50, 0.02, 7.0)]
    center, lo, hi = hierarchical_summary(repeats)
    # R = 9: the CI is (m_(2), m_(8)), so the 7x process moves neither the center nor the CI
    assert 1.0 <= center <= 1.08 and 0.98 <= lo and hi < 1.1


def test_hierarchical_summary_edges() -> None:
    center, lo, hi = hierarchical_summary([[1.0, 2.0, 3.0]])
    assert (center, lo, hi) == (2.0, 0.0, math.inf)  # one process: nothing about the drift
    assert hierarchical_summary([[2.0, 2.0], [2.0, 2.0, 2.0]]) == (2.0, 2.0, 2.0)
    center, lo, hi = hierarchical_summary([[1.0], [1.1], [1.2]])
    assert center == pytest.approx(1.1) and (lo, hi) == (1.0, 1.2)  # the range: no extrapolation
    # two processes 90x apart (the "330.9 ms +- 2.5e12 ms" row): the CI is their range, not a t-interval
    center, lo, hi = hierarchical_summary([[3.6, 3.7], [658.0, 659.0]])
    assert (lo, hi) == (pytest.approx(3.65), 658.5) and center == pytest.approx(331.075)
    assert [range_coverage(k) for k in (1, 2, 3, 5)] == [0.0, 0.5, 0.75, 0.9375]
    with pytest.raises(ValueError, match="repeat_samples"):
        hierarchical_summary([])
    with pytest.raises(ValueError, match=r"repeat_samples\[1\]"):
        hierarchical_summary([[1.0], []])
    with pytest.raises(ValueError, match=r"repeat_samples\[0\]"):
        hierarchical_summary([[1.0, math.nan]])


# --- input validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "new", "name"),
    [
        ([], [1.0], "base"),
        ([1.0], [], "new"),
        ([1.0, math.nan], [1.0], "base"),
        ([1.0], [1.0, math.inf], "new"),
        ([1.0, 0.0], [1.0], "base"),
        ([1.0], [-1.0], "new"),
        ([[1.0, 2.0]], [1.0], "base"),
        (["x"], [1.0], "base"),
    ],
)
def test_validation_names_the_argument(base: list, new: list, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name}:"):
        ratio_from_samples(base, new)
    with pytest.raises(ValueError, match=rf"^{name}_medians:"):
        ratio_from_repeats(base, new)


def test_validation_other_arguments() -> None:
    for bad in ([], [1.0, math.nan], [0.5, 0.0]):
        with pytest.raises(ValueError, match="^ratios:"):
            ratio_from_slices(bad)
    for conf in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="confidence"):
            ratio_from_samples([1.0] * 5, [1.0] * 5, confidence=conf)
        with pytest.raises(ValueError, match="confidence"):
            ratio_from_slices([1.0] * 10, confidence=conf)
    with pytest.raises(ValueError, match="n_boot"):
        ratio_from_samples([1.0] * 5, [1.0] * 5, n_boot=10)
    with pytest.raises(ValueError, match="^base:"):
        exact_ratio(-1, 1)
    with pytest.raises(ValueError, match="^new:"):
        exact_ratio(1, math.nan)
