"""Speed figures: throughput against the problem size, AMP speed-up and peak-memory ratio.

Each function takes the report's DataFrame (all CSVs, a ``_source`` column naming the file) and
returns a ``Figure`` or a ``Skipped(reason)``; ``notes`` collects one-line remarks for the page.
One panel per scenario and file (``panels``): a CPU tiny run and a GPU run never share an axis.
"""

from __future__ import annotations

from typing import Any

from matplotlib.ticker import EngFormatter

from bench.report.figures_common import (
    PALETTE,
    Skipped,
    errbar,
    grid_axes,
    is_noisy,
    label,
    limit,
    new_figure,
    note,
    ok_rows,
    pairs,
    panels,
    ratio_of,
    speedup,
    style_axes,
    throughput_ci,
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


def _size_lines(title: str, sub: Any) -> list[tuple[str, str, dict[str, list[Any]]]]:
    """(panel title, size column, {line label: rows}) for each size column that varies in ``sub``."""
    out = []
    for col in SIZE_AXES:
        if col not in sub.columns or sub[col].dropna().nunique() < 2:
            continue
        group_cols = varying(sub, exclude=[col])
        groups: dict[str, list[Any]] = {}
        for _, r in sub.iterrows():
            if num(r[col]) is not None:
                groups.setdefault(label(r, group_cols) if group_cols else "all rows", []).append(r)
        lines = {k: v for k, v in groups.items() if len({num(r[col]) for r in v}) >= 2}
        if lines:
            out.append((title, col, lines))
    return out


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
    for ax, (title, col, lines) in zip(grid_axes(fig, len(found)), found, strict=True):
        units: set[str] = set()
        xs_all: set[float] = set()
        for i, (name, line_rows) in enumerate(lines.items()):
            line_rows = sorted(line_rows, key=lambda r: num(r[col]) or 0.0)
            xs = [num(r[col]) or 0.0 for r in line_rows]
            xs_all.update(xs)
            cis = [throughput_ci(r) for r in line_rows]
            ys = [c[0] or 0.0 for c in cis]
            units.update(str(r["throughput_unit"]) for r in line_rows if str(r.get("throughput_unit", "")))
            color = PALETTE[i % len(PALETTE)]
            ax.errorbar(
                xs,
                ys,
                yerr=errbar(ys, [c[1] for c in cis], [c[2] for c in cis]),
                color=color,
                marker="o",
                markersize=6,
                capsize=4,
                linewidth=1.8,
                label=name,
            )
            noisy = [(x, y) for x, y, r in zip(xs, ys, line_rows, strict=True) if is_noisy(r)]
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
        ticks = sorted(xs_all)
        if ticks[0] > 0 and ticks[-1] / ticks[0] >= 4:
            ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [f"{x:g}" for x in ticks])
        ax.minorticks_off()
        ax.set_xlabel(SIZE_AXES[col])
        ax.set_ylabel(f"throughput ({' / '.join(sorted(u for u in units if u != 'nan')) or 'items/s'})")
        ax.yaxis.set_major_formatter(EngFormatter(sep=""))
        ax.set_ylim(bottom=0)
        ax.set_title(title, fontsize=10)
        style_axes(ax)
        ax.legend(
            fontsize=8, title="configuration" + (" (hollow: noisy)" if any_noisy else ""), title_fontsize=8
        )
    fig.suptitle("How does throughput scale with the problem size? (error bars: 95% CI)", fontsize=12)
    if any_noisy:
        note(notes, "throughput: hollow markers are rows flagged noisy (their CI missed the target)")
    return fig


def amp_figure(df: Any, notes: list[str] | None = None) -> Any:
    """2. AMP speed-up (fp32 time / AMP time) and peak-memory ratio for each matched configuration."""
    if "precision" not in df.columns:
        return Skipped("no precision column in the results")
    found = []
    for title, sub in panels(ok_rows(df)):
        matched = pairs(sub, "precision", "fp32", lambda v: v.startswith("amp-"))
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
        names = [f"{label(a, cols) if cols else 'all'} ({a['precision']})" for _, a in matched]
        speeds = [speedup(b, a) for b, a in matched]
        speed = [s[0] or 0.0 for s in speeds]
        mem = [ratio_of(a.get("peak_mem_bytes"), b.get("peak_mem_bytes")) for b, a in matched]
        axes = subfig.subplots(1, 2 if has_mem else 1, squeeze=False, sharey=True)[0]
        ys = list(range(len(names)))
        ax = axes[0]
        ax.barh(
            ys, speed, color=[PALETTE[2] if s >= 1 else PALETTE[3] for s in speed], alpha=0.85, height=0.6
        )
        ax.errorbar(
            speed,
            ys,
            xerr=errbar(speed, [s[1] for s in speeds], [s[2] for s in speeds]),
            fmt="none",
            ecolor="black",
            capsize=4,
        )
        ax.axvline(1.0, color="black", linewidth=1, linestyle="--")
        for y, s in zip(ys, speeds, strict=True):
            ax.annotate(
                f"×{s[0] or 0:.2f}",
                (s[2] or s[0] or 0.0, y),
                xytext=(5, -4),
                textcoords="offset points",
                fontsize=9,
            )
        ax.set_yticks(ys, names, fontsize=9)
        ax.set_ylim(len(ys) - 0.5, -0.5)
        ax.set_xlim(0, max(max(s[2] or s[0] or 0.0 for s in speeds), 1.0) * 1.25)
        ax.set_xlabel("speed-up over fp32 (×; > 1: AMP is faster)")
        style_axes(ax)
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
