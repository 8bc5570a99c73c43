"""dlbench's Python API; the ``dlbench`` CLI is a thin layer over these functions.

    import bench.api as dlbench

    summary = dlbench.run("attention", precisions=["amp-bf16"], params={"seq_len": [128, 256]})
    summary.exit_code          # 0 all ok (skipped is not a failure), 1 some error/oom/timeout
    summary.csv_path           # results/attention_cpu_torch2.13.0-cpu_<time>.csv
    df = dlbench.load_results(summary.csv_path)

    dlbench.list_scenarios()   # names, parameters with defaults, presets
    dlbench.env("cpu")         # the environment fingerprint that goes into every row

    # the largest batch each technique combination fits in 256 MiB, its throughput there, what to use
    b = dlbench.budget("encoder", memory="256MiB", precisions="fp32,amp-bf16", checkpointing="none,full")
    print(b.report.recommendation); b.report.to_json(); b.csv_path

Your own model (README "Your model"): a factory returning a ``Workload``, named wherever a scenario
name goes (``dlbench.run("models/gpt.py:build")``, ``"mypkg.models:build"``, ``"timm:resnet50"``,
``"hf:gpt2"``, or an installed entry point's name):

    from bench.api import Workload, scenario

    @scenario(presets={"tiny": {"width": 64}})
    def build(width: int = 512, batch_size: int = 8) -> Workload: ...

Importing this module has no side effects: it loads no scenario, no torch and no user code
(``Workload`` is imported from ``bench.workload`` when first used; ``scenario`` is torch-free).

Every option of ``run`` is a field of ``bench.run.request.RunRequest`` (its defaults and
constraints live there, shared with the CLI and sweep files). The library never prints: the CLI
passes a progress reporter and prints the summary (``bench.console``).

Bad input raises ``UsageError`` (a ``ValueError``) naming the problem before any work starts:
unknown scenario, preset, mode, precision, checkpointing or compile value (a compile mode given
twice too), unknown or mistyped parameter, a size that is not positive (0 only where it is the
field's default), a device that is not there, an output file that cannot be written or holds
another scenario's columns.

Defaults: modes forward and train; precision fp32; checkpointing none; compile none; device "cuda"
when CUDA is available, else "cpu"; a per-configuration timeout of 600 s; timing stops when the 95%
CI of the median is within +-2% or after 5 s of timed iterations.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bench import results
from bench.constraints import split_list
from bench.errors import UsageError
from bench.foreign.factory import scenario
from bench.registry import load_scenarios
from bench.results import load_results, load_samples
from bench.run.execute import execute, new_run_id
from bench.run.grid import RunConfig, varying_params
from bench.run.plan import RunPlan, check_device, check_environment, default_device, make_request, plan_run
from bench.run.request import RunRequest

__all__ = [
    "BudgetPlan",
    "BudgetRun",
    "RunPlan",
    "RunRequest",
    "RunSummary",
    "UsageError",
    "Workload",
    "budget",
    "check_device",
    "default_device",
    "energy_status",
    "env",
    "execute_budget_plan",
    "execute_plan",
    "list_scenarios",
    "load_results",
    "load_samples",
    "make_request",
    "parse_assignments",
    "plan_budget",
    "plan_run",
    "run",
    "scenario",
    "split_list",
    "varying_params",
]

if TYPE_CHECKING:
    from bench.budget.engine import BudgetRun
    from bench.budget.fit import ProbeResult
    from bench.budget.plan import BudgetPlan
    from bench.workload import Workload


def __getattr__(name: str) -> Any:
    """``Workload`` on first use (it imports torch; ``import bench.api`` does not); the budget types."""
    if name == "Workload":
        from bench.workload import Workload

        return Workload
    if name == "BudgetPlan":
        from bench.budget.plan import BudgetPlan

        return BudgetPlan
    if name == "BudgetRun":
        from bench.budget.engine import BudgetRun

        return BudgetRun
    raise AttributeError(f"module 'bench.api' has no attribute {name!r}")


class Progress(Protocol):
    def __enter__(self) -> Any: ...
    def __exit__(self, *exc: Any) -> Any: ...
    def start(self, i: int, cfg: RunConfig) -> None: ...
    def done(self, i: int, cfg: RunConfig, row: dict[str, Any] | None) -> None: ...


class TextProgress:
    """Plain progress lines on stderr (``[2/6] train amp-bf16: ok 12.3 ms``); the CLI uses rich instead."""

    def __init__(self, total: int, varying: Sequence[str]) -> None:
        self.total = total
        self.varying = list(varying)

    def __enter__(self) -> TextProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def start(self, i: int, cfg: RunConfig) -> None:
        return None

    def done(self, i: int, cfg: RunConfig, row: dict[str, Any] | None) -> None:
        from bench.report.format import fmt_time

        if row is None:
            what = "already in the file (--resume)"
        else:
            what = f"{row['status']} {fmt_time(row) if row['status'] == 'ok' else row.get('reason') or ''}"
        print(
            f"[{i + 1}/{self.total}] {cfg.label(self.varying)}: {what.strip()}", file=sys.stderr, flush=True
        )


@dataclass
class RunSummary:
    """What ``run`` did: the rows it wrote (in order), where, and the exit status."""

    scenario: str
    csv_path: Path
    samples_path: Path
    run_id: str
    rows: list[dict[str, Any]]
    configs: list[RunConfig]
    resumed: int = 0  # configurations found in the file and not run again (--resume)
    varying: list[str] = field(default_factory=list)  # parameters that vary across the grid

    @property
    def counts(self) -> dict[str, int]:
        """Rows of this run by status."""
        out: dict[str, int] = {}
        for r in self.rows:
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] in results.FAILED_STATUSES]

    @property
    def noisy(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "ok" and r.get("noisy")]

    @property
    def exit_code(self) -> int:
        """0 when every configuration is ok or skipped, 1 when any is error, oom or timeout."""
        return 1 if self.failed else 0


def parse_assignments(items: Sequence[str]) -> dict[str, list[str]]:
    """``["seq_len=128,256", "causal=true"]`` -> ``{"seq_len": ["128", "256"], "causal": ["true"]}``."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UsageError(f"--param: expected key=value (value may be a comma list), got {item!r}")
        out.setdefault(key.strip(), []).extend(split_list(value))
    return out


