"""``dlbench bisect`` for real, on a synthetic history: it names the planted commit, leaves nothing.

The history (``bench.micro.bisect_demo.build_history``, the same the demo script measures): GOOD is
this source tree, then 12 commits; c6 breaks the import of the scenarios (it must be skipped),
c7 repairs it, and c8 makes the test scenario ``_busy`` do 30 % more work per step -- a code
change, not ``DLBENCH_PLANT_SLOWDOWN``. A branch ``calm`` holds commits with no slowdown.

Each bisection runs as a real ``dlbench`` process in that repository, with HEAD detached, the tree
dirty (a staged and an unstaged change, an untracked file) and ``--good`` a tag or ``HEAD~N``, at
the smallest accepted setting (1 worker pair x 6 slices of 0.1 s, threshold 10 %; an inconclusive
gate goes on to 12 and 24 slices). Afterwards HEAD, the index, the working tree, the refs and the
worktrees are as they were, no process carries the test's marker and dlbench's scratch folder is
empty. SIGINT, SIGTERM (twice) and SIGKILL mid-bisection leave nothing either.

Processes are found by an environment marker (``TAG``), never by name.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
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

from bench.micro import bisect_demo

ROOT = Path(__file__).resolve().parents[2]
TAG = "DLBENCH_TEST_BISECT_TAG"
RUN_ID = uuid.uuid4().hex
SETTINGS = ["--preset", "tiny", "--pairs", "1", "--slices", "6", "--slice-time", "0.1", "--threshold", "10%"]


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


@pytest.fixture(autouse=True)
def _nothing_survives_a_test() -> Iterator[None]:
    yield
    for pid in tagged():  # even when the test failed half-way
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scratch")


@pytest.fixture(scope="module")
def env(scratch: Path) -> dict[str, str]:
    e = bisect_demo.dlbench_env(scratch)
    return {**e, TAG: RUN_ID, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    repo = tmp_path_factory.mktemp("history") / "src tree"  # a space in the path
    return repo, bisect_demo.build_history(repo)


def git(repo: Path, *args: str) -> str:
    return bisect_demo.git(repo, *args)


def prepare(repo: Path, target: str) -> dict[str, Any]:
    """HEAD at ``target`` (detached or a branch), the tree made dirty; what must not change."""
    git(repo, "reset", "-q", "--hard")
    git(repo, "clean", "-fdq")
    git(repo, "checkout", "-q", *(("--detach",) if len(target) == 40 else ()), target)
    (repo / "README.md").write_text("staged, not committed\n")
    git(repo, "add", "README.md")
    (repo / "NOTES.md").write_text("changed, not staged\n")
    (repo / "untracked.txt").write_text("untracked\n")
    return snapshot(repo)


def snapshot(repo: Path) -> dict[str, Any]:
    return {
        "head": git(repo, "rev-parse", "HEAD"),
        "symbolic": subprocess.run(
            ["git", "-C", str(repo), "symbolic-ref", "-q", "HEAD"], capture_output=True, text=True
        ).stdout,  # fmt: skip
        "status": git(repo, "status", "--porcelain=v1", "--untracked-files=all"),
        "staged": git(repo, "diff", "--cached"),
        "index": hashlib.sha256((repo / ".git" / "index").read_bytes()).hexdigest(),
        "refs": git(repo, "for-each-ref"),
        "worktrees": git(repo, "worktree", "list", "--porcelain"),
        "files": sorted(p.name for p in (repo / ".git").iterdir()),
        "stash": git(repo, "stash", "list"),
    }


def assert_clean(scratch: Path, repo: Path, before: dict[str, Any], *, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while (tagged() or os.listdir(scratch)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [" ".join(psutil.Process(p).cmdline()[:5]) for p in tagged() if psutil.pid_exists(p)]
    assert not left, left
    assert os.listdir(scratch) == [], "owned folders left behind"
    assert snapshot(repo) == before  # HEAD, index, tree, refs, worktrees: untouched
    assert not (repo / ".git" / "worktrees").exists()
    assert len([ln for ln in before["worktrees"].splitlines() if ln.startswith("worktree ")]) == 1


CPU = min(os.sched_getaffinity(0))


def dlbench(args: list[str], env: dict[str, str], cwd: Path, out: Any, err: Any) -> subprocess.Popen[Any]:
    """``dlbench ARGS`` in ``cwd``, in a session of its own, on one CPU.

    One CPU for the command and every process it starts (they inherit it, set before it starts any):
    ``_busy`` runs on one thread, and two workers on two CPUs time different CPUs -- another tenant
    of the machine on one CPU's core would read as a difference between BASE and NEW.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", *args], cwd=cwd, env=env, stdout=out, stderr=err,
        start_new_session=True,
    )  # fmt: skip
    os.sched_setaffinity(proc.pid, {CPU})
    return proc


