"""``dlbench gate``: interleaved BASE/NEW timing (``dlbench baseline`` is ``bench.cli.baseline``).

Exit codes of ``gate``: 0 no significant regression beyond ``--threshold`` (verdict faster, same or
inconclusive); 1 a regression (verdict "slower"), or the gate could not measure (a worker died or
timed out: a gate fails closed); 2 bad input (nothing started); 130 interrupted.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from bench.cli import app, usage_error

FORMATS = ("table", "markdown", "json")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a cancelled CI job) raises KeyboardInterrupt, so workers and worktrees are cleaned up."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. inside a test runner thread)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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


_VERDICT_STYLE = {"slower": "bold red", "faster": "bold green", "same": "green", "inconclusive": "yellow"}


def print_table(d: dict[str, Any], console: Any) -> None:
    """The gate result for people: both sides, the ratio with its CI, the verdict."""
    from rich.table import Table

    from bench.gate.interleave import VERDICT_TEXT, fmt_ratio_ci
    from bench.report.format import fmt

    cfg = d["config"]
    run = " ".join(str(cfg[k]) for k in ("mode", "precision", "checkpointing") if k in cfg)
    table = Table(title=f"dlbench gate: {d['scenario']} ({cfg['preset']}, {run}, {cfg['device']})")
    table.add_column("side", style="bold")
    table.add_column("source")
    table.add_column("median step", justify="right")
    for name in ("base", "new"):
        side = d[name]
        table.add_row(name.upper(), side["label"], f"{fmt(side['median_ms'], '.4g')} ms")
    console.print(table)
    p = d.get("p_value")
    console.print(
        f"NEW/BASE {fmt_ratio_ci(d)}  ({d['confidence']:.0%} CI, {d['n_slices']} slices, "
        f"p={fmt(p, '.3g') if p is not None else '-'}, threshold {d['threshold']:.1%}, "
        f"{cfg['pairs']} pairs x {cfg['slices']} x {cfg['slice_time_s']:g} s, {d['elapsed_s']:.1f} s)"
    )
    if len(d.get("per_pair", [])) > 1:
        console.print("per pair: " + ", ".join(f"{p_['ratio']:.3f}" for p_ in d["per_pair"]), style="dim")
    style = _VERDICT_STYLE.get(d["verdict"], "white")
    console.print(f"[{style}]{d['verdict']}[/]: {VERDICT_TEXT.get(d['verdict'], '')}")


@app.command("gate")
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
        typer.Option("--base", help="BASE: a git ref (temporary worktree) or a directory. \\[default: .]"),
    ] = None,
    new: Annotated[
        str | None, typer.Option("--new", help="NEW: a git ref or a directory. \\[default: .]")
    ] = None,
    base_param: Annotated[
        list[str] | None,
        typer.Option(
            "--base-param", help="KEY=VALUE for BASE only (a parameter, mode, precision or checkpointing)."
        ),
    ] = None,
    new_param: Annotated[
        list[str] | None,
        typer.Option(
            "--new-param", help="KEY=VALUE for NEW only (a parameter, mode, precision or checkpointing)."
        ),
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="KEY=VALUE for both sides.")
    ] = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help="tiny, default, large. \\[default: default]")
    ] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="forward or train. \\[default: train]")] = None,
    precision: Annotated[
        str | None, typer.Option("--precision", help="fp32, amp-bf16, amp-fp16. \\[default: fp32]")
    ] = None,
    checkpointing: Annotated[
        str | None, typer.Option("--checkpointing", help="none or full. \\[default: none]")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu, cuda, cuda:N. \\[default: cuda if available]")
    ] = None,
    threshold: Annotated[
        str, typer.Option("--threshold", help="Slowdown that counts as a regression: 5% or 0.05.")
    ] = "5%",
    slices: Annotated[int, typer.Option("--slices", help="Measured slices per worker pair and side.")] = 12,
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
) -> None:
    """Is NEW slower than BASE? Both timed interleaved, in the same time windows, on this machine.

    Exit 1 when the slowdown is significant (the CI of the median slice ratio lies above 1) and
    beyond --threshold; 0 otherwise; 2 on bad input.
    """
    from bench.errors import UsageError
    from bench.gate import WorkerError, plan_gate, render_markdown, run_gate

    if fmt_ not in FORMATS:
        raise usage_error(f"--format: unknown format {fmt_!r}; expected one of {list(FORMATS)}")
    try:
        plan = plan_gate(
            scenario,
            base=base,
            new=new,
            params=param,
            base_params=base_param,
            new_params=new_param,
            preset=preset,
            mode=mode,
            precision=precision,
            checkpointing=checkpointing,
            device=device,
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
    update = None
    if err.is_terminal:
        bar, update = _progress(err)
    try:
        with _sigterm_as_interrupt(), bar:
            result = run_gate(plan, progress=update)
    except KeyboardInterrupt:
        typer.secho("interrupted: workers stopped, temporary worktrees removed", err=True)
        raise typer.Exit(130) from None
    except UsageError as exc:
        raise usage_error(str(exc)) from None
    except WorkerError as exc:
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
    if out is None:
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        typer.secho(f"Error: --out: cannot write {out}: {exc.strerror or exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
