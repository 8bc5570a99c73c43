"""The results schema: one column table that writing, loading, docs, compare and the gate read.

One row per configuration. The column set of a file is fixed when its header is written:

    CORE_COLUMNS  (fixed, ordered; ``schema_version`` first)
    ENV_COLUMNS   (the ``bench.harness.env.env_fingerprint`` keys not already in the core)
    param_<name>  (the scenario's config fields, in dataclass order; ``batch_size`` is a core column)

``COLUMN_TYPES`` gives each core and environment column its type (int, float, bool, str, json);
``load_results`` and ``results/README.md`` (a test compares them) follow it. ``build_row`` turns a
configuration and its typed measurement into a row, here beside the table it fills.

Torch-free and rich-free: compare and the gate load this without paying for torch.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

SCHEMA_VERSION = 1
STATUSES: tuple[str, ...] = ("ok", "skipped", "oom", "error", "timeout")
FAILED_STATUSES: frozenset[str] = frozenset({"oom", "error", "timeout"})
PARAM_PREFIX = "param_"
MAX_REASON_CHARS = 600

# The order of the first block is the documented contract (results/README.md); the rest follows it.
CORE_COLUMNS: tuple[str, ...] = (
    "schema_version",
    "run_id",
    "timestamp",
    "scenario",
    "mode",
    "precision",
    "checkpointing",
    "parallel",
    "world_size",
    "batch_size",
    "device",
    "device_name",
    "torch_version",
    "git_commit",
    "status",
    "reason",
    "n_samples",
    "time_median_ms",
    "time_ci_low_ms",
    "time_ci_high_ms",
    "time_iqr_ms",
    "throughput",
    "throughput_unit",
    "flops_per_step",
    "achieved_tflops",
    "peak_tflops_measured",
    "mfu",
    "peak_mem_bytes",
    "mem_fwd_peak_bytes",
    "mem_bwd_peak_bytes",
    "mem_opt_peak_bytes",
    "mem_params_bytes",
    "mem_grads_bytes",
    "mem_optimizer_bytes",
    "mem_activations_bytes",
    # --- beyond the minimum ---
    "mem_buffers_bytes",
    "mem_inputs_bytes",
    "time_cv",
    "noisy",
    "stop_reason",
    "preset",
    "peak_tflops_datasheet",
    "mfu_datasheet",
    "cuda_reserved_peak_bytes",
    "peak_rss_bytes",
    "mem_method",
    "items_per_step",
    "seed",
    "channels_last",
    "timeout_s",
    "target_rel_ci",
    "max_time_s",
    "elapsed_s",
    "config_key",
    "extra",
    # --- added after schema 1's first release: new columns go here, at the end ---
    "ci_covers",
    "repeats",
    "noise_other_cpu_pct",
    "noise_steal_pct",
    # parallel scenarios (bench.run.launch): the job's shape and its job-level figures
    "nnodes",
    "microbatches",
    "pipeline_schedule",
    "job_throughput",
    "scaling_efficiency",
    "max_rank_peak_mem_bytes",
    "bubble_fraction",
    "comm_bytes_per_step",
    # energy over the timing window (bench.harness.energy); empty where no counter gave a figure
    "energy_j_per_step",
    "energy_j_per_item",
    "avg_power_w",
    "energy_source",
    "energy_scope",
    "energy_devices",
    "energy_window_s",
    # torch.compile (bench.compiling): the mode, and torch's own counters (bench.harness.compile_stats)
    "compile",
    "compile_time_s",
    "graph_breaks",
    "unique_graphs",
    "recompiles",
    # dlbench budget (bench.budget): the memory budget, the largest batch found to fit it, the probes
    "budget_bytes",
    "max_batch",
    "probes",
)

# env_fingerprint keys that are not core columns; unknown keys from a newer harness go into ``extra``.
ENV_COLUMNS: tuple[str, ...] = (
    "python_version",
    "os",
    "hostname",
    "cpu_model",
    "cpu_count",
    "threads",
    "cuda_version",
    "cudnn_version",
    "gpu_driver",
    "gpu_clock_sm_mhz",
    "gpu_clock_mem_mhz",
    "gpu_count",
    "allow_tf32",
)

_STR = ("run_id", "timestamp", "scenario", "mode", "precision", "checkpointing", "parallel", "device",
        "device_name", "torch_version", "git_commit", "status", "reason", "throughput_unit", "stop_reason",
        "preset", "mem_method", "config_key", "python_version", "os", "hostname", "cpu_model",
        "cuda_version", "cudnn_version", "gpu_driver", "ci_covers", "pipeline_schedule", "energy_source",
        "energy_scope", "energy_devices", "compile")  # fmt: skip
_BOOL = ("noisy", "channels_last", "allow_tf32")
_INT = ("schema_version", "world_size", "batch_size", "n_samples", "flops_per_step", "items_per_step", "seed",
        "cpu_count", "threads", "gpu_count", "gpu_clock_sm_mhz", "gpu_clock_mem_mhz", "repeats", "nnodes",
        "microbatches", "comm_bytes_per_step", "graph_breaks", "unique_graphs", "recompiles", "max_batch",
        "probes")  # fmt: skip

# Type of every core and environment column: "str", "int" (bytes, FLOPs, counts), "float", "bool",
# or "json" (an object). Parameter columns take the type of their config field.
COLUMN_TYPES: dict[str, str] = {
    c: (
        "json"
        if c == "extra"
        else "bool"
        if c in _BOOL
        else "int"
        if c in _INT or c.endswith("_bytes")
        else "str"
        if c in _STR
        else "float"
    )
    for c in CORE_COLUMNS + ENV_COLUMNS
}
INT_COLUMNS: tuple[str, ...] = tuple(c for c, t in COLUMN_TYPES.items() if t == "int")
# Numeric columns that may be negative; every other int/float column is a count, a size, a time or
# a rate, never below 0 (``bench.results.loader`` refuses a negative one).
SIGNED_COLUMNS: tuple[str, ...] = ("seed",)
# Columns without which a CSV is not a results file that compare and the report can read.
REQUIRED_COLUMNS: tuple[str, ...] = (
    "schema_version",
    "scenario",
    "mode",
    "precision",
    "checkpointing",
    "device",
    "status",
    "time_median_ms",
    "config_key",
)
# Environment columns that must agree between two rows whose figures are compared (compare, the
# report's AMP / checkpointing / scaling pairs): the same software and the same hardware.
ENV_MATCH_COLUMNS: tuple[str, ...] = ("torch_version", "device", "device_name", "threads", "cpu_model")
BOOL_COLUMNS: tuple[str, ...] = tuple(c for c, t in COLUMN_TYPES.items() if t == "bool")

# Columns filled only by a successful measurement; failed and skipped rows leave them empty.
# Each is read off the typed measurement (``bench.run.measure.Measurement``) by its getter.
_MEMORY_COLUMNS = (
    "peak_mem_bytes", "mem_fwd_peak_bytes", "mem_bwd_peak_bytes", "mem_opt_peak_bytes", "mem_params_bytes",
    "mem_grads_bytes", "mem_optimizer_bytes", "mem_activations_bytes", "mem_buffers_bytes",
    "mem_inputs_bytes", "cuda_reserved_peak_bytes", "peak_rss_bytes",
)  # fmt: skip
_FLOP_COLUMNS = (
    "flops_per_step", "achieved_tflops", "peak_tflops_measured", "mfu",
    "peak_tflops_datasheet", "mfu_datasheet",
)  # fmt: skip


def _throughput(m: Any) -> float | None:
    median_s = m.timing.median_ms / 1e3
    return m.items_per_step / median_s if median_s > 0 else None


def _memory_getter(col: str) -> Callable[[Any], Any]:
    return lambda m: getattr(m.memory, col) if m.memory is not None else None


def _attr_getter(col: str) -> Callable[[Any], Any]:
    return lambda m: getattr(m, col, None)


MEASUREMENT_GETTERS: dict[str, Callable[[Any], Any]] = {
    "n_samples": lambda m: m.timing.n,
    "time_median_ms": lambda m: m.timing.median_ms,
    "time_ci_low_ms": lambda m: m.timing.ci_low_ms,
    "time_ci_high_ms": lambda m: m.timing.ci_high_ms,
    "time_iqr_ms": lambda m: m.timing.iqr_ms,
    "time_cv": lambda m: m.timing.cv,
    # noisy: the timing's own criteria, the noise sentinel saw a busy machine (Measurement.machine_busy),
    # or torch.compile compiled during the timed steps (a recompile: the step time includes compiling)
    "noisy": lambda m: (
        bool(m.timing.noisy)
        or bool(getattr(m, "machine_busy", False))
        or bool(getattr(getattr(m, "compile", None), "timed_compiles", 0))
    ),
    # which noise the row's CI covers: one process (R=1) or the spread between R processes
    "ci_covers": lambda m: getattr(m.timing, "ci_covers", "within-process"),
    "noise_other_cpu_pct": lambda m: getattr(m, "noise_other_cpu_pct", None),
    "noise_steal_pct": lambda m: getattr(m, "noise_steal_pct", None),
    "stop_reason": lambda m: m.timing.stop_reason,
    "items_per_step": lambda m: m.items_per_step,
    "throughput": _throughput,
    "throughput_unit": lambda m: f"{m.unit}/s",
    "mem_method": lambda m: m.memory.method if m.memory is not None else None,
    **{c: _memory_getter(c) for c in _MEMORY_COLUMNS},
    **{c: _attr_getter(c) for c in _FLOP_COLUMNS},
}
# Job-level figures of a parallel row (``bench.run.launch.ParallelMeasurement``; empty when a
# measurement does not carry them). ``build_row`` fills them for single-process rows: one rank.
_JOB_COLUMNS = ("job_throughput", "max_rank_peak_mem_bytes", "bubble_fraction", "comm_bytes_per_step")
MEASUREMENT_GETTERS.update({c: _attr_getter(c) for c in _JOB_COLUMNS})


def _energy_getter(col: str) -> Callable[[Any], Any]:
    """An energy column from ``m.energy`` (``bench.harness.energy.EnergyResult``), only when it has
    figures: no counter, a window too short or a counter that did not move leave every cell empty."""
    attr = {"energy_window_s": "window_s", "energy_source": "source", "energy_scope": "scope"}.get(col, col)

    def get(m: Any) -> Any:
        e = getattr(m, "energy", None)
        if e is None or getattr(e, "status", "") != "ok":
            return None
        if col == "energy_devices":
            return ",".join(e.devices) or None
        return getattr(e, attr, None)

    return get


def _compile_getter(col: str) -> Callable[[Any], Any]:
    """A compile column from ``m.compile`` (``bench.harness.compile_stats.CompileResult``); empty for an
    eager row."""
    return lambda m: getattr(getattr(m, "compile", None), col, None)


_COMPILE_COLUMNS = ("compile_time_s", "graph_breaks", "unique_graphs", "recompiles")
MEASUREMENT_GETTERS.update({c: _compile_getter(c) for c in _COMPILE_COLUMNS})

_ENERGY_COLUMNS = ("energy_j_per_step", "energy_j_per_item", "avg_power_w", "energy_source", "energy_scope",
                   "energy_devices", "energy_window_s")  # fmt: skip
MEASUREMENT_GETTERS.update({c: _energy_getter(c) for c in _ENERGY_COLUMNS})
MEASUREMENT_COLUMNS: tuple[str, ...] = tuple(c for c in CORE_COLUMNS if c in MEASUREMENT_GETTERS)


class SchemaMismatchError(ValueError):
    """A row or a file does not match the column set it is being written with."""


def param_column(name: str) -> str:
    """CSV column of a scenario parameter: ``batch_size`` stays as is, the others get ``param_``."""
    return name if name == "batch_size" else f"{PARAM_PREFIX}{name}"


def columns_for(param_names: Iterable[str]) -> list[str]:
    """The full ordered column list of a file holding a scenario with these parameters."""
    cols = list(CORE_COLUMNS) + list(ENV_COLUMNS)
    for name in param_names:
        col = param_column(name)
        if col not in cols:
            cols.append(col)
    return cols


def _key_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    return str(value)


def config_key(
    *,
    scenario: str,
    mode: str,
    precision: str,
    checkpointing: str,
    device: str,
    params: Mapping[str, Any],
    channels_last: bool = False,
    seed: int = 0,
    parallel: str = "none",
    world_size: int = 1,
    nnodes: int = 1,
    microbatches: int = 0,
    pipeline_schedule: str = "",
    compile: str = "none",
) -> str:
    """Identity of a configuration for ``--resume``: what was measured, not how long or when.

    Example: ``attention|train|amp-bf16|none|cpu|cl=false|seed=0|batch_size=4,causal=false,seq_len=256``.
    The seed is part of it (a run with another ``--seed`` builds other weights and data). A parallel
    configuration appends its strategy and shape (``|par=ddp|ws=2``; ``|nn=2`` across nodes;
    ``|mb=4|sched=1f1b`` for a pipeline), so ``parallel == "none"`` keeps the key it always had and
    ``baseline_key`` finds the single-process row a parallel row is compared with. A compiled
    configuration appends its mode before that (``|compile=default``), so an eager key is unchanged
    and a compiled parallel row's baseline is the compiled single-process row.
    """
    p = ",".join(f"{k}={_key_value(params[k])}" for k in sorted(params))
    cl = "true" if channels_last else "false"
    key = f"{scenario}|{mode}|{precision}|{checkpointing}|{device}|cl={cl}|seed={int(seed)}|{p}"
    if compile != "none":
        key += f"|compile={compile}"
    if parallel != "none":
        key += f"{_PAR_MARK}{parallel}|ws={int(world_size)}"
        if nnodes > 1:
            key += f"|nn={int(nnodes)}"
        if parallel == "pipeline":
            key += f"|mb={int(microbatches)}|sched={pipeline_schedule}"
    return key


_PAR_MARK = "|par="


def baseline_key(key: str) -> str:
    """The ``config_key`` of the single-process (``parallel == "none"``) twin of a configuration."""
    return key.split(_PAR_MARK, 1)[0]


def scaling_efficiency(row: Mapping[str, Any], baselines: Mapping[str, float]) -> float | None:
    """``job_throughput / (world_size * throughput of the none row)`` of an ok row, or None.

    ``baselines`` maps the ``config_key`` of ok ``parallel == "none"`` rows (this sweep's and the
    file's) to their throughput; a row without its none twin gets None (an empty cell).
    """
    job, ws = row.get("job_throughput"), row.get("world_size")
    base = baselines.get(baseline_key(str(row.get("config_key", ""))))
    if row.get("status") != "ok" or not job or not ws or not base:
        return None
    return float(job) / (int(ws) * float(base))


def _with_seed(key: str, seed: Any) -> str:
    """A key written before the seed was part of it, with the row's ``seed`` column put in."""
    parts = key.split("|", 6)
    if len(parts) < 6 or not parts[5].startswith("cl=") or (len(parts) == 7 and parts[6].startswith("seed=")):
        return key
    try:
        s = int(seed) if str(seed).strip() else 0
    except ValueError:
        return key
    parts.insert(6, f"seed={s}")
    return "|".join(parts)


def format_cell(value: Any) -> str:
    """One CSV cell: empty for None/NaN, JSON for containers, one line for text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    text = str(value)
    return " | ".join(line.strip() for line in text.splitlines() if line.strip()) if "\n" in text else text


def one_line(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """A reason fit for a CSV cell: one line, at most ``limit`` characters."""
    flat = format_cell(text)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def build_row(
    cfg: Any,
    outcome: Any,
    *,
    run_id: str,
    env: Mapping[str, Any],
    request: Any,
    columns: Sequence[str],
) -> dict[str, Any]:
    """The results row of one configuration (failed rows keep config and env, no measurements).

    ``cfg`` is a ``bench.run.grid.RunConfig``, ``outcome`` a ``bench.run.execute.Outcome`` whose
    ``measurement`` (when ok) is a typed ``Measurement``, ``request`` the ``RunRequest``.
    """
    colset = set(columns)
    extra: dict[str, Any] = {}
    row: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "scenario": cfg.scenario,
        "mode": cfg.mode,
        "precision": cfg.precision,
        "checkpointing": cfg.checkpointing,
        "compile": getattr(cfg, "compile", "none"),
        "parallel": getattr(cfg, "parallel", "none"),
        "world_size": getattr(cfg, "world_size", 1),
        "nnodes": getattr(cfg, "nnodes", 1),
        "microbatches": getattr(cfg, "microbatches", 0) or None,  # pipelines only
        "pipeline_schedule": getattr(cfg, "pipeline_schedule", "") or None,
        "device": cfg.device,
        "status": outcome.status,
        "reason": one_line(outcome.reason),
        "preset": cfg.preset,
        "seed": cfg.seed,
        "channels_last": cfg.channels_last,
        # without isolation nothing enforces the timeout: the row must not claim one (a parallel
        # job is always a torchrun job under the timeout)
        "timeout_s": request.timeout_s
        if request.isolation or getattr(cfg, "parallel", "none") != "none"
        else None,
        "target_rel_ci": request.target_rel_ci,
        "max_time_s": request.max_time_s,
        "repeats": getattr(request, "repeat", 1),
        "budget_bytes": getattr(request, "budget_bytes", None),
        "elapsed_s": round(outcome.elapsed_s, 3),
        "config_key": cfg.key,
    }
    for k, v in env.items():
        if k == "device":
            continue  # the row's device is the configuration's
        if k in colset:
            row[k] = v
        else:
            extra[f"env.{k}"] = v
    for name, value in cfg.params:
        row[param_column(name)] = value
    m = outcome.measurement
    if outcome.status == "ok" and m is not None:
        for col, get in MEASUREMENT_GETTERS.items():
            row[col] = get(m)
        extra.update(m.extra or {})
        if row["parallel"] == "none":  # one rank: the job is the process, nothing is communicated
            row.update(
                job_throughput=row["throughput"],
                max_rank_peak_mem_bytes=row["peak_mem_bytes"],
                comm_bytes_per_step=0,
                scaling_efficiency=1.0,  # its own baseline; parallel rows: bench.run.execute fills it
            )
    row["extra"] = extra or None
    return row


def samples_record(row: Mapping[str, Any], outcome: Any) -> dict[str, Any]:
    """The sidecar record of a row: raw per-iteration samples and the full timing/memory results.

    A row of ``--repeat R`` (R >= 2) also carries ``repeats``: one record per process
    (``median_ms``, ``ci_low_ms``, ``ci_high_ms``, ``n``, ``samples_ms``, ...); ``samples_ms`` is
    then all of them pooled, in repeat order.
    """
    m = outcome.measurement
    timing = {k: v for k, v in m.timing.to_dict().items() if k != "samples_ms"} if m is not None else {}
    record = {
        "scenario": row.get("scenario"),
        "status": outcome.status,
        "samples_ms": list(m.timing.samples_ms) if m is not None else [],
        "timing": timing,
        "memory": m.memory.to_dict() if m is not None and m.memory is not None else None,
    }
    energy = getattr(m, "energy", None)
    if energy is not None:  # the figures with their readings, or the reason the cells are empty
        record["energy"] = energy.to_dict()
    comp = getattr(m, "compile", None)
    if comp is not None:  # torch.compile: graph-break and recompile reasons, what was compiled, the cache
        record["compile"] = comp.to_dict()
    if getattr(outcome, "repeats", None):
        record["repeats"] = list(outcome.repeats)
    if getattr(m, "ranks", None):  # a parallel row: every rank's own figures (bench.run.launch)
        record["ranks"] = list(m.ranks)
    return record
