"""``dlbench profile``: torch.profiler over the step ``dlbench run`` times, for one configuration."""

from __future__ import annotations

from pathlib import Path
from shlex import quote
from typing import Annotated, Any

import typer

from bench.cli import app, usage_error
from bench.cli.options import TECHNIQUE_OPTIONS, Techniques, technique_options

# the library names its arguments; the CLI names the flags
_FLAGS = {"out_dir:": "--out:", "wait:": "--wait:", "warmup:": "--warmup:", "active:": "--active:"}


def _flag_names(message: str) -> str:
    """``message`` on one line, its leading argument name as the command line spells it."""
    line = " ".join(message.split())
    for name, flag in _FLAGS.items():
        if line.startswith(name):
            return flag + line[len(name) :]
    return line


# one line per paragraph (typer keeps line breaks); "\\[" is a literal "[" in rich markup
_HELP = "\n\n".join(
    [
        "Profile one configuration with torch.profiler: the step `dlbench run` times, same build and "
        "techniques, under a wait / warm-up / active schedule, with shapes and memory.",
        "Writes into the --out folder: the TensorBoard trace (`tensorboard --logdir DIR` with the "
        "torch-tb-profiler plugin shows it); trace.json for chrome://tracing or ui.perfetto.dev; "
        "top_ops.csv and top_ops.md (operators by self time, from torch's key_averages); summary.json "
        "(the step time's shares in matmul, attention, normalization, elementwise, memory copies, "
        "optimizer, communication, other and idle), which `dlbench report RESULTS --profile DIR` puts "
        "in the page; memory_timeline.html with --with-stack; on CUDA, HTA's breakdowns when the "
        "optional extra dlbench\\[hta] is installed.",
        "Parallel (--parallel ddp, fsdp or pipeline, --nproc N ranks on this node): one torchrun job, "
        "launched as `dlbench run --parallel` launches it (same build and strategy on every rank, "
        "--timeout for the whole job); every rank is profiled over the same steps. The --out folder "
        "gets one TensorBoard trace per rank, rank<r>.<time>.pt.trace.json (worker rank<r> in "
        "torch-tb-profiler: `tensorboard --logdir DIR` shows all of them), and each rank's trace.json, "
        "top_ops and summary.json in DIR/rank<r>/. `dlbench report --profile DIR` takes the whole "
        "folder (one profile per rank) or one DIR/rank<r>. A rank that fails or a job past --timeout "
        "exits 1 with one line naming the rank; nothing of the job is left running.",
        "The profile runs in a child process (a parallel one as a torchrun job) under --timeout, and "
        "is written into a staging folder beside --out that is renamed into place only when the whole "
        "profile is there: an error, a timeout, Ctrl-C or SIGTERM leaves no partial trace and no "
        "process. An --out that already holds a profile is refused (old and new traces would mix in "
        "TensorBoard) unless --overwrite, which replaces it whole.",
        "Bad input exits 2 before anything is built or written. One configuration only: one value per "
        "option (one strategy, one pipeline schedule). At most 100 recorded steps (--warmup, --active): "
        "the profiler holds them all in memory.",
    ]
)


