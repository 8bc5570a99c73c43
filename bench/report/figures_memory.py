"""Memory figures: the checkpointing trade-off and the per-phase memory split by category.

What the memory columns mean is in results/README.md and ``bench.harness.memory``: the phase peaks
(``mem_fwd_peak_bytes`` ...) are totals at each phase's peak; the category columns are each
category's own maximum over the step, so they are *not* a snapshot and do not add up to a peak.
The honest per-phase split is the tracker's snapshot at the peak, ``memory.per_phase[phase].at_peak``
in the samples sidecar; without a sidecar the split is inferred from what is certainly live (see
``_inferred_split``) and the rest of the peak is drawn as "not broken down".
"""

from __future__ import annotations

from typing import Any

from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.patches import Patch

from bench.report.figures_common import (
    PALETTE,
    PER_PHASE,
    Skipped,
    bytes_unit,
    errbar,
    grid_axes,
    label,
    missing_columns,
    new_figure,
    note,
    ok_rows,
    pairs,
    panels,
    style_axes,
    time_ci,
    varying,
)
from bench.report.format import num

CATEGORY_COLUMNS = ("mem_params_bytes", "mem_grads_bytes", "mem_optimizer_bytes", "mem_activations_bytes")
PHASES = (
    ("forward", "fwd", "mem_fwd_peak_bytes"),
    ("backward", "bwd", "mem_bwd_peak_bytes"),
    ("optimizer", "opt", "mem_opt_peak_bytes"),
)
# Stack order (bottom to top) and colours of the categories.
CATEGORIES: dict[str, tuple[str, str]] = {
    "parameters": ("parameters", PALETTE[0]),
    "gradients": ("gradients", PALETTE[3]),
    "optimizer": ("optimizer state", PALETTE[4]),
    "inputs": ("inputs + buffers", PALETTE[5]),
    "activations": ("activations (forward tensors alive)", PALETTE[1]),
    "temporaries": ("temporaries (backward, recomputation)", PALETTE[6]),
    "rest": ("not broken down (no sidecar: CSV only)", "#cfcfcf"),
    "untracked": ("untracked (allocator, kernel workspaces)", "#7f7f7f"),
}
MAX_CONFIGS = 6
MAX_PANELS = 4
MAX_CKPT_PAIRS = 12  # arrows (and legend entries) per panel


def _b(row: Any, col: str) -> float:
    return num(row.get(col)) or 0.0


def _snapshot_split(at_peak: dict[str, Any], phase_peak: float) -> dict[str, float]:
    """The tracker's bytes by category at the phase's peak; the allocator's surplus as 'untracked'."""
    split = {k: float(num(at_peak.get(k)) or 0.0) for k in CATEGORIES if k in at_peak}
    split["inputs"] = float(num(at_peak.get("inputs")) or 0.0) + float(num(at_peak.get("buffers")) or 0.0)
    tracked = sum(split.values())
    if phase_peak > tracked:
        split["untracked"] = phase_peak - tracked
    return split


def _inferred_split(row: Any, phase: str, phase_peak: float) -> dict[str, float]:
    """Per-phase split from the CSV alone: only what is certainly live at that phase's peak.

    In the measured (steady-state) step parameters, optimizer state, buffers and the batch are live
    in every phase; the activations' peak lies in forward (they are created there); the optimizer
    step reads every gradient. The rest of the phase peak is "not broken down".
    """
    split = {
        "parameters": _b(row, "mem_params_bytes"),
        "optimizer": _b(row, "mem_optimizer_bytes"),
        "inputs": _b(row, "mem_inputs_bytes") + _b(row, "mem_buffers_bytes"),
    }
    if phase == "forward":
        split["activations"] = _b(row, "mem_activations_bytes")
    if phase == "optimizer":
        split["gradients"] = _b(row, "mem_grads_bytes")
    known = sum(split.values())
    if known > phase_peak:  # should not happen; never draw more than the measured peak
        scale = phase_peak / known if known else 0.0
        split = {k: v * scale for k, v in split.items()}
    split["rest"] = max(phase_peak - sum(split.values()), 0.0)
    return split


def _bars(row: Any) -> tuple[list[tuple[str, dict[str, float]]], bool]:
    """[(phase short name, split)] for the phases the row measured; True when inferred."""
    per_phase = row.get(PER_PHASE)
    per_phase = per_phase if isinstance(per_phase, dict) else {}
    out, inferred = [], False
    for phase, short, col in PHASES:
        peak = num(row.get(col))
        if peak is None:
            continue
        at_peak = per_phase.get(phase, {}).get("at_peak") if isinstance(per_phase.get(phase), dict) else None
        if isinstance(at_peak, dict):
            out.append((short, _snapshot_split(at_peak, peak)))
        else:
            out.append((short, _inferred_split(row, phase, peak)))
            inferred = True
    return out, inferred


