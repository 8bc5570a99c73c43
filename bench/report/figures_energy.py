"""The energy figure: joules per item of each configuration, labelled with where the joules came from.

Same contract as ``bench.report.figures_perf``: the report's rows in, a ``Figure`` or a
``Skipped(reason)`` out, one panel per scenario and file. A bar is a row's ``energy_j_per_item``
(with ``--repeat`` the median of the repeats' figures: the CSV has no interval for it; ``dlbench
compare --metric energy`` gives ratios with CIs), annotated with ``avg_power_w``. Bars are coloured
by source (``energy_source`` and ``energy_scope``): a legend entry names each, with the devices
summed, and a RAPL source (``energy_scope`` ``cpu-package``) carries its caveat on the figure:
the package counter counts every process on the package, not only the measured one.

Rows without a figure (empty cells: no counter, Zeus missing, a window too short) are not drawn
and never drawn as 0; a note counts them and quotes the reason the rows give.
"""

from __future__ import annotations

from typing import Any

from bench.report.escape import one_line
from bench.report.figures_common import (
    PALETTE,
    Skipped,
    label,
    limit,
    new_figure,
    note,
    ok_rows,
    panels,
    style_axes,
    texts,
    varying,
)
from bench.report.format import num

COLUMN = "energy_j_per_item"
SOURCE_COLUMNS = ("energy_source", "energy_scope", "energy_devices")
MAX_PANELS = 4
MAX_BARS = 16
RAPL_CAVEAT = (
    "energy_scope cpu-package (RAPL): the counter covers the whole CPU package, so other processes "
    "and idle cores count too"
)
NO_FIGURE = (
    "energy_j_per_item is empty where no counter gave a figure (no RAPL or GPU energy counter, Zeus "
    "not installed: pip install 'dlbench[energy]', or a window too short); `dlbench env` names the "
    "source, each row's sidecar energy.reason says why"
)


def _joule_unit(largest: float) -> tuple[float, str]:
    """(divisor, unit) for an axis of joules whose largest value is ``largest``."""
    for scale, unit in ((1.0, "J"), (1e-3, "mJ"), (1e-6, "µJ")):
        if largest >= scale:
            return scale, unit
    return 1e-9, "nJ"


def _item_word(sub: Any) -> str:
    """What an item is in this panel (``token`` from ``tokens/s``), or ``item`` where it varies."""
    if "throughput_unit" not in sub.columns:
        return "item"
    units = {u.removesuffix("/s") for u in texts(sub["throughput_unit"]) if u}
    if len(units) != 1:
        return "item"
    word = units.pop()
    return word[:-1] if word.endswith("s") and len(word) > 1 else word or "item"


def _source_of(row: Any) -> tuple[str, str, str]:
    """(energy_source, energy_scope, energy_devices) of a row, as one-line text ("" where empty)."""
    source, scope, devices = (one_line(v) if isinstance(v := row.get(c), str) else "" for c in SOURCE_COLUMNS)
    return source, scope, devices


def _source_label(source: str, scope: str, devices: list[str]) -> str:
    """``rapl-package (cpu-package) on cpu-package0``: a legend entry."""
    shown = ", ".join(devices[:3]) + (f", ... ({len(devices)} sets)" if len(devices) > 3 else "")
    return f"{source or 'source?'} ({scope or 'scope?'}) on {shown or '?'}"


def _empty_reasons(rows: Any) -> list[str]:
    """The energy reasons in the rows' ``reason`` cells (a window too short, a counter that stood still)."""
    if "reason" not in rows.columns:
        return []
    found = []
    for text in texts(rows["reason"]):
        found += [p.strip() for p in text.split(";") if p.strip().startswith("energy:")]
    return list(dict.fromkeys(found))


