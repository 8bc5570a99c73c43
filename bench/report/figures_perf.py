"""Speed figures: throughput against the problem size, AMP speed-up and peak-memory ratio.

Each function takes the report's DataFrame (all CSVs, a ``_source`` column naming the file) and
returns a ``Figure`` or a ``Skipped(reason)``; ``notes`` collects one-line remarks for the page.
One panel per scenario and file (``panels``): a CPU tiny run and a GPU run never share an axis.
"""

from __future__ import annotations

from typing import Any

from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, MaxNLocator

from bench.report.figures_common import (
    PALETTE,
    Skipped,
    errbar,
    grid_axes,
    is_noisy,
    keys_of,
    label,
    limit,
    new_figure,
    note,
    ok_rows,
    pairs,
    panels,
    ratio_of,
    speedup,
    speedup_bars,
    style_axes,
    varying,
)
from bench.report.format import num

# The size parameters a throughput curve can run along, and their axis labels.
SIZE_AXES: dict[str, str] = {
    "batch_size": "batch size (samples per step)",
    "param_seq_len": "sequence length (tokens)",
    "param_image_size": "image size (pixels per side)",
}
MAX_PANELS = 4
MAX_LINES = 8  # lines per panel (a legend entry each)
MAX_TICKS = 12  # size values labelled one by one; beyond, the axis is thinned
MAX_MARKERS = 60  # points of a line drawn with markers and caps
MAX_BARS = 20  # AMP bars per panel


def _size_lines(title: str, sub: Any) -> list[tuple[str, str, Any, dict[str, list[int]]]]:
    """(panel title, size column, its rows, {line label: row positions}) per size column that varies."""
    out = []
    for col in SIZE_AXES:
        if col not in sub.columns or sub[col].dropna().nunique() < 2:
            continue
        group_cols = varying(sub, exclude=[col])
        rows = sub[sub[col].notna()]
        xs = rows[col].tolist()
        members: dict[tuple[str, ...], list[int]] = {}
        for i, k in enumerate(keys_of(rows, group_cols)):
            members.setdefault(k, []).append(i)
        lines: dict[str, list[int]] = {}
        for idx in members.values():
            if len({xs[i] for i in idx}) >= 2:
                name = label(rows.iloc[idx[0]], group_cols) if group_cols else "all rows"
                lines[name] = idx
        if lines:
            out.append((title, col, rows, lines))
    return out


def _line_points(
    rows: Any, col: str
) -> tuple[list[float], list[float], list[float | None], list[float | None], int]:
    """(x, y, y low, y high, rows merged) of one line: the median throughput per size value.

    Rows at the same size (the same configuration measured by several runs) are drawn as one point,
    their median, with an error bar from the lowest to the highest bound among them. The bounds of
    a row are ``items_per_step`` over its time CI (``throughput_ci``), computed column-wise.
    """
    import pandas as pd

    def column(name: str) -> Any:
        return (
            pd.to_numeric(rows[name], errors="coerce")
            if name in rows.columns
            else pd.Series(float("nan"), index=rows.index)
        )

    thr, items = column("throughput"), column("items_per_step")
    lo_ms, hi_ms = column("time_ci_low_ms"), column("time_ci_high_ms")
    frame = pd.DataFrame(
        {
            "x": pd.to_numeric(rows[col], errors="coerce"),
            "y": thr,
            "lo": (items / (hi_ms / 1000.0)).where(hi_ms > 0),
            "hi": (items / (lo_ms / 1000.0)).where(lo_ms > 0),
        }
    ).dropna(subset=["x", "y"])
    agg = frame.groupby("x", sort=True).agg(
        y=("y", "median"), lo=("lo", "min"), hi=("hi", "max"), n=("y", "size")
    )
    merged = int((agg["n"] - 1).sum())

    def opt(v: Any) -> float | None:
        return None if pd.isna(v) else float(v)

    return (
        [float(x) for x in agg.index],
        [float(y) for y in agg["y"]],
        [opt(v) for v in agg["lo"]],
        [opt(v) for v in agg["hi"]],
        merged,
    )


