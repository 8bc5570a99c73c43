"""``dlbench gate``: interleaved BASE/NEW timing (``dlbench baseline`` is ``bench.cli.baseline``).

Exit codes of ``gate``: 0 no significant regression beyond ``--threshold`` (verdict faster, same, or
inconclusive with the median ratio within it); 1 a regression (verdict "slower"), an inconclusive
result whose median ratio is beyond the threshold, or the gate could not measure (a worker died or
timed out: a gate fails closed); 2 bad input (nothing started); 130 SIGINT, 143 SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from bench.cli import app, usage_error
from bench.cli.options import NAMED_PARAMS, Techniques, technique_options

FORMATS = ("table", "markdown", "json")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a cancelled CI job) interrupts like Ctrl-C, once: a second signal cannot cut the
    cleanup short (``bench.signals.interrupts``), so workers and temporary trees are always removed."""
    from bench.signals import interrupts

    with interrupts(ignore_after=True):
        yield


def _progress(console: Any) -> Any:
    """A rich progress bar on stderr fed by ``run_gate``'s (stage, done, total) callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task("starting workers", total=None)
    labels = {"start": "starting workers", "warmup": "warm-up slices", "measure": "interleaved slices"}

    def update(stage: str, done: int, total: int) -> None:
        bar.update(task, description=labels.get(stage, stage), completed=done, total=total)

    return bar, update


def _plain_progress() -> Callable[[str, int, int], None]:
    """Progress as plain lines on stderr when it is not a terminal (CI logs): each stage once, then
    the measured slices at every quarter."""
    said: set[str] = set()
    quarters: set[int] = set()

    def update(stage: str, done: int, total: int) -> None:
        if stage == "start":
            if "start" not in said:
                typer.echo(f"gate: starting {total} workers", err=True)
        elif stage == "warmup":
            if "warmup" not in said:
                typer.echo("gate: workers ready; warm-up slices", err=True)
        elif stage == "measure":
            if "measure" not in said:
                typer.echo(f"gate: measuring interleaved slices ({total} in all)", err=True)
            q = 4 * done // max(1, total)
            if q not in quarters and q > 0:
                quarters.add(q)
                typer.echo(f"gate: slice {done}/{total}", err=True)
        said.add(stage)

    return update


_VERDICT_STYLE = {"slower": "bold red", "faster": "bold green", "same": "green", "inconclusive": "yellow"}


def print_table(d: dict[str, Any], console: Any) -> None:
    """The gate result for people: both sides, the ratio with its CI, the verdict."""
    from rich.markup import escape
    from rich.table import Table

    from bench.gate.interleave import FAIL_CLOSED_TEXT, VERDICT_TEXT, built_text, fmt_ratio_ci
    from bench.report.format import fmt

    cfg = d["config"]
    run = " ".join(str(cfg[k]) for k in ("mode", "precision", "checkpointing") if k in cfg)
    table = Table(title=f"dlbench gate: {d['scenario']} ({cfg['preset']}, {run}, {cfg['device']})")
    table.add_column("side", style="bold")
    table.add_column("source")
    table.add_column("median step", justify="right")
    table.add_column("built")
    for name in ("base", "new"):
        side = d[name]
        table.add_row(
            name.upper(),
            escape(side["label"]),
            f"{fmt(side['median_ms'], '.4g')} ms",
            escape(built_text(side)),
        )
    console.print(table)
    p = d.get("p_value")
    console.print(
        f"NEW/BASE {fmt_ratio_ci(d)}  ({d['confidence']:.0%} CI, {d['n_slices']} slices, "
        f"p={fmt(p, '.3g') if p is not None else '-'}, threshold {d['threshold']:.1%}, "
        f"{cfg['pairs']} pairs x {cfg['slices']} x {cfg['slice_time_s']:g} s, {d['elapsed_s']:.1f} s)"
    )
    if len(d.get("per_pair", [])) > 1:
        console.print("per pair: " + ", ".join(f"{p_['ratio']:.3f}" for p_ in d["per_pair"]), style="dim")
    for note in d.get("notes", []):
        console.print(f"note: {escape(note)}", style="dim")
    style = _VERDICT_STYLE.get(d["verdict"], "white")
    console.print(f"[{style}]{d['verdict']}[/]: {VERDICT_TEXT.get(d['verdict'], '')}")
    if d.get("fail_closed"):
        console.print(f"[bold red]{FAIL_CLOSED_TEXT}[/]")


_GATE_TECHNIQUES = (
    "mode", "precision", "checkpointing", "compile", *NAMED_PARAMS, "params", "preset", "device",
)  # fmt: skip


@app.command("gate")
@technique_options(*_GATE_TECHNIQUES, grid=False, shown_defaults={"mode": "train"})
def gate_cmd(
    scenario: Annotated[
        str,
        typer.Argument(
            help="Scenario: a built-in name (see `dlbench list`) or a model of your own "
            "(path/to/file.py:factory, package.module:factory, timm:<model>, hf:<model type>, an entry "
            "point; loading a factory runs its code). Both trees must know the name."
        ),
    ],
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            help="BASE: a git ref (exported with git archive into a folder dlbench owns; nothing is "
            "written into the repository) or a directory; an empty value is refused. \\[default: .]",
        ),
    ] = None,
    new: Annotated[
        str | None, typer.Option("--new", help="NEW: a git ref or a directory. \\[default: .]")
    ] = None,
    base_param: Annotated[
        list[str] | None,
        typer.Option(
            "--base-param",
            help="KEY=VALUE for BASE only (a parameter, mode, precision, checkpointing or compile).",
        ),
    ] = None,
    new_param: Annotated[
        list[str] | None,
        typer.Option(
            "--new-param",
            help="KEY=VALUE for NEW only (a parameter, mode, precision, checkpointing or compile): "
            "--new-param compile=default times compiled against eager.",
        ),
    ] = None,
    threshold: Annotated[
        str, typer.Option("--threshold", help="Slowdown that counts as a regression: 5% or 0.05.")
    ] = "5%",
    slices: Annotated[
        int, typer.Option("--slices", help="Measured slices per worker pair and side (x --pairs >= 6).")
    ] = 12,
    slice_time: Annotated[float, typer.Option("--slice-time", help="Seconds per slice.")] = 0.25,
    pairs: Annotated[int, typer.Option("--pairs", help="BASE/NEW worker process pairs.")] = 2,
    aa: Annotated[
        bool,
        typer.Option("--aa", help="Allow BASE and NEW to be identical (an A/A check of the gate's noise)."),
    ] = False,
    fmt_: Annotated[str, typer.Option("--format", help="table, markdown or json.")] = "table",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Also write the result to FILE (--format; table as markdown)."),
    ] = None,
    *,
    techniques: Techniques,
) -> None:
    """Is NEW slower than BASE? Both timed interleaved, in the same time windows, on this machine.

    Exit 1 when the slowdown is significant (the CI of the median slice ratio lies above 1) and
    beyond --threshold, or inconclusive with the median ratio beyond it (the gate fails closed), or
    when it could not measure; 0 otherwise; 2 on bad input (fewer than 6 slice ratios, an empty
    --base/--new, sides that built different configurations unasked); 130/143 on SIGINT/SIGTERM.
    """
    from bench.errors import UsageError
    from bench.gate import WorkerError, plan_gate, render_markdown, run_gate
    from bench.outputs import check_output_path
    from bench.signals import exit_code

    if fmt_ not in FORMATS:
        raise usage_error(f"--format: unknown format {fmt_!r}; expected one of {list(FORMATS)}")
    try:
        if out is not None:
            out = check_output_path(out, flag="--out")
        plan = plan_gate(
            scenario,
            base=base,
            new=new,
            params=techniques.assignments(),  # -p and --batch-size ...: both sides
            base_params=base_param,
            new_params=new_param,
            preset=techniques.get("preset"),
            mode=techniques.get("mode"),
            precision=techniques.get("precision"),
            checkpointing=techniques.get("checkpointing"),
            compile=techniques.get("compile"),
            device=techniques.get("device"),
            threshold=threshold,
            slices=slices,
            slice_time_s=slice_time,
            pairs=pairs,
            aa=aa,
        )
    except UsageError as exc:
        raise usage_error(str(exc)) from None

    from rich.console import Console

    err = Console(stderr=True)
    bar: Any = contextlib.nullcontext()
    update = _plain_progress()
    if err.is_terminal:
        bar, update = _progress(err)
    try:
        with _sigterm_as_interrupt(), bar:
            result = run_gate(plan, progress=update)
    except KeyboardInterrupt as exc:
        typer.secho("interrupted: workers stopped, temporary trees removed", err=True)
        raise typer.Exit(exit_code(exc)) from None
    except UsageError as exc:
        raise usage_error(str(exc)) from None
    except (WorkerError, RuntimeError) as exc:  # a worker died or timed out; a ref could not be exported
        typer.secho(f"Error: the gate could not measure: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    _emit(result.to_dict(), fmt_, out, markdown=render_markdown, table=print_table)
    raise typer.Exit(result.exit_code)


def _emit(
    d: dict[str, Any],
    fmt_: str,
    out: Path | None,
    *,
    markdown: Callable[[dict[str, Any]], str],
    table: Callable[[dict[str, Any], Any], None],
) -> None:
    """Print a result as a rich table, markdown or JSON, and write it to ``--out`` (a table as markdown)."""
    text = json.dumps(d, indent=2) + "\n" if fmt_ == "json" else markdown(d)
    if fmt_ == "table":
        from rich.console import Console

        table(d, Console())
    else:
        sys.stdout.write(text)
    _write_out(out, text)


def _write_out(out: Path | None, text: str) -> None:
    """``--out``, written atomically (a reader never sees half of it; a failure keeps the old file)."""
    if out is None:
        return
    from bench.outputs import write_atomic

    try:
        write_atomic(out, text)
    except (OSError, RuntimeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        typer.secho(f"Error: --out: cannot write {out}: {why}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
