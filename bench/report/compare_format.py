"""Rendering a ``dlbench compare`` (``bench.results.compare.Comparison``) as JSON, markdown, or table cells.

Everything here reads the comparison's JSON form (``Comparison.to_dict()``), so a saved
``compare.json`` renders the same as a fresh comparison. The JSON is::

    {"kind": "dlbench-compare", "version": 1, "metric", "threshold", "confidence", "base": [paths],
     "new": [paths], "by": null | {"axis", "base_value"},
     "env_mismatch": [{"field", "base", "new", "pairs"}], "allow_env_mismatch", "env_label",
     "counts", "notes",
     "pairs": [{"label", "key", "verdict", "ratio", "ci_low", "ci_high", "p_value", "method",
                "n_base", "n_new", "confidence", "ci_covers", "significant", "regression",
                "noisy", "verdict_clean", "base_value", "new_value", "base_row_value",
                "new_row_value", "unit", "memory_ratio", "memory_base_bytes", "memory_new_bytes",
                "memory_delta_bytes", "flops_ratio", "env_diff", "left_out", "sources", "compile_time_s",
                "break_even_steps", "break_even_low", "break_even_high", "summary", ...}]}

``noisy``: a row the pair is built on was flagged noisy (its verdict is then ``inconclusive`` and
``verdict_clean`` says what it would read on clean rows). ``base_value`` is the figure the ratio is
built from (per process; the geometric mean of ``--repeat`` medians), ``base_row_value`` the CSV's
own figure (the median of the repeats' medians); tables show the second beside the first where
they differ. ``env_diff`` lists the environment fields in which this pair's two sides differ.
``left_out`` (``--metric energy``): the rows without the metric's figure and why; ``sources``: where
each side's figures came from (``{"base": ["energy_source=nvml, energy_scope=device, ..."], ...}``).
A compiled NEW against an eager BASE (``--by compile``) has NEW's ``compile_time_s`` and the steps
after which compiling pays for it, ``break_even_steps`` with its CI (a number, or ``"never"`` where
the compiled step is not faster; null elsewhere).

``ratio`` is always NEW / BASE of the metric (for time, < 1 is faster); an unbounded interval has
``ci_high`` null (strict JSON: no ``Infinity``). ``summary`` is the phrase a person reads:
``"2.10x faster [1.90, 2.30], peak memory x0.55"``. Torch-free and rich-free (the CLI draws the
rich table from ``display_rows``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from bench.report.escape import md_cell, md_text, one_line
from bench.report.format import fmt_bytes, fmt_si, num
from bench.results.compare_spec import METRICS_BY_NAME

_LOWER_IS_BETTER = {m.name: not m.higher_is_better for m in METRICS_BY_NAME.values()}
_METRIC_WORDS = {m.name: m.words for m in METRICS_BY_NAME.values()}
_CHANGE_WORDS = {m.name: (m.better, m.worse) for m in METRICS_BY_NAME.values()}
COVERS_TEXT = {
    "within-process": (
        "within-process: one process a side, so the CI covers only the noise inside each run; separate "
        "runs here drifted up to 46% apart while such CIs said +-2% -- rerun both sides with "
        "`dlbench run --repeat 5` (or use `dlbench gate`) before trusting a verdict across runs"
    ),
    "between-process": (
        "between-process: the CI comes from the per-process figures (--repeat, or several files a side)"
    ),
    "between-run": (
        "between-run: the repeats ran in one process (--no-isolation); drift between processes is not covered"
    ),
    "exact": "exact: deterministic figures (bytes, FLOPs); any difference is real",
    "none": "none: no raw samples (sidecar missing), so no interval",
    "one-reading": (
        "one-reading: one energy reading a side; a counter read at the window's two ends has no "
        "within-process spread, so no interval -- `dlbench run --repeat 3` gives a between-process one"
    ),
}


def as_dict(comparison: Any) -> dict[str, Any]:
    """The JSON form of a ``Comparison`` (or the dict itself), each pair with its ``summary``."""
    d = comparison if isinstance(comparison, Mapping) else comparison.to_dict()
    d = dict(d)
    d["pairs"] = [{**p, "summary": pair_summary(p, d.get("metric", "time"))} for p in d.get("pairs", [])]
    return d


def to_json(comparison: Any) -> str:
    """Strict JSON (no NaN or Infinity) of the comparison, indented."""
    return json.dumps(as_dict(comparison), indent=2, allow_nan=False, default=str) + "\n"


def fmt_factor(x: float) -> str:
    """A memory or FLOP ratio: ``0.55``, ``1.00``, ``1.26`` (three significant digits outside [0.01, 100))."""
    return f"{x:.2f}" if 0.01 <= x < 100 else f"{x:.3g}"


def _digits(x: float) -> int:
    return 3 if x < 1.1 else 2


def _bounded(p: Mapping[str, Any]) -> bool:
    lo, hi = num(p.get("ci_low")), num(p.get("ci_high"))
    return lo is not None and hi is not None and lo > 0 and math.isfinite(hi)


def change_phrase(p: Mapping[str, Any], metric: str) -> str:
    """``"2.10x faster [1.90, 2.30]"``, ``"1.30x slower [1.29, 1.31]"``, ``"peak memory x1.262"``,
    ``"1.25x less energy [CI unbounded]"`` (the words are the metric's: ``Metric.better/worse``)."""
    r = num(p.get("ratio"))
    if r is None or r <= 0:
        return ""
    lo, hi = num(p.get("ci_low")), num(p.get("ci_high"))
    if metric == "memory":
        return f"peak memory x{fmt_factor(r)}" + _delta(p)
    lower_better = _LOWER_IS_BETTER.get(metric, True)
    better = r < 1.0 if lower_better else r > 1.0
    # the magnitude of the change as a factor >= 1, and its interval in the same direction
    invert = r < 1.0
    mag = 1.0 / r if invert else r
    better_word, worse_word = _CHANGE_WORDS.get(metric, ("faster", "slower"))
    word = "" if r == 1.0 else (better_word if better else worse_word)
    d = _digits(mag)
    text = f"{mag:.{d}f}x {word}".rstrip()
    if p.get("method") == "exact":
        return text
    if not _bounded(p):
        return f"{text} [CI unbounded]"
    assert lo is not None and hi is not None
    a, b = (1.0 / hi, 1.0 / lo) if invert else (lo, hi)
    return f"{text} [{a:.{d}f}, {b:.{d}f}]"


def _delta(p: Mapping[str, Any], *, exact: bool = True) -> str:
    """`` (+1 MiB, +1,048,576 B)``: the peak-memory difference, rounded and (``exact``) to the byte."""
    delta = num(p.get("memory_delta_bytes"))
    if delta is None or delta == 0:
        return ""
    sign = "+" if delta > 0 else "-"
    if not exact:
        return f" ({sign}{fmt_bytes(abs(delta))})"
    return f" ({sign}{fmt_bytes(abs(delta))}, {sign}{abs(int(delta)):,} B)"


def _steps_text(x: Any) -> str:
    if x == "never":
        return "never"
    v = num(x)
    return "?" if v is None else f"{v:,.0f}" if v >= 10 else f"{v:.2g}"


def compile_phrase(p: Mapping[str, Any]) -> str:
    """``"compile 81.4 s, pays off after 37 steps [30, 52]"`` (or ``never``) for a compiled vs eager
    pair; "" for any other pair."""
    c = num(p.get("compile_time_s"))
    steps = p.get("break_even_steps")
    if c is None or steps is None:
        return ""
    if steps == "never":
        return f"compile {c:.3g} s, never pays off (the compiled step is not faster)"
    text = f"compile {c:.3g} s, pays off after {_steps_text(steps)} steps"
    lo, hi = p.get("break_even_low"), p.get("break_even_high")
    if lo is not None and hi is not None:
        text += f" [{_steps_text(lo)}, {_steps_text(hi)}]"
    return text


def pair_summary(p: Mapping[str, Any], metric: str) -> str:
    """What a person reads for a pair: the change with its CI, then peak memory (exact), then for a
    compiled pair the compile time and its break-even."""
    if p.get("verdict") in ("new", "missing", "failed") or num(p.get("ratio")) is None:
        return str(p.get("reason") or p.get("verdict") or "")
    text = change_phrase(p, metric)
    if compile_phrase(p):
        text += f"; {compile_phrase(p)}"
    mem = num(p.get("memory_ratio"))
    if metric != "memory" and mem is not None:
        text += f", peak memory x{fmt_factor(mem)}"
    if p.get("noisy"):
        text += f" (noisy rows: would read {p.get('verdict_clean') or p.get('verdict')})"
    if p.get("env_diff"):
        text += " (environments differ: " + ", ".join(str(e.get("field")) for e in p["env_diff"]) + ")"
    return text


def verdict_text(p: Mapping[str, Any]) -> str:
    """The verdict as a person reads it: ``inconclusive (noisy)`` for a pair built on a noisy row."""
    v = str(p.get("verdict", ""))
    return f"{v} (noisy)" if p.get("noisy") else v


def _with_row_value(value: Any, row_value: Any, unit: str) -> str:
    """``12.3 ms``, or ``12.3 ms (CSV 12.1 ms)`` where the CSV's figure differs from the per-process one."""
    text = fmt_value(value, unit)
    v, r = num(value), num(row_value)
    if v is None or r is None or fmt_value(r, unit) == text:
        return text
    return f"{text} (CSV {fmt_value(r, unit)})"


def fmt_value(value: Any, unit: str) -> str:
    """A metric's value for a table cell: ``12.34 ms``, ``1.2M tokens/s``, ``12.3 MiB``, ``45.6%``."""
    v = num(value)
    if v is None:
        return "-"
    if unit == "ms":
        return f"{v:.4g} ms"
    if unit == "bytes":
        return fmt_bytes(v)
    if unit == "MFU":
        return f"{v:.2%}"
    return fmt_si(v, unit)


def fmt_p(value: Any) -> str:
    v = num(value)
    if v is None:
        return "-"
    return "<1e-4" if v < 1e-4 else f"{v:.2g}"


def display_rows(comparison: Any) -> list[dict[str, str]]:
    """One dict of display strings per pair: config, verdict, change, base, new, p, covers, memory."""
    d = as_dict(comparison)
    metric = d.get("metric", "time")
    rows = []
    for p in d["pairs"]:
        mem = num(p.get("memory_ratio"))
        unit = str(p.get("unit") or "")
        absent = p.get("verdict") in ("new", "missing", "failed")
        change = change_phrase(p, metric) if not absent else ""
        if not change:  # new, missing, failed, or no figure to compare: say why
            change = str(p.get("reason") or "")
        elif compile_phrase(p):
            change += f"; {compile_phrase(p)}"
        if p.get("env_diff"):
            change += " [env differs: " + ", ".join(str(e.get("field")) for e in p["env_diff"]) + "]"
        rows.append(
            {
                "config": one_line(p.get("label", "")),
                "verdict": verdict_text(p),
                "change": one_line(change),
                "base": _with_row_value(p.get("base_value"), p.get("base_row_value"), unit),
                "new": _with_row_value(p.get("new_value"), p.get("new_row_value"), unit),
                "p": fmt_p(p.get("p_value")),
                "covers": str(p.get("ci_covers") or "-"),
                "memory": f"x{fmt_factor(mem)}{_delta(p)}" if mem is not None and metric != "memory" else "-",
                "memory_short": f"x{fmt_factor(mem)}{_delta(p, exact=False)}"
                if mem is not None and metric != "memory"
                else "-",
            }
        )
    return rows


def header_lines(comparison: Any) -> list[str]:
    """The lines above the table: inputs, metric, threshold, environment label."""
    d = as_dict(comparison)
    lines = []
    if d.get("by"):
        by = d["by"]
        lines.append(f"results: {', '.join(d['base'])}")
        lines.append(f"each {by['axis']} vs {by['axis']}={by['base_value']}")
    else:
        lines.append(f"base: {', '.join(d['base'])}")
        lines.append(f"new:  {', '.join(d['new'])}")
    conf = float(d.get("confidence") or 0.95)
    lines.append(
        f"metric: {_METRIC_WORDS.get(d['metric'], d['metric'])}; ratio = new / base with {conf:.0%} CI; "
        f"threshold {float(d['threshold']):.1%}"
    )
    if d.get("env_mismatch"):
        detail = "; ".join(
            f"{m['field']}: {'/'.join(map(str, m['base']))} vs {'/'.join(map(str, m['new']))}"
            for m in d["env_mismatch"]
        )
        lines.append(
            f"{d.get('env_label') or 'ENVIRONMENTS DIFFER'} ({detail}) -- allowed by --allow-env-mismatch"
        )
    return lines


def footer_lines(comparison: Any) -> list[str]:
    """The lines under the table: verdict counts, then what each kind of interval covers."""
    d = as_dict(comparison)
    counts = d.get("counts") or {}
    lines = ["verdicts: " + ", ".join(f"{n} {v}" for v, n in counts.items())] if counts else []
    covers = [c for c in dict.fromkeys(str(p.get("ci_covers") or "") for p in d["pairs"]) if c]
    lines += [f"CI covers {COVERS_TEXT.get(c, c)}" for c in covers]
    lines += [str(n) for n in d.get("notes") or []]
    return lines


_SHOWN_FIRST = ("slower", "failed", "inconclusive", "faster", "missing", "new", "same")


def summary_order(rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Row indices with the ones a person must see first: slower, failed, inconclusive, ... same last."""
    rank = {v: i for i, v in enumerate(_SHOWN_FIRST)}
    return sorted(
        range(len(rows)), key=lambda i: (rank.get(str(rows[i].get("verdict", "")).split()[0], 9), i)
    )


def shown_rows(comparison: Any, limit: int | None) -> tuple[list[dict[str, str]], int]:
    """The display rows to show (all when ``limit`` is None or not exceeded), and how many there are."""
    rows = display_rows(comparison)
    if limit is None or len(rows) <= limit:
        return rows, len(rows)
    return [rows[i] for i in sorted(summary_order(rows)[:limit])], len(rows)


def to_markdown(comparison: Any, title: str = "dlbench compare", *, limit: int | None = None) -> str:
    """A markdown page: the header lines, one table row per pair (``limit``: at most), the footer.

    Every cell and line is escaped (``md_cell``): a ``|``, a newline or ``<script>`` from a results
    file stays text.
    """
    d = as_dict(comparison)
    out = [f"# {md_text(title)}", ""]
    out += [f"- {md_text(line)}" for line in header_lines(d)]
    out.append("")
    cols = ["configuration", "verdict", "new / base [95% CI]", "base", "new", "p", "CI covers", "peak memory"]
    keys = ["config", "verdict", "change", "base", "new", "p", "covers", "memory"]
    out.append("| " + " | ".join(cols) + " |")
    out.append("|" + "---|" * len(cols))
    rows, total = shown_rows(d, limit)
    for row in rows:
        cells = [md_cell(row[k]) for k in keys]
        if row["verdict"] in ("slower", "faster"):
            cells[1] = f"**{cells[1]}**"
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    if len(rows) < total:
        out += [f"{md_text(omitted_line(len(rows), total))}  "]
    out += [f"{md_text(line)}  " for line in footer_lines(d)]
    return "\n".join(out).rstrip() + "\n"


def omitted_line(shown: int, total: int) -> str:
    return (
        f"showing {shown} of {total} configurations (slower, failed and inconclusive first; the verdict "
        "counts below cover all); --all shows every row, --format json has them all"
    )
