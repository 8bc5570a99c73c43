"""``dlbench baseline check|update|ratios``: what CI holds the tree to (exact figures, timing ratios).

The files are ``results/baseline/{baseline,perf}.json`` of the checkout the command runs in (or
``--path``), never the installed package's; they are read, checked (kind, version, types, ranges,
what measured them) and written by ``bench.gate.baseline``, through ``bench.outputs``.

Exit codes of ``baseline check``: 0 every figure equal, 1 some figure differs (each named), 2 no,
unreadable or foreign baseline (another torch build or machine kind, unless ``--force``).
``baseline ratios``: 0 every timing ratio within its reference's tolerance (or faster), 1 a check
significantly slower than its reference beyond the tolerance, or one that could not measure (each
named), 2 a bad, missing or stale reference file, one measured under another torch build, thread
count or machine kind (unless ``--force``), or an unknown ``--check``; 130 SIGINT, 143 SIGTERM.
``baseline update``: 0 written, 1 the write failed (the old file is whole), 2 bad input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from bench.cli import app, usage_error
from bench.cli.gate import FORMATS, _sigterm_as_interrupt
from bench.signals import exit_code

baseline_app = typer.Typer(
    help=(
        "What CI holds the tree to: exact figures (FLOPs per step, tracked bytes per phase) against "
        "results/baseline/baseline.json, and interleaved timing ratios against results/baseline/perf.json."
    ),
    no_args_is_help=True,
)
app.add_typer(baseline_app, name="baseline")

_WHERE = "results/baseline/ of the checkout you are in (the nearest folder above holding .git)"
_BASELINE_OPT = typer.Option(
    "--baseline", "--path", help=f"The baseline file. \\[default: baseline.json in {_WHERE}]"
)
_FORCE_OPT = typer.Option(
    "--force",
    help="Check against a file measured under another torch build, thread count or machine kind "
    "(refused by default: exit 2); each difference is printed as a note.",
)


def _write_failed(exc: Exception, what: str = "the file") -> typer.Exit:
    typer.secho(f"Error: {exc}; {what} was not changed", err=True, fg=typer.colors.RED)
    return typer.Exit(1)


@baseline_app.command("check")
def baseline_check_cmd(
    baseline: Annotated[Path | None, _BASELINE_OPT] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
    force: Annotated[bool, _FORCE_OPT] = False,
) -> None:
    """Recompute the figures and compare them exactly; exit 1 naming every figure that differs."""
    from bench.errors import UsageError
    from bench.gate.baseline import check_baseline

    try:
        report = check_baseline(baseline, force=force)
    except UsageError as exc:
        raise usage_error(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for line in report.lines():
            typer.echo(line)
    raise typer.Exit(0 if report.ok else 1)


_PERF_OPT = typer.Option("--perf", help=f"The reference ratios file. \\[default: perf.json in {_WHERE}]")
_PERF_PATH_OPT = typer.Option(
    "--perf", "--path", help=f"The reference ratios file. \\[default: perf.json in {_WHERE}]"
)
_CHECK_OPT = typer.Option(
    "--check",
    help="Only this timing check: attention, optimizer or checkpointing (repeatable). \\[default: all]",
)


_STATUS_STYLE = {
    "ok": "green",
    "faster": "bold green",
    "slower": "bold red",
    "unclear": "bold red",
    "error": "bold red",
}


def _fmt_ci(o: dict[str, Any]) -> str:
    if o["ratio"] is None:
        return "-"
    lo = f"{o['ci_low']:.3f}" if o["ci_low"] is not None else "0"
    hi = f"{o['ci_high']:.3f}" if o["ci_high"] is not None else "inf"
    return f"{o['ratio']:.3f} [{lo}, {hi}]"


def _sides(o: dict[str, Any]) -> str:
    """``NEW impl=dlcore, BASE impl=torch (seq_len=64)``: what a check compares."""
    new, base = (" ".join(f"{k}={v}" for k, v in o[side].items()) for side in ("new", "base"))
    both = " ".join(f"{k}={v}" for k, v in o["params"].items())
    return f"NEW {new}, BASE {base}" + (f" ({o['scenario']} {o['preset']} {both})" if both else "")


def _outcome_line(o: Any) -> str:
    """One line per judged check, on stderr as it finishes (CI logs)."""
    d = o.to_dict()
    return (
        f"{d['name']}: NEW/BASE {_fmt_ci(d)}, reference {d['reference']:.3f}, limit {d['limit']:.3f}: "
        f"{d['status']} ({d['elapsed_s']:.1f} s)"
    )


def render_ratios_markdown(d: dict[str, Any]) -> str:
    """``dlbench baseline ratios --format markdown``: one row per check, then the verdict."""
    lines = [
        "### dlbench baseline ratios",
        "",
        "| check | compares | NEW/BASE [95% CI] | reference | limit | status |",
        "|---|---|---|---|---|---|",
    ]
    for o in d["checks"]:
        lines.append(
            f"| {o['name']} | {_sides(o)} | {_fmt_ci(o)} | {o['reference']:.3f} | {o['limit']:.3f} "
            f"(+{o['tolerance']:.0%}) | **{o['status']}** |"
        )
    lines.append("")
    for o in d["checks"]:
        if o["note"]:
            lines.append(f"- {o['name']}: {o['note']}")
    lines += [f"- note: {n}" for n in d["notes"]]
    verdict = "passed" if d["ok"] else "FAILED: " + ", ".join(d["failed"])
    lines += ["", f"**ratios check {verdict}** (reference file `{d['path']}`)"]
    return "\n".join(lines) + "\n"


def print_ratios_table(d: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table(title="dlbench baseline ratios: NEW (dlcore side) / BASE (torch reference)")
    table.add_column("check", style="bold", no_wrap=True)
    table.add_column("NEW/BASE [95% CI]", justify="right", no_wrap=True)
    table.add_column("reference", justify="right")
    table.add_column("limit", justify="right")
    table.add_column("status", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    for o in d["checks"]:
        style = _STATUS_STYLE.get(o["status"], "white")
        table.add_row(
            o["name"],
            _fmt_ci(o),
            f"{o['reference']:.3f}",
            f"{o['limit']:.3f}",
            f"[{style}]{o['status']}[/]",
            f"{o['elapsed_s']:.1f} s",
        )
    console.print(table)
    for o in d["checks"]:
        console.print(f"{o['name']}: {_sides(o)}", style="dim")
    for o in d["checks"]:
        if o["note"]:
            console.print(f"{o['name']}: {o['note']}", style="dim" if o["status"] == "ok" else None)
    for n in d["notes"]:
        console.print(f"note: {n}", style="yellow")
    if d["ok"]:
        console.print("[green]ratios check passed[/]")
    else:
        console.print(f"[bold red]ratios check FAILED[/]: {', '.join(d['failed'])}")


@baseline_app.command("ratios")
def baseline_ratios_cmd(
    perf: Annotated[Path | None, _PERF_PATH_OPT] = None,
    check: Annotated[list[str] | None, _CHECK_OPT] = None,
    slices: Annotated[
        int | None, typer.Option("--slices", help="Measured slices per worker pair (overrides each check's).")
    ] = None,
    fmt_: Annotated[str, typer.Option("--format", help="table, markdown or json.")] = "table",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Also write the result to FILE (--format; table as markdown); checked before the checks "
            "run, replaced atomically.",
        ),
    ] = None,
    force: Annotated[bool, _FORCE_OPT] = False,
) -> None:
    """Timing ratios (dlcore vs its torch reference), interleaved, against results/baseline/perf.json.

    Each check is a `dlbench gate` between two configurations of this tree: dlcore attention vs
    nn.MultiheadAttention, AdamWWithWarmup vs fused AdamW, checkpointing full vs none. A check fails
    when its ratio's CI lies above reference x (1 + tolerance). Exit 1 naming the failed checks.
    """
    from bench.errors import UsageError
    from bench.gate import WorkerError
    from bench.gate.baseline import check_measured_with, default_perf_path, load_references, measured_here
    from bench.gate.perf import run_checks
    from bench.outputs import OutputWriteError, check_output_path

    if fmt_ not in FORMATS:
        raise usage_error(f"--format: unknown format {fmt_!r}; expected one of {list(FORMATS)}")

    def progress(o: Any) -> None:
        typer.echo(_outcome_line(o), err=True)

    try:
        path = perf if perf is not None else default_perf_path()
        refuse = check_measured_with(
            load_references(path), measured_here(), path=path, flag="--perf", force=force
        )
        for n in refuse:
            typer.echo(f"note: {n}", err=True)
        if out is not None:
            check_output_path(out, flag="--out", inputs=[path])
        with _sigterm_as_interrupt():
            report = run_checks(path, check, slices=slices, on_outcome=progress)
    except KeyboardInterrupt as exc:
        typer.secho("interrupted: workers stopped", err=True)
        raise typer.Exit(exit_code(exc)) from None
    except UsageError as exc:
        raise usage_error(str(exc)) from None
    except WorkerError as exc:  # run_checks turns these into "error" outcomes; defensive
        typer.secho(f"Error: the gate could not measure: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    try:
        _emit(report.to_dict(), fmt_, out)
    except OutputWriteError as exc:
        raise _write_failed(exc, "--out") from None
    raise typer.Exit(report.exit_code)


def _emit(d: dict[str, Any], fmt_: str, out: Path | None) -> None:
    """Print the ratios as a table, markdown or JSON; write ``--out`` (a table as markdown) atomically."""
    from bench.outputs import write_atomic

    text = json.dumps(d, indent=2) + "\n" if fmt_ == "json" else render_ratios_markdown(d)
    if fmt_ == "table":
        from rich.console import Console

        print_ratios_table(d, Console())
    else:
        typer.echo(text, nl=False)
    if out is not None:
        write_atomic(out, text)


@baseline_app.command("update")
def baseline_update_cmd(
    baseline: Annotated[
        Path | None,
        typer.Option("--baseline", help=f"The baseline file. \\[default: baseline.json in {_WHERE}]"),
    ] = None,
    ratios: Annotated[
        bool,
        typer.Option(
            "--ratios",
            help="Re-measure the timing reference ratios (perf.json) instead of the exact figures.",
        ),
    ] = False,
    perf: Annotated[Path | None, _PERF_OPT] = None,
    check: Annotated[list[str] | None, _CHECK_OPT] = None,
    runs: Annotated[
        int, typer.Option("--runs", help="--ratios: gate runs per check; the median is kept.")
    ] = 3,
    slices: Annotated[
        int | None,
        typer.Option("--slices", help="--ratios: measured slices per worker pair (overrides each check's)."),
    ] = None,
    path: Annotated[
        Path | None,
        typer.Option(
            "--path", help="The file this update writes (baseline.json, or perf.json with --ratios)."
        ),
    ] = None,
) -> None:
    """Recompute and rewrite baseline.json, or with --ratios re-measure perf.json (review the diff, commit).

    Measure the ratios on a quiet machine of the kind CI runs on: they are the references a CI run
    is held to, within each check's tolerance.
    """
    from bench.errors import UsageError
    from bench.outputs import OutputWriteError

    if path is not None and (baseline is not None or perf is not None):
        raise usage_error("--path is --baseline (or --perf with --ratios): give one of them")
    if not ratios:
        if perf is not None or check or slices is not None:
            raise usage_error("--perf, --check and --slices apply to --ratios only")
        from bench.gate.baseline import update_baseline

        try:
            with _sigterm_as_interrupt():
                written, data = update_baseline(baseline if path is None else path)
        except UsageError as exc:
            raise usage_error(str(exc)) from None
        except OutputWriteError as exc:
            raise _write_failed(exc) from None
        except KeyboardInterrupt as exc:
            typer.secho("interrupted: the file was not written", err=True)
            raise typer.Exit(exit_code(exc)) from None
        n = sum(len(c["figures"]) for c in data["cases"].values())
        typer.echo(
            f"wrote {written}: {len(data['cases'])} cases, {n} figures (torch {data['torch_version']})"
        )
        return
    if baseline is not None:
        raise usage_error("--baseline applies to the exact figures; with --ratios give --perf FILE")
    perf = perf if path is None else path
    from bench.gate import WorkerError
    from bench.gate.perf import update_references

    def progress(c: Any, i: int, res: Any) -> None:
        d = res.to_dict()
        typer.echo(f"{c.name} run {i + 1}/{runs}: NEW/BASE {_fmt_ci(d)} ({res.elapsed_s:.1f} s)", err=True)

    try:
        with _sigterm_as_interrupt():
            written, doc = update_references(perf, check, runs=runs, slices=slices, on_run=progress)
    except KeyboardInterrupt as exc:
        typer.secho("interrupted: workers stopped; the file was not written", err=True)
        raise typer.Exit(exit_code(exc)) from None
    except UsageError as exc:
        raise usage_error(str(exc)) from None
    except OutputWriteError as exc:
        raise _write_failed(exc) from None
    except WorkerError as exc:
        typer.secho(
            f"Error: the gate could not measure: {exc}; the file was not written",
            err=True,
            fg=typer.colors.RED,
        )
        raise typer.Exit(1) from None
    for name, e in doc["checks"].items():
        typer.echo(f"  {name}: reference {e['reference']:.4f} (tolerance {e['tolerance']:.0%})")
    typer.echo(
        f"wrote {written}: {len(doc['checks'])} checks "
        f"(torch {doc['torch_version']}, {doc['threads']} threads)"
    )