def _wrap_group_names(
    names: list[str], widths: list[float], *, total: float, fig_width_in: float
) -> list[str]:
    """Each configuration's name broken into lines no wider than its group of bars (9 pt text).

    A forward-only row has one bar, so its one-line name would run into its neighbours' names.
    """
    import textwrap

    chars_per_unit = fig_width_in * 72 * 0.85 / max(total, 1.0) / (9 * 0.6)
    return [
        textwrap.fill(n, width=max(6, int(chars_per_unit * w)), break_long_words=False)
        for n, w in zip(names, widths, strict=True)
    ]


def memory_figure(df: Any, notes: list[str] | None = None) -> Any:
    """4. Memory at each phase's peak (forward, backward, optimizer), stacked by category."""
    lacking = missing_columns(df, [*CATEGORY_COLUMNS, "mem_fwd_peak_bytes"])
    if lacking:
        return Skipped(f"no memory columns in the results (missing: {', '.join(lacking)})")
    rows = ok_rows(df)
    rows = rows[rows["mem_fwd_peak_bytes"].notna()]
    if rows.empty:
        return Skipped("no ok row has memory figures (the memory pass did not run or failed)")
    found = panels(rows)
    if len(found) > MAX_PANELS:
        note(notes, f"memory: showing the first {MAX_PANELS} of {len(found)} panels")
    found = found[:MAX_PANELS]
    fig = new_figure(11.0, 3.9 * len(found) + 1.2)
    engine = fig.get_layout_engine()
    if isinstance(engine, ConstrainedLayoutEngine):
        engine.set(h_pad=0.12)  # room for the configuration labels under each panel
    axes = fig.subplots(len(found), 1, squeeze=False)[:, 0]
    used: set[str] = set()
    n_inferred = 0
    for ax, (title, sub) in zip(axes, found, strict=True):
        if len(sub) > MAX_CONFIGS:
            note(notes, f"memory: {title}: showing the first {MAX_CONFIGS} of {len(sub)} configurations")
        sub = sub.iloc[:MAX_CONFIGS]
        cols = [c for c in varying(sub) if c != "scenario"]
        pos, ticks, centers, names, widths, stacks = 0.0, [], [], [], [], []
        for _, r in sub.iterrows():
            bars, inferred = _bars(r)
            n_inferred += inferred
            start = pos
            for short, split in bars:
                stacks.append((pos, split))
                ticks.append((pos, short))
                pos += 1.0
            centers.append((start + pos - 1.0) / 2)
            names.append(label(r, cols) if cols else str(r["scenario"]))
            widths.append(len(bars) + 0.8)
            pos += 0.8
        names = _wrap_group_names(names, widths, total=pos, fig_width_in=11.0)
        top = max(sum(s.values()) for _, s in stacks)
        scale, unit = bytes_unit(top)
        for x, split in stacks:
            bottom = 0.0
            for cat, (_, color) in CATEGORIES.items():
                v = split.get(cat, 0.0) / scale
                if v <= 0:
                    continue
                hatch = "//" if cat in ("rest", "untracked") else None
                ax.bar(
                    x, v, bottom=bottom, width=0.8, color=color, edgecolor="white", linewidth=0.5, hatch=hatch
                )
                used.add(cat)
                bottom += v
            ax.annotate(
                f"{bottom:.3g}",
                (x, bottom),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                fontsize=7,
            )
        ax.set_xticks([t for t, _ in ticks], [s for _, s in ticks], fontsize=8)
        sec = ax.secondary_xaxis("bottom")
        sec.set_xticks(centers, names, fontsize=9)
        sec.tick_params(length=0, pad=16)
        sec.spines["bottom"].set_visible(False)
        ax.set_ylabel(f"memory at the phase peak ({unit})")
        ax.set_ylim(0, top / scale * 1.12)
        ax.set_xlim(-0.6, pos - 0.2)
        ax.set_title(f"{title}: forward / backward / optimizer-step peaks", fontsize=10)
        style_axes(ax)
        ax.grid(False, axis="x")
    handles = [
        Patch(facecolor=c, edgecolor="white", hatch="//" if k in ("rest", "untracked") else None, label=t)
        for k, (t, c) in CATEGORIES.items()
        if k in used
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)), fontsize=8)
    fig.suptitle("Where does the memory go? Live bytes by category at each phase's peak", fontsize=12)
    if n_inferred:
        note(
            notes,
            f"memory: {n_inferred} row(s) have no samples sidecar: their split is inferred from the CSV "
            "(parameters, optimizer state and inputs live in every phase, activations at the forward "
            "peak, gradients in the optimizer step); the rest of each peak is drawn as 'not broken down'",
        )
    return fig


