"""From the budget command's options to a plan: everything checked, the CSV open, nothing run yet.

``plan_budget`` is where bad input stops (``UsageError``, exit 2, before any child starts): the
memory budget (``bench.constraints.parse_bytes``; above the device's memory on CUDA, or this
machine's RAM on CPU, is refused), a scenario without a ``batch_size`` parameter (there is no batch
to search), ``batch_size`` given as a parameter (the search owns it), ``--max-batch`` /
``--batch-multiple`` / ``--tolerance``, and everything ``dlbench run`` checks, through the same
``bench.run.plan.plan_run``: the scenario, its parameters, the technique axes, the device, the CSV.

Each technique combination (mode x precision x checkpointing x parallel strategy x scenario
parameters: the grid of ``dlbench run`` without the batch) becomes one ``RunConfig``; ``at_batch``
gives it at any batch. A parallel strategy needs a batch that splits: ddp, fsdp and dp over their
ranks, a pipeline into its micro-batches (``--microbatches``, or max(4, stages), what ``dlbench run``
picks for such a batch), so its search steps in multiples of that (and of ``--batch-multiple``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import results
from bench.budget.fit import rule_for
from bench.constraints import Check, parse, parse_bytes
from bench.errors import UsageError
from bench.registry import ScenarioSpec, get_scenario
from bench.run.grid import RunConfig
from bench.run.plan import RunPlan, check_device, default_device, make_request, plan_run

DEFAULT_MAX_BATCH = 4096
DEFAULT_TOLERANCE = 0.03  # stop bisecting once the interval is under 3% of the batch that fits
# the run options the budget command takes (the rest of RunRequest: --repeat, --resume, --sweep,
# multi-node launches, are not offered: a search probes one node)
RUN_OPTIONS = (
    "preset", "modes", "precisions", "amp", "checkpointing", "compile", "params", "device", "timeout_s",
    "target_rel_ci", "max_time_s", "seed", "isolation", "channels_last", "parallel", "nproc",
    "microbatches", "pipeline_schedule",
)  # fmt: skip


@dataclass
class BudgetPlan:
    """A validated budget run: the combinations to search, the budget, where the rows go."""

    run: RunPlan  # the grid (each combination at the preset's batch), the writer, the request
    budget_bytes: int
    max_batch: int
    batch_multiple: int
    tolerance: float
    device_memory_bytes: int | None  # the device's (CUDA) or the machine's (CPU) memory

    @property
    def spec(self) -> ScenarioSpec:
        return self.run.spec

    @property
    def combos(self) -> list[RunConfig]:
        return self.run.configs

    @property
    def request(self) -> Any:
        return self.run.request

    @property
    def device(self) -> str:
        return self.run.device

    @property
    def rule(self) -> str:
        return rule_for(self.device)

    def step_of(self, combo: RunConfig) -> int:
        """The batch granularity of ``combo``: ``--batch-multiple`` and what its strategy splits by."""
        unit = split_unit(combo.parallel, combo.world_size, self.request.microbatches)
        return math.lcm(self.batch_multiple, unit)

    def at_batch(self, combo: RunConfig, batch: int) -> RunConfig:
        """``combo`` at global batch ``batch`` (``ValueError`` if the scenario refuses that batch)."""
        params = tuple((k, batch if k == "batch_size" else v) for k, v in combo.params)
        self.spec.make_config(combo.preset, **dict(params))
        cfg = dataclasses.replace(combo, params=params)
        if combo.parallel == "pipeline":
            m = split_unit("pipeline", combo.world_size, self.request.microbatches)
            cfg = dataclasses.replace(cfg, microbatches=m)
        return cfg


def split_unit(parallel: str, world_size: int, microbatches: int) -> int:
    """What the global batch must be a multiple of for a strategy to split it."""
    if parallel in ("dp", "ddp", "fsdp"):
        return max(1, world_size)
    if parallel == "pipeline":
        return microbatches or max(4, world_size)
    return 1


def machine_memory_bytes() -> int | None:
    """Physical memory of this machine (``sysconf``), or None where it cannot tell."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def device_memory_bytes(device: str) -> int | None:
    """The memory a budget on ``device`` is checked against: the CUDA device's, or the machine's.

    Read from the device's properties, which opens no CUDA context here: a context in this process
    would hold memory on the GPU the probes measure.
    """
    if device.startswith("cuda"):
        import torch

        dev = torch.device(device)
        return int(torch.cuda.get_device_properties(dev.index if dev.index is not None else 0).total_memory)
    return machine_memory_bytes()


