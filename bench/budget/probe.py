"""One probe of ``dlbench budget``: build a configuration at one batch size, run one step, report memory.

A probe times nothing. It runs inside an isolated child (``python -m bench.run.child`` with the
request's ``task`` set to ``probe``; a torchrun job's ranks for a parallel strategy,
``bench.run.rank_worker``), so an OOM, a crash or a hang ends only the probe:

1. on CUDA, caps the caching allocator at the budget (``bench.harness.memory.apply_memory_budget``)
   before anything is allocated;
2. builds the step exactly as ``dlbench run`` does (``bench.workload.build_step``: the same
   techniques in the same order; a parallel rank: ``bench.run.parallel.build_parallel_step``);
3. runs the memory pass of ``dlbench run`` (``bench.harness.memory.measure_memory`` with
   ``warm=True``): one full step untracked, so optimizer state exists as in steady state, then one
   step phase by phase under ``MemTracker`` (and, on CUDA, the allocator's per-phase peaks). In
   forward mode the step is one inference forward.

It returns the figures the fit rules read (``bench.budget.fit``): the tracked peak over the
phases, the CUDA reserved peak, and the peak RSS increase of the process over build and steps. The
tracked peak at a batch is the same figure as the ``peak_mem_bytes`` that ``dlbench run`` reports
at that batch, so the row measured at the max batch shows the figure the search compared.
"""

from __future__ import annotations

import os
from typing import Any

from bench.registry import BuildContext, get_scenario

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss_bytes() -> int | None:
    """This process's resident set size now (``/proc/self/statm``), or None where /proc is missing."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak RSS of this process (``VmHWM``) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_since_reset() -> int | None:
    """``VmHWM`` of ``/proc/self/status`` in bytes (the peak since ``reset_peak_rss``), or None."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class RssWatch:
    """The peak RSS increase of this process between ``start()`` and ``increase()``.

    The kernel's peak (``VmHWM``) is reset at the start, so neither start-up nor the parent a child
    was forked from counts (``ru_maxrss`` would carry both). None where /proc cannot tell.
    """

    def __init__(self) -> None:
        self.before: int | None = None
        self.reset = False

    def start(self) -> None:
        self.reset = reset_peak_rss()
        self.before = current_rss_bytes()

    def increase(self) -> int | None:
        peak = peak_rss_since_reset() if self.reset else None
        if peak is None or self.before is None:
            return None
        return max(0, peak - self.before)


def probe_step(step: Any, *, device: str, compiled: bool = False) -> dict[str, Any]:
    """The memory pass of ``dlbench run`` over ``step``: the figures a fit rule reads.

    ``tracked_peak_bytes``: the highest ``MemTracker`` total over the phases; on CUDA
    ``allocated_peak_bytes`` and ``reserved_peak_bytes`` (``max_memory_allocated`` / ``_reserved``,
    per phase, after ``empty_cache``), and ``memory``: the whole ``MemoryResult`` for the record.

    A compiled step (``compiled``) runs eagerly under ``MemTracker`` (dynamo does not run under a
    dispatch mode), so its tracked figures are the eager step's. On CUDA the allocator's peaks of a
    step run compiled, with nothing attached, replace them: that is the step the budget is about. On
    CPU nothing else can see inside compiled code; the figures stay the eager step's and
    ``judged_eager`` says so.
    """
    import gc

    import torch

    from bench.harness.memory import measure_memory

    is_cuda = device.startswith("cuda")
    compiled_peaks: tuple[int, int] | None = None
    if compiled:
        step.run()  # the cold start: compiles (and creates the optimizer state), under the cap on CUDA
        if is_cuda:
            gc.collect()
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            step.run()
            torch.cuda.synchronize(device)
            compiled_peaks = (
                int(torch.cuda.max_memory_allocated(device)),
                int(torch.cuda.max_memory_reserved(device)),
            )
    mem = measure_memory(step, device=device, warm=not compiled)
    tracked = max((int(d["peak_bytes"]) for d in mem.per_phase.values()), default=mem.peak_mem_bytes)
    out = {
        # CPU: peak_mem_bytes *is* the tracked peak; CUDA: it is max_memory_allocated (below)
        "tracked_peak_bytes": mem.peak_mem_bytes if not is_cuda else tracked,
        "allocated_peak_bytes": mem.peak_mem_bytes if is_cuda else None,
        "reserved_peak_bytes": mem.cuda_reserved_peak_bytes,
        "judged_eager": compiled and not is_cuda,
        "memory": mem.to_dict(),
    }
    if compiled_peaks is not None:
        out["allocated_peak_bytes"], out["reserved_peak_bytes"] = compiled_peaks
    return out


def probe(cfg: Any, request: Any) -> dict[str, Any]:
    """Probe one single-process configuration (a ``RunConfig``) under ``request.budget_bytes``."""
    from bench.harness.memory import apply_memory_budget
    from bench.run.measure import cuda_device_current
    from bench.workload import build_step

    with cuda_device_current(cfg.device):
        apply_memory_budget(cfg.device, request.budget_bytes)
        rss = RssWatch()
        rss.start()
        spec = get_scenario(cfg.scenario)
        scfg = spec.make_config(cfg.preset, **cfg.params_dict)
        ctx = BuildContext(device=cfg.device, mode=cfg.mode, seed=cfg.seed, channels_last=cfg.channels_last)
        _workload, step = build_step(
            spec, scfg, ctx, precision=cfg.precision, checkpointing=cfg.checkpointing, compile=cfg.compile
        )
        figures = probe_step(step, device=cfg.device, compiled=cfg.compile != "none")
        figures["rss_increase_bytes"] = rss.increase()
        return figures


def probe_rank(cfg: Any, request: Any, *, rank: int, world_size: int, local_rank: int) -> dict[str, Any]:
    """Probe this rank of a parallel configuration: its share of the global batch, its device's memory.

    Every rank runs the same step (its collectives match); the parent judges the most loaded rank
    (``bench.run.launch.collect_probe``), since the budget is per device.
    """
    from bench.harness.memory import apply_memory_budget
    from bench.run.parallel import build_parallel_step, rank_device

    device = rank_device(cfg, local_rank)
    apply_memory_budget(device, request.budget_bytes)
    rss = RssWatch()
    rss.start()
    _workload, step, _info = build_parallel_step(cfg, rank=rank, world_size=world_size, device=device)
    figures = probe_step(step, device=device, compiled=cfg.compile != "none")
    figures["rss_increase_bytes"] = rss.increase()
    return {"rank": rank, "status": "ok", "reason": "", "device": device, **figures}
