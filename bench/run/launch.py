"""Launch one parallel configuration as one torchrun job, and merge its ranks into one row.

``run_parallel(cfg, options)`` is the third way to run a configuration (beside ``run_in_child`` and
``run_in_process`` in ``bench.run.execute``), with the same request/result protocol: it returns an
``Outcome``. It starts torch's own launcher, ``torch.distributed.run`` (torchrun), as a subprocess
in a session of its own::

    python -m bench.run.launch --parent-pid PID [--tmpdir DIR] [--loopback] --
        <torchrun arguments> -m bench.run.rank_worker REQ OUT

(this module's ``main`` asks for SIGKILL when dlbench dies, then hands its argv to torchrun's
``main``). torchrun's elastic agent does the rendezvous (``--rdzv-backend``, ``--rdzv-endpoint``)
and starts ``--nproc`` ranks per node, each running ``bench.run.rank_worker``; ``--max-restarts 0``,
so a failed rank fails the job.

Ownership: each job runs inside an owned entry (``bench.owned``, with a guardian): its request,
results, logs and torchelastic's log folder (``--log-dir``; the agent's own temporary files too)
live there, and every process of the job carries the entry's marker. The agent leads a session of
its own and each rank leads one (torchrun's doing); on every way out -- the job's end, a timeout,
SIGINT, SIGTERM -- those sessions and every marked process are killed and the entry removed; a
SIGKILL of dlbench is cleaned up by the guardian. A rank asks to die with the agent before it
imports anything, and exits at once if the agent is already gone (``DLBENCH_AGENT_PID``).

Networking: one node without ``--rdzv-endpoint`` uses a free port on 127.0.0.1; with a loopback
endpoint (or none) the agent's TCP stores (torch's c10d rendezvous store, the store it shares with
the ranks, a static rendezvous's store) are handed a socket bound to that loopback address
(``master_listen_fd``) instead of listening on every interface, and gloo/NCCL use the ``lo``
interface: nothing of the job listens on the network. A multi-node endpoint listens on the network,
as it must. The rendezvous id is new for every job: a fresh uuid on one node, ``--rdzv-id`` (which
the user gives every node of one run) plus the configuration on several, so two runs that share an
endpoint never join one rendezvous.

Threads: unless ``OMP_NUM_THREADS`` is set, each rank gets ``cpu_count // nproc`` intra-op threads
(the ranks of a node share its cores; the ``none`` row uses them all).

Failure handling, within ``--timeout`` seconds per configuration:

- a rank that raises writes its reason and exits non-zero; torchrun stops the others; the row is
  ``error`` (``oom`` for an out-of-memory error) and says which rank;
- a rank that crashes (signal, abort) leaves no result; the row is ``error`` with torchrun's summary
  of the failure (exit code or signal of each failed rank) and the rank's last log line;
- past the timeout (a rank that hangs, a peer that never arrives) every process of the job is
  killed with SIGKILL and waited for; the row is ``timeout`` and names the rank that hung, its phase
  and for how long, and where the others wait;
- the launcher failing before any rank starts (a rendezvous it cannot reach or host) gives the
  launcher's own last error, not a guess.

Either way nothing of the job is left running and the sweep goes on. A launch that fails before any
rank starts on a port dlbench picked (taken meanwhile), or across nodes (the endpoint still held by
the previous configuration's store, a peer still leaving its rendezvous), is retried while the
timeout allows; a one-node launch on a given ``--rdzv-endpoint`` is not, and the launcher's own
error is the row's reason.

Merging (``merge_ranks``): the time columns are the slowest rank's (highest median), the memory
columns the most loaded rank's (highest peak), the noise sentinel the busiest rank's window;
``job_throughput`` counts the whole job's items (the global batch) over the slowest rank's median;
``comm_bytes_per_step`` is the largest of the ranks'; MFU is the slowest rank's (each rank
measures its device's peak itself, so this process never opens a CUDA context that would hold
memory on GPU 0); energy is the sum over every rank's devices (``bench.harness.energy.merge_ranks``:
a CPU package that ranks share counts once), per step of the job and per item of the global batch;
each rank's own figures go to the sidecar (``ranks``). A multi-node job gathers every rank's figures
to each node, so every node's ``dlbench run`` writes the same job-level row.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.compiling import inductor_cache_env
from bench.registry import CHILD_ENV_VAR
from bench.run.execute import Outcome
from bench.run.grid import RunConfig
from bench.run.measure import Measurement
from bench.run.request import RunRequest

POLL_S = 0.2  # how often the parent checks the job and records its processes
AGENT_PID_ENV = "DLBENCH_AGENT_PID"  # the agent's pid, for a rank to check that its parent still lives
# the order a rank goes through (bench.run.rank_worker); a hung rank is the least advanced one
PHASES = ("init", "build", "wrap", "timing", "profile", "memory", "flops", "peak", "gather", "done")


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


def _host(endpoint: str) -> str:
    host = endpoint.strip().rpartition(":")[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_loopback(endpoint: str) -> bool:
    """True when every address ``endpoint``'s host resolves to is a loopback address."""
    host = _host(endpoint)
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


