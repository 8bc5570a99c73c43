"""The cases of ``python -m bench.micro.audit``: what must hold for gate, baseline, nox -s perf,
run --parallel and profile, each checked with real commands (see ``bench.micro.audit``).

The refusals and kills are tables, one case a line (hence the long lines).
"""

# ruff: noqa: E501

from __future__ import annotations

import csv
import ipaddress
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.micro.audit import CASES, PARTIAL, ROOT, Ctx, both, case, refused

GATE = "gate --device cpu --preset tiny"
RUN = "run --device cpu --mode train --max-time 0.2"
PROF = "profile _linear --device cpu --wait 0 --warmup 0 --active 1 --no-with-stack"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


CORES = _cores()

# --- refused with exit 2, a message naming the problem, nothing started or left ------------------------
# (area, case, command line, what the message must say, where it runs: root | repo | repo-sub)
# fmt: off
REFUSALS = [
    ("gate", "4 slice ratios (--slices 4 --pairs 1) cannot bound a CI",
     f"{GATE} _linear --aa --slices 4 --pairs 1", "at least 6", "root"),
    ("gate", "--slices 2 with the default 2 pairs", f"{GATE} _linear --aa --slices 2", "--slices", "root"),
    ("gate", "--slices 0", f"{GATE} _linear --aa --slices 0", "--slices", "root"),
    ("gate", "--pairs 17", f"{GATE} _linear --aa --pairs 17", "--pairs", "root"),
    ("gate", '--base "" (an empty merge-base in CI)', f'{GATE} _linear --base "" --new HEAD',
     "--base: an empty value", "repo"),
    ("gate", '--new "  "', f'{GATE} _linear --base HEAD --new "  "', "--new: an empty value", "repo"),
    ("gate", "an unknown ref", f"{GATE} _linear --base no-such-ref", "unknown git ref", "repo"),
    ("gate", "--threshold 5 (500%?)", f"{GATE} _linear --aa --threshold 5", "--threshold", "root"),
    ("gate", "--threshold nan", f"{GATE} _linear --aa --threshold nan", "--threshold", "root"),
    ("gate", "--slice-time 0", f"{GATE} _linear --aa --slice-time 0", "--slice-time", "root"),
    ("gate", "an unknown parameter", f"{GATE} _linear --new-param colour=red", "colour", "root"),
    ("gate", "a grid value (-p batch_size=1,2)", f"{GATE} _linear --aa -p batch_size=1,2", "one value", "root"),
    ("gate", "amp-fp16 on a CPU", f"{GATE} _linear --new-param precision=amp-fp16", "cannot run here", "root"),
    ("gate", "the same tree and parameters without --aa", f"{GATE} _linear", "same tree", "root"),
    ("gate", "run from a folder that is not a source tree (NEW defaults to .)",
     f"{GATE} _linear --base HEAD~1", "--new", "repo-sub"),
    ("baseline", "baseline ratios --slices 2", "baseline ratios --slices 2", "at least 6", "root"),
    ("baseline", "baseline update --ratios --slices 1, before measuring",
     "baseline update --ratios --slices 1", "--slices", "root"),
    ("baseline", "baseline ratios --check nosuch", "baseline ratios --check nosuch", "--check", "root"),
    ("parallel", "--nproc above the core count", f"{RUN} _linear --parallel ddp --nproc {CORES + 1}",
     "--oversubscribe", "root"),
    ("parallel", "--rdzv-backend etcd without python-etcd",
     f"{RUN} _linear --parallel ddp --rdzv-backend etcd --rdzv-endpoint 127.0.0.1:2379", "python-etcd", "root"),
    ("parallel", "an unresolvable --rdzv-endpoint host",
     f"{RUN} _linear --parallel ddp --rdzv-endpoint no-such-host.invalid:29500", "cannot resolve", "root"),
    ("parallel", "--rdzv-endpoint without a port", f"{RUN} _linear --parallel ddp --rdzv-endpoint localhost",
     "HOST:PORT", "root"),
    ("parallel", "--nnodes 2 without --rdzv-id",
     f"{RUN} _linear --parallel ddp --nnodes 2 --rdzv-endpoint 127.0.0.1:29500", "--rdzv-id", "root"),
    ("parallel", "--rdzv-id with a space", f"{RUN} _linear --parallel ddp --rdzv-id 'a b'", "--rdzv-id", "root"),
    ("profile", "--active 100000", "profile _linear --device cpu --active 100000", "--active", "root"),
    ("profile", "--warmup 1000", "profile _linear --device cpu --warmup 1000", "--warmup", "root"),
    ("profile", "--parallel ddp with --nproc above the cores",
     f"profile _linear --device cpu --parallel ddp --nproc {CORES + 1}", "--oversubscribe", "root"),
]
# fmt: on


