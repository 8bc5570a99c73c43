"""Run ``torch.profiler`` over a few steps of a workload and write what an engineer opens next.

(``bench.profile.scenario`` builds a scenario's configuration as ``dlbench run`` does and calls
``profile_step`` on it.)

``profile_step`` profiles a ``bench.workload.PhasedStep`` under ``schedule(wait, warmup, active,
repeat=1)``: ``wait`` steps unrecorded, ``warmup`` steps recorded and thrown away (lazy state such as
AdamW moments and allocator pools exists by then), ``active`` steps kept. Every phase runs inside
``record_function(<phase>)`` (``forward`` / ``backward`` / ``optimizer``), so the trace shows the
phases above the operators. On CUDA the step ends with a synchronize inside the profiler step, so a
step's wall time includes its kernels.

What it writes (``out_dir`` is a TensorBoard logdir: ``tensorboard --logdir out_dir`` with
torch-tb-profiler shows the run; the chrome trace copy is not named ``*.pt.trace.json``, so the
plugin does not load it twice)::

    out_dir/<worker>.<time_ns>.pt.trace.json   tensorboard_trace_handler's trace (all ranks here)
    <artifacts>/trace.json                     the same trace for chrome://tracing / Perfetto
    <artifacts>/top_ops.csv, top_ops.md        operators by self time, from torch's key_averages()
    <artifacts>/summary.json                   category shares (bench.profile.summary contract)
    <artifacts>/memory_timeline.html, .json    export_memory_timeline, when with_stack=True
    <artifacts>/hta.json                       HTA breakdown, CUDA traces with hta installed

``<artifacts>`` is ``out_dir`` itself, or ``out_dir/rank<r>`` when ``rank`` is given: the ranks of a
parallel run share ``out_dir`` (one TensorBoard run, one worker per rank, worker ``rank<r>``) and
keep their summaries apart.

torch 2.13 facts this relies on (checked on CPU): ``export_chrome_trace`` a second time, after
``on_trace_ready`` saved the trace, raises "Trace is already saved", so the chrome trace is a copy
of the file the TensorBoard handler wrote. ``export_memory_timeline`` works on CPU too (device
"cpu"), is deprecated (FutureWarning, silenced here) and requires ``record_shapes``,
``profile_memory`` and ``with_stack``; without ``with_stack`` no timeline is written and the result
says why.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function, schedule, tensorboard_trace_handler

from bench.outputs import write_atomic
from bench.profile.summary import (
    OpRow,
    interval_union_us,
    make_summary,
    summarize,
    top_ops_markdown,
    write_top_ops_csv,
)

__all__ = [
    "SCHEDULE_DEFAULTS",
    "SCHEDULE_LIMITS",
    "ProfileResult",
    "check_schedule",
    "extract_rows",
    "profile_step",
    "relocate",
]

# profile_step's schedule: 1 step unrecorded, 1 recorded and thrown away, 3 kept
SCHEDULE_DEFAULTS: dict[str, int] = {"wait": 1, "warmup": 1, "active": 3}
# the most steps each may take: the profiler holds every event of the recorded steps (warmup and
# active) in memory until the trace is written (100 000 active steps grew past 900 MiB in 43 s);
# the wait steps record nothing and only take time (the run's --timeout bounds it)
SCHEDULE_LIMITS: dict[str, int] = {"wait": 10_000, "warmup": 100, "active": 100}


@dataclass
class ProfileResult:
    """What ``profile_step`` wrote and found. Paths are absolute."""

    out_dir: Path  # the TensorBoard logdir (shared by all ranks)
    artifacts_dir: Path  # out_dir, or out_dir/rank<r>
    worker_name: str  # the TensorBoard worker (rank<r> for parallel runs)
    tensorboard_trace: Path  # <worker>.<time_ns>.pt.trace.json[.gz]
    chrome_trace: Path  # trace.json[.gz]: the same trace, for chrome://tracing or ui.perfetto.dev
    top_ops_csv: Path
    top_ops_md: Path
    summary_json: Path
    summary: dict[str, Any]  # the summary.json contract
    memory_timeline: Path | None = None  # memory_timeline.html (a plot), None when not written
    memory_timeline_data: Path | None = None  # memory_timeline.json: [times, [bytes by category]]
    memory_timeline_note: str = ""  # what the timeline is, or why there is none
    hta: dict[str, Any] | None = None  # HTA's temporal and kernel breakdown (CUDA, hta installed)
    hta_json: Path | None = None
    notes: list[str] = field(default_factory=list)

    _PATHS = (
        "out_dir",
        "artifacts_dir",
        "tensorboard_trace",
        "chrome_trace",
        "top_ops_csv",
        "top_ops_md",
        "summary_json",
        "memory_timeline",
        "memory_timeline_data",
        "hta_json",
    )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (paths as strings): what a profiling child process sends back."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for k in self._PATHS:
            d[k] = str(d[k]) if d[k] is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProfileResult:
        kw = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in cls._PATHS:
            kw[k] = Path(kw[k]) if kw.get(k) is not None else None
        return cls(**kw)

    def moved(self, old: Path, new: Path) -> ProfileResult:
        """The same result with every path under ``old`` moved under ``new`` (the folder was renamed)."""
        d = self.to_dict()
        for k in self._PATHS:
            if d[k] is not None:
                d[k] = str(relocate(Path(d[k]), old, new))
        return ProfileResult.from_dict(d)

    def files(self) -> list[Path]:
        """Every file written, for a CLI to list."""
        paths = [
            self.tensorboard_trace,
            self.chrome_trace,
            self.top_ops_csv,
            self.top_ops_md,
            self.summary_json,
        ]
        paths += [
            p for p in (self.memory_timeline, self.memory_timeline_data, self.hta_json) if p is not None
        ]
        return paths


def relocate(path: Path, old: Path, new: Path) -> Path:
    """``path`` with its prefix ``old`` replaced by ``new`` (unchanged when not under ``old``)."""
    try:
        return new / Path(path).relative_to(old)
    except ValueError:
        return Path(path)


def _is_cuda(device: str) -> bool:
    return torch.device(device).type == "cuda"


def _default_worker_name() -> str:
    # tensorboard_trace_handler's own default; torch-tb-profiler reads <host>_<pid> as node and process
    return f"{socket.gethostname()}_{os.getpid()}"


def _cuda_index(device: str) -> int:
    dev = torch.device(device)
    return dev.index if dev.index is not None else torch.cuda.current_device()


def extract_rows(prof: profile, *, device: str) -> list[OpRow]:
    """``prof.key_averages()`` as plain rows for ``bench.profile.summary``.

    ``kind`` tells operators from what is not one: ``annotation`` (profiler steps, record_function
    labels, ``Optimizer.step#...``), ``python`` (frames recorded by ``with_stack``), ``kernel`` (GPU
    events: their time is already in their operator's self device time). ``self_time_us`` is self
    CPU time on CPU and self device time on CUDA.
    """
    cuda = _is_cuda(device)
    python_keys = {e.key for e in prof.events() if getattr(e, "is_python_function", False)}
    rows: list[OpRow] = []
    for e in prof.key_averages():
        if e.key == "[memory]":  # allocation markers of profile_memory: no duration
            continue
        if e.device_type != DeviceType.CPU:
            kind = "kernel"
        elif e.key in python_keys:
            kind = "python"
        elif e.is_user_annotation or e.key.startswith("ProfilerStep"):
            kind = "annotation"
        else:
            kind = "op"
        self_cpu = float(e.self_cpu_time_total)
        self_dev = float(e.self_device_time_total) if cuda else 0.0
        rows.append(
            OpRow(
                name=e.key,
                self_time_us=self_dev if cuda else self_cpu,
                calls=int(e.count),
                kind=kind,
                self_cpu_time_us=self_cpu,
                cpu_time_total_us=float(e.cpu_time_total),
                self_device_time_us=self_dev,
                device_time_total_us=float(e.device_time_total) if cuda else 0.0,
                self_cpu_memory_bytes=int(e.self_cpu_memory_usage),
                self_device_memory_bytes=int(e.self_device_memory_usage),
            )
        )
    return rows


def _step_windows(prof: profile) -> list[tuple[float, float]]:
    """(start_us, end_us) of every recorded ``ProfilerStep#N`` on the host, in order."""
    return sorted(
        (float(e.time_range.start), float(e.time_range.end))
        for e in prof.events()
        if e.device_type == DeviceType.CPU and e.name.startswith("ProfilerStep")
    )


def _device_busy_us(prof: profile, windows: list[tuple[float, float]]) -> float:
    """Length of the union of GPU kernel / memcpy / memset intervals inside the step windows.

    GPU-side copies of ``record_function`` ranges (kineto's gpu_user_annotation events, which span
    from a range's first kernel to its last) are left out by flag and by name, or they would fill
    the gaps between kernels and hide the idle time.
    """
    events = prof.events()
    labels = {e.name for e in events if e.device_type == DeviceType.CPU and e.is_user_annotation}
    intervals = sorted(
        (float(e.time_range.start), float(e.time_range.end))
        for e in events
        if e.device_type != DeviceType.CPU
        and not e.is_user_annotation
        and e.name not in labels
        and not e.name.startswith("ProfilerStep")
    )
    return interval_union_us(intervals, windows)


def _export_memory_timeline(
    prof: profile,
    *,
    device: str,
    artifacts: Path,
    record_shapes: bool,
    profile_memory: bool,
    with_stack: bool,
) -> tuple[Path | None, Path | None, str]:
    missing = [
        name
        for name, on in (
            ("record_shapes", record_shapes),
            ("profile_memory", profile_memory),
            ("with_stack", with_stack),
        )
        if not on
    ]
    if missing:
        return (
            None,
            None,
            "no memory timeline: torch's export_memory_timeline needs record_shapes, profile_memory and "
            f"with_stack; pass {', '.join(f'{m}=True' for m in missing)}",
        )
    mem_device = f"cuda:{_cuda_index(device)}" if _is_cuda(device) else "cpu"
    html, data = artifacts / "memory_timeline.html", artifacts / "memory_timeline.json"
    written: list[Path | None] = []
    errors: list[str] = []
    for path in (html, data):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # deprecated in favour of CUDA-only snapshots
                prof.export_memory_timeline(str(path), device=mem_device)
        except Exception as exc:  # a timeline is a bonus: never lose the trace and summary over it
            errors.append(f"{path.name}: {type(exc).__name__}: {exc}")
        written.append(path if path.exists() else None)
    if errors or written[0] is None:
        why = "; ".join(errors) or "matplotlib not importable (the HTML plot needs it)"
        note = f"memory timeline incomplete on {mem_device}: {why}"
    else:
        note = (
            f"memory timeline of {mem_device} (torch.profiler export_memory_timeline, deprecated in torch "
            f"{torch.__version__.split('+')[0]}): bytes by category (parameters, gradients, optimizer state, "
            "activations, ...) over the recorded steps"
        )
    return written[0], written[1], note


def check_schedule(*, wait: Any, warmup: Any, active: Any, rank: Any = None) -> None:
    """``bench.errors.UsageError`` (a ``ValueError``) unless 0 <= wait, warmup and 1 <= active, each at
    most ``SCHEDULE_LIMITS``, and rank >= 0."""
    from bench.errors import UsageError

    for name, value, low in (("wait", wait, 0), ("warmup", warmup, 0), ("active", active, 1)):
        high = SCHEDULE_LIMITS[name]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            why = " (recorded steps are held in memory until the trace is written)" if name != "wait" else ""
            raise UsageError(f"{name}: expected an integer from {low} to {high}{why}, got {value!r}")
    if rank is not None and (not isinstance(rank, int) or isinstance(rank, bool) or rank < 0):
        raise UsageError(f"rank: expected an integer >= 0, got {rank!r}")


def profile_step(
    step: Any,
    *,
    device: str,
    out_dir: str | os.PathLike[str],
    wait: int = SCHEDULE_DEFAULTS["wait"],
    warmup: int = SCHEDULE_DEFAULTS["warmup"],
    active: int = SCHEDULE_DEFAULTS["active"],
    record_shapes: bool = True,
    profile_memory: bool = True,
    with_stack: bool = False,
    worker_name: str | None = None,
    rank: int | None = None,
    scenario: str | None = None,
    use_gzip: bool = False,
    top_n: int = 15,
    hta: bool = True,
) -> ProfileResult:
    """Profile ``wait + warmup + active`` runs of ``step`` and write the trace, tables and summary.

    ``step`` is a ``bench.workload.PhasedStep`` (anything with ``phases``: a list of (name, fn)).
    ``rank`` names the worker ``rank<r>`` (unless ``worker_name`` is given) and puts this rank's
    tables under ``out_dir/rank<r>``; every rank's TensorBoard trace goes to ``out_dir`` itself so
    they load together. ``scenario`` is the name in ``summary.json`` (default: the model's class
    name). ``hta``: on CUDA (and without ``rank``), try Holistic Trace Analysis on ``out_dir``.
    """
    check_schedule(wait=wait, warmup=warmup, active=active, rank=rank)
    cuda = _is_cuda(device)
    if cuda and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available here")
    out = Path(out_dir).resolve()
    artifacts = out if rank is None else out / f"rank{rank}"
    artifacts.mkdir(parents=True, exist_ok=True)
    worker = worker_name or (f"rank{rank}" if rank is not None else _default_worker_name())
    if scenario is None:
        model = getattr(getattr(step, "w", None), "model", None)
        scenario = type(model).__name__ if model is not None else type(step).__name__

    tb_handler = tensorboard_trace_handler(str(out), worker_name=worker, use_gzip=use_gzip)
    written: list[Path] = []

    def on_trace_ready(prof: profile) -> None:
        before = set(os.listdir(out))
        tb_handler(prof)
        new = sorted(
            n for n in set(os.listdir(out)) - before if n.startswith(f"{worker}.") and ".pt.trace.json" in n
        )
        written.extend(out / n for n in new)

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    phases = list(step.phases)
    with profile(
        activities=activities,
        schedule=schedule(wait=wait, warmup=warmup, active=active, repeat=1),
        on_trace_ready=on_trace_ready,
        record_shapes=record_shapes,
        profile_memory=profile_memory,
        with_stack=with_stack,
    ) as prof:
        for _ in range(wait + warmup + active):
            for phase, fn in phases:
                with record_function(phase):
                    fn()
            if cuda:
                torch.cuda.synchronize(device)  # the step's kernels end inside its ProfilerStep
            prof.step()
    if not written:
        raise RuntimeError(f"torch.profiler wrote no trace into {out} (on_trace_ready was not called)")
    tb_trace = written[-1]
    chrome = artifacts / ("trace.json.gz" if tb_trace.name.endswith(".gz") else "trace.json")
    shutil.copyfile(tb_trace, chrome)

    notes: list[str] = []
    rows = extract_rows(prof, device=device)
    windows = _step_windows(prof)
    step_time_us = sum(t - s for s, t in windows)
    active_steps = len(windows)
    if active_steps != active:
        notes.append(f"expected {active} recorded steps, the profiler recorded {active_steps}")
    busy_us = _device_busy_us(prof, windows) if cuda else None
    summary = make_summary(
        scenario=scenario,
        device=device,
        rows=rows,
        step_time_us=step_time_us,
        active_steps=active_steps,
        busy_us=busy_us,
        top_n=top_n,
    )
    stats = summarize(rows, step_time_us, busy_us=busy_us, top_n=0)
    summary_json = artifacts / "summary.json"
    write_atomic(summary_json, json.dumps(summary, indent=2) + "\n")
    csv_path = write_top_ops_csv(
        rows, artifacts / "top_ops.csv", denominator_us=stats["denominator_us"], scale=stats["scale"]
    )
    md_path = artifacts / "top_ops.md"
    write_atomic(
        md_path, top_ops_markdown(summary, rows, denominator_us=stats["denominator_us"], scale=stats["scale"])
    )

    mem_html, mem_data, mem_note = _export_memory_timeline(
        prof,
        device=device,
        artifacts=artifacts,
        record_shapes=record_shapes,
        profile_memory=profile_memory,
        with_stack=with_stack,
    )

    hta_result: dict[str, Any] | None = None
    hta_json: Path | None = None
    if hta and cuda and rank is None:
        from bench.profile.hta import hta_breakdown

        hta_result = hta_breakdown(out, notes=notes)
        if hta_result is not None:
            hta_json = artifacts / "hta.json"
            write_atomic(hta_json, json.dumps(hta_result, indent=2, default=str) + "\n")
    elif hta and cuda:
        notes.append(
            "HTA: run bench.profile.hta.hta_breakdown(out_dir) once every rank has written its trace"
        )

    return ProfileResult(
        out_dir=out,
        artifacts_dir=artifacts,
        worker_name=worker,
        tensorboard_trace=tb_trace,
        chrome_trace=chrome,
        top_ops_csv=csv_path,
        top_ops_md=md_path,
        summary_json=summary_json,
        summary=summary,
        memory_timeline=mem_html,
        memory_timeline_data=mem_data,
        memory_timeline_note=mem_note,
        hta=hta_result,
        hta_json=hta_json,
        notes=notes,
    )
