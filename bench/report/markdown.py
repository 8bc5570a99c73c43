"""Markdown reports from result CSVs: one table per file, the columns an engineer reads first.

    dlbench report results/gpu/*.csv -o reports/gpu --title "H200 truth run"   # writes summary.md

Every figure is read from the CSV rows (no re-measuring); failed and skipped rows are listed with
their reason so a report never hides a configuration that did not run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.report.format import MIB, fmt, is_missing, ratio
from bench.results import PARAM_PREFIX, load_results


def _varying_params(df: Any) -> list[str]:
    """Parameter columns (and batch_size) whose value differs between rows of the file."""
    cols = ["batch_size"] + [c for c in df.columns if c.startswith(PARAM_PREFIX)]
    return [c for c in cols if c in df.columns and df[c].astype(str).nunique() > 1]


STATE_COLUMNS = ("mem_params_bytes", "mem_grads_bytes", "mem_optimizer_bytes")


def _cell(r: Any, col: str) -> Any:
    """``r[col]``, or None when the file has no such column (older CSVs, memory columns removed)."""
    return r.get(col) if hasattr(r, "get") else None


def _state_mib(r: Any, cols: Sequence[str]) -> str:
    """Parameters + gradients + optimizer state in MiB; "" when the row has none of them."""
    values = [float(v) for v in (_cell(r, c) for c in cols) if not is_missing(v)]
    return fmt(sum(values) / MIB, ".1f") if values else ""


def table_for(df: Any) -> str:
    """Markdown table of one results DataFrame: configuration, time with CI, throughput, MFU, memory.

    Columns a file lacks are tolerated: a missing time or MFU cell is empty, and the memory columns
    (``peak MiB``, ``params+grads+opt MiB``) are left out of the table when the file has none of
    their source columns.
    """
    params = _varying_params(df)
    has_peak = "peak_mem_bytes" in df.columns
    state_cols = [c for c in STATE_COLUMNS if c in df.columns]
    head = ["scenario", "mode", "precision", "ckpt", *[p.removeprefix(PARAM_PREFIX) for p in params]]
    head += ["status", "median ms [95% CI]", "throughput", "TFLOP/s", "MFU"]
    head += ["peak MiB"] if has_peak else []
    head += ["params+grads+opt MiB"] if state_cols else []
    n_figures = len(head) - 5 - len(params)  # the cells after status
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in df.iterrows():
        cells = [str(_cell(r, c)) for c in ("scenario", "mode", "precision", "checkpointing")]
        cells += [str(r[p]) for p in params]
        status = str(r["status"])
        noisy = _cell(r, "noisy")
        if status == "ok" and not is_missing(noisy) and bool(noisy):
            status = "ok (noisy)"
        cells.append(status)
        if r["status"] == "ok":
            cells.append(
                f"{fmt(_cell(r, 'time_median_ms'), '.4g')} [{fmt(_cell(r, 'time_ci_low_ms'), '.4g')}, "
                f"{fmt(_cell(r, 'time_ci_high_ms'), '.4g')}]"
            )
            unit = _cell(r, "throughput_unit")
            cells.append(f"{fmt(_cell(r, 'throughput'), '.4g')} {'' if is_missing(unit) else unit}".strip())
            cells.append(fmt(_cell(r, "achieved_tflops")))
            cells.append(fmt(_cell(r, "mfu"), ".1%"))
            if has_peak:
                cells.append(fmt(ratio(_cell(r, "peak_mem_bytes"), MIB), ".1f"))
            if state_cols:
                cells.append(_state_mib(r, state_cols))
        else:
            cells += [""] * n_figures
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def failures(df: Any) -> list[str]:
    bad = df[df["status"] != "ok"]
    out = []
    for _, r in bad.iterrows():
        reason = _cell(r, "reason")
        out.append(f"- `{_cell(r, 'config_key')}`: **{r['status']}**: {'' if is_missing(reason) else reason}")
    return out


def environment(df: Any) -> str:
    r = df.iloc[0]
    keys = ("device_name", "torch_version", "cuda_version", "gpu_driver", "git_commit", "threads", "hostname")
    return ", ".join(f"{k}={r[k]}" for k in keys if k in df.columns and not is_missing(r[k]))


def markdown_report(paths: Sequence[Path | str], title: str = "dlbench report") -> str:
    parts = [f"# {title}", ""]
    for path in paths:
        df = load_results(path)
        parts += [f"## {Path(path).name}", ""]
        if df.empty:
            parts += ["(no rows)", ""]
            continue
        parts += [f"Environment: {environment(df)}", "", table_for(df), ""]
        bad = failures(df)
        if bad:
            parts += ["Rows that did not run:", "", *bad, ""]
    return "\n".join(parts)


def extra_of(row: Any) -> dict[str, Any]:
    """The row's ``extra`` column (JSON) as a dict; {} when empty."""
    raw = row.get("extra") if hasattr(row, "get") else None
    if is_missing(raw):
        return {}
    try:
        value = json.loads(str(raw))
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def write_report(paths: Sequence[Path | str], out: Path | str, title: str = "dlbench report") -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown_report(paths, title) + "\n", encoding="utf-8")
    return out