@app.command("profile", help=_HELP)
@technique_options(*TECHNIQUE_OPTIONS, grid=False, shown_defaults={"mode": "train"})
def profile_cmd(
    scenario: Annotated[
        str | None,
        typer.Argument(
            help="Scenario: a built-in name (see `dlbench list`) or a model of your own "
            "(path/to/file.py:factory, package.module:factory, timm:<model>, hf:<model type>, an entry "
            "point; loading a factory runs its code)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Folder for the traces and summaries (a TensorBoard logdir). "
            "\\[default: reports/profile_<scenario>]",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout", help="Seconds for the whole profile (a parallel one: its job). \\[default: 600]"
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace an --out folder that already holds a profile, whole."),
    ] = False,
    oversubscribe: Annotated[
        bool,
        typer.Option("--oversubscribe", help="Allow more --nproc ranks than CPU cores on the CPU."),
    ] = False,
    wait: Annotated[
        int | None, typer.Option("--wait", help="Steps run before recording starts. \\[default: 1]")
    ] = None,
    warmup: Annotated[
        int | None,
        typer.Option(
            "--warmup", help="Steps recorded and thrown away (lazy state, allocator), <= 100. \\[default: 1]"
        ),
    ] = None,
    active: Annotated[
        int | None, typer.Option("--active", help="Steps recorded and kept, 1 to 100. \\[default: 3]")
    ] = None,
    with_stack: Annotated[
        bool,
        typer.Option(
            "--with-stack/--no-with-stack",
            help="Record Python stacks. On by default: torch's memory timeline (memory_timeline.html) "
            "needs them. --no-with-stack gives a smaller trace with less overhead, and no timeline.",
        ),
    ] = True,
    *,
    techniques: Techniques,
) -> None:
    """Profile one configuration with torch.profiler (the help text is ``_HELP``)."""
    from bench.api import UsageError
    from bench.profile.scenario import plan_from_run_options

    schedule = {k: v for k, v in (("wait", wait), ("warmup", warmup), ("active", active)) if v is not None}
    try:
        plan = plan_from_run_options(
            scenario,
            out_dir=out if out is not None else Path("reports") / f"profile_{scenario}",
            profile_kw={**schedule, "with_stack": with_stack},
            **techniques.request_kwargs(),
            overwrite=overwrite,
            oversubscribe=oversubscribe or None,
            **({"timeout_s": timeout} if timeout is not None else {}),
        )
    except (UsageError, ValueError) as exc:
        raise usage_error(_flag_names(str(exc))) from None
    typer.echo(f"profiling {plan.describe()} into {plan.out_dir}", err=True)
    from bench.profile.scenario import ParallelProfileError, ParallelProfileResult, ProfileError
    from bench.signals import exit_code, interrupts

    try:
        with interrupts(
            ignore_after=True
        ):  # SIGTERM like Ctrl-C; a second signal cannot cut the cleanup short
            res = plan.run()
    except KeyboardInterrupt as exc:
        typer.secho("interrupted: no profile written, nothing left running", err=True)
        raise typer.Exit(exit_code(exc)) from None
    except ParallelProfileError as exc:
        typer.secho(
            f"error: parallel profile failed ({exc.status}): {' '.join(exc.reason.split())}", err=True
        )
        raise typer.Exit(1) from None
    except ProfileError as exc:
        typer.secho(f"error: profile failed ({exc.status}): {' '.join(exc.reason.split())}", err=True)
        raise typer.Exit(1) from None
    except UsageError as exc:  # the --out folder changed while the profile ran
        raise usage_error(str(exc)) from None
    if isinstance(res, ParallelProfileResult):
        _echo_parallel(res)
        return
    s = res.summary
    typer.echo(f"{s.get('active_steps')} active step(s), {s.get('step_time_ms', 0.0):.4g} ms per step")
    shares = sorted(s.get("categories", {}).items(), key=lambda kv: -kv[1])
    typer.echo("time: " + ", ".join(f"{name} {share:.0%}" for name, share in shares if share >= 0.005))
    labels = [
        ("tensorboard trace", res.tensorboard_trace),
        ("chrome trace", res.chrome_trace),
        ("top operators", res.top_ops_csv),
        ("top operators", res.top_ops_md),
        ("summary", res.summary_json),
        ("memory timeline", res.memory_timeline),
        ("memory timeline data", res.memory_timeline_data),
        ("HTA breakdown", res.hta_json),
    ]
    for label, path in labels:
        if path is not None:
            typer.echo(f"wrote {label}: {path}")
    typer.echo(f"note: {res.memory_timeline_note}")
    for note in res.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"open: tensorboard --logdir {quote(str(res.out_dir))}   (the torch-tb-profiler plugin)")
    typer.echo(f"report: dlbench report RESULTS.csv --profile {quote(str(res.artifacts_dir))}")


def _shares(summary: dict[str, Any]) -> str:
    shares = sorted(summary.get("categories", {}).items(), key=lambda kv: -kv[1])
    return ", ".join(f"{name} {share:.0%}" for name, share in shares if share >= 0.005)


def _echo_parallel(res: Any) -> None:
    """What a parallel profile wrote: each rank's step time, shares and files."""
    for r in res.ranks:
        s = r.get("summary") or {}
        typer.echo(
            f"rank {r['rank']}: {s.get('active_steps')} active step(s), "
            f"{s.get('step_time_ms', 0.0):.4g} ms per step; time: {_shares(s)}"
        )
    for r in res.ranks:
        for label, key in (
            ("tensorboard trace", "tensorboard_trace"),
            ("chrome trace", "chrome_trace"),
            ("top operators", "top_ops_csv"),
            ("top operators", "top_ops_md"),
            ("summary", "summary_json"),
            ("memory timeline", "memory_timeline"),
            ("memory timeline data", "memory_timeline_data"),
        ):
            if r.get(key):
                typer.echo(f"wrote rank {r['rank']} {label}: {r[key]}")
    for note in res.notes:
        typer.echo(f"note: {note}")
    workers = ", ".join(str(r.get("worker_name")) for r in res.ranks)
    typer.echo(
        f"open: tensorboard --logdir {quote(str(res.out_dir))}   (torch-tb-profiler workers {workers})"
    )
    where = quote(str(res.out_dir))
    typer.echo(f"report: dlbench report RESULTS.csv --profile {where}   (every rank, or DIR/rank<r>)")
