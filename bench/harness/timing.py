"""Step timing: adaptive sampling until the median is known well enough, with the raw samples kept.

How a step is timed (``time_step``):

* **Warm-up** runs the whole step (forward, backward and optimizer: ``step`` is the full step) at
  least ``warmup_iters`` times and for at least ``min_warmup_s`` seconds, synchronizing the device
  after each call. Warm-up calls are timed only to size the sampling loop, never reported.
* **Blocking of fast steps.** When a warm-up call took under ``BURST_BELOW_S`` (1 ms), the
  per-call time is re-estimated from bursts of back-to-back calls between two synchronizations
  (doubling until a burst lasts 2 ms or holds 1000 calls; counted as warm-up), since a
  synchronized call also pays for the sync.
  When that estimate is under ``FAST_STEP_S`` (50 µs), one sample
  times a block of ``k`` back-to-back calls and records the block time divided by ``k``, with ``k``
  chosen so that a block lasts about ``BLOCK_TARGET_S`` (200 µs, at most ``MAX_CALLS_PER_SAMPLE``
  calls): timer overhead and clock granularity (~50-100 ns on CPU, ~0.5 µs for CUDA events) then
  stay below 0.1 % of a sample. ``TimingResult.calls_per_sample`` records ``k``; samples are always
  per call.
* **Clocks.** CPU: ``time.perf_counter_ns`` read just before and after each call (or block).
  CUDA: a pair of CUDA events recorded around each call (or block) on the current stream (of the
  current device: the caller makes ``device`` current, as ``bench.run.measure`` does), with one
  ``torch.cuda.synchronize`` at the end of each batch of samples; event times cover the GPU work and
  any gap where the GPU waited for the host, i.e. the real step time.
* **Stopping rule.** Samples are taken in batches (each batch about ``BATCH_TARGET_S`` long, and
  never more than 5 % of ``max_time_s``). After each batch, once at least ``min_samples`` samples
  exist, the distribution-free 95 % confidence interval of the median is computed; sampling stops
  with ``stop_reason="ci_target"`` when its half-width is within ``target_rel_ci`` of the median,
  else with ``"max_samples"`` once ``max_samples`` samples exist, else with ``"time_cap"`` once the
  sampling time (warm-up excluded) reaches ``max_time_s`` — the cap can end sampling below
  ``min_samples``; the result then says so through ``noisy``. ``min_time_s`` holds the
  ``ci_target`` stop back until the sampling has lasted that long (an energy counter needs a window
  longer than its update period: ``bench.harness.energy_meter.EnergyMeter.min_window_s``).
* **Window.** ``window.begin()`` is called after the synchronization that precedes the first
  sample and ``window.end()`` after the last sample has finished (on CUDA, after its
  synchronization), so a meter passed as ``window`` covers exactly the timed steps.

The loop body only calls the step, reads two clock values and appends one float.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch

from bench.stats import median_ci, order_stat_ranks

FAST_STEP_S = 50e-6  # steps faster than this are timed in blocks of k calls
BLOCK_TARGET_S = 200e-6  # a block of fast calls lasts about this long
MAX_CALLS_PER_SAMPLE = 1000
BURST_BELOW_S = 1e-3  # warm-up calls faster than this are re-timed as a burst (see time_step)
BATCH_TARGET_S = 0.2  # one batch of samples (between stopping-rule checks) lasts about this long
MAX_BATCH = 100  # samples per batch at most (also the number of CUDA event pairs allocated)
NOISY_CV = 0.20  # a measurement whose coefficient of variation exceeds this is flagged noisy
STOP_REASONS = ("ci_target", "time_cap", "max_samples")

# Indirection so tests can substitute a deterministic clock.
_now_ns: Callable[[], int] = time.perf_counter_ns


class TimingWindow(Protocol):
    """Something that measures over exactly the timed steps (``bench.harness.energy_meter.EnergyMeter``).

    Neither method may raise: a failure is the window's own result to report.
    """

    def begin(self) -> None: ...

    def end(self) -> None: ...


class WindowChain:
    """Several ``TimingWindow`` s as one: begun in the order given, ended in the reverse order."""

    def __init__(self, *windows: TimingWindow | None) -> None:
        self.windows = [w for w in windows if w is not None]

    def begin(self) -> None:
        for w in self.windows:
            w.begin()

    def end(self) -> None:
        for w in reversed(self.windows):
            w.end()


@dataclass
class TimingResult:
    """Raw per-call step times (milliseconds) and how they were taken; statistics are computed from them.

    ``noisy`` is True when the measurement should not be trusted on its own: the 95 % CI of the
    median is wider than ``±target_rel_ci`` of the median, or there are too few samples for a 95 %
    CI (n < 6), or fewer than ``min_samples`` (the time cap ended sampling first), or the
    coefficient of variation exceeds ``NOISY_CV`` (0.20: heavy outliers, such as
    another process taking the cores, even if the median itself is pinned down).
    """

    samples_ms: list[float]
    warmup_iters: int  # warm-up calls made (untimed for the statistics), burst included
    stop_reason: str
    target_rel_ci: float
    calls_per_sample: int = 1
    device: str = "cpu"
    elapsed_s: float = 0.0  # wall time spent sampling (warm-up excluded)
    confidence: float = 0.95
    extra: dict[str, Any] = field(default_factory=dict)
    min_samples: int = 1  # the sampling loop's minimum (1 for dicts written before it was stored)

    @property
    def n(self) -> int:
        return len(self.samples_ms)

    @property
    def median_ms(self) -> float:
        return float(statistics.median(self.samples_ms))

    @property
    def ci_low_ms(self) -> float | None:
        """Low end of the median's CI; None for a single sample, which has no CI (never "+- 0")."""
        return median_ci(self.samples_ms, self.confidence)[0] if self.n >= 2 else None

    @property
    def ci_high_ms(self) -> float | None:
        """High end of the median's CI; None for a single sample."""
        return median_ci(self.samples_ms, self.confidence)[1] if self.n >= 2 else None

    @property
    def mean_ms(self) -> float:
        return float(statistics.fmean(self.samples_ms))

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms)

    @property
    def iqr_ms(self) -> float:
        """Interquartile range (inclusive quartiles, as ``numpy.percentile`` 'linear'); 0 for one sample."""
        if self.n < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.samples_ms, n=4, method="inclusive")
        return float(q3 - q1)

    @property
    def cv(self) -> float:
        """Sample standard deviation over the mean; 0 for one sample."""
        if self.n < 2:
            return 0.0
        mean = statistics.fmean(self.samples_ms)
        return float(statistics.stdev(self.samples_ms) / mean) if mean > 0 else 0.0

    @property
    def rel_ci_halfwidth(self) -> float:
        """Half-width of the median's CI relative to the median: ``(hi - lo) / 2 / median``."""
        if self.n < 2:
            return math.inf  # one sample: no CI at all
        lo, hi = median_ci(self.samples_ms, self.confidence)
        med = self.median_ms
        if med <= 0:
            return 0.0 if hi == lo else math.inf
        return (hi - lo) / 2.0 / med

    @property
    def noisy_reasons(self) -> list[str]:
        """Why ``noisy`` is True (empty when it is False)."""
        reasons = []
        if self.n == 1:
            reasons.append("one sample: no CI of the median")
        elif order_stat_ranks(self.n, self.confidence) is None:
            reasons.append(f"only {self.n} samples: too few for a {self.confidence:.0%} CI of the median")
        elif self.rel_ci_halfwidth > self.target_rel_ci:
            reasons.append(
                f"CI half-width {self.rel_ci_halfwidth:.2%} of the median exceeds "
                f"target {self.target_rel_ci:.2%}"
            )
        if self.n < self.min_samples:
            reasons.append(
                f"only {self.n} of the {self.min_samples} minimum samples (time cap reached first)"
            )
        if self.cv > NOISY_CV:
            reasons.append(f"coefficient of variation {self.cv:.2f} exceeds {NOISY_CV}")
        return reasons

    @property
    def noisy(self) -> bool:
        return bool(self.noisy_reasons)

    def to_dict(self) -> dict[str, Any]:
        """Raw fields plus the derived statistics, JSON-ready (for the sidecar)."""
        d = asdict(self)
        d.update(
            n=self.n,
            median_ms=self.median_ms,
            ci_low_ms=self.ci_low_ms,
            ci_high_ms=self.ci_high_ms,
            mean_ms=self.mean_ms,
            min_ms=self.min_ms,
            iqr_ms=self.iqr_ms,
            cv=self.cv,
            rel_ci_halfwidth=self.rel_ci_halfwidth if math.isfinite(self.rel_ci_halfwidth) else None,
            noisy=self.noisy,
            noisy_reasons=self.noisy_reasons,
        )
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TimingResult:
        """Inverse of ``to_dict`` (derived statistics are ignored and recomputed from the samples)."""
        names = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in d.items() if k in names}
        kwargs["samples_ms"] = [float(x) for x in kwargs["samples_ms"]]
        return cls(**kwargs)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _timed_call_ns(step: Callable[[], None], device: str) -> int:
    """Nanoseconds for one synchronized call (warm-up only)."""
    _sync(device)
    t0 = _now_ns()
    step()
    _sync(device)
    return _now_ns() - t0


