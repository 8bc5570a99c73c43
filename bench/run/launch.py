"""Launch one parallel configuration as one torchrun job, and merge its ranks into one row.

``run_parallel(cfg, options)`` is the third way to run a configuration (beside ``run_in_child`` and
``run_in_process`` in ``bench.run.execute``), with the same request/result protocol: it returns an
``Outcome``. It starts torch's own launcher, ``torch.distributed.run`` (torchrun), as a subprocess
in a session of its own::

    python -m bench.run.launch --parent-pid PID -- <torchrun arguments> -m bench.run.rank_worker REQ OUT

(this module's ``main`` asks for SIGKILL when dlbench dies, then hands its argv to torchrun's
``main``). torchrun's elastic agent does the rendezvous (``--rdzv-backend``, ``--rdzv-endpoint``;
one node: c10d on ``127.0.0.1:<free port>``) and starts ``--nproc`` ranks per node, each running
``bench.run.rank_worker``; ``--max-restarts 0``, so a failed rank fails the job.

Threads: unless ``OMP_NUM_THREADS`` is set, each rank gets ``cpu_count // nproc`` intra-op threads
(the ranks of a node share its cores; the ``none`` row uses them all).

Failure handling, within ``--timeout`` seconds per configuration:

- a rank that raises writes its reason and exits non-zero; torchrun stops the others; the row is
  ``error`` (``oom`` for an out-of-memory error) and says which rank;
- a rank that crashes (signal, abort) leaves no result; the row is ``error`` with torchrun's summary
  of the failure (exit code or signal of each failed rank) and the rank's last log line;
- past the timeout (a rank that hangs, a peer that never arrives) every process of the job (agent
  and ranks, found through ``psutil`` while the job runs; each rank is a session leader of its own)
  is killed with SIGKILL and waited for; the row is ``timeout`` and names each rank's last phase.

Either way nothing of the job is left running and the sweep goes on. A launch that fails before any
rank starts (a rendezvous port taken, a peer node still leaving the previous job's rendezvous) is
retried while the timeout allows.

Merging (``merge_ranks``): the time columns are the slowest rank's (highest median), the memory
columns the most loaded rank's (highest peak); ``job_throughput`` counts the whole job's items
(the global batch) over the slowest rank's median; ``comm_bytes_per_step`` is the largest of the
ranks'; MFU is the slowest rank's (each rank measures its device's peak itself, so this process
never opens a CUDA context that would hold memory on GPU 0); energy is the sum over every rank's
devices (``bench.harness.energy.merge_ranks``: a CPU package that ranks share counts once), per
step of the job and per item of the global batch; each rank's own figures go to the
sidecar (``ranks``). A multi-node job gathers every
rank's figures to each node, so every node's ``dlbench run`` writes the same job-level row.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.registry import CHILD_ENV_VAR
from bench.run.execute import Outcome
from bench.run.grid import RunConfig
from bench.run.measure import Measurement
from bench.run.request import RunRequest

_LOOPBACK = ("127.", "localhost", "::1", "[::1]")
POLL_S = 0.2  # how often the parent checks the job and records its processes


@dataclass
class ParallelMeasurement(Measurement):
    """A ``Measurement`` merged from the ranks of one job, with the job-level figures."""

    job_throughput: float | None = None  # the job's items per step (global batch) / slowest median
    comm_bytes_per_step: int = 0  # bytes one rank sends per step (the largest over the ranks)
    bubble_fraction: float | None = None  # pipelines: (p - 1) / (m + p - 1)
    max_rank_peak_mem_bytes: int | None = None
    ranks: list[dict[str, Any]] = field(default_factory=list)  # per-rank figures, for the sidecar


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _is_loopback(endpoint: str) -> bool:
    host = endpoint.rpartition(":")[0]
    return host.startswith(_LOOPBACK)


def rendezvous(cfg: RunConfig, options: RunRequest) -> tuple[str, str, str]:
    """(backend, endpoint, id) of the job's rendezvous.

    One node without ``--rdzv-endpoint``: c10d on a free loopback port, a fresh id. Several nodes:
    the given endpoint and an id derived from the configuration, the same on every node (each
    configuration is its own rendezvous, in the same grid order on every node).
    """
    if options.rdzv_endpoint is None:
        return "c10d", f"127.0.0.1:{_free_port()}", f"dlbench-{uuid.uuid4().hex[:12]}"
    digest = hashlib.sha1(cfg.key.encode()).hexdigest()[:12]
    return options.rdzv_backend, options.rdzv_endpoint.strip(), f"dlbench-{digest}"


def torchrun_args(cfg: RunConfig, options: RunRequest, request: Path, outdir: Path) -> list[str]:
    """The torchrun command line of one configuration (after ``python -m torch.distributed.run``)."""
    backend, endpoint, rdzv_id = rendezvous(cfg, options)
    conf = [f"join_timeout={max(1, int(options.timeout_s))}"]
    if backend == "c10d" and cfg.nnodes > 1:
        conf.append(f"is_host={'true' if options.node_rank == 0 else 'false'}")  # node 0 serves the store
    args = [
        f"--nnodes={cfg.nnodes}",
        f"--nproc-per-node={cfg.nproc_per_node}",
        f"--node-rank={options.node_rank}",
        f"--rdzv-backend={backend}",
        f"--rdzv-endpoint={endpoint}",
        f"--rdzv-id={rdzv_id}",
        f"--rdzv-conf={','.join(conf)}",
        "--max-restarts=0",
        "--monitor-interval=0.1",
        "--shutdown-timeout=5",
    ]
    if _is_loopback(endpoint):
        args.append("--local-addr=127.0.0.1")  # MASTER_ADDR for the ranks' own process group
    return [*args, "-m", "bench.run.rank_worker", str(request), str(outdir)]


def job_env(cfg: RunConfig, options: RunRequest) -> dict[str, str]:
    """The environment of the agent and its ranks."""
    env = {**os.environ, CHILD_ENV_VAR: "1", "PYTHONUNBUFFERED": "1"}
    if "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // cfg.nproc_per_node))
    endpoint = options.rdzv_endpoint or "127.0.0.1:0"
    if _is_loopback(endpoint) and "GLOO_SOCKET_IFNAME" not in os.environ:
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return env


# --- the job's processes ------------------------------------------------------------------------


class _Job:
    """The torchrun agent and every process it starts, killed together when needed."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        import psutil

        self._psutil = psutil
        with log.open("wb") as logf:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # the agent's own process group
            )
        self.seen: dict[int, Any] = {}  # pid -> psutil.Process (create time checked on kill)
        self.track()

    def track(self) -> None:
        """Record the agent's current descendants (ranks are session leaders of their own)."""
        try:
            root = self._psutil.Process(self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                self.seen.setdefault(p.pid, p)
        except self._psutil.Error:
            pass

    def wait(self, timeout_s: float) -> int | None:
        """The agent's exit code, or None if it is still running after ``timeout_s`` seconds."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.proc.wait(timeout=max(0.0, min(POLL_S, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                self.track()
                if time.monotonic() >= deadline:
                    return None

    def kill(self) -> int:
        """SIGKILL the agent's process group and every process of the job still alive; wait for them.

        Returns how many processes were still alive.
        """
        self.track()
        alive = [p for p in self.seen.values() if p.is_running()]
        for p in alive:
            try:
                if os.getpgid(p.pid) == p.pid:  # a group leader (the agent, each rank): its whole group
                    os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.kill()
            except self._psutil.Error:
                pass
        self._psutil.wait_procs([p for p in alive if p.pid != self.proc.pid], timeout=10)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        return len(alive)

    def leftovers(self) -> list[Any]:
        """Processes of the job still alive (normally none once the agent has exited)."""
        return [p for p in self.seen.values() if p.pid != self.proc.pid and p.is_running()]


# --- results --------------------------------------------------------------------------------------


def _tail(path: Path, n: int = 2) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])


def _agent_failures(log: Path) -> str:
    """torchrun's summary of the failed ranks (``rank : 1``, ``exitcode : -6``, ``Signal 6 ...``)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    keep = []
    for ln in text.splitlines():
        s = " ".join(ln.split())
        if s.startswith(("rank :", "exitcode :", "traceback : Signal")):
            keep.append(s)
    return "; ".join(dict.fromkeys(keep))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _phases(outdir: Path, world_size: int) -> str:
    parts = []
    for r in range(world_size):
        try:
            parts.append(f"rank {r}: {(outdir / f'rank{r}.phase').read_text(encoding='utf-8').strip()}")
        except OSError:
            parts.append(f"rank {r}: not started here")
    return ", ".join(parts)


def merge_ranks(cfg: RunConfig, ranks: list[dict[str, Any]]) -> ParallelMeasurement:
    """One ``ParallelMeasurement`` from the ok figures of every rank (see the module docstring)."""
    from bench.harness.energy import EnergyResult
    from bench.harness.energy import merge_ranks as merge_energy
    from bench.harness.memory import MemoryResult
    from bench.harness.timing import TimingResult

    timings = [TimingResult.from_dict(r["timing"]) for r in ranks]
    slow = max(range(len(ranks)), key=lambda i: timings[i].median_ms)
    mems = [r.get("memory") for r in ranks]
    mem_by_rank: dict[int, dict[str, Any]] = {i: m for i, m in enumerate(mems) if m}
    loaded = max(mem_by_rank, key=lambda i: mem_by_rank[i]["peak_mem_bytes"]) if mem_by_rank else None
    memory = MemoryResult(**mem_by_rank[loaded]) if loaded is not None else None
    timing, r_slow = timings[slow], ranks[slow]
    median_s = timing.median_ms / 1e3
    # the job's items per step: the global batch (data-parallel ranks each hold a share of it)
    job_items = (
        sum(r["items_per_step"] for r in ranks)
        if cfg.parallel in ("ddp", "fsdp")
        else r_slow["items_per_step"]
    )
    notes: list[str] = []
    if timing.noisy:
        notes.append(f"noisy: {'; '.join(timing.noisy_reasons)} (stopped by {timing.stop_reason})")
    for r in ranks:
        for note in r.get("notes", []):
            if note not in notes:
                notes.append(f"rank {r['rank']}: {note}" if len(ranks) > 1 else note)
    per_rank = []
    for r, t in zip(ranks, timings, strict=True):
        mem = r.get("memory") or {}
        per_rank.append(
            {
                "rank": r["rank"],
                "host": r.get("host"),
                "device": r.get("device"),
                "threads": r.get("threads"),
                "stage_index": r.get("stage_index"),
                "n_samples": t.n,
                "median_ms": t.median_ms,
                "ci_low_ms": t.ci_low_ms,
                "ci_high_ms": t.ci_high_ms,
                "samples_ms": list(t.samples_ms),
                "items_per_step": r["items_per_step"],
                "flops_per_step": r.get("flops_per_step"),
                "peak_mem_bytes": mem.get("peak_mem_bytes"),
                "mem_params_bytes": mem.get("mem_params_bytes"),
                "mem_grads_bytes": mem.get("mem_grads_bytes"),
                "mem_optimizer_bytes": mem.get("mem_optimizer_bytes"),
                "mem_activations_bytes": mem.get("mem_activations_bytes"),
                "comm_bytes_per_step": r.get("comm_bytes_per_step"),
            }
        )
    extra = dict(r_slow.get("extra") or {})
    extra.update(
        slowest_rank=r_slow["rank"],
        most_loaded_rank=ranks[loaded]["rank"] if loaded is not None else None,
        nproc_per_node=cfg.nproc_per_node,
        threads_per_rank=r_slow.get("threads"),
    )
    extra.pop("stage_output_bytes_per_microbatch", None)
    peaks = [m["peak_mem_bytes"] for m in mems if m]
    energy = merge_energy(
        [EnergyResult.from_dict(r.get("energy")) for r in ranks],
        hosts=[str(r.get("host")) for r in ranks],
        job_items_per_step=int(job_items),
    )
    if energy.status == "failed":
        notes.append(energy.reason)
    m = ParallelMeasurement(
        timing=timing,
        memory=memory,
        items_per_step=int(r_slow["items_per_step"]),
        unit=r_slow["unit"],
        flops_per_step=r_slow.get("flops_per_step"),
        extra=extra,
        notes=notes,
        job_throughput=job_items / median_s if median_s > 0 else None,
        comm_bytes_per_step=int(max(r.get("comm_bytes_per_step") or 0 for r in ranks)),
        bubble_fraction=r_slow.get("bubble_fraction"),
        max_rank_peak_mem_bytes=max(peaks) if peaks else None,
        ranks=per_rank,
        energy=energy,
    )
    # MFU: the slowest rank's, against one device's peak (measured in the rank: no CUDA context here)
    for name, value in (r_slow.get("mfu") or {}).items():
        setattr(m, name, value)
    return m


def collect(cfg: RunConfig, outdir: Path, rc: int, log: Path, elapsed_s: float) -> Outcome:
    """The ``Outcome`` of a finished job, from ``job.json`` or the ranks' own files and the agent log."""
    job = _read_json(outdir / "job.json")
    if rc == 0 and job and len(job.get("ranks", [])) == _nranks(cfg):
        m = merge_ranks(cfg, job["ranks"])
        return Outcome("ok", "; ".join(m.notes), m, elapsed_s)
    return _failed(cfg, outdir, rc, log, elapsed_s)


def collect_profile(cfg: RunConfig, outdir: Path, rc: int, log: Path, elapsed_s: float) -> Outcome:
    """The ``Outcome`` of a finished profiling job: ``measurement`` is every rank's record, in rank order."""
    job = _read_json(outdir / "job.json")
    if rc == 0 and job and len(job.get("ranks", [])) == _nranks(cfg):
        ranks = sorted(job["ranks"], key=lambda d: int(d.get("rank", 0)))
        notes = [f"rank {d['rank']}: {n}" for d in ranks for n in d.get("notes", [])]
        return Outcome("ok", "; ".join(notes), ranks, elapsed_s)
    return _failed(cfg, outdir, rc, log, elapsed_s)


def collect_probe(cfg: RunConfig, outdir: Path, rc: int, log: Path, elapsed_s: float) -> Outcome:
    """The ``Outcome`` of a finished probing job: each figure the highest over the ranks, and the ranks."""
    job = _read_json(outdir / "job.json")
    if rc == 0 and job and len(job.get("ranks", [])) == _nranks(cfg):
        ranks = sorted(job["ranks"], key=lambda d: int(d.get("rank", 0)))
        figures: dict[str, Any] = {}
        keys = ("tracked_peak_bytes", "allocated_peak_bytes", "reserved_peak_bytes", "rss_increase_bytes")
        for key in keys:
            values = [int(d[key]) for d in ranks if d.get(key) is not None]
            figures[key] = max(values) if values else None
        figures["ranks"] = [{k: v for k, v in d.items() if k != "memory"} for d in ranks]
        return Outcome("ok", "", figures, elapsed_s)
    return _failed(cfg, outdir, rc, log, elapsed_s)


def _failed(cfg: RunConfig, outdir: Path, rc: int, log: Path, elapsed_s: float) -> Outcome:
    """The ``Outcome`` of a job that gave no whole result: the root cause, from the ranks and the agent."""
    ranks = sorted(
        (d for p in outdir.glob("rank*.json") if isinstance(d := _read_json(p), dict)),
        key=lambda d: int(d.get("rank", 0)),
    )
    failed = [d for d in ranks if d.get("status") != "ok"]
    done = {int(d.get("rank", -1)) for d in ranks}
    missing = [r for r in range(_nranks(cfg)) if r not in done]
    # the root cause: a rank's own failure, not a peer's "connection closed" that follows from it
    primary = [d for d in failed if not _is_peer_loss(str(d.get("reason", "")))]
    if primary and all(d.get("status") == "skipped" for d in primary):
        return Outcome("skipped", _clean(str(primary[0].get("reason", ""))), elapsed_s=elapsed_s)
    if primary or not missing:
        pool = [d for d in primary if d.get("status") != "skipped"] or failed
        if pool:
            d = min(pool, key=lambda d: (d.get("status") != "oom", float(d.get("t", 0.0)), d.get("rank", 0)))
            r, status = d.get("rank"), str(d.get("status"))
            why = _clean(str(d.get("reason") or _tail(outdir / f"rank{r}.log", 1)))
            return Outcome(status, f"rank {r} of {_nranks(cfg)}: {why}", elapsed_s=elapsed_s)
    agent = _agent_failures(log)
    logs = " | ".join(f"rank {r}: {t}" for r in missing if (t := _tail(outdir / f"rank{r}.log", 1)))
    what = f"rank(s) {missing} died without a result (crash or signal)" if missing else "no merged result"
    return Outcome(
        "error",
        _clean(f"torchrun exited with code {rc}; {what}. {agent} {logs}".strip()) or _tail(log, 3),
        elapsed_s=elapsed_s,
    )


# what a rank reports when a *peer* failed: the consequence, not the cause
_PEER_LOSS = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "Timed out waiting",
    "recv operation",
    "NCCL communicator was aborted",
    "remote worker crashing",
)
_SOURCE_LOCATION = re.compile(r"\[[^\]\s]*\.(?:cc|cpp|h|hpp):\d+\]\s*")


