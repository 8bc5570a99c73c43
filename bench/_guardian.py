"""The cleanup of an owned folder whose owner died: kill its marked processes, remove its files.

Standard library only, and importing nothing from ``bench``: ``bench.owned`` imports these
functions, and also runs this file by path (``python -I -S _guardian.py FOLDER NAME OWNER_PID``) as
a small *guardian* process beside a command that starts workers. The guardian blocks reading its
stdin, a pipe whose only writer is the owner:

* the owner finished its own cleanup: it writes ``done`` and closes the pipe; the guardian exits;
* the owner died (SIGKILL, OOM kill, a crash): the pipe reads end-of-file without ``done``; the
  guardian kills every process whose environment carries ``DLBENCH_OWNER=<NAME>`` (the owner's
  workers, ranks, and whatever the code under test started, in any process group or session), then
  removes the folder and the partial outputs the owner registered there.

So even a SIGKILL of ``dlbench`` leaves nothing behind once the guardian has run (a fraction of a
second). If the guardian itself was killed, the next dlbench command does the same cleanup
(``bench.owned.sweep_stale``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

MARKER_ENV = "DLBENCH_OWNER"  # every process an owner starts carries MARKER_ENV=<owned folder name>
EXTERNAL_FILE = "external.json"  # partial outputs of the owner outside its folder, to remove if it dies
PARTIAL_TAG = ".dlbench-partial-"  # only paths whose name holds this are ever removed from that list


def marked_pids(value: str, proc: str = "/proc") -> list[int]:
    """Pids of the processes whose environment holds ``DLBENCH_OWNER=<value>`` (this one excluded)."""
    needle = f"{MARKER_ENV}={value}".encode()
    me = os.getpid()
    out = []
    try:
        entries = os.listdir(proc)
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"{proc}/{entry}/environ", "rb") as f:
                env = f.read()
        except OSError:  # gone, or another user's
            continue
        if needle in env.split(b"\0"):
            out.append(int(entry))
    return out


def kill_marked(value: str, *, rounds: int = 5) -> int:
    """SIGKILL every process marked ``value``; scans again until none is left (a fork in flight)."""
    killed = 0
    for _ in range(rounds):
        pids = marked_pids(value)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        time.sleep(0.02)
    return killed


def remove_owned(folder: Path | str) -> None:
    """Remove the registered partial outputs of ``folder``'s owner, then ``folder`` itself."""
    root = Path(folder)
    try:
        external = json.loads((root / EXTERNAL_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        external = []
    for item in external if isinstance(external, list) else []:
        p = Path(str(item))
        if PARTIAL_TAG in p.name:  # never anything but a partial output dlbench named itself
            shutil.rmtree(p, ignore_errors=True)
            try:
                p.unlink()
            except OSError:
                pass
    shutil.rmtree(root, ignore_errors=True)


def _owner_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def main(argv: list[str]) -> int:
    """``_guardian.py FOLDER NAME OWNER_PID``: wait for the owner, clean up if it died."""
    folder, name, owner = argv[0], argv[1], int(argv[2])
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    try:
        data = sys.stdin.buffer.read()
    except OSError:
        data = b""
    if data.strip() == b"done":
        return 0
    deadline = time.monotonic() + 5.0
    while not _owner_gone(owner) and time.monotonic() < deadline:
        time.sleep(0.05)  # the pipe closes a moment before the owner's pid is gone
    if not _owner_gone(owner):
        return 0  # the owner lives on (it closed the pipe itself): its cleanup is its own
    kill_marked(name)
    remove_owned(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