def _batch_size(sample_s: float, max_time_s: float, n: int, min_samples: int, remaining: int) -> int:
    """Samples in the next batch.

    About BATCH_TARGET_S (and at most 5 % of the time cap) worth of samples; the first batch stops
    at ``min_samples`` and later ones grow the sample count by at most half, so the stopping rule
    is checked at geometrically spaced sample counts and never overshoots by much.
    """
    budget = min(BATCH_TARGET_S, 0.05 * max_time_s)
    b = int(budget / sample_s) if sample_s > 0 else MAX_BATCH
    growth = min_samples - n if n < min_samples else max(1, n // 2)
    return max(1, min(b, growth, MAX_BATCH, remaining))


def _run_batch_cpu(step: Callable[[], None], k: int, b: int, out: list[float]) -> None:
    clock = _now_ns
    append = out.append
    scale = 1e-6 / k  # ns -> ms per call
    if k == 1:
        for _ in range(b):
            t0 = clock()
            step()
            t1 = clock()
            append((t1 - t0) * scale)
    else:
        calls = range(k)
        for _ in range(b):
            t0 = clock()
            for _ in calls:
                step()
            t1 = clock()
            append((t1 - t0) * scale)


def _run_batch_cuda(
    step: Callable[[], None],
    k: int,
    b: int,
    out: list[float],
    starts: list[Any],
    ends: list[Any],
    device: str,
) -> None:
    calls = range(k)
    for i in range(b):
        starts[i].record()
        for _ in calls:
            step()
        ends[i].record()
    torch.cuda.synchronize(device)
    for i in range(b):
        out.append(starts[i].elapsed_time(ends[i]) / k)  # elapsed_time is in ms


def time_step(
    step: Callable[[], None],
    *,
    device: str = "cpu",
    warmup_iters: int = 3,
    min_samples: int = 10,
    max_samples: int = 10_000,
    target_rel_ci: float = 0.02,
    max_time_s: float = 10.0,
    min_warmup_s: float = 0.0,
    progress: Callable[[int], None] | None = None,
    min_time_s: float = 0.0,
    window: TimingWindow | None = None,
) -> TimingResult:
    """Time ``step`` (the full step) until the median's 95 % CI is within ``±target_rel_ci``, or a cap.

    See the module docstring for warm-up, blocking of fast steps, clocks, the stopping rule
    (``min_time_s``) and ``window``. ``progress``, if given, is called with the number of samples
    so far after each batch.
    """
    if min_samples < 1 or max_samples < 1:
        raise ValueError("min_samples and max_samples must be >= 1")
    if max_time_s <= 0:
        raise ValueError("max_time_s must be > 0")
    is_cuda = device.startswith("cuda")

    # Warm-up: whole step, synchronized, at least warmup_iters calls and min_warmup_s seconds.
    warm_ns: list[int] = []
    warm_start = _now_ns()
    while len(warm_ns) < warmup_iters or (_now_ns() - warm_start) * 1e-9 < min_warmup_s:
        warm_ns.append(_timed_call_ns(step, device))
    est_call_ns = max(1, int(statistics.median(warm_ns))) if warm_ns else 0
    burst = 0
    if warm_ns and est_call_ns < BURST_BELOW_S * 1e9:
        # A synchronized call also pays the synchronization (tens of µs on CUDA): re-estimate the
        # per-call time from a burst of back-to-back calls between two synchronizations.
        # Bursts double in length until one lasts 2 * BURST_BELOW_S or holds MAX_CALLS_PER_SAMPLE calls.
        target_ns = round(2 * BURST_BELOW_S * 1e9)
        m = min(MAX_CALLS_PER_SAMPLE, -(-target_ns // est_call_ns))
        while True:
            _sync(device)
            t0 = _now_ns()
            for _ in range(m):
                step()
            _sync(device)
            dt = _now_ns() - t0
            burst += m
            if dt >= target_ns or m >= MAX_CALLS_PER_SAMPLE:
                break
            m = min(MAX_CALLS_PER_SAMPLE, 2 * m)
        est_call_ns = max(1, dt // m)
    k = 1
    if warm_ns and est_call_ns < FAST_STEP_S * 1e9:
        k = min(MAX_CALLS_PER_SAMPLE, -(-round(BLOCK_TARGET_S * 1e9) // est_call_ns))  # ceil division
    est_call_s = est_call_ns * 1e-9

    starts: list[Any] = []
    ends: list[Any] = []
    if is_cuda:
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(MAX_BATCH)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(MAX_BATCH)]

    samples: list[float] = []
    gc.collect()
    _sync(device)
    if window is not None:
        window.begin()
    t_start = _now_ns()
    stop_reason = ""
    sample_s = est_call_s * k
    while not stop_reason:
        b = _batch_size(sample_s, max_time_s, len(samples), min_samples, max_samples - len(samples))
        if is_cuda:
            _run_batch_cuda(step, k, b, samples, starts, ends, device)
        else:
            _run_batch_cpu(step, k, b, samples)
        elapsed_s = (_now_ns() - t_start) * 1e-9
        n = len(samples)
        if progress is not None:
            progress(n)
        med = statistics.median(samples)
        sample_s = med * 1e-3 * k
        if n >= min_samples and order_stat_ranks(n, 0.95) is not None:
            lo, hi = median_ci(samples)
            if med > 0 and (hi - lo) / 2.0 / med <= target_rel_ci and elapsed_s >= min_time_s:
                stop_reason = "ci_target"
                break
        if n >= max_samples:
            stop_reason = "max_samples"
        elif elapsed_s >= max_time_s:
            stop_reason = "time_cap"
    if window is not None:
        window.end()

    return TimingResult(
        samples_ms=samples,
        warmup_iters=len(warm_ns) + burst,
        stop_reason=stop_reason,
        target_rel_ci=target_rel_ci,
        calls_per_sample=k,
        device=device,
        elapsed_s=(_now_ns() - t_start) * 1e-9,
        min_samples=min_samples,
    )
