"""``dlbench run --repeat R``: R processes per configuration, round-robin, one hierarchical row each."""

from __future__ import annotations

import statistics

import pytest

import bench.api as api
from bench import results
from bench.errors import UsageError
from bench.run import execute as ex
from bench.run.request import RunRequest
from bench.stats.compare import hierarchical_summary

FAST = {"device": "cpu", "max_time_s": 0.05, "target_rel_ci": 0.5, "progress": False}


def _recording_runner(monkeypatch, calls, *, fail_at: int | None = None, interrupt_at: int | None = None):
    """Replace the child runner: record (config key) in call order, measure in this process instead."""

    def runner(cfg, options, *, device_name=None):
        calls.append(cfg.key)
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise KeyboardInterrupt
        if fail_at is not None and len(calls) == fail_at:
            return ex.Outcome("error", "RuntimeError: planted", elapsed_s=0.5)
        return ex.run_in_process(cfg, options, device_name=device_name)

    monkeypatch.setattr(ex, "run_in_child", runner)


def test_round_robin_order_one_row_per_config_and_per_repeat_records(tmp_path, monkeypatch):
    calls: list[str] = []
    _recording_runner(monkeypatch, calls)
    out = tmp_path / "r.csv"
    s = api.run("_linear", modes="forward,train", params={"in_features": [16, 32]}, repeat=3, out=out, **FAST)
    assert s.exit_code == 0, s.rows
    keys = [c.key for c in s.configs]
    assert len(keys) == 4
    assert calls == keys * 3  # every configuration once, then again, then again
    df = results.load_results(out)
    assert len(df) == 4 and list(df["config_key"]) == keys
    assert set(df["ci_covers"]) == {"between-process"} and set(df["repeats"]) == {3}
    recs = {r["config_key"]: r for r in results.load_samples(out)}
    for _, row in df.iterrows():
        reps = recs[row["config_key"]]["repeats"]
        assert [r["repeat"] for r in reps] == [1, 2, 3]
        for r in reps:
            assert {"median_ms", "ci_low_ms", "ci_high_ms", "n", "samples_ms"} <= set(r)
            assert r["n"] == len(r["samples_ms"]) and r["median_ms"] == statistics.median(r["samples_ms"])
        center, lo, hi = hierarchical_summary([r["samples_ms"] for r in reps])
        assert row["time_median_ms"] == pytest.approx(center) and row["time_ci_low_ms"] == pytest.approx(lo)
        assert row["time_ci_high_ms"] == pytest.approx(hi)
        assert row["n_samples"] == sum(r["n"] for r in reps)
        assert len(recs[row["config_key"]]["samples_ms"]) == row["n_samples"]  # pooled
        assert row["mem_params_bytes"] > 0 and row["flops_per_step"] > 0  # from the first repeat


def test_repeat_2_in_real_child_processes(tmp_path):
    out = tmp_path / "c.csv"
    s = api.run("_linear", modes="forward", repeat=2, out=out, **FAST)
    assert s.exit_code == 0, s.rows
    df = results.load_results(out)
    assert len(df) == 1 and df["ci_covers"][0] == "between-process" and df["repeats"][0] == 2
    (rec,) = results.load_samples(out)
    assert len(rec["repeats"]) == 2 and all(r["n"] > 0 for r in rec["repeats"])
    assert rec["timing"]["method"] == "hierarchical"


def test_failed_repeat_writes_the_failed_row_and_leaves_later_rounds(tmp_path, monkeypatch):
    calls: list[str] = []
    _recording_runner(monkeypatch, calls, fail_at=3)  # the first config's second repeat fails
    out = tmp_path / "f.csv"
    s = api.run("_linear", modes="forward,train", repeat=3, out=out, **FAST)
    a, b = (c.key for c in s.configs)
    assert calls == [a, b, a, b, b]
    df = results.load_results(out)
    assert list(df["status"]) == ["error", "ok"]  # written in the order they finished
    assert df["reason"][0].startswith("repeat 2/3: RuntimeError: planted")
    assert df["config_key"][0] == a and df["repeats"][1] == 3
    failed = next(r for r in results.load_samples(out) if r["config_key"] == a)
    assert len(failed["repeats"]) == 1 and failed["samples_ms"] == []  # the repeat that did finish


