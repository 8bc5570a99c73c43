"""Nothing is left behind: real SIGKILL and SIGTERM (sent twice) at several points of a run.

``dlbench gate`` (while it exports a git ref, while its workers start, mid-measurement),
``dlbench run --parallel`` (while ranks start, mid-measurement) and ``dlbench profile`` (while its
child builds) are started as real commands and killed. After each, there is no process, worktree,
lock or owned folder of the killed run -- and after the next normal run, still none. Every process
a test starts carries ``TAG`` in its environment (inherited by everything below it), and processes
are found by that marker, never by name; an autouse fixture kills any that is left, even when the
test fails. Each module gets its own scratch root (``DLBENCH_SCRATCH``), so "no owned folder" is
exact. The code under test starts a process of its own (``_spawn``, out of its worker's session
with ``session=true``), which must die too. The listening sockets of a one-node parallel job are
checked while it is mid-measurement: all on loopback, connected to nothing else.

Cost: each command imports torch; the tiny ``_linear`` / ``_spawn`` scenarios and short slices keep
each kill to a few seconds, and one job mid-measurement serves the socket check too.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from bench import owned

ROOT = Path(__file__).resolve().parents[2]
TAG = "DLBENCH_TEST_CLEANUP_TAG"
RUN_ID = uuid.uuid4().hex  # this module's marker value


# --- finding processes by marker -----------------------------------------------------------------


def tagged() -> list[int]:
    """Live processes (not zombies) carrying ``TAG=RUN_ID`` in their environment."""
    needle = f"{TAG}={RUN_ID}".encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            if psutil.Process(int(entry)).status() == psutil.STATUS_ZOMBIE:
                continue
        except (OSError, psutil.Error):
            continue
        out.append(int(entry))
    return out


def _kill_tagged() -> list[int]:
    left = tagged()
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return left


@pytest.fixture(autouse=True)
def _nothing_survives_a_test() -> Iterator[None]:
    yield
    _kill_tagged()  # even when the test failed half-way


def wait_for(what: str, pred: Callable[[], Any], timeout: float = 120.0, proc: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the command exited ({proc.returncode}) before {what}: {_log(proc)}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _log(proc: Any) -> str:
    try:
        return Path(proc.log).read_text(errors="replace")[-1500:]
    except (OSError, AttributeError):
        return ""


# --- the environment of every command --------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scratch")


@pytest.fixture(scope="module")
def env(scratch: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("DLBENCH_PLANT_SLOWDOWN", owned.MARKER_ENV)}
    e.update({TAG: RUN_ID, owned.ROOT_ENV: str(scratch), "PYTHONPATH": str(ROOT), "COLUMNS": "200"})
    return e


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository holding a copy of this source tree (two commits; the folder has a space)."""
    r = tmp_path_factory.mktemp("repos") / "src tree"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in ("bench", "dlcore"):
        shutil.copytree(ROOT / pkg, r / pkg, ignore=skip)
    _git(r, "init", "-q")
    _git(r, "add", "-A")
    _git(r, "commit", "-qm", "one")
    _git(r, "commit", "-q", "--allow-empty", "-m", "two")
    return r


def assert_clean(scratch: Path, repo: Path | None = None, *, timeout: float = 20.0) -> None:
    """No tagged process (the guardian included), no owned folder, no worktree or lock in ``repo``."""
    deadline = time.monotonic() + timeout
    while tagged() and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [" ".join(psutil.Process(p).cmdline()[:5]) for p in tagged() if psutil.pid_exists(p)]
    assert not left, left
    assert sorted(os.listdir(scratch)) == [], "owned folders left behind"
    if repo is not None:
        assert len([ln for ln in _git(repo, "worktree", "list", "--porcelain").splitlines()
                    if ln.startswith("worktree ")]) == 1  # fmt: skip
        assert not (repo / ".git" / "worktrees").exists() and not (repo / ".git" / "index.lock").exists()
        assert not list(repo.parent.glob(f"*{owned.PARTIAL_TAG}*"))


