"""Measure one configuration: build the workload once, then three separate passes over it.

1. timing  -- ``bench.harness.timing.time_step`` on the bare step: nothing is tracking memory or
              counting FLOPs, so tracking costs no time here. Its warm-up also runs backward and the
              optimizer once, so lazy state (AdamW moments, autotuning, allocator pools) exists.
2. memory  -- ``bench.harness.memory.measure_memory(step, warm=True)``: per-phase peaks and the
              params / grads / optimizer state / activations split, after the timing pass.
3. FLOPs   -- ``bench.harness.flops.count_flops(step)``: one step under ``FlopCounterMode``.

Then the derived figures: throughput = items_per_step / median seconds (``<unit>/s``), achieved
TFLOP/s = FLOPs / median seconds / 1e12, MFU against the peak measured on the spot by a large
matmul in the run's precision (``measured_peak_tflops``, cached per machine) and against a dense
datasheet peak where the device is known (``mfu_datasheet``; for fp32 on CUDA with TF32 matmuls
allowed, the TF32 peak: ``bench.harness.peak.matmul_precision``).

A memory or FLOP pass that fails after a good timing pass leaves its columns empty and says why in
``reason``; the row stays ``ok`` because the timing is valid. A failure while building or timing
propagates (the child turns it into an ``oom`` or ``error`` row).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bench.registry import BuildContext, get_scenario
from bench.workload import make_step, seeded


@dataclass(frozen=True)
class MeasureOptions:
    """How long and how precisely to time each configuration (and the child's wall-clock limit)."""

    target_rel_ci: float = 0.02  # stop when the 95% CI of the median is within +-2% of it
    max_time_s: float = 5.0  # ... or when this much time went into timed iterations
    warmup_iters: int = 3
    min_samples: int = 10
    max_samples: int = 10_000
    timeout_s: float = 600.0  # the runner kills a child after this long (build + all passes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Measurement:
    """Result of measuring one configuration: row fields plus what goes to the samples sidecar."""

    fields: dict[str, Any]  # measurement columns of the results row (bench.results.MEASUREMENT_COLUMNS)
    samples_ms: list[float]
    timing: dict[str, Any]
    memory: dict[str, Any] | None
    extra: dict[str, Any] = field(default_factory=dict)  # the workload's own extra columns
    notes: list[str] = field(default_factory=list)  # go into the row's reason

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _apply_channels_last(workload: Any) -> None:
    import torch

    workload.model.to(memory_format=torch.channels_last)
    workload.inputs = tuple(
        x.contiguous(memory_format=torch.channels_last) if isinstance(x, torch.Tensor) and x.dim() == 4 else x
        for x in workload.inputs
    )


@contextmanager
def cuda_device_current(device: str) -> Iterator[None]:
    """Make ``device`` (``cuda:N``) the current CUDA device inside the block; the previous one after.

    CUDA events record on the current device's stream, and ``empty_cache`` / the allocator's
    statistics act on the current device: without this, ``--device cuda:1`` would time an empty
    stream of cuda:0. ``cpu`` and a bare ``cuda`` (the current device already) change nothing.
    """
    import torch

    dev = torch.device(device)
    if dev.type != "cuda" or dev.index is None:
        yield
        return
    previous = torch.cuda.current_device()
    torch.cuda.set_device(dev)
    try:
        yield
    finally:
        torch.cuda.set_device(previous)


def measure(
    *,
    scenario: str,
    mode: str,
    precision: str,
    checkpointing: str,
    device: str,
    params: dict[str, Any],
    preset: str = "default",
    seed: int = 0,
    channels_last: bool = False,
    device_name: str | None = None,
    options: MeasureOptions | None = None,
) -> Measurement:
    """Build the configuration and run the timing, memory and FLOP passes (in that order).

    On ``cuda:N`` the device is made current for all of it (``cuda_device_current``).
    """
    with cuda_device_current(device):
        return _measure(
            scenario=scenario,
            mode=mode,
            precision=precision,
            checkpointing=checkpointing,
            device=device,
            params=params,
            preset=preset,
            seed=seed,
            channels_last=channels_last,
            device_name=device_name,
            options=options,
        )


def _measure(
    *,
    scenario: str,
    mode: str,
    precision: str,
    checkpointing: str,
    device: str,
    params: dict[str, Any],
    preset: str,
    seed: int,
    channels_last: bool,
    device_name: str | None,
    options: MeasureOptions | None,
) -> Measurement:
    from bench.harness.flops import count_flops
    from bench.harness.memory import measure_memory
    from bench.harness.timing import time_step

    opts = options or MeasureOptions()
    spec = get_scenario(scenario)
    cfg = spec.make_config(preset, **params)
    ctx = BuildContext(device=device, mode=mode, seed=seed, channels_last=channels_last)
    with seeded(seed):
        workload = spec.build(cfg, ctx)
    if channels_last:
        _apply_channels_last(workload)
    step = make_step(workload, mode=mode, precision=precision, checkpointing=checkpointing, device=device)
    notes: list[str] = []

    # 1. timing: the bare step, nothing attached
    timing = time_step(
        step,
        device=device,
        warmup_iters=opts.warmup_iters,
        min_samples=opts.min_samples,
        max_samples=opts.max_samples,
        target_rel_ci=opts.target_rel_ci,
        max_time_s=opts.max_time_s,
    )
    median_s = timing.median_ms / 1e3
    fields: dict[str, Any] = {
        "n_samples": len(timing.samples_ms),
        "time_median_ms": timing.median_ms,
        "time_ci_low_ms": timing.ci_low_ms,
        "time_ci_high_ms": timing.ci_high_ms,
        "time_iqr_ms": timing.iqr_ms,
        "time_cv": timing.cv,
        "noisy": bool(timing.noisy),
        "stop_reason": timing.stop_reason,
        "items_per_step": workload.items_per_step,
        "throughput": workload.items_per_step / median_s if median_s > 0 else None,
        "throughput_unit": f"{workload.unit}/s",
    }
    if timing.noisy:
        why = getattr(timing, "noisy_reasons", None) or [f"CV {timing.cv:.1%}"]
        notes.append(f"noisy: {'; '.join(why)} (stopped by {timing.stop_reason})")

    # 2. memory: a separate pass, after timing
    memory: dict[str, Any] | None = None
    try:
        mem = measure_memory(step, device=device, warm=True)
        memory = mem.to_dict()
        for name in (
            "peak_mem_bytes",
            "mem_fwd_peak_bytes",
            "mem_bwd_peak_bytes",
            "mem_opt_peak_bytes",
            "mem_params_bytes",
            "mem_grads_bytes",
            "mem_optimizer_bytes",
            "mem_activations_bytes",
            "mem_buffers_bytes",
            "mem_inputs_bytes",
            "cuda_reserved_peak_bytes",
            "peak_rss_bytes",
        ):
            fields[name] = getattr(mem, name, None)
        fields["mem_method"] = getattr(mem, "method", None)
    except Exception as exc:  # the timing is still valid; say why memory is missing
        notes.append(f"memory pass failed: {type(exc).__name__}: {exc}")

    # 3. FLOPs: one step under the FLOP counter
    flops: int | None = None
    try:
        flops = int(count_flops(step))
        fields["flops_per_step"] = flops
    except Exception as exc:
        notes.append(f"flop pass failed: {type(exc).__name__}: {exc}")

    fields.update(_mfu_fields(flops, median_s, device, precision, device_name, notes))
    return Measurement(
        fields=fields,
        samples_ms=list(timing.samples_ms),
        timing=timing.to_dict(),
        memory=memory,
        extra=dict(workload.extra),
        notes=notes,
    )


def _mfu_fields(
    flops: int | None,
    median_s: float,
    device: str,
    precision: str,
    device_name: str | None,
    notes: list[str],
) -> dict[str, Any]:
    """achieved TFLOP/s, the measured and datasheet peaks, and MFU against each."""
    from bench.harness.peak import datasheet_peak_tflops, matmul_precision, measured_peak_tflops

    out: dict[str, Any] = {}
    achieved = flops / median_s / 1e12 if flops and median_s > 0 else None
    out["achieved_tflops"] = achieved
    try:
        peak = float(measured_peak_tflops(device, precision, cache=True))
    except Exception as exc:
        peak = None
        notes.append(f"peak measurement failed: {type(exc).__name__}: {exc}")
    out["peak_tflops_measured"] = peak
    out["mfu"] = achieved / peak if achieved is not None and peak else None
    if out["mfu"] is not None and out["mfu"] > 1.0:
        notes.append(
            f"mfu {out['mfu']:.2f} > 1: the cached matmul peak ({peak:.4g} TFLOP/s) is too low, probably "
            "measured on a busy machine; re-measure with DLBENCH_PEAK_TTL_S=0"
        )
    # fp32 on CUDA with TF32 allowed runs its matmuls as TF32: compare against that column
    sheet = datasheet_peak_tflops(device_name, matmul_precision(precision, device)) if device_name else None
    out["peak_tflops_datasheet"] = sheet
    out["mfu_datasheet"] = achieved / sheet if achieved is not None and sheet else None
    return out