def rendezvous(cfg: RunConfig, options: RunRequest) -> tuple[str, str, str]:
    """(backend, endpoint, id) of the job's rendezvous.

    One node: the given endpoint, or a free port on 127.0.0.1, and a fresh id for every job (so a
    second run given the same endpoint cannot join this one). Several nodes: the given endpoint and
    ``--rdzv-id`` plus a digest of the configuration, the same on every node (each configuration is
    its own rendezvous, in the same grid order on every node) and new for every run.
    """
    if cfg.nnodes > 1:
        assert options.rdzv_endpoint is not None and options.rdzv_id  # RunRequest requires both
        digest = hashlib.sha1(cfg.key.encode()).hexdigest()[:12]
        return options.rdzv_backend, options.rdzv_endpoint.strip(), f"dlbench-{options.rdzv_id}-{digest}"
    endpoint = options.rdzv_endpoint.strip() if options.rdzv_endpoint else f"127.0.0.1:{_free_port()}"
    return options.rdzv_backend, endpoint, f"dlbench-{uuid.uuid4().hex[:16]}"


def torchrun_args(
    cfg: RunConfig, options: RunRequest, request: Path, outdir: Path, log_dir: Path | None = None
) -> list[str]:
    """The torchrun command line of one configuration (after ``python -m torch.distributed.run``)."""
    backend, endpoint, rdzv_id = rendezvous(cfg, options)
    timeout = max(1, int(options.timeout_s))
    conf = [f"join_timeout={timeout}"] if backend != "static" else [f"timeout={timeout}"]
    if backend == "c10d":
        # one node hosts its own store (a port already taken fails, instead of joining another job's);
        # several: node 0 serves the store
        conf.append(f"is_host={'true' if options.node_rank == 0 else 'false'}")
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
    if log_dir is not None:
        args.append(f"--log-dir={log_dir}")  # torchelastic's logs in our folder, not a new one in TMPDIR
    if is_loopback(endpoint):
        args.append(f"--local-addr={_host(endpoint)}")  # MASTER_ADDR of the ranks' process group
    return [*args, "-m", "bench.run.rank_worker", str(request), str(outdir)]


def job_env(cfg: RunConfig, options: RunRequest) -> dict[str, str]:
    """The environment of the agent and its ranks."""
    env = {**os.environ, CHILD_ENV_VAR: "1", "PYTHONUNBUFFERED": "1"}
    if "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // cfg.nproc_per_node))
    endpoint = options.rdzv_endpoint or "127.0.0.1:0"
    if is_loopback(endpoint):  # the ranks' own sockets on the loopback interface too
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        env.setdefault("NCCL_SOCKET_IFNAME", "lo")
    return env


# --- the job's processes ------------------------------------------------------------------------


