"""``dlbench bisect``: which commit made a scenario slower, found by the interleaved gate.

Exit codes: 1 the slowdown was confirmed and located (a culprit; or several small steps; or a range
of commits that could not be measured); 0 BAD is not slower than GOOD beyond ``--threshold``
(nothing to find); 2 bad input, found before any gate runs (unknown refs, GOOD = BAD, GOOD not an
ancestor of BAD, a bad threshold ...), or GOOD against BAD could not be measured (nothing to
bisect from); 130 SIGINT, 143 SIGTERM (``bench.signals.exit_code``, as every dlbench command).

The options that say what to measure and how are the gate's (``bench.cli.gate``), spelled and
defaulted the same; ``--max-slices`` is bisect's own.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer

from bench.cli import app, usage_error
from bench.cli.gate import FORMATS, _emit, _progress, _sigterm_as_interrupt


def print_table(d: dict[str, Any], console: Any) -> None:
    """The bisection for people: the finding, then the probe log as a table."""
    from rich.markup import escape
    from rich.table import Table

    from bench.bisect.render import LOG_COLUMNS, footer, headline, probe_cells, title

    style = {"culprit": "bold red", "steps": "bold red", "range": "bold red", "nothing": "bold green"}
    lines = headline(d)
    console.print(f"[{style[d['outcome']]}]{escape(lines[0])}[/]")
    for line in lines[1:]:
        console.print(escape(line))
    table = Table(title=escape(title(d)), title_justify="left")
    for col in LOG_COLUMNS:
        table.add_column(col, justify="right" if col in ("gate", "slices", "s") else "left")
    for p in d["probes"]:
        table.add_row(*(escape(c) for c in probe_cells(p)))
    console.print(table)
    console.print(escape(footer(d)), style="dim")


class _Reporter:
    """Progress of a bisection on stderr: a line per gate started and finished, the gate's own bar."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.gate = 0
        self.bar: Any = contextlib.nullcontext()
        self._update: Any = None
        if console.is_terminal:
            self.bar, self._update = _progress(console)
        self._said: set[tuple[int, str]] = set()

    def say(self, text: str) -> None:
        from rich.markup import escape

        if self.console.is_terminal:
            self.console.print(escape(text), highlight=False)
        else:
            typer.echo(text, err=True)

    def on_event(self, e: Any) -> None:
        """A gate started, goes on with more slices, or finished (``bench.bisect.search.Event``)."""
        from bench.bisect.render import ratio_ci
        from bench.bisect.search import GateStart, MoreSlices

        if isinstance(e, GateStart):
            self.gate = e.n
            if e.role == "confirm":
                what = f"GOOD {e.base.short} against BAD {e.commit.short}"
            elif e.role == "probe":
                what = f"GOOD against {e.commit.short}"
            else:
                what = f"the culprit's own step, {e.base.short} against {e.commit.short}"
            more = f"; about {e.left} more" if e.left else ""
            self.say(f"bisect: gate {e.n}: {what}, {e.slices} slices{more}")
        elif isinstance(e, MoreSlices):
            found = ratio_ci(e.looked.to_dict())
            k = e.looked.slices
            self.say(f"bisect: gate {e.n}: inconclusive at {k} slices ({found}); measuring to {e.slices}")
        elif e.measured:
            found = ratio_ci({"ratio": e.ratio, "ci_low": e.ci_low, "ci_high": e.ci_high})
            how = f"({e.slices} slices, {e.seconds:.1f} s)"
            self.say(f"bisect: gate {e.n}: {e.commit.short} {found} {e.verdict} {how}")
        else:
            why = e.reason.splitlines()[0] if e.reason else ""
            self.say(f"bisect: gate {e.n}: {e.commit.short} skipped: {why} ({e.seconds:.1f} s)")

    def progress(self, stage: str, done: int, total: int) -> None:
        """The gate's (stage, done, total): a bar on a terminal, one line per gate elsewhere."""
        if self._update is not None:
            self._update(stage, done, total)
        elif stage == "measure" and (self.gate, stage) not in self._said:
            self._said.add((self.gate, stage))
            typer.echo(f"bisect: gate {self.gate}: workers ready, measuring {total} slices", err=True)