def _refusal(area: str, name: str, line: str, needle: str, where: str) -> None:
    @case(area, f"refused: {name}")
    def run(c: Ctx) -> tuple[bool, str]:
        cwd = {"repo": c.repo, "repo-sub": c.repo / "sub"}.get(where, ROOT)
        return both(refused(c.cli(*shlex.split(line), cwd=cwd), needle), c.clean(timeout=2))


for _r in REFUSALS:
    _refusal(*_r)


@case("gate", "refused: --out that is a folder, in a missing folder, or a symlink, before any work")
def _gate_out(c: Ctx) -> tuple[bool, str]:
    d = c.path("outs")
    d.mkdir()
    (d / "link").symlink_to(d / "x.json")
    rs = [
        c.cli(*shlex.split(f"{GATE} _linear --aa"), "--out", str(o)) for o in (d, d / "no/x.json", d / "link")
    ]
    ok = all(r.rc == 2 and "--out" in r.out for r in rs)
    return both((ok, f"exits {[r.rc for r in rs]}"), c.clean(timeout=2))


@case("gate", "refused: --out that is a FIFO (a reader waiting on it), before any work")
def _gate_fifo(c: Ctx) -> tuple[bool, str]:
    fifo = c.path("fifo")
    os.mkfifo(fifo)
    return both(
        refused(c.cli(*shlex.split(f"{GATE} _linear --aa"), "--out", str(fifo)), "FIFO"), c.clean(timeout=2)
    )


@case("profile", "refused: -o . in a source tree (files that are not a profile are never replaced)")
def _prof_dot(c: Ctx) -> tuple[bool, str]:
    r = c.cli(*shlex.split(f"{PROF} -o . --overwrite"), cwd=c.repo)
    return both(refused(r, "not a dlbench profile"), c.clean(timeout=2))


@case("parallel", "an IPv6 loopback endpoint ([::1]:PORT) runs")
def _ipv6(c: Ctx) -> tuple[bool, str]:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]
    out = c.path("v6.csv")
    r = c.cli(*shlex.split(f"{DDP} --rdzv-endpoint [::1]:{port}"), "--out", str(out))
    return both((r.rc == 0 and _row(out).get("status") == "ok", f"exit {r.rc}"), c.clean())


@case("gate", "refused: DLBENCH_SCRATCH pointing at a file")
def _scratch_file(c: Ctx) -> tuple[bool, str]:
    f = c.path("file")
    f.write_text("x")
    r = c.cli(*shlex.split(f"{GATE} _linear --aa"), env={"DLBENCH_SCRATCH": str(f)})
    return refused(r, "DLBENCH_SCRATCH")


# --- real runs ---------------------------------------------------------------------------------------
SHORT = "--pairs 1 --slices 6 --slice-time 0.02"


def _gate(c: Ctx, line: str, *, cwd: Path | None = None, env: dict[str, str] | None = None) -> Any:
    return c.cli(*shlex.split(f"{GATE} {line}"), cwd=cwd, env=env)


@case("gate", "a planted 2x slowdown at the fewest accepted slices (6) exits 1")
def _plant(c: Ctx) -> tuple[bool, str]:
    r = _gate(c, f"_linear --aa {SHORT}", env={"DLBENCH_PLANT_SLOWDOWN": "1.0"})
    return both((r.rc == 1, f"exit {r.rc}"), c.clean())


@case("baseline", "a planted 2x in the dlcore side at --slices 3 (6 ratios, the fewest accepted) fails")
def _ratios_plant(c: Ctx) -> tuple[bool, str]:
    r = c.cli(
        *shlex.split("baseline ratios --check attention --slices 3"), env={"DLBENCH_PLANT_SLOWDOWN": "1.0"}
    )
    return both((r.rc == 1 and "attention" in r.out, f"exit {r.rc}"), c.clean())