class Command:
    """A ``python -m bench.cli ...`` process, its output in a log file, in a session of its own."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = log
        with log.open("wb") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.cli", *args],
                cwd=cwd,
                env=env,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the test's signal reaches dlbench alone, not its group
            )

    def poll(self) -> int | None:
        return self.proc.poll()

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def kill(self, sig: int) -> int:
        """Send ``sig`` (SIGTERM: twice, the second during the cleanup the first started); its status."""
        self.proc.send_signal(sig)
        if sig == signal.SIGTERM:
            time.sleep(0.1)
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
        return self.proc.wait(timeout=90)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def _expect_killed(rc: int, sig: int, cmd: Command) -> None:
    want = -signal.SIGKILL if sig == signal.SIGKILL else 128 + signal.SIGTERM
    assert rc == want, (rc, cmd.text()[-2000:])


SIGNALS = [pytest.param(signal.SIGKILL, id="SIGKILL"), pytest.param(signal.SIGTERM, id="SIGTERMx2")]
GATE = ["gate", "--device", "cpu", "--preset", "tiny", "--pairs", "1", "--slices", "6"]


# --- dlbench gate ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", SIGNALS)
def test_gate_killed_while_exporting_a_ref(
    sig: int, env: dict[str, str], scratch: Path, repo: Path, tmp_path: Path
) -> None:
    """A ``git archive`` that never ends: the kill lands while the ref is being unpacked."""
    real_git = shutil.which("git")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do if [ "$a" = archive ]; then echo $$ > "$FAKE_GIT_MARK"; exec sleep 600; fi; done\n'
        f'exec "{real_git}" "$@"\n'
    )
    (fake / "git").chmod(0o755)
    mark = tmp_path / "archiving"
    e = {**env, "PATH": f"{fake}:{env['PATH']}", "FAKE_GIT_MARK": str(mark)}
    cmd = Command([*GATE, "_linear", "--base", "HEAD~1", "--new", "HEAD"], e, repo, tmp_path / "log")
    wait_for("git archive", mark.exists, proc=cmd)
    assert any(os.listdir(scratch)), "the gate's owned folder exists while it exports"
    _expect_killed(cmd.kill(sig), sig, cmd)
    assert_clean(scratch, repo)


@pytest.mark.parametrize("sig", SIGNALS)
def test_gate_killed_while_its_workers_start(
    sig: int, env: dict[str, str], scratch: Path, tmp_path: Path
) -> None:
    """Each worker's build starts a process in a session of its own, then holds: kill the gate."""
    spawned = tmp_path / "spawned"
    e = {**env, "DLBENCH_TEST_SPAWN_FILE": str(spawned)}
    args = [*GATE, "_spawn", "--aa", "-p", "hold=600", "-p", "session=true"]
    cmd = Command(args, e, ROOT, tmp_path / "log")
    pids = wait_for(
        "both workers' spawned processes",
        lambda: spawned.exists() and len(spawned.read_text().split()) == 2 and spawned.read_text().split(),
        proc=cmd,
    )
    assert all(psutil.pid_exists(int(p)) for p in pids)
    _expect_killed(cmd.kill(sig), sig, cmd)
    assert_clean(scratch)
    assert not any(psutil.pid_exists(int(p)) and psutil.Process(int(p)).status() != "zombie" for p in pids)


@pytest.mark.parametrize("sig", SIGNALS)
def test_gate_killed_mid_measurement(sig: int, env: dict[str, str], scratch: Path, tmp_path: Path) -> None:
    """Workers measuring slices, each with a process of its own in its process group."""
    spawned = tmp_path / "spawned"
    e = {**env, "DLBENCH_TEST_SPAWN_FILE": str(spawned)}
    args = [*GATE[:-1], "400", "--slice-time", "0.05", "_spawn", "--aa", "-p", "hold=0"]
    cmd = Command(args, e, ROOT, tmp_path / "log")
    wait_for("the measured slices", lambda: "gate: measuring" in cmd.text(), proc=cmd)
    _expect_killed(cmd.kill(sig), sig, cmd)
    if sig == signal.SIGTERM:
        assert "interrupted: workers stopped" in cmd.text()
    assert_clean(scratch)


# --- dlbench run --parallel ---------------------------------------------------------------------------

RUN = ["run", "--device", "cpu", "--mode", "train", "--parallel", "ddp", "--nproc", "2", "--max-time", "0.3"]


def _ranks() -> list[int]:
    """Tagged processes that are ranks (torchrun put ``RANK`` in their environment)."""
    out = []
    for pid in tagged():
        try:
            if "RANK" in psutil.Process(pid).environ():
                out.append(pid)
        except psutil.Error:
            continue
    return out


