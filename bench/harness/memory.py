"""Per-phase memory of one step: peaks, and live bytes split into params / grads / optimizer / activations.

A pass separate from timing (tracking slows every op down). ``measure_memory``:

1. with ``warm=True`` runs one full step untracked, so optimizer state exists and lazily built
   caches are filled, as in steady state;
2. runs the phases of one more step one by one (``step.phases``: forward, backward, optimizer, or
   one custom phase) under one tracker. On CUDA, ``torch.cuda.reset_peak_memory_stats`` before each
   phase and ``max_memory_allocated`` / ``max_memory_reserved`` after it (synchronized) give the
   allocator's per-phase peaks (``empty_cache`` first, so the reserved peak is this step's and not
   left over from an earlier pass). ``empty_cache`` acts on the current device: ``bench.run.measure``
   makes ``cuda:N`` current for the whole measurement.

The tracker, on every device, is torch's ``torch.distributed._tools.mem_tracker.MemTracker`` (a
``TorchDispatchMode`` that weakly references every tensor storage that ops create, and classifies
it as parameter, buffer, gradient, activation (forward), temporary (backward), optimizer state, or
"other" for tensors registered from outside — here the batch). It is used rather than a home-grown
mode because it already attributes gradients (through gradient hooks installed at the first
forward) and optimizer state (through global optimizer step hooks), and exists with the same API
in torch 2.11 and 2.13. Per-phase peaks are
added by a subclass whose ``_update_peak_stats`` (called by MemTracker after every op) also keeps,
for the current phase, the snapshot with the highest total on the measured device; a phase starts
from the live bytes at its start, like ``reset_peak_memory_stats`` does.

Exact and deterministic: the figures are sums of storage sizes (``numel * element_size``; on CUDA
rounded up to the allocator's 512-byte blocks, as MemTracker does), so a test can check them
against closed forms. What the tracker cannot see: memory a kernel allocates and frees inside one
op (workspaces), allocator fragmentation and caching (the CUDA figures above cover those), and
tensors created outside the tracked step and not registered (only model, optimizer and batch are).
``mem_activations_bytes`` is the peak, over the step, of bytes labelled "activation": tensors
created during the forward phase and still alive (what autograd saves for backward, the output,
forward temporaries not yet freed). It does not include:

* backward temporaries (gradients of activations, and a freshly computed weight gradient until
  its gradient hook relabels it "gradient");
* tensors recomputed by activation checkpointing during backward. MemTracker recognises forward
  (and recomputation) through module hooks; dlcore's checkpointing replaces the module's
  ``forward`` and recomputes by calling the original one directly, not through
  ``module.__call__``, so those hooks do not fire and the recomputed tensors are labelled
  "temporary". With checkpointing, the recomputation peak is therefore not in
  ``mem_activations_bytes``.

Both are in ``peak_mem_bytes`` and the per-phase peaks (``mem_bwd_peak_bytes``), and broken out in
``per_phase[phase]["temporaries_peak_bytes"]`` / ``at_peak`` (the samples sidecar's ``memory``).

Only storages on the measured device are counted (on CUDA, non-capturable optimizers keep their
``step`` counters on the CPU: not counted there).
"""

from __future__ import annotations

import gc
import resource
import sys
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

import torch
from torch.distributed._tools.mem_tracker import MemTracker
from torch.utils._pytree import tree_flatten

# MemTracker category values -> the names used in results.
CATEGORIES: dict[str, str] = {
    "Parameter": "parameters",
    "Buffer": "buffers",
    "Gradient": "gradients",
    "Optstate": "optimizer",
    "Activation": "activations",
    "Temp": "temporaries",
    "Other": "inputs",
}
_TOTAL = "Total"


