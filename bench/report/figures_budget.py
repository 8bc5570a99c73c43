"""The memory-budget figure: what each technique combination reaches at its largest fitting batch.

Drawn from the rows ``dlbench budget`` writes (``budget_bytes`` filled), through the same summary the
command prints (``bench.report.budget.summarize``), one pair of panels per budget run and group
(file, scenario, device, budget; mode and parameters where they vary):

- left, **throughput at the max batch** per combination (the job's: a parallel row counts its whole
  batch), bars with the 95% CI that follows from the step time's, each labelled with its max batch
  and its ratio to the baseline (fp32, no checkpointing); a combination that did not fit or failed
  is listed at zero with why;
- right, **the Pareto scatter**: peak memory (the figure the fit rule compared) against throughput,
  the front drawn as a line through its points, the budget as a dashed vertical line.

Each pair's recommendation sentence (``bench.report.budget.recommend``) is a note of the figure.

Left out, with a reason, when the results hold no budget rows, or none that is ok.
"""

from __future__ import annotations

from typing import Any

from bench.report.budget import BudgetReport, Entry, is_budget_row, recommend, summarize
from bench.report.figures_common import (
    PALETTE,
    SOURCE,
    Skipped,
    bytes_unit,
    errbar,
    limit,
    new_figure,
    note,
    style_axes,
)
from bench.report.format import fmt_bytes, is_missing

MAX_PANELS = 4  # budget runs (pairs of panels) drawn; the rest are counted in a note
_GROUP_BY = (SOURCE, "scenario", "device", "budget_bytes")


def has_budget_rows(df: Any) -> bool:
    """The results hold rows of ``dlbench budget`` (the only case the figure is offered in)."""
    return "budget_bytes" in df.columns and bool(df["budget_bytes"].notna().any())


def budget_reports(df: Any) -> list[BudgetReport]:
    """One ``BudgetReport`` per budget run in ``df`` (file, scenario, device, budget)."""
    rows = df[df["budget_bytes"].notna()] if "budget_bytes" in df.columns else df.iloc[0:0]
    keys = [c for c in _GROUP_BY if c in rows.columns]
    out = []
    for _, sub in rows.groupby(keys, sort=False, dropna=False) if keys else [((), rows)]:
        records = [r for r in sub.to_dict("records") if is_budget_row(r)]
        if records:
            out.append(summarize(records))
    return out


def budget_figure(df: Any, notes: list[str] | None = None) -> Any:
    """Throughput at the max batch per combination, and peak memory against throughput (Pareto)."""
    if not has_budget_rows(df):
        return Skipped("no dlbench budget rows in the results")
    panels: list[tuple[BudgetReport, str, list[Entry]]] = []
    for rep in budget_reports(df):
        for group in dict.fromkeys(e.group for e in rep.entries):
            entries = [e for e in rep.entries if e.group == group]
            if any(e.ok for e in entries):
                panels.append((rep, group, entries))
    if not panels:
        return Skipped("no budget row is ok: no combination fitted and was measured")
    panels = limit(panels, MAX_PANELS, "budget", notes)
    fig = new_figure(13.0, 0.6 + 4.6 * len(panels))
    axes = fig.subplots(len(panels), 2, squeeze=False)
    for (ax_bar, ax_pareto), (rep, group, entries) in zip(axes, panels, strict=True):
        title = f"{rep.scenario} on {rep.device}, budget {fmt_bytes(rep.budget_bytes)}" + (
            f" ({group})" if group else ""
        )
        _bars(ax_bar, entries, title)
        _pareto(ax_pareto, entries, rep)
        note(notes, f"budget, {title}: {recommend(entries, rep.budget_bytes)}")
    fig.suptitle(
        "dlbench budget: the largest batch each combination fits, and what it reaches there", fontsize=11
    )
    return fig


def _unit(entries: list[Entry]) -> str:
    units = {e.unit for e in entries if e.ok}
    return units.pop() if len(units) == 1 else "items/s"


def _bars(ax: Any, entries: list[Entry], title: str) -> None:
    ys = list(range(len(entries)))[::-1]  # the first combination on top
    values = [e.throughput if e.ok and e.throughput is not None else 0.0 for e in entries]
    lows = [e.throughput_ci[0] if e.ok and e.throughput_ci else None for e in entries]
    highs = [e.throughput_ci[1] if e.ok and e.throughput_ci else None for e in entries]
    colors = ["#7f7f7f" if e.baseline else PALETTE[i % len(PALETTE)] for i, e in enumerate(entries)]
    ax.barh(ys, values, xerr=errbar(values, lows, highs), color=colors, capsize=3, height=0.6)
    ax.set_yticks(ys, [e.label for e in entries], fontsize=8)
    top = max([v for v in values] + [h for h in highs if h is not None]) or 1.0
    for y, e, v, hi in zip(ys, entries, values, highs, strict=True):
        if e.ok:
            rel = "baseline" if e.baseline else f"{e.relative:.2f}x" if e.relative is not None else ""
            text = f"batch {e.max_batch}" + (f", {rel}" if rel else "") + (" (cap)" if e.capped else "")
        elif e.max_batch == 0:
            text = "does not fit at the smallest batch"
        else:
            text = f"{e.status}" + (f": {e.reason[:60]}" if e.reason and not is_missing(e.reason) else "")
        ax.text(max(v, hi or 0.0) + top * 0.02, y, text, va="center", fontsize=8)  # right of the CI
    ax.set_xlim(0, top * 1.5)
    ax.set_xlabel(f"throughput at the max batch ({_unit(entries)}; bars: 95% CI)")
    ax.set_title(title, fontsize=10)
    style_axes(ax)


def _pareto(ax: Any, entries: list[Entry], rep: BudgetReport) -> None:
    ok = [e for e in entries if e.ok]
    budget = float(rep.budget_bytes or 0)
    scale, unit = bytes_unit(max([budget] + [float(e.peak_bytes or 0.0) for e in ok]))
    for i, e in enumerate(entries):
        if not e.ok:
            continue
        x, y = float(e.peak_bytes or 0.0) / scale, float(e.throughput or 0.0)
        color = "#7f7f7f" if e.baseline else PALETTE[i % len(PALETTE)]
        ax.scatter(
            [x], [y], s=60 if e.on_front else 30, color=color, marker="o" if e.on_front else "x", zorder=3
        )
        # staggered, so that two combinations of about the same memory and speed stay readable
        ax.annotate(
            e.label, (x, y), xytext=(6, 4 - 11 * (i % 3)), textcoords="offset points", fontsize=8, color=color
        )
    front = sorted((e for e in ok if e.on_front), key=lambda e: float(e.peak_bytes or 0.0))
    if len(front) > 1:
        ax.plot(
            [float(e.peak_bytes or 0.0) / scale for e in front],
            [float(e.throughput or 0.0) for e in front],
            color="black",
            linewidth=1,
            alpha=0.6,
            label="Pareto front",
            drawstyle="steps-post",
        )
    if budget:
        ax.axvline(
            budget / scale, color="#d62728", linestyle="--", linewidth=1, label=f"budget {fmt_bytes(budget)}"
        )
    ax.set_xlabel(f"peak memory at the max batch ({unit}; the fit rule's figure: {rep.rule})")
    ax.set_ylabel(f"throughput ({_unit(entries)})")
    ax.set_ylim(bottom=0)
    ax.margins(x=0.15)  # room for the labels of the rightmost points
    ax.set_title("peak memory vs throughput (o: on the Pareto front)", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    style_axes(ax)
