"""``dlbench budget``: for a memory budget, the largest batch each technique combination fits, its
throughput there, the Pareto front, and what to use (``bench.budget``, through ``bench.api.budget``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.cli import app, usage_error
from bench.cli.options import Techniques, technique_options

_FORMATS = ("table", "markdown", "json")

_HELP = "\n\n".join(
    [
        (
            "For a memory budget: the largest batch each technique combination fits, its throughput there, "
            "the Pareto front over peak memory and throughput, and one sentence of what to use."
        ),
        (
            "Stage 1 searches each combination of the technique axes (--mode x --precision x "
            "--checkpointing x --compile x --parallel x -p values): the batch grows by doubling, then "
            "bisects, up to --max-batch, until the interval is within --tolerance; at most 2 log2(max "
            "batch) + 2 probes. Each probe is one isolated child running one full train step (one forward "
            "with --mode forward) and measuring its memory, timing nothing; one that runs out of memory, "
            "crashes or times out does not fit. Stage 2 measures each combination at its largest fitting "
            "batch exactly as dlbench run does, and appends the rows (dlbench run's columns plus "
            "budget_bytes, max_batch, probes) to a CSV."
        ),
        (
            "What fits: on CUDA, the step ran under torch.cuda.set_per_process_memory_fraction(budget / "
            "total) without running out of memory and its peak reserved memory is at most the budget (so a "
            "smaller card can be tried on a larger one; stage 2 is timed under the same cap). On CPU, the "
            "tracked peak bytes (MemTracker, every phase of the step) are at most the budget; the peak RSS "
            "increase is recorded. The output says which rule applied. A compiled combination is judged by "
            "its compiled step on CUDA, but on CPU by the same step run eagerly (MemTracker cannot see "
            "inside compiled code), and says so; with --compile each probe compiles in its own process."
        ),
        (
            "The scenario is any that dlbench run takes (a built-in, path/to/file.py:factory, "
            "package.module:factory, timm:<model>, hf:<model type>, an entry point) with a batch_size "
            "parameter. Loading a factory runs its code: name only files you trust."
        ),
        (
            "Exit codes: 0 every combination searched and measured (or skipped, e.g. nothing fits: the "
            "output says what its smallest batch needs), 1 a probe or measurement failed outright, 2 bad "
            "input (nothing run), 130 / 143 interrupted by SIGINT / SIGTERM (finished combinations are in "
            "the CSV; no probe is left running)."
        ),
    ]
)  # one line per paragraph: Typer keeps a docstring's line breaks


# the technique options, defined once for every command (bench.cli.options); batch_size is not one
# of them here: the search owns the batch (-p batch_size is refused, naming --max-batch)
@app.command("budget", help=_HELP)
@technique_options(
    "mode", "precision", "amp", "checkpointing", "compile", "seq_len", "image_size", "width", "depth",
    "params", "preset", "device", "seed", "channels_last", "parallel", "nproc", "microbatches",
    "pipeline_schedule", grid=True, shown_defaults={"mode": "train"},
)  # fmt: skip
def budget_cmd(
    scenario: Annotated[
        str,
        typer.Argument(
            help="Scenario with a batch_size parameter: a built-in name, path/to/file.py:factory, "
            "package.module:factory, timm:<model>, hf:<model type> or an entry point."
        ),
    ],
    techniques: Techniques,
    memory: Annotated[
        str | None,
        typer.Option(
            "--memory",
            help="The memory budget of one device: a number of bytes, or a number with B, KiB, MiB, GiB "
            "or TiB right after it (24GiB, 512MiB). \\[default: the CUDA device's memory; required on CPU]",
        ),
    ] = None,
    max_batch: Annotated[
        int | None, typer.Option("--max-batch", help="The largest batch the search tries. \\[default: 4096]")
    ] = None,
    batch_multiple: Annotated[
        int | None,
        typer.Option(
            "--batch-multiple",
            help="Search only multiples of this batch (a parallel strategy also needs a multiple of what "
            "it splits the batch by). \\[default: 1]",
        ),
    ] = None,
    tolerance: Annotated[
        float | None,
        typer.Option(
            "--tolerance",
            help="Stop bisecting once the interval between the batch that fits and the one that does not "
            "is at most this fraction of the first (0: exact). \\[default: 0.03]",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="Seconds per probe and per measurement. \\[default: 600]"),
    ] = None,
    max_time: Annotated[
        float | None,
        typer.Option("--max-time", help="Seconds of timed steps per measurement. \\[default: 5]"),
    ] = None,
    target_ci: Annotated[
        float | None, typer.Option("--target-ci", help="Relative 95% CI target. \\[default: 0.02]")
    ] = None,
    no_isolation: Annotated[
        bool,
        typer.Option(
            "--no-isolation",
            help="Probe and measure in this process (debugging): no timeout, and an out-of-memory "
            "crash takes dlbench down.",
        ),
    ] = False,
    csv: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            help="The results CSV to append the rows to. \\[default: results/<scenario>-budget_...csv]",
        ),
    ] = None,
    fmt_: Annotated[str, typer.Option("--format", help="table, markdown or json.")] = "table",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Also write the output to this file (a table is written as markdown)."),
    ] = None,
) -> None:
    from bench.api import UsageError, env, plan_budget
    from bench.budget.engine import execute_budget
    from bench.results import ResultsWriteError

    try:
        if fmt_ not in _FORMATS:
            raise UsageError(f"--format: unknown format {fmt_!r}; expected one of {list(_FORMATS)}")
        if out is not None:
            _check_out(out, csv)
        plan = plan_budget(
            scenario,
            memory=memory,
            max_batch=max_batch,
            batch_multiple=batch_multiple,
            tolerance=tolerance,
            csv=csv,
            timeout_s=timeout,
            target_rel_ci=target_ci,
            max_time_s=max_time,
            isolation=False if no_isolation else None,
            **techniques.request_kwargs(),
        )
    except UsageError as exc:
        raise usage_error(str(exc)) from None
    err = Console(stderr=True)
    err.print(
        f"dlbench budget {escape(plan.spec.name)}: {len(plan.combos)} combination(s), budget "
        f"{_bytes(plan.budget_bytes)} on {escape(plan.device)}; fit rule {escape(plan.rule)}",
        soft_wrap=True,
    )
    from bench.signals import exit_code, interrupts

    try:
        with interrupts(
            ignore_after=True
        ):  # SIGTERM like Ctrl-C; a second signal cannot cut the cleanup short
            run = execute_budget(plan, env=env(plan.device), progress=_Progress(err, plan.budget_bytes))
    except KeyboardInterrupt as exc:
        typer.secho("interrupted: finished combinations are in the CSV", err=True)
        raise typer.Exit(exit_code(exc)) from None
    except ResultsWriteError as exc:
        typer.secho(f"Error: {exc.strerror}; every row written before is kept", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    report = run.report
    assert report is not None
    text = report.to_json() if fmt_ == "json" else report.to_markdown()
    if fmt_ == "table":
        print_report(report, Console())
    else:
        typer.echo(text, nl=False)
    if out is not None:
        from bench.outputs import OutputWriteError, write_atomic

        try:
            write_atomic(out, text)
        except OutputWriteError as exc:
            typer.secho(f"Error: {exc}; the rows are in {run.csv_path}", err=True, fg=typer.colors.RED)
            raise typer.Exit(1) from None
    err.print(
        f"rows: {escape(str(run.csv_path))}; probes and samples: {escape(str(run.samples_path))}",
        soft_wrap=True,
    )
    raise typer.Exit(run.exit_code)


def _bytes(n: Any) -> str:
    from bench.report.format import fmt_bytes

    return fmt_bytes(n)


class _Progress:
    """Each probe's verdict and each combination's result, on stderr."""

    def __init__(self, console: Console, budget_bytes: int) -> None:
        self.c = console
        self.budget = budget_bytes

    def combo_start(self, i: int, n: int, label: str) -> None:
        self.c.print(f"[bold][{i + 1}/{n}][/] {escape(label)}: searching", soft_wrap=True)

    def probe(self, label: str, result: Any) -> None:
        style = "green" if result.fits else "yellow"
        self.c.print(
            f"  batch {result.batch}: [{style}]{escape(result.describe(self.budget))}[/]", soft_wrap=True
        )

    def measuring(self, label: str, batch: int) -> None:
        self.c.print(f"  measuring at batch {batch}", soft_wrap=True)

    def combo_done(self, i: int, n: int, label: str, row: dict[str, Any]) -> None:
        from bench.report.format import fmt_si

        status = row["status"]
        thr = row.get("job_throughput") or row.get("throughput")  # a parallel job's: its whole batch
        what = fmt_si(thr, row.get("throughput_unit") or "") if status == "ok" else row.get("reason")
        self.c.print(
            f"  [bold]{escape(label)}[/]: {escape(status)} {escape(str(what or ''))}", soft_wrap=True
        )


def print_report(report: Any, console: Console) -> None:
    """The budget report as a rich table, then the Pareto front, the fit rule and the recommendation."""
    from bench.report.budget import front_line, table_head, table_rows

    title = f"dlbench budget {report.scenario}: {_bytes(report.budget_bytes)} on {report.device}"
    table = Table(title=escape(title), title_justify="left")
    *heads, _notes = table_head(report)  # the notes go below the table, where they have the width
    rows = table_rows(report)
    for i, head in enumerate(heads):
        if i == 0:  # a long combination wraps; the figures never do
            table.add_column(escape(head), justify="left")
        else:
            width = max([len(r[i]) for r in rows] + [max(len(w) for w in head.split())])
            table.add_column(escape(head), justify="right", no_wrap=True, min_width=width)
    for cells in rows:
        table.add_row(*(escape(c) for c in cells[:-1]))
    console.print(table)
    for cells in rows:
        if cells[-1]:
            console.print(f"  {escape(cells[0])}: {escape(cells[-1])}", soft_wrap=True)
    console.print(f"fit rule: {escape(report.rule_text)} (peak: the figure it compares)", soft_wrap=True)
    console.print(escape(front_line(report)), soft_wrap=True)
    console.print(f"[bold]{escape(report.recommendation)}[/]", soft_wrap=True)


def _check_out(out: Path, csv: Path | None) -> None:
    """``--out`` checked before any work (``bench.outputs``): never the CSV or its sidecar."""
    from bench.api import UsageError
    from bench.outputs import check_output_path
    from bench.results import samples_path_for

    inputs = [csv, samples_path_for(csv)] if csv is not None else []
    for q in inputs:  # the CSV is written by this run: the same name is refused before it exists
        if Path(out).absolute() == Path(q).absolute():
            raise UsageError(f"--out: {out} is where this run writes its rows (--csv); give another name")
    check_output_path(out, flag="--out", inputs=inputs)
