"""One configuration compared: the two sides' ``Group`` s, the ratio of the metric, the ``Pair``.

The method of the ratio follows from what each side holds (``estimate_pair``):

- at least 2 processes on a side: ``ratio_from_repeats`` (Welch t on log per-process figures); the
  CI covers the drift between processes (``"between-process"``); one process on the other side
  then leaves the CI unbounded (its spread is unknown), never a fake tight one;
- one process a side with raw samples: ``ratio_from_samples`` (bootstrap of medians); the CI
  covers only the noise *within* each process (``"within-process"``);
- no raw samples: the ratio of medians with an unbounded CI;
- an exact metric (bytes): ``exact_ratio``;
- a ``"row"`` metric (energy per item: one figure per process, no samples): ``compare_rows``
  (per-repeat figures, the ratio without a CI on one reading a side, rows without a figure left
  out with their reason, sides of different sources given no ratio).

A pair built on a row flagged ``noisy`` keeps its ratio and CI but its verdict is never ``faster``,
``slower`` or ``same``: it is ``inconclusive``, with ``noisy`` set and ``verdict_clean`` saying what
clean rows would have read. The pair also carries each side's environment where it differs
(``env_diff``) and the CSV's own figure of the metric (``base_row_value``) beside the figure the
ratio is built from (``base_value``: per-process, e.g. the geometric mean of ``--repeat`` medians).

A compiled row against an eager one (``--by compile``: NEW has ``compile_time_s``, BASE has none)
also gets the **break-even step count**, ``compile_time_s / (eager step - compiled step)``: the steps
after which compiling has paid for its cold start (``break_even_steps``; infinite, "never", where the
compiled step is not faster). With a time ratio ``r`` = compiled / eager and its CI ``[lo, hi]``, the
saved time per step is ``eager x (1 - r)``, so the CI of the break-even is
``[C / (eager x (1 - lo)), C / (eager x (1 - hi))]`` (never where ``hi`` >= 1).

Torch-free, rich-free.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.results.compare_inputs import Process, Result
from bench.results.compare_rows import estimate_rows, row_notes
from bench.results.compare_spec import (
    COMPILE_TIME_COLUMN,
    ENV_FIELDS,
    FLOPS_COLUMN,
    MEMORY_COLUMN,
    METRICS_BY_NAME,
    Metric,
)
from bench.results.schema import FAILED_STATUSES
from bench.stats.compare import RatioEstimate, exact_ratio, ratio_from_repeats, ratio_from_samples, verdict
from bench.stats.estimate import unbounded

CONFIDENCE = 0.95


@dataclass
class Group:
    """Everything one side has for one configuration."""

    config: dict[str, str]
    results: list[Result] = field(default_factory=list)

    @property
    def ok(self) -> list[Result]:
        return [r for r in self.results if r.status == "ok"]

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.status in FAILED_STATUSES]

    @property
    def processes(self) -> list[tuple[Result, Process]]:
        return [(r, p) for r in self.ok for p in r.processes]

    def first(self, get: Callable[[Result], Any]) -> Any:
        for r in self.ok:
            v = get(r)
            if v is not None:
                return v
        return None

    def env_values(self, name: str) -> set[str]:
        return {r.env[name] for r in self.ok if name in r.env}


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])


def _geomean(xs: Sequence[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


@dataclass
class Pair:
    """The comparison of one configuration: NEW / BASE of the metric, plus exact memory and FLOPs."""

    label: str
    key: str
    config: dict[str, str]
    verdict: str
    metric: str
    estimate: RatioEstimate | None = None
    ci_covers: str = ""
    base_value: float | None = None
    new_value: float | None = None
    base_row_value: float | None = None  # the CSV's own figure (median of the rows' cells)
    new_row_value: float | None = None
    unit: str = ""
    memory_base_bytes: int | None = None
    memory_new_bytes: int | None = None
    flops_base: float | None = None
    flops_new: float | None = None
    base_status: str = ""
    new_status: str = ""
    reason: str = ""
    note: str = ""
    noisy: bool = False  # a row it is built on was flagged noisy by `dlbench run`
    verdict_clean: str | None = None  # what the verdict would be on clean rows (noisy pairs)
    env_diff: list[dict[str, Any]] = field(default_factory=list)  # [{"field", "base", "new"}]
    left_out: list[str] = field(default_factory=list)  # rows without the metric's figure, and why
    sources: dict[str, list[str]] = field(default_factory=dict)  # {"base": [...], "new": [...]}: where from
    # a compiled NEW against an eager BASE: NEW's cold start, and the steps until it pays off
    compile_time_s: float | None = None
    break_even_steps: float | None = None  # math.inf: never (the compiled step is not faster)
    break_even_low: float | None = None
    break_even_high: float | None = None

    @property
    def memory_ratio(self) -> float | None:
        if not self.memory_base_bytes or self.memory_new_bytes is None:
            return None
        return exact_ratio(self.memory_base_bytes, self.memory_new_bytes).ratio

    @property
    def memory_delta_bytes(self) -> int | None:
        if self.memory_base_bytes is None or self.memory_new_bytes is None:
            return None
        return self.memory_new_bytes - self.memory_base_bytes

    @property
    def flops_ratio(self) -> float | None:
        if not self.flops_base or self.flops_new is None:
            return None
        return exact_ratio(self.flops_base, self.flops_new).ratio

    @property
    def regression(self) -> bool:
        """A significant change for the worse beyond the threshold (verdict "slower")."""
        return self.verdict == "slower"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``bench.report.compare_format``); non-finite numbers become None."""
        est = self.estimate.to_dict() if self.estimate is not None else {}
        d: dict[str, Any] = {
            "label": self.label,
            "key": self.key,
            "verdict": self.verdict,
            "ratio": est.get("ratio"),
            "ci_low": est.get("ci_low"),
            "ci_high": est.get("ci_high"),
            "p_value": est.get("p_value"),
            "method": est.get("method"),
            "n_base": est.get("n_base"),
            "n_new": est.get("n_new"),
            "confidence": est.get("confidence"),
            "ci_covers": self.ci_covers or None,
            "significant": self.estimate.significant if self.estimate is not None else None,
            "regression": self.regression,
            "noisy": self.noisy,
            "verdict_clean": self.verdict_clean,
            "metric": self.metric,
            "base_value": self.base_value,
            "new_value": self.new_value,
            "base_row_value": self.base_row_value,
            "new_row_value": self.new_row_value,
            "unit": self.unit,
            "memory_ratio": self.memory_ratio,
            "memory_base_bytes": self.memory_base_bytes,
            "memory_new_bytes": self.memory_new_bytes,
            "memory_delta_bytes": self.memory_delta_bytes,
            "flops_ratio": self.flops_ratio,
            "flops_base": self.flops_base,
            "flops_new": self.flops_new,
            "base_status": self.base_status,
            "new_status": self.new_status,
            "env_diff": [dict(e) for e in self.env_diff],
            "left_out": list(self.left_out),
            "sources": {k: list(v) for k, v in self.sources.items()},
            "reason": self.reason,
            "note": self.note or (self.estimate.note if self.estimate is not None else ""),
            "config": dict(self.config),
            "compile_time_s": self.compile_time_s,
            "break_even_steps": _steps(self.break_even_steps),
            "break_even_low": _steps(self.break_even_low),
            "break_even_high": _steps(self.break_even_high),
        }
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _steps(x: float | None) -> float | str | None:
    """A break-even step count for JSON: the number, ``"never"`` for infinity, None for none."""
    if x is None:
        return None
    return "never" if math.isinf(x) else x


