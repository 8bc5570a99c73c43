"""``dlbench report`` (index.html, summary.md and figures from result CSVs) and ``dlbench gpu-summary``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bench.cli import app, usage_error
from bench.signals import exit_code

# build_report names its arguments; the CLI names the flags
_FLAGS = {
    "results:": "RESULTS:",
    "out_dir:": "--out:",
    "compare_json:": "--compare:",
    "profile_dirs:": "--profile:",
}


def _flag_names(message: str) -> str:
    """``message`` on one line, its leading argument name as the command line spells it."""
    line = " ".join(message.split())
    for name, flag in _FLAGS.items():
        if line.startswith(name):
            return flag + line[len(name) :]
    return line


# one line per paragraph (typer keeps line breaks)
_HELP = "\n\n".join(
    [
        "Write a report of result CSVs: figures (PNG and SVG), one self-contained index.html and "
        "summary.md (for a pull request).",
        "The figures are drawn for whatever the data holds: throughput vs batch size / sequence "
        "length, AMP speed-up and memory ratio, the checkpointing trade-off, per-phase memory by "
        "category, MFU, scaling efficiency, compare's ratios. One whose data is missing is left out "
        "with a note. The page also has the summary table, the environment, the rows that did not run "
        "with their reasons and the profile summaries (--profile).",
        "-o owns what it writes and nothing else: it must be a new or empty folder, or a report "
        "dlbench wrote there before (its .dlbench-report.json lists the files it wrote); a folder of "
        "yours, /, your home or the current folder is refused. The report is built beside it and "
        "swapped in whole, so an interrupted report leaves the previous one as it was.",
        "Bad input (no CSV, a file the results loader refuses -- the same checks as compare --, a file "
        "given twice or with no ok rows, an -o that may not be used) exits 2 and writes nothing; a "
        "failed write (a full disk) exits 1.",
    ]
)


@app.command("report", help=_HELP)
def report_cmd(
    results: Annotated[
        list[Path] | None, typer.Argument(help="Result CSVs written by `dlbench run` (one or more).")
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder to write the report into: index.html, summary.md, figures/ (a new or empty folder, "
            "or an earlier report).",
        ),
    ] = Path("reports/report"),
    compare: Annotated[
        list[Path] | None,
        typer.Option(
            "--compare",
            help="JSON of `dlbench compare --format json --out FILE`: a forest plot each. Repeatable.",
        ),
    ] = None,
    profile: Annotated[
        list[Path] | None,
        typer.Option(
            "--profile",
            help=(
                "Folder written by `dlbench profile` (its summary.json), or a --parallel profile's "
                "folder (one profile per rank<r>/). Repeatable."
            ),
        ),
    ] = None,
    title: Annotated[str, typer.Option("--title", help="Title of the report.")] = "dlbench report",
) -> None:
    """Write a report of result CSVs (the help text is ``_HELP``)."""
    from bench.cli.gate import _sigterm_as_interrupt
    from bench.outputs import OutputWriteError
    from bench.report.build import build_report

    try:
        with _sigterm_as_interrupt():  # SIGTERM cleans up like Ctrl-C: the half-built folder is removed
            res = build_report(
                list(results or []),
                out,
                compare_json=list(compare or []),
                profile_dirs=list(profile or []),
                title=title,
            )
    except ValueError as exc:  # bench.errors.UsageError is one
        raise usage_error(_flag_names(str(exc))) from None
    except OutputWriteError as exc:
        typer.secho(f"Error: --out: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    except KeyboardInterrupt as exc:
        typer.secho("interrupted: the previous report (if any) is unchanged", err=True)
        raise typer.Exit(exit_code(exc)) from None
    typer.echo(f"wrote {res.index_html}")
    typer.echo(f"wrote {res.summary_md}")
    if res.figures:
        names = ", ".join(f.name for f in res.figures)
        typer.echo(f"{len(res.figures)} figure(s) in {res.out_dir / 'figures'}: {names}")
    else:
        typer.echo("no figure drawn")
    for name, reason in res.skipped:
        typer.echo(f"note: {name} figure left out: {reason}")
    for note in res.notes:
        typer.echo(f"note: {note}")


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
    peak_values: dict[str, float] = {}
    if peaks is not None:
        if not peaks.is_file():
            raise usage_error(f"--peaks: {peaks} is not a file")
        try:
            loaded = json.loads(peaks.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise usage_error(f"--peaks: {peaks} is not readable JSON ({exc})") from None
        if not isinstance(loaded, dict):
            raise usage_error(f"--peaks: {peaks} is not a JSON object of bf16_tflops, fp32_tflops, copy_gbs")
        peak_values = {k: float(v) for k, v in loaded.items() if isinstance(v, int | float)}
    try:
        lines = summarize(folder, peak_values)
    except ValueError as exc:  # bench.errors.UsageError: a CSV the results loader refuses
        raise usage_error(" ".join(str(exc).split())) from None
    for line in lines:
        typer.echo(line)
