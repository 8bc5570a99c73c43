"""``dlbench report -o DIR`` owns what it writes and nothing else; a kill at any moment keeps the last report.

The folder checks run before anything is read or drawn; a folder of the user's is left byte for
byte as it was. The report is built beside ``DIR`` and swapped in whole: SIGKILL (real signals, in
forked children and in a CLI subprocess) at several points leaves the previous report whole, and
the next build clears what the killed one left. Cells and titles from the results stay text.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.report import build as build_mod
from bench.report import folder as folder_mod
from bench.report.build import build_report
from bench.report.folder import MANIFEST, read_manifest
from tests.bench.results_helpers import REPORT_FIX, csv_text, read_rows

ROOT = Path(__file__).resolve().parents[2]
ATTN = REPORT_FIX / "attention.csv"
runner = CliRunner()


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), links as their target."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = b"-> " + os.readlink(p).encode()
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def old_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report of the encoder checkpointing fixture (its figures: checkpointing, memory, ...)."""
    out = tmp_path_factory.mktemp("old") / "report"
    build_report([REPORT_FIX / "encoder_ckpt.csv"], out, title="old report")
    return out


def copy_report(src: Path, parent: Path) -> Path:
    dst = parent / "report"
    shutil.copytree(src, dst)
    return dst


# --- the user's folder ---------------------------------------------------------------------------


def test_a_folder_that_is_not_a_report_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "figures").mkdir(parents=True)
    (site / "index.html").write_text("<h1>my site</h1>")
    (site / "figures" / "logo.png").write_bytes(b"\x89PNG mine")
    (site / "figures" / "chart.svg").write_text("<svg/>")
    before = snapshot(site)
    r = runner.invoke(app, ["report", str(ATTN), "-o", str(site)])
    assert (
        r.exit_code == 2 and "is not a report written by dlbench" in r.stderr and "Traceback" not in r.output
    )
    assert snapshot(site) == before and leftovers(tmp_path) == []


def test_a_figures_symlink_is_never_followed(tmp_path: Path, old_report: Path) -> None:
    report = copy_report(old_report, tmp_path)
    elsewhere = tmp_path / "my_figures"
    elsewhere.mkdir()
    (elsewhere / "amp.png").write_bytes(b"my own amp.png")
    shutil.rmtree(report / "figures")
    (report / "figures").symlink_to(elsewhere, target_is_directory=True)
    before, mine = snapshot(report), snapshot(elsewhere)
    r = runner.invoke(app, ["report", str(ATTN), "-o", str(report)])
    assert r.exit_code == 2 and "holds files the report did not write (figures)" in r.stderr
    assert snapshot(report) == before and snapshot(elsewhere) == mine


def test_a_foreign_file_inside_an_old_report_is_refused(tmp_path: Path, old_report: Path) -> None:
    report = copy_report(old_report, tmp_path)
    (report / "notes.txt").write_text("my notes")
    before = snapshot(report)
    r = runner.invoke(app, ["report", str(ATTN), "-o", str(report)])
    assert r.exit_code == 2 and "notes.txt" in r.stderr and snapshot(report) == before


@pytest.mark.parametrize("where", ["root", "home", "cwd", "parent_of_cwd", "input_folder", "a_file"])
def test_folders_a_report_may_never_own_are_refused(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home / "work")
    (home / "work" / "file").write_text("x")
    data = home / "work" / "attention.csv"
    shutil.copy(ATTN, data)
    out = {
        "root": "/",
        "home": str(home),
        "cwd": ".",
        "parent_of_cwd": "..",
        "input_folder": ".",
        "a_file": "file",
    }
    before = snapshot(home)
    r = runner.invoke(app, ["report", str(data), "-o", out[where]])
    assert r.exit_code == 2 and r.stderr.startswith("Error: --out: ") and "Traceback" not in r.output, (
        r.output
    )
    assert snapshot(home) == before


def test_a_report_replaces_its_own_earlier_report_whole(tmp_path: Path, old_report: Path) -> None:
    report = copy_report(old_report, tmp_path)
    assert "figures/checkpointing.png" in (read_manifest(report) or [])
    r = runner.invoke(app, ["report", str(ATTN), "-o", str(report), "--title", "new"])
    assert r.exit_code == 0, r.output
    files = read_manifest(report) or []
    assert "figures/checkpointing.png" not in files and "figures/amp.png" in files
    assert sorted(snapshot(report)) == sorted([*files, MANIFEST])  # nothing of the old report is left
    assert not (report / "figures" / "checkpointing.png").exists() and leftovers(tmp_path) == []
    assert (report.stat().st_mode & 0o777) == 0o777 & ~_umask()


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


# --- a kill at any moment --------------------------------------------------------------------------


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _after_first_figure(_: Any) -> None:
    real = build_mod.save_figure

    def save(*a: Any, **k: Any) -> Any:
        out = real(*a, **k)
        _kill_self()
        return out

    build_mod.save_figure = save  # type: ignore[assignment]