@case("gate", "a NEW tree that lowered a default is refused, not reported faster")
def _mismatch(c: Ctx) -> tuple[bool, str]:
    return both(
        refused(_gate(c, f"_linear --base HEAD~1 --new HEAD {SHORT}", cwd=c.repo), "BASE 64, NEW 32"),
        c.clean(),
    )


@case("gate", "the same two trees compared on purpose (--new-param in_features=32) run")
def _mismatch_asked(c: Ctx) -> tuple[bool, str]:
    r = _gate(c, f"_linear --base HEAD~1 --new HEAD --new-param in_features=32 {SHORT}", cwd=c.repo)
    return both((r.rc in (0, 1) and "NEW/BASE" in r.out, f"exit {r.rc}"), c.clean())


@case("gate", "a ref gate writes nothing into the repository; a moved-away user worktree survives")
def _ref_repo(c: Ctx) -> tuple[bool, str]:
    wt, away = c.path("wt"), c.path("wt-away")
    c.git(c.repo, "worktree", "add", "-q", str(wt), "HEAD~2")
    (wt / "staged.txt").write_text("x")
    c.git(wt, "add", "staged.txt")
    wt.rename(away)
    before = sorted(os.listdir(c.repo / ".git"))
    r = _gate(c, f"_linear --base HEAD~2 --new HEAD~1 {SHORT}", cwd=c.repo)
    same = before == sorted(os.listdir(c.repo / ".git"))
    listed = str(wt) in c.git(c.repo, "worktree", "list", "--porcelain")
    away.rename(wt)
    staged = c.git(wt, "diff", "--cached", "--name-only").split() == ["staged.txt"]
    c.git(c.repo, "worktree", "remove", "--force", str(wt))
    ok = r.rc in (0, 1) and same and listed and staged
    return both(
        (ok, f"exit {r.rc}, .git unchanged {same}, worktree and its index kept {listed and staged}"),
        c.clean(),
    )


@case("gate", "code under test that starts a process in a session of its own: gone after a normal run")
def _spawn_normal(c: Ctx) -> tuple[bool, str]:
    r = _gate(c, f"_spawn --aa -p hold=0 -p session=true {SHORT}")
    return both((r.rc in (0, 1), f"exit {r.rc}"), c.clean(timeout=5))


@case("gate", "a worker that crashes mid-run: exit 1 naming it, nothing left")
def _crash(c: Ctx) -> tuple[bool, str]:
    r = _gate(c, f"_crash --base-param where=never --new-param where=step {SHORT}")
    return both((r.rc == 1 and "NEW[0]" in r.out, f"exit {r.rc}"), c.clean())


@case("gate", "two gates at once on the same repository and refs")
def _concurrent(c: Ctx) -> tuple[bool, str]:
    args = shlex.split(f"{GATE} _linear --base HEAD~2 --new HEAD~1 {SHORT}")
    ps = [c.dlbench(*args, cwd=c.repo) for _ in range(2)]
    rcs = [p.wait(timeout=600) for p in ps]
    return both((all(rc in (0, 1) for rc in rcs), f"exits {rcs}"), c.clean())


@case("gate", "a dead dlbench's folder and its orphaned worker are removed by the next gate")
def _stale(c: Ctx) -> tuple[bool, str]:
    dead = subprocess.Popen(["sleep", "60"])
    with open(f"/proc/{dead.pid}/stat") as f:
        start = f.read().rpartition(")")[2].split()[19]
    dead.kill()
    dead.wait()
    name = f"gate-{dead.pid}-{start}-0000abcd"
    (c.scratch / name).mkdir()
    orphan = c.start(["sleep", "600"], env={"DLBENCH_OWNER": name})
    r = _gate(c, f"_linear --aa {SHORT}")
    gone = orphan.wait(timeout=10) == -signal.SIGKILL
    return both((r.rc in (0, 1) and gone, f"exit {r.rc}, orphan killed {gone}"), c.clean())


# --- kills at a point: (area, case, command, kill point, signals, expected exit, cwd, --out, slow git) ---


def _measuring(c: Ctx, p: Any) -> bool:
    return "gate: measuring" in c.text(p)


