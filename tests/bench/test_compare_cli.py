"""``dlbench compare``: spellings, formats, exit codes (0, 1 with --fail-on-regression, 2 on bad input)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli import app
from tests.bench.results_helpers import another_run

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "compare"
ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def f(name: str) -> str:
    return str(FIX / name)


def invoke(*args: str):
    return runner.invoke(app, ["compare", *args])


def test_base_new_table_and_exit_codes():
    r = invoke(f("base.csv"), f("slow.csv"))
    assert r.exit_code == 0, r.output
    assert "slower" in r.stdout and "1.30x slower" in r.stdout and "within-process" in r.stdout
    r = invoke(f("base.csv"), f("slow.csv"), "--fail-on-regression")
    assert r.exit_code == 1
    assert "REGRESSION: 1 configuration(s)" in r.stderr and "attention train fp32" in r.stderr
    r = invoke(f("base.csv"), f("same.csv"), "--fail-on-regression")
    assert r.exit_code == 0, r.output
    # a 30 % slowdown is not a regression beyond a 50 % threshold
    r = invoke(f("base.csv"), f("slow.csv"), "--fail-on-regression", "--threshold", "50%")
    assert r.exit_code == 0, r.output


def test_new_option_spelling_and_several_inputs_a_side(tmp_path):
    other = another_run("slow.csv", tmp_path)
    r = invoke(f("base.csv"), f("same.csv"), "--new", f("slow.csv"), "--new", other, "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["base"] == [f("base.csv"), f("same.csv")] and d["new"] == [f("slow.csv"), other]
    train = next(p for p in d["pairs"] if p["label"] == "attention train fp32")
    assert train["method"] == "repeats" and train["n_base"] == 2 and train["verdict"] == "slower"


def test_json_and_markdown_formats_and_out(tmp_path):
    r = invoke(f("base.csv"), f("slow.csv"), "--format", "json", "--threshold", "0.05")
    assert r.exit_code == 0
    d = json.loads(r.stdout)
    assert d["kind"] == "dlbench-compare" and d["threshold"] == 0.05
    slow = next(p for p in d["pairs"] if p["verdict"] == "slower")
    assert slow["label"] == "attention train fp32" and slow["memory_delta_bytes"] == 1_048_576
    r = invoke(f("base.csv"), f("slow.csv"), "--format", "markdown")
    assert r.exit_code == 0 and r.stdout.startswith("# dlbench compare") and "| **slower** |" in r.stdout
    out = tmp_path / "cmp.json"
    r = invoke(f("base.csv"), f("slow.csv"), "--format", "json", "--out", str(out))
    assert r.exit_code == 0 and f"wrote {out}" in r.stdout.replace("\n", "")
    assert json.loads(out.read_text())["pairs"][1]["verdict"] == "slower"
    txt = tmp_path / "cmp.txt"
    assert invoke(f("base.csv"), f("slow.csv"), "--out", str(txt)).exit_code == 0
    assert "1.30x slower" in txt.read_text()


def test_by_precision_one_file_mode():
    r = invoke(f("base.csv"), "--by", "precision", "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["by"] == {"axis": "precision", "base_value": "fp32"}
    summaries = {p["label"]: p["summary"] for p in d["pairs"]}
    assert summaries["attention forward amp-bf16"].startswith("2.00x faster [")
    assert summaries["attention train amp-bf16"].endswith("peak memory x0.55")
    r = invoke(f("base.csv"), "--by", "precision", "--base", "fp32")
    assert r.exit_code == 0 and "2.00x faster" in r.stdout and "each precision vs precision=fp32" in r.stdout


def test_env_mismatch_exit_2_then_allowed_and_labelled():
    r = invoke(f("base.csv"), f("env.csv"))
    assert r.exit_code == 2
    assert "torch_version" in r.stderr and "threads" in r.stderr and "--allow-env-mismatch" in r.stderr
    r = invoke(f("base.csv"), f("env.csv"), "--allow-env-mismatch")
    assert r.exit_code == 0 and "ENVIRONMENTS DIFFER: torch_version, threads" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["empty.csv", "base.csv"], "empty file"),
        (["header_only.csv", "base.csv"], "no result rows"),
        (["missing_columns.csv", "base.csv"], "missing column"),
        (["schema99.csv", "base.csv"], "schema_version 99"),
        (["does_not_exist.csv", "base.csv"], "no such file"),
        (["base.csv", "other.csv"], "nothing in common"),
        (["not_pytest.json", "base.csv"], "not a pytest-benchmark JSON file"),
        (["broken.json", "base.csv"], "not valid JSON"),
        (["base.csv"], "expected BASE NEW"),
        ([], "expected BASE NEW"),
        (["base.csv", "slow.csv", "--threshold", "5"], "--threshold"),
        (["base.csv", "slow.csv", "--format", "html"], "--format"),
        (["base.csv", "slow.csv", "--metric", "speed"], "--metric"),
        (["base.csv", "--by", "nope"], "unknown axis"),
        (["base.csv", "--by", "precision", "--new", "slow.csv"], "--by"),
        (["base.csv", "slow.csv", "--base", "fp32"], "--base goes with --by"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, message):
    r = invoke(*[f(a) if a.endswith((".csv", ".json")) else a for a in args])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], r.stderr
    assert r.stdout == ""
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_real_process_exit_2_and_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cli", "compare", f("empty.csv"), f("base.csv")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "empty file" in proc.stderr