def _is_peer_loss(reason: str) -> bool:
    return any(p in reason for p in _PEER_LOSS)


def _clean(reason: str) -> str:
    """A reason without C++ source locations (``[/__w/.../pair.cc:553]``): noise, and read as markup."""
    return _SOURCE_LOCATION.sub("", reason)


def _nranks(cfg: RunConfig) -> int:
    """Processes in the job (dp: one process driving ``world_size`` GPUs)."""
    return 1 if cfg.parallel == "dp" else cfg.world_size


def run_parallel(cfg: RunConfig, options: RunRequest, *, device_name: str | None = None) -> Outcome:
    """Measure ``cfg`` as one torchrun job; never raises for what happens in the job."""
    payload = {"config": cfg.to_json(), "request": options.to_dict(), "device_name": device_name}
    return _run_job(cfg, options, payload, collect)


def probe_parallel(cfg: RunConfig, options: RunRequest, *, device_name: str | None = None) -> Outcome:
    """Probe ``cfg`` as one torchrun job (``dlbench budget``): every rank runs one step and reports its
    memory (``bench.budget.probe.probe_rank``). The same launch, timeout and failure handling as
    ``run_parallel``; ``ok``: the outcome's ``measurement`` holds the figures of the most loaded rank
    (highest of each figure over the ranks: the budget is per device) and ``ranks``, every rank's."""
    payload = {"config": cfg.to_json(), "request": options.to_dict(), "task": "probe"}
    return _run_job(cfg, options, payload, collect_probe)