@pytest.mark.distributed
@pytest.mark.parametrize("sig", SIGNALS)
def test_parallel_run_killed_while_ranks_start(
    sig: int, env: dict[str, str], scratch: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r.csv"
    cmd = Command([*RUN, "_linear", "--timeout", "120", "--out", str(out)], env, ROOT, tmp_path / "log")
    wait_for("a rank process", _ranks, proc=cmd)
    _expect_killed(cmd.kill(sig), sig, cmd)
    assert_clean(scratch, timeout=10)  # not 1.5-2.5 x --timeout: at once


def _phases(scratch: Path) -> list[str]:
    return [p.read_text().split("\t")[0] for p in scratch.glob("job-*/out/rank*.phase") if p.exists()]


def _listening_and_connected(pids: list[int]) -> tuple[list[Any], list[Any]]:
    listening, connected = [], []
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.Error:
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN:
                listening.append((pid, c.laddr))
            elif c.raddr:
                connected.append((pid, c.laddr, c.raddr))
    return listening, connected


def _loopback(addr: Any) -> bool:
    ip = ipaddress.ip_address(addr.ip.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1, a dual-stack socket's view of 127.0.0.1
    return ip.is_loopback


@pytest.mark.distributed
@pytest.mark.parametrize("sig", SIGNALS)
def test_parallel_run_killed_mid_measurement_listening_on_loopback_only(
    sig: int, env: dict[str, str], scratch: Path, tmp_path: Path
) -> None:
    """Ranks timing steps (one rank hangs in its forward, so the job stays in ``timing``)."""
    out = tmp_path / "h.csv"
    args = [*RUN, "_rank_hang", "-p", "where=step", "--timeout", "300", "--out", str(out)]
    cmd = Command(args, env, ROOT, tmp_path / "log")
    wait_for("both ranks timing", lambda: _phases(scratch).count("timing") == 2, proc=cmd)
    if sig == signal.SIGKILL:  # once is enough: the agent's stores and the ranks' gloo sockets
        listening, connected = _listening_and_connected(tagged())
        assert len(listening) >= 3, listening  # the rendezvous store, the shared store, gloo pairs
        assert all(_loopback(a) for _, a in listening), listening
        assert all(_loopback(la) and _loopback(ra) for _, la, ra in connected), connected
    _expect_killed(cmd.kill(sig), sig, cmd)
    assert_clean(scratch, timeout=10)


# --- dlbench profile --------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", SIGNALS)
def test_profile_killed_while_building_leaves_no_partial_profile(
    sig: int, env: dict[str, str], scratch: Path, tmp_path: Path
) -> None:
    spawned = tmp_path / "spawned"
    e = {**env, "DLBENCH_TEST_SPAWN_FILE": str(spawned)}
    dest = tmp_path / "prof dir"
    args = ["profile", "_spawn", "--device", "cpu", "-p", "hold=600", "-p", "session=true", "-o", str(dest)]
    cmd = Command(args, e, ROOT, tmp_path / "log")
    wait_for("the profiled build", spawned.exists, proc=cmd)
    assert list(tmp_path.glob(f".prof dir{owned.PARTIAL_TAG}*")), "the staging folder exists meanwhile"
    _expect_killed(cmd.kill(sig), sig, cmd)
    assert_clean(scratch)
    assert not dest.exists() and not list(tmp_path.glob(f"*{owned.PARTIAL_TAG}*"))


# --- after the kills: a normal run, then still nothing ------------------------------------------------


def test_a_normal_gate_after_the_kills_leaves_nothing_either(
    env: dict[str, str], scratch: Path, repo: Path, tmp_path: Path
) -> None:
    """A ref exported, measured against the working tree, everything removed: exit 0 or 1."""
    cmd = Command([*GATE, "_linear", "--base", "HEAD~1", "--new", ".", "--slice-time", "0.02"], env, repo,
                  tmp_path / "log")  # fmt: skip
    rc = cmd.proc.wait(timeout=300)
    assert rc in (0, 1), cmd.text()[-2000:]
    assert "NEW/BASE" in cmd.text() and "HEAD~1" in cmd.text()
    assert_clean(scratch, repo)


# --- nox -s perf: a cancelled CI job ----------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_to_nox_perf_reaches_baseline_ratios_and_nothing_is_left(
    env: dict[str, str], scratch: Path, tmp_path: Path
) -> None:
    """What a CI cancel sends: SIGTERM to nox alone, while ``baseline ratios`` measures."""
    pytest.importorskip("nox")
    log = tmp_path / "log"
    with log.open("wb") as f:
        nox = subprocess.Popen(
            [sys.executable, "-m", "nox", "-s", "perf", "--", "--check", "attention"],
            cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for("the ratios' workers", lambda: any(n.startswith("gate-") for n in os.listdir(scratch)),
                 timeout=240, proc=nox)  # fmt: skip
        nox.send_signal(signal.SIGTERM)
        nox.wait(timeout=90)
    finally:
        if nox.poll() is None:
            nox.kill()
    assert nox.returncode != 0
    assert_clean(scratch)
    assert "interrupted: workers stopped" in log.read_text(errors="replace")
