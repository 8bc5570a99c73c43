"""bench.harness.timing: order-statistic CI of the median, stopping rule, noisy flag, sidecar round-trip.

The sampling loop is driven by a fake clock (``timing._now_ns`` monkeypatched) whose time only
advances inside the fake step, so every figure below is deterministic.
"""

from __future__ import annotations

import json
import math
import random

import pytest

from bench.harness import timing
from bench.harness.timing import TimingResult, time_step
from bench.stats import median_ci


def _binomial_ranks(n: int, confidence: float = 0.95) -> tuple[int, int] | None:
    """Reference: largest l with 2 * P(Bin(n, 1/2) <= l - 1) <= 1 - confidence, in exact rationals."""
    best = None
    tail = 0
    for l in range(1, n // 2 + 1):
        tail += math.comb(n, l - 1)  # P(B <= l - 1) * 2**n
        if 2 * tail * 100 <= round((1 - confidence) * 100) * 2**n:
            best = l
        else:
            break
    return None if best is None else (best, n + 1 - best)


@pytest.mark.parametrize("n", list(range(1, 80)) + [100, 250, 1000])
def test_median_ci_matches_exact_binomial_ranks(n: int) -> None:
    xs = [float(i) for i in range(1, n + 1)]  # x_(i) == i, so the CI is the ranks themselves
    random.Random(n).shuffle(xs)
    ranks = _binomial_ranks(n)
    lo, hi = median_ci(xs)
    if ranks is None:
        assert (lo, hi) == (1.0, float(n))
    else:
        assert (lo, hi) == (float(ranks[0]), float(ranks[1]))


def test_median_ci_textbook_values() -> None:
    # Classic tables (e.g. Conover, Practical Nonparametric Statistics): 95% ranks for n = 6, 10, 20, 100.
    assert median_ci(range(1, 7)) == (1, 6)
    assert median_ci(range(1, 11)) == (2, 9)
    assert median_ci(range(1, 21)) == (6, 15)
    assert median_ci(range(1, 101)) == (40, 61)
    assert median_ci(range(1, 6)) == (1, 5)  # n = 5: too few, falls back to (min, max)
    with pytest.raises(ValueError):
        median_ci([])


class FakeClock:
    """A nanosecond clock that only moves when the fake step says so."""

    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr(timing, "_now_ns", c)
    return c


def _step(clock: FakeClock, durations_ns):
    it = iter(durations_ns)
    calls = []

    def step() -> None:
        d = next(it)
        calls.append(d)
        clock.t += d

    return step, calls


def test_constant_step_stops_on_ci_target_at_min_samples(clock: FakeClock) -> None:
    step, calls = _step(clock, iter(lambda: 1_000_000, None))  # 1 ms forever
    r = time_step(step, warmup_iters=3, min_samples=10)
    assert r.stop_reason == "ci_target"
    assert r.samples_ms == [1.0] * 10
    assert r.warmup_iters == 3 and len(calls) == 13
    assert r.calls_per_sample == 1
    assert r.median_ms == r.ci_low_ms == r.ci_high_ms == 1.0
    assert not r.noisy


def test_ci_target_rule_on_spread_samples(clock: FakeClock) -> None:
    rng = random.Random(0)
    durs = [int(1_000_000 * (1 + 0.1 * rng.random())) for _ in range(100_000)]
    step, calls = _step(clock, iter(durs))
    r = time_step(step, warmup_iters=2, min_samples=10, target_rel_ci=0.01, max_time_s=1e9)
    assert r.stop_reason == "ci_target"
    assert r.samples_ms == [d * 1e-6 for d in durs[2 : 2 + r.n]]  # raw samples kept, in order
    assert r.rel_ci_halfwidth <= 0.01
    # the rule stops at the first check where the target is met: drop the last batch and it is not
    checks = []
    n = 10
    while n < r.n:
        checks.append(n)
        n += max(1, min(n // 2, timing.MAX_BATCH))
    assert n == r.n
    for m in checks:
        if m >= 6:
            assert TimingResult(r.samples_ms[:m], 2, "ci_target", 0.01).rel_ci_halfwidth > 0.01


def test_time_cap_can_end_below_min_samples(clock: FakeClock) -> None:
    step, _ = _step(clock, iter(lambda: 1_000_000_000, None))  # 1 s per call
    r = time_step(step, warmup_iters=1, min_samples=10, max_time_s=5.0)
    assert r.stop_reason == "time_cap"
    assert r.n == 5 and r.elapsed_s == pytest.approx(5.0)
    assert r.noisy and "too few" in r.noisy_reasons[0]


def test_time_cap_below_min_samples_is_noisy_even_with_enough_for_a_ci(clock: FakeClock) -> None:
    # 8 identical samples: enough for a 95 % CI (n >= 6) and a zero-width one, but fewer than the
    # 10 asked for -> still flagged noisy, with the reason.
    step, _ = _step(clock, iter(lambda: 1_000_000_000, None))  # 1 s per call
    r = time_step(step, warmup_iters=1, min_samples=10, max_time_s=8.0)
    assert r.stop_reason == "time_cap" and r.n == 8 and r.rel_ci_halfwidth == 0.0
    assert r.min_samples == 10
    assert r.noisy and r.noisy_reasons == ["only 8 of the 10 minimum samples (time cap reached first)"]
    assert TimingResult.from_dict(r.to_dict()) == r
    old = {k: v for k, v in r.to_dict().items() if k != "min_samples"}  # a sidecar from before
    assert TimingResult.from_dict(old).min_samples == 1 and not TimingResult.from_dict(old).noisy


def test_max_samples(clock: FakeClock) -> None:
    step, _ = _step(clock, iter(lambda: 1_000_000, None))
    r = time_step(step, warmup_iters=0, min_samples=10, max_samples=7, max_time_s=1e9)
    assert r.stop_reason == "max_samples" and r.n == 7

    alternating = [1_000_000, 2_000_000] * 10_000
    step, _ = _step(clock, iter(alternating))
    r = time_step(step, warmup_iters=0, min_samples=10, max_samples=50, target_rel_ci=0.001, max_time_s=1e9)
    assert r.stop_reason == "max_samples" and r.n == 50 and r.noisy


def test_fast_step_is_timed_in_blocks(clock: FakeClock) -> None:
    step, calls = _step(clock, iter(lambda: 1_000, None))  # 1 us per call
    r = time_step(step, warmup_iters=3, min_samples=10)
    k = 200  # BLOCK_TARGET_S / 1 us
    burst = timing.MAX_CALLS_PER_SAMPLE  # 2 ms of 1 us calls, capped: re-estimates the call time
    assert r.calls_per_sample == k
    assert r.samples_ms == [pytest.approx(1e-3)] * r.n  # per call, not per block
    assert r.warmup_iters == 3 + burst
    assert len(calls) == 3 + burst + r.n * k


def test_burst_estimate_ignores_sync_cost(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    # each synchronization costs 100 us, as on a GPU; a call costs 2 us of (asynchronous) work
    monkeypatch.setattr(timing, "_sync", lambda device: setattr(clock, "t", clock.t + 100_000))
    step, _ = _step(clock, iter(lambda: 2_000, None))
    r = time_step(step, warmup_iters=3, min_samples=10)
    # warm-up says 102 us/call; bursts of 20, 40, ..., 640, 1000 calls: the last takes 2.1 ms
    assert r.warmup_iters == 3 + 20 + 40 + 80 + 160 + 320 + 640 + 1000
    assert r.calls_per_sample == math.ceil(200_000 / 2_100)  # 2.1 us/call, not 102 us


def test_min_warmup_s(clock: FakeClock) -> None:
    step, calls = _step(clock, iter(lambda: 100_000_000, None))  # 0.1 s per call
    r = time_step(step, warmup_iters=1, min_warmup_s=1.0, min_samples=6)
    assert r.warmup_iters == 10


def test_progress_callback(clock: FakeClock) -> None:
    seen: list[int] = []
    step, _ = _step(clock, iter(lambda: 1_000_000, None))
    r = time_step(step, warmup_iters=0, min_samples=10, progress=seen.append)
    assert seen and seen[-1] == r.n and seen == sorted(seen)


def test_noisy_flag_and_statistics() -> None:
    tight = TimingResult([10.0, 10.1, 9.9, 10.0, 10.05, 9.95, 10.0, 10.0], 3, "ci_target", 0.02)
    assert not tight.noisy and tight.noisy_reasons == []
    assert tight.median_ms == 10.0
    assert tight.iqr_ms == pytest.approx(0.025)  # inclusive quartiles 9.9875 and 10.0125
    wide_ci = TimingResult([1.0, 2.0] * 10, 3, "time_cap", 0.02)
    assert wide_ci.noisy and "CI half-width" in wide_ci.noisy_reasons[0]
    outliers = TimingResult([1.0] * 40 + [100.0], 3, "ci_target", 0.02)
    assert outliers.rel_ci_halfwidth == 0.0 and outliers.cv > timing.NOISY_CV and outliers.noisy
    assert TimingResult([1.0] * 5, 3, "time_cap", 0.02).noisy  # too few samples for a 95 % CI


def test_to_dict_round_trip() -> None:
    r = TimingResult([1.0, 1.5, 1.25, 1.1, 1.3, 1.2, 1.05], 4, "time_cap", 0.02, calls_per_sample=3)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["median_ms"] == r.median_ms and d["ci_low_ms"] == 1.0 and d["ci_high_ms"] == 1.5
    assert d["noisy"] is r.noisy and d["n"] == 7
    back = TimingResult.from_dict(d)
    assert back == r


def test_real_step_smoke() -> None:
    import torch

    x = torch.randn(64, 64)
    r = time_step(lambda: x @ x, warmup_iters=2, min_samples=5, max_time_s=0.3)
    assert r.stop_reason in timing.STOP_REASONS
    assert r.n >= 1 and all(s > 0 for s in r.samples_ms)


@pytest.mark.gpu
def test_cuda_events_timing() -> None:
    import time

    import torch

    a = torch.randn(2048, 2048, device="cuda")
    r = time_step(lambda: a @ a, device="cuda", warmup_iters=3, min_samples=10, max_time_s=2.0)
    assert r.stop_reason in timing.STOP_REASONS and r.device == "cuda"
    # the events' median agrees with a synchronized host clock over many calls
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(50):
        a @ a
    torch.cuda.synchronize()
    host_ms = (time.perf_counter() - t0) / 50 * 1e3
    print(
        f"cuda matmul 2048: events median {r.median_ms:.4f} ms (n={r.n}, {r.stop_reason}), "
        f"host {host_ms:.4f} ms"
    )
    assert 0.5 < r.median_ms / host_ms < 2.0
    tiny = torch.ones(4, device="cuda")
    r = time_step(lambda: tiny.add_(1), device="cuda", max_time_s=1.0)
    print(f"cuda tiny op: {r.median_ms * 1e3:.2f} us/call, k={r.calls_per_sample}")
    assert r.calls_per_sample > 1
