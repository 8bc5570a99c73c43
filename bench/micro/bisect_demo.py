"""``dlbench bisect`` on a synthetic history: which commit planted a 30 % slowdown? Measured here.

    python -m bench.micro.bisect_demo                  # prints the probe log and the wall time
    python -m bench.micro.bisect_demo --slices 12 --threshold 5% --format json

It builds a throw-away git repository (in a temporary folder, removed at the end whatever happens)
holding this source tree (``bench/``, ``dlcore/``) as GOOD, tagged ``good``, and 12 commits on top
(``HISTORY``), oldest first:

* c1-c5, c9-c12: changes that cost nothing (a notes file, comments);
* c6 breaks the import of the scenarios (``import`` of a module that does not exist): the bisection
  must skip it, with the reason;
* c7 repairs it;
* c8 plants a real slowdown in the code of the test scenario ``_busy`` (``bench/scenarios/testing.py``):
  ``busy_step`` hashes 30 % more bytes per step. A code change, not ``DLBENCH_PLANT_SLOWDOWN``.

It also builds a branch ``calm``: GOOD and four commits that cost nothing (a history with no
slowdown: exit 0). Then it runs, in that repository, with HEAD detached at c12 and an uncommitted
change in the tree,

    dlbench bisect _busy --good good --bad HEAD --preset tiny --pairs 1 --slices 6 \\
        --slice-time 0.1 --threshold 10%

(the smallest slice count the gate accepts: 6 ratios) and prints the probe log, the outcome, the
number of gates and the wall time. The test ``tests/bench/test_bisect_history.py`` builds the same
history with ``build_history``. Not a test: other processes on the cores change what it measures
(run it on a quiet machine).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCENARIO_FILE = Path("bench/scenarios/testing.py")
NOTES = Path("NOTES.md")
SLOW_LINE = "    return hashlib.sha256(data).digest()\n"  # the body of busy_step in GOOD
PLANTED = (  # 30 % more bytes hashed per step
    "    return hashlib.sha256(data).digest() + hashlib.sha256(data[: len(data) * 3 // 10]).digest()\n"
)
BROKEN = "\nimport dlbench_bisect_demo_no_such_module  # noqa: E402, F401\n"  # an ImportError on import


@dataclass(frozen=True)
class Change:
    """One commit of the synthetic history: its subject and what it does to the tree."""

    subject: str
    kind: str  # "note" | "comment" | "break" | "repair" | "slow"


HISTORY: tuple[Change, ...] = (
    Change("docs: start the notes", "note"),
    Change("docs: how to run the tiny preset", "note"),
    Change("testing: say what _busy is for", "comment"),
    Change("docs: a word on thresholds", "note"),
    Change("docs: CI notes", "note"),
    Change("testing: import a helper (breaks the import)", "break"),
    Change("testing: drop the missing import again", "repair"),
    Change("testing: busy_step does a little more work", "slow"),
    Change("docs: release notes", "note"),
    Change("testing: comment on busy_step", "comment"),
    Change("docs: typo", "note"),
    Change("docs: the end of the notes", "note"),
)
CULPRIT = 8  # 1-based: c8 plants the slowdown
BROKEN_AT = 6  # 1-based: c6 breaks the import
CALM = 4  # commits on the branch with no slowdown

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "dlbench demo",
    "GIT_AUTHOR_EMAIL": "demo@dlbench.invalid",
    "GIT_COMMITTER_NAME": "dlbench demo",
    "GIT_COMMITTER_EMAIL": "demo@dlbench.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **_GIT_ENV}
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


def _apply(repo: Path, i: int, change: Change) -> None:
    src = repo / SCENARIO_FILE
    text = src.read_text(encoding="utf-8")
    if change.kind == "note":
        with (repo / NOTES).open("a", encoding="utf-8") as f:
            f.write(f"- {change.subject} (c{i})\n")
    elif change.kind == "comment":
        src.write_text(text + f"\n# c{i}: {change.subject}\n", encoding="utf-8")
    elif change.kind == "break":
        src.write_text(text + BROKEN, encoding="utf-8")
    elif change.kind == "repair":
        src.write_text(text.replace(BROKEN, "", 1), encoding="utf-8")
    elif change.kind == "slow":
        if text.count(SLOW_LINE) != 1:
            raise RuntimeError(f"{SCENARIO_FILE}: expected busy_step's line {SLOW_LINE!r} once")
        src.write_text(text.replace(SLOW_LINE, PLANTED), encoding="utf-8")
    else:
        raise ValueError(change.kind)


def build_history(repo: Path, source: Path = ROOT) -> dict[str, str]:
    """The synthetic repository at ``repo`` (created); returns names -> full hashes.

    Names: ``good``, ``c1`` .. ``c12``, ``calm`` (the tip of the branch with no slowdown). GOOD is
    tagged ``good``; the branch ``main`` ends at c12, ``calm`` at GOOD + ``CALM`` commits; HEAD is
    on ``main``.
    """
    repo.mkdir(parents=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in ("bench", "dlcore"):
        shutil.copytree(source / pkg, repo / pkg, ignore=skip)
    if SLOW_LINE not in (repo / SCENARIO_FILE).read_text(encoding="utf-8"):
        raise RuntimeError(f"{SCENARIO_FILE} has no busy_step line {SLOW_LINE!r}: the demo needs it")
    (repo / "README.md").write_text("A synthetic history for dlbench bisect.\n", encoding="utf-8")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "GOOD: the current tree")
    git(repo, "tag", "good")
    names = {"good": git(repo, "rev-parse", "HEAD")}
    for i, change in enumerate(HISTORY, start=1):
        _apply(repo, i, change)
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", change.subject)
        names[f"c{i}"] = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "calm", "good")
    for i in range(1, CALM + 1):
        with (repo / NOTES).open("a", encoding="utf-8") as f:
            f.write(f"- calm {i}\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", f"docs: calm {i}")
    names["calm"] = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    return names


def dlbench_env(scratch: Path) -> dict[str, str]:
    """The environment of the ``dlbench`` it runs: this source tree's, its own scratch folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("DLBENCH_PLANT_SLOWDOWN", "DLBENCH_OWNER")}
    path = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path, "DLBENCH_SCRATCH": str(scratch), "COLUMNS": "160"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--slices", default="6", help="--slices of the bisection (default 6, the fewest accepted)"
    )
    ap.add_argument("--slice-time", default="0.1", help="--slice-time (default 0.1 s)")
    ap.add_argument("--threshold", default="10%", help="--threshold (default 10%%)")
    ap.add_argument("--format", default="table", choices=("table", "markdown", "json"))
    ap.add_argument("--calm", action="store_true", help="also bisect the branch with no slowdown (exit 0)")
    ap.add_argument(
        "--one-cpu",
        action="store_true",
        help="run dlbench and its workers on one CPU, as the test does (_busy is single-threaded: two "
        "workers on two CPUs also time the difference between the CPUs' other tenants)",
    )
    args = ap.parse_args(argv)
    settings = ["--preset", "tiny", "--pairs", "1", "--slices", args.slices, "--slice-time", args.slice_time,
                "--threshold", args.threshold, "--format", args.format]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="dlbench-bisect-demo-") as tmp:
        repo, scratch = Path(tmp) / "repo", Path(tmp) / "scratch"
        names = build_history(repo)
        git(repo, "checkout", "-q", "--detach", names["c12"])
        (repo / "README.md").write_text("an uncommitted change: bisect never looks at it\n", encoding="utf-8")
        broken, slow = names[f"c{BROKEN_AT}"][:10], names[f"c{CULPRIT}"][:10]
        print(
            f"synthetic history in {repo}: GOOD {names['good'][:10]} + {len(HISTORY)} commits; "
            f"c{BROKEN_AT} {broken} breaks the import, c{CULPRIT} {slow} plants 30% more work in _busy",
            flush=True,
        )
        runs = [("history with the planted slowdown", ["--good", "good", "--bad", "HEAD"], 1)]
        if args.calm:
            runs.append(
                (f"branch calm ({CALM} commits, no slowdown)", ["--good", "good", "--bad", "calm"], 0)
            )
        worst = 0
        for label, refs, expect in runs:
            cmd = [sys.executable, "-m", "bench.cli", "bisect", "_busy", *refs, *settings]
            print(f"\n== {label}: dlbench {' '.join(cmd[3:])}", flush=True)
            t0 = time.monotonic()
            proc = subprocess.Popen(cmd, cwd=repo, env=dlbench_env(scratch))
            if args.one_cpu:
                os.sched_setaffinity(proc.pid, {min(os.sched_getaffinity(0))})  # before it starts anything
            rc = proc.wait()
            wall = time.monotonic() - t0
            print(f"== exit {rc} (expected {expect}); wall time {wall:.1f} s", flush=True)
            worst = max(worst, 0 if rc == expect else 1)
        left = sorted(os.listdir(scratch)) if scratch.exists() else []
        print(f"left in dlbench's scratch folder: {left or 'nothing'}")
    return worst


if __name__ == "__main__":
    sys.exit(main())