def test_a_killed_sweep_never_keeps_a_half_aggregated_row(tmp_path, monkeypatch):
    calls: list[str] = []
    _recording_runner(monkeypatch, calls, interrupt_at=3)  # Ctrl-C as round 2 starts
    out = tmp_path / "k.csv"
    with pytest.raises(KeyboardInterrupt):
        api.run("_linear", modes="forward,train", repeat=2, out=out, **FAST)
    assert len(results.load_results(out)) == 0 and results.load_samples(out) == []
    # killed during the second configuration's last repeat: the first one's row is complete and kept
    calls.clear()
    _recording_runner(monkeypatch, calls, interrupt_at=4)
    with pytest.raises(KeyboardInterrupt):
        api.run("_linear", modes="forward,train", repeat=2, out=out, **FAST)
    df = results.load_results(out)
    assert len(df) == 1 and df["mode"][0] == "forward" and df["repeats"][0] == 2
    assert len(results.load_samples(out)[0]["repeats"]) == 2
    # --resume measures the rest, all its repeats
    calls.clear()
    _recording_runner(monkeypatch, calls)
    s = api.run("_linear", modes="forward,train", repeat=2, out=out, resume=True, **FAST)
    assert s.exit_code == 0 and len(calls) == 2 and len(set(calls)) == 1
    assert list(results.load_results(out)["mode"]) == ["forward", "train"]


def test_repeat_1_is_the_single_process_path(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("repeat=1 must not take the repeated path")

    monkeypatch.setattr(ex, "_execute_repeated", boom)
    out = tmp_path / "one.csv"
    s = api.run("_linear", modes="forward", isolation=False, out=out, **FAST)
    assert s.exit_code == 0
    df = results.load_results(out)
    assert df["ci_covers"][0] == "within-process" and df["repeats"][0] == 1
    assert "repeats" not in results.load_samples(out)[0]


def test_no_isolation_repeats_say_between_run(tmp_path):
    out = tmp_path / "ni.csv"
    s = api.run("_linear", modes="forward", isolation=False, repeat=2, out=out, **FAST)
    assert s.exit_code == 0
    assert results.load_results(out)["ci_covers"][0] == "between-run"


def test_repeat_option_is_checked():
    assert RunRequest.build({"repeat": "3"}).repeat == 3
    assert RunRequest().repeat == 1
    with pytest.raises(UsageError, match="--repeat"):
        RunRequest.build({"repeat": 0})
    assert RunRequest.sweep_keys("options")["repeat"] == "repeat"
    from typer.testing import CliRunner

    from bench.cli import app

    r = CliRunner().invoke(app, ["run", "_linear", "--repeat", "0", "--device", "cpu"])
    assert r.exit_code == 2 and "--repeat" in r.output
    assert "--repeat" in CliRunner().invoke(app, ["run", "--help"]).output


def test_repeated_timing_flags_a_wide_between_process_ci():
    from bench.harness.timing import TimingResult

    reps = [TimingResult([1.0] * 20, 3, "ci_target", 0.02), TimingResult([1.5] * 20, 3, "time_cap", 0.02)]
    t = ex.RepeatedTiming(reps, 0.02)
    # two processes: the CI is the range of their medians (never wider), flagged for its coverage
    assert t.median_ms == 1.25 and (t.ci_low_ms, t.ci_high_ms) == (1.0, 1.5)
    assert t.noisy and "covers the median 50% of the time, not 95% (--repeat 6" in t.noisy_reasons[0]
    assert "between-process CI half-width" in t.noisy_reasons[1] and t.stop_reason == "time_cap"
    six = [TimingResult([1.0 + 0.001 * k] * 20, 3, "ci_target", 0.02) for k in range(6)]
    tight = ex.RepeatedTiming(six, 0.02)
    assert not tight.noisy and (tight.ci_low_ms, tight.ci_high_ms) == (1.0, 1.005)