def run(
    scenario: str | None = None,
    *,
    sweep: str | Path | None = None,
    progress: bool | Progress = True,
    **options: Any,
) -> RunSummary:
    """Measure every configuration of a scenario's grid and append one row each to a CSV.

    ``options`` are ``RunRequest`` fields: ``preset``, ``modes``, ``precisions``, ``amp``,
    ``checkpointing``, ``compile`` (torch.compile modes), ``params`` (config field -> a value or a
    list: a grid axis), ``device``,
    ``out``, ``resume``, ``timeout_s``, ``target_rel_ci``, ``max_time_s``, ``seed``, ``isolation``,
    ``channels_last``, ... Lists may be comma-separated strings. ``amp=True`` adds
    ``bench.workload.preferred_amp(device)`` to the precisions. ``sweep`` reads them from a TOML
    file (``bench.run.sweep``); arguments given here override it. ``isolation=False`` runs in this
    process (no timeout; for debugging).
    """
    return execute_plan(plan_run(scenario, sweep=sweep, **options), progress=progress)


def execute_plan(plan: RunPlan, *, progress: bool | Progress = True) -> RunSummary:
    """Run a validated plan (see ``plan_run``); ``progress`` reports each finished configuration.

    ``progress`` is True (plain lines on stderr, ``TextProgress``), False (silent), or any object
    with ``__enter__``/``__exit__`` and ``start(i, cfg)`` / ``done(i, cfg, row_or_None)`` (the CLI
    passes ``bench.console.RunProgress``, a rich progress bar).
    """
    env_fp = env(plan.device)
    run_id = plan.run_id or new_run_id()
    varying = varying_params(plan.configs)
    on_start: Callable[[int, RunConfig], None] | None = None
    on_done: Callable[[int, RunConfig, dict[str, Any] | None], None] | None = None
    bar: Progress | None
    if progress is True:
        bar = TextProgress(len(plan.configs), varying)
    elif progress is False:
        bar = None
    else:
        bar = progress
    if bar is not None:
        on_start, on_done = bar.start, bar.done
    try:
        if bar is not None:
            bar.__enter__()
        res = execute(
            plan.spec,
            plan.configs,
            writer=plan.writer,
            env=env_fp,
            options=plan.request,
            run_id=run_id,
            isolation=plan.isolation,
            resume=plan.resume,
            on_start=on_start,
            on_done=on_done,
        )
    finally:
        plan.writer.unlock()
        if bar is not None:
            bar.__exit__(None, None, None)
    return RunSummary(
        scenario=plan.spec.name,
        csv_path=plan.writer.path,
        samples_path=plan.writer.samples_path,
        run_id=run_id,
        rows=res.rows,
        configs=list(plan.configs),
        resumed=len(res.resumed),
        varying=varying,
    )