def break_even_steps(compile_time_s: float, eager_ms: float, ratio: float) -> float:
    """``compile_time_s / (eager step - compiled step)`` with ``ratio`` = compiled / eager step time;
    ``math.inf`` where the compiled step is not faster (compiling never pays for itself)."""
    saved_s = eager_ms / 1e3 * (1.0 - ratio)
    return compile_time_s / saved_s if saved_s > 0 else math.inf


def _figures(group: Group, metric: Metric) -> tuple[list[float], list[list[float] | None], str]:
    """Per-process figures of ``metric``, their samples, and the unit (see ``compare_spec``)."""
    vals: list[float] = []
    samples: list[list[float] | None] = []
    unit = metric.unit
    for r, p in group.processes:
        if metric.kind == "time":
            vals.append(p.median_ms)
            samples.append(p.samples_ms)
            continue
        row_value, median = r.figures.get(metric.column), r.median_ms
        if row_value is None or row_value <= 0 or median is None:
            continue  # a rate of 0 (no items counted) has no ratio
        k = row_value * median
        if metric.unit_column and r.units.get(metric.unit_column):
            unit = r.units[metric.unit_column]
        vals.append(k / p.median_ms)
        samples.append([k / x for x in p.samples_ms] if p.samples_ms else None)
    return vals, samples, unit


