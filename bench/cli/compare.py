"""``dlbench compare``: NEW vs BASE per configuration, or one set of results along an axis.

Spellings:

    dlbench compare BASE NEW                       # two files or directories
    dlbench compare BASE... --new NEW [--new ...]  # several inputs a side (e.g. runs of separate processes)
    dlbench compare FILE... --by precision [--base fp32]   # within one sweep: each value vs the base

Inputs are results CSVs (their ``.samples.jsonl`` sidecars are read beside them), directories of
them, and pytest-benchmark JSON files, read by the one results loader (``bench.results.loader``).
``--out`` is checked before any work (never an input, a folder or a symlink) and written
atomically (``bench.outputs``). Exit codes: 0 done (whatever the verdicts); 1 with
``--fail-on-regression`` and some configuration significantly slower beyond ``--threshold``, or
``--out`` could not be written (the previous file is unchanged); 2 bad input (one line on stderr:
the file and what is wrong with it).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Annotated, Any

import typer

from bench.cli import app, usage_error
from bench.signals import exit_code

FORMATS = ("table", "markdown", "json")
_VERDICT_STYLE = {
    "slower": "bold red",
    "faster": "bold green",
    "same": "dim",
    "inconclusive": "yellow",
    "failed": "red",
    "new": "cyan",
    "missing": "cyan",
}


#: rows the printed table and markdown show before they summarize (``--all`` shows every row)
MAX_SHOWN = 40


def _table(comparison: Any, limit: int | None) -> Any:
    """The rich table a person reads: one line per configuration (at most ``limit``)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from bench.report.compare_format import shown_rows

    title = "dlbench compare" + (f" --by {comparison.by['axis']}" if comparison.by else "")
    rows, _ = shown_rows(comparison, limit)
    # one kind of interval for every pair: said once under the table instead of on every line
    show_covers = len({r["covers"] for r in rows} - {"-"}) > 1
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("config", justify="left")
    table.add_column("verdict", justify="left", no_wrap=True)
    table.add_column("new / base [95% CI]", justify="left")
    table.add_column("base → new", justify="right")
    table.add_column("p", justify="right", no_wrap=True)
    if show_covers:
        table.add_column("CI covers", justify="left")
    table.add_column("peak mem", justify="right")
    for r in rows:
        style = _VERDICT_STYLE.get(r["verdict"].split(" ")[0], "white")
        values = "-" if r["base"] == "-" else f"{r['base']} → {r['new']}"
        cells = [r["change"], values, r["p"], *([r["covers"]] if show_covers else [])]
        # Text, not markup: a label or reason from a results file is never read as rich markup
        table.add_row(
            Text(r["config"]), Text(r["verdict"], style=style), *map(Text, cells), Text(r["memory_short"])
        )
    return table


def _print_table(comparison: Any, console: Any, limit: int | None = None) -> None:
    from bench.report.compare_format import footer_lines, header_lines, omitted_line, shown_rows

    for line in header_lines(comparison):
        style = "bold yellow" if line.startswith("ENVIRONMENTS DIFFER") else None
        console.print(line, style=style, soft_wrap=True, highlight=False, markup=False)
    console.print(_table(comparison, limit))
    shown, total = shown_rows(comparison, limit)
    if len(shown) < total:
        console.print(omitted_line(len(shown), total), soft_wrap=True, highlight=False, markup=False)
    for line in footer_lines(comparison):
        console.print(line, soft_wrap=True, highlight=False, markup=False)


def _inputs_of(paths: list[str]) -> list[Path]:
    """Every file the inputs name, with the sidecars of the CSVs: what ``--out`` must never be."""
    from bench.results.compare_inputs import expand_inputs
    from bench.results.store import samples_path_for

    files = [f for f, _ in expand_inputs(paths)]
    return files + [samples_path_for(f) for f in files if f.suffix.lower() == ".csv"]


