"""What ``torch.compile`` buys: each compiled row against the eager row of the same configuration.

Three panels per scenario and results file, one bar per compiled row:

1. the speed-up of its mode over eager, eager time / compiled time, with error bars from both
   medians' 95% CIs (``figures_common.speedup``);
2. its compile time, ``compile_time_s`` (what compiling adds to the first step);
3. its break-even step count, ``compile_time_s / (eager step - compiled step)``
   (``bench.results.compare_pairs.break_even_steps``): after how many steps compiling has paid for
   itself; "never" where the compiled step is not faster.

Torch-free (matplotlib only), like every figure.
"""

from __future__ import annotations

import math
from typing import Any

from bench.report.figures_common import (
    PALETTE,
    Skipped,
    errbar,
    is_noisy,
    label,
    limit,
    new_figure,
    note,
    ok_rows,
    pairs,
    panels,
    speedup,
    speedup_bars,
    style_axes,
    varying,
)
from bench.report.format import num
from bench.results.compare_pairs import break_even_steps

MAX_PANELS = 4
MAX_BARS = 20  # compiled rows per panel


def _break_even(eager: Any, compiled: Any, speed: tuple[float | None, ...]) -> tuple[float | None, ...]:
    """(steps, low, high) of a pair (``math.inf``: never), or Nones without a compile time.

    ``speed``: (speed-up, low, high) of the pair; the steps' interval follows from the speed-up's
    (a higher speed-up saves more per step: fewer steps).
    """
    c = num(compiled.get("compile_time_s"))
    e = num(eager.get("time_median_ms"))
    s, s_lo, s_hi = speed
    if c is None or not e or not s:
        return None, None, None
    steps = break_even_steps(c, e, 1.0 / s)
    low = break_even_steps(c, e, 1.0 / s_hi) if s_hi else None
    high = break_even_steps(c, e, 1.0 / s_lo) if s_lo else None
    return steps, low, high


def _finite(bar: float, bound: float | None) -> float | None:
    """An interval end of a drawn (finite, non-zero) bar, None where it is open (never) or absent."""
    return bound if bar and bound is not None and math.isfinite(bound) else None


def _steps_text(x: float | None) -> str:
    if x is None:
        return "no compile time"
    if math.isinf(x):
        return "never"
    return f"{x:,.0f} steps" if x >= 10 else f"{x:.2g} steps"


def compile_figure(df: Any, notes: list[str] | None = None) -> Any:
    """8. Each compile mode's speed-up over eager, its compile time, and its break-even step count."""
    if "compile" not in df.columns:
        return Skipped("no compile column in the results (written before --compile existed)")
    found = []
    for title, sub in panels(ok_rows(df)):
        matched = pairs(
            sub,
            "compile",
            "none",
            lambda v: v not in ("", "none"),
            notes=notes,
            what=f"compile: {title}",
            most=MAX_BARS,
        )
        if matched:
            found.append((title, sub, matched))
    if not found:
        return Skipped(
            "no compiled row has an eager (compile=none) row of the same configuration to compare with"
        )
    found = limit(found, MAX_PANELS, "compile", notes)
    heights = [0.45 * len(m) + 1.4 for _, _, m in found]
    fig = new_figure(14.0, sum(heights) + 0.6)
    subfigs = fig.subfigures(len(found), 1, height_ratios=heights, squeeze=False)[:, 0]
    for subfig, (title, sub, matched) in zip(subfigs, found, strict=True):
        cols = [c for c in varying(sub, exclude=["compile"]) if c != "scenario"]
        names = [
            f"{label(c, cols) if cols else 'all'} ({c['compile']})"
            + (" noisy" if is_noisy(c) or is_noisy(e) else "")
            for e, c in matched
        ]
        if any(is_noisy(c) or is_noisy(e) for e, c in matched):
            note(
                notes,
                f"compile: {title}: bars marked noisy rest on a row flagged noisy (a less certain ratio)",
            )
        speeds = [speedup(e, c) for e, c in matched]
        compile_s = [num(c.get("compile_time_s")) for _, c in matched]
        intervals = [_break_even(e, c, sp) for (e, c), sp in zip(matched, speeds, strict=True)]
        steps = [i[0] for i in intervals]
        ax1, ax2, ax3 = subfig.subplots(1, 3, squeeze=False, sharey=True)[0]

        ys = speedup_bars(ax1, names, speeds, "speed-up over eager (×; > 1: compiled is faster)", 1.3)

        cvals = [c or 0.0 for c in compile_s]
        ax2.barh(ys, cvals, color=PALETTE[4], alpha=0.85, height=0.6)
        for y, c in zip(ys, compile_s, strict=True):
            ax2.annotate(
                f"{c:.3g} s" if c is not None else "not measured",
                (c or 0.0, y),
                xytext=(5, -4),
                textcoords="offset points",
                fontsize=9,
            )
        ax2.set_xlim(0, max(max(cvals), 1e-3) * 1.35)
        ax2.set_xlabel("compile time, s (compile_time_s: added to the first step)")
        style_axes(ax2)

        finite = [s for s in steps if s is not None and math.isfinite(s)]
        top = max(finite) if finite else 1.0
        svals = [s if s is not None and math.isfinite(s) else 0.0 for s in steps]
        ax3.barh(ys, svals, color=PALETTE[0], alpha=0.85, height=0.6)
        # the interval where both ends are finite (an open end, "never", is left to the label)
        lows = [_finite(v, i[1]) for v, i in zip(svals, intervals, strict=True)]
        highs = [_finite(v, i[2]) for v, i in zip(svals, intervals, strict=True)]
        if any(h is not None for h in highs):
            ax3.errorbar(svals, ys, xerr=errbar(svals, lows, highs), fmt="none", ecolor="black", capsize=4)
            top = max([top, *(h for h in highs if h is not None)])
        for y, n, hi in zip(ys, steps, highs, strict=True):
            finite_n = n is not None and math.isfinite(n)
            ax3.annotate(
                _steps_text(n),
                (hi if hi is not None else n if n is not None and finite_n else 0.0, y),
                xytext=(5, -4),
                textcoords="offset points",
                fontsize=9,
                color="black" if finite_n else PALETTE[3],
            )
        ax3.set_xlim(0, top * 1.4)
        ax3.set_xlabel("break-even steps: compile_time_s / (eager − compiled step)")
        style_axes(ax3)
        subfig.suptitle(title, fontsize=10)
    fig.suptitle(
        "What does torch.compile buy? Speed-up over eager (error bars: from both medians' 95% CIs), "
        "compile time, and the steps until it pays off",
        fontsize=12,
    )
    return fig


__all__ = ["compile_figure"]
