"""What dlbench creates outside the user's files, recorded with its owner so a later run can finish
an earlier run's cleanup.

Everything a command creates for its own use -- the checkout of a git ref for the gate, a child's
request and result files, a torchrun job's files and torchelastic's log folder -- lives in one
folder per command run (an *owned entry*) under one prefix::

    <root>/<kind>-<pid>-<start>-<random>/      root = $DLBENCH_SCRATCH, else <TMPDIR>/dlbench-<uid>

``pid`` and ``start`` (the owner process's start time, in clock ticks since boot, from
``/proc/<pid>/stat``) name the owner exactly, even after its pid is reused. Every process the owner
starts carries ``DLBENCH_OWNER=<entry name>`` in its environment (``Owned.env``), so it can be found
and killed whatever process group or session it moved to -- including processes started by the
code under test.

Three layers of cleanup, each removing only its own entries (never a repository-wide ``git worktree
prune``, never another run's files):

1. the owner, on its way out (normal end, exception, SIGINT/SIGTERM): kills its marked processes,
   removes its entry and the partial outputs it registered (``register_partial``), shielded from a
   second signal (``bench.signals.shielded``);
2. a guardian process (``bench._guardian``, ``guard=True``), which does the same the moment the
   owner dies without having done it (SIGKILL);
3. every ``owned()`` call first removes *stale* entries, whose owner is dead (``sweep_stale``),
   killing their marked processes first: what is left when the guardian was killed too.

``owned(kind)`` is the one way in (the gate's trees, ``dlbench run``'s children and torchrun jobs,
``dlbench profile``; a bisection's checkouts). Torch-free, standard library only.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from bench import _guardian
from bench._guardian import EXTERNAL_FILE, MARKER_ENV, PARTIAL_TAG, kill_marked, marked_pids
from bench.errors import UsageError

ROOT_ENV = "DLBENCH_SCRATCH"  # where the owned entries live (default: <TMPDIR>/dlbench-<uid>)
_NAME = re.compile(r"(?P<kind>[a-z][a-z0-9_]*)-(?P<pid>\d+)-(?P<start>\d+)-(?P<rand>[0-9a-f]{8})")


def scratch_root() -> Path:
    """The folder holding every owned entry, created private (0700); ``UsageError`` if it is unsafe."""
    raw = os.environ.get(ROOT_ENV, "").strip()
    root = Path(raw).expanduser() if raw else Path(tempfile.gettempdir()) / f"dlbench-{os.getuid()}"
    try:
        if not root.is_symlink() and not root.is_dir() and os.path.lexists(root):
            raise UsageError(f"{ROOT_ENV}: {root} is a file, not a folder; set {ROOT_ENV} to a folder")
        root.mkdir(mode=0o700, parents=bool(raw), exist_ok=True)
        st = os.lstat(root)
    except OSError as exc:
        raise UsageError(
            f"{ROOT_ENV}: cannot create dlbench's scratch folder {root}: {exc.strerror or exc}; "
            f"set {ROOT_ENV} to a writable folder"
        ) from None
    import stat

    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise UsageError(
            f"{ROOT_ENV}: {root} is not a folder of this user (a link, a file or someone else's); "
            f"set {ROOT_ENV} to a private folder"
        )
    return root


def process_start(pid: int) -> str | None:
    """``pid``'s start time (clock ticks since boot), or None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]  # field 22 of proc(5); the fields after the name start at field 3


def owner_alive(name: str) -> bool:
    """True while the process that made the entry ``name`` runs (its pid, with the same start time)."""
    m = _NAME.fullmatch(name)
    if m is None:
        return True  # not an entry of ours: never touched
    return process_start(int(m["pid"])) == m["start"]


def sweep_stale(root: Path | None = None) -> list[Path]:
    """Remove the entries of dead owners (their marked processes killed first); returns what went."""
    base = root if root is not None else scratch_root()
    removed = []
    try:
        names = os.listdir(base)
    except OSError:
        return []
    for name in names:
        if _NAME.fullmatch(name) is None or owner_alive(name):
            continue
        kill_marked(name)
        _guardian.remove_owned(base / name)
        removed.append(base / name)
    return removed