def profile_parallel(
    cfg: RunConfig, options: RunRequest, *, out_dir: Path, profile_kw: dict[str, Any] | None = None
) -> Outcome:
    """Profile ``cfg`` as one torchrun job: every rank runs ``profile_step(rank=r)`` into ``out_dir``.

    The same launch, timeout and failure handling as ``run_parallel`` (``bench.run.rank_worker``'s
    ``profile`` task builds and applies the strategy exactly as for timing). ``ok``: the outcome's
    ``measurement`` is the list of every rank's record (paths written, its ``summary.json`` contract),
    in rank order. Never raises for what happens in the job.
    """
    payload = {
        "config": cfg.to_json(),
        "request": options.to_dict(),
        "task": "profile",
        "profile": {"out_dir": str(Path(out_dir).resolve()), "kw": dict(profile_kw or {})},
    }
    return _run_job(cfg, options, payload, collect_profile)


def _run_job(
    cfg: RunConfig,
    options: RunRequest,
    payload: dict[str, Any],
    finish: Callable[[RunConfig, Path, int, Path, float], Outcome],
) -> Outcome:
    """Run one torchrun job of ``bench.run.rank_worker`` on ``payload``; ``finish`` reads its result."""
    t0 = time.perf_counter()
    deadline = t0 + options.timeout_s
    attempt = 0
    while True:
        attempt += 1
        with tempfile.TemporaryDirectory(prefix="dlbench-par-") as tmp:
            req, outdir, log = Path(tmp, "request.json"), Path(tmp, "out"), Path(tmp, "agent.log")
            outdir.mkdir()
            req.write_text(json.dumps(payload, default=str), encoding="utf-8")
            argv = [sys.executable, "-m", "bench.run.launch", "--parent-pid", str(os.getpid()), "--"]
            job = _Job([*argv, *torchrun_args(cfg, options, req, outdir)], job_env(cfg, options), log)
            try:
                rc = job.wait(max(0.0, deadline - time.perf_counter()))
            except BaseException:  # Ctrl-C or the parent being stopped: never leave the job behind
                job.kill()
                raise
            elapsed = time.perf_counter() - t0
            if rc is None:
                n = job.kill()
                return Outcome(
                    "timeout",
                    f"timed out after {options.timeout_s:g} s (torchrun job killed: {n} process(es)); "
                    f"{_phases(outdir, _nranks(cfg))}; raise --timeout to allow more",
                    elapsed_s=elapsed,
                )
            if job.leftovers():  # the agent exited; nothing of its job may outlive it
                job.kill()
            started = any(outdir.glob("rank*.phase"))
            if rc != 0 and not started and attempt < 3 and deadline - time.perf_counter() > 5:
                time.sleep(1.0)  # the rendezvous failed before any rank ran: try again
                continue
            return finish(cfg, outdir, rc, log, elapsed)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.run.launch --parent-pid PID -- TORCHRUN-ARGS``: torchrun, dying with dlbench."""
    args = sys.argv[1:] if argv is None else list(argv)
    parent: int | None = None
    if args[:1] == ["--parent-pid"]:
        parent, args = int(args[1]), args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    from bench.run.child import _die_with_parent

    _die_with_parent(parent)
    from torch.distributed.run import main as torchrun_main

    torchrun_main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
