"""An audit of ``gate``, ``baseline``, ``nox -s perf``, ``run --parallel`` and ``profile``, as a
demanding user would attack them: does each clean up after itself, listen only where asked, and
fail closed?

    python -m bench.micro.audit                  # every case (bench/micro/audit_cases.py)
    python -m bench.micro.audit --only gate      # the cases whose area or name holds "gate"
    python -m bench.micro.audit --json audit.json

Each case runs real commands (``python -m bench.cli ...``, ``nox``) in a scratch folder of its own
and states what must hold; it prints one line per case, ``held`` or ``DEFECT`` with the evidence,
then the count of cases held. Every process the audit starts carries a marker in its environment
(``DLBENCH_AUDIT_TAG``): "nothing left" means no live process with that marker, no folder left in
the audit's ``DLBENCH_SCRATCH``, and no partial output beside an ``-o`` / ``--out``. Not a test
(tests/bench/test_cleanup.py and friends are): it takes minutes and reads like a report.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TAG = "DLBENCH_AUDIT_TAG"
PARTIAL = ".dlbench-partial-"


@dataclass
class Result:
    rc: int
    out: str
    secs: float


@dataclass
class Case:
    area: str
    name: str
    fn: Callable[[Ctx], tuple[bool, str]]
    held: bool | None = None
    detail: str = ""
    secs: float = 0.0


CASES: list[Case] = []


def case(area: str, name: str) -> Callable[[Callable[[Ctx], tuple[bool, str]]], Callable[..., Any]]:
    def deco(fn: Callable[[Ctx], tuple[bool, str]]) -> Callable[..., Any]:
        CASES.append(Case(area, name, fn))
        return fn

    return deco


class Ctx:
    """The audit's folders, environment and helpers (see the module docstring)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.tag = uuid.uuid4().hex
        self.scratch = work / "scratch"
        self.scratch.mkdir()
        self.tmpdir = work / "tmp"
        self.tmpdir.mkdir()
        drop = ("DLBENCH_PLANT_SLOWDOWN", "DLBENCH_OWNER")
        self.env = {k: v for k, v in os.environ.items() if k not in drop}
        self.env.update(
            {TAG: self.tag, "DLBENCH_SCRATCH": str(self.scratch), "TMPDIR": str(self.tmpdir),
             "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
        )  # fmt: skip
        self.repo = self._repo(work / "src repo")
        (self.repo / "sub").mkdir()
        self.n = 0
        # a git whose ``archive`` never ends, to kill a gate while it exports a ref
        self.slow_git = work / "slow-git"
        self.slow_git.mkdir()
        real = shutil.which("git")
        (self.slow_git / "git").write_text(
            "#!/bin/sh\n"
            'for a in "$@"; do [ "$a" = archive ] && exec env AUDIT_SLOW_ARCHIVE=1 sleep 600; done\n'
            f'exec "{real}" "$@"\n'
        )
        (self.slow_git / "git").chmod(0o755)

    def _repo(self, r: Path) -> Path:
        """A copy of this tree in git: HEAD~2 as is, HEAD~1 the same, HEAD lowers ``_linear``'s default."""
        skip = shutil.ignore_patterns("__pycache__", "*.pyc")
        for pkg in ("bench", "dlcore"):
            shutil.copytree(ROOT / pkg, r / pkg, ignore=skip)
        self.git(r, "init", "-q")
        self.git(r, "add", "-A")
        self.git(r, "commit", "-qm", "one")
        self.git(r, "commit", "-q", "--allow-empty", "-m", "two")
        f = r / "bench" / "scenarios" / "testing.py"
        f.write_text(f.read_text().replace("in_features: int = size(64)", "in_features: int = size(32)"))
        self.git(r, "commit", "-qam", "three: a lower default")
        return r

    @staticmethod
    def git(repo: Path, *args: str) -> str:
        env = {**os.environ, "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@a", "GIT_COMMITTER_NAME": "a",
               "GIT_COMMITTER_EMAIL": "a@a"}  # fmt: skip
        return subprocess.run(
            ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
        ).stdout

    def path(self, name: str) -> Path:
        self.n += 1
        p = self.work / f"c{self.n}" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def cli(
        self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 600
    ) -> Result:
        t0 = time.monotonic()
        r = subprocess.run(
            [sys.executable, "-m", "bench.cli", *args], cwd=cwd or ROOT, env={**self.env, **(env or {})},
            capture_output=True, text=True, timeout=timeout, start_new_session=True,
        )  # fmt: skip
        return Result(r.returncode, r.stdout + r.stderr, time.monotonic() - t0)

    def start(self, argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Any:
        log = self.path("log")
        f = log.open("wb")
        p = subprocess.Popen(
            argv, cwd=cwd or ROOT, env={**self.env, **(env or {})}, stdout=f, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        p.log = log  # type: ignore[attr-defined]
        f.close()
        return p

    def dlbench(self, *args: str, **kw: Any) -> Any:
        return self.start([sys.executable, "-m", "bench.cli", *args], **kw)

    def tagged(self) -> list[int]:
        needle = f"{TAG}={self.tag}".encode()
        out = []
        for e in os.listdir("/proc"):
            if not e.isdigit() or int(e) == os.getpid():
                continue
            try:
                with open(f"/proc/{e}/environ", "rb") as f:
                    if needle not in f.read().split(b"\0"):
                        continue
                with open(f"/proc/{e}/stat") as f:
                    if f.read().rpartition(")")[2].split()[0] in "ZX":
                        continue
            except (OSError, IndexError):
                continue
            out.append(int(e))
        return out

    def clean(self, timeout: float = 15.0, near: Path | None = None) -> tuple[bool, str]:
        deadline = time.monotonic() + timeout
        while (self.tagged() or os.listdir(self.scratch)) and time.monotonic() < deadline:
            time.sleep(0.1)
        left, folders = self.tagged(), os.listdir(self.scratch)
        partial = [p.name for p in near.parent.glob(f"*{PARTIAL}*")] if near is not None else []
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for name in folders:
            shutil.rmtree(self.scratch / name, ignore_errors=True)
        if left or folders or partial:
            return False, f"left: {len(left)} process(es), folders {folders}, partial outputs {partial}"
        return True, "nothing left"

    def wait(self, what: Callable[[], Any], proc: Any, timeout: float = 240) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if what():
                return True
            if proc.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    @staticmethod
    def text(proc: Any) -> str:
        return Path(proc.log).read_text(errors="replace")


def refused(r: Result, *needles: str) -> tuple[bool, str]:
    """Exit 2, every needle in the output, no traceback."""
    line = r.out.strip().splitlines()[-1] if r.out.strip() else ""
    ok = r.rc == 2 and all(n in r.out for n in needles) and "Traceback" not in r.out
    return ok, f"exit {r.rc}: {line[:160]}"


def both(a: tuple[bool, str], b: tuple[bool, str]) -> tuple[bool, str]:
    return a[0] and b[0], f"{a[1]}; {b[1]}"


# --------------------------------------------------------------------------------------------------------


def run(only: str | None, log: Any) -> list[Case]:
    # the cases register on ``bench.micro.audit.CASES``: under ``python -m`` this file is ``__main__``,
    # a module apart from the one the cases import
    from bench.micro.audit_cases import CASES as everything

    chosen = [c for c in everything if not only or only in c.area or only in c.name]
    with tempfile.TemporaryDirectory(prefix="dlbench-audit-") as tmp:
        ctx = Ctx(Path(tmp))
        try:
            for i, c in enumerate(chosen, 1):
                t0 = time.monotonic()
                try:
                    c.held, c.detail = c.fn(ctx)
                except Exception as exc:  # a case that breaks is a defect with its reason
                    c.held, c.detail = False, f"{type(exc).__name__}: {exc}"
                    ctx.clean(timeout=5)
                c.secs = time.monotonic() - t0
                mark = "held  " if c.held else "DEFECT"
                line = f"[{i:2d}/{len(chosen)}] {mark} {c.area:8s} {c.name} ({c.secs:.0f} s): {c.detail}"
                print(line, file=log, flush=True)
        finally:
            ctx.clean(timeout=5)
    return chosen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", help="run the cases whose area or name contains this")
    p.add_argument("--json", type=Path, help="write every case and its evidence here")
    args = p.parse_args(argv)
    cases = run(args.only, sys.stdout)
    held = sum(bool(c.held) for c in cases)
    print(f"\n{held} of {len(cases)} cases held, {len(cases) - held} defect(s)")
    if args.json:
        args.json.write_text(json.dumps(
            {"held": held, "cases": [{"area": c.area, "name": c.name, "held": c.held, "detail": c.detail,
                                      "secs": round(c.secs, 1)} for c in cases]}, indent=2))  # fmt: skip
    return 0 if held == len(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
