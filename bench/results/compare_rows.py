"""A ``"row"`` metric compared (``Metric.kind == "row"``: energy per item): one figure per process.

A counter read at the two ends of a window gives one figure per process and no samples, so:

- the per-process figures are a ``--repeat R`` row's own (its sidecar's ``repeats``), else the
  row's cell (one process; the median of R where the sidecar lacks the repeats' figures);
- two or more a side: ``ratio_from_repeats`` (Welch t on logs; ``ci_covers`` ``between-process``,
  or ``between-run`` for ``--no-isolation`` repeats); one on a side: the other side's spread is
  unknown, so the CI is unbounded;
- one a side: the ratio without a CI (``ci_covers`` ``one-reading``, never a zero-width interval):
  there is no within-process spread to bootstrap;
- a row whose cell is empty is left out, with the reason its sidecar (or its ``reason`` cell)
  gives: never compared as 0;
- the two sides' sources (``Metric.source_columns``: ``energy_source``, ``energy_scope``,
  ``energy_devices``) must agree, within a side and between the sides, or the pair gets no ratio
  and a reason naming both. Devices may differ only between jobs of different shapes
  (``RESHAPING_FIELDS``): each row sums its own devices, which is what such a pair compares.

Torch-free, rich-free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bench.results.compare_inputs import Result
from bench.results.compare_spec import Metric
from bench.stats.compare import RatioEstimate, ratio_from_repeats
from bench.stats.estimate import unbounded

#: configuration fields that change a job's shape: a pair across them compares jobs over different
#: devices (each row sums its own), so the source columns that name devices may differ there
RESHAPING_FIELDS = ("parallel", "world_size")
DEVICE_SOURCE_COLUMNS = frozenset({"energy_devices"})
#: what a figure's source covers beyond the measured process (a comparison's notes say it once)
SCOPE_CAVEATS = {
    "energy_scope=cpu-package": (
        "energy_scope cpu-package (RAPL): the counter covers the whole CPU package, so other processes "
        "and idle cores count too; trust energy ratios only from rows measured on a quiet machine "
        "(noise_other_cpu_pct)"
    ),
}
ONE_READING_NOTE = (
    "one reading a side: a counter read at the window's two ends has no within-process spread, so "
    "the ratio has no CI (dlbench run --repeat 3 gives per-repeat figures and a between-process CI)"
)


@dataclass
class RowEstimate:
    """NEW / BASE of a ``"row"`` metric: the estimate (None: no ratio, ``note`` says why) and more."""

    estimate: RatioEstimate | None
    ci_covers: str
    base_value: float | None
    new_value: float | None
    note: str
    left_out: list[str] = field(default_factory=list)  # "base FILE:LINE: why" per row without a figure
    sources: dict[str, list[str]] = field(default_factory=dict)  # {"base": [...], "new": [...]}


def _geomean(xs: Sequence[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def row_figures(results: Sequence[Result], metric: Metric) -> tuple[list[float], list[Result], list[str]]:
    """The per-process figures of the ok ``results``, the rows they come from, and the rows left out."""
    vals: list[float] = []
    used: list[Result] = []
    left_out: list[str] = []
    for r in results:
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


def sources_text(sources: Sequence[tuple[str, ...]], metric: Metric) -> str:
    """``energy_source=rapl-package, energy_scope=cpu-package, energy_devices=cpu-package0``."""
    return " / ".join(
        ", ".join(f"{c}={v or '?'}" for c, v in zip(metric.source_columns, src, strict=True))
        for src in sources
    )


def incomparable(
    base_config: Mapping[str, str],
    new_config: Mapping[str, str],
    b_used: Sequence[Result],
    n_used: Sequence[Result],
    metric: Metric,
) -> str:
    """Why the figures of the two sides cannot be compared (different sources), or ""."""
    cols = metric.source_columns
    if not cols:
        return ""
    reshaped = any(base_config.get(f) != new_config.get(f) for f in RESHAPING_FIELDS)
    check = [cols.index(c) for c in cols if not (reshaped and c in DEVICE_SOURCE_COLUMNS)]
    b_src, n_src = _source_keys(b_used, metric), _source_keys(n_used, metric)
    b_key = {tuple(s[i] for i in check) for s in b_src}
    n_key = {tuple(s[i] for i in check) for s in n_src}
    for name, src, key in (("base", b_src, b_key), ("new", n_src, n_key)):
        if len(key) > 1:
            return (
                f"{metric.name} not comparable: the {name} rows come from different sources "
                f"({sources_text(src, metric)}); compare rows measured the same way"
            )
    if b_key != n_key:
        return (
            f"{metric.name} not comparable: base {sources_text(b_src, metric)} vs new "
            f"{sources_text(n_src, metric)} (a ratio across counters or devices measures them, not a change)"
        )
    return ""


def estimate_rows(
    base: Sequence[Result],
    new: Sequence[Result],
    metric: Metric,
    *,
    base_config: Mapping[str, str],
    new_config: Mapping[str, str],
    confidence: float,
) -> RowEstimate:
    """NEW / BASE of a ``"row"`` metric from the two sides' ok rows (see the module docstring)."""
    bv, b_used, b_out = row_figures(base, metric)
    nv, n_used, n_out = row_figures(new, metric)
    left_out = [f"base {x}" for x in b_out] + [f"new {x}" for x in n_out]
    sources = {
        side: [sources_text([k], metric) for k in _source_keys(used, metric)]
        for side, used in (("base", b_used), ("new", n_used))
        if metric.source_columns and used
    }
    if not bv or not nv:
        sides = [name for name, v in (("base", bv), ("new", nv)) if not v]
        why = "; ".join(dict.fromkeys(x.split(": ", 1)[-1] for x in left_out)) or "no row"
        note = f"no {metric.column} on the {' and '.join(sides)} side{'s' * (len(sides) > 1)}: {why}"
        return RowEstimate(None, "", None, None, note, left_out, sources)
    bad = incomparable(base_config, new_config, b_used, n_used, metric)
    if bad:
        return RowEstimate(None, "", None, None, bad, left_out, sources)
    if len(bv) >= 2 or len(nv) >= 2:
        est = ratio_from_repeats(bv, nv, confidence=confidence)
        covers = {r.ci_covers for r in (*b_used, *n_used)}
        label = "between-run" if "between-run" in covers else "between-process"
        return RowEstimate(est, label, _geomean(bv), _geomean(nv), est.note, left_out, sources)
    est = unbounded(nv[0] / bv[0], "repeats", 1, 1, confidence, ONE_READING_NOTE)
    return RowEstimate(est, "one-reading", bv[0], nv[0], ONE_READING_NOTE, left_out, sources)