def run(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    proc = dlbench(args, env, cwd, subprocess.PIPE, subprocess.PIPE)
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out.decode(), err.decode()


def test_bisect_names_the_planted_commit_and_leaves_nothing(
    history: tuple[Path, dict[str, str]], env: dict[str, str], scratch: Path, tmp_path: Path
) -> None:
    repo, names = history
    before = prepare(repo, names["c12"])  # detached HEAD, dirty tree
    out = tmp_path / "bisect.json"
    args = [
        "bisect",
        "_busy",
        "--good",
        "good",
        "--bad",
        "HEAD",
        *SETTINGS,
        "--format",
        "json",
        "--out",
        str(out),
    ]
    rc, stdout, stderr = run(args, env, repo)
    assert rc == 1, stderr[-3000:]
    d = json.loads(stdout)
    assert d == json.loads(out.read_text())
    log = "\n".join(
        f"{p['n']} {p['role']} {p['short']} {p['verdict']} {p['ratio']} {p['reason']}" for p in d["probes"]
    )
    assert d["outcome"] == "culprit" and d["exit_code"] == 1, log
    culprit = d["culprit"]
    assert culprit["commit"] == names["c8"], log
    assert culprit["subject"] == "testing: busy_step does a little more work" and culprit["date"]
    step = culprit["step"]
    assert step["parent"] == names["c7"] and step["verdict"] == "slower", log
    assert 1.1 < step["ratio"] and step["ci_low"] > 1.0, log  # its own step: the planted 30 %
    assert d["gates"] == len(d["probes"]) <= math.ceil(math.log2(12)) + 3, log
    # the commit that breaks the import was probed and skipped, with the reason
    assert names["c6"] in d["skipped"], log
    assert "dlbench_bisect_demo_no_such_module" in d["skipped"][names["c6"]]
    assert [p["verdict"] for p in d["probes"] if p["commit"] == names["c6"]] == ["skipped"]
    assert all(p["base"] == names["good"] for p in d["probes"] if p["role"] != "step")
    assert d["probes"][0]["role"] == "confirm" and d["probes"][0]["commit"] == names["c12"]
    assert all(p["slices"] in (6, 12, 24) and p["seconds"] > 0 for p in d["probes"])
    assert d["good"]["ref"] == "good" and d["bad"]["ref"] == "HEAD" and d["commits"] == 12
    assert "bisect: gate 1: GOOD" in stderr and "skipped: NEW[0]" in stderr  # progress lines
    assert_clean(scratch, repo, before)


def test_a_history_with_no_slowdown_exits_0(
    history: tuple[Path, dict[str, str]], env: dict[str, str], scratch: Path
) -> None:
    repo, names = history
    before = prepare(repo, "calm")  # on a branch this time; --good as HEAD~N, --bad left out (HEAD)
    args = ["bisect", "_busy", "--good", f"HEAD~{bisect_demo.CALM}", *SETTINGS]
    rc, stdout, stderr = run(args, env, repo)
    assert rc == 0, stdout + stderr[-3000:]
    text = " ".join(stdout.split())
    assert "is not slower than GOOD" in text and "nothing to find at this threshold" in text
    assert "1 gates in" in text  # the confirmation alone
    assert_clean(scratch, repo, before)


def _wait_for(what: str, pred: Callable[[], Any], proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if pred():
            return
        if proc.poll() is not None:
            raise AssertionError(
                f"dlbench exited ({proc.returncode}) before {what}: {log.read_text()[-2000:]}"
            )
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


SIGNALS = [
    pytest.param(signal.SIGINT, 130, id="SIGINT"),
    pytest.param(signal.SIGTERM, 143, id="SIGTERMx2"),
    pytest.param(signal.SIGKILL, -signal.SIGKILL, id="SIGKILL"),
]


@pytest.mark.parametrize(("sig", "code"), SIGNALS)
def test_a_signal_mid_bisection_leaves_nothing(
    sig: int,
    code: int,
    history: tuple[Path, dict[str, str]],
    env: dict[str, str],
    scratch: Path,
    tmp_path: Path,
) -> None:
    """After the confirmation, while the second gate's workers start: GOOD's export is kept, the
    candidate's is being made, workers are running."""
    repo, names = history
    before = prepare(repo, names["c12"])
    log = tmp_path / "log"
    with log.open("wb") as f:
        proc = dlbench(["bisect", "_busy", "--good", "good", *SETTINGS], env, repo, f, subprocess.STDOUT)
    try:
        _wait_for("the second gate", lambda: "bisect: gate 2:" in log.read_text(errors="replace"), proc, log)
        me = {proc.pid}
        _wait_for(
            "a worker of the second gate", lambda: len(set(tagged()) - me) >= 3, proc, log
        )  # + guardian
        assert os.listdir(scratch), "the bisection's owned folder exists while it runs"
        proc.send_signal(sig)
        if sig == signal.SIGTERM:
            time.sleep(0.1)
            if proc.poll() is None:
                proc.send_signal(sig)  # a second one, during the cleanup the first started
        rc = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == code, log.read_text()[-2000:]
    if sig != signal.SIGKILL:
        assert "interrupted after 2 gate(s)" in log.read_text()
    assert_clean(scratch, repo, before)
