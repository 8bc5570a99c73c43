"""``dlbench list``, ``dlbench env`` and ``dlbench run``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bench.cli import app, usage_error
from bench.cli.options import TECHNIQUE_OPTIONS, Techniques, technique_options

_FOREIGN_HELP = (
    "A scenario is a built-in name (see `dlbench list`), a model of your own as path/to/file.py:factory "
    "or package.module:factory (a function returning bench.api.Workload; its keyword parameters become "
    "the scenario's parameters), timm:<model> or hf:<model type> (random weights, offline), or an "
    "installed entry point's name. Loading a factory runs its code: name only files you trust."
)


@app.command("list", help=f"List scenarios with their parameters (defaults) and presets.\n\n{_FOREIGN_HELP}")
def list_cmd(
    name: Annotated[
        str | None,
        typer.Argument(
            help="Show this one scenario, with each parameter's type and constraint: a built-in name, "
            "path/to/file.py:factory, package.module:factory, timm:<model>, hf:<model type>, an entry point."
        ),
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Also show test-only scenarios (names start with _).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    from bench.api import UsageError, list_scenarios

    try:
        scenarios = list_scenarios(include_test_only=all_, name=name)
    except UsageError as exc:
        raise usage_error(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(scenarios, indent=2, default=str))
        return
    for s in scenarios:
        typer.secho(s["name"], bold=True, nl=False)
        if s.get("error"):
            typer.secho(f"  could not load: {s['error']}", fg=typer.colors.RED)
            continue
        typer.echo(f"  {s['description']}")
        types = s.get("parameter_types")
        if types:
            typer.echo("    parameters:")
            width = max(len(f"{k}={v}") for k, v in s["parameters"].items())
            for k, v in s["parameters"].items():
                typer.echo(f"      {f'{k}={v}':<{width}}  {types[k]}")
            for alias, target in (s.get("aliases") or {}).items():
                typer.echo(f"      {alias} is {target}")
        else:
            typer.echo("    parameters: " + " ".join(f"{k}={v}" for k, v in s["parameters"].items()))
        for preset, overrides in s["presets"].items():
            shown = " ".join(f"{k}={v}" for k, v in overrides.items()) or "(the defaults)"
            typer.echo(f"    preset {preset}: {shown}")
        typer.echo(f"    modes: {', '.join(s['modes'])}")
        for mode, why in s["unsupported_modes"].items():
            typer.echo(f"    skipped mode {mode}: {why}")


@app.command("env")
def env_cmd(
    device: Annotated[
        str | None, typer.Option("--device", help="cpu, cuda, cuda:N. \\[default: cuda if available]")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the environment fingerprint that goes into every result row, and the energy source.

    energy_source names the counter that rows on this device read through Zeus (nvml, rapl-package,
    ...), or none, with the reason in energy_note (no counter here, or Zeus is missing: pip install
    'dlbench\\[energy]').
    """
    from bench.api import UsageError, energy_status, env

    try:
        fp = env(device)
        fp.update(energy_status(device))
    except UsageError as exc:
        raise usage_error(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(fp, indent=2, default=str))
        return
    width = max(len(k) for k in fp)
    for k, v in fp.items():
        typer.echo(f"{k:<{width}}  {'' if v is None else v}")