def row_notes(metric: Metric, left_out: Sequence[str], sources: Sequence[str]) -> list[str]:
    """A comparison's notes: the rows left out (each once) and their reasons, the sources, caveats.

    ``left_out``: every pair's ``"base FILE:LINE: why"`` (``--by`` pairs share their base rows);
    ``sources``: every pair's source texts.
    """
    notes: list[str] = []
    left = list(dict.fromkeys(x.split(" ", 1)[-1] for x in left_out))
    if left:
        reasons = list(dict.fromkeys(x.split(": ", 1)[-1] for x in left))
        shown = "; ".join(reasons[:3]) + (f"; ... ({len(reasons)} reasons)" if len(reasons) > 3 else "")
        notes.append(
            f"{len(left)} ok row(s) without {metric.column} left out of the {metric.name} ratios (an "
            f"empty cell is never compared as 0): {shown}"
        )
    shown_sources = list(dict.fromkeys(sources))
    if shown_sources:
        more = " ..." if len(shown_sources) > 4 else ""
        notes.append(f"{metric.name} figures from: {'; '.join(shown_sources[:4])}{more}")
    notes += [caveat for marker, caveat in SCOPE_CAVEATS.items() if any(marker in s for s in shown_sources)]
    return notes


__all__ = [
    "DEVICE_SOURCE_COLUMNS",
    "ONE_READING_NOTE",
    "RESHAPING_FIELDS",
    "SCOPE_CAVEATS",
    "RowEstimate",
    "estimate_rows",
    "incomparable",
    "row_figures",
    "row_notes",
    "sources_text",
]