def _with_env(var: bytes) -> Callable[[Ctx, Any], bool]:
    def seen(c: Ctx, p: Any) -> bool:
        for pid in c.tagged():
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if var in b"\0" + f.read():
                        return True
            except OSError:
                continue
        return False

    return seen


def _ranks_timing(c: Ctx, p: Any) -> bool:
    phases = [q.read_text().split("\t")[0] for q in c.scratch.glob("job-*/out/rank*.phase") if q.exists()]
    return phases.count("timing") == 2


def _workers(n: int, kind: str) -> Callable[[Ctx, Any], bool]:
    return lambda c, p: any(c.scratch.glob(f"{kind}-*")) and len(c.tagged()) >= n


LONG = f"{GATE} _linear --aa --pairs 1 --slices 400 --slice-time 0.05"
REFS = f"{GATE} _linear --base HEAD~2 --new HEAD~1 --pairs 1 --slices 6"
HANG = f"{RUN} _rank_hang -p where=step --parallel ddp --nproc 2 --timeout 300 --out {{csv}}"
DDP = f"{RUN} _linear --parallel ddp --nproc 2"
KDDP = f"{DDP} --out {{csv}}"  # a killed run writes into the audit's folder, never into results/
SPAWN_PROF = "profile _spawn --device cpu -p hold=600 -p session=true -o {out}"
INT, TERM, KILL, HUP = signal.SIGINT, signal.SIGTERM, signal.SIGKILL, signal.SIGHUP
# fmt: off
KILLS = [
    ("gate", "SIGINT mid-measurement: exit 130", LONG, _measuring, [INT], 130, "root", None, False),
    ("gate", "SIGTERM x3 mid-measurement: exit 143", LONG, _measuring, [TERM] * 3, 143, "root", None, False),
    ("gate", "SIGHUP (a closed terminal) mid-measurement", LONG, _measuring, [HUP], None, "root", None, False),
    ("gate", "SIGKILL mid-measurement: --out keeps its previous content", f"{LONG} --out {{out}}", _measuring,
     [KILL], -9, "root", "g.json", False),
    ("gate", "SIGTERM while a ref is exported", REFS, _with_env(b"\0AUDIT_SLOW_ARCHIVE=1"), [TERM], 143, "repo",
     None, True),
    ("gate", "SIGKILL while a ref is exported", REFS, _with_env(b"\0AUDIT_SLOW_ARCHIVE=1"), [KILL], -9, "repo",
     None, True),
    ("baseline", "SIGTERM to baseline ratios mid-measurement", "baseline ratios --check attention --slices 200",
     _workers(5, "gate"), [TERM], None, "root", None, False),
    ("parallel", "SIGKILL while ranks start", KDDP, _with_env(b"\0RANK="), [KILL], -9, "root", None, False),
    ("parallel", "SIGTERM x2 while ranks start: exit 143", KDDP, _with_env(b"\0RANK="), [TERM] * 2, 143, "root",
     None, False),
    ("parallel", "SIGINT mid-measurement: exit 130", HANG, _ranks_timing, [INT], 130, "root", None, False),
    ("profile", "SIGINT mid-profile: exit 130, no partial profile", SPAWN_PROF, _workers(4, "profile"), [INT],
     130, "root", "prof", False),
    ("profile", "SIGKILL mid-profile: the guardian removes the partial profile", SPAWN_PROF,
     _workers(4, "profile"), [KILL], -9, "root", "prof", False),
]
# fmt: on


def _kill(
    area: str,
    name: str,
    line: str,
    point: Callable[[Ctx, Any], bool],
    sigs: list[signal.Signals],
    want: int | None,
    where: str,
    out: str | None,
    slow_git: bool,
) -> None:
    @case(area, f"killed: {name}; nothing left")
    def run(c: Ctx) -> tuple[bool, str]:
        path = c.path(out) if out else None
        profile = out == "prof"
        if path is not None and not profile:
            path.write_text("the previous result\n")
        csv_out = shlex.quote(str(c.path("killed.csv")))
        args = shlex.split(line.replace("{out}", shlex.quote(str(path))).replace("{csv}", csv_out))
        env = {"PATH": f"{c.slow_git}:{c.env['PATH']}"} if slow_git else None
        p = c.dlbench(*args, cwd=c.repo if where == "repo" else ROOT, env=env)
        if not c.wait(lambda: point(c, p), p):
            p.kill()
            return False, f"never reached the kill point (exit {p.poll()}): {c.text(p)[-200:]}"
        for sig in sigs:
            if p.poll() is None:
                p.send_signal(sig)
            time.sleep(0.1)
        rc = p.wait(timeout=120)
        if path is None:
            kept = True
        else:
            kept = not path.exists() if profile else path.read_text() == "the previous result\n"
        return both((want in (None, rc) and kept, f"exit {rc}, output intact {kept}"), c.clean(near=path))


