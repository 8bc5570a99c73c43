"""``dlbench report`` (markdown tables from result CSVs) and ``dlbench gpu-summary``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bench.cli import app, usage_error


@app.command("report")
def report_cmd(
    csv: Annotated[list[Path], typer.Argument(help="Result CSVs written by `dlbench run`.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder to write the report into (summary.md).")
    ] = Path("reports/report"),
    title: Annotated[str, typer.Option("--title", help="Title of the report.")] = "dlbench report",
) -> None:
    """Write a report of result CSVs: summary.md with one table per file and the rows that did not run."""
    from bench.report.markdown import write_report

    missing = [str(p) for p in csv if not p.is_file()]
    if missing:
        raise usage_error(f"csv: no such file(s): {missing}")
    if out.exists() and not out.is_dir():
        raise usage_error(f"--out: {out} is a file; give a folder for the report")
    typer.echo(write_report(csv, out / "summary.md", title))


@app.command("gpu-summary")
def gpu_summary_cmd(
    folder: Annotated[Path, typer.Argument(help="Folder holding the GPU run's CSVs.")],
    peaks: Annotated[
        Path | None, typer.Option("--peaks", help="JSON with bf16_tflops, fp32_tflops, copy_gbs.")
    ] = None,
) -> None:
    """Print the figures of the GPU truth run (bench/gpu_check.sh) from its CSVs."""
    from bench.report.gpu_summary import summarize

    if not folder.is_dir():
        raise usage_error(f"folder: {folder} is not a folder")
    peak_values = json.loads(peaks.read_text()) if peaks and peaks.is_file() else {}
    for line in summarize(folder, peak_values):
        typer.echo(line)
