"""Summary tables of result CSVs: the columns an engineer reads first, as data, markdown or HTML.

    dlbench report results/gpu/*.csv -o reports/gpu --title "H200 truth run"   # writes summary.md

``summarize(df, name)`` builds a ``SummaryTable`` (cells as plain text) from a file's rows; the
report renders it to markdown here (``render_markdown``: every cell escaped by
``bench.report.escape.md_cell``, so a ``|``, a newline or ``<script>`` in a results cell stays text)
and to HTML in ``bench.report.html`` (from the same cells, escaped for HTML; never from the
markdown). Every figure is read from the CSV rows (no re-measuring); failed and skipped rows are
listed with their reason so a report never hides a configuration that did not run. A file with
more than ``MAX_TABLE_ROWS`` rows shows the first ones and says how many there are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report.escape import md_cell, md_code, md_text
from bench.report.format import MIB, fmt, is_missing, ratio
from bench.results import PARAM_PREFIX
from bench.results.loader import read_results

STATE_COLUMNS = ("mem_params_bytes", "mem_grads_bytes", "mem_optimizer_bytes")
ENV_SHOWN = (
    "device_name",
    "torch_version",
    "cuda_version",
    "gpu_driver",
    "git_commit",
    "threads",
    "hostname",
)
MAX_TABLE_ROWS = 200


@dataclass
class SummaryTable:
    """One results file's table as text cells, and its rows that did not run."""

    name: str
    environment: list[tuple[str, str]]
    head: list[str]
    rows: list[list[str]]
    statuses: list[str]
    total: int  # rows in the file (``rows`` may show fewer)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (config_key, status, reason)
    failures_total: int = 0


def _varying_params(df: Any) -> list[str]:
    """Parameter columns (and batch_size, compile) whose value differs between rows of the file."""
    cols = ["compile", "batch_size"] + [c for c in df.columns if c.startswith(PARAM_PREFIX)]
    return [c for c in cols if c in df.columns and df[c].astype(str).nunique() > 1]


def _cell(r: Any, col: str) -> Any:
    """``r[col]``, or None when the file has no such column (older CSVs, memory columns removed)."""
    return r.get(col) if hasattr(r, "get") else None


def _text(v: Any) -> str:
    return "" if is_missing(v) else str(v)


def _state_mib(r: Any, cols: Sequence[str]) -> str:
    """Parameters + gradients + optimizer state in MiB; "" when the row has none of them."""
    values = [float(v) for v in (_cell(r, c) for c in cols) if not is_missing(v)]
    return fmt(sum(values) / MIB, ".1f") if values else ""


def _head(df: Any) -> tuple[list[str], list[str], bool, list[str]]:
    params = _varying_params(df)
    has_peak = "peak_mem_bytes" in df.columns
    state_cols = [c for c in STATE_COLUMNS if c in df.columns]
    head = ["scenario", "mode", "precision", "ckpt", *[p.removeprefix(PARAM_PREFIX) for p in params]]
    head += ["status", "median ms [95% CI]", "throughput", "TFLOP/s", "MFU"]
    head += ["peak MiB"] if has_peak else []
    head += ["params+grads+opt MiB"] if state_cols else []
    return head, params, has_peak, state_cols


def _row_cells(r: Any, params: list[str], has_peak: bool, state_cols: list[str], n_figures: int) -> list[str]:
    cells = [_text(_cell(r, c)) for c in ("scenario", "mode", "precision", "checkpointing")]
    cells += [_text(r[p]) for p in params]
    status = _text(r["status"])
    noisy = _cell(r, "noisy")
    if status == "ok" and not is_missing(noisy) and bool(noisy):
        status = "ok (noisy)"
    cells.append(status)
    if r["status"] != "ok":
        return cells + [""] * n_figures
    cells.append(
        f"{fmt(_cell(r, 'time_median_ms'), '.4g')} [{fmt(_cell(r, 'time_ci_low_ms'), '.4g')}, "
        f"{fmt(_cell(r, 'time_ci_high_ms'), '.4g')}]"
    )
    cells.append(f"{fmt(_cell(r, 'throughput'), '.4g')} {_text(_cell(r, 'throughput_unit'))}".strip())
    cells.append(fmt(_cell(r, "achieved_tflops")))
    cells.append(fmt(_cell(r, "mfu"), ".1%"))
    if has_peak:
        cells.append(fmt(ratio(_cell(r, "peak_mem_bytes"), MIB), ".1f"))
    if state_cols:
        cells.append(_state_mib(r, state_cols))
    return cells