def default_csv_path(scenario: str, device: str, run_id: str) -> Path:
    """``results/<scenario>-budget_<device>_torch<version>_<time>-<tag>.csv``."""
    import torch

    return results.default_out_path(
        f"{scenario}-budget", device, torch_version=torch.__version__, run_tag=run_id.rsplit("-", 1)[-1]
    )


def plan_budget(
    scenario: str | None,
    *,
    memory: Any = None,
    max_batch: Any = None,
    batch_multiple: Any = None,
    tolerance: Any = None,
    csv: str | Path | None = None,
    **options: Any,
) -> BudgetPlan:
    """Validate everything ``dlbench budget`` takes (``UsageError`` otherwise) and open the CSV."""
    from bench.run.execute import new_run_id

    unknown = sorted(set(options) - set(RUN_OPTIONS))
    if unknown:
        raise TypeError(f"unknown budget option(s) {unknown}; expected some of {sorted(RUN_OPTIONS)}")
    if not scenario:
        raise UsageError("scenario: give a scenario name (see `dlbench list`) or a model of your own")
    try:
        spec = get_scenario(scenario)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if "batch_size" not in spec.parameters():
        raise UsageError(
            f"scenario {spec.name!r} has no batch_size parameter, so there is no batch to search; "
            f"dlbench budget needs a scenario with a batch axis (its parameters: {sorted(spec.parameters())})"
        )
    params = dict(options.get("params") or {})
    if any(spec.canonical(k) == "batch_size" for k in params):
        raise UsageError(
            "batch_size: dlbench budget searches the batch size itself; cap it with --max-batch "
            "instead of giving -p batch_size / --batch-size"
        )
    max_b = parse(int, "--max-batch", DEFAULT_MAX_BATCH if max_batch is None else max_batch, Check("size"))
    multiple = parse(int, "--batch-multiple", 1 if batch_multiple is None else batch_multiple, Check("size"))
    tol = parse(
        float, "--tolerance", DEFAULT_TOLERANCE if tolerance is None else tolerance, Check("probability")
    )
    device = check_device(options.get("device") or default_device())
    total = device_memory_bytes(device)
    if memory is None:
        if not device.startswith("cuda") or total is None:
            raise UsageError(
                "--memory: give the memory budget, e.g. --memory 8GiB (on CUDA it defaults to the "
                "device's memory; a CPU has no such default)"
            )
        budget = total
    else:
        budget = parse_bytes("--memory", memory)
    if total is not None and budget > total:
        what = f"{device}'s memory" if device.startswith("cuda") else "this machine's RAM"
        raise UsageError(
            f"--memory: {memory!r} is {budget} bytes, more than {what} ({total} bytes); give at most that"
        )
    options = {**options, "device": device, "modes": options.get("modes") or "train"}
    req = make_request(scenario, **options)
    for par in req.parallel:
        step = math.lcm(multiple, split_unit(par, req.nproc, req.microbatches))
        if step > max_b:
            raise UsageError(
                f"--max-batch: {max_b} is below the smallest batch {par} can take here ({step}: "
                f"--batch-multiple {multiple} and what {par} over --nproc {req.nproc} splits the batch by)"
            )
    run_id = new_run_id()
    out = Path(csv) if csv is not None else default_csv_path(spec.name, device, run_id)
    run = plan_run(scenario, out=out, budget_bytes=budget, **options)
    run.run_id = run_id
    return BudgetPlan(
        run=run,
        budget_bytes=budget,
        max_batch=max_b,
        batch_multiple=multiple,
        tolerance=tol,
        device_memory_bytes=total,
    )