def energy_figure(df: Any, notes: list[str] | None = None) -> Any:
    """8. Energy per item of each configuration, one bar per ok row with a figure."""
    if COLUMN not in df.columns:
        return Skipped(f"no {COLUMN} column in the results (written before dlbench measured energy)")
    import pandas as pd

    rows = ok_rows(df)
    drawn = pd.to_numeric(rows[COLUMN], errors="coerce").gt(0)  # an empty cell (NaN) is never a bar
    have, without = rows[drawn], rows[~drawn]
    why = _empty_reasons(without)
    said = f" (the rows say: {'; '.join(why[:3])})" if why else ""
    if have.empty:
        return Skipped(f"no ok row has an energy figure: {NO_FIGURE}{said}")
    if not without.empty:
        note(notes, f"energy: {len(without)} ok row(s) without {COLUMN} left out (never drawn as 0){said}")
    found = limit(panels(have), MAX_PANELS, "energy", notes)
    for title, sub in found:
        if len(sub) > MAX_BARS:
            note(notes, f"energy: {title}: showing the first {MAX_BARS} of {len(sub)} rows")
    found = [(t, s.iloc[:MAX_BARS]) for t, s in found]
    sources: list[tuple[str, str, str]] = []
    for _, sub in found:
        sources += [_source_of(r) for _, r in sub.iterrows()]
    kinds = list(dict.fromkeys(s[:2] for s in sources))  # colour by (source, scope)
    rapl = any(scope == "cpu-package" for _, scope in kinds)
    heights = [0.4 * len(s) + 1.3 for _, s in found]
    fig = new_figure(10.0, sum(heights) + (0.9 if rapl else 0.6))
    axes = fig.subplots(len(found), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, (title, sub) in zip(axes, found, strict=True):
        cols = [c for c in varying(sub, exclude=SOURCE_COLUMNS) if c != "scenario"]
        names = [label(r, cols) if cols else str(r["scenario"]) for _, r in sub.iterrows()]
        vals = [num(v) or 0.0 for v in sub[COLUMN]]
        scale, unit = _joule_unit(max(vals))
        ys = list(range(len(names)))
        here = [_source_of(r) for _, r in sub.iterrows()]
        if len({s[:2] for s in here}) > 1:
            note(notes, f"energy: {title}: the rows come from different sources (colours); bars of "
                 "different colours measure different things and are not comparable")  # fmt: skip
        for kind in dict.fromkeys(s[:2] for s in here):
            idx = [i for i, s in enumerate(here) if s[:2] == kind]
            devices = list(dict.fromkeys(here[i][2] for i in idx))
            ax.barh(
                [ys[i] for i in idx],
                [vals[i] / scale for i in idx],
                height=0.6,
                color=PALETTE[kinds.index(kind) % len(PALETTE)],
                label=_source_label(*kind, devices),
            )
        for y, v, (_, r) in zip(ys, vals, sub.iterrows(), strict=True):
            watts = num(r.get("avg_power_w"))
            text = f"{v / scale:.3g} {unit}" + (f", {watts:.3g} W" if watts is not None else "")
            ax.annotate(text, (v / scale, y), xytext=(4, -3), textcoords="offset points", fontsize=8)
        ax.set_yticks(ys, names, fontsize=9)
        ax.set_ylim(len(ys) - 0.5, -0.5)
        ax.set_xlim(0, max(vals) / scale * 1.45)
        ax.set_xlabel(f"energy per {_item_word(sub)} ({unit}; the timed steps' joules / steps / items)")
        ax.set_title(title, fontsize=10)
        style_axes(ax)
        ax.legend(fontsize=8, loc="best", title="energy source", title_fontsize=8)
    if rapl:
        note(notes, f"energy: {RAPL_CAVEAT}")
        fig.supxlabel(RAPL_CAVEAT, fontsize=8, color=PALETTE[5])
    fig.suptitle(
        "How much energy does each configuration use per item? (the timed steps' joules)", fontsize=12
    )
    return fig


__all__ = ["RAPL_CAVEAT", "energy_figure"]