def summarize(df: Any, name: str, *, max_rows: int | None = MAX_TABLE_ROWS) -> SummaryTable:
    """The ``SummaryTable`` of one file's rows (the first ``max_rows`` of them; None: all)."""
    head, params, has_peak, state_cols = _head(df)
    n_figures = len(head) - 5 - len(params)  # the cells after status
    shown = df if max_rows is None else df.iloc[:max_rows]
    rows, statuses = [], []
    for _, r in shown.iterrows():
        rows.append(_row_cells(r, params, has_peak, state_cols, n_figures))
        statuses.append(_text(r["status"]))
    bad = df[df["status"] != "ok"]
    fails = [
        (_text(_cell(r, "config_key")) or "None", _text(r["status"]), _text(_cell(r, "reason")))
        for _, r in (bad if max_rows is None else bad.iloc[:max_rows]).iterrows()
    ]
    env = [] if df.empty else [(k, _text(df.iloc[0][k])) for k in ENV_SHOWN if k in df.columns]
    return SummaryTable(
        name=name,
        environment=[(k, v) for k, v in env if v],
        head=head,
        rows=rows,
        statuses=statuses,
        total=len(df),
        failures=fails,
        failures_total=len(bad),
    )


def _pipe_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(md_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _failure_line(key: str, status: str, reason: str) -> str:
    return f"- {md_code(key)}: **{md_text(status)}**: {md_text(reason)}"


def table_markdown(t: SummaryTable) -> list[str]:
    """One file's section of the markdown: environment, table, rows that did not run."""
    parts = [f"## {md_text(t.name)}", ""]
    if t.total == 0:
        return [*parts, "(no rows)", ""]
    env = ", ".join(f"{k}={v}" for k, v in t.environment)
    parts += [f"Environment: {md_text(env)}", "", _pipe_table(t.head, t.rows), ""]
    if len(t.rows) < t.total:
        parts += [f"(showing the first {len(t.rows)} of {t.total} rows; every row is in the CSV)", ""]
    if t.failures:
        parts += ["Rows that did not run:", "", *[_failure_line(*f) for f in t.failures], ""]
        if len(t.failures) < t.failures_total:
            parts += [f"(the first {len(t.failures)} of {t.failures_total})", ""]
    return parts


def render_markdown(title: str, tables: Sequence[SummaryTable]) -> str:
    parts = [f"# {md_text(title)}", ""]
    for t in tables:
        parts += table_markdown(t)
    return "\n".join(parts)


def table_for(df: Any) -> str:
    """The markdown table of one results DataFrame: configuration, time with CI, throughput, MFU, memory.

    Columns a file lacks are tolerated: a missing time or MFU cell is empty, and the memory columns
    (``peak MiB``, ``params+grads+opt MiB``) are left out of the table when the file has none of
    their source columns.
    """
    t = summarize(df, "", max_rows=None)
    return _pipe_table(t.head, t.rows)


def failures(df: Any) -> list[str]:
    """``- `config_key`: **status**: reason`` per row that did not run (escaped)."""
    return [_failure_line(*f) for f in summarize(df, "", max_rows=None).failures]


def environment(df: Any) -> str:
    r = df.iloc[0]
    return ", ".join(f"{k}={r[k]}" for k in ENV_SHOWN if k in df.columns and not is_missing(r[k]))


def markdown_report(paths: Sequence[Path | str], title: str = "dlbench report") -> str:
    """The summary markdown of result CSVs (read through the one loader)."""
    tables = [summarize(read_results(p).to_frame(), Path(p).name) for p in paths]
    return render_markdown(title, tables)


def extra_of(row: Any) -> dict[str, Any]:
    """The row's ``extra`` column (JSON) as a dict; {} when empty."""
    raw = row.get("extra") if hasattr(row, "get") else None
    if is_missing(raw):
        return {}
    try:
        value = json.loads(str(raw))
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def write_report(paths: Sequence[Path | str], out: Path | str, title: str = "dlbench report") -> Path:
    """Write ``markdown_report`` to ``out`` (checked first, written atomically)."""
    from bench.outputs import check_output_path, write_atomic
    from bench.results.store import samples_path_for

    inputs = [Path(p) for p in paths] + [samples_path_for(p) for p in paths]
    target = check_output_path(out, flag="out", inputs=inputs)
    write_atomic(target, markdown_report(paths, title) + "\n")
    return target
