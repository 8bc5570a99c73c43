"""One rank of a parallel configuration: ``python -m bench.run.rank_worker REQUEST.json OUTDIR``.

torchrun (``bench.run.launch``) starts this on every rank with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous in the environment. The rank:

1. before importing anything but the standard library, asks for SIGKILL when its parent (the torchrun
   agent, ``DLBENCH_AGENT_PID``) dies, and exits at once if the agent is already gone, so a job
   killed while its ranks start leaves no orphan rank; then sends its stdout/stderr to
   ``OUTDIR/rank<R>.log``;
2. joins the process group (gloo on CPU, nccl on CUDA, with ``timeout=`` the run's ``--timeout``, so
   a peer that never arrives ends the wait on its own too);
3. builds its step (``bench.run.parallel.build_parallel_step``), times it under the collective
   stopping rule with the noise sentinel around it (other processes' CPU use, the job's own ranks
   on this node excluded), then runs the memory and FLOP passes (each on every rank, so
   collectives match);
4. writes ``OUTDIR/rank<R>.json`` (its status and figures), all-gathers every rank's figures, and
   local rank 0 of each node writes ``OUTDIR/job.json`` (all ranks, in rank order), which the parent
   merges into the row. Every node's parent thus holds the whole job's figures.

``OUTDIR/rank<R>.phase`` always names the phase the rank is in (``init``, ``build``, ``timing``, ...)
and since when, so a timeout can say which rank hung where, and for how long. A rank that fails
writes its ``rank<R>.json`` (``error``, ``oom`` or ``skipped``) and exits non-zero at once
(``os._exit``, without tearing down the group a peer may be blocked in): torchrun then stops the
other ranks and the parent reads the reason.

The request's ``task`` may also be ``probe`` (``dlbench budget``, from
``bench.run.launch.probe_parallel``): step 3 becomes the same build and strategy, then one step and
its memory (``bench.budget.probe.probe_rank``), timing nothing.

The request's ``task`` is ``time`` (the above; the default) or ``profile`` (``dlbench profile
--parallel``, from ``bench.run.launch.profile_parallel``): step 3 becomes the same build and strategy,
then ``bench.profile.trace.profile_step(step, out_dir=..., rank=R)`` (``profile_rank``), and
``rank<R>.json`` / ``job.json`` hold the paths written and each rank's summary.
"""

from __future__ import annotations

import os
import sys


