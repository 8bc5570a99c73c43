"""The comparison result shared by every method: ``RatioEstimate``, input checks, and ``exact_ratio``.

A comparison is always a ratio ``new / base`` of one metric's point estimate (time, throughput,
MFU, FLOPs, bytes), with a confidence interval for that ratio. Which noise the interval covers
depends on how the figures were obtained, and is named by ``method``:

- ``"bootstrap-samples"``: raw per-iteration samples of one process per side. Covers only the
  noise *within* a process; processes here drift up to 46 % apart while such a CI says +-2 %.
- ``"repeats"``: per-repeat figures of R independent processes per side; the process is the unit.
- ``"slices"``: per-slice ratios of an interleaved A/B measurement (the regression gate).
- ``"exact"``: deterministic figures (FLOPs, bytes); no noise, the interval is the point.

An interval that the data cannot support (one process on a side, too few slices) is reported as
``(0, inf)``, never as a fake tight one; ``note`` says why. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Method = Literal["bootstrap-samples", "repeats", "slices", "exact"]
METHODS: tuple[str, ...] = ("bootstrap-samples", "repeats", "slices", "exact")

#: The keys of ``RatioEstimate.to_dict()`` -- a contract with the compare command and the report.
DICT_KEYS: tuple[str, ...] = (
    "ratio",
    "ci_low",
    "ci_high",
    "p_value",
    "method",
    "n_base",
    "n_new",
    "confidence",
)


@dataclass(frozen=True)
class RatioEstimate:
    """``new / base`` of a metric's point estimate, with a confidence interval and a p-value.

    ``ratio``: new/base of the point estimates (ratio of medians, of geometric means of repeat
    figures, or the median of per-slice ratios, per ``method``). ``[ci_low, ci_high]``: the CI of
    that ratio at ``confidence``; ``(0, inf)`` when the data cannot bound it. ``p_value``: two-sided
    p-value of "no difference" (None where no test applies, e.g. ``"exact"`` or one process on a
    side). ``n_base`` / ``n_new``: the units the CI is built from (samples, repeats, or slices --
    for slices both are the number of slices). ``note``: a human-readable caveat; not part of
    ``to_dict()``, whose keys are a fixed contract (``DICT_KEYS``).
    """

    ratio: float
    ci_low: float
    ci_high: float
    p_value: float | None
    method: Method
    n_base: int
    n_new: int
    confidence: float
    note: str = ""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")

    @property
    def bounded(self) -> bool:
        """True if the CI is finite on both sides and above 0 (the data did bound the ratio)."""
        return self.ci_low > 0.0 and math.isfinite(self.ci_high)

    @property
    def significant(self) -> bool:
        """True if the CI excludes 1 (a difference at the estimate's confidence)."""
        return self.ci_low > 1.0 or self.ci_high < 1.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: exactly the keys ``DICT_KEYS``; plain Python floats and ints.

        An unbounded CI keeps ``ci_high = inf`` (``json.dumps`` writes ``Infinity``, which Python's
        ``json.loads`` reads back; strict-JSON consumers must map it).
        """
        return {
            "ratio": float(self.ratio),
            "ci_low": float(self.ci_low),
            "ci_high": float(self.ci_high),
            "p_value": None if self.p_value is None else float(self.p_value),
            "method": self.method,
            "n_base": int(self.n_base),
            "n_new": int(self.n_new),
            "confidence": float(self.confidence),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RatioEstimate:
        """Inverse of ``to_dict`` (``note`` is not stored and comes back empty)."""
        p = d["p_value"]
        return cls(
            ratio=float(d["ratio"]),
            ci_low=float(d["ci_low"]),
            ci_high=float(d["ci_high"]),
            p_value=None if p is None else float(p),
            method=d["method"],
            n_base=int(d["n_base"]),
            n_new=int(d["n_new"]),
            confidence=float(d["confidence"]),
        )


def check_confidence(confidence: float) -> float:
    """``confidence`` as a float in (0, 1), or ValueError naming it."""
    c = float(confidence)
    if not 0.0 < c < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return c


def check_positive(name: str, values: Sequence[float] | np.ndarray, *, min_n: int = 1) -> np.ndarray:
    """``values`` as a 1-D float64 array of finite positive numbers, or ValueError naming ``name``.

    Times, throughputs and MFU are strictly positive; ratios and logs of them need that.
    """
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: expected a sequence of numbers ({e})") from e
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of numbers, got shape {arr.shape}")
    if arr.size < min_n:
        raise ValueError(f"{name}: needs at least {min_n} value(s), got {arr.size}")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name}: values must be finite, got {arr[bad][0]!r} at index {int(np.argmax(bad))}")
    nonpos = arr <= 0.0
    if nonpos.any():
        i = int(np.argmax(nonpos))
        raise ValueError(f"{name}: values must be > 0, got {arr[i]!r} at index {i}")
    return arr


def unbounded(
    ratio: float,
    method: Method,
    n_base: int,
    n_new: int,
    confidence: float,
    note: str,
    p_value: float | None = None,
) -> RatioEstimate:
    """A RatioEstimate whose CI the data cannot bound: ``(0, inf)``, with ``note`` saying why."""
    return RatioEstimate(float(ratio), 0.0, math.inf, p_value, method, n_base, n_new, confidence, note)


def exact_ratio(base: float, new: float) -> RatioEstimate:
    """The comparison of two deterministic figures (FLOPs, bytes): ``ci_low == ci_high == ratio``.

    There is no noise, so any difference is real: the CI is the point, ``p_value`` is None (no test
    applies), ``method == "exact"``, ``n_base == n_new == 1``, ``confidence == 1.0``. ``verdict``
    then never says "inconclusive": it says "same" only if the ratio lies inside the threshold
    band, so pass ``threshold=0`` to call any change a change. Zeros are allowed (a scenario can
    count 0 FLOPs): ``0 / 0 -> 1``, ``x / 0 -> inf``. Negative or non-finite figures raise ValueError.
    """
    b, n = float(base), float(new)
    for name, v in (("base", b), ("new", n)):
        if not math.isfinite(v):
            raise ValueError(f"{name}: must be finite, got {v!r}")
        if v < 0.0:
            raise ValueError(f"{name}: must be >= 0, got {v!r}")
    if b == 0.0:
        r = 1.0 if n == 0.0 else math.inf
    else:
        r = n / b
    return RatioEstimate(r, r, r, None, "exact", 1, 1, 1.0, "deterministic figures")