class _Job:
    """The torchrun agent and every process it starts, killed together when needed."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        """Start the agent (``argv``) in a session of its own; ``env`` carries the owner's marker."""
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

        Each rank leads a session of its own (torchrun's doing), so each group seen is killed whole:
        what a rank started goes too. Returns how many processes were still alive.
        """
        from bench.signals import shielded

        with shielded():
            return self._kill()

    def _kill(self) -> int:
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


def _agent_error(log: Path) -> str:
    """The launcher's own last error: the final line of the last traceback in the agent's log."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    last = ""
    in_tb = False
    for ln in lines:
        if ln.startswith("Traceback (most recent call last):"):
            in_tb = True
            continue
        if in_tb and ln and not ln[0].isspace():
            last, in_tb = ln.strip(), False
    return _clean(last)


def _read_phase(outdir: Path, rank: int) -> tuple[str, float | None] | None:
    """(phase, seconds in it) of ``rank``, from ``rank<r>.phase`` (``name`` or ``name<TAB>since``)."""
    try:
        text = (outdir / f"rank{rank}.phase").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    name, _, since = text.partition("\t")
    try:
        return name, max(0.0, time.time() - float(since))
    except ValueError:
        return name, None


def _phases(outdir: Path, world_size: int) -> str:
    """Which rank hung, in which phase and for how long, and where the others wait."""
    seen = {r: _read_phase(outdir, r) for r in range(world_size)}
    order = {name: i for i, name in enumerate(PHASES)}

    def rank_of(r: int) -> int:
        ph = seen[r]
        return -1 if ph is None else order.get(ph[0].split(" ")[0], len(PHASES))

    lowest = min(rank_of(r) for r in seen)
    stuck = [r for r in seen if rank_of(r) == lowest]
    others = [r for r in seen if rank_of(r) != lowest]

    def where(r: int) -> str:
        ph = seen[r]
        if ph is None:
            return "never started"
        return f"in {ph[0]}" + (f" for {ph[1]:.1f} s" if ph[1] is not None else "")

    if not others:
        parts = ", ".join(f"rank {r}: {where(r)}" for r in stuck)
        return f"every rank stopped at the same point ({parts}): a collective that never completed?"
    head = ", ".join(f"rank {r}" for r in stuck)
    verb = "never started" if seen[stuck[0]] is None else f"hung {where(stuck[0])}"
    return f"{head} {verb}; " + ", ".join(f"rank {r} waits {where(r)}" for r in others)


def merge_ranks(cfg: RunConfig, ranks: list[dict[str, Any]]) -> ParallelMeasurement:
    """One ``ParallelMeasurement`` from the ok figures of every rank (see the module docstring)."""
    from bench.harness.compile_stats import CompileResult
    from bench.harness.compile_stats import combine_ranks as combine_compile
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
                "noise_other_cpu_pct": r.get("noise_other_cpu_pct"),
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
        compile=combine_compile([CompileResult.from_dict(r.get("compile")) for r in ranks]),
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
    # the noise sentinel: the busiest window any rank saw (the job's own ranks not counted as noise)
    others = [r["noise_other_cpu_pct"] for r in ranks if r.get("noise_other_cpu_pct") is not None]
    steals = [r["noise_steal_pct"] for r in ranks if r.get("noise_steal_pct") is not None]
    m.noise_other_cpu_pct = max(others) if others else None
    m.noise_steal_pct = max(steals) if steals else None
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
        figures["judged_eager"] = any(d.get("judged_eager") for d in ranks)
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
    if not any(outdir.glob("rank*.phase")):  # no rank ever ran: the launcher itself failed
        why = _agent_error(log) or _tail(log, 2) or "no output"
        return Outcome(
            "error",
            _clean(f"the torchrun launcher failed before any rank started (exit {rc}): {why}"),
            elapsed_s=elapsed_s,
        )
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
    """Run one torchrun job of ``bench.run.rank_worker`` on ``payload``; ``finish`` reads its result.

    Everything the job writes or starts belongs to one owned entry (see the module docstring).
    """
    from bench.owned import owned

    t0 = time.perf_counter()
    deadline = t0 + options.timeout_s
    attempt = 0
    while True:
        attempt += 1
        with owned("job", guard=True) as own:
            tmp = own.path
            req, outdir, log = tmp / "request.json", tmp / "out", tmp / "agent.log"
            outdir.mkdir()
            (tmp / "tmp").mkdir()
            req.write_text(json.dumps(payload, default=str), encoding="utf-8")
            args = torchrun_args(cfg, options, req, outdir, log_dir=tmp / "torchelastic")
            argv = [sys.executable, "-m", "bench.run.launch", "--parent-pid", str(os.getpid())]
            argv += ["--tmpdir", str(tmp / "tmp")]
            if any(a.startswith("--local-addr=") for a in args):
                argv.append("--loopback")
            # a compiled configuration's ranks share one cold inductor cache in the job's folder
            env = {**job_env(cfg, options), **inductor_cache_env(cfg.compile, tmp)}
            job = _Job([*argv, "--", *args], own.child_env(env), log)
            try:
                rc = job.wait(max(0.0, deadline - time.perf_counter()))
            except BaseException:  # Ctrl-C, SIGTERM: never leave the job behind
                job.kill()
                raise
            elapsed = time.perf_counter() - t0
            if rc is None:
                hang = _phases(outdir, _nranks(cfg))
                n = job.kill()
                return Outcome(
                    "timeout",
                    f"timed out after {options.timeout_s:g} s (torchrun job killed: {n} process(es)); "
                    f"{hang}; raise --timeout to allow more",
                    elapsed_s=elapsed,
                )
            if job.leftovers():  # the agent exited; nothing of its job may outlive it
                job.kill()
            started = any(outdir.glob("rank*.phase"))
            # a free port we picked may be taken meanwhile; a multi-node endpoint may still be held by
            # the previous configuration's store, or a peer node may still be leaving its rendezvous
            retry = options.rdzv_endpoint is None or cfg.nnodes > 1
            if rc != 0 and not started and retry and attempt < 3 and deadline - time.perf_counter() > 5:
                time.sleep(1.0)  # the rendezvous failed before any rank ran: try again
                continue
            return finish(cfg, outdir, rc, log, elapsed)


def _listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``port`` 0: a free one) and listening."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def loopback_tcp_store(*args: Any, **kwargs: Any) -> Any:
    """``torch.distributed.TCPStore``, its server listening on the (loopback) host it is given.

    torch's TCPStore server listens on every interface whatever its host name; given an already
    bound socket (``master_listen_fd``, libuv backend) it listens there instead. Clients are
    unchanged.
    """
    from torch.distributed import TCPStore

    names = ("host_name", "port", "world_size", "is_master", "timeout", "wait_for_workers", "multi_tenant")
    kw: dict[str, Any] = dict(zip(names, args, strict=False))
    kw.update(kwargs)
    if kw.get("is_master") and kw.get("master_listen_fd") is None:
        sock = _listening_socket(str(kw["host_name"]), int(kw["port"]))
        kw["port"] = sock.getsockname()[1]
        kw["master_listen_fd"] = sock.detach()  # the store owns the descriptor from here
        kw["use_libuv"] = True
    return TCPStore(**kw)