def _noisy(rows: Any) -> Any:
    """A boolean mask of the rows flagged noisy (False where the column is missing or empty)."""
    if "noisy" not in rows.columns:
        return rows.index != rows.index
    return rows["noisy"].fillna(False).astype(bool).to_numpy()


def _size_ticks(ax: Any, ticks: list[float]) -> None:
    """A tick per size value when there are few; else a thinned axis whose labels are plain numbers."""
    log = ticks[0] > 0 and ticks[-1] / ticks[0] >= 4
    if log:
        ax.set_xscale("log", base=2)
    if len(ticks) <= MAX_TICKS:
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
    else:
        ax.xaxis.set_major_locator(LogLocator(base=2) if log else MaxNLocator(MAX_TICKS))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
    ax.minorticks_off()


def throughput_figure(df: Any, notes: list[str] | None = None) -> Any:
    """1. Throughput against the size parameter that varies (batch size, sequence length, image size)."""
    rows = ok_rows(df)
    rows = rows[rows["throughput"].notna()] if "throughput" in rows.columns else rows.iloc[0:0]
    found = [p for title, sub in panels(rows) for p in _size_lines(title, sub)]
    if not found:
        return Skipped(
            "no size parameter (batch_size, param_seq_len, param_image_size) takes 2 or more values "
            "among ok rows of one configuration"
        )
    found = limit(found, MAX_PANELS, "throughput", notes, "size sweeps")
    cols = min(2, len(found))
    fig = new_figure(7.0 * cols if cols > 1 else 9.0, 4.8 * -(-len(found) // cols) + 0.4)
    any_noisy = False
    merged_total = 0
    for ax, (title, col, panel_rows, lines) in zip(grid_axes(fig, len(found)), found, strict=True):
        units: set[str] = set()
        xs_all: set[float] = set()
        shown = limit(list(lines.items()), MAX_LINES, f"throughput: {title} along {col}", notes, "lines")
        for i, (name, idx) in enumerate(shown):
            line_rows = panel_rows.iloc[idx]
            xs, ys, lows, highs, merged = _line_points(line_rows, col)
            merged_total += merged
            xs_all.update(xs)
            units.update(str(u) for u in line_rows.get("throughput_unit", []) if str(u) not in ("", "nan"))
            color = PALETTE[i % len(PALETTE)]
            if len(xs) <= MAX_MARKERS:
                ax.errorbar(
                    xs,
                    ys,
                    yerr=errbar(ys, lows, highs),
                    color=color,
                    marker="o",
                    markersize=6,
                    capsize=4,
                    linewidth=1.8,
                    label=name,
                )
            else:  # hundreds of sizes: a line and a band, not hundreds of error bars
                ax.plot(xs, ys, color=color, linewidth=1.4, label=name)
                band = [
                    (x, lo, hi)
                    for x, lo, hi in zip(xs, lows, highs, strict=True)
                    if lo is not None and hi is not None
                ]
                if band:
                    bx, blo, bhi = zip(*band, strict=True)
                    ax.fill_between(bx, blo, bhi, color=color, alpha=0.15, linewidth=0)
            flagged = line_rows[_noisy(line_rows)] if len(xs) <= MAX_MARKERS else None
            if flagged is not None and not flagged.empty:
                noisy_x = {num(v) for v in flagged[col]}
                noisy = [(x, y) for x, y in zip(xs, ys, strict=True) if x in noisy_x]
                if noisy:
                    any_noisy = True
                    ax.scatter(
                        *zip(*noisy, strict=True),
                        s=60,
                        facecolors="white",
                        edgecolors=color,
                        zorder=3,
                        linewidths=1.8,
                    )
        _size_ticks(ax, sorted(xs_all))
        ax.set_xlabel(SIZE_AXES[col])
        ax.set_ylabel(f"throughput ({' / '.join(sorted(units)) or 'items/s'})")
        ax.yaxis.set_major_formatter(EngFormatter(sep=""))
        ax.set_ylim(bottom=0)
        ax.set_title(title, fontsize=10)
        style_axes(ax)
        ax.legend(
            fontsize=8,
            loc="best" if sum(len(idx) for _, idx in shown) <= 200 else "lower right",
            title="configuration" + (" (hollow: noisy)" if any_noisy else ""),
            title_fontsize=8,
        )
    fig.suptitle("How does throughput scale with the problem size? (error bars: 95% CI)", fontsize=12)
    if any_noisy:
        note(notes, "throughput: hollow markers are rows flagged noisy (their CI missed the target)")
    if merged_total:
        note(
            notes,
            f"throughput: {merged_total} row(s) share a size with another row of their line (several runs): "
            "each point is the median, its error bar spans their CIs",
        )
    return fig


def amp_figure(df: Any, notes: list[str] | None = None) -> Any:
    """2. AMP speed-up (fp32 time / AMP time) and peak-memory ratio for each matched configuration."""
    if "precision" not in df.columns:
        return Skipped("no precision column in the results")
    found = []
    for title, sub in panels(ok_rows(df)):
        matched = pairs(
            sub,
            "precision",
            "fp32",
            lambda v: v.startswith("amp-"),
            notes=notes,
            what=f"AMP: {title}",
            most=MAX_BARS,
        )
        if matched:
            found.append((title, sub, matched))
    if not found:
        return Skipped("no amp-* row has an fp32 row of the same configuration (ok rows) to compare with")
    found = limit(found, MAX_PANELS, "AMP", notes)
    has_mem = any(
        ratio_of(a.get("peak_mem_bytes"), b.get("peak_mem_bytes")) for _, _, m in found for b, a in m
    )
    if not has_mem:
        note(notes, "AMP: no peak_mem_bytes in the matched rows; only the speed-up is drawn")
    heights = [0.45 * len(m) + 1.3 for _, _, m in found]
    fig = new_figure(12.0 if has_mem else 8.0, sum(heights) + 0.5)
    subfigs = fig.subfigures(len(found), 1, height_ratios=heights, squeeze=False)[:, 0]
    for subfig, (title, sub, matched) in zip(subfigs, found, strict=True):
        cols = [c for c in varying(sub, exclude=["precision"]) if c != "scenario"]
        names = [
            f"{label(a, cols) if cols else 'all'} ({a['precision']})"
            + (" noisy" if is_noisy(a) or is_noisy(b) else "")
            for b, a in matched
        ]
        if any(is_noisy(a) or is_noisy(b) for b, a in matched):
            note(notes, f"AMP: {title}: bars marked noisy rest on a row flagged noisy (a less certain ratio)")
        speeds = [speedup(b, a) for b, a in matched]
        mem = [ratio_of(a.get("peak_mem_bytes"), b.get("peak_mem_bytes")) for b, a in matched]
        axes = subfig.subplots(1, 2 if has_mem else 1, squeeze=False, sharey=True)[0]
        ax = axes[0]
        ys = speedup_bars(ax, names, speeds, "speed-up over fp32 (×; > 1: AMP is faster)", 1.25)
        if has_mem:
            ax2 = axes[1]
            mvals = [m or 0.0 for m in mem]
            ax2.barh(
                ys, mvals, color=[PALETTE[0] if m <= 1 else PALETTE[1] for m in mvals], alpha=0.85, height=0.6
            )
            ax2.axvline(1.0, color="black", linewidth=1, linestyle="--")
            for y, m in zip(ys, mem, strict=True):
                ax2.annotate(
                    f"×{m:.2f}" if m is not None else "not measured",
                    (m or 0.0, y),
                    xytext=(5, -4),
                    textcoords="offset points",
                    fontsize=9,
                )
            ax2.set_xlim(0, max(max(mvals), 1.0) * 1.25)
            ax2.set_xlabel("peak memory, AMP / fp32 (×; < 1: AMP uses less)")
            style_axes(ax2)
        subfig.suptitle(title, fontsize=10)
    fig.suptitle(
        "What does AMP buy over fp32? Step-time speed-up and peak-memory ratio "
        "(error bars: from both medians' 95% CIs)",
        fontsize=12,
    )
    return fig


__all__ = ["SIZE_AXES", "amp_figure", "throughput_figure"]
