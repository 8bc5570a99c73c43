"""Measure one configuration: build the workload once, then three separate passes over it.

1. timing  -- ``bench.harness.timing.time_step`` on the bare step: nothing is tracking memory or
              counting FLOPs, so tracking costs no time here. Its warm-up also runs backward and the
              optimizer once, so lazy state (AdamW moments, autotuning, allocator pools) exists.
              An energy meter (``bench.harness.energy_meter.EnergyMeter``, Zeus) brackets exactly the
              timed steps; with a counter present the sampling lasts at least its minimum window.
2. memory  -- ``bench.harness.memory.measure_memory(step, warm=True)``: per-phase peaks and the
              params / grads / optimizer state / activations split, after the timing pass.
3. FLOPs   -- ``bench.harness.flops.count_flops(step)``: one step under ``FlopCounterMode``.

A compiled configuration (``RunConfig.compile``) first runs its cold start: the step's first call,
timed apart (``compile_time_s`` is it less one compiled step), then the timing pass as above, while a
``bench.harness.compile_stats.CompileWatch`` reads torch's counters (graph breaks, graphs,
recompiles; a compilation during the timed steps flags the row ``noisy``). torch.compile does not
run under a ``TorchDispatchMode`` (dynamo skips the frame and runs it eagerly), and MemTracker and
FlopCounterMode are such modes: the memory and FLOP passes of a compiled row therefore measure the
same step run eagerly. The FLOPs are the model's either way; the memory is the eager step's, and
``mem_method`` says so (``mem_tracker:eager``).

Then the derived figures: throughput = items_per_step / median seconds (``<unit>/s``), achieved
TFLOP/s = FLOPs / median seconds / 1e12, MFU against the peak measured on the spot by a large
matmul in the run's precision (``measured_peak_tflops``, cached per machine) and against a dense
datasheet peak where the device is known (``mfu_datasheet``; for fp32 on CUDA with TF32 matmuls
allowed, the TF32 peak: ``bench.harness.peak.matmul_precision``).

The result is a typed ``Measurement`` (the ``TimingResult`` with its raw samples, the
``MemoryResult``, the FLOP and MFU figures); it crosses the child/parent boundary as JSON
(``to_dict`` / ``from_dict``) and becomes columns only in ``bench.results.schema.build_row``.

A memory or FLOP pass that fails after a good timing pass leaves its columns empty and says why in
``reason``; the row stays ``ok`` because the timing is valid. A failure while building or timing
propagates (the child turns it into an ``oom`` or ``error`` row).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bench.registry import BuildContext, get_scenario
from bench.run.grid import RunConfig
from bench.run.request import RunRequest


@dataclass
class Measurement:
    """What measuring one configuration produced, typed; ``build_row`` turns it into columns."""

    timing: Any  # bench.harness.timing.TimingResult (raw samples and how they were taken)
    memory: Any | None  # bench.harness.memory.MemoryResult, None when the memory pass failed
    items_per_step: int
    unit: str
    flops_per_step: int | None = None
    achieved_tflops: float | None = None
    peak_tflops_measured: float | None = None
    mfu: float | None = None
    peak_tflops_datasheet: float | None = None
    mfu_datasheet: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # the workload's own extra columns
    notes: list[str] = field(default_factory=list)  # go into the row's reason
    # the noise sentinel (bench.harness.noise) over the timing pass; None where /proc cannot tell
    noise_other_cpu_pct: float | None = None
    noise_steal_pct: float | None = None
    # energy over the timing window (bench.harness.energy.EnergyResult); None: not measured
    energy: Any | None = None
    # torch.compile's cost and counters (bench.harness.compile_stats.CompileResult); None: eager
    compile: Any | None = None

    @property
    def machine_busy(self) -> bool:
        """Other processes used more than ``NOISY_OTHER_CPU_PCT`` of the CPUs while timing."""
        from bench.harness.noise import is_busy

        return is_busy(self.noise_other_cpu_pct)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["timing"] = self.timing.to_dict()
        d["memory"] = self.memory.to_dict() if self.memory is not None else None
        d["energy"] = self.energy.to_dict() if self.energy is not None else None
        d["compile"] = self.compile.to_dict() if self.compile is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        from bench.harness.compile_stats import CompileResult
        from bench.harness.energy import EnergyResult
        from bench.harness.memory import MemoryResult
        from bench.harness.timing import TimingResult

        kw = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        kw["timing"] = TimingResult.from_dict(d["timing"])
        kw["memory"] = MemoryResult(**d["memory"]) if d.get("memory") else None
        kw["energy"] = EnergyResult.from_dict(d.get("energy"))
        kw["compile"] = CompileResult.from_dict(d.get("compile"))
        return cls(**kw)


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
    cfg: RunConfig, request: RunRequest | None = None, *, device_name: str | None = None
) -> Measurement:
    """Build the configuration and run the timing, memory and FLOP passes (in that order).

    On ``cuda:N`` the device is made current for all of it (``cuda_device_current``). With a memory
    budget (``request.budget_bytes``, ``dlbench budget``) a CUDA device's allocator is capped at it
    first, so the steps are timed as they would run on a card of that size.
    """
    from bench.harness.memory import apply_memory_budget

    req = request or RunRequest()
    with cuda_device_current(cfg.device):
        apply_memory_budget(cfg.device, req.budget_bytes)
        return _measure(cfg, req, device_name)


def _measure(cfg: RunConfig, req: RunRequest, device_name: str | None) -> Measurement:
    from bench.harness.energy_meter import EnergyMeter
    from bench.harness.flops import count_flops
    from bench.harness.memory import measure_memory
    from bench.harness.noise import NoiseMonitor
    from bench.harness.timing import WindowChain, time_step
    from bench.workload import build_step

    spec = get_scenario(cfg.scenario)
    scfg = spec.make_config(cfg.preset, **cfg.params_dict)
    ctx = BuildContext(device=cfg.device, mode=cfg.mode, seed=cfg.seed, channels_last=cfg.channels_last)
    # the meter first: Zeus's helper processes (RAPL's wrap-around tracker) start while the model builds
    with EnergyMeter([cfg.device]) as meter:
        workload, step = build_step(
            spec, scfg, ctx, precision=cfg.precision, checkpointing=cfg.checkpointing, compile=cfg.compile
        )
        # 0. a compiled step's cold start: its first call compiles (timed apart from the steps)
        watch = compile_cold_start(step, cfg, workload.extra.get("compiled", ""))

        # 1. timing: the bare step, nothing attached; the noise sentinel reads /proc around it, the
        # energy meter brackets exactly the timed steps (and the compile watch sees what compiles then)
        with NoiseMonitor() as noise:
            timing = time_step(
                step,
                device=cfg.device,
                warmup_iters=req.warmup_iters,
                min_samples=req.min_samples,
                max_samples=req.max_samples,
                target_rel_ci=req.target_rel_ci,
                max_time_s=req.max_time_s,
                min_time_s=meter.min_time_s(req.max_time_s),
                window=WindowChain(watch, meter),
            )
    compiled = None
    if watch is not None:
        watch.stop()
        compiled = watch.result(step_s=timing.median_ms / 1e3)
    energy = meter.result(steps=timing.n * timing.calls_per_sample, items_per_step=workload.items_per_step)
    notes: list[str] = []
    if energy.status == "failed":  # this row's window gave no figure (no counter at all: sidecar only)
        notes.append(energy.reason)
    if timing.noisy:
        notes.append(f"noisy: {'; '.join(timing.noisy_reasons)} (stopped by {timing.stop_reason})")
    if noise.figures.busy:
        notes.append(f"noisy: {noise.figures.reason()}")
    if compiled is not None and compiled.noisy_reason:
        notes.append(compiled.noisy_reason)

    # 2. memory: a separate pass, after timing
    memory = None
    try:
        memory = measure_memory(step, device=cfg.device, warm=True)
        if compiled is not None:  # dynamo does not run under MemTracker's dispatch mode: eager figures
            memory.method += ":eager"
    except Exception as exc:  # the timing is still valid; say why memory is missing
        notes.append(f"memory pass failed: {type(exc).__name__}: {exc}")

    # 3. FLOPs: one step under the FLOP counter
    flops: int | None = None
    try:
        flops = int(count_flops(step))
    except Exception as exc:
        notes.append(f"flop pass failed: {type(exc).__name__}: {exc}")

    m = Measurement(
        timing=timing,
        memory=memory,
        items_per_step=workload.items_per_step,
        unit=workload.unit,
        flops_per_step=flops,
        extra=dict(workload.extra),
        notes=notes,
        noise_other_cpu_pct=noise.figures.other_cpu_pct,
        noise_steal_pct=noise.figures.steal_pct,
        energy=energy,
        compile=compiled,
    )
    _set_mfu(m, timing.median_ms / 1e3, cfg.device, cfg.precision, device_name)
    return m


def compile_cold_start(step: Any, cfg: RunConfig, compiled: str) -> Any:
    """For a compiled configuration, a ``CompileWatch`` that has run and timed the step's first call
    (its cold start); None for an eager one. A compilation error propagates (an ``error`` row)."""
    if cfg.compile == "none":
        return None
    import torch

    from bench.harness.compile_stats import CompileWatch, inductor_cache_note

    # dynamo's in-memory caches as in a fresh process: a configuration measured earlier in this
    # process (--no-isolation) must not serve this one's cold start (files caches are inductor's own)
    torch._dynamo.reset()
    watch = CompileWatch(
        cfg.compile, compiled=[r for r in compiled.split(", ") if r], inductor_cache=inductor_cache_note()
    )
    watch.cold_start(step.run, cfg.device)
    return watch


def _set_mfu(m: Measurement, median_s: float, device: str, precision: str, device_name: str | None) -> None:
    for name, value in mfu_fields(
        m.flops_per_step, median_s, device, precision, device_name, m.notes
    ).items():
        setattr(m, name, value)


def mfu_fields(
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
    peak: float | None
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