@app.command("compare")
def compare_cmd(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            help="BASE NEW; or BASE... with --new NEW; or FILE... with --by AXIS. Results CSVs, directories "
            "of them, pytest-benchmark JSON files.",
            show_default=False,
        ),
    ] = None,
    new: Annotated[
        list[str] | None,
        typer.Option("--new", help="A NEW input (repeat for several); the arguments are BASE."),
    ] = None,
    by: Annotated[
        str | None,
        typer.Option(
            "--by",
            help="Compare within the inputs along this axis: precision, checkpointing, parallel, mode, "
            "or a parameter (seq_len, batch_size, ...).",
        ),
    ] = None,
    base_value: Annotated[
        str | None,
        typer.Option("--base", help="With --by: the base value (default: fp32, none, or the smallest)."),
    ] = None,
    metric: Annotated[
        str,
        typer.Option(
            "--metric",
            help="time, throughput, memory, mfu, energy. energy: energy_j_per_item, the joules per item over "
            "the timed steps (per item, not per step: the same ratio when items per step match, and still "
            "the same work when they do not, e.g. --by batch_size); its CI comes from per-repeat energies "
            "(--repeat rows, or several runs a side), while one reading a side gives the ratio without a CI "
            "(verdict inconclusive); verdicts read faster / slower for less / more energy; rows without "
            "energy are left out with the reason; figures from different counters (energy_source, "
            "energy_scope, energy_devices) get no ratio.",
        ),
    ] = "time",
    threshold: Annotated[
        str, typer.Option("--threshold", help="Changes smaller than this are 'same' (5% or 0.05).")
    ] = "5%",
    fmt: Annotated[str, typer.Option("--format", help="table, markdown, json.")] = "table",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write the --format output to this file (table: plain text), complete, replaced atomically. "
            "Never an input, a folder or a symlink.",
        ),
    ] = None,
    show_all: Annotated[
        bool,
        typer.Option(
            "--all",
            help=f"Print every configuration; by default the table and markdown show the first {MAX_SHOWN} "
            "(slower, failed and inconclusive first) and the verdict counts.",
        ),
    ] = False,
    allow_env_mismatch: Annotated[
        bool,
        typer.Option(
            "--allow-env-mismatch",
            help="Compare across environments (torch, device, threads, CPU); the output says they differ.",
        ),
    ] = False,
    fail_on_regression: Annotated[
        bool, typer.Option("--fail-on-regression", help="Exit 1 if a configuration is significantly slower.")
    ] = False,
) -> None:
    """Compare results: the ratio NEW / BASE per configuration with a CI that says which noise it covers."""
    from rich.console import Console

    from bench.errors import UsageError
    from bench.outputs import OutputWriteError, check_output_path, write_atomic
    from bench.report.compare_format import to_json, to_markdown
    from bench.results.compare import CompareInputError, compare, compare_by

    paths = list(inputs or [])
    try:
        if fmt not in FORMATS:
            raise CompareInputError(f"--format: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
        if by is not None:
            if new:
                raise CompareInputError("--by compares within one set of results; give no --new with it")
            if not paths:
                raise CompareInputError("give the results to compare: dlbench compare FILE... --by AXIS")
            if out is not None:
                check_output_path(out, flag="--out", inputs=_inputs_of(paths))
            result = compare_by(
                paths,
                by,
                base_value,
                metric=metric,
                threshold=threshold,
                allow_env_mismatch=allow_env_mismatch,
            )
        else:
            if base_value is not None:
                raise CompareInputError("--base goes with --by (the base value of the axis)")
            if new:
                base_paths, new_paths = paths, list(new)
                if not base_paths:
                    raise CompareInputError("give BASE before --new: dlbench compare BASE... --new NEW...")
            elif len(paths) == 2:
                base_paths, new_paths = [paths[0]], [paths[1]]
            else:
                raise CompareInputError(
                    f"expected BASE NEW, BASE... --new NEW..., or FILE... --by AXIS; got {len(paths)} "
                    "input(s) and no --new"
                )
            if out is not None:
                check_output_path(out, flag="--out", inputs=_inputs_of([*base_paths, *new_paths]))
            result = compare(
                base_paths,
                new_paths,
                metric=metric,
                threshold=threshold,
                allow_env_mismatch=allow_env_mismatch,
            )
    except (CompareInputError, UsageError) as exc:
        raise usage_error(" ".join(str(exc).split())) from None

    console = Console()
    limit = None if show_all else MAX_SHOWN
    if out is not None:
        if fmt == "json":
            text = to_json(result)
        elif fmt == "markdown":
            text = to_markdown(result)
        else:
            rec = Console(record=True, width=160, file=io.StringIO())
            _print_table(result, rec)
            text = rec.export_text()
        from bench.cli.gate import _sigterm_as_interrupt

        try:
            with _sigterm_as_interrupt():
                write_atomic(out, text)
        except OutputWriteError as exc:
            typer.secho(f"Error: --out: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(1) from None
        except KeyboardInterrupt as exc:
            typer.secho(f"interrupted: {out} was not changed", err=True)
            raise typer.Exit(exit_code(exc)) from None
        _print_table(result, console, limit)
        console.print(f"wrote {out}", soft_wrap=True, highlight=False, markup=False)
    elif fmt == "json":
        typer.echo(to_json(result), nl=False)
    elif fmt == "markdown":
        typer.echo(to_markdown(result, limit=limit), nl=False)
    else:
        _print_table(result, console, limit)

    noisy = result.noisy_regressions
    if noisy:
        names = ", ".join(p.label for p in noisy[:5]) + (", ..." if len(noisy) > 5 else "")
        typer.secho(
            f"WARNING: {len(noisy)} configuration(s) would be slower but rest on rows flagged noisy "
            f"(verdict inconclusive): {names}; rerun them on a quiet machine",
            err=True,
            fg=typer.colors.YELLOW,
        )
    regressions = result.regressions
    if fail_on_regression and regressions:
        names = ", ".join(p.label for p in regressions[:5]) + (", ..." if len(regressions) > 5 else "")
        typer.secho(
            f"REGRESSION: {len(regressions)} configuration(s) significantly worse beyond "
            f"{result.threshold:.1%}: {names}",
            err=True,
            fg=typer.colors.RED,
        )
        raise typer.Exit(1)
