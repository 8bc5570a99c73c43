"""pytest-benchmark interop: reading its JSON, dlbench's scenarios as benchmarks, comparing what they save."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.results.compare import CompareInputError, compare
from bench.results.pytest_benchmark import PytestBenchmarkError, read_pytest_benchmark

ROOT = Path(__file__).resolve().parents[2]


def _doc(benchmarks):
    return {"machine_info": {"cpu": {"brand_raw": "Some CPU"}}, "commit_info": {}, "benchmarks": benchmarks,
            "datetime": "2026-01-01T00:00:00", "version": "5.3.1"}  # fmt: skip


def _bench(name, times_s):
    s = sorted(times_s)
    return {"group": None, "name": name, "fullname": f"tests/test_x.py::{name}", "params": None,
            "extra_info": {}, "options": {}, "stats": {"median": s[len(s) // 2], "rounds": len(s),
            "iterations": 1, "data": list(times_s)}}  # fmt: skip


def test_read_a_plain_pytest_benchmark_file_and_compare_by_name(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    base = [0.010 * (1 + 0.001 * (i % 7)) for i in range(41)]
    a.write_text(json.dumps(_doc([_bench("test_sum", base), _bench("test_only_a", base)])))
    b.write_text(json.dumps(_doc([_bench("test_sum", [x * 1.5 for x in base])])))
    bf = read_pytest_benchmark(a)
    assert bf.cpu_model == "Some CPU" and [r.name for r in bf.benchmarks] == ["test_sum", "test_only_a"]
    assert bf.benchmarks[0].median_ms == pytest.approx(sorted(base)[20] * 1e3)
    assert len(bf.benchmarks[0].samples_ms) == 41
    pairs = {p.label: p for p in compare([a], [b]).pairs}
    assert pairs["tests/test_x.py::test_sum"].verdict == "slower"
    assert pairs["tests/test_x.py::test_sum"].estimate.ratio == pytest.approx(1.5)
    assert pairs["tests/test_x.py::test_only_a"].verdict == "missing"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty file"),
        ("{", "not valid JSON"),
        ('{"results": []}', "not a pytest-benchmark JSON file"),
        ('{"benchmarks": []}', "no benchmarks"),
        ('{"benchmarks": [{"name": "x"}]}', "no 'name' and 'stats'"),
        ('{"benchmarks": [{"name": "x", "stats": {"median": -1}}]}', "stats.median"),
        ('{"benchmarks": [{"name": "x", "stats": {"median": 1, "data": ["a"]}}]}', "stats.data"),
    ],
)
def test_bad_pytest_benchmark_files(tmp_path, text, message):
    p = tmp_path / "x.json"
    p.write_text(text)
    with pytest.raises(PytestBenchmarkError, match=message):
        read_pytest_benchmark(p)
    with pytest.raises(CompareInputError, match=message):
        compare([p], [p])


def _run_benchmarks(out: Path) -> None:
    env = {**os.environ, "DLBENCH_BENCH_DEVICE": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench/benchmarks", "-k", "attention", "--benchmark-json", str(out),
         "--benchmark-min-rounds", "3", "--benchmark-max-time", "0.2", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_round_trip_real_benchmarks_then_compare(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    _run_benchmarks(a)
    _run_benchmarks(b)
    d = json.loads(a.read_text())
    assert {x["name"] for x in d["benchmarks"]} == {
        "test_scenario[attention-forward-fp32]", "test_scenario[attention-train-fp32]",
    }  # fmt: skip
    for x in d["benchmarks"]:
        block = x["extra_info"]["dlbench"]
        assert x["group"] == "attention" and block["config"]["scenario"] == "attention"
        assert block["env"]["torch_version"] and block["items_per_step"] > 0 and block["unit"] == "tokens"
        assert len(x["stats"]["data"]) >= 3
    c = compare([a], [b])
    assert {p.label for p in c.pairs} == {"attention forward fp32", "attention train fp32"}
    for p in c.pairs:
        assert p.estimate.method == "bootstrap-samples" and p.ci_covers == "within-process"
        assert p.verdict in ("faster", "slower", "same", "inconclusive")
        assert p.unit == "ms" and p.base_value > 0
    thr = compare([a], [b], metric="throughput").pairs[0]
    assert thr.unit == "tokens/s" and thr.base_value > 0

    from bench.cli import app

    r = CliRunner().invoke(app, ["compare", str(a), str(b), "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["pairs"][0]["label"].startswith("attention ")

    # a dlbench run of the same configuration matches the pytest-benchmark one by configuration
    import bench.api as api

    csv = tmp_path / "run.csv"
    s = api.run("attention", preset="tiny", modes="forward", device="cpu", out=csv, isolation=False,
                max_time_s=0.05, target_rel_ci=0.5, progress=False)  # fmt: skip
    assert s.exit_code == 0
    # (this test process runs torch with 1 thread, the benchmark subprocess with the default)
    pairs = {p.label: p for p in compare([csv], [a], allow_env_mismatch=True).pairs}
    assert pairs["attention forward fp32"].verdict in ("faster", "slower", "same", "inconclusive")
    assert pairs["attention train fp32"].verdict == "new"
