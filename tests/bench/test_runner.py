"""The runner end to end: child isolation (crash, timeout, OOM), crash-safe CSV, --resume, closed forms.

Child processes cost a torch import each (2-3 s on an idle 2-core machine), so each test starts as
few as it can, with the tiny test-only scenarios of ``bench.scenarios.testing`` and short time caps.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from bench import api, results
from bench.registry import get_scenario
from bench.run.grid import RunConfig, config_skip_reason, expand_grid, varying_params

FAST = {"max_time_s": 0.3, "target_rel_ci": 0.5, "progress": False, "device": "cpu"}
B, IN, OUT = 4, 64, 32  # _linear defaults


def test_grid_expansion_order_and_dedupe():
    spec = get_scenario("_linear")
    configs = expand_grid(
        spec,
        preset="default",
        modes=["forward", "train"],
        precisions=["fp32"],
        checkpointing=["none"],
        axes={"batch_size": [1, 2, 2], "in_features": [8]},
        device="cpu",
    )
    assert [(c.params_dict["batch_size"], c.mode) for c in configs] == [
        (1, "forward"), (1, "train"), (2, "forward"), (2, "train"),
    ]  # fmt: skip
    for c in configs:
        assert c.params_dict == {
            "batch_size": c.params_dict["batch_size"],
            "in_features": 8,
            "out_features": 32,
        }
    assert varying_params(configs) == ["batch_size"]
    assert len({c.key for c in configs}) == 4


def test_skip_reasons():
    spec = dataclasses.replace(get_scenario("_linear"), unsupported_modes={"forward": "training-only"})
    mk = dict(scenario="_linear", device="cpu", params=(("batch_size", 1),))
    assert config_skip_reason(
        spec, RunConfig(mode="forward", precision="fp32", checkpointing="none", **mk)
    ) == ("training-only")
    assert "CUDA" in config_skip_reason(
        spec, RunConfig(mode="train", precision="amp-fp16", checkpointing="none", **mk)
    )
    assert (
        config_skip_reason(spec, RunConfig(mode="train", precision="amp-bf16", checkpointing="none", **mk))
        is None
    )


def test_skipped_rows_start_no_child_and_exit_zero(tmp_path, monkeypatch):
    import bench.run.execute

    def no_child(*a, **k):
        raise AssertionError("a skipped configuration must not start a child")

    monkeypatch.setattr(bench.run.execute, "run_in_child", no_child)
    out = tmp_path / "skip.csv"
    s = api.run("_linear", modes="forward", precisions="amp-fp16", checkpointing="none,full", out=out, **FAST)
    assert [r["status"] for r in s.rows] == ["skipped", "skipped"] and s.exit_code == 0
    df = results.load_results(out)
    assert df["status"].tolist() == ["skipped", "skipped"]
    assert df["reason"].str.len().min() > 10 and df["time_median_ms"].isna().all()
    assert (
        (df["torch_version"].notna()).all()
        and (df["parallel"] == "none").all()
        and (df["world_size"] == 1).all()
    )


def test_crash_row_and_the_others_complete(tmp_path):
    out = tmp_path / "crash.csv"
    s = api.run("_crash", modes="forward", params={"where": ["build", "never"]}, out=out, **FAST)
    assert s.exit_code == 1
    df = results.load_results(out)
    crashed, fine = df.iloc[0], df.iloc[1]
    assert (crashed["status"], crashed["param_where"]) == ("error", "build")
    assert "SIGABRT" in crashed["reason"]
    assert math.isnan(crashed["time_median_ms"]) and crashed["device_name"] and crashed["hostname"]
    assert (fine["status"], fine["param_where"]) == ("ok", "never")
    assert fine["time_median_ms"] > 0 and fine["n_samples"] >= 1


def test_crash_in_process_is_an_error_row_not_an_abort(tmp_path):
    s = api.run("_crash", modes="forward", isolation=False, out=tmp_path / "c.csv", **FAST)
    assert [r["status"] for r in s.rows] == ["error"] and "refusing outside" in s.rows[0]["reason"]


def test_timeout_row(tmp_path):
    out = tmp_path / "t.csv"
    t0 = time.perf_counter()
    s = api.run("_sleep", modes="forward", timeout_s=1.5, out=out, **FAST)
    assert time.perf_counter() - t0 < 30
    assert s.exit_code == 1
    row = results.load_results(out).iloc[0]
    assert row["status"] == "timeout" and "1.5 s" in row["reason"]


def test_oom_row(tmp_path):
    s = api.run("_oom", modes="train", out=tmp_path / "o.csv", **FAST)
    assert s.rows[0]["status"] == "oom" and "OutOfMemoryError" in s.rows[0]["reason"] and s.exit_code == 1


def test_linear_closed_form_memory_and_flops_through_the_pipeline(tmp_path):
    out = tmp_path / "lin.csv"
    s = api.run("_linear", modes="forward,train", out=out, **FAST)
    assert s.exit_code == 0, s.rows
    df = results.load_results(out).set_index("mode")
    p_bytes = IN * OUT * 4
    fwd, train = df.loc["forward"], df.loc["train"]
    assert fwd["flops_per_step"] == 2 * B * IN * OUT
    assert fwd["mem_params_bytes"] == p_bytes
    assert train["mem_params_bytes"] == p_bytes
    assert train["mem_grads_bytes"] == p_bytes
    # AdamW: exp_avg and exp_avg_sq like the weight, plus one fp32 scalar `step` tensor
    assert train["mem_optimizer_bytes"] == 2 * p_bytes + 4
    for _, row in df.iterrows():
        median_s = row["time_median_ms"] / 1e3
        assert row["throughput"] == pytest.approx(B / median_s, rel=1e-9)
        assert row["throughput_unit"] == "samples/s"
        assert row["achieved_tflops"] == pytest.approx(row["flops_per_step"] / median_s / 1e12, rel=1e-9)
        assert row["mfu"] == pytest.approx(row["achieved_tflops"] / row["peak_tflops_measured"], rel=1e-9)
        assert row["time_ci_low_ms"] <= row["time_median_ms"] <= row["time_ci_high_ms"]
    samples = {r["config_key"]: r for r in results.load_samples(out)}
    for key, n in zip(df["config_key"], df["n_samples"], strict=True):
        assert len(samples[key]["samples_ms"]) == n and samples[key]["run_id"] == s.run_id


def _data_rows(path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def test_sigkill_mid_sweep_leaves_valid_csv_then_resume_finishes(tmp_path):
    out = tmp_path / "killed.csv"
    cmd = [sys.executable, "-m", "bench.cli", "run", "_linear", "--mode", "forward", "--batch-size", "1,2",
           "--device", "cpu", "--max-time", "0.3", "--target-ci", "0.5", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while _data_rows(out) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the sweep finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = results.load_results(out)
    assert len(before) == 1 and (before["status"] == "ok").all()

    s = api.run("_linear", modes="forward", params={"batch_size": [1, 2]}, out=out, resume=True, **FAST)
    assert s.resumed == 1 and len(s.rows) == 1 and s.exit_code == 0
    after = results.load_results(out)
    assert sorted(after["batch_size"]) == [1, 2] and after["config_key"].is_unique
    assert (after["status"] == "ok").all()


def test_resume_with_another_seed_runs_again(tmp_path, monkeypatch):
    # --resume matched on a key without the seed: seed-0 rows counted as done for --seed 5.
    from bench.run import execute as runner
    from bench.run.execute import Outcome

    monkeypatch.setattr(runner, "run_in_child", lambda cfg, options, device_name=None: Outcome("error", "x"))
    out = tmp_path / "seeds.csv"
    s0 = api.run("_linear", modes="forward", out=out, **FAST)
    assert len(s0.rows) == 1 and s0.rows[0]["seed"] == 0
    s5 = api.run("_linear", modes="forward", out=out, resume=True, seed=5, **FAST)
    assert s5.resumed == 0 and len(s5.rows) == 1 and s5.rows[0]["seed"] == 5
    again = api.run("_linear", modes="forward", out=out, resume=True, seed=5, **FAST)
    assert again.resumed == 1 and again.rows == []


def test_channels_last_param_and_flag_are_the_same_configuration():
    spec = get_scenario("resblock")
    kw = {"preset": "tiny", "modes": ["forward"], "precisions": ["fp32"], "checkpointing": ["none"]}
    (by_param,) = expand_grid(spec, axes={"channels_last": [True]}, device="cpu", **kw)
    (by_flag,) = expand_grid(spec, axes={}, device="cpu", channels_last=True, **kw)
    (neither,) = expand_grid(spec, axes={}, device="cpu", **kw)
    assert by_param.channels_last and by_flag.channels_last and not neither.channels_last
    assert by_param.params_dict["channels_last"] and by_flag.params_dict["channels_last"]
    assert by_param.key == by_flag.key != neither.key
    from bench.results import build_row
    from bench.run.execute import Outcome
    from bench.run.request import RunRequest

    cols = results.columns_for(spec.parameters())
    row = build_row(by_param, Outcome("skipped"), run_id="r", env={}, request=RunRequest(), columns=cols)
    assert row["channels_last"] is True and row["param_channels_last"] is True