for _k in KILLS:
    _kill(*_k)


# --- nox -s perf ----------------------------------------------------------------------------------------


@case("perf", "nox -s perf -- --slices 2 does not pass")
def _nox_refused(c: Ctx) -> tuple[bool, str]:
    nox = [sys.executable, "-m", "nox", "-s", "perf", "--", "--slices", "2"]
    r = subprocess.run(nox, cwd=ROOT, env=c.env, capture_output=True, text=True, timeout=900)
    return both(
        (r.returncode != 0 and "at least 6" in r.stdout + r.stderr, f"exit {r.returncode}"), c.clean()
    )


@case("perf", "killed: SIGTERM to nox -s perf (a cancelled CI job) while the ratios measure; nothing left")
def _nox_term(c: Ctx) -> tuple[bool, str]:
    p = c.start([sys.executable, "-m", "nox", "-s", "perf", "--", "--check", "attention", "--slices", "200"])
    if not c.wait(lambda: _workers(6, "gate")(c, p), p, timeout=400):
        p.kill()
        return False, "never reached the ratios"
    p.send_signal(signal.SIGTERM)
    rc = p.wait(timeout=120)
    return both((rc != 0, f"nox exit {rc}"), c.clean())


# --- run --parallel, run --repeat --------------------------------------------------------------------------


def _row(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        return next(iter(csv.DictReader(f)), {})


@case("parallel", "a clean run leaves no torchelastic_* folder in TMPDIR; its row has the noise sentinel")
def _clean_run(c: Ctx) -> tuple[bool, str]:
    out = c.path("r.csv")
    r = c.cli(*shlex.split(DDP), "--out", str(out))
    elastic, noise = list(c.tmpdir.glob("torchelastic_*")), _row(out).get("noise_other_cpu_pct", "")
    ok = r.rc == 0 and not elastic and noise != ""
    return both((ok, f"exit {r.rc}, torchelastic folders {len(elastic)}, noise {noise!r}"), c.clean())


@case("parallel", "--rdzv-backend static on one node is honoured, not replaced by c10d")
def _static(c: Ctx) -> tuple[bool, str]:
    r = c.cli(*shlex.split(f"{DDP} --rdzv-backend static"), "--out", str(c.path("s.csv")))
    return both((r.rc == 0, f"exit {r.rc}"), c.clean())


@case("parallel", "a given endpoint whose port is taken: the launcher's own error, at once")
def _taken(c: Ctx) -> tuple[bool, str]:
    out = c.path("t.csv")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = c.cli(*shlex.split(f"{DDP} --rdzv-endpoint 127.0.0.1:{port} --timeout 120"), "--out", str(out))
    reason = _row(out).get("reason", "")
    ok = r.rc == 1 and "launcher failed before any rank started" in reason and r.secs < 60
    return both((ok, f"exit {r.rc} in {r.secs:.0f} s: {reason[:120]}"), c.clean())


@case("parallel", "a hung rank: the timeout row names the rank, its phase and where the other waits")
def _hang(c: Ctx) -> tuple[bool, str]:
    out = c.path("h.csv")
    r = c.cli(*shlex.split(f"{RUN} _rank_hang --parallel ddp --nproc 2 --timeout 20"), "--out", str(out))
    reason = _row(out).get("reason", "")
    ok = r.rc == 1 and "rank 1 hung in build" in reason and "rank 0 waits in wrap" in reason
    return both((ok, reason[:160]), c.clean())


@case("parallel", "a one-node job listens on loopback only and connects to nothing else")
def _sockets(c: Ctx) -> tuple[bool, str]:
    import psutil

    p = c.dlbench(*shlex.split(HANG.replace("{csv}", shlex.quote(str(c.path("s.csv"))))))
    if not c.wait(lambda: _ranks_timing(c, p), p):
        p.kill()
        return False, "the job never reached timing"
    bad, n = [], 0
    for pid in c.tagged():
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.Error:
            continue
        for k in conns:
            for a in (k.laddr, k.raddr):
                if a:
                    ip = ipaddress.ip_address(a.ip.split("%")[0])
                    ip = getattr(ip, "ipv4_mapped", None) or ip
                    n += 1
                    bad += [] if ip.is_loopback else [f"{k.status} {a.ip}:{a.port}"]
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=120)
    return both((not bad and n > 0, f"{n} addresses, not loopback: {bad}"), c.clean())