@dataclass
class MemoryResult:
    """Memory figures of one step (bytes). See the module docstring for what is counted and how."""

    peak_mem_bytes: int  # CUDA: max_memory_allocated over the step; else the tracker's peak live bytes
    mem_fwd_peak_bytes: int | None  # per-phase peaks (None when the step has no such phase)
    mem_bwd_peak_bytes: int | None
    mem_opt_peak_bytes: int | None
    mem_params_bytes: int
    mem_grads_bytes: int
    mem_optimizer_bytes: int  # optimizer state at the end of a phase (temporaries of .step() excluded)
    mem_activations_bytes: int  # peak of forward-created tensors (no recompute, no bwd temps); see docstring
    cuda_reserved_peak_bytes: int | None
    peak_rss_bytes: int  # peak resident set size of the whole process so far
    method: str  # "cuda+mem_tracker" or "mem_tracker"
    per_phase: dict[str, Any] = field(default_factory=dict)  # phase -> detail (see measure_memory)
    mem_buffers_bytes: int = 0
    mem_inputs_bytes: int = 0  # the batch (tensors of Workload.inputs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for the sidecar)."""
        return asdict(self)


def _category_name(key: Any) -> str:
    value = key.value if isinstance(key, Enum) else str(key)
    return CATEGORIES.get(value, _TOTAL if value == _TOTAL else value)


def _on(target: torch.device, dev: torch.device) -> bool:
    return dev.type == target.type and (target.index is None or dev.index == target.index)


