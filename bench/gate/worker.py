"""A persistent gate worker: builds one configuration once, then times the step in slices on command.

Why a persistent process: runs made apart drift up to 46 % here (between processes and time
windows), so the gate keeps one BASE and one NEW process alive and asks them, in turn, for short
timing slices; both sides then see the same time windows and the drift cancels in the per-slice
ratio (``bench.gate.interleave``).

Both halves of the protocol live in this file, so the message shapes are defined once:

* the **worker** (``main``; ``python -m bench.gate.worker CONFIG_JSON``), run with ``cwd`` and
  ``PYTHONPATH`` set to the source tree under test. It imports only that tree's
  ``bench.registry`` and ``bench.workload.build_step`` (the same build as ``dlbench run``), so the
  code under test is the tree's while the timing loop is this file's on both sides: a gate that
  compares two trees never compares two timing harnesses. For a tree other than the driver's this
  file is run by path (``runpy``), so a tree that predates the gate can be measured too.
* the **client** (``WorkerClient``), used by the driver: starts the process, sends commands,
  reads replies with a deadline, and always kills the process on the way out.

Protocol (JSON, one object per line; worker stdout carries only protocol, anything the code under
test prints goes to stderr):

    worker -> {"event": "ready", "protocol": 1, "pid", "bench_file", "torch_version", "threads",
               "device", "calls_per_sample", "est_step_ms", "plant_slowdown", "built"}
           or {"event": "error", "kind": "usage" | "build", "error": "..."} and exit 1
    driver -> {"cmd": "slice", "seconds": S}
    worker -> {"ok": true, "times_ms": [...], "calls_per_sample": k, "elapsed_s": ...}
           or {"ok": false, "error": "ExcType: message"}
    driver -> {"cmd": "ping"}  -> {"ok": true, "pong": true}
    driver -> {"cmd": "exit"}  -> {"ok": true, "bye": true}, then the worker exits 0

``built`` is the configuration the worker actually built: every scenario parameter after the
tree's own defaults and preset (``params``), and ``preset``, ``mode``, ``precision``,
``checkpointing``, ``compile``, ``device``. The driver compares BASE's with NEW's, so a tree that
changed a default cannot pass as an unchanged configuration. A compiled side compiles while it
builds: the first of its estimating calls is the compilation, which the median leaves out, and the
driver's warm-up slices follow before any slice is kept.

A slice runs the full step (forward, backward, optimizer: ``PhasedStep.run``) back to back for at
least ``S`` seconds and at least ``MIN_SLICE_SAMPLES`` samples (so one preempted sample cannot
move a slice's median, whatever ``--slice-time``) and returns every per-call time in milliseconds. Steps
faster than ``FAST_STEP_S`` are timed in blocks of ``k`` calls (per-call time = block / k), the
rule of ``bench.harness.timing`` (its constants are repeated here because this file must run
against trees whose harness may differ). On CUDA each sample is synchronized before the host clock
is read. A garbage collection runs before each slice, outside the timed loop; what the build made
is frozen (``gc.freeze``) once ready, so that collection is cheap.

``DLBENCH_PLANT_SLOWDOWN=f`` (read here and nowhere else; tests and ``bench/micro/gate_rates.py``
only): after every timed sample the worker busy-waits ``f`` times that sample's own measured time,
inside the timed interval, so the planted slowdown is exactly proportional (``1 + f``) whatever the
step costs. The driver gives it to NEW's workers only.

The worker dies with its parent (Linux ``PR_SET_PDEATHSIG``) and ignores SIGINT (the driver, not
the worker, decides how to stop). It runs in a session of its own, so ``close`` kills it together
with whatever the code under test started in its process group; the driver's ``env`` carries the
owner marker of ``bench.owned``, which finds any process that left the group.
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

PROTOCOL = 1
PLANT_ENV_VAR = "DLBENCH_PLANT_SLOWDOWN"
CHILD_ENV_VAR = "DLBENCH_CHILD"  # bench.registry.CHILD_ENV_VAR: test scenarios abort only in a child

# bench.harness.timing's blocking rule (repeated: see the module docstring)
FAST_STEP_S = 50e-6  # steps faster than this are timed in blocks of k calls
BLOCK_TARGET_S = 200e-6  # a block of fast calls lasts about this long
MAX_CALLS_PER_SAMPLE = 1000
WARMUP_CALLS = 3  # calls made at build time to estimate the step time (the driver warms up further)
MIN_SLICE_SAMPLES = 5  # a slice's median needs a few samples: two outliers cannot move a median of 5

_THIS_FILE = Path(__file__).resolve()
DRIVER_TREE = _THIS_FILE.parents[2]  # the source tree this file belongs to
_BOOTSTRAP = (
    "import runpy, sys; f = sys.argv[1]; sys.argv = [f] + sys.argv[2:]; "
    "runpy.run_path(f, run_name='__main__')"
)


# ------------------------------------------------------------------------------------------------
# worker side
# ------------------------------------------------------------------------------------------------
def _die_with_parent(parent_pid: int | None) -> None:
    """Linux: SIGKILL when the parent dies, so a killed driver leaves no worker behind.

    The same as ``bench.run.child._die_with_parent``, repeated because this file also runs against
    trees that predate ``bench.run`` (see the module docstring).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except Exception:
        return
    if parent_pid is not None and os.getppid() != parent_pid:  # the parent died before prctl
        os._exit(1)


