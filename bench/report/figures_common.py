"""Shared pieces of the report figures: ``Skipped``, configuration labels, pairing rows, units.

Figures are ``matplotlib.figure.Figure`` objects made directly (no pyplot, no global backend
state); ``Figure.savefig`` picks the Agg / SVG canvas from the file format. Nothing here imports
torch, rich or typer (tests/test_layers.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from bench.report.escape import one_line
from bench.report.format import num
from bench.results import PARAM_PREFIX
from bench.results.schema import ENV_MATCH_COLUMNS

SOURCE = "_source"  # column added by the report: the CSV file name a row came from
PER_PHASE = "_per_phase"  # column added by the report: the sidecar's memory.per_phase of the row

# Columns that together say which configuration a row measured (besides the param_* columns).
CONFIG_COLUMNS: tuple[str, ...] = (
    "scenario",
    "mode",
    "precision",
    "checkpointing",
    "compile",
    "parallel",
    "world_size",
    "batch_size",
    "device",
    "device_name",
    "channels_last",
    "seed",
)

# Colours (colour-blind safe "tab10" subset) used consistently across figures.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
DPI = 100


@dataclass(frozen=True)
class Skipped:
    """A figure left out of the report, and the one-line reason why."""

    reason: str

    def __str__(self) -> str:
        return self.reason


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure of ``width`` x ``height`` inches at the report's DPI."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    fig.patch.set_facecolor("white")
    return fig


def ok_rows(df: Any) -> Any:
    """The rows whose status is ``ok``."""
    return df[df["status"] == "ok"] if "status" in df.columns else df.iloc[0:0]


def has_values(df: Any, col: str) -> bool:
    """``col`` is a column of ``df`` and holds at least one value."""
    return col in df.columns and bool(df[col].notna().any())


def missing_columns(df: Any, cols: Iterable[str]) -> list[str]:
    return [c for c in cols if c not in df.columns]


def config_columns(df: Any) -> list[str]:
    """The columns that identify a configuration, present in ``df`` (the source file last)."""
    cols = [c for c in CONFIG_COLUMNS if c in df.columns]
    cols += [c for c in df.columns if c.startswith(PARAM_PREFIX)]
    if SOURCE in df.columns:
        cols.append(SOURCE)
    return cols


def _text(v: Any) -> str:
    """A cell as label text: '' when missing, integers without '.0'."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    try:
        if not isinstance(v, bool | np.bool_ | str) and float(v) == int(float(v)):
            return str(int(float(v)))
    except (TypeError, ValueError, OverflowError):
        pass
    text = str(v)
    return "" if text in ("nan", "<NA>", "None") else one_line(text)


def key_of(row: Any, cols: Sequence[str]) -> tuple[str, ...]:
    return tuple(_text(row.get(c)) for c in cols)


def texts(column: Any) -> list[str]:
    """``_text`` of every cell of a column, computed once per distinct value (fast on 50,000 rows)."""
    import pandas as pd

    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    mapped = [_text(u) for u in uniques]
    return [mapped[c] if c >= 0 else "" for c in codes]


def keys_of(df: Any, cols: Sequence[str]) -> list[tuple[str, ...]]:
    """``key_of`` of every row of ``df``, computed column by column."""
    if not cols:
        return [()] * len(df)
    return list(zip(*[texts(df[c]) for c in cols], strict=True))


def varying(df: Any, exclude: Iterable[str] = ()) -> list[str]:
    """Configuration columns whose value differs between rows of ``df`` (not those in ``exclude``).

    The source file is included only when rows of different files would otherwise look the same.
    """
    skip = set(exclude)
    cols = [c for c in config_columns(df) if c != SOURCE and c not in skip]
    out = [c for c in cols if len(set(texts(df[c]))) > 1]
    if SOURCE in df.columns and df[SOURCE].nunique() > 1:
        keys = keys_of(df, out + sorted(skip & set(df.columns)))
        if len(set(keys)) < len(keys):
            out.append(SOURCE)
    return out


