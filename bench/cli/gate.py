"""``dlbench gate`` (interleaved BASE/NEW timing) and ``dlbench baseline check|update`` (exact figures).

Exit codes of ``gate``: 0 no significant regression beyond ``--threshold`` (verdict faster, same, or
inconclusive with the median ratio within it); 1 a regression (verdict "slower"), an inconclusive
result whose median ratio is beyond the threshold, or the gate could not measure (a worker died or
timed out: a gate fails closed); 2 bad input (nothing started); 130 SIGINT, 143 SIGTERM. ``baseline
check``: 0 every figure equal, 1 some figure differs (each named), 2 no or unreadable baseline.
``baseline ratios``: 0 every timing ratio within its reference's tolerance (or faster), 1 a check
significantly slower than its reference beyond the tolerance, or one that could not measure (each
named), 2 a bad, missing or stale reference file or an unknown ``--check``; 130 interrupted.
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


@app.command("gate")
def gate_cmd(
    scenario: Annotated[str, typer.Argument(help="Scenario name (see `dlbench list`).")],
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


baseline_app = typer.Typer(
    help=(
        "What CI holds the tree to: exact figures (FLOPs per step, tracked bytes per phase) against "
        "results/baseline/baseline.json, and interleaved timing ratios against results/baseline/perf.json."
    ),
    no_args_is_help=True,
)
app.add_typer(baseline_app, name="baseline")

_BASELINE_OPT = typer.Option(
    "--baseline", help="The baseline file. \\[default: results/baseline/baseline.json]"
)


@baseline_app.command("check")
def baseline_check_cmd(
    baseline: Annotated[Path | None, _BASELINE_OPT] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """Recompute the figures and compare them exactly; exit 1 naming every figure that differs."""
    from bench.errors import UsageError
    from bench.gate.baseline import check_baseline

    try:
        report = check_baseline(baseline)
    except UsageError as exc:
        raise usage_error(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for line in report.lines():
            typer.echo(line)
    raise typer.Exit(0 if report.ok else 1)


_PERF_OPT = typer.Option("--perf", help="The reference ratios file. \\[default: results/baseline/perf.json]")
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
    perf: Annotated[Path | None, _PERF_OPT] = None,
    check: Annotated[list[str] | None, _CHECK_OPT] = None,
    slices: Annotated[
        int | None, typer.Option("--slices", help="Measured slices per worker pair (overrides each check's).")
    ] = None,
    fmt_: Annotated[str, typer.Option("--format", help="table, markdown or json.")] = "table",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Also write the result to FILE (--format; table as markdown)."),
    ] = None,
) -> None:
    """Timing ratios (dlcore vs its torch reference), interleaved, against results/baseline/perf.json.

    Each check is a `dlbench gate` between two configurations of this tree: dlcore attention vs
    nn.MultiheadAttention, AdamWWithWarmup vs fused AdamW, checkpointing full vs none. A check fails
    when its ratio's CI lies above reference x (1 + tolerance). Exit 1 naming the failed checks.
    """
    from bench.errors import UsageError
    from bench.gate import WorkerError
    from bench.gate.perf import run_checks

    if fmt_ not in FORMATS:
        raise usage_error(f"--format: unknown format {fmt_!r}; expected one of {list(FORMATS)}")

    def progress(o: Any) -> None:
        typer.echo(_outcome_line(o), err=True)

    try:
        with _sigterm_as_interrupt():
            report = run_checks(perf, check, slices=slices, on_outcome=progress)
    except KeyboardInterrupt:
        typer.secho("interrupted: workers stopped", err=True)
        raise typer.Exit(130) from None
    except UsageError as exc:
        raise usage_error(str(exc)) from None
    except WorkerError as exc:  # run_checks turns these into "error" outcomes; defensive
        typer.secho(f"Error: the gate could not measure: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    _emit(report.to_dict(), fmt_, out, markdown=render_ratios_markdown, table=print_ratios_table)
    raise typer.Exit(report.exit_code)


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
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, text)
    except (OSError, RuntimeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        typer.secho(f"Error: --out: cannot write {out}: {why}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None


@baseline_app.command("update")
def baseline_update_cmd(
    baseline: Annotated[Path | None, _BASELINE_OPT] = None,
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
) -> None:
    """Recompute and rewrite baseline.json, or with --ratios re-measure perf.json (review the diff, commit).

    Measure the ratios on a quiet machine of the kind CI runs on: they are the references a CI run
    is held to, within each check's tolerance.
    """
    from bench.errors import UsageError

    if not ratios:
        if perf is not None or check or slices is not None:
            raise usage_error("--perf, --check and --slices apply to --ratios only")
        from bench.gate.baseline import update_baseline

        path, data = update_baseline(baseline)
        n = sum(len(c["figures"]) for c in data["cases"].values())
        typer.echo(f"wrote {path}: {len(data['cases'])} cases, {n} figures (torch {data['torch_version']})")
        return
    if baseline is not None:
        raise usage_error("--baseline applies to the exact figures; with --ratios give --perf FILE")
    from bench.gate import WorkerError
    from bench.gate.perf import update_references

    def progress(c: Any, i: int, res: Any) -> None:
        d = res.to_dict()
        typer.echo(f"{c.name} run {i + 1}/{runs}: NEW/BASE {_fmt_ci(d)} ({res.elapsed_s:.1f} s)", err=True)

    try:
        with _sigterm_as_interrupt():
            path, doc = update_references(perf, check, runs=runs, slices=slices, on_run=progress)
    except KeyboardInterrupt:
        typer.secho("interrupted: workers stopped; the file was not written", err=True)
        raise typer.Exit(130) from None
    except UsageError as exc:
        raise usage_error(str(exc)) from None
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
        f"wrote {path}: {len(doc['checks'])} checks (torch {doc['torch_version']}, {doc['threads']} threads)"
    )