class _PhaseMemTracker(MemTracker):
    """MemTracker that also records, per phase, the snapshot at the phase's peak on one device."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.target = device
        self.phase: str | None = None
        self.peak_snap: dict[str, dict[str, int]] = {}
        self.act_peak: dict[str, int] = {}
        self.tmp_peak: dict[str, int] = {}

    def current(self) -> dict[str, int]:
        """Live bytes on the target device by category (result names), plus ``Total``."""
        out = dict.fromkeys([*CATEGORIES.values(), _TOTAL], 0)
        for dev, snap in self._curr_mem_snap.items():
            if _on(self.target, dev):
                for k, v in snap.items():
                    name = _category_name(k)
                    out[name] = out.get(name, 0) + int(v)
        return out

    def begin_phase(self, name: str) -> None:
        self.phase = name
        snap = self.current()
        self.peak_snap[name] = snap
        self.act_peak[name] = snap["activations"]
        self.tmp_peak[name] = snap["temporaries"]

    def end_phase(self) -> dict[str, int]:
        self.phase = None
        return self.current()

    def _update_peak_stats(self, peak_state: Any) -> None:  # called by MemTracker after every op
        super()._update_peak_stats(peak_state)
        if self.phase is None:
            return
        snap = self.current()
        if snap[_TOTAL] > self.peak_snap[self.phase][_TOTAL]:
            self.peak_snap[self.phase] = snap
        if snap["activations"] > self.act_peak[self.phase]:
            self.act_peak[self.phase] = snap["activations"]
        if snap["temporaries"] > self.tmp_peak[self.phase]:
            self.tmp_peak[self.phase] = snap["temporaries"]


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def _target_device(device: str) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def measure_memory(step: Any, *, device: str = "cpu", warm: bool = True) -> MemoryResult:
    """Per-phase peak and per-category live bytes of one step of ``step`` (a ``PhasedStep``).

    ``per_phase[name]`` holds ``peak_bytes`` (tracked live bytes at the phase's peak),
    ``at_peak`` and ``at_end`` (bytes by category at that moment and when the phase ended),
    ``activations_peak_bytes``, ``temporaries_peak_bytes`` and, on CUDA, ``cuda_allocated_peak_bytes`` and
    ``cuda_reserved_peak_bytes``. Runs ``step`` once more (twice with ``warm``), for real.
    """
    is_cuda = device.startswith("cuda")
    target = _target_device(device)
    if warm:
        step.run()
    gc.collect()
    if is_cuda:
        torch.cuda.synchronize(target)
        torch.cuda.empty_cache()

    w = step.w
    tracker = _PhaseMemTracker(target)
    inputs = [t for t in tree_flatten(list(w.inputs))[0] if isinstance(t, torch.Tensor)]
    externals: list[Any] = [w.model, *inputs]
    if w.optimizer is not None:
        externals.append(w.optimizer)
    tracker.track_external(*externals)
    start = tracker.current()

    per_phase: dict[str, dict[str, Any]] = {}
    with tracker:
        for name, fn in step.phases:
            if is_cuda:
                torch.cuda.synchronize(target)
                torch.cuda.reset_peak_memory_stats(target)
            tracker.begin_phase(name)
            fn()
            end = tracker.end_phase()
            peak = tracker.peak_snap[name]
            detail: dict[str, Any] = {
                "peak_bytes": peak[_TOTAL],
                "at_peak": {k: v for k, v in peak.items() if k != _TOTAL},
                "at_end": {k: v for k, v in end.items() if k != _TOTAL},
                "activations_peak_bytes": tracker.act_peak[name],
                "temporaries_peak_bytes": tracker.tmp_peak[name],
            }
            if is_cuda:
                torch.cuda.synchronize(target)
                detail["cuda_allocated_peak_bytes"] = int(torch.cuda.max_memory_allocated(target))
                detail["cuda_reserved_peak_bytes"] = int(torch.cuda.max_memory_reserved(target))
            per_phase[name] = detail

    snaps = [start] + [{**d["at_end"]} for d in per_phase.values()]

    def peak_of(phase: str) -> int | None:
        if phase not in per_phase:
            return None
        d = per_phase[phase]
        return int(d["cuda_allocated_peak_bytes"] if is_cuda else d["peak_bytes"])

    phase_peaks = [peak_of(name) for name in per_phase]
    return MemoryResult(
        peak_mem_bytes=max((p for p in phase_peaks if p is not None), default=start[_TOTAL]),
        mem_fwd_peak_bytes=peak_of("forward"),
        mem_bwd_peak_bytes=peak_of("backward"),
        mem_opt_peak_bytes=peak_of("optimizer"),
        mem_params_bytes=max(s["parameters"] for s in snaps),
        mem_grads_bytes=max(s["gradients"] for s in snaps),
        mem_optimizer_bytes=max(s["optimizer"] for s in snaps),
        mem_activations_bytes=max(tracker.act_peak.values(), default=0),
        cuda_reserved_peak_bytes=(
            max(int(d["cuda_reserved_peak_bytes"]) for d in per_phase.values())
            if is_cuda and per_phase
            else None
        ),
        peak_rss_bytes=peak_rss_bytes(),
        method="cuda+mem_tracker" if is_cuda else "mem_tracker",
        per_phase=per_phase,
        mem_buffers_bytes=max(s["buffers"] for s in snaps),
        mem_inputs_bytes=max(s["inputs"] for s in snaps),
    )


def apply_memory_budget(device: str, budget_bytes: int | None) -> float | None:
    """Cap the CUDA caching allocator of ``device`` at ``budget_bytes``, as a card of that size would.

    ``torch.cuda.set_per_process_memory_fraction(budget / total)``, with ``total`` the device's
    memory as the allocator sees it (``torch.cuda.mem_get_info``): an allocation that would take the
    allocator's reserved memory past the budget frees its cached blocks and retries, then raises
    ``torch.OutOfMemoryError``. Returns the fraction set, or None where nothing is capped: no budget,
    or a CPU device (no allocator to cap; ``dlbench budget`` judges the tracked bytes there). Raises
    ``ValueError`` for a budget above the device's memory.
    """
    if budget_bytes is None or not device.startswith("cuda"):
        return None
    target = _target_device(device)
    total = int(torch.cuda.mem_get_info(target)[1])
    if budget_bytes > total:
        raise ValueError(f"memory budget {budget_bytes} bytes is more than {device}'s {total} bytes")
    fraction = budget_bytes / total
    torch.cuda.set_per_process_memory_fraction(fraction, target)
    return fraction