def checkpointing_figure(df: Any, notes: list[str] | None = None) -> Any:
    """3. Activation checkpointing: peak memory against step time, ``none`` vs ``full`` per configuration."""
    if "checkpointing" not in df.columns:
        return Skipped("no checkpointing column in the results")
    if "peak_mem_bytes" not in df.columns:
        return Skipped("no peak_mem_bytes column in the results")
    found = []
    for title, sub in panels(ok_rows(df)):
        matched = [
            (a, b)
            for a, b in pairs(
                sub,
                "checkpointing",
                "none",
                lambda v: v != "none",
                notes=notes,
                what=f"checkpointing: {title}",
                most=MAX_CKPT_PAIRS,
            )
            if all(num(r.get(c)) is not None for r in (a, b) for c in ("peak_mem_bytes", "time_median_ms"))
        ]
        if matched:
            found.append((title, sub, matched))
    if not found:
        return Skipped("no configuration has ok rows with both checkpointing=none and full (time and memory)")
    if len(found) > MAX_PANELS:
        note(notes, f"checkpointing: showing the first {MAX_PANELS} of {len(found)} panels")
    found = found[:MAX_PANELS]
    ncols = min(2, len(found))
    fig = new_figure(7.5 * ncols if ncols > 1 else 9.0, 5.4 * -(-len(found) // ncols) + 0.4)
    for ax, (title, sub, matched) in zip(grid_axes(fig, len(found)), found, strict=True):
        cols = [c for c in varying(sub, exclude=["checkpointing"]) if c != "scenario"]
        top = max(max(_b(a, "peak_mem_bytes"), _b(b, "peak_mem_bytes")) for a, b in matched)
        right = max(max(time_ci(r)[2] or time_ci(r)[0] or 0.0 for r in (a, b)) for a, b in matched)
        scale, unit = bytes_unit(top)
        for i, (base, ckpt) in enumerate(matched):
            color = PALETTE[i % len(PALETTE)]
            pts = []
            for r, marker in ((base, "o"), (ckpt, "^")):
                t, lo, hi = time_ci(r)
                y = _b(r, "peak_mem_bytes") / scale
                assert t is not None
                ax.errorbar(
                    [t], [y], xerr=errbar([t], [lo], [hi]), fmt=marker, color=color, markersize=9, capsize=4
                )
                ax.annotate(
                    str(r["checkpointing"]),
                    (t, y),
                    xytext=(7, 4 - 10 * (i % 3)),
                    textcoords="offset points",
                    fontsize=8,
                    color=color,
                )
                pts.append((t, y))
            ax.annotate(
                "",
                xy=pts[1],
                xytext=pts[0],
                arrowprops={"arrowstyle": "->", "color": color, "linewidth": 1.2, "alpha": 0.7},
            )
            mem_x = pts[1][1] / pts[0][1] if pts[0][1] else float("nan")
            time_x = pts[1][0] / pts[0][0] if pts[0][0] else float("nan")
            name = label(base, cols) if cols else "all"
            ax.plot(
                [],
                [],
                color=color,
                marker="s",
                linestyle="none",
                label=f"{name}: memory ×{mem_x:.2f}, time ×{time_x:.2f}",
            )
        ax.plot([], [], "ko", label="ckpt=none")
        ax.plot([], [], "k^", label="ckpt=full")
        ax.set_xlabel("median step time (ms; bars: 95% CI)")
        ax.set_ylabel(f"peak memory ({unit})")
        ax.set_ylim(0, top / scale * 1.5)
        ax.set_xlim(0, right * 1.15)
        ax.set_title(title, fontsize=10)
        style_axes(ax)
        ax.legend(fontsize=8, loc="upper left", title="full vs none", title_fontsize=8)
    fig.suptitle(
        "Activation checkpointing: how much peak memory does it save, at what step-time cost?", fontsize=12
    )
    return fig


__all__ = ["CATEGORY_COLUMNS", "checkpointing_figure", "memory_figure"]