def _die_with_agent() -> None:
    """SIGKILL this rank when its parent (the agent) dies; exit now if it died already.

    Runs before any other import (the window between the agent starting a rank and the rank asking
    to die with it is the interpreter's start-up alone), and compares the parent with the agent's
    pid from ``DLBENCH_AGENT_PID``, so an agent killed even earlier is noticed too.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except Exception:
        return
    agent = os.environ.get("DLBENCH_AGENT_PID", "")
    if agent.isdigit() and os.getppid() != int(agent):
        os._exit(1)


if __name__ == "__main__":
    _die_with_agent()

import datetime  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench.registry import CHILD_ENV_VAR  # noqa: E402

EXIT_FAILED = 1  # error / oom: torchrun reports the job failed and stops the other ranks
EXIT_SKIPPED = 3  # the configuration cannot run this way: also non-zero, so no peer waits on us


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, default=str), encoding="utf-8")
    os.replace(tmp, path)


class _Phase:
    """``OUTDIR/rank<R>.phase``: where this rank is, for the parent's timeout message."""

    def __init__(self, outdir: Path, rank: int) -> None:
        self.path = outdir / f"rank{rank}.phase"

    def __call__(self, name: str) -> None:
        """Enter phase ``name``: the file holds ``name<TAB>unix time``."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(f"{name}\t{time.time():.3f}", encoding="utf-8")
        os.replace(tmp, self.path)


def _redirect_output(log: Path) -> None:
    """This process's stdout and stderr (file descriptors 1 and 2) to ``log``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def measure_rank(
    cfg: Any,
    req: Any,
    *,
    rank: int,
    world_size: int,
    local_rank: int,
    phase: _Phase,
    ctrl: Any = None,
    device_name: str | None = None,
) -> dict[str, Any]:
    """Build, time and measure this rank's step; its figures as a JSON-ready dict.

    MFU is this rank's FLOPs over its median against one device's peak, measured here (cached per
    machine; on CPU with this rank's threads, i.e. its share of the cores).
    """
    import torch

    from bench.harness.energy_meter import EnergyMeter
    from bench.harness.flops import count_flops
    from bench.harness.memory import apply_memory_budget, measure_memory
    from bench.harness.noise import read_ticks
    from bench.harness.timing import WindowChain
    from bench.run.measure import compile_cold_start, mfu_fields
    from bench.run.parallel import agree_max, build_parallel_step, rank_device, time_distributed

    device = rank_device(cfg, local_rank)
    apply_memory_budget(device, req.budget_bytes)  # dlbench budget on CUDA: time as on a card of that size
    # the devices this rank's energy covers: its GPU (dp: every GPU its one process drives), or the CPU
    dp_gpus = cfg.parallel == "dp" and device != "cpu"
    metered = [f"cuda:{i}" for i in range(world_size)] if dp_gpus else [device]
    with EnergyMeter(metered) as meter:
        phase("build")
        workload, step, info = build_parallel_step(
            cfg, rank=rank, world_size=world_size, device=device, phase=phase
        )
        if cfg.compile != "none":  # every rank runs its cold start (its first step) together
            phase("compile")
        watch = compile_cold_start(step, cfg, workload.extra.get("compiled", ""))
        phase("timing")
        before = read_ticks()
        timing = time_distributed(
            step,
            device=device,
            warmup_iters=req.warmup_iters,
            min_samples=req.min_samples,
            max_samples=req.max_samples,
            target_rel_ci=req.target_rel_ci,
            max_time_s=req.max_time_s,
            group=ctrl,
            min_time_s=meter.min_time_s(req.max_time_s),
            window=WindowChain(watch, meter),
        )
        after = read_ticks()
    compiled = None
    if watch is not None:
        watch.stop()
        compiled = watch.result(step_s=timing.median_ms / 1e3)
    energy = meter.result(steps=timing.n, items_per_step=workload.items_per_step)
    noise = job_noise(before, after, ctrl, world_size)
    notes: list[str] = []
    if noise.busy:
        notes.append(f"noisy: {noise.reason()}")
    if compiled is not None and compiled.noisy_reason:
        notes.append(compiled.noisy_reason)
    comm_bytes = info.comm_bytes_per_step
    if info.stage_output_bytes is not None:  # pipeline: every boundary's activation, from every stage
        import torch.distributed as dist

        from dlcore.parallel import pipeline_comm_bytes_per_step

        outs: list[Any] = [None] * world_size
        dist.all_gather_object(outs, info.stage_output_bytes(), group=ctrl)
        comm_bytes = round(
            pipeline_comm_bytes_per_step(
                [float(b) for b in outs[:-1]],
                microbatches=cfg.microbatches,
                num_stages=world_size,
                stage_index=rank,
            )
        )
        info.extra["stage_output_bytes_per_microbatch"] = outs[rank]
    phase("memory")
    memory = None
    try:
        memory = measure_memory(step, device=device, warm=True)
        if compiled is not None:  # dynamo does not run under MemTracker's dispatch mode: eager figures
            memory.method += ":eager"
    except Exception as exc:  # the timing stays valid; every rank runs the same steps either way
        notes.append(f"memory pass failed: {type(exc).__name__}: {exc}")
    agree_max([0.0], ctrl)
    phase("flops")
    flops = None
    try:
        flops = int(count_flops(step))
    except Exception as exc:
        notes.append(f"flop pass failed: {type(exc).__name__}: {exc}")
    phase("peak")
    mfu = mfu_fields(flops, timing.median_ms / 1e3, device, cfg.precision, device_name, notes)
    agree_max([0.0], ctrl)
    return {
        "rank": rank,
        "local_rank": local_rank,
        "host": socket.gethostname(),
        "device": device,
        "threads": torch.get_num_threads(),
        "status": "ok",
        "reason": "",
        "timing": timing.to_dict(),
        "memory": memory.to_dict() if memory is not None else None,
        "flops_per_step": flops,
        "items_per_step": workload.items_per_step,
        "unit": workload.unit,
        "extra": {**workload.extra, **info.extra},
        "notes": notes,
        "comm_bytes_per_step": comm_bytes,
        "bubble_fraction": info.bubble_fraction,
        "stage_index": info.stage_index,
        "mfu": mfu,
        "energy": energy.to_dict(),
        "noise_other_cpu_pct": noise.other_cpu_pct,
        "noise_steal_pct": noise.steal_pct,
        "compile": compiled.to_dict() if compiled is not None else None,
    }


def job_noise(before: Any, after: Any, group: Any, world_size: int) -> Any:
    """The noise sentinel of a rank's timing window, the job's own ranks on this node not counted.

    ``bench.harness.noise`` counts every process but this one as "other"; here the ranks of one job
    on one node share its cores by design, so their CPU ticks over the window (all-gathered, summed
    per host) count as the job's own. A collective: every rank calls it.
    """
    import dataclasses

    import torch.distributed as dist

    from bench.harness.noise import figures

    own = after.own - before.own if before is not None and after is not None else None
    everyone: list[Any] = [None] * world_size
    dist.all_gather_object(everyone, (socket.gethostname(), own), group=group)
    if before is None or after is None:
        return figures(None, None)
    here = socket.gethostname()
    job_own = sum(int(o) for h, o in everyone if h == here and o is not None)
    return figures(before, dataclasses.replace(after, own=before.own + job_own))