@dataclass
class PairEstimate:
    """What ``estimate_pair`` found: the estimate (None: no figure), what its CI covers, the points."""

    estimate: RatioEstimate | None
    ci_covers: str
    base_value: float | None
    new_value: float | None
    unit: str
    note: str
    left_out: list[str] = field(default_factory=list)
    sources: dict[str, list[str]] = field(default_factory=dict)


def estimate_pair(base: Group, new: Group, metric_name: str) -> PairEstimate:
    """NEW / BASE of the metric for one configuration: the method follows from what each side has."""
    metric = METRICS_BY_NAME[metric_name]
    if metric.kind == "row":
        r = estimate_rows(
            base.ok, new.ok, metric, base_config=base.config, new_config=new.config, confidence=CONFIDENCE
        )
        return PairEstimate(
            r.estimate, r.ci_covers, r.base_value, r.new_value, metric.unit, r.note, r.left_out, r.sources
        )
    if metric.kind == "exact":
        b = base.first(lambda r: r.memory.get(metric.column, r.figures.get(metric.column)))
        n = new.first(lambda r: r.memory.get(metric.column, r.figures.get(metric.column)))
        if not b or n is None:
            return PairEstimate(None, "", b, n, metric.unit, f"no {metric.column} on a side")
        return PairEstimate(
            exact_ratio(b, n), "exact", float(b), float(n), metric.unit, "deterministic figures"
        )
    bv, bs, unit = _figures(base, metric)
    nv, ns, unit_new = _figures(new, metric)
    unit = unit if bv else unit_new
    if not bv or not nv:
        return PairEstimate(None, "", None, None, unit, f"no {metric.name} figure on a side")
    if len(bv) >= 2 or len(nv) >= 2:
        est = ratio_from_repeats(bv, nv, confidence=CONFIDENCE)
        covers = {r.ci_covers for g in (base, new) for r in g.ok}
        label = "between-run" if "between-run" in covers else "between-process"
        return PairEstimate(est, label, _geomean(bv), _geomean(nv), unit, est.note)
    b_samples, n_samples = bs[0], ns[0]
    if b_samples and n_samples:
        est = ratio_from_samples(b_samples, n_samples, confidence=CONFIDENCE, seed=0)
        note = (
            "one process a side: the CI covers within-process noise only; separate runs drift more "
            "(dlbench run --repeat 5 gives a between-process CI)"
        )
        return PairEstimate(est, "within-process", _median(b_samples), _median(n_samples), unit, note)
    note = "no raw samples (sidecar missing): the ratio of medians, no CI"
    est = unbounded(nv[0] / bv[0], "bootstrap-samples", 1, 1, CONFIDENCE, note)
    return PairEstimate(est, "none", bv[0], nv[0], unit, note)


def compare_notes(pairs: Sequence[Pair]) -> list[str]:
    """Notes on a whole comparison from its pairs (a ``"row"`` metric's: ``compare_rows.row_notes``)."""
    if not pairs or pairs[0].metric not in METRICS_BY_NAME:
        return []
    metric = METRICS_BY_NAME[pairs[0].metric]
    if metric.kind != "row":
        return []
    left_out = [x for p in pairs for x in p.left_out]
    sources = [s for p in pairs for side in p.sources.values() for s in side]
    return row_notes(metric, left_out, sources)


def env_diff(base: Group, new: Group) -> list[dict[str, Any]]:
    """Each ``ENV_FIELDS`` field whose values differ between the two sides of this pair (both known)."""
    out = []
    for name in ENV_FIELDS:
        b, n = base.env_values(name), new.env_values(name)
        if b and n and b != n:
            out.append({"field": name, "base": sorted(b), "new": sorted(n)})
    return out


def _row_value(group: Group, metric: Metric) -> float | None:
    values = [v for r in group.ok if (v := r.figures.get(metric.column)) is not None]
    if metric.kind == "exact":
        values += [float(v) for r in group.ok if (v := r.memory.get(metric.column)) is not None]
    return _median(values) if values else None


def _noisy_note(base: Group, new: Group, clean: str) -> str:
    sides = [name for name, g in (("base", base), ("new", new)) if any(r.noisy for r in g.ok)]
    where = " and ".join(sides)
    return (
        f"noisy: the {where} row was flagged noisy by dlbench run (its CI missed the target or the "
        f"machine was busy); on clean rows this would read '{clean}': rerun it on a quiet machine"
    )