class TextBudgetProgress:
    """Plain progress lines of ``budget`` on stderr (the CLI prints the same through rich)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes

    def combo_start(self, i: int, n: int, label: str) -> None:
        print(f"[{i + 1}/{n}] {label}: searching", file=sys.stderr, flush=True)

    def probe(self, label: str, result: ProbeResult) -> None:
        print(f"  batch {result.batch}: {result.describe(self.budget_bytes)}", file=sys.stderr, flush=True)

    def measuring(self, label: str, batch: int) -> None:
        print(f"  measuring at batch {batch}", file=sys.stderr, flush=True)

    def combo_done(self, i: int, n: int, label: str, row: dict[str, Any]) -> None:
        from bench.report.format import fmt_si

        ok = row["status"] == "ok"
        thr = row.get("job_throughput") or row.get("throughput")  # a parallel job's: its whole batch
        what = fmt_si(thr, row.get("throughput_unit") or "") if ok else ""
        print(f"[{i + 1}/{n}] {label}: {row['status']} {what}".rstrip(), file=sys.stderr, flush=True)


def plan_budget(scenario: str | None = None, **options: Any) -> BudgetPlan:
    """Validate everything ``budget`` takes (``UsageError`` otherwise) and open its CSV; runs nothing.

    See ``budget`` for the options; ``bench.budget.plan`` for what is checked.
    """
    from bench.budget.plan import plan_budget as _plan

    check_environment()
    return _plan(scenario, **options)


def budget(scenario: str | None = None, *, progress: bool | Any = True, **options: Any) -> BudgetRun:
    """For a memory budget: the largest batch each technique combination fits, its throughput there.

    ``memory``: the budget of one device, ``"24GiB"`` or bytes (CUDA: default the device's memory;
    CPU: required). ``max_batch`` (default 4096) caps the search, ``batch_multiple`` (1) is its step,
    ``tolerance`` (0.03) stops bisecting once the interval is that fraction of the batch that fits
    (0: exact). The other options are ``run``'s: ``modes`` (default train), ``precisions``,
    ``checkpointing``, ``compile``, ``parallel`` with ``nproc``, ``params`` (any parameter but
    ``batch_size``), ``preset``, ``device``, ``timeout_s`` (per probe and per measurement),
    ``max_time_s``, ``target_rel_ci``, ``isolation``, ...; ``csv``: the results CSV (default
    ``results/<scenario>-budget_...csv``).

    Returns a ``BudgetRun``: ``rows`` (one per combination, appended to ``csv_path``), ``searches``
    and ``report`` (``bench.report.budget.BudgetReport``: the table, the Pareto front, the
    recommendation; ``to_json()``, ``to_markdown()``). ``progress``: True (plain lines on stderr),
    False, or an object like ``TextBudgetProgress``.
    """
    return execute_budget_plan(plan_budget(scenario, **options), progress=progress)


def execute_budget_plan(plan: BudgetPlan, *, progress: bool | Any = True) -> BudgetRun:
    """Run a validated budget plan (``plan_budget``): search, measure and write every combination."""
    from bench.budget.engine import execute_budget

    bar = TextBudgetProgress(plan.budget_bytes) if progress is True else (progress or None)
    return execute_budget(plan, env=env(plan.device), progress=bar)


def list_scenarios(include_test_only: bool = False, name: str | None = None) -> list[dict[str, Any]]:
    """Scenarios: name, description, parameters (defaults), presets, modes.

    Without ``name``: the built-ins, then the installed entry points (group ``dlbench.scenarios``;
    each is imported to show its parameters and presets; one that fails to load is listed with
    ``error`` set instead). With ``name``: that one scenario, any form ``run`` accepts
    (``models/gpt.py:build``, ``timm:resnet50``, ...), with ``parameter_types`` too; an unknown or
    bad name raises ``UsageError``.
    """
    from bench.registry import get_scenario

    if name is not None:
        try:
            spec = get_scenario(name.strip())
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        info = _scenario_info(spec)
        info["parameter_types"] = {p: spec.describe_parameter(p) for p in spec.parameters()}
        if spec.aliases:
            info["aliases"] = dict(spec.aliases)
        return [info]
    out = []
    builtins = load_scenarios()
    for _name, spec in sorted(builtins.items()):
        if spec.test_only and not include_test_only:
            continue
        out.append(_scenario_info(spec))
    from bench.foreign.resolve import entry_point_names

    for ep_name in entry_point_names():
        if ep_name in builtins:
            continue  # a built-in name wins; the entry point is never reached
        try:
            out.append(_scenario_info(get_scenario(ep_name)))
        except ValueError as exc:
            out.append(
                {"name": ep_name, "description": "", "parameters": {}, "presets": {}, "modes": [],
                 "unsupported_modes": {}, "test_only": False, "error": str(exc)}
            )  # fmt: skip
    return out


def _scenario_info(spec: Any) -> dict[str, Any]:
    return {
        "name": spec.name,
        "description": spec.description,
        "parameters": spec.parameters(),
        "presets": {k: dict(v) for k, v in spec.presets.items()},
        "modes": list(spec.modes),
        "unsupported_modes": dict(spec.unsupported_modes),
        "test_only": spec.test_only,
    }


def env(device: str | None = None) -> dict[str, Any]:
    """The environment fingerprint that goes into every row (``bench.harness.env``)."""
    from bench.harness.env import env_fingerprint

    return dict(env_fingerprint(check_device(device) if device is not None else default_device()))


def energy_status(device: str | None = None) -> dict[str, Any]:
    """The energy source rows on ``device`` would read, or why there is none
    (``bench.harness.energy_meter``): ``energy_source``, ``energy_devices``, ``energy_note``."""
    from bench.harness.energy_meter import energy_status as status

    return status(check_device(device) if device is not None else default_device())