class Owned:
    """One owned entry: its folder ``path``, its ``name`` (the marker value), and its cleanup."""

    def __init__(self, kind: str, root: Path, *, guard: bool) -> None:
        start = process_start(os.getpid()) or "0"
        self.kind = kind
        self.name = f"{kind}-{os.getpid()}-{start}-{secrets.token_hex(4)}"
        self.path = root / self.name
        self.path.mkdir(mode=0o700)
        self._partials: list[Path] = []
        self._guard: subprocess.Popen[bytes] | None = None
        self.closed = False
        if guard:
            self._start_guardian()

    @property
    def env(self) -> dict[str, str]:
        """What to add to the environment of every process this owner starts."""
        return {MARKER_ENV: self.name}

    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with the owner's marker."""
        return {**(os.environ if base is None else base), **self.env}

    def _start_guardian(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != MARKER_ENV}
        self._guard = subprocess.Popen(
            [sys.executable, "-I", "-S", _guardian.__file__, str(self.path), self.name, str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # Ctrl-C in a terminal, or a kill of our group, does not reach it
        )

    def register_partial(self, path: Path) -> None:
        """A partial output outside this folder (its name must hold ``PARTIAL_TAG``): removed if we die."""
        p = Path(path).resolve()
        if PARTIAL_TAG not in p.name:
            raise ValueError(f"a partial output's name must contain {PARTIAL_TAG!r}: {p}")
        self._partials.append(p)
        self._write_partials()

    def forget_partial(self, path: Path) -> None:
        """``path`` became a finished output (renamed into place): no longer removed on our death."""
        p = Path(path).resolve()
        self._partials = [q for q in self._partials if q != p]
        self._write_partials()

    def _write_partials(self) -> None:
        tmp = self.path / (EXTERNAL_FILE + ".tmp")
        tmp.write_text(json.dumps([str(p) for p in self._partials]), encoding="utf-8")
        os.replace(tmp, self.path / EXTERNAL_FILE)

    def processes(self) -> list[int]:
        """Pids of the live processes carrying this owner's marker."""
        return marked_pids(self.name)

    def close(self) -> None:
        """Kill every marked process, remove the partial outputs and the folder; tell the guardian."""
        from bench.signals import shielded

        if self.closed:
            return
        with shielded():
            kill_marked(self.name)
            _guardian.remove_owned(self.path)
            self.closed = True
            guard = self._guard
            if guard is not None and guard.stdin is not None:
                try:
                    guard.stdin.write(b"done")
                    guard.stdin.close()
                except OSError:
                    pass
                try:
                    guard.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    guard.kill()
                    guard.wait()


@contextmanager
def owned(kind: str, *, guard: bool = False) -> Iterator[Owned]:
    """A fresh owned entry of ``kind`` for the block; stale entries of dead owners are removed first.

    ``guard=True`` starts a guardian process that cleans up if this process is killed outright:
    use it where the block starts processes (workers, ranks) that could outlive it.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_]*", kind):
        raise ValueError(f"kind: expected lower-case letters, digits and _, got {kind!r}")
    root = scratch_root()
    sweep_stale(root)
    entry = Owned(kind, root, guard=guard)
    try:
        yield entry
    finally:
        entry.close()


def die_with_parent(parent_pid: int | None) -> None:
    """Linux: SIGKILL this process when its parent dies; exit at once if the parent is already gone."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except Exception:
        return
    if parent_pid is not None and os.getppid() != parent_pid:  # the parent died before prctl
        os._exit(1)


__all__ = [
    "MARKER_ENV",
    "PARTIAL_TAG",
    "ROOT_ENV",
    "Owned",
    "die_with_parent",
    "kill_marked",
    "owned",
    "owner_alive",
    "process_start",
    "scratch_root",
    "sweep_stale",
]
