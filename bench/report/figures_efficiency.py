"""Efficiency figures: MFU against the measured and datasheet peaks, scaling per parallel mode.

Same contract as ``bench.report.figures_perf``: rows in, a ``Figure`` or a ``Skipped(reason)`` out,
one panel per scenario and file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.report.figures_common import (
    PALETTE,
    Skipped,
    errbar,
    grid_axes,
    has_values,
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
    varying,
)
from bench.report.format import num

MAX_PANELS = 4
MAX_BARS = 16


def mfu_figure(df: Any, notes: list[str] | None = None) -> Any:
    """5. MFU of each configuration against the measured matmul peak and the datasheet peak."""
    if "mfu" not in df.columns:
        return Skipped("no mfu column in the results")
    rows = ok_rows(df)
    rows = rows[rows["mfu"].notna()]
    if rows.empty:
        return Skipped("no ok row has an MFU (the FLOP count or the peak measurement did not run)")
    has_ds = has_values(rows, "mfu_datasheet")
    if len(rows) * (2 if has_ds else 1) < 2:
        return Skipped("only one MFU value (one row, no datasheet peak): nothing to compare")
    no_ds = rows[rows["mfu_datasheet"].isna()] if "mfu_datasheet" in rows.columns else rows
    if not no_ds.empty:
        devices = sorted({str(d) for d in no_ds.get("device_name", no_ds["device"]).dropna()})
        note(
            notes,
            f"MFU: no datasheet peak for {', '.join(devices)}; only MFU against the measured peak there",
        )
    found = limit(panels(rows), MAX_PANELS, "MFU", notes)
    for title, sub in found:
        if len(sub) > MAX_BARS:
            note(notes, f"MFU: {title}: showing the first {MAX_BARS} of {len(sub)} rows")
    found = [(t, s.iloc[:MAX_BARS]) for t, s in found]
    pair_h = [(0.55 if has_values(s, "mfu_datasheet") else 0.35) * len(s) + 1.2 for _, s in found]
    fig = new_figure(10.0, sum(pair_h) + 0.6)
    axes = fig.subplots(len(found), 1, squeeze=False, gridspec_kw={"height_ratios": pair_h})[:, 0]
    for ax, (title, sub) in zip(axes, found, strict=True):
        ds_here = has_values(sub, "mfu_datasheet")
        cols = [c for c in varying(sub) if c != "scenario"]
        names = [label(r, cols) if cols else str(r["scenario"]) for _, r in sub.iterrows()]
        h = 0.38 if ds_here else 0.6
        ys = list(range(len(names)))
        meas = [100 * (num(v) or 0.0) for v in sub["mfu"]]
        off = -h / 2 if ds_here else 0.0
        ax.barh([y + off for y in ys], meas, height=h, color=PALETTE[0], label="of the measured matmul peak")
        values = list(meas)
        for y, m, (_, r) in zip(ys, meas, sub.iterrows(), strict=True):
            peak = num(r.get("peak_tflops_measured"))
            text = f"{m:.3g}% of {peak:.3g} TFLOP/s (measured)" if peak else f"{m:.3g}%"
            ax.annotate(text, (m, y + off), xytext=(4, -3), textcoords="offset points", fontsize=8)
        if ds_here:
            ds = [100 * (num(v) or 0.0) for v in sub["mfu_datasheet"]]
            values += ds
            ax.barh(
                [y + h / 2 for y in ys],
                ds,
                height=h,
                color=PALETTE[1],
                hatch="//",
                edgecolor="white",
                label="of the datasheet peak",
            )
            for y, d, (_, r) in zip(ys, ds, sub.iterrows(), strict=True):
                peak = num(r.get("peak_tflops_datasheet"))
                text = f"{d:.3g}% of {peak:.3g} TFLOP/s (datasheet)" if peak else "no datasheet peak"
                ax.annotate(text, (d, y + h / 2), xytext=(4, -3), textcoords="offset points", fontsize=8)
        ax.set_yticks(ys, names, fontsize=9)
        ax.set_ylim(len(ys) - 0.5, -0.5)
        ax.set_xlim(0, (max(values) or 1.0) * 1.6)
        ax.set_xlabel("model FLOPs utilisation (% of peak TFLOP/s)")
        ax.set_title(title, fontsize=10)
        style_axes(ax)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(
        "How close to peak do the FLOPs run? MFU against the measured and datasheet peaks", fontsize=12
    )
    return fig


@dataclass
class _ScalingBars:
    """The bars of one scaling panel: one per parallel row, scaling efficiency in % of linear."""

    rows: list[Any] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    lows: list[float | None] = field(default_factory=list)
    highs: list[float | None] = field(default_factory=list)
    computed: int = 0  # rows whose efficiency the report computed (no scaling_efficiency value)
    assumed_shares: int = 0  # of those, rows without job_throughput: throughput x world_size
    dropped: int = 0  # parallel rows with neither a value nor a parallel=none row to compute one


def _scaling_bars(sub: Any, notes: list[str] | None = None) -> _ScalingBars:
    """Scaling efficiency of each parallel row of one panel, with an interval from the time CIs.

    The ``scaling_efficiency`` column when it holds a value (results/README.md: ``job_throughput /
    (world_size x throughput)`` of the ``parallel=none`` row); else the same figure computed here from
    the ``parallel=none`` row of the same configuration, with ``job_throughput`` (or, when absent,
    ``throughput x world_size``: one rank's items times the ranks). The interval scales the value by
    the range of none-time / parallel-time from both 95% CIs.
    """
    matched = pairs(
        sub, "parallel", "none", lambda v: True, ignore=["world_size"], notes=notes, what="scaling"
    )
    bases = {other.name: base for base, other in matched}  # row index -> its parallel=none row
    out = _ScalingBars()
    for index, r in sub[sub["parallel"].astype(str) != "none"].iterrows():
        base = bases.get(index)
        ws = num(r.get("world_size")) or 1.0
        eff = num(r.get("scaling_efficiency"))
        if eff is None and base is not None:
            job = num(r.get("job_throughput"))
            if job is None:
                thr = num(r.get("throughput"))
                job = thr * ws if thr is not None else None
                out.assumed_shares += job is not None
            eff = ratio_of(job, ws * (num(base.get("throughput")) or 0.0))
            out.computed += eff is not None
        if eff is None:
            out.dropped += 1
            continue
        lo = hi = None
        if base is not None:
            s, s_lo, s_hi = speedup(base, r)
            if s and s_lo is not None and s_hi is not None:
                lo, hi = 100 * eff * s_lo / s, 100 * eff * s_hi / s
        out.rows.append(r)
        out.values.append(100 * eff)
        out.lows.append(lo)
        out.highs.append(hi)
    return out


def scaling_figure(df: Any, notes: list[str] | None = None) -> Any:
    """6. Scaling efficiency per parallel mode and world size (``scaling_efficiency`` or computed)."""
    if "parallel" not in df.columns:
        return Skipped("no parallel column in the results")
    rows = ok_rows(df)
    if (rows["parallel"].astype(str) == "none").all():
        return Skipped("every ok row ran with parallel=none: no parallel mode to compare")
    found: list[tuple[str, Any, _ScalingBars]] = []
    dropped = computed = assumed = 0
    for title, sub in panels(rows):
        panel = _scaling_bars(sub, notes)
        dropped, computed, assumed = (
            dropped + panel.dropped,
            computed + panel.computed,
            assumed + panel.assumed_shares,
        )
        if panel.rows:
            found.append((title, sub, panel))
    if dropped:
        note(notes, f"scaling: {dropped} parallel row(s) have no scaling_efficiency and no parallel=none row")
    if not found:
        return Skipped("no scaling_efficiency values and no parallel=none row of the same configuration")
    if computed:
        note(
            notes,
            f"scaling: {computed} row(s) without scaling_efficiency: computed as job_throughput / "
            "(world_size x throughput of the parallel=none row)",
        )
    if assumed:
        note(
            notes,
            f"scaling: {assumed} of them have no job_throughput: taken as throughput x world_size "
            "(one rank's items, equal shares)",
        )
    found = limit(found, MAX_PANELS, "scaling", notes)
    cols_n = min(2, len(found))
    width = max(7.5, 1.3 * max(len(p.rows) for _, _, p in found) + 3)
    fig = new_figure(width * cols_n, 4.8 * -(-len(found) // cols_n) + 0.4)
    for ax, (title, sub, panel) in zip(grid_axes(fig, len(found)), found, strict=True):
        cols = [c for c in varying(sub, exclude=["parallel", "world_size"]) if c != "scenario"]
        names = [
            f"{r['parallel']} ×{num(r.get('world_size')) or 1:g}" + (f"\n{label(r, cols)}" if cols else "")
            for r in panel.rows
        ]
        modes = list(dict.fromkeys(str(r["parallel"]) for r in panel.rows))
        xs = list(range(len(names)))
        colors = [PALETTE[modes.index(str(r["parallel"])) % len(PALETTE)] for r in panel.rows]
        ax.bar(xs, panel.values, color=colors, width=0.6, alpha=0.9)
        yerr = errbar(panel.values, panel.lows, panel.highs)
        ax.errorbar(xs, panel.values, yerr=yerr, fmt="none", ecolor="black", capsize=4)
        ax.axhline(100.0, color="black", linestyle="--", linewidth=1, label="ideal (linear scaling)")
        for x, v, hi in zip(xs, panel.values, panel.highs, strict=True):
            at = hi if hi is not None else v  # above the error bar, not on it
            ax.annotate(
                f"{v:.0f}%", (x, at), xytext=(0, 4), textcoords="offset points", ha="center", fontsize=9
            )
        ax.set_xticks(xs, names, fontsize=9)
        ax.set_xlabel("parallel mode × world size (ranks)")
        ax.set_ylabel("scaling efficiency (% of linear)")
        top = max([*panel.values, *[h for h in panel.highs if h is not None], 100.0])
        ax.set_ylim(0, top * 1.3)
        ax.set_xlim(-0.6, len(xs) - 0.4)
        ax.set_title(title, fontsize=10)
        style_axes(ax)
        ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(
        "How well does each parallel mode scale? (job throughput / world size x single-process)", fontsize=11
    )
    return fig


__all__ = ["mfu_figure", "scaling_figure"]