def plant_fraction(environ: Mapping[str, str] | None = None) -> float:
    """The planted slowdown ``f`` of ``DLBENCH_PLANT_SLOWDOWN`` (0 when unset); ValueError if invalid."""
    raw = (os.environ if environ is None else environ).get(PLANT_ENV_VAR, "").strip()
    if not raw:
        return 0.0
    try:
        f = float(raw)
    except ValueError:
        f = math.nan
    if not (math.isfinite(f) and 0.0 <= f <= 10.0):
        raise ValueError(f"{PLANT_ENV_VAR}: expected a fraction in [0, 10], got {raw!r}")
    return f


def run_slice(
    step: Callable[[], None],
    seconds: float,
    *,
    calls_per_sample: int = 1,
    plant: float = 0.0,
    sync: Callable[[], None] | None = None,
    clock: Callable[[], int] = time.perf_counter_ns,
    min_samples: int = MIN_SLICE_SAMPLES,
) -> list[float]:
    """Per-call times (ms) of ``step`` run back to back for at least ``seconds`` and ``min_samples``.

    ``plant > 0`` busy-waits ``plant`` times each sample's measured time inside the timed interval
    (the planted slowdown). ``sync`` (CUDA) runs after each block, before the clock is read.
    """
    k = max(1, int(calls_per_sample))
    scale = 1e-6 / k  # ns -> ms per call
    calls = range(k)
    out: list[float] = []
    append = out.append
    deadline = clock() + int(seconds * 1e9)
    while True:
        t0 = clock()
        for _ in calls:
            step()
        if sync is not None:
            sync()
        t1 = clock()
        if plant > 0.0:
            until = t1 + int((t1 - t0) * plant)
            while clock() < until:
                pass
            t1 = clock()
        append((t1 - t0) * scale)
        if t1 >= deadline and len(out) >= min_samples:
            return out


def calls_per_sample_for(est_call_s: float) -> int:
    """``k`` of ``bench.harness.timing``: 1, or enough calls for a block of ~``BLOCK_TARGET_S``."""
    if est_call_s <= 0 or est_call_s >= FAST_STEP_S:
        return 1
    return min(MAX_CALLS_PER_SAMPLE, math.ceil(BLOCK_TARGET_S / est_call_s))


