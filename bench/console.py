"""What a person sees during and after ``dlbench run``: a progress bar, then a summary table.

The progress bar goes to stderr (so ``dlbench run ... > summary.txt`` keeps only the table); each
finished configuration is logged above the bar with its status and median time. The summary is a
rich table (config, status, median +- CI, throughput, MFU, peak memory), a WARNING line for every
row too noisy to trust, the reasons of failed rows, and where the CSV and samples went.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from bench.report.format import fmt_bytes, fmt_pct, fmt_si, fmt_time

if TYPE_CHECKING:
    from bench.api import RunSummary
    from bench.run.grid import RunConfig

_STATUS_STYLE = {"ok": "green", "skipped": "yellow", "oom": "red", "error": "red", "timeout": "red"}


class RunProgress:
    """A rich progress bar across configurations, used as ``execute``'s on_start/on_done hooks."""

    def __init__(
        self, scenario: str, total: int, varying: Sequence[str], *, console: Console | None = None
    ) -> None:
        self.console = console or Console(stderr=True)
        self.scenario = scenario
        self.varying = list(varying)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task(scenario, total=total)

    def __enter__(self) -> RunProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def start(self, i: int, cfg: RunConfig) -> None:
        self.progress.update(self.task, description=f"{self.scenario} {cfg.label(self.varying)}")

    def done(self, i: int, cfg: RunConfig, row: dict[str, Any] | None) -> None:
        label = cfg.label(self.varying)
        if row is None:
            self.progress.console.print(
                f"  [dim]{escape(label)}: already in the file (--resume), not run again[/]"
            )
        else:
            status = row["status"]
            style = _STATUS_STYLE.get(status, "white")
            detail = fmt_time(row) if status == "ok" else (row.get("reason") or "")[:120]
            # labels and reasons are data, not markup: "[/tmp/x]" in a reason would break rich
            self.progress.console.print(f"  {escape(label)}: [{style}]{status}[/] {escape(detail)}")
        self.progress.advance(self.task)


def _label(summary: RunSummary, row: dict[str, Any]) -> str:
    for cfg in summary.configs:
        if cfg.key == row.get("config_key"):
            return cfg.label(summary.varying)
    return f"{row.get('mode')} {row.get('precision')}"


def summary_table(summary: RunSummary) -> Table:
    """One line per configuration run: config, status, median ± CI, throughput, MFU, peak memory.

    Achieved TFLOP/s, the CI bounds, IQR and the memory split are in the CSV.
    """
    table = Table(title=f"dlbench run {summary.scenario}  (run {summary.run_id})", title_justify="left")
    table.add_column("config", justify="left")
    table.add_column("status", justify="left", no_wrap=True)
    table.add_column("median ± CI (ms)", justify="right", no_wrap=True)
    table.add_column("throughput", justify="right")
    table.add_column("MFU", justify="right", no_wrap=True)
    table.add_column("peak mem", justify="right", no_wrap=True)
    for row in summary.rows:
        label = _label(summary, row)
        status = row["status"]
        style = _STATUS_STYLE.get(status, "white")
        flag = " [yellow](noisy)[/]" if row.get("noisy") else ""
        unit = row.get("throughput_unit") or ""
        table.add_row(
            escape(label),
            f"[{style}]{status}[/]{flag}",
            fmt_time(row, unit=False),
            fmt_si(row.get("throughput"), unit),
            fmt_pct(row.get("mfu")),
            fmt_bytes(row.get("peak_mem_bytes")),
        )
    return table


def print_summary(summary: RunSummary, console: Console | None = None) -> None:
    """Print the table, then noisy warnings, failure reasons and where the results are."""
    con = console or Console()
    if summary.rows:
        con.print(summary_table(summary))
    for row in summary.noisy:
        why = row.get("reason") or "CI wider than the target"
        con.print(
            f"[bold yellow]WARNING[/]: {escape(_label(summary, row))} is too noisy to trust ({escape(why)}); "
            "rerun on a quieter machine or raise --max-time",
            soft_wrap=True,
        )
    for row in summary.rows:
        if row["status"] != "ok" and row.get("reason"):
            style = _STATUS_STYLE.get(row["status"], "white")
            con.print(
                f"[{style}]{row['status']}[/] {escape(_label(summary, row))}: {escape(str(row['reason']))}",
                soft_wrap=True,
            )
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items()))
    if summary.resumed:
        counts += f"{', ' if counts else ''}{summary.resumed} already done (--resume)"
    con.print(
        f"{len(summary.rows)} row(s) written ({counts or 'none'}) to {escape(str(summary.csv_path))}",
        soft_wrap=True,
    )
    if summary.samples_path.exists():
        con.print(f"raw samples: {escape(str(summary.samples_path))}", soft_wrap=True)
