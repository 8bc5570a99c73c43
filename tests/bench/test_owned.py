"""``bench.owned`` and ``bench.signals``: ownership records, stale entries, the guardian, signals.

Fast: no torch, processes are ``sleep`` or a few-line Python script. Every process a test starts
carries ``TAG`` and is killed in teardown, whatever happened.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bench.errors import UsageError
from bench.owned import (
    MARKER_ENV,
    PARTIAL_TAG,
    ROOT_ENV,
    owned,
    owner_alive,
    process_start,
    scratch_root,
    sweep_stale,
)
from bench.signals import Interrupted, interrupts, shielded

ROOT = Path(__file__).resolve().parents[2]
TAG = "DLBENCH_TEST_OWNED_TAG"
RUN_ID = uuid.uuid4().hex


def _tagged() -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(TAG) == RUN_ID and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            continue
    return out


@pytest.fixture(autouse=True)
def _nothing_survives() -> Iterator[None]:
    yield
    for p in _tagged():
        p.kill()


def _sleeper(env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "600"], env={**os.environ, TAG: RUN_ID, **(env or {})})


def _gone(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> bool:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


# --- stale entries ---------------------------------------------------------------------------------


def test_a_dead_owners_entry_and_processes_go_a_live_owners_and_foreign_names_stay(tmp_path: Path) -> None:
    dead = _sleeper()
    pid, start = dead.pid, process_start(dead.pid)
    dead.kill()
    dead.wait()
    assert start is not None and process_start(pid) is None
    root = tmp_path / "root"
    stale = root / f"gate-{pid}-{start}-deadbeef"
    reused = root / f"job-{os.getpid()}-1-0badf00d"  # our pid, another start time: a reused pid
    live = root / f"gate-{os.getpid()}-{process_start(os.getpid())}-cafef00d"
    foreign = root / "not-ours"
    for d in (stale, reused, live, foreign):
        d.mkdir(parents=True)
    partial = tmp_path / "reports" / f".prof{PARTIAL_TAG}1-x"
    partial.mkdir(parents=True)
    keep = tmp_path / "reports" / "finished"  # listed, but not a partial output: never removed
    keep.mkdir()
    (stale / "external.json").write_text(json.dumps([str(partial), str(keep)]))
    orphan = _sleeper({MARKER_ENV: stale.name})  # a worker of the dead owner, still running
    bystander = _sleeper({MARKER_ENV: live.name})
    assert not owner_alive(stale.name) and not owner_alive(reused.name) and owner_alive(live.name)

    removed = sweep_stale(root)
    assert sorted(removed) == sorted([stale, reused])
    assert _gone(orphan) and orphan.returncode == -signal.SIGKILL
    assert not partial.exists() and keep.is_dir()
    assert live.is_dir() and foreign.is_dir() and bystander.poll() is None
    bystander.kill()
    bystander.wait()


def test_owned_marks_children_removes_partials_and_kills_what_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "root"))
    partial = tmp_path / f".out{PARTIAL_TAG}x"
    with owned("gate") as own:
        assert own.path.parent == tmp_path / "root" and own.name.startswith(f"gate-{os.getpid()}-")
        assert own.child_env()[MARKER_ENV] == own.name
        child = _sleeper(own.env)
        partial.mkdir()
        own.register_partial(partial)
        with pytest.raises(ValueError, match=PARTIAL_TAG):
            own.register_partial(tmp_path / "finished")
        assert own.processes() == [child.pid]
    assert _gone(child) and not partial.exists() and os.listdir(tmp_path / "root") == []


def test_the_guardian_cleans_up_after_an_owner_killed_with_sigkill(tmp_path: Path) -> None:
    """The owner is SIGKILLed: its guardian kills its marked process and removes its files."""
    root, partial = tmp_path / "root", tmp_path / f".p{PARTIAL_TAG}1"
    script = (
        "import subprocess, sys, time\n"
        "from bench.owned import owned\n"
        "with owned('gate', guard=True) as own:\n"
        "    subprocess.Popen(['sleep', '600'], env=own.child_env())\n"
        f"    import pathlib; p = pathlib.Path({str(partial)!r}); p.mkdir(); own.register_partial(p)\n"
        "    print(own.path, flush=True)\n"
        "    time.sleep(600)\n"
    )
    env = {**os.environ, TAG: RUN_ID, ROOT_ENV: str(root), "PYTHONPATH": str(ROOT)}
    owner = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    folder = Path(owner.stdout.readline().strip())
    assert folder.is_dir() and partial.is_dir() and len(_tagged()) == 3  # owner, guardian, sleeper
    owner.kill()
    owner.wait()
    deadline = time.monotonic() + 15
    while (_tagged() or folder.exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _tagged() and not folder.exists() and not partial.exists() and os.listdir(root) == []


def test_an_unsafe_scratch_root_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "file"))
    with pytest.raises(UsageError, match=ROOT_ENV):
        scratch_root()
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "link"))
    with pytest.raises(UsageError, match="not a folder of this user"):
        scratch_root()


# --- signals ---------------------------------------------------------------------------------------


def test_sigterm_interrupts_once_and_a_second_signal_cannot_cut_the_cleanup() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    done = []
    with pytest.raises(Interrupted) as info:
        with interrupts():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # never reached: the handler raises at once
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # during the cleanup: recorded, ignored
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.01)
                done.append("cleanup ran to its end")
    assert info.value.signum == signal.SIGTERM and info.value.exit_code == 143
    assert done == ["cleanup ran to its end"]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_shielded_step_finishes_before_the_interruption() -> None:
    steps = []
    with pytest.raises(Interrupted) as info:
        with interrupts(), shielded():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            steps.append("the shielded step finished")
    assert steps == ["the shielded step finished"] and info.value.exit_code == 130


def test_a_command_ignores_signals_between_its_cleanup_and_its_exit() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(Interrupted), interrupts(ignore_after=True):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        assert signal.getsignal(signal.SIGTERM) == signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])
