"""``bench.results.loader``: one set of checks for every reader; compare and report refuse the same rows.

Each bad file is a fixture CSV (tests/fixtures/compare) with one cell changed; the loader must name
the file, the line and the column, and compare and report (which read through it) must refuse it
with exit 2 and one line, before any figure is drawn.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.errors import UsageError
from bench.report.build import load_report_rows
from bench.results.compare import compare
from bench.results.loader import ResultsInputError, load_results, read_results, read_results_files
from tests.bench.results_helpers import FIX, csv_text, read_rows, variant

runner = CliRunner()
BASE = FIX / "base.csv"


def test_bom_and_crlf_read_like_the_plain_file(tmp_path: Path) -> None:
    plain = read_results(BASE)
    text = BASE.read_text(encoding="utf-8").replace("\n", "\r\n")
    odd = tmp_path / "odd.csv"
    odd.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    (tmp_path / "odd.samples.jsonl").write_text((FIX / "base.samples.jsonl").read_text())
    table = read_results(odd)
    assert table.header == plain.header and table.columns == plain.columns and table.notes == []
    a = compare([str(BASE)], [str(FIX / "slow.csv")])
    b = compare([str(odd)], [str(FIX / "slow.csv")])
    assert [(p.label, p.verdict, p.estimate.ratio) for p in a.pairs] == [
        (p.label, p.verdict, p.estimate.ratio) for p in b.pairs
    ]


def test_a_torn_last_row_is_dropped_with_a_note_and_a_short_row_inside_is_an_error(tmp_path: Path) -> None:
    text = BASE.read_text(encoding="utf-8")
    last = text.splitlines()[-1]
    torn = tmp_path / "torn.csv"
    torn.write_text(text + last[: len(last) // 2])  # a writer killed mid-line: no trailing newline
    table = read_results(torn)
    assert len(table) == 4 and "line 6: the last row is cut short" in table.notes[0]
    assert len(load_report_rows([torn])) == 4  # the report reads the same rows, not the torn one
    whole = tmp_path / "whole.csv"
    whole.write_text(text + last.replace("base-1", "base-2"))  # saved without a final newline: kept
    assert len(read_results(whole)) == 5 and read_results(whole).notes == []
    lines = text.splitlines()
    inside = tmp_path / "inside.csv"
    inside.write_text("\n".join([*lines[:2], lines[2][:40], *lines[3:]]) + "\n")
    with pytest.raises(ResultsInputError, match=r"inside\.csv: line 3: \d+ fields, the header has \d+"):
        read_results(inside)


BAD_CELLS = [
    ("schema_version", "99", "schema_version 99 is not one this dlbench reads"),
    ("schema_version", "", "every row carries its schema_version"),
    ("status", "fine", "status 'fine' is not one of"),
    ("time_median_ms", "-3.5", "negative"),
    ("time_median_ms", "inf", "not a finite number"),
    ("time_median_ms", "nan", "not a finite number"),
    ("time_median_ms", "", "an ok row needs a positive median step time"),
    ("time_median_ms", "0", "an ok row needs a positive median step time"),
    ("time_median_ms", "fast", "is not a number"),
    ("peak_mem_bytes", "-1048576", "negative"),
    ("flops_per_step", "-1", "negative"),
    ("flops_per_step", "1.5", "not a whole number"),
    ("throughput", "-10", "negative"),
    ("noisy", "maybe", "is not True or False"),
    ("extra", "[" * 50_000 + "]" * 50_000, "not a JSON object"),  # nested past Python's recursion limit
]


@pytest.mark.parametrize(("column", "value", "message"), BAD_CELLS)
def test_a_bad_cell_is_named_by_file_line_and_column_and_refused_by_compare_and_report(
    column: str, value: str, message: str, tmp_path: Path
) -> None:
    bad = variant(BASE, tmp_path / "bad.csv", lambda i, r: {**r, column: value} if i == 2 else r)
    with pytest.raises(ResultsInputError) as exc:
        read_results(bad)
    text = str(exc.value)
    assert text.startswith(f"{bad}: line 4, column {column}: ") and message in text and "\n" not in text
    for args in (
        ["compare", str(bad), str(FIX / "slow.csv")],
        ["report", str(bad), "-o", str(tmp_path / "r")],
    ):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert r.stderr.count("\n") == 1 and f"line 4, column {column}" in r.stderr
    assert not (tmp_path / "r").exists()


def test_repeated_rows_are_one_process_and_do_not_narrow_the_ci(tmp_path: Path) -> None:
    # the audit's case: one run's rows twice became a "between-process" CI of [1.082, 1.082], p < 1e-4
    twice = tmp_path / "twice.csv"
    header, rows = read_rows(BASE)
    twice.write_text(csv_text(header, rows + rows))
    (tmp_path / "twice.samples.jsonl").write_text((FIX / "base.samples.jsonl").read_text())
    table = read_results(twice)
    assert len(table) == 4 and "4 row(s) repeat an earlier row (same run_id and config_key)" in table.notes[0]
    once = compare([str(BASE)], [str(FIX / "slow.csv")])
    dup = compare([str(twice)], [str(FIX / "slow.csv")])
    for a, b in zip(once.pairs, dup.pairs, strict=True):
        assert (
            b.estimate.method == a.estimate.method == "bootstrap-samples" and b.ci_covers == "within-process"
        )
        assert (b.estimate.ci_low, b.estimate.ci_high, b.verdict) == (
            a.estimate.ci_low,
            a.estimate.ci_high,
            a.verdict,
        )
    assert any("repeat an earlier row" in n for n in dup.notes)
    # a copy of the same run under another name: the same processes, not new ones: refused
    copy = variant(BASE, tmp_path / "copy.csv")
    with pytest.raises(ResultsInputError, match="copy.csv: every row repeats a row already read"):
        compare([str(BASE), str(copy)], [str(FIX / "slow.csv")])
    # partly the same run: the repeated rows count once
    part = variant(BASE, tmp_path / "part.csv", lambda i, r: r if i < 2 else {**r, "run_id": "other-run"})
    mixed = compare([str(BASE), str(part)], [str(FIX / "slow.csv")])
    assert [p.estimate.method for p in mixed.pairs] == ["bootstrap-samples"] * 2 + ["repeats"] * 2
    assert [p.estimate.n_base for p in mixed.pairs][2:] == [2, 2]


@pytest.mark.parametrize("how", ["twice", "symlink", "hardlink", "dotdot", "folder_and_file", "both_sides"])
def test_the_same_file_given_twice_is_refused(how: str, tmp_path: Path) -> None:
    local = variant(BASE, tmp_path / "base.csv")
    (tmp_path / "sub").mkdir()
    other = {
        "twice": local,
        "symlink": tmp_path / "link.csv",
        "hardlink": tmp_path / "hard.csv",
        "dotdot": tmp_path / "sub" / ".." / "base.csv",
        "folder_and_file": tmp_path,
        "both_sides": local,
    }[how]
    if how == "symlink":
        other.symlink_to(local)
    if how == "hardlink":
        os.link(local, other)
    if how == "both_sides":
        args = ["compare", str(local), str(local)]
    else:
        args = ["compare", str(local), str(other), "--new", str(FIX / "slow.csv")]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "given twice" in r.stderr and "Traceback" not in r.output, r.output
    with pytest.raises(UsageError, match="given twice"):
        load_report_rows([local, other if how != "folder_and_file" else local])


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "results.csv"
    os.mkfifo(fifo)
    done: list[object] = []

    def read() -> None:
        try:
            read_results(fifo)
        except ResultsInputError as exc:
            done.append(exc)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    assert done and "not a regular file" in str(done[0])
    r = runner.invoke(app, ["compare", str(fifo), str(BASE)])
    assert r.exit_code == 2 and "not a regular file" in r.stderr


def test_unknown_columns_of_the_current_schema_are_kept_and_not_checked(tmp_path: Path) -> None:
    newer = variant(
        BASE, tmp_path / "newer.csv", extra_columns={"energy_j_per_step": "0.25", "compile": "none"}
    )
    table = read_results(newer)
    assert table.columns["energy_j_per_step"] == ["0.25"] * 4
    df = load_results(newer)
    assert df["energy_j_per_step"].tolist() == [0.25] * 4 and str(df["mem_params_bytes"].dtype) == "Int64"
    c = compare([str(newer)], [str(FIX / "slow.csv")])
    assert c.counts == {"same": 3, "slower": 1}


def test_files_read_as_a_set_share_the_duplicate_check(tmp_path: Path) -> None:
    copy = variant(BASE, tmp_path / "copy.csv")
    a, b = read_results_files([BASE, copy])
    assert len(a) == 4 and len(b) == 0 and "base.csv line" in b.notes[0]