@case("run", "--repeat 2: the CI lies within the two processes' medians")
def _repeat(c: Ctx) -> tuple[bool, str]:
    out = c.path("rep.csv")
    r = c.cli(
        *shlex.split("run _linear --device cpu --mode forward --max-time 0.1 --repeat 2"), "--out", str(out)
    )
    side = out.with_suffix(".samples.jsonl")
    meds = (
        [x["median_ms"] for x in json.loads(side.read_text().splitlines()[0])["repeats"]]
        if side.exists()
        else []
    )
    row = _row(out)
    lo, hi = float(row.get("time_ci_low_ms") or "nan"), float(row.get("time_ci_high_ms") or "nan")
    ok = r.rc == 0 and len(meds) == 2 and min(meds) <= lo <= hi <= max(meds)
    return both((ok, f"CI [{lo:.4g}, {hi:.4g}], medians {[round(m, 4) for m in meds]}"), c.clean())


@case("run", "a single sample has no CI (empty columns, noisy), never +- 0")
def _single(c: Ctx) -> tuple[bool, str]:
    out = c.path("one.csv")
    r = c.cli(*shlex.split("run _linear --device cpu --mode forward --max-time 0.000001"), "--out", str(out))
    row = _row(out)
    ok = (
        r.rc == 0
        and row.get("n_samples") == "1"
        and row.get("time_ci_low_ms") == ""
        and row.get("noisy") == "True"
    )
    return ok, f"n={row.get('n_samples')}, CI {row.get('time_ci_low_ms')!r}..{row.get('time_ci_high_ms')!r}"


# --- profile --------------------------------------------------------------------------------------------


@case("profile", "--timeout without --parallel is honoured")
def _ptimeout(c: Ctx) -> tuple[bool, str]:
    out = c.path("p")
    r = c.cli(*shlex.split("profile _sleep -p seconds=600 --device cpu --timeout 3"), "-o", str(out))
    ok = r.rc == 1 and "timeout" in r.out and r.secs < 60 and not out.exists()
    return both((ok, f"exit {r.rc} in {r.secs:.0f} s"), c.clean(near=out))


@case("profile", "-o holding a profile: refused; --overwrite replaces it whole; other files never deleted")
def _pdir(c: Ctx) -> tuple[bool, str]:
    out, other = c.path("with space"), c.path("other")
    r1 = c.cli(*shlex.split(PROF), "-o", str(out))
    (out / "old.pt.trace.json").write_text("{}")
    r2 = c.cli(*shlex.split(PROF), "-o", str(out))
    r3 = c.cli(*shlex.split(PROF), "-o", str(out), "--overwrite")
    other.mkdir()
    (other / "mine.txt").write_text("mine")
    r4 = c.cli(*shlex.split(PROF), "-o", str(other), "--overwrite")
    quoted = f"--logdir {shlex.quote(str(out.resolve()))}" in r1.out
    rcs = (r1.rc, r2.rc, r3.rc, r4.rc)
    ok = rcs == (0, 2, 0, 2) and not (out / "old.pt.trace.json").exists() and (other / "mine.txt").exists()
    return both((ok and quoted, f"exits {rcs}, paths quoted {quoted}"), c.clean(near=out))


@case("profile", "refused: -o whose parent is a file")
def _pfile(c: Ctx) -> tuple[bool, str]:
    f = c.path("f")
    f.write_text("x")
    return refused(c.cli(*shlex.split(PROF), "-o", str(f / "sub")), "is a file")


__all__ = ["CASES", "KILLS", "PARTIAL", "REFUSALS"]
