"""One configuration compared: the two sides' ``Group`` s, the ratio of the metric, the ``Pair``.

The method of the ratio follows from what each side holds (``estimate_pair``):

- at least 2 processes on a side: ``ratio_from_repeats`` (Welch t on log per-process figures); the
  CI covers the drift between processes (``"between-process"``); one process on the other side
  then leaves the CI unbounded (its spread is unknown), never a fake tight one;
- one process a side with raw samples: ``ratio_from_samples`` (bootstrap of medians); the CI
  covers only the noise *within* each process (``"within-process"``);
- no raw samples: the ratio of medians with an unbounded CI;
- an exact metric (bytes): ``exact_ratio``;
- a ``"row"`` metric (energy per item): the per-process figures are the ``--repeat`` records' own
  (R a row) or the row's cell (one); two or more a side: ``ratio_from_repeats``; one a side: the
  ratio without a CI (``ci_covers`` ``"one-reading"``): a counter read at a window's two ends has no
  within-process spread to bootstrap, so no interval is honest. Rows whose cell is empty are left
  out with their sidecar's reason (``Pair.left_out``), never counted as 0; two sides whose figures
  come from different sources (``Metric.source_columns``: ``rapl-package`` against ``nvml``, another
  scope, other devices) get no ratio, and the reason names both (devices may differ where the pair
  compares jobs of different shapes: ``parallel`` or ``world_size``, each row summing its own).

A pair built on a row flagged ``noisy`` keeps its ratio and CI but its verdict is never ``faster``,
``slower`` or ``same``: it is ``inconclusive``, with ``noisy`` set and ``verdict_clean`` saying what
clean rows would have read. The pair also carries each side's environment where it differs
(``env_diff``) and the CSV's own figure of the metric (``base_row_value``) beside the figure the
ratio is built from (``base_value``: per-process, e.g. the geometric mean of ``--repeat`` medians).

Torch-free, rich-free.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.results.compare_inputs import Process, Result
from bench.results.compare_spec import ENV_FIELDS, FLOPS_COLUMN, MEMORY_COLUMN, METRICS_BY_NAME, Metric
from bench.results.schema import FAILED_STATUSES
from bench.stats.compare import RatioEstimate, exact_ratio, ratio_from_repeats, ratio_from_samples, verdict
from bench.stats.estimate import unbounded

CONFIDENCE = 0.95
#: configuration fields that change a job's shape: a pair across them compares jobs over different
#: devices (each row sums its own), so the source columns that name devices may differ there
RESHAPING_FIELDS = ("parallel", "world_size")
DEVICE_SOURCE_COLUMNS = frozenset({"energy_devices"})
#: what a figure's source covers beyond the measured process (``compare_notes`` says it once)
SCOPE_CAVEATS = {
    "energy_scope=cpu-package": (
        "energy_scope cpu-package (RAPL): the counter covers the whole CPU package, so other processes "
        "and idle cores count too; trust energy ratios only from rows measured on a quiet machine "
        "(noise_other_cpu_pct)"
    ),
}


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
        }
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _row_figures(group: Group, metric: Metric) -> tuple[list[float], list[Result], list[str]]:
    """A ``"row"`` metric's per-process figures, the rows they come from, and the rows left out.

    A ``--repeat R`` row whose sidecar has every repeat's figure gives R; any other row with a
    figure gives its cell (one process: the row's own, or the median of R when the sidecar lacks
    them). A row with an empty cell is left out, with the reason its sidecar gives.
    """
    vals: list[float] = []
    used: list[Result] = []
    left_out: list[str] = []
    for r in group.ok:
        v = r.figures.get(metric.column)
        if v is None or v <= 0:
            why = r.why_empty.get(metric.column) or f"no {metric.column}"
            left_out.append(f"{r.source}: {why}")
            continue
        per = [p.figures.get(metric.column) for p in r.processes]
        if len(per) >= 2 and all(x is not None and x > 0 for x in per):
            vals += [float(x) for x in per if x is not None]
        else:
            vals.append(v)
        used.append(r)
    return vals, used, left_out


def _source_keys(used: Sequence[Result], metric: Metric) -> list[tuple[str, ...]]:
    """The distinct sources (values of ``metric.source_columns``) of the rows a figure came from."""
    return list(dict.fromkeys(tuple(r.sources.get(c, "") for c in metric.source_columns) for r in used))


def _sources_text(sources: Sequence[tuple[str, ...]], metric: Metric) -> str:
    """``energy_source=rapl-package, energy_scope=cpu-package, energy_devices=cpu-package0``."""
    return " / ".join(
        ", ".join(f"{c}={v or '?'}" for c, v in zip(metric.source_columns, src, strict=True))
        for src in sources
    )


def _incomparable(base: Group, new: Group, b_used: list[Result], n_used: list[Result], metric: Metric) -> str:
    """Why the figures of the two sides cannot be compared (different sources), or ""."""
    cols = metric.source_columns
    if not cols:
        return ""
    reshaped = any(base.config.get(f) != new.config.get(f) for f in RESHAPING_FIELDS)
    check = [c for c in cols if not (reshaped and c in DEVICE_SOURCE_COLUMNS)]
    b_src, n_src = _source_keys(b_used, metric), _source_keys(n_used, metric)
    for name, src in (("base", b_src), ("new", n_src)):
        if len({tuple(s[cols.index(c)] for c in check) for s in src}) > 1:
            return (
                f"{metric.name} not comparable: the {name} rows come from different sources "
                f"({_sources_text(src, metric)}); compare rows measured the same way"
            )
    b_key = {tuple(s[cols.index(c)] for c in check) for s in b_src}
    n_key = {tuple(s[cols.index(c)] for c in check) for s in n_src}
    if b_key != n_key:
        return (
            f"{metric.name} not comparable: base {_sources_text(b_src, metric)} vs new "
            f"{_sources_text(n_src, metric)} (a ratio across counters or devices measures them, not a change)"
        )
    return ""


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


ONE_READING_NOTE = (
    "one reading a side: a counter read at the window's two ends has no within-process spread, so "
    "the ratio has no CI (dlbench run --repeat 3 gives per-repeat figures and a between-process CI)"
)


def _estimate_rows(base: Group, new: Group, metric: Metric) -> PairEstimate:
    """NEW / BASE of a ``"row"`` metric (see the module docstring)."""
    bv, b_used, b_out = _row_figures(base, metric)
    nv, n_used, n_out = _row_figures(new, metric)
    left_out = [f"base {x}" for x in b_out] + [f"new {x}" for x in n_out]
    sources = {
        side: [_sources_text([k], metric) for k in _source_keys(used, metric)]
        for side, used in (("base", b_used), ("new", n_used))
        if metric.source_columns and used
    }
    if not bv or not nv:
        sides = [name for name, v in (("base", bv), ("new", nv)) if not v]
        why = "; ".join(dict.fromkeys(x.split(": ", 1)[-1] for x in left_out)) or "no row"
        note = f"no {metric.column} on the {' and '.join(sides)} side{'s' * (len(sides) > 1)}: {why}"
        return PairEstimate(None, "", None, None, metric.unit, note, left_out, sources)
    bad = _incomparable(base, new, b_used, n_used, metric)
    if bad:
        return PairEstimate(None, "", None, None, metric.unit, bad, left_out, sources)
    if len(bv) >= 2 or len(nv) >= 2:
        est = ratio_from_repeats(bv, nv, confidence=CONFIDENCE)
        covers = {r.ci_covers for r in (*b_used, *n_used)}
        label = "between-run" if "between-run" in covers else "between-process"
        return PairEstimate(est, label, _geomean(bv), _geomean(nv), metric.unit, est.note, left_out, sources)
    est = unbounded(nv[0] / bv[0], "repeats", 1, 1, CONFIDENCE, ONE_READING_NOTE)
    return PairEstimate(est, "one-reading", bv[0], nv[0], metric.unit, ONE_READING_NOTE, left_out, sources)


def estimate_pair(base: Group, new: Group, metric_name: str) -> PairEstimate:
    """NEW / BASE of the metric for one configuration: the method follows from what each side has."""
    metric = METRICS_BY_NAME[metric_name]
    if metric.kind == "row":
        return _estimate_rows(base, new, metric)
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
    """Notes on a whole comparison from its pairs: rows left out for want of a figure, and what a
    source covers beyond the measured process (RAPL's whole package), each said once."""
    notes: list[str] = []
    # "base path:line: why" -> "path:line: why", once (--by pairs share their base rows)
    left = list(dict.fromkeys(x.split(" ", 1)[-1] for p in pairs for x in p.left_out))
    if left:
        metric = pairs[0].metric
        column = METRICS_BY_NAME[metric].column if metric in METRICS_BY_NAME else metric
        reasons = list(dict.fromkeys(x.split(": ", 1)[-1] for x in left))
        shown = "; ".join(reasons[:3]) + (f"; ... ({len(reasons)} reasons)" if len(reasons) > 3 else "")
        notes.append(
            f"{len(left)} ok row(s) without {column} left out of the {metric} ratios (an empty cell is "
            f"never compared as 0): {shown}"
        )
    sources = list(dict.fromkeys(s for p in pairs for side in p.sources.values() for s in side))
    if sources:
        notes.append(
            f"{pairs[0].metric} figures from: {'; '.join(sources[:4])}" + (" ..." if len(sources) > 4 else "")
        )
    for marker, caveat in SCOPE_CAVEATS.items():
        if any(marker in s for s in sources):
            notes.append(caveat)
    return notes


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
