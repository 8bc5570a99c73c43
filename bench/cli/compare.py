"""``dlbench compare``: NEW vs BASE per configuration, or one set of results along an axis.

Spellings:

    dlbench compare BASE NEW                       # two files or directories
    dlbench compare BASE... --new NEW [--new ...]  # several inputs a side (e.g. runs of separate processes)
    dlbench compare FILE... --by precision [--base fp32]   # within one sweep: each value vs the base

Inputs are results CSVs (their ``.samples.jsonl`` sidecars are read beside them), directories of
them, and pytest-benchmark JSON files. Exit codes: 0 done (whatever the verdicts); 1 only with
``--fail-on-regression`` and some configuration significantly slower beyond ``--threshold``;
2 bad input (one line on stderr: the file and what is wrong with it).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Annotated, Any

import typer

from bench.cli import app, usage_error

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


def _table(comparison: Any) -> Any:
    """The rich table a person reads: one line per configuration."""
    from rich import box
    from rich.table import Table

    from bench.report.compare_format import display_rows

    title = "dlbench compare" + (f" --by {comparison.by['axis']}" if comparison.by else "")
    rows = display_rows(comparison)
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
        style = _VERDICT_STYLE.get(r["verdict"], "white")
        values = "-" if r["base"] == "-" else f"{r['base']} → {r['new']}"
        cells = [r["change"], values, r["p"], *([r["covers"]] if show_covers else [])]
        table.add_row(r["config"], f"[{style}]{r['verdict']}[/]", *cells, r["memory_short"])
    return table


def _print_table(comparison: Any, console: Any) -> None:
    from bench.report.compare_format import footer_lines, header_lines

    for line in header_lines(comparison):
        style = "bold yellow" if line.startswith("ENVIRONMENTS DIFFER") else None
        console.print(line, style=style, soft_wrap=True, highlight=False, markup=False)
    console.print(_table(comparison))
    for line in footer_lines(comparison):
        console.print(line, soft_wrap=True, highlight=False, markup=False)


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
    metric: Annotated[str, typer.Option("--metric", help="time, throughput, memory, mfu.")] = "time",
    threshold: Annotated[
        str, typer.Option("--threshold", help="Changes smaller than this are 'same' (5% or 0.05).")
    ] = "5%",
    fmt: Annotated[str, typer.Option("--format", help="table, markdown, json.")] = "table",
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the --format output to this file (table: plain text).")
    ] = None,
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
            result = compare_by(paths, by, base_value, metric=metric, threshold=threshold)
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
            result = compare(
                base_paths,
                new_paths,
                metric=metric,
                threshold=threshold,
                allow_env_mismatch=allow_env_mismatch,
            )
    except CompareInputError as exc:
        raise usage_error(" ".join(str(exc).split())) from None

    console = Console()
    if out is not None:
        if fmt == "json":
            text = to_json(result)
        elif fmt == "markdown":
            text = to_markdown(result)
        else:
            rec = Console(record=True, width=160, file=io.StringIO())
            _print_table(result, rec)
            text = rec.export_text()
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise usage_error(f"--out: cannot write {out}: {exc.strerror or exc}") from None
        _print_table(result, console)
        console.print(f"wrote {out}", soft_wrap=True, highlight=False)
    elif fmt == "json":
        typer.echo(to_json(result), nl=False)
    elif fmt == "markdown":
        typer.echo(to_markdown(result), nl=False)
    else:
        _print_table(result, console)

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