def make_pair(
    label: str, key: str, base: Group | None, new: Group | None, *, metric: str, threshold: float
) -> Pair:
    """The ``Pair`` of one configuration (either side may be absent)."""
    config = (base or new).config if (base or new) is not None else {}  # type: ignore[union-attr]
    pair = Pair(label=label, key=key, config=dict(config), verdict="inconclusive", metric=metric)
    pair.base_status = _status(base)
    pair.new_status = _status(new)
    if base is None or not base.ok:
        if base is not None and base.failed:
            pair.verdict, pair.reason = "failed", f"base: {base.failed[0].status}: {base.failed[0].reason}"
        elif new is not None and new.failed and not new.ok:
            pair.verdict, pair.reason = "failed", f"new: {new.failed[0].status}: {new.failed[0].reason}"
        else:
            pair.verdict = "new"
            pair.reason = _skip_reason(base) or "not in base"
        return pair
    if new is None or not new.ok:
        if new is not None and new.failed:
            pair.verdict, pair.reason = "failed", f"new: {new.failed[0].status}: {new.failed[0].reason}"
        else:
            pair.verdict = "missing"
            pair.reason = _skip_reason(new) or "not in new"
        return pair
    spec = METRICS_BY_NAME[metric]
    pe = estimate_pair(base, new, metric)
    est = pe.estimate
    pair.estimate, pair.ci_covers, pair.unit, pair.note = est, pe.ci_covers, pe.unit, pe.note
    pair.left_out, pair.sources = pe.left_out, pe.sources
    pair.base_value, pair.new_value = pe.base_value, pe.new_value
    pair.base_row_value, pair.new_row_value = _row_value(base, spec), _row_value(new, spec)
    pair.memory_base_bytes = base.first(lambda r: r.memory.get(MEMORY_COLUMN))
    pair.memory_new_bytes = new.first(lambda r: r.memory.get(MEMORY_COLUMN))
    pair.flops_base = base.first(lambda r: r.figures.get(FLOPS_COLUMN))
    pair.flops_new = new.first(lambda r: r.figures.get(FLOPS_COLUMN))
    pair.env_diff = env_diff(base, new)
    _set_break_even(pair, base, new, est if spec.kind == "time" else None)
    if est is None:
        pair.verdict = "inconclusive"
        pair.reason = pe.note
        return pair
    pair.verdict = verdict(est, threshold=threshold, higher_is_better=spec.higher_is_better)
    pair.noisy = spec.kind != "exact" and any(r.noisy for g in (base, new) for r in g.ok)
    if pair.noisy and pair.verdict in ("faster", "slower", "same"):
        pair.verdict_clean, pair.verdict = pair.verdict, "inconclusive"
        pair.reason = _noisy_note(base, new, pair.verdict_clean)
    return pair


def _set_break_even(pair: Pair, base: Group, new: Group, est: RatioEstimate | None) -> None:
    """The break-even of a compiled NEW against an eager BASE (see the module docstring); else nothing.

    The ratio and its CI are the time estimate's where the metric is time, else the rows' medians'.
    """
    compile_s = new.first(lambda r: r.figures.get(COMPILE_TIME_COLUMN))
    if compile_s is None or base.first(lambda r: r.figures.get(COMPILE_TIME_COLUMN)) is not None:
        return
    eager_ms, compiled_ms = base.first(lambda r: r.median_ms), new.first(lambda r: r.median_ms)
    if not eager_ms or compiled_ms is None:
        return
    pair.compile_time_s = compile_s
    if est is not None and est.ratio > 0:
        eager_ms = pair.base_value or eager_ms  # the figure the ratio is built from
        pair.break_even_steps = break_even_steps(compile_s, eager_ms, est.ratio)
        # an unbounded CI (one sample a side) still bounds it from below: (0, inf) -> [C / eager, never]
        if math.isfinite(est.ci_low) and est.ci_low >= 0:
            pair.break_even_low = break_even_steps(compile_s, eager_ms, est.ci_low)
            high = est.ci_high if math.isfinite(est.ci_high) else 1.0
            pair.break_even_high = break_even_steps(compile_s, eager_ms, high)
        return
    pair.break_even_steps = break_even_steps(compile_s, eager_ms, compiled_ms / eager_ms)


def _status(group: Group | None) -> str:
    if group is None:
        return "absent"
    if group.ok:
        return "ok"
    if group.failed:
        return group.failed[0].status
    return group.results[0].status if group.results else "absent"


def _skip_reason(group: Group | None) -> str:
    if group is None:
        return ""
    skipped = [r for r in group.results if r.status == "skipped"]
    return f"skipped: {skipped[0].reason}" if skipped else ""


__all__ = [
    "CONFIDENCE",
    "Group",
    "Pair",
    "PairEstimate",
    "compare_notes",
    "env_diff",
    "estimate_pair",
    "make_pair",
]
