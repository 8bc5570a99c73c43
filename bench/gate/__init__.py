"""``dlbench gate``: a performance regression gate that does not cry wolf on a noisy machine.

Two kinds of evidence, each where it is reliable:

* timing, measured **interleaved** (``interleave``): BASE and NEW run in persistent worker
  processes (``worker``) that take turns timing short slices, so both sides see the same time
  windows and the machine's drift (46 % between separate runs here) cancels in each slice's ratio;
  BASE and NEW are git refs (exported into a folder dlbench owns), directories, or two variants
  of one configuration in the same tree (``trees``);
* deterministic figures, compared **exactly** (``baseline``): FLOPs per step and tracked memory
  bytes per phase of a small scenario set, against ``results/baseline/baseline.json``;
* timing checks for CI (``perf``): interleaved NEW/BASE ratios of dlcore variants over their torch
  references, against reference ratios in ``results/baseline/perf.json`` within a tolerance.

Library only (no rich, no typer); ``bench.cli.gate`` is the command line.
"""

from bench.gate.interleave import (
    ConfigMismatch,
    GateOptions,
    GatePlan,
    GateResult,
    SliceRecord,
    check_slice_count,
    measure_trees,
    min_slices,
    parse_threshold,
    plan_gate,
    render_markdown,
    run_gate,
    slice_order,
)
from bench.gate.worker import PLANT_ENV_VAR, WorkerClient, WorkerError

__all__ = [
    "PLANT_ENV_VAR",
    "ConfigMismatch",
    "GateOptions",
    "GatePlan",
    "GateResult",
    "SliceRecord",
    "WorkerClient",
    "WorkerError",
    "check_slice_count",
    "measure_trees",
    "min_slices",
    "parse_threshold",
    "plan_gate",
    "render_markdown",
    "run_gate",
    "slice_order",
]
