"""``dlbench compare`` you can trust with your files and your numbers.

Its ``--out`` never replaces an input and survives a full disk; a noisy row never yields a confident
verdict; environments are compared pair by pair; injected cells stay text; a large comparison
prints a summary; no input a results file can hold gives a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import outputs
from bench.cli import app
from bench.report.compare_format import to_markdown
from bench.results.compare import EnvMismatchError, compare, compare_by
from tests.bench.results_helpers import FIX, csv_text, read_rows, variant

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
BASE, SLOW = FIX / "base.csv", FIX / "slow.csv"


def invoke(*args: str):
    return runner.invoke(app, ["compare", *map(str, args)])


def one_error_line(r) -> str:
    assert "Traceback" not in r.output, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    return lines[0]


# --- the user's files ----------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["input", "input_sidecar", "input_via_symlink", "folder", "symlink"])
def test_out_never_replaces_an_input_a_folder_or_a_link(target: str, tmp_path: Path) -> None:
    base = variant(BASE, tmp_path / "base.csv")
    side = tmp_path / "base.samples.jsonl"
    before = {p: p.read_bytes() for p in (base, side)}
    out = {
        "input": base,
        "input_sidecar": side,
        "input_via_symlink": tmp_path / "alias.csv",
        "folder": tmp_path / "dir",
        "symlink": tmp_path / "link.json",
    }[target]
    if target == "input_via_symlink":
        out.symlink_to(base)
    if target == "folder":
        out.mkdir()
    if target == "symlink":
        (tmp_path / "precious.txt").write_text("keep me")
        out.symlink_to(tmp_path / "precious.txt")
    r = invoke(base, SLOW, "--format", "json", "--out", out)
    assert r.exit_code == 2 and one_error_line(r).startswith("Error: --out: ")
    assert r.stdout == ""  # refused before any work: nothing compared, nothing printed
    assert {p: p.read_bytes() for p in before} == before
    if target == "symlink":
        assert (tmp_path / "precious.txt").read_text() == "keep me" and out.is_symlink()


def test_a_full_disk_keeps_the_previous_comparison_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cmp.json"
    assert invoke(BASE, SLOW, "--format", "json", "--out", out).exit_code == 0
    good = out.read_bytes()
    real_write = os.write

    def full(fd: int, data: bytes | memoryview) -> int:
        if len(data) > 100:
            real_write(fd, bytes(data)[:4096])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(outputs.os, "write", full)
    r = invoke(BASE, SLOW, "--format", "json", "--out", out)
    assert r.exit_code == 1 and "No space left on device; the previous file is unchanged" in one_error_line(r)
    assert out.read_bytes() == good and json.loads(good)["kind"] == "dlbench-compare"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp.json"]


def test_a_real_write_failure_in_the_cli_exits_1_and_keeps_the_old_file(tmp_path: Path) -> None:
    out = tmp_path / "cmp.json"
    out.write_text('{"previous": "comparison"}\n')

    def limit() -> None:  # the kernel refuses bytes beyond 2 KB of any file (EFBIG)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    cmd = [sys.executable, "-m", "bench.cli", "compare", str(BASE), str(SLOW), "--format", "json"]
    proc = subprocess.run(
        [*cmd, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120, preexec_fn=limit
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "Error: --out: cannot write" in proc.stderr and "the previous file is unchanged" in proc.stderr
    assert out.read_text() == '{"previous": "comparison"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp.json"]


# --- the numbers ---------------------------------------------------------------------------------


def test_a_noisy_row_is_never_a_confident_verdict(tmp_path: Path) -> None:
    noisy = variant(
        SLOW, tmp_path / "slow_noisy.csv", lambda i, r: {**r, "noisy": "True"} if r["mode"] == "train" else r
    )
    c = compare([str(BASE)], [str(noisy)])
    by = {p.label: p for p in c.pairs}
    slow, same = by["attention train fp32"], by["attention train amp-bf16"]
    assert slow.noisy and slow.verdict == "inconclusive" and slow.verdict_clean == "slower"
    assert same.noisy and same.verdict == "inconclusive" and same.verdict_clean == "same"
    assert "noisy" in slow.reason and slow.estimate.ratio == pytest.approx(1.3)  # the figure itself is kept
    assert not by["attention forward fp32"].noisy and by["attention forward fp32"].verdict == "same"
    assert c.regressions == [] and [p.label for p in c.noisy_regressions] == ["attention train fp32"]
    r = invoke(BASE, noisy, "--fail-on-regression", "--format", "json")
    assert (
        r.exit_code == 0
        and "WARNING: 1 configuration(s) would be slower but rest on rows flagged noisy" in r.stderr
    )
    assert (
        next(p for p in json.loads(r.stdout)["pairs"] if p["label"] == "attention train fp32")["noisy"]
        is True
    )
    # memory is exact: a noisy time does not make a byte count uncertain
    mem = compare([str(BASE)], [str(noisy)], metric="memory")
    assert {p.label: p.verdict for p in mem.pairs}["attention train fp32"] == "slower"


def test_environments_are_compared_pair_by_pair(tmp_path: Path) -> None:
    # BASE: forward rows on CPU-A, train rows on CPU-B; NEW: the other way round. The sets of CPUs
    # are equal on both sides, so a set-wise check saw nothing; every pair mixes two machines.
    def cpu(swap: bool):
        return lambda i, r: {**r, "cpu_model": "CPU-A" if (r["mode"] == "forward") != swap else "CPU-B"}

    base = variant(BASE, tmp_path / "a.csv", cpu(False))
    new = variant(SLOW, tmp_path / "b.csv", cpu(True))
    with pytest.raises(EnvMismatchError) as exc:
        compare([str(base)], [str(new)])
    assert exc.value.fields == [
        {"field": "cpu_model", "base": ["CPU-A", "CPU-B"], "new": ["CPU-A", "CPU-B"], "pairs": 4}
    ]
    c = compare([str(base)], [str(new)], allow_env_mismatch=True)
    assert c.env_label == "ENVIRONMENTS DIFFER: cpu_model" and all(p.env_diff for p in c.pairs)
    assert "env differs: cpu_model" in to_markdown(c)
    # within one file (--by): an fp32 row of one machine against an AMP row of another
    mixed = variant(
        BASE, tmp_path / "m.csv", lambda i, r: {**r, "cpu_model": "CPU-B"} if r["precision"] != "fp32" else r
    )
    with pytest.raises(EnvMismatchError, match="rows compared along precision"):
        compare_by([str(mixed)], "precision")
    r = invoke(mixed, "--by", "precision")
    assert r.exit_code == 2 and "--allow-env-mismatch" in one_error_line(r)


def test_the_csvs_own_median_is_shown_beside_the_per_repeat_figure() -> None:
    c = compare([str(FIX / "rep_base.csv")], [str(FIX / "rep_slow.csv")])
    (p,) = c.pairs
    _, rows = read_rows(FIX / "rep_base.csv")
    assert p.base_row_value == pytest.approx(float(rows[0]["time_median_ms"]))  # median of the 5 medians
    assert p.base_value != pytest.approx(p.base_row_value, rel=1e-9)  # the geometric mean of the 5
    r = invoke(FIX / "rep_base.csv", FIX / "rep_slow.csv", "--format", "markdown")
    row = next(ln for ln in r.stdout.splitlines() if ln.startswith("| attention"))
    assert f"{p.base_value:.4g} ms (CSV {p.base_row_value:.4g} ms)" in row


def test_throughput_of_zero_has_no_ratio_and_no_traceback(tmp_path: Path) -> None:
    zero = variant(SLOW, tmp_path / "zero.csv", lambda i, r: {**r, "throughput": "0"} if i == 1 else r)
    r = invoke(BASE, zero, "--metric", "throughput", "--format", "json")
    assert r.exit_code == 0, r.output
    p = next(p for p in json.loads(r.stdout)["pairs"] if p["label"] == "attention train fp32")
    assert p["verdict"] == "inconclusive" and p["ratio"] is None and "no throughput figure" in p["reason"]


# --- injection and scale -------------------------------------------------------------------------


def test_cells_that_look_like_markup_stay_text(tmp_path: Path) -> None:
    evil = "x|y\n| forged | row |<script>alert(1)</script>[link](javascript:alert(1)) [bold]rich[/bold] **b**"
    header, rows = read_rows(BASE)
    for name in ("a.csv", "b.csv"):
        for i, r in enumerate(rows):
            r["param_causal"] = f"{evil}{i}"  # varies, so it is part of every label
        (tmp_path / name).write_text(csv_text(header, rows))
        (tmp_path / name.replace(".csv", ".samples.jsonl")).write_text(
            (FIX / "base.samples.jsonl").read_text()
        )
        rows = [{**r, "run_id": "other"} for r in rows]
    md = invoke(tmp_path / "a.csv", tmp_path / "b.csv", "--format", "markdown").stdout
    table = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(table) == 2 + 4  # head, rule and one line per pair: nothing forged
    assert "<script>" not in md and "](javascript" not in md and "**b**" not in md
    assert all(ln.count("|") - ln.count("\\|") == 9 for ln in table)  # 8 cells a line, | escaped
    wide = runner.invoke(
        app, ["compare", str(tmp_path / "a.csv"), str(tmp_path / "b.csv")], env={"COLUMNS": "3000"}
    )
    assert "[bold]rich[/bold]" in wide.stdout  # rich markup in a label is printed, not applied
    assert sum("forged" in ln for ln in wide.stdout.splitlines()) == 4  # a newline starts no line of its own


def test_a_large_comparison_prints_a_summary_unless_asked(tmp_path: Path) -> None:
    header, rows = read_rows(FIX / "nosamples.csv")
    many = [
        {
            **r,
            "param_seq_len": str(s),
            "config_key": f"{r['config_key']}-{s}",
            "time_median_ms": str(10.0 + s),
        }
        for r in rows
        for s in range(15)
    ]
    (tmp_path / "a.csv").write_text(csv_text(header, many))
    slower = [
        {**r, "run_id": "b", "time_median_ms": str(float(r["time_median_ms"]) * (2 if i == 37 else 1))}
        for i, r in enumerate(many)
    ]
    (tmp_path / "b.csv").write_text(csv_text(header, slower))
    r = invoke(tmp_path / "a.csv", tmp_path / "b.csv")

    def table_rows(text: str) -> int:
        return sum(ln.strip().startswith("attention") for ln in text.splitlines())

    assert r.exit_code == 0 and "showing 40 of 60 configurations" in r.stdout.replace("\n", " ")
    assert table_rows(r.stdout) == 40 and "verdicts: 60 inconclusive" in r.stdout
    everything = invoke(tmp_path / "a.csv", tmp_path / "b.csv", "--all")
    assert "showing" not in everything.stdout and table_rows(everything.stdout) == 60
    out = tmp_path / "full.md"
    invoke(tmp_path / "a.csv", tmp_path / "b.csv", "--format", "markdown", "--out", out)
    assert sum(ln.startswith("| attention") for ln in out.read_text().splitlines()) == 60  # files are whole


BAD_JSON = {
    "benchmarks_not_objects": {"benchmarks": [1, "x"]},
    "stats_not_an_object": {"benchmarks": [{"name": "b", "stats": [1]}]},
    "data_of_text": {"benchmarks": [{"name": "b", "stats": {"median": 0.1, "data": ["a"]}}]},
    "negative_median": {"benchmarks": [{"name": "b", "stats": {"median": -1}}]},
    "env_a_list": {
        "benchmarks": [
            {
                "name": "b",
                "stats": {"median": 0.1},
                "extra_info": {"dlbench": {"config": {"scenario": "a"}, "env": [1]}},
            }
        ]
    },
}


@pytest.mark.parametrize("case", [*BAD_JSON, "deep_nesting", "huge_integer"])
def test_pytest_benchmark_json_of_any_shape_gives_no_traceback(case: str, tmp_path: Path) -> None:
    p = tmp_path / "bench.json"
    if case == "deep_nesting":
        p.write_text('{"benchmarks": ' + "[" * 100_000 + "]" * 100_000 + "}")
    elif case == "huge_integer":
        p.write_text('{"benchmarks": [{"name": "b", "stats": {"median": ' + "9" * 5000 + "}}]}")
    else:
        p.write_text(json.dumps(BAD_JSON[case]))
    r = invoke(p, p.with_name("other.json"))
    assert (
        r.exit_code == 2
        and "Traceback" not in r.output
        and r.exception is None
        or isinstance(r.exception, SystemExit)
    )
    if case == "env_a_list":  # a well-formed benchmark with an odd env block is read, not refused
        q = tmp_path / "b2.json"
        q.write_text(json.dumps(BAD_JSON[case]))
        assert invoke(p, q).exit_code == 0
    else:
        assert str(p) in one_error_line(r)