def panels(rows: Any) -> list[tuple[str, Any]]:
    """(title, rows) per scenario and results file, in file order: one panel of a figure each.

    Files are kept apart (a CPU tiny run and a GPU large run differ by orders of magnitude); the
    title names the scenario, the device and, with several files, the file.
    """
    if rows.empty:
        return []
    several = SOURCE in rows.columns and rows[SOURCE].nunique() > 1
    keys = ["scenario", SOURCE] if several else ["scenario"]
    out = []
    for _, sub in rows.groupby(keys, sort=False, dropna=False):
        title = str(sub["scenario"].iloc[0])
        if "device_name" in sub.columns:
            devices = list(dict.fromkeys(_text(v) for v in sub["device_name"] if _text(v)))
            if len(devices) == 1:
                title += f" on {devices[0]}"
        if several:
            title += f" [{str(sub[SOURCE].iloc[0]).removesuffix('.csv')}]"
        out.append((title, sub))
    return out


def grid_axes(fig: Figure, n: int, ncols: int = 2) -> list[Any]:
    """``n`` axes in a grid of at most ``ncols`` columns (unused cells removed)."""
    cols = min(ncols, n)
    rows = -(-n // cols)
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax in axes[n:]:
        ax.remove()
    return axes[:n]


def short(col: str, value: Any) -> str:
    """``ckpt=full``, ``bs=8``, ``seq_len=128``, ``train``: one configuration column for a label."""
    text = _text(value)
    if col in ("scenario", "mode", "precision", "parallel", "device_name", "device"):
        return text
    if col == SOURCE:
        return f"[{text.removesuffix('.csv')}]"
    names = {"checkpointing": "ckpt", "world_size": "ws", "batch_size": "bs", "channels_last": "cl"}
    name = names.get(col, col.removeprefix(PARAM_PREFIX))
    return f"{name}={text}"


def label(row: Any, cols: Sequence[str]) -> str:
    """A row's label from the given configuration columns (``train fp32 ckpt=full``)."""
    parts = [short(c, row.get(c)) for c in cols if _text(row.get(c))]
    return " ".join(parts) if parts else str(row.get("scenario", "run"))


def pairs(
    df: Any,
    column: str,
    base: str,
    is_other: Any,
    ignore: Sequence[str] = (),
    *,
    notes: list[str] | None = None,
    what: str = "",
    most: int | None = None,
) -> list[tuple[Any, Any]]:
    """(base row, other row) of the ok rows that differ only in ``column`` (and the ``ignore`` columns).

    ``base`` is the value of the reference row (``fp32``, ``none``); ``is_other(value)`` says which
    values are compared against it. Rows are paired within one source file only, and only when
    their environments agree (``ENV_MATCH_COLUMNS``, checked pair by pair: a row measured on
    another machine or torch is never a ratio's other half; ``notes`` says how many were left out).
    ``most``: only the first pairs are returned (rows are looked up only for those; a note says how
    many there are).
    """
    rows = ok_rows(df)
    if column not in rows.columns or rows.empty:
        return []
    key_cols = [c for c in config_columns(rows) if c != column and c not in ignore]
    env_cols = [c for c in ENV_MATCH_COLUMNS if c in rows.columns and c not in key_cols and c != column]
    keys = keys_of(rows, key_cols)
    envs = keys_of(rows, env_cols)
    values = texts(rows[column])
    bases: dict[tuple[str, ...], int] = {}
    for i, (k, v) in enumerate(zip(keys, values, strict=True)):
        if v == base:
            bases.setdefault(k, i)
    found: list[tuple[int, int]] = []
    other_env = 0
    for i, (k, v) in enumerate(zip(keys, values, strict=True)):
        if v != base and is_other(v):
            j = bases.get(k)
            if j is None:
                continue
            if any(a and b and a != b for a, b in zip(envs[i], envs[j], strict=True)):
                other_env += 1
                continue
            found.append((j, i))
    if most is not None and len(found) > most:
        note(notes, f"{what or column}: showing the first {most} of {len(found)} pairs")
        found = found[:most]
    out = [(rows.iloc[j], rows.iloc[i]) for j, i in found]
    if other_env:
        differ = ", ".join(env_cols)
        note(
            notes,
            f"{what or column}: {other_env} pair(s) left out: their rows come from different environments "
            f"({differ})",
        )
    return out


def ratio_interval(
    num_lo: float | None, num_hi: float | None, den_lo: float | None, den_hi: float | None
) -> tuple[float | None, float | None]:
    """Bounds of ``a / b`` from intervals of ``a`` and ``b``: (a_lo / b_hi, a_hi / b_lo)."""
    if None in (num_lo, num_hi, den_lo, den_hi) or not den_lo or not den_hi:
        return None, None
    assert num_lo is not None and num_hi is not None
    return num_lo / den_hi, num_hi / den_lo


def time_ci(row: Any) -> tuple[float | None, float | None, float | None]:
    """(median, CI low, CI high) of the step time in ms."""
    return num(row.get("time_median_ms")), num(row.get("time_ci_low_ms")), num(row.get("time_ci_high_ms"))


def speedup(base: Any, other: Any) -> tuple[float | None, float | None, float | None]:
    """``base time / other time`` (>1: other is faster) and its interval from both CIs."""
    b, b_lo, b_hi = time_ci(base)
    o, o_lo, o_hi = time_ci(other)
    if b is None or not o:
        return None, None, None
    lo, hi = ratio_interval(b_lo, b_hi, o_lo, o_hi)
    return b / o, lo, hi


def throughput_ci(row: Any) -> tuple[float | None, float | None, float | None]:
    """(throughput, low, high): ``items_per_step`` over the median and the CI bounds of the time."""
    thr = num(row.get("throughput"))
    items = num(row.get("items_per_step"))
    _, lo_ms, hi_ms = time_ci(row)
    if thr is None or items is None or not lo_ms or not hi_ms:
        return thr, None, None
    return thr, items / (hi_ms / 1000.0), items / (lo_ms / 1000.0)


def errbar(values: Sequence[float], lows: Sequence[float | None], highs: Sequence[float | None]) -> Any:
    """A 2xN ``yerr``/``xerr`` array (distances below/above); 0 where a bound is missing."""
    below = [max(v - lo, 0.0) if lo is not None else 0.0 for v, lo in zip(values, lows, strict=True)]
    above = [max(hi - v, 0.0) if hi is not None else 0.0 for v, hi in zip(values, highs, strict=True)]
    return [below, above]


def bytes_unit(max_bytes: float) -> tuple[float, str]:
    """(divisor, unit) for a memory axis whose largest value is ``max_bytes``."""
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if max_bytes >= 2 * scale:
            return float(scale), unit
    return 1.0, "B"


def is_noisy(row: Any) -> bool:
    """The row's ``noisy`` flag; False when it is missing."""
    v = row.get("noisy")
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return False
    try:
        return bool(v)
    except TypeError:  # pandas.NA
        return False


def style_axes(ax: Any) -> None:
    """Light grid behind the data, no top/right spines."""
    ax.set_axisbelow(True)
    ax.grid(True, color="#dddddd", linewidth=0.7)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def speedup_bars(
    ax: Any,
    names: Sequence[str],
    speeds: Sequence[tuple[float | None, float | None, float | None]],
    xlabel: str,
    headroom: float,
) -> list[int]:
    """Horizontal speed-up bars (green >= 1, red < 1) with CI error bars, a dashed line at 1 and the
    ratio written beside each bar; ``speeds`` as ``speedup`` gives them. Returns the bars' y values."""
    ys = list(range(len(names)))
    speed = [s[0] or 0.0 for s in speeds]
    ax.barh(ys, speed, color=[PALETTE[2] if s >= 1 else PALETTE[3] for s in speed], alpha=0.85, height=0.6)
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
    ax.set_xlim(0, max(max(s[2] or s[0] or 0.0 for s in speeds), 1.0) * headroom)
    ax.set_xlabel(xlabel)
    style_axes(ax)
    return ys


def note(notes: list[str] | None, text: str) -> None:
    """Append ``text`` to ``notes`` when there is a list to collect them."""
    if notes is not None:
        notes.append(text)


def limit(items: list[Any], most: int, what: str, notes: list[str] | None, noun: str = "panels") -> list[Any]:
    """The first ``most`` items, with a note saying how many were left out."""
    if len(items) > most:
        note(notes, f"{what}: showing the first {most} of {len(items)} {noun}")
    return items[:most]


def ratio_of(a: Any, b: Any) -> float | None:
    """``a / b`` of two cells; None when either is missing or ``b`` is 0."""
    x, y = num(a), num(b)
    return x / y if x is not None and y else None