def _estimate_call_s(step: Callable[[], None], sync: Callable[[], None] | None) -> float:
    """Median of ``WARMUP_CALLS`` synchronized calls, re-timed as a ~2 ms burst when under 1 ms."""
    times = []
    for _ in range(WARMUP_CALLS):
        t0 = time.perf_counter_ns()
        step()
        if sync is not None:
            sync()
        times.append(time.perf_counter_ns() - t0)
    est = sorted(times)[len(times) // 2] * 1e-9
    if est < 1e-3:
        m = min(MAX_CALLS_PER_SAMPLE, max(1, math.ceil(2e-3 / max(est, 1e-9))))
        t0 = time.perf_counter_ns()
        for _ in range(m):
            step()
        if sync is not None:
            sync()
        est = (time.perf_counter_ns() - t0) * 1e-9 / m
    return est


def _built(scfg: Any, config: Mapping[str, Any]) -> dict[str, Any]:
    """What was built, JSON-ready: the scenario config's fields after defaults, and the run options."""
    import dataclasses

    if dataclasses.is_dataclass(scfg) and not isinstance(scfg, type):
        params = dataclasses.asdict(scfg)
    else:
        params = dict(vars(scfg))
    out = {
        "preset": config.get("preset", "default"),
        "mode": config["mode"],
        "precision": config["precision"],
        "checkpointing": config.get("checkpointing", "none"),
        "compile": config.get("compile", "none"),
        "device": config.get("device", "cpu"),
        "params": params,
    }
    return dict(json.loads(json.dumps(out, default=str)))


def _build(
    config: Mapping[str, Any],
) -> tuple[Callable[[], None], Callable[[], None] | None, dict[str, Any]]:
    """The tree's step for ``config`` (``bench.workload.build_step``, as ``dlbench run`` builds it),
    its synchronization, and what was built (``_built``)."""
    from bench.registry import BuildContext, get_scenario

    try:
        from bench.workload import build_step
    except ImportError as exc:
        raise RuntimeError(
            f"this tree has no bench.workload.build_step ({exc}); the gate needs a tree with it"
        ) from None
    device = str(config.get("device", "cpu"))
    sync = None
    if device.startswith("cuda"):
        import torch

        torch.cuda.set_device(torch.device(device))  # events, caches and streams of this device

        def sync() -> None:
            torch.cuda.synchronize(device)

    spec = get_scenario(config["scenario"])
    scfg = spec.make_config(config.get("preset", "default"), **dict(config.get("params", {})))
    ctx = BuildContext(
        device=device,
        mode=config["mode"],
        seed=int(config.get("seed", 0)),
        channels_last=bool(config.get("channels_last", False)),
    )
    # compile only when asked: a tree older than --compile has no such keyword and can still be eager
    compiled = {"compile": config["compile"]} if config.get("compile", "none") != "none" else {}
    try:
        _, step = build_step(
            spec,
            scfg,
            ctx,
            precision=config["precision"],
            checkpointing=config.get("checkpointing", "none"),
            **compiled,
        )
    except TypeError as exc:
        if compiled and "compile" in str(exc):
            raise RuntimeError(
                f"this tree's build_step takes no compile ({exc}): it predates --compile"
            ) from None
        raise
    return step.run, sync, _built(scfg, config)


def _send(out: IO[str], msg: Mapping[str, Any]) -> None:
    out.write(json.dumps(msg) + "\n")
    out.flush()


def serve(config: Mapping[str, Any], inp: IO[str], out: IO[str]) -> int:
    """Build ``config``, say ready, then answer commands from ``inp`` until ``exit`` or EOF."""
    try:
        plant = plant_fraction()
    except ValueError as exc:
        _send(out, {"event": "error", "kind": "usage", "error": str(exc)})
        return 1
    try:
        import torch

        step, sync, built = _build(config)
    except ValueError as exc:  # a config the tree rejects (unknown parameter, bad value)
        traceback.print_exc()
        _send(out, {"event": "error", "kind": "usage", "error": str(exc)})
        return 1
    except Exception as exc:
        traceback.print_exc()
        _send(out, {"event": "error", "kind": "build", "error": f"{type(exc).__name__}: {exc}"})
        return 1
    try:
        est = _estimate_call_s(step, sync)
    except Exception as exc:
        traceback.print_exc()
        _send(out, {"event": "error", "kind": "build", "error": f"first steps: {type(exc).__name__}: {exc}"})
        return 1
    k = calls_per_sample_for(est)
    import bench

    _send(
        out,
        {
            "event": "ready",
            "protocol": PROTOCOL,
            "pid": os.getpid(),
            "bench_file": str(Path(bench.__file__).resolve()),
            "torch_version": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": config.get("device", "cpu"),
            "calls_per_sample": k,
            "est_step_ms": est * 1e3,
            "plant_slowdown": plant,
            "built": built,
        },
    )
    import gc

    # everything built so far lives as long as the worker: freeze it, so the collection before each
    # slice (which keeps a collection out of the timed loop) traverses only the slices' own garbage
    # -- a full collection with torch loaded takes 50-800 ms here, more than a slice
    gc.collect()
    gc.freeze()
    for line in inp:
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line)
            name = cmd.get("cmd")
        except (json.JSONDecodeError, AttributeError):
            _send(out, {"ok": False, "error": f"not a JSON command: {line[:80]!r}"})
            continue
        if name == "slice":
            try:
                seconds = float(cmd["seconds"])
                gc.collect()
                t0 = time.perf_counter()
                times = run_slice(step, seconds, calls_per_sample=k, plant=plant, sync=sync)
                elapsed = time.perf_counter() - t0
            except Exception as exc:
                traceback.print_exc()
                _send(out, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
                continue
            _send(out, {"ok": True, "times_ms": times, "calls_per_sample": k, "elapsed_s": elapsed})
        elif name == "ping":
            _send(out, {"ok": True, "pong": True})
        elif name == "exit":
            _send(out, {"ok": True, "bye": True})
            return 0
        else:
            _send(out, {"ok": False, "error": f"unknown command {name!r}"})
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m bench.gate.worker CONFIG_JSON`` (stdin/stdout carry the protocol)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.gate.worker CONFIG_JSON", file=sys.stderr)
        return 2
    config = json.loads(args[0])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(config.get("parent_pid"))
    os.environ[CHILD_ENV_VAR] = "1"
    # protocol on a private copy of stdout; fd 1 (prints of the code under test) goes to stderr
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return serve(config, sys.stdin, out)


# ------------------------------------------------------------------------------------------------
# client side (the driver)
# ------------------------------------------------------------------------------------------------
class WorkerError(RuntimeError):
    """A worker failed: it died, timed out, or answered with an error. The message says which."""


class WorkerUsageError(WorkerError):
    """The tree under test rejected the configuration (unknown parameter, bad value)."""


def _signal_name(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


class WorkerClient:
    """The driver's handle on one worker process; ``close`` (or leaving ``with``) always kills it.

    ``name`` (e.g. ``"NEW[1]"``) prefixes every error. ``env`` replaces the inherited environment's
    entries (``None`` values remove one); ``PYTHONPATH`` is always the tree.
    """

    def __init__(
        self,
        name: str,
        tree: Path | str,
        config: Mapping[str, Any],
        *,
        env: Mapping[str, str | None] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.name = name
        self.tree = Path(tree).resolve()
        self.config = {**config, "parent_pid": os.getpid()}
        self.ready: dict[str, Any] = {}
        environ = dict(os.environ)
        for key, value in (env or {}).items():
            if value is None:
                environ.pop(key, None)
            else:
                environ[key] = value
        environ["PYTHONPATH"] = str(self.tree)
        environ.setdefault("PYTHONUNBUFFERED", "1")
        if self.tree == DRIVER_TREE:
            argv = [python, "-m", "bench.gate.worker", json.dumps(self.config)]
        else:  # the driver's worker file, with the tree's bench on the path (see the module docstring)
            argv = [python, "-c", _BOOTSTRAP, str(_THIS_FILE), json.dumps(self.config)]
        self._stderr = tempfile.TemporaryFile(mode="w+b")
        self.proc = subprocess.Popen(
            argv,
            cwd=self.tree,
            env=environ,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own process group: killed as a whole by ``close``
        )
        self._buf = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_tail(self, n: int = 15) -> str:
        """The last ``n`` lines the worker wrote to stderr (tracebacks)."""
        try:
            self._stderr.seek(0)
            text = self._stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        return "\n".join(text.rstrip().splitlines()[-n:])

    def _died(self, doing: str) -> WorkerError:
        if _wait_unreaped(self.proc.pid, 5.0):
            kill(self.proc)  # reaps it; what it started in its group goes with it
            how = _signal_name(int(self.proc.returncode or 0))
        else:
            how = "closed its output"
        tail = self.stderr_tail()
        detail = "\n  its stderr ends with:\n    " + tail.replace("\n", "\n    ") if tail else ""
        return WorkerError(f"{self.name} worker (pid {self.pid}) died {doing} ({how}){detail}")

    def _readline(self, timeout_s: float, doing: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while "\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerError(
                    f"{self.name} worker (pid {self.pid}) timed out after {timeout_s:.0f} s {doing}"
                )
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise self._died(doing)
            self._buf += chunk.decode("utf-8", "replace")
        line, self._buf = self._buf.split("\n", 1)
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            raise WorkerError(
                f"{self.name} worker sent a line that is not protocol: {line[:120]!r}"
            ) from None
        if not isinstance(msg, dict):
            raise WorkerError(f"{self.name} worker sent {msg!r}, not a JSON object")
        return msg

    def wait_ready(self, timeout_s: float = 600.0) -> dict[str, Any]:
        """Block until the worker has built its step; its ready message (``WorkerError`` otherwise)."""
        msg = self._readline(timeout_s, "while building its step")
        if msg.get("event") == "error":
            cls = WorkerUsageError if msg.get("kind") == "usage" else WorkerError
            raise cls(f"{self.name} ({self.tree}): {msg.get('error')}")
        if msg.get("event") != "ready" or msg.get("protocol") != PROTOCOL:
            raise WorkerError(f"{self.name} worker: unexpected first message {msg!r}")
        self.ready = msg
        return msg

    def request(self, cmd: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send one command and return its reply; ``WorkerError`` on death, timeout or an error reply."""
        assert self.proc.stdin is not None
        doing = f"on {cmd.get('cmd')!r}"
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died(doing) from None
        msg = self._readline(timeout_s, doing)
        if not msg.get("ok"):
            raise WorkerError(f"{self.name} worker {doing}: {msg.get('error')}")
        return msg

    def slice(self, seconds: float) -> list[float]:
        """Per-call times (ms) of one timing slice of ``seconds``."""
        est_s = float(self.ready.get("est_step_ms", 0.0)) * 1e-3
        timeout = 60.0 + 2.0 * seconds + 20.0 * est_s
        return [float(x) for x in self.request({"cmd": "slice", "seconds": seconds}, timeout)["times_ms"]]

    def close(self, *, hurry: bool = False) -> None:
        """Ask the worker to exit (not when ``hurry``), then kill its whole process group and reap it."""
        if not hurry and self.proc.returncode is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "exit"}) + "\n")
                self.proc.stdin.flush()
                _wait_unreaped(self.proc.pid, 2.0)
            except (OSError, ValueError):
                pass
        kill(self.proc)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        self._stderr.close()

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _wait_unreaped(pid: int, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for child ``pid`` to exit, without reaping it (its pid, which is also
    its process group's id, stays reserved until ``kill`` reaps it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def kill(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL ``proc``'s process group (it leads one: ``start_new_session``) and reap ``proc``.

    The group is killed even when ``proc`` itself has exited, as long as it is not reaped yet, so
    what the code under test started in the group goes too.
    """
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:  # no such group (not a leader, or nothing left): the process alone
            try:
                proc.kill()
            except OSError:
                pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


if __name__ == "__main__":
    sys.exit(main())
