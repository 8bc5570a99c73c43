"""The forest plot of a ``dlbench compare`` JSON: each pair's NEW/BASE ratio with its CI.

The file: ``{"kind": "dlbench-compare", "metric": "time", "threshold": 0.05, "pairs": [{"label",
"ratio", "ci_low", "ci_high", "verdict", ...}]}``. Pairs without a ratio (new, missing, failed)
are not drawn; they go to the notes.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.report.figures_common import PALETTE, Skipped, new_figure, style_axes
from bench.report.format import num
from bench.results.compare_spec import METRICS_BY_NAME

COMPARE_KIND = "dlbench-compare"
VERDICT_COLORS = {
    "faster": PALETTE[2],
    "slower": PALETTE[3],
    "same": PALETTE[7],
    "inconclusive": PALETTE[1],
}
METRIC_AXES = {m.name: m.axis for m in METRICS_BY_NAME.values()}
MAX_PAIRS = 40


def load_compare(path: Path) -> dict[str, Any]:
    """A compare JSON file; ``ValueError`` naming the file when it is not one."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise UsageError(f"compare_json: {path} is not a regular file (a folder, a FIFO or a device)")
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"compare_json: no such file: {path}") from None
    except RecursionError:
        raise UsageError(f"compare_json: {path} is nested too deeply to be a compare file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"compare_json: {path} is not readable JSON ({exc})") from None
    if (
        not isinstance(data, dict)
        or data.get("kind") != COMPARE_KIND
        or not isinstance(data.get("pairs"), list)
    ):
        raise UsageError(f"compare_json: {path} is not a {COMPARE_KIND} file (needs kind and a pairs list)")
    return data


def _finite(v: Any) -> float | None:
    x = num(v)
    return x if x is not None and math.isfinite(x) else None


def forest_figure(data: dict[str, Any], notes: list[str] | None = None, name: str = "compare") -> Any:
    """7. One row per pair: the ratio, its CI, coloured by verdict, against 1 and the threshold band."""
    pairs = [p for p in data.get("pairs", []) if isinstance(p, dict)]
    drawn = [p for p in pairs if (_finite(p.get("ratio")) or 0) > 0]
    undrawn = [p for p in pairs if not (_finite(p.get("ratio")) or 0) > 0]
    if undrawn and notes is not None:
        listed = ", ".join(f"{p.get('label', '?')} ({p.get('verdict', 'no ratio')})" for p in undrawn[:10])
        more = f", ... ({len(undrawn)} in all)" if len(undrawn) > 10 else ""
        notes.append(f"{name}: pairs without a ratio, not drawn: {listed}{more}")
    if len(drawn) > MAX_PAIRS:
        # the pairs a reader must see: the largest changes first, then in file order
        order = sorted(range(len(drawn)), key=lambda i: -abs(math.log(_finite(drawn[i].get("ratio")) or 1.0)))
        keep = sorted(order[:MAX_PAIRS])
        if notes is not None:
            notes.append(f"{name}: showing the {MAX_PAIRS} largest changes of {len(drawn)} pairs")
        drawn = [drawn[i] for i in keep]
    if not drawn:
        return Skipped(f"{name}: no pair has a ratio to draw ({len(pairs)} pair(s) in the file)")
    metric = str(data.get("metric", "time"))
    threshold = _finite(data.get("threshold"))
    n = len(drawn)
    fig = new_figure(9.0, max(2.4, 0.42 * n + 1.7))
    ax = fig.subplots()
    if threshold:
        ax.axvspan(
            1 - threshold, 1 + threshold, color="#e8e8e8", label=f"within ±{threshold:.0%} (threshold)"
        )
    ax.axvline(1.0, color="black", linewidth=1)
    seen: set[str] = set()
    open_ended = 0
    for y, p in enumerate(drawn):
        r = _finite(p.get("ratio"))
        assert r is not None
        lo, hi = _finite(p.get("ci_low")), _finite(p.get("ci_high"))
        verdict = str(p.get("verdict", ""))
        color = VERDICT_COLORS.get(verdict, PALETTE[0])
        if lo is None or hi is None:
            open_ended += 1
        if lo is not None or hi is not None:
            ax.hlines(y, lo if lo is not None else r, hi if hi is not None else r, color=color, linewidth=2)
        ax.plot([r], [y], "D", color=color, markersize=7, label=verdict if verdict not in seen else None)
        seen.add(verdict)
        ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else " (CI open-ended)"
        ax.annotate(
            f"{r:.3f}{ci}",
            (hi if hi is not None else r, y),
            xytext=(6, -3),
            textcoords="offset points",
            fontsize=8,
        )
    names = [
        str(p.get("label", f"pair {i + 1}")) + (" (noisy)" if p.get("noisy") is True else "")
        for i, p in enumerate(drawn)
    ]
    ax.set_yticks(range(n), names, fontsize=9)
    ax.invert_yaxis()
    ax.set_ylim(n - 0.4, -0.6)
    xs = [
        v for p in drawn for v in (_finite(p.get(k)) for k in ("ratio", "ci_low", "ci_high")) if v is not None
    ]
    lo_x, hi_x = min([*xs, 1 - (threshold or 0.0)]), max([*xs, 1 + (threshold or 0.0)])
    pad = (hi_x - lo_x) * 0.35 or 0.05
    ax.set_xlim(lo_x - pad * 0.3, hi_x + pad)
    ax.set_xlabel(METRIC_AXES.get(metric, f"NEW / BASE {metric} (×)"))
    style_axes(ax)
    ax.grid(False, axis="y")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="verdict", title_fontsize=8)
    fig.suptitle(f"Did anything change? NEW / BASE {metric} ratio per pair with its CI", fontsize=12)
    if open_ended and notes is not None:
        notes.append(f"{name}: {open_ended} pair(s) have an open-ended CI (drawn without a bar)")
    return fig


__all__ = ["COMPARE_KIND", "forest_figure", "load_compare"]
