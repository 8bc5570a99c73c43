"""``bench.results.compare`` on synthetic results with known answers (tests/fixtures/compare).

The fixtures (``make_fixtures.py`` writes them, deterministically) plant: a 30 % slowdown of one
configuration with +1 MiB of peak memory, identical results, an environment change, failed / absent
/ new configurations, ``--repeat 5`` rows, and AMP rows beside fp32 (2x and 30/14x faster).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report.compare_format import pair_summary, to_json, to_markdown
from bench.results.compare import (
    VERDICTS,
    CompareInputError,
    EnvMismatchError,
    compare,
    compare_by,
    load_side,
    norm,
    parse_threshold,
)
from tests.bench.results_helpers import another_run

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "compare"
ROOT = Path(__file__).resolve().parents[2]


def f(name: str) -> str:
    return str(FIX / name)


def by_label(comparison):
    return {p.label: p for p in comparison.pairs}


def test_planted_30pct_slowdown_is_slower_and_the_rest_same():
    c = compare([f("base.csv")], [f("slow.csv")])
    pairs = by_label(c)
    assert set(pairs) == {f"attention {m} {p}" for m in ("forward", "train") for p in ("fp32", "amp-bf16")}
    slow = pairs["attention train fp32"]
    assert slow.verdict == "slower" and slow.regression
    assert slow.estimate.ratio == pytest.approx(1.3, rel=1e-12)  # the medians were planted exactly
    assert 1.25 < slow.estimate.ci_low < 1.3 < slow.estimate.ci_high < 1.35
    assert slow.estimate.method == "bootstrap-samples" and slow.ci_covers == "within-process"
    assert slow.base_value == pytest.approx(30.0) and slow.new_value == pytest.approx(39.0)
    assert slow.estimate.p_value < 1e-6
    for label, p in pairs.items():
        if label != "attention train fp32":
            assert p.verdict == "same", (label, p.to_dict())
    assert [p.label for p in c.regressions] == ["attention train fp32"]
    assert c.counts == {"same": 3, "slower": 1}


def test_identical_results_are_same_with_ratio_exactly_one():
    c = compare([f("base.csv")], [f("same.csv")])
    assert {p.verdict for p in c.pairs} == {"same"}
    for p in c.pairs:
        assert p.estimate.ratio == 1.0
        assert p.estimate.ci_low <= 1.0 <= p.estimate.ci_high
        assert p.memory_ratio == 1.0 and p.memory_delta_bytes == 0 and p.flops_ratio == 1.0


def test_memory_differences_are_exact():
    c = compare([f("base.csv")], [f("slow.csv")])
    p = by_label(c)["attention train fp32"]
    assert p.memory_base_bytes == 4_000_000 and p.memory_new_bytes == 4_000_000 + 1_048_576
    assert p.memory_delta_bytes == 1_048_576
    assert p.memory_ratio == (4_000_000 + 1_048_576) / 4_000_000
    # --metric memory: the exact method, CI = the point, any change beyond the threshold is real
    m = by_label(compare([f("base.csv")], [f("slow.csv")], metric="memory"))
    est = m["attention train fp32"].estimate
    assert est.method == "exact" and est.ci_low == est.ci_high == est.ratio == p.memory_ratio
    assert m["attention train fp32"].verdict == "slower"  # more memory: worse
    assert m["attention forward fp32"].verdict == "same"
    assert "+1,048,576 B" in to_markdown(c)


def test_throughput_and_mfu_flip_direction():
    for metric in ("throughput", "mfu"):
        p = by_label(compare([f("base.csv")], [f("slow.csv")], metric=metric))["attention train fp32"]
        assert p.estimate.ratio == pytest.approx(1 / 1.3, rel=1e-9), metric
        assert p.verdict == "slower", metric  # lower throughput / MFU is worse
    p = by_label(compare([f("base.csv")], [f("slow.csv")], metric="throughput"))["attention train fp32"]
    assert p.unit == "tokens/s" and p.base_value == pytest.approx(512 / 0.030)


def test_env_mismatch_is_refused_then_allowed_with_a_label():
    with pytest.raises(EnvMismatchError) as exc:
        compare([f("base.csv")], [f("env.csv")])
    assert {m["field"] for m in exc.value.fields} == {"torch_version", "threads"}
    assert "torch_version" in str(exc.value) and "threads" in str(exc.value) and "\n" not in str(exc.value)
    c = compare([f("base.csv")], [f("env.csv")], allow_env_mismatch=True)
    assert c.env_label == "ENVIRONMENTS DIFFER: torch_version, threads"
    d = json.loads(to_json(c))
    assert d["allow_env_mismatch"] is True
    assert {"field": "threads", "base": ["2"], "new": ["4"], "pairs": 4} in d["env_mismatch"]
    assert "ENVIRONMENTS DIFFER" in to_markdown(c)
    assert {p.verdict for p in c.pairs} == {"same"}


def test_by_precision_table_values():
    c = compare_by([f("base.csv")], "precision")
    assert c.by == {"axis": "precision", "base_value": "fp32"}
    pairs = by_label(c)
    assert set(pairs) == {"attention forward amp-bf16", "attention train amp-bf16"}
    fwd, train = pairs["attention forward amp-bf16"], pairs["attention train amp-bf16"]
    assert fwd.estimate.ratio == pytest.approx(0.5, rel=1e-12)
    assert train.estimate.ratio == pytest.approx(14 / 30, rel=1e-12)
    assert fwd.verdict == train.verdict == "faster"
    assert fwd.memory_ratio == 0.6 and train.memory_ratio == 0.55
    s = pair_summary(train.to_dict(), "time")
    assert s.startswith("2.14x faster [") and s.endswith("peak memory x0.55"), s
    lo, hi = (float(x) for x in s.split("[")[1].split("]")[0].split(","))
    assert lo < 30 / 14 < hi
    # the other way round: amp-bf16 as the base makes fp32 slower by the inverse
    back = by_label(compare_by([f("base.csv")], "precision", "amp-bf16"))
    assert back["attention forward fp32"].estimate.ratio == pytest.approx(2.0)
    assert back["attention forward fp32"].verdict == "slower"


def test_by_a_parameter_and_bad_axes():
    c = compare_by([f("mixed.csv")], "seq_len")
    assert c.by == {"axis": "seq_len", "base_value": "128"}
    p = by_label(c)["attention forward fp32 seq_len=256"]
    assert p.estimate.ratio == pytest.approx(2.0) and p.verdict == "slower"
    with pytest.raises(CompareInputError, match="unknown axis 'nope'.*seq_len"):
        compare_by([f("base.csv")], "nope")
    with pytest.raises(CompareInputError, match="--base: precision=fp16 is not in these results"):
        compare_by([f("base.csv")], "precision", "fp16")
    with pytest.raises(CompareInputError, match="every row has seq_len=128"):
        compare_by([f("base.csv")], "seq_len")


def test_failed_missing_and_new_configurations():
    pairs = by_label(compare([f("base.csv")], [f("mixed.csv")]))
    assert pairs["attention train fp32 seq_len=128"].verdict == "failed"
    assert "RuntimeError: boom" in pairs["attention train fp32 seq_len=128"].reason
    assert pairs["attention forward amp-bf16 seq_len=128"].verdict == "missing"
    assert pairs["attention forward fp32 seq_len=256"].verdict == "new"
    assert pairs["attention forward fp32 seq_len=128"].verdict == "same"


def test_repeats_give_a_between_process_ci():
    p = compare([f("rep_base.csv")], [f("rep_slow.csv")]).pairs[0]
    assert p.estimate.method == "repeats" and p.ci_covers == "between-process"
    assert p.estimate.n_base == p.estimate.n_new == 5
    assert p.estimate.ratio == pytest.approx(1.3, rel=1e-9)
    assert p.verdict == "slower"
    # one process against five: the spread of the single side is unknown -> unbounded, inconclusive
    one = compare([f("base.csv")], [f("rep_slow.csv")])
    q = by_label(one)["attention forward fp32"]
    assert q.estimate.method == "repeats" and q.estimate.ci_high == math.inf and q.verdict == "inconclusive"
    assert q.to_dict()["ci_high"] is None  # strict JSON: no Infinity


def test_several_files_a_side_are_processes(tmp_path):
    c = compare([f("base.csv"), f("same.csv")], [f("slow.csv"), another_run("slow.csv", tmp_path)])
    p = by_label(c)["attention train fp32"]
    assert p.estimate.method == "repeats" and p.estimate.n_base == 2 and p.estimate.n_new == 2
    assert p.estimate.ratio == pytest.approx(1.3)


def test_without_samples_no_ci_and_inconclusive(tmp_path):
    c = compare([f("nosamples.csv")], [another_run("nosamples.csv", tmp_path)])
    for p in c.pairs:
        assert p.verdict == "inconclusive" and p.ci_covers == "none" and p.estimate.ci_high == math.inf


@pytest.mark.parametrize(
    "name, message",
    [
        ("empty.csv", "empty file"),
        ("header_only.csv", "no result rows"),
        ("missing_columns.csv", "missing column"),
        ("schema99.csv", "schema_version 99"),
        ("not_pytest.json", "not a pytest-benchmark JSON file"),
        ("broken.json", "not valid JSON"),
        ("does_not_exist.csv", "no such file"),
    ],
)
def test_bad_inputs_raise_one_line(name, message):
    with pytest.raises(CompareInputError) as exc:
        compare([f(name)], [f("base.csv")])
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_nothing_in_common():
    with pytest.raises(CompareInputError, match="nothing in common.*attention.*resnet"):
        compare([f("base.csv")], [f("other.csv")])


def test_directories_of_csvs(tmp_path):
    d = tmp_path / "runs"
    d.mkdir()
    for name in ("base.csv", "base.samples.jsonl", "header_only.csv"):
        shutil.copy(FIX / name, d / name)
    side = load_side([d])
    assert len(side.results) == 4 and any("header_only.csv" in n for n in side.notes)
    c = compare([d], [f("slow.csv")])
    assert by_label(c)["attention train fp32"].verdict == "slower"
    (tmp_path / "void").mkdir()
    with pytest.raises(CompareInputError, match="without .csv or .json"):
        load_side([tmp_path / "void"])


def test_json_is_strict_and_has_the_contract_keys():
    d = json.loads(to_json(compare([f("base.csv")], [f("mixed.csv")])), parse_constant=lambda c: 1 / 0)
    assert d["kind"] == "dlbench-compare" and d["version"] == 1 and d["metric"] == "time"
    assert d["threshold"] == 0.05 and d["base"] == [f("base.csv")] and d["new"] == [f("mixed.csv")]
    for p in d["pairs"]:
        for k in ("label", "key", "verdict", "ratio", "ci_low", "ci_high", "p_value", "method", "base_value",
                  "new_value", "unit", "memory_ratio", "flops_ratio", "summary"):  # fmt: skip
            assert k in p, k
    assert {p["verdict"] for p in d["pairs"]} <= set(VERDICTS)


def test_markdown_says_what_the_ci_covers():
    md = to_markdown(compare([f("base.csv")], [f("slow.csv")]))
    assert "| attention train fp32 | **slower** | 1.30x slower [" in md
    assert "within-process" in md and "--repeat 5" in md


def test_threshold_and_norm_parsing():
    assert parse_threshold("5%") == pytest.approx(0.05) and parse_threshold("0.05") == 0.05
    assert parse_threshold(0.1) == 0.1 and parse_threshold("0%") == 0.0
    for bad in ("5", "abc", "150%", "-1%"):
        with pytest.raises(CompareInputError, match="--threshold"):
            parse_threshold(bad)
    assert norm("256.0") == norm(256) == "256" and norm(True) == norm("True") == "true" and norm(None) == ""


def test_compare_modules_import_neither_torch_nor_rich():
    code = (
        "import bench.results.compare, bench.results.pytest_benchmark, bench.report.compare_format, sys\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'rich', 'typer')]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_by_parallel_pairs_each_strategy_and_world_size_with_one_process(tmp_path: Path) -> None:
    """``--by parallel`` compares jobs across world sizes: the world size is not a match field there."""
    src = ROOT / "results" / "cpu" / "parallel.csv"
    lines = src.read_text().splitlines()
    header = next(csv.reader([lines[0]]))
    rows = [dict(zip(header, r, strict=True)) for r in csv.reader(lines[1:])]
    ddp = next(r for r in rows if r["mode"] == "train" and r["parallel"] == "ddp")
    ddp4 = {**ddp, "world_size": "4", "config_key": ddp["config_key"] + "|ws4"}
    ddp4["time_median_ms"] = str(2 * float(ddp["time_median_ms"]))
    for col in ("time_ci_low_ms", "time_ci_high_ms"):
        ddp4[col] = str(2 * float(ddp[col]))
    out = tmp_path / "p.csv"
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, header, lineterminator="\n")
        w.writeheader()
        w.writerows([*rows, ddp4])
    c = compare_by([str(out)], "parallel")
    assert c.by == {"axis": "parallel", "base_value": "none"}
    pairs = by_label(c)
    none = {m: float(next(r for r in rows if r["mode"] == m and r["parallel"] == "none")["time_median_ms"])
            for m in ("forward", "train")}  # fmt: skip
    expected = {
        f"encoder {r['mode']} fp32 parallel={r['parallel']} world_size={r['world_size']}": r
        for r in [*rows, ddp4]
        if r["parallel"] != "none"
    }
    assert set(pairs) == set(expected)
    for label, r in expected.items():
        p = pairs[label]
        if r["status"] != "ok":
            assert p.verdict == "missing", label
            continue
        assert p.base_value == pytest.approx(none[r["mode"]]) and p.new_value == pytest.approx(
            float(r["time_median_ms"])
        ), label
    assert pairs["encoder train fp32 parallel=ddp world_size=4"].new_value == pytest.approx(
        2 * pairs["encoder train fp32 parallel=ddp world_size=2"].new_value
    )
    # throughput: the job's (global batch / slowest rank), so DDP's ratio is its job's, not one rank's
    t = by_label(compare_by([str(out)], "parallel", metric="throughput"))
    ddp_row = next(r for r in rows if r["mode"] == "forward" and r["parallel"] == "ddp")
    one = next(r for r in rows if r["mode"] == "forward" and r["parallel"] == "none")
    assert float(ddp_row["job_throughput"]) != float(ddp_row["throughput"])  # the file tells them apart
    p = t["encoder forward fp32 parallel=ddp world_size=2"]
    expected_ratio = float(ddp_row["job_throughput"]) / float(one["throughput"])
    assert p.new_value / p.base_value == pytest.approx(expected_ratio)