@app.command(
    "run",
    help="Measure a scenario over a grid of configurations; one CSV row per configuration.\n\n"
    + _FOREIGN_HELP,
)
@technique_options(*TECHNIQUE_OPTIONS, grid=True)
def run_cmd(
    scenario: Annotated[
        str | None,
        typer.Argument(
            help="Scenario: a built-in name (see `dlbench list`), path/to/file.py:factory, "
            "package.module:factory, timm:<model>, hf:<model type> or an entry point; optional with --sweep."
        ),
    ] = None,
    sweep: Annotated[
        Path | None, typer.Option("--sweep", help="TOML sweep file (scenario, axes, options).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="CSV to append to. \\[default: results/<scenario>_...csv]")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Skip configurations already in the output file.")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds per configuration. \\[default: 600]")
    ] = None,
    target_ci: Annotated[
        float | None, typer.Option("--target-ci", help="Relative 95% CI target. \\[default: 0.02]")
    ] = None,
    max_time: Annotated[
        float | None, typer.Option("--max-time", help="Seconds of timed steps per config. \\[default: 5]")
    ] = None,
    no_isolation: Annotated[
        bool, typer.Option("--no-isolation", help="Run in this process (debugging).")
    ] = False,
    repeat: Annotated[
        int | None,
        typer.Option(
            "--repeat",
            help="Independent processes per configuration, round-robin over the grid; the CI then "
            "covers the drift between processes. \\[default: 1]",
        ),
    ] = None,
    nnodes: Annotated[
        int | None,
        typer.Option(
            "--nnodes",
            help="Nodes of each torchrun job; run the same command on every node with its own "
            "--node-rank. \\[default: 1]",
        ),
    ] = None,
    node_rank: Annotated[
        int | None,
        typer.Option(
            "--node-rank", help="This node's rank, 0..nnodes-1 (0 hosts the rendezvous). \\[default: 0]"
        ),
    ] = None,
    rdzv_endpoint: Annotated[
        str | None,
        typer.Option(
            "--rdzv-endpoint",
            help="HOST:PORT of the rendezvous (node 0's address, the same on every node; required with "
            "--nnodes > 1). \\[default: 127.0.0.1 and a free port, one node] A non-loopback endpoint LISTENS "
            "ON THE NETWORK (an unauthenticated store on node 0): trusted networks only. Loopback or none: "
            "the job listens on loopback only.",
        ),
    ] = None,
    rdzv_id: Annotated[
        str | None,
        typer.Option(
            "--rdzv-id",
            help="Run id of a multi-node run: the same on every node, new for every run (required with "
            "--nnodes > 1), so two runs sharing an endpoint never join one rendezvous. One node: a "
            "fresh id per job, always.",
        ),
    ] = None,
    oversubscribe: Annotated[
        bool,
        typer.Option(
            "--oversubscribe",
            help="Allow more --nproc ranks per node than CPU cores on the CPU (refused otherwise: the "
            "ranks would time their contention).",
        ),
    ] = False,
    rdzv_backend: Annotated[
        str | None,
        typer.Option(
            "--rdzv-backend",
            help="torchrun rendezvous backend: c10d, static, etcd, etcd-v2. \\[default: c10d]",
        ),
    ] = None,
    *,
    techniques: Techniques,
) -> None:
    """Measure a scenario over a grid of configurations (the help text is given to the decorator)."""
    from bench.api import UsageError, execute_plan, plan_run, varying_params
    from bench.console import RunProgress, print_summary
    from bench.results import ResultsWriteError

    try:
        plan = plan_run(
            scenario,
            sweep=sweep,
            **techniques.request_kwargs(),
            out=out,
            resume=resume or None,
            timeout_s=timeout,
            target_rel_ci=target_ci,
            max_time_s=max_time,
            isolation=False if no_isolation else None,
            repeat=repeat,
            nnodes=nnodes,
            node_rank=node_rank,
            rdzv_endpoint=rdzv_endpoint,
            rdzv_backend=rdzv_backend,
            rdzv_id=rdzv_id,
            oversubscribe=oversubscribe or None,
        )
    except UsageError as exc:
        raise usage_error(str(exc)) from None
    from bench.signals import exit_code, interrupts

    try:
        progress = RunProgress(plan.spec.name, len(plan.configs), varying_params(plan.configs))
        with interrupts(
            ignore_after=True
        ):  # SIGTERM like Ctrl-C; a second signal cannot cut the cleanup short
            summary = execute_plan(plan, progress=progress)
    except KeyboardInterrupt as exc:
        typer.secho("interrupted: finished rows are in the CSV; rerun with --resume to go on", err=True)
        raise typer.Exit(exit_code(exc)) from None
    except ResultsWriteError as exc:
        typer.secho(f"Error: {exc.strerror}; every row written before is kept", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    print_summary(summary)
    raise typer.Exit(summary.exit_code)