@app.command("bisect")
def bisect_cmd(
    scenario: Annotated[
        str,
        typer.Argument(
            help="Scenario: a built-in name (see `dlbench list`) or a model of your own "
            "(path/to/file.py:factory, package.module:factory, timm:<model>, hf:<model type>, an entry "
            "point). Every commit measured must know the name."
        ),
    ],
    good: Annotated[
        str,
        typer.Option(
            "--good",
            help="A commit that was fast enough: a tag, a branch, HEAD~N, a hash. BAD must descend from it.",
        ),
    ],
    bad: Annotated[str, typer.Option("--bad", help="A later commit that is slower.")] = "HEAD",
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="KEY=VALUE for every commit measured.")
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
    max_slices: Annotated[
        int | None,
        typer.Option(
            "--max-slices",
            help="An inconclusive gate is measured again with twice the slices up to this many; still "
            "inconclusive, the commit is skipped. \\[default: 4 x --slices]",
        ),
    ] = None,
    slice_time: Annotated[float, typer.Option("--slice-time", help="Seconds per slice.")] = 0.25,
    pairs: Annotated[int, typer.Option("--pairs", help="BASE/NEW worker process pairs.")] = 2,
    fmt_: Annotated[str, typer.Option("--format", help="table, markdown or json.")] = "table",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Also write the result to FILE (--format; table as markdown)."),
    ] = None,
) -> None:
    """Which commit between GOOD and BAD made SCENARIO slower? Each probe is an interleaved gate.

    First gates GOOD against BAD: if BAD is not slower beyond --threshold there is nothing to find
    (exit 0). Then a binary search over `git rev-list --first-parent GOOD..BAD`, each probe a gate
    of GOOD against the candidate; an inconclusive probe is measured again with twice the slices
    (up to --max-slices), and a commit that cannot build the scenario is skipped with the reason.
    Last, the culprit is gated against its parent: the ratio reported is its own slowdown. Commits
    are exported with git archive into a folder dlbench owns; the working tree, index, HEAD and
    branches are never touched, and nothing is left behind, even on Ctrl-C or SIGTERM.

    Exit 1 when a slowdown was located (a culprit, several small steps, or a range of skipped
    commits); 0 nothing to find; 2 bad input (unknown refs, GOOD = BAD, GOOD not an ancestor of
    BAD, a bad --threshold), or GOOD against BAD could not be measured; 130/143 on SIGINT/SIGTERM.
    """
    from bench.bisect import CannotBisect, plan_bisect, render_markdown, run_bisect, to_dict
    from bench.errors import UsageError
    from bench.outputs import check_output_path
    from bench.signals import exit_code

    if fmt_ not in FORMATS:
        raise usage_error(f"--format: unknown format {fmt_!r}; expected one of {list(FORMATS)}")
    try:
        if out is not None:
            out = check_output_path(out, flag="--out")
        plan = plan_bisect(
            scenario,
            good=good,
            bad=bad,
            max_slices=max_slices,
            params=param,
            preset=preset,
            mode=mode,
            precision=precision,
            checkpointing=checkpointing,
            device=device,
            threshold=threshold,
            slices=slices,
            slice_time_s=slice_time,
            pairs=pairs,
        )
    except UsageError as exc:
        raise usage_error(str(exc)) from None

    from rich.console import Console

    from bench.bisect.search import search_left

    report = _Reporter(Console(stderr=True))
    most = search_left(-1, len(plan.commits) - 1, set()) + 2  # confirm, the search, the culprit's step
    report.say(
        f"bisect: {len(plan.commits)} commits from GOOD {plan.good.short} to BAD {plan.bad.short}; "
        f"at most {most} gates unless some commit is skipped"
    )
    try:
        with _sigterm_as_interrupt(), report.bar:
            result = run_bisect(plan, progress=report.progress, on_event=report.on_event)
    except KeyboardInterrupt as exc:
        typer.secho(
            f"interrupted after {report.gate} gate(s): workers stopped, exported trees removed",
            err=True,
        )
        raise typer.Exit(exit_code(exc)) from None
    except CannotBisect as exc:
        raise usage_error(f"cannot bisect: {exc}") from None
    _emit(to_dict(result, plan), fmt_, out, markdown=render_markdown, table=print_table)
    raise typer.Exit(result.exit_code)
