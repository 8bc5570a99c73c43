"""An audit of ``compare``, ``report`` and ``baseline`` as a demanding user runs them: held or defect.

    python -m bench.micro.trust_audit            # every case; prints one line each and the count held
    python -m bench.micro.trust_audit -k report  # the cases whose name contains "report"
    python -m bench.micro.trust_audit --json audit.json

Every case runs the real command line (``python -m bench.cli``) in a subprocess on files made for
it in a temporary folder, and checks one principle: the user's files are byte-identical afterwards,
a kill or a full disk leaves the previous output whole, the same run is never counted twice, a
cell from a results file is inert, bad input is exit 2 with one line and no traceback. Cases that
need a real full or read-only file system mount a small tmpfs (root only; else they say so and
count as skipped). Not a test: it takes a few minutes, and it is a record of what was tried.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "compare"
RFIX = ROOT / "tests" / "fixtures" / "report"
BASE, SLOW, SAME = FIX / "base.csv", FIX / "slow.csv", FIX / "same.csv"


@dataclass
class Outcome:
    name: str
    held: bool | None  # None: skipped (what it needs is not here)
    detail: str


@dataclass
class Run:
    rc: int
    out: str
    err: str
    wall_s: float

    @property
    def clean(self) -> bool:
        """No traceback anywhere and, for exit 2, exactly one error line."""
        if "Traceback" in self.out + self.err:
            return False
        if self.rc == 2:
            lines = [ln for ln in self.err.splitlines() if ln.strip()]
            return len(lines) == 1 and lines[0].startswith("Error: ")
        return True


def dl(
    *args: object, cwd: Path | None = None, timeout: float = 300, env: dict[str, str] | None = None
) -> Run:
    t0 = time.perf_counter()
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT)
    e["COLUMNS"] = "250"  # rich tables on one line a row, as in a wide terminal
    e.update(env or {})
    p = subprocess.run(
        [sys.executable, "-m", "bench.cli", *map(str, args)],
        cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout, env=e,
    )  # fmt: skip
    return Run(p.returncode, p.stdout, p.stderr, time.perf_counter() - t0)


def snapshot(folder: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = b"-> " + os.readlink(p).encode()
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out


def rows_of(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        r = csv.DictReader(f)
        return list(r.fieldnames or []), list(r)


def write_rows(
    path: Path, header: list[str], rows: list[dict[str, str]], sidecar: Path | None = None
) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")
    if sidecar is not None and sidecar.exists():
        shutil.copy(sidecar, path.with_name(path.stem + ".samples.jsonl"))
    return path


def edited(src: Path, dst: Path, edit: Callable[[int, dict[str, str]], dict[str, str]]) -> Path:
    header, rows = rows_of(src)
    return write_rows(
        dst,
        header,
        [edit(i, dict(r)) for i, r in enumerate(rows)],
        src.with_name(src.stem + ".samples.jsonl"),
    )


def copy_fix(src: Path, folder: Path, name: str | None = None) -> Path:
    dst = folder / (name or src.name)
    shutil.copy(src, dst)
    side = src.with_name(src.stem + ".samples.jsonl")
    if side.exists():
        shutil.copy(side, dst.with_name(dst.stem + ".samples.jsonl"))
    return dst


@contextlib.contextmanager
def tmpfs(size: str = "64k", read_only: bool = False) -> Iterator[Path | None]:
    """A small tmpfs (root only): a real full disk, or read-only after its files are made."""
    if os.geteuid() != 0:
        yield None
        return
    mnt = Path(tempfile.mkdtemp(prefix="dlbench-audit-mnt-"))
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True
    ).returncode:
        mnt.rmdir()
        yield None
        return
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        mnt.rmdir()


def remount_ro(mnt: Path) -> bool:
    return subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True).returncode == 0


CASES: list[tuple[str, Callable[[Path], tuple[bool | None, str]]]] = []


def case(
    name: str,
) -> Callable[[Callable[[Path], tuple[bool | None, str]]], Callable[[Path], tuple[bool | None, str]]]:
    def deco(fn: Callable[[Path], tuple[bool | None, str]]) -> Callable[[Path], tuple[bool | None, str]]:
        CASES.append((name, fn))
        return fn

    return deco


def refused(r: Run, *needles: str) -> tuple[bool, str]:
    ok = r.rc == 2 and r.clean and all(n in r.err for n in needles)
    return ok, f"exit {r.rc}: {(r.err or r.out).strip()[:160]}"


# --- compare: the user's files ----------------------------------------------------------------------


def _out_case(make: Callable[[Path, Path], Path]) -> Callable[[Path], tuple[bool, str]]:
    def run(t: Path) -> tuple[bool, str]:
        base = copy_fix(BASE, t)
        target = make(t, base)
        watched = [p for p in t.rglob("*") if p.is_file()]
        before = {p: p.read_bytes() for p in watched}
        r = dl("compare", base, SLOW, "--format", "json", "--out", target)
        ok, detail = refused(r, "--out")
        return ok and all(p.read_bytes() == b for p, b in before.items()), detail

    return run


case("compare --out an input CSV")(_out_case(lambda t, b: b))
case("compare --out the input's sidecar")(_out_case(lambda t, b: b.with_name("base.samples.jsonl")))


def _hard_link(t: Path, b: Path) -> Path:
    os.link(b, t / "h.csv")
    return t / "h.csv"


def _dotdot(t: Path, b: Path) -> Path:
    (t / "d").mkdir()
    return t / "d" / ".." / "base.csv"


case("compare --out a hard link of the input")(_out_case(_hard_link))
case("compare --out the input through ../")(_out_case(_dotdot))


@case("compare --out a symlink to a user file")
def _c_symlink(t: Path) -> tuple[bool, str]:
    (t / "mine.txt").write_text("precious")
    (t / "cmp.json").symlink_to(t / "mine.txt")
    r = dl("compare", BASE, SLOW, "--format", "json", "--out", t / "cmp.json")
    ok, d = refused(r, "symbolic link")
    return ok and (t / "mine.txt").read_text() == "precious", d


@case("compare --out a folder")
def _c_folder(t: Path) -> tuple[bool, str]:
    return refused(dl("compare", BASE, SLOW, "--out", t), "is a folder")


@case("compare --out in a missing folder")
def _c_missing(t: Path) -> tuple[bool, str]:
    return refused(dl("compare", BASE, SLOW, "--out", t / "no" / "x.json"), "does not exist")


@case("compare --out /dev/full (a device)")
def _c_device(t: Path) -> tuple[bool, str]:
    return refused(dl("compare", BASE, SLOW, "--out", "/dev/full"), "not a regular file")


@case("compare --out on a full disk keeps the previous JSON")
def _c_full(t: Path) -> tuple[bool | None, str]:
    with tmpfs("48k") as mnt:
        if mnt is None:
            return None, "needs root to mount a tmpfs"
        out = mnt / "cmp.json"
        first = dl("compare", BASE, SLOW, "--format", "json", "--out", out)
        good = out.read_bytes() if out.exists() else b""
        (mnt / "filler").write_bytes(b"\0" * (48 * 1024 - len(good) - 2048))  # leave less than a comparison
        big = [BASE, SAME]
        r = dl("compare", *big, "--new", SLOW, "--format", "json", "--out", out)
        valid = json.loads(out.read_bytes())["kind"] == "dlbench-compare"
        tmp_left = [p.name for p in mnt.iterdir() if p.name.endswith(".tmp")]
        ok = first.rc == 0 and r.rc == 1 and r.clean and out.read_bytes() == good and valid and not tmp_left
        return ok, f"exit {r.rc}: {r.err.strip()[:140]}"


@case("compare --out on a read-only file system")
def _c_ro(t: Path) -> tuple[bool | None, str]:
    with tmpfs("64k") as mnt:
        if mnt is None or not remount_ro(mnt):
            return None, "needs root to mount a read-only tmpfs"
        return refused(dl("compare", BASE, SLOW, "--out", mnt / "cmp.json"), "cannot write into")


@case("compare --out: SIGKILL at 10 random moments never leaves a torn JSON")
def _c_kill(t: Path) -> tuple[bool, str]:
    out = t / "cmp.json"
    dl("compare", BASE, SLOW, "--format", "json", "--out", out)
    good = out.read_bytes()
    rng = random.Random(1)
    states = set()
    for _ in range(10):
        p = subprocess.Popen(
            [sys.executable, "-m", "bench.cli", "compare", BASE, SLOW, "--format", "json", "--out", out],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(rng.uniform(0.2, 1.2))
        p.send_signal(signal.SIGKILL)
        p.wait()
        data = out.read_bytes()
        states.add("old" if data == good else "new")
        json.loads(data)
    dl("compare", BASE, SLOW, "--format", "json", "--out", out)  # the next write clears the temporaries
    left = [p.name for p in t.iterdir() if p.name.endswith(".tmp")]
    return not left, f"every state whole JSON ({sorted(states)}); temporaries left: {left}"


# --- compare: the numbers -----------------------------------------------------------------------------


@case("compare: the same file twice on one side")
def _c_twice(t: Path) -> tuple[bool, str]:
    return refused(dl("compare", BASE, BASE, "--new", SLOW), "given twice")


@case("compare: the same file on both sides (through a symlink)")
def _c_both(t: Path) -> tuple[bool, str]:
    (t / "alias.csv").symlink_to(BASE)
    return refused(dl("compare", BASE, t / "alias.csv"), "given twice")


@case("compare: a copy of the same run under another name on one side")
def _c_copy(t: Path) -> tuple[bool, str]:
    c = copy_fix(BASE, t, "copy.csv")
    return refused(dl("compare", BASE, c, "--new", SLOW), "every row repeats")


@case("compare: a repeated row does not narrow the CI or fake a regression")
def _c_dup(t: Path) -> tuple[bool, str]:
    header, rows = rows_of(BASE)
    dup = write_rows(t / "dup.csv", header, rows + rows, FIX / "base.samples.jsonl")
    a = json.loads(dl("compare", BASE, SAME, "--format", "json").out)
    r = dl("compare", dup, SAME, "--format", "json", "--fail-on-regression")
    b = json.loads(r.out)
    same_ci = [(p["ci_low"], p["ci_high"], p["method"]) for p in a["pairs"]] == [
        (p["ci_low"], p["ci_high"], p["method"]) for p in b["pairs"]
    ]
    return r.rc == 0 and same_ci, f"exit {r.rc}; CIs equal to the clean file's: {same_ci}"


@case("compare: a noisy slower row is inconclusive, never a failing regression")
def _c_noisy(t: Path) -> tuple[bool, str]:
    n = edited(SLOW, t / "n.csv", lambda i, r: {**r, "noisy": "True"} if i == 1 else r)
    r = dl("compare", BASE, n, "--format", "json", "--fail-on-regression")
    p = json.loads(r.out)["pairs"][1]
    ok = r.rc == 0 and p["verdict"] == "inconclusive" and p["noisy"] and p["verdict_clean"] == "slower"
    return ok and "WARNING" in r.err, f"exit {r.rc}, verdict {p['verdict']} (clean: {p['verdict_clean']})"


@case("compare: CPU-A vs CPU-B pairs are caught though both sides hold both CPUs")
def _c_env(t: Path) -> tuple[bool, str]:
    a = edited(BASE, t / "a.csv", lambda i, r: {**r, "cpu_model": "CPU-A" if i % 2 else "CPU-B"})
    b = edited(SLOW, t / "b.csv", lambda i, r: {**r, "cpu_model": "CPU-B" if i % 2 else "CPU-A"})
    r = dl("compare", a, b)
    ok, d = refused(r, "cpu_model")
    allowed = dl("compare", a, b, "--allow-env-mismatch")
    return ok and allowed.rc == 0 and "ENVIRONMENTS DIFFER: cpu_model" in allowed.out, d


@case("compare --by: an AMP row of one machine against an fp32 row of another")
def _c_by_env(t: Path) -> tuple[bool, str]:
    m = edited(
        BASE, t / "m.csv", lambda i, r: {**r, "device_name": "GPU-B"} if r["precision"] != "fp32" else r
    )
    return refused(dl("compare", m, "--by", "precision"), "device_name")


@case("compare: --repeat rows show the CSV median beside the per-process figure")
def _c_csv_median(t: Path) -> tuple[bool, str]:
    r = dl("compare", FIX / "rep_base.csv", FIX / "rep_slow.csv", "--format", "markdown")
    return r.rc == 0 and "(CSV " in r.out, r.out.splitlines()[-6][:160] if r.out else r.err


for col, val, msg in [
    ("time_median_ms", "-4", "negative"),
    ("time_median_ms", "inf", "finite"),
    ("time_median_ms", "", "positive median"),
    ("peak_mem_bytes", "-1", "negative"),
    ("flops_per_step", "nan", "finite"),
    ("schema_version", "2", "schema_version 2"),
    ("status", "OK", "status 'OK'"),
    ("noisy", "yes", "True or False"),
]:

    def _bad(t: Path, col: str = col, val: str = val, msg: str = msg) -> tuple[bool, str]:
        b = edited(BASE, t / "bad.csv", lambda i, r: {**r, col: val} if i == 2 else r)
        return refused(dl("compare", b, SLOW), "line 4", col, msg)

    case(f"compare: {col}={val!r} is named by file, line and column")(_bad)


@case("compare: a torn last row is dropped with a note")
def _c_torn(t: Path) -> tuple[bool, str]:
    text = BASE.read_text()
    p = t / "torn.csv"
    p.write_text(text + text.splitlines()[-1][:50])
    r = dl("compare", p, SLOW)
    return r.rc == 0 and "cut short" in r.out, f"exit {r.rc}"


@case("compare: a short row in the middle is refused")
def _c_short(t: Path) -> tuple[bool, str]:
    lines = BASE.read_text().splitlines()
    p = t / "short.csv"
    p.write_text("\n".join([*lines[:2], lines[2][:30], *lines[3:]]) + "\n")
    return refused(dl("compare", p, SLOW), "line 3")


@case("compare: a UTF-8 BOM and CRLF read like the plain file")
def _c_bom(t: Path) -> tuple[bool, str]:
    p = copy_fix(BASE, t, "bom.csv")
    p.write_bytes(b"\xef\xbb\xbf" + BASE.read_text().replace("\n", "\r\n").encode())
    a, b = dl("compare", BASE, SLOW, "--format", "json"), dl("compare", p, SLOW, "--format", "json")
    strip = [(q["label"], q["ratio"], q["ci_low"]) for q in json.loads(a.out)["pairs"]]
    return b.rc == 0 and strip == [
        (q["label"], q["ratio"], q["ci_low"]) for q in json.loads(b.out)["pairs"]
    ], "same pairs"


@case("compare: a FIFO as input does not hang")
def _c_fifo(t: Path) -> tuple[bool, str]:
    os.mkfifo(t / "f.csv")
    r = dl("compare", t / "f.csv", BASE, timeout=30)
    return refused(r, "not a regular file")


@case("compare: /dev/null as input")
def _c_devnull(t: Path) -> tuple[bool, str]:
    return refused(dl("compare", "/dev/null", BASE), "not a regular file")


@case("compare: a binary file as input")
def _c_binary(t: Path) -> tuple[bool, str]:
    (t / "b.csv").write_bytes(bytes(range(256)) * 4)
    return refused(dl("compare", t / "b.csv", BASE), "UTF-8")


@case("compare: a quoted multi-line reason and an unknown column are read")
def _c_multiline(t: Path) -> tuple[bool, str]:
    header, rows = rows_of(BASE)
    rows[0]["reason"] = "line one\nline two, with a comma"
    for row in rows:
        row["energy_j_per_step"] = "1.5"
    p = write_rows(t / "m.csv", [*header, "energy_j_per_step"], rows, FIX / "base.samples.jsonl")
    r = dl("compare", p, SLOW)
    return r.rc == 0, f"exit {r.rc} {r.err[:100]}"


@case("compare --metric throughput with a throughput of 0")
def _c_thr0(t: Path) -> tuple[bool, str]:
    z = edited(SLOW, t / "z.csv", lambda i, r: {**r, "throughput": "0"})
    r = dl("compare", BASE, z, "--metric", "throughput")
    return r.rc == 0 and r.clean and "no throughput figure" in r.out, f"exit {r.rc}"


@case("compare --metric memory with a peak of 0 bytes in BASE")
def _c_mem0(t: Path) -> tuple[bool, str]:
    z = edited(BASE, t / "z.csv", lambda i, r: {**r, "peak_mem_bytes": "0"})
    r = dl("compare", z, SLOW, "--metric", "memory")
    return r.rc == 0 and r.clean, f"exit {r.rc}"


for name, doc in {
    "deeply nested": '{"benchmarks": ' + "[" * 50000 + "]" * 50000 + "}",
    "a list of numbers": '{"benchmarks": [1, 2]}',
    "an integer of 5000 digits": '{"benchmarks": [{"name": "b", "stats": {"median": ' + "9" * 5000 + "}}]}",
    "stats as a string": '{"benchmarks": [{"name": "b", "stats": "fast"}]}',
}.items():

    def _pj(t: Path, doc: str = doc) -> tuple[bool, str]:
        (t / "p.json").write_text(doc)
        (t / "q.json").write_text(doc)
        return refused(dl("compare", t / "p.json", t / "q.json"), "p.json")

    case(f"compare: pytest-benchmark JSON, {name}")(_pj)


@case("compare: cells with | newlines <script> and links stay text in markdown")
def _c_inject(t: Path) -> tuple[bool, str]:
    evil = "a|b\n| forged |\n<script>alert(1)</script>[x](javascript:alert(1))"
    header, rows = rows_of(BASE)
    for i, row in enumerate(rows):
        row["param_causal"] = f"{evil}{i}"
    a = write_rows(t / "a.csv", header, rows, FIX / "base.samples.jsonl")
    b = write_rows(t / "b.csv", header, [{**row, "run_id": "b"} for row in rows], FIX / "base.samples.jsonl")
    r = dl("compare", a, b, "--format", "markdown")
    table = [ln for ln in r.out.splitlines() if ln.startswith("|")]
    ok = r.rc == 0 and len(table) == 6 and "<script>" not in r.out and "](javascript" not in r.out
    return ok, f"{len(table)} table lines"


@case("compare: 5,000 configurations print a summary, JSON holds them all")
def _c_many(t: Path) -> tuple[bool, str]:
    header, rows = rows_of(FIX / "nosamples.csv")
    many = [
        {**r, "param_seq_len": str(s), "config_key": f"{r['config_key']}{s}"}
        for r in rows
        for s in range(1250)
    ]
    a = write_rows(t / "a.csv", header, many)
    b = write_rows(t / "b.csv", header, [{**r, "run_id": "b"} for r in many])
    r = dl("compare", a, b)
    j = dl("compare", a, b, "--format", "json")
    n = sum(ln.strip().startswith("attention") for ln in r.out.splitlines())
    ok = r.rc == 0 and n <= 40 and len(json.loads(j.out)["pairs"]) == 5000
    return ok, f"{n} table rows printed, {r.wall_s:.1f} s"


@case("compare --threshold 5 (a percent given as a fraction)")
def _c_thr(t: Path) -> tuple[bool, str]:
    return refused(dl("compare", BASE, SLOW, "--threshold", "5"), "--threshold")


@case("compare --out inside an input folder, run twice (the earlier output is skipped, not read)")
def _c_out_in_dir(t: Path) -> tuple[bool, str]:
    (t / "old").mkdir()
    (t / "new").mkdir()
    copy_fix(BASE, t / "old")
    copy_fix(SLOW, t / "new", "base.csv")
    first = dl("compare", t / "old", t / "new", "--format", "json", "--out", t / "new" / "cmp.json")
    second = dl("compare", t / "old", t / "new", "--format", "json", "--out", t / "new" / "cmp2.json")
    refused_again, d = refused(
        dl("compare", t / "old", t / "new", "--out", t / "new" / "base.csv"), "one of the inputs"
    )
    ok = (
        first.rc == 0
        and second.rc == 0
        and "not a pytest-benchmark file, skipped" in second.out
        and refused_again
    )
    return ok, f"exits {first.rc}, {second.rc}; {d}"


@case("compare: the same folder on both sides")
def _c_same_dir(t: Path) -> tuple[bool, str]:
    copy_fix(BASE, t)
    return refused(dl("compare", t, t), "given twice")


@case("compare --out with a 300-character file name")
def _c_long_name(t: Path) -> tuple[bool, str]:
    return refused(dl("compare", BASE, SLOW, "--out", t / ("x" * 300 + ".json")), "File name too long")


@case("compare --out with a 250-character file name is written")
def _c_long_ok(t: Path) -> tuple[bool, str]:
    out = t / ("y" * 245 + ".json")
    r = dl("compare", BASE, SLOW, "--format", "json", "--out", out)
    return r.rc == 0 and json.loads(out.read_text())["kind"] == "dlbench-compare", f"exit {r.rc}"


@case("compare: non-ASCII file names")
def _c_unicode(t: Path) -> tuple[bool, str]:
    a = copy_fix(BASE, t, "résultats α.csv")
    r = dl("compare", a, SLOW, "--format", "json", "--out", t / "сравнение.json")
    return r.rc == 0 and (t / "сравнение.json").exists(), f"exit {r.rc}"


@case("compare: a cell of 200 kB")
def _c_huge_cell(t: Path) -> tuple[bool, str]:
    b = edited(BASE, t / "b.csv", lambda i, r: {**r, "reason": "x" * 200_000} if i == 1 else r)
    return refused(dl("compare", b, SLOW), "line 3")


# --- report -------------------------------------------------------------------------------------------

ATTN = RFIX / "attention.csv"


@case("report -o a user's site (index.html, figures/*.png)")
def _r_site(t: Path) -> tuple[bool, str]:
    site = t / "site"
    (site / "figures").mkdir(parents=True)
    (site / "index.html").write_text("<h1>mine</h1>")
    (site / "figures" / "amp.png").write_bytes(b"mine")
    before = snapshot(site)
    ok, d = refused(dl("report", ATTN, "-o", site), "not a report")
    return ok and snapshot(site) == before, d


@case("report -o a report whose figures is a symlink")
def _r_symlink(t: Path) -> tuple[bool, str]:
    rep = t / "r"
    dl("report", ATTN, "-o", rep)
    mine = t / "mine"
    mine.mkdir()
    (mine / "amp.png").write_bytes(b"mine")
    shutil.rmtree(rep / "figures")
    (rep / "figures").symlink_to(mine)
    ok, d = refused(dl("report", ATTN, "-o", rep), "did not write")
    return ok and (mine / "amp.png").read_bytes() == b"mine", d


for where in ("/", "~", ".", ".."):

    def _r_where(t: Path, where: str = where) -> tuple[bool, str]:
        home = t / "home"
        (home / "w").mkdir(parents=True)
        shutil.copy(ATTN, home / "w" / "a.csv")
        before = snapshot(home)
        target = str(home) if where == "~" else where
        env = {"HOME": str(home), "MPLCONFIGDIR": str(t / "mpl")}  # matplotlib's cache stays out of HOME
        r = dl("report", home / "w" / "a.csv", "-o", target, cwd=home / "w", env=env)
        ok, d = refused(r, "--out")
        return ok and snapshot(home) == before, d

    case(f"report -o {where}")(_r_where)


@case("report -o a file")
def _r_file(t: Path) -> tuple[bool, str]:
    (t / "f").write_text("x")
    ok, d = refused(dl("report", ATTN, "-o", t / "f"), "is a file")
    return ok and (t / "f").read_text() == "x", d


@case("report -o the folder that holds the input")
def _r_input_dir(t: Path) -> tuple[bool, str]:
    a = copy_fix(ATTN, t)
    return refused(dl("report", a, "-o", t), "--out")


@case("report over its own earlier report removes figures it no longer draws")
def _r_replace(t: Path) -> tuple[bool, str]:
    rep = t / "r"
    dl("report", RFIX / "encoder_ckpt.csv", "-o", rep)
    had = (rep / "figures" / "checkpointing.png").exists()
    r = dl("report", ATTN, "-o", rep)
    gone = not (rep / "figures" / "checkpointing.png").exists()
    left = [p.name for p in t.iterdir() if p.name.endswith(".tmp")]
    return r.rc == 0 and had and gone and not left, f"exit {r.rc}; old figure gone: {gone}; left: {left}"


@case("report: SIGKILL at 12 random moments leaves the old report or the whole new one")
def _r_kill(t: Path) -> tuple[bool, str]:
    rep = t / "r"
    dl("report", RFIX / "encoder_ckpt.csv", "-o", rep, "--title", "OLD")
    old = snapshot(rep)
    rng = random.Random(7)
    states: dict[str, int] = {}
    bad = []
    for i in range(12):
        cmd = [
            sys.executable,
            "-m",
            "bench.cli",
            "report",
            str(RFIX / "encoder_batch.csv"),
            "-o",
            str(rep),
            "--title",
            "NEW",
        ]
        p = subprocess.Popen(
            cmd,
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(rng.uniform(0.5, 4.0))
        p.send_signal(signal.SIGKILL)
        p.wait()
        now = snapshot(rep)
        if now == old:
            states["old"] = states.get("old", 0) + 1
        else:
            manifest = json.loads(now.get(".dlbench-report.json", b"{}") or b"{}")
            whole = sorted(now) == sorted([*manifest.get("files", []), ".dlbench-report.json"])
            complete = (
                now.get("index.html", b"").rstrip().endswith(b"</html>") and b"NEW" in now["index.html"]
            )
            if whole and complete:
                states["new"] = states.get("new", 0) + 1
                dl("report", RFIX / "encoder_ckpt.csv", "-o", rep, "--title", "OLD")
                old = snapshot(rep)
            else:
                bad.append(i)
    dl("report", ATTN, "-o", rep)
    left = [p.name for p in t.iterdir() if p.name.endswith(".tmp")]
    return not bad and not left, f"states {states}; mixed: {bad}; temporaries left: {left}"


@case("report into an empty folder")
def _r_empty(t: Path) -> tuple[bool, str]:
    (t / "r").mkdir()
    r = dl("report", ATTN, "-o", t / "r")
    return r.rc == 0 and (t / "r" / "index.html").exists(), f"exit {r.rc}"


def _signal_case(sig: int, expect_rc: int) -> Callable[[Path], tuple[bool, str]]:
    def run(t: Path) -> tuple[bool, str]:
        rep = t / "r"
        dl("report", RFIX / "encoder_ckpt.csv", "-o", rep)
        old = snapshot(rep)
        cmd = [sys.executable, "-m", "bench.cli", "report", str(RFIX / "encoder_batch.csv"), "-o", str(rep)]
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not [q for q in t.iterdir() if q.name.endswith(".tmp")] and p.poll() is None:
            time.sleep(0.01)
        time.sleep(0.3)
        p.send_signal(sig)
        p.wait(60)
        left = [q.name for q in t.iterdir() if q.name.endswith(".tmp")]
        whole = snapshot(rep) == old
        return (
            p.returncode == expect_rc and whole and not left,
            f"exit {p.returncode}; old whole: {whole}; left {left}",
        )

    return run


case("report: Ctrl-C (SIGINT) mid-build keeps the old report, removes its temporary")(
    _signal_case(signal.SIGINT, 130)
)
case("report: SIGTERM mid-build keeps the old report, removes its temporary")(
    _signal_case(signal.SIGTERM, 143)
)


@case("report on a full disk keeps the previous report")
def _r_full(t: Path) -> tuple[bool | None, str]:
    with tmpfs("600k") as mnt:
        if mnt is None:
            return None, "needs root to mount a tmpfs"
        rep = mnt / "r"
        first = dl("report", ATTN, "-o", rep)
        old = snapshot(rep)
        free = shutil.disk_usage(mnt).free
        (mnt / "filler").write_bytes(b"\0" * max(0, free - 150_000))
        r = dl("report", RFIX / "encoder_batch.csv", "-o", rep)
        left = [p.name for p in mnt.iterdir() if p.name.endswith(".tmp")]
        ok = first.rc == 0 and r.rc == 1 and r.clean and snapshot(rep) == old and not left
        return ok, f"exit {r.rc}: {r.err.strip()[:140]}"


@case("report -o on a read-only file system")
def _r_ro(t: Path) -> tuple[bool | None, str]:
    with tmpfs("64k") as mnt:
        if mnt is None or not remount_ro(mnt):
            return None, "needs root to mount a read-only tmpfs"
        return refused(dl("report", ATTN, "-o", mnt / "r"), "cannot write into")


@case("report: the same CSV twice (once through a symlink)")
def _r_twice(t: Path) -> tuple[bool, str]:
    (t / "l.csv").symlink_to(ATTN)
    return refused(dl("report", ATTN, t / "l.csv", "-o", t / "r"), "given twice")


for col, val in [
    ("time_median_ms", "-1"),
    ("time_median_ms", "inf"),
    ("time_median_ms", ""),
    ("schema_version", "7"),
]:

    def _r_bad(t: Path, col: str = col, val: str = val) -> tuple[bool, str]:
        b = edited(ATTN, t / "b.csv", lambda i, r: {**r, col: val} if i == 0 else r)
        r = dl("report", b, "-o", t / "r")
        ok, d = refused(r, "line 2", col)
        return ok and not (t / "r").exists(), d

    case(f"report: {col}={val!r} is refused like compare refuses it")(_r_bad)


@case("report: a torn last row is drawn without it, with a note")
def _r_torn(t: Path) -> tuple[bool, str]:
    p = t / "torn.csv"
    p.write_text(ATTN.read_text() + ATTN.read_text().splitlines()[-1][:60])
    r = dl("report", p, "-o", t / "r")
    return r.rc == 0 and "cut short" in r.out, f"exit {r.rc}"


@case("report: |, newlines, <script>, links and mathtext in cells and --title are inert")
def _r_inject(t: Path) -> tuple[bool, str]:
    header, rows = rows_of(ATTN)
    evil = "x|y\n| forged | row |\r<script>alert(1)</script>[l](javascript:alert(1))"
    for i, row in enumerate(rows):
        row["device_name"] = r"$\frac{1}{$ " + evil
        row["param_impl"] = f"{evil}{i}"
    p = write_rows(t / "e.csv", header, rows)
    r = dl("report", p, "-o", t / "r", "--title", "<script>alert(2)</script>|\n# h $x^$")
    md = (t / "r" / "summary.md").read_text() if r.rc == 0 else ""
    page = (t / "r" / "index.html").read_text() if r.rc == 0 else ""
    table = [ln for ln in md.splitlines() if ln.startswith("| ")]
    ok = (
        r.rc == 0 and "<script>" not in md + page and len(table) == 1 + len(rows) and "](javascript" not in md
    )
    return ok, f"exit {r.rc}; {len(table)} table lines for {len(rows)} rows"


@case("report --compare a FIFO")
def _r_cmp_fifo(t: Path) -> tuple[bool, str]:
    os.mkfifo(t / "c.json")
    return refused(dl("report", ATTN, "-o", t / "r", "--compare", t / "c.json", timeout=30), "--compare")


@case("report --compare JSON nested 50,000 deep")
def _r_cmp_deep(t: Path) -> tuple[bool, str]:
    (t / "c.json").write_text("[" * 50000 + "]" * 50000)
    return refused(dl("report", ATTN, "-o", t / "r", "--compare", t / "c.json"), "--compare")


@case("report --profile whose summary.json is a FIFO")
def _r_prof_fifo(t: Path) -> tuple[bool, str]:
    (t / "p").mkdir()
    os.mkfifo(t / "p" / "summary.json")
    r = dl("report", ATTN, "-o", t / "r", "--profile", t / "p", timeout=60)
    return r.rc == 0 and "not a regular file" in r.out, f"exit {r.rc}"


@case("report: a 10,000-character --title")
def _r_title(t: Path) -> tuple[bool, str]:
    r = dl("report", ATTN, "-o", t / "r", "--title", "T" * 10_000)
    return r.rc == 0, f"exit {r.rc}"


@case("report on a 5 MB CSV (6,000 rows) within a few seconds")
def _r_scale(t: Path) -> tuple[bool, str]:
    from bench.micro.report_scale import write_csv

    p = t / "s.csv"
    write_csv(p, 5)
    r = dl("report", p, "-o", t / "r")
    return r.rc == 0 and r.wall_s < 60, f"exit {r.rc}, {r.wall_s:.1f} s"


# --- baseline -------------------------------------------------------------------------------------------


@case("baseline check in another clone uses that clone's file")
def _b_clone(t: Path) -> tuple[bool, str]:
    (t / ".git").mkdir()
    return refused(dl("baseline", "check", cwd=t), str(t / "results" / "baseline" / "baseline.json"))


@case("baseline update in another clone never writes this checkout's file")
def _b_update_clone(t: Path) -> tuple[bool, str]:
    (t / ".git").mkdir()
    before = (ROOT / "results" / "baseline" / "baseline.json").read_bytes()
    ok, d = refused(dl("baseline", "update", cwd=t), str(t))
    return ok and (ROOT / "results" / "baseline" / "baseline.json").read_bytes() == before, d


BAD_BASELINES: list[tuple[str, str, Callable[[dict], object], str, str]] = [
    ("baseline check: version 2", "baseline.json", lambda d: d.update(version=2), "version 2", "check"),
    (
        "baseline check: a figure written as text",
        "baseline.json",
        lambda d: next(iter(d["cases"].values()))["figures"].update({"flops.total": "12"}),
        "must be an integer",
        "check",
    ),
    (
        "baseline check: another torch build",
        "baseline.json",
        lambda d: d.update(torch_version="9.9"),
        "torch build",
        "check",
    ),
    (
        "baseline ratios: a reference of 1e308",
        "perf.json",
        lambda d: d["checks"]["attention"].update(reference=1e308),
        "from 0.01 to 100",
        "ratios",
    ),
    (
        "baseline ratios: measured with 64 threads",
        "perf.json",
        lambda d: d.update(threads=64),
        "thread count",
        "ratios",
    ),
    (
        "baseline ratios: another machine kind",
        "perf.json",
        lambda d: d.update(machine="aarch64"),
        "machine kind",
        "ratios",
    ),
]


def _bad_baseline(
    name: str, change: Callable[[dict], object], needle: str, cmd: str
) -> Callable[[Path], tuple[bool, str]]:
    def run(t: Path) -> tuple[bool, str]:
        doc = json.loads((ROOT / "results" / "baseline" / name).read_text())
        change(doc)
        p = t / name
        p.write_text(json.dumps(doc))
        res = dl("baseline", cmd, "--path", p)
        ok, d = refused(res, needle)
        return ok and res.wall_s < 30, d + f" ({res.wall_s:.1f} s: before any work)"

    return run


for _title, _name, _change, _needle, _cmd in BAD_BASELINES:
    case(_title)(_bad_baseline(_name, _change, _needle, _cmd))


@case("baseline check --baseline a FIFO")
def _b_fifo(t: Path) -> tuple[bool, str]:
    os.mkfifo(t / "b.json")
    return refused(dl("baseline", "check", "--baseline", t / "b.json", timeout=30), "not a regular file")


@case("baseline update --path a folder (refused before computing)")
def _b_folder(t: Path) -> tuple[bool, str]:
    r = dl("baseline", "update", "--path", t)
    ok, d = refused(r, "is a folder")
    return ok and r.wall_s < 30, d


@case("baseline update on a full disk keeps the old file, no .tmp left")
def _b_full(t: Path) -> tuple[bool | None, str]:
    with tmpfs("48k") as mnt:
        if mnt is None:
            return None, "needs root to mount a tmpfs"
        target = mnt / "baseline.json"
        shutil.copy(ROOT / "results" / "baseline" / "baseline.json", target)
        old = target.read_bytes()
        (mnt / "filler").write_bytes(b"\0" * (shutil.disk_usage(mnt).free - 4096))
        r = dl("baseline", "update", "--path", target)
        left = [p.name for p in mnt.iterdir() if p.name.endswith(".tmp")]
        return (
            r.rc == 1 and r.clean and target.read_bytes() == old and not left,
            f"exit {r.rc}: {r.err.strip()[:120]}",
        )


@case("run --out on a full disk: the lock file gives one line, no traceback")
def _s_lock(t: Path) -> tuple[bool | None, str]:
    with tmpfs("16k") as mnt:
        if mnt is None:
            return None, "needs root to mount a tmpfs"
        (mnt / "filler").write_bytes(b"\0" * shutil.disk_usage(mnt).free)
        r = dl("run", "_linear", "--out", mnt / "r.csv", "--max-time", "0.05")
        return refused(r, "--out")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", default="", help="run only the cases whose name contains this")
    ap.add_argument("--json", type=Path, default=None, help="write every case's outcome here")
    args = ap.parse_args(argv)
    outcomes = []
    for name, fn in CASES:
        if args.k not in name:
            continue
        with tempfile.TemporaryDirectory(prefix="dlbench-audit-") as tmp:
            try:
                held, detail = fn(Path(tmp))
            except Exception as exc:  # noqa: BLE001 - an audit records a crash of the case as a defect
                held, detail = False, f"{type(exc).__name__}: {exc}"[:200]
        mark = {True: "held  ", False: "DEFECT", None: "skip  "}[held]
        print(f"{mark} {name}: {detail}", flush=True)
        outcomes.append(Outcome(name, held, detail))
    held_n = sum(o.held is True for o in outcomes)
    run_n = sum(o.held is not None for o in outcomes)
    print(f"\n{held_n} of {run_n} cases held ({len(outcomes) - run_n} skipped)")
    if args.json:
        args.json.write_text(json.dumps([asdict(o) for o in outcomes], indent=1) + "\n")
    return 0 if held_n == run_n else 1


if __name__ == "__main__":
    sys.exit(main())