def profile_rank(
    cfg: Any,
    *,
    rank: int,
    world_size: int,
    local_rank: int,
    phase: _Phase,
    out_dir: str,
    profile_kw: dict[str, Any],
) -> dict[str, Any]:
    """The ``profile`` task: build and apply the strategy as ``measure_rank`` does, then profile the step.

    ``bench.profile.trace.profile_step(step, out_dir=out_dir, rank=rank, ...)``: this rank's
    TensorBoard trace (worker ``rank<r>``) in ``out_dir``, its tables and ``summary.json`` in
    ``out_dir/rank<r>``. Every rank runs the same ``wait + warmup + active`` steps, so the collectives
    match. Returns the paths written and the summary, JSON-ready.
    """
    from bench.profile.trace import profile_step
    from bench.run.parallel import build_parallel_step, rank_device

    device = rank_device(cfg, local_rank)
    phase("build")
    _workload, step, info = build_parallel_step(
        cfg, rank=rank, world_size=world_size, device=device, phase=phase
    )
    if cfg.compile != "none":  # every rank compiles before its profiler starts (the first step)
        phase("compile")
        step.run()
    phase("profile")
    kw = {k: v for k, v in profile_kw.items() if k not in ("rank", "worker_name")}
    res = profile_step(step, device=device, out_dir=out_dir, rank=rank, **kw)

    def path(p: Any) -> str | None:
        return str(p) if p is not None else None

    return {
        "rank": rank,
        "local_rank": local_rank,
        "host": socket.gethostname(),
        "device": device,
        "status": "ok",
        "reason": "",
        "stage_index": info.stage_index,
        "worker_name": res.worker_name,
        "out_dir": str(res.out_dir),
        "artifacts_dir": str(res.artifacts_dir),
        "tensorboard_trace": str(res.tensorboard_trace),
        "chrome_trace": str(res.chrome_trace),
        "top_ops_csv": str(res.top_ops_csv),
        "top_ops_md": str(res.top_ops_md),
        "summary_json": str(res.summary_json),
        "memory_timeline": path(res.memory_timeline),
        "memory_timeline_data": path(res.memory_timeline_data),
        "memory_timeline_note": res.memory_timeline_note,
        "summary": res.summary,
        "notes": list(res.notes),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.run.rank_worker REQUEST.json OUTDIR`` (under torchrun)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m bench.run.rank_worker REQUEST.json OUTDIR (under torchrun)", file=sys.stderr)
        return 2
    outdir = Path(args[1])
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    _redirect_output(outdir / f"rank{rank}.log")
    os.environ[CHILD_ENV_VAR] = "1"
    from bench.run.child import is_oom

    phase = _Phase(outdir, rank)
    phase("init")
    request = json.loads(Path(args[0]).read_text(encoding="utf-8"))

    import torch
    import torch.distributed as dist

    from bench.run.grid import RunConfig
    from bench.run.parallel import ParallelUnsupported
    from bench.run.request import RunRequest

    cfg = RunConfig.from_json(request["config"])
    req = RunRequest.from_dict(request["request"])
    cuda = cfg.device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(0 if cfg.parallel == "dp" else local_rank)
    timeout = datetime.timedelta(seconds=float(req.timeout_s))
    result: dict[str, Any]
    ctrl = None
    try:
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
        ctrl = dist.new_group(backend="gloo", timeout=timeout)  # control messages, beside the data plane
        if request.get("task") == "probe":  # dlbench budget (launch.probe_parallel): one step, its memory
            from bench.budget.probe import probe_rank

            phase("probe")
            result = probe_rank(cfg, req, rank=rank, world_size=world_size, local_rank=local_rank)
        elif request.get("task", "time") == "profile":  # dlbench profile --parallel (launch.profile_parallel)
            result = profile_rank(
                cfg,
                rank=rank,
                world_size=world_size,
                local_rank=local_rank,
                phase=phase,
                out_dir=request["profile"]["out_dir"],
                profile_kw=dict(request["profile"].get("kw") or {}),
            )
        else:
            result = measure_rank(
                cfg,
                req,
                rank=rank,
                world_size=world_size,
                local_rank=local_rank,
                phase=phase,
                ctrl=ctrl,
                device_name=request.get("device_name"),
            )
    except ParallelUnsupported as exc:
        result = {"rank": rank, "status": "skipped", "reason": str(exc), "t": time.time()}
    except Exception as exc:
        traceback.print_exc()
        status = "oom" if is_oom(exc) else "error"
        result = {"rank": rank, "status": status, "reason": f"{type(exc).__name__}: {exc}", "t": time.time()}
    _write_json(outdir / f"rank{rank}.json", result)
    if result["status"] != "ok":
        phase(f"failed ({result['status']})")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_SKIPPED if result["status"] == "skipped" else EXIT_FAILED)
    phase("gather")
    everyone: list[Any] = [None] * world_size
    dist.all_gather_object(everyone, result, group=ctrl)
    if local_rank == 0:
        _write_json(outdir / "job.json", {"world_size": world_size, "ranks": everyone})
    dist.barrier(group=ctrl)
    dist.destroy_process_group()
    phase("done")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # everything is written: skip the interpreter's teardown (a second per rank on 2 cores)


if __name__ == "__main__":
    sys.exit(main())