def bind_stores_to_loopback() -> list[str]:
    """Make the elastic agent's TCP stores listen on their host only (see ``loopback_tcp_store``).

    Patches, in this process (the agent), the three places torch's launcher creates a store server:
    the c10d rendezvous backend's store, the store the agent shares with its ranks, and the static
    rendezvous's store. Returns what it patched; a test lists the job's listening sockets, so a
    torch that moves these fails there, not silently.
    """
    patched = []
    try:
        from torch.distributed.elastic.rendezvous import c10d_rendezvous_backend as c10d

        c10d.TCPStore = loopback_tcp_store  # type: ignore[misc,assignment]
        patched.append("c10d_rendezvous_backend.TCPStore")
    except ImportError:
        pass
    try:
        from torch.distributed.elastic.rendezvous import static_tcp_rendezvous as static

        static.TCPStore = loopback_tcp_store  # type: ignore[misc,assignment]
        patched.append("static_tcp_rendezvous.TCPStore")
    except ImportError:
        pass
    try:
        from torch.distributed.elastic.rendezvous.dynamic_rendezvous import DynamicRendezvousHandler

        if hasattr(DynamicRendezvousHandler, "_create_tcp_store_server"):

            def server(self: Any, *args: Any) -> Any:
                # (master_addr, master_port) in torch 2.13; (bootstrap_store_info,) in some earlier ones
                if len(args) == 1:
                    addr, port = args[0].master_addr, args[0].master_port
                else:
                    addr, port = args
                return loopback_tcp_store(addr, port, is_master=True, multi_tenant=True)

            DynamicRendezvousHandler._create_tcp_store_server = server  # type: ignore[method-assign,assignment]
            patched.append("DynamicRendezvousHandler._create_tcp_store_server")
    except ImportError:
        pass
    return patched


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.run.launch --parent-pid PID [--tmpdir DIR] [--loopback] -- TORCHRUN-ARGS``.

    torchrun's agent in this process: it dies with dlbench (and exits at once if dlbench is already
    gone), keeps its own temporary files in ``--tmpdir``, and with ``--loopback`` its stores listen
    on the loopback address only. The ranks learn its pid (``DLBENCH_AGENT_PID``).
    """
    args = sys.argv[1:] if argv is None else list(argv)
    parent: int | None = None
    loopback = False
    tmpdir: str | None = None
    while args and args[0] != "--":
        if args[0] == "--parent-pid":
            parent, args = int(args[1]), args[2:]
        elif args[0] == "--tmpdir":
            tmpdir, args = args[1], args[2:]
        elif args[0] == "--loopback":
            loopback, args = True, args[1:]
        else:
            break
    if args[:1] == ["--"]:
        args = args[1:]
    from bench.owned import die_with_parent

    die_with_parent(parent)
    os.environ[AGENT_PID_ENV] = str(os.getpid())
    if tmpdir is not None:
        import tempfile

        tempfile.tempdir = tmpdir  # the agent's own temporary files only (the ranks keep TMPDIR)
    if loopback:
        bind_stores_to_loopback()
    from torch.distributed.run import main as torchrun_main

    torchrun_main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