def _mid_index_html(_: Any) -> None:
    real = folder_mod.ReportFolder.write_bytes

    def write(self: Any, relative: str, data: bytes) -> Path:
        if relative == "index.html":
            assert self.path is not None
            (self.path / relative).write_bytes(data[: len(data) // 2])
            _kill_self()
        return real(self, relative, data)

    folder_mod.ReportFolder.write_bytes = write  # type: ignore[method-assign]


def _before_swap(_: Any) -> None:
    def swap(new: Any, target: Any) -> Any:
        _kill_self()

    folder_mod.swap_dir = swap  # type: ignore[assignment]


def _after_swap(_: Any) -> None:
    real = folder_mod.swap_dir

    def swap(new: Any, target: Any) -> Any:
        out = real(new, target)
        _kill_self()
        return out

    folder_mod.swap_dir = swap  # type: ignore[assignment]


KILL_POINTS: dict[str, Callable[[Any], None]] = {
    "after_the_first_figure": _after_first_figure,
    "mid_index_html": _mid_index_html,
    "before_the_swap": _before_swap,
    "after_the_swap": _after_swap,
}


def _child(point: str, out: str) -> None:
    KILL_POINTS[point](None)
    build_report([ATTN], Path(out), title="new report")
    os._exit(0)  # not reached: the hook kills the process first


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_at_any_point_leaves_a_whole_report(point: str, tmp_path: Path, old_report: Path) -> None:
    report = copy_report(old_report, tmp_path)
    before = snapshot(report)
    proc = multiprocessing.get_context("fork").Process(target=_child, args=(point, str(report)))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL, proc.exitcode
    after = snapshot(report)
    if point == "after_the_swap":
        # the swap happened: the new report is there whole; the old one waits beside it
        files = read_manifest(report) or []
        assert sorted(after) == sorted([*files, MANIFEST]) and b"new report" in after["index.html"]
        assert after["index.html"].rstrip().endswith(b"</html>")
    else:
        assert after == before  # byte for byte the previous report
    assert leftovers(tmp_path)  # what the killed build left beside it ...
    assert runner.invoke(app, ["report", str(ATTN), "-o", str(report)]).exit_code == 0
    assert leftovers(tmp_path) == []  # ... the next build removes once that pid is gone


def test_sigkill_of_the_real_cli_while_it_builds(tmp_path: Path, old_report: Path) -> None:
    report = copy_report(old_report, tmp_path)
    before = snapshot(report)
    cmd = [
        sys.executable,
        "-m",
        "bench.cli",
        "report",
        str(REPORT_FIX / "encoder_batch.csv"),
        "-o",
        str(report),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not leftovers(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # inside the build: drawing, or writing figures into the new folder
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert snapshot(report) == before


# --- what the report reads and how it shows it -----------------------------------------------------


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def test_injected_cells_and_title_are_inert(tmp_path: Path) -> None:
    header, rows = read_rows(ATTN)
    evil = "a|b\n| forged | row |\r<script>alert(1)</script>"
    for i, r in enumerate(rows):
        r["device_name"] = r"GPU $\frac{1}{$ " + evil  # mathtext would abort the figure
        r["param_impl"] = f"{evil}{i}"
        if r["status"] != "ok":
            r["reason"] = evil
    rows[1]["status"], rows[1]["reason"] = "error", evil + " | also [x](javascript:alert(1))"
    for c in ("time_median_ms", "throughput"):
        rows[1][c] = ""
    data = tmp_path / "evil.csv"
    data.write_text(csv_text(header, rows))
    out = tmp_path / "r"
    title = "T</title><script>alert(2)</script> | x\n# forged heading"
    r = runner.invoke(app, ["report", str(data), "-o", str(out), "--title", title])
    assert r.exit_code == 0, r.output
    md = (out / "summary.md").read_text()
    page = (out / "index.html").read_text()
    assert "<script>" not in md and "<script>" not in page and 'href="javascript' not in page
    assert "](javascript" not in md
    assert md.splitlines()[0].startswith("# T&lt;/title&gt;") and "\n# forged heading" not in md
    table = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert len(table) == 1 + len(rows)  # the head and one line per row: no forged rows
    assert all(len(re.findall(r"(?<!\\)\|", ln)) == len(re.findall(r"(?<!\\)\|", table[0])) for ln in table)
    p = _Cells()
    p.feed(page)
    assert "script" not in p.tags
    summary = page.split('<section id="summary">', 1)[1].split("</section>", 1)[0]
    assert summary.count("<tr>") == 1 + len(rows)  # built from the cells, not from the markdown


def test_a_write_that_fails_keeps_the_previous_report(tmp_path: Path, old_report: Path) -> None:
    import resource

    report = copy_report(old_report, tmp_path)
    before = snapshot(report)

    def limit() -> None:  # the kernel refuses bytes beyond 20 kB of any file (EFBIG), like a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    proc = subprocess.run(
        [sys.executable, "-m", "bench.cli", "report", str(ATTN), "-o", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, preexec_fn=limit,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("Error: --out: cannot write the report") and "unchanged" in proc.stderr
    assert snapshot(report) == before and leftovers(tmp_path) == []
