"""The ``dlbench`` CLI: help, list, env, exit codes 0/1/2 and fail-fast messages (CliRunner, in-process)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from typer.testing import CliRunner

from bench import results
from bench.cli import app

runner = CliRunner()
FAST = ["--device", "cpu", "--max-time", "0.3", "--target-ci", "0.5"]


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_help_lists_commands_and_run_options():
    r = invoke("--help")
    assert r.exit_code == 0
    for cmd in ("list", "run", "env"):
        assert cmd in r.output
    r = invoke("run", "--help")
    assert r.exit_code == 0
    for opt in ("--mode", "--precision", "--amp", "--checkpointing", "--batch-size", "--seq-len", "--param",
                "--preset", "--device", "--sweep", "--out", "--resume", "--timeout", "--target-ci",
                "--max-time", "--seed", "--no-isolation", "--channels-last"):  # fmt: skip
        assert opt in r.output, opt


def test_list_hides_test_only_scenarios_unless_all():
    r = invoke("list")
    assert r.exit_code == 0
    assert "_crash" not in r.output and "_linear" not in r.output
    r = invoke("list", "--all")
    assert "_linear" in r.output and "in_features=64" in r.output and "preset tiny" in r.output
    data = json.loads(invoke("list", "--all", "--json").output)
    lin = next(s for s in data if s["name"] == "_linear")
    assert lin["parameters"] == {"batch_size": 4, "in_features": 64, "out_features": 32} and lin["test_only"]


def test_env_text_and_json():
    r = invoke("env", "--device", "cpu")
    assert r.exit_code == 0 and "torch_version" in r.output
    fp = json.loads(invoke("env", "--device", "cpu", "--json").output)
    for key in results.ENV_COLUMNS + ("device", "device_name", "torch_version", "git_commit"):
        assert key in fp
    assert fp["torch_version"] == torch.__version__


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "_linaer"], "Did you mean '_linear'"),
        (["run", "_linear", "--precision", "fp8"], "--precision: unknown value 'fp8'"),
        (["run", "_linear", "--mode", "infer"], "--mode: unknown value 'infer'"),
        (["run", "_linear", "--checkpointing", "some"], "--checkpointing: unknown value 'some'"),
        (["run", "_linear", "--batch-size", "0"], "batch_size: must be a positive integer"),
        (["run", "_linear", "--batch-size", "-3"], "batch_size: must be a positive integer"),
        (["run", "_linear", "--batch-size", "two"], "batch_size: expected an integer"),
        # int fields with a positive default are sizes even without a size word in the name
        (["run", "encoder", "--param", "ffn_mult=0"], "ffn_mult: must be a positive integer"),
        (["run", "encoder", "--param", "ffn_mult=-2"], "ffn_mult: must be a positive integer"),
        (["run", "optimizer", "--param", "num_tensors=0"], "num_tensors: must be a positive integer"),
        # 0 is resnet width's own default ("as the arch defines"); negatives never are
        (["run", "resnet", "--width", "-1"], "width: must be a positive integer (or 0, its default)"),
        (["run", "attention", "--width", "0"], "width: must be a positive integer, got 0"),
        (["run", "_linear", "--seq-len", "8"], "no parameter 'seq_len'"),
        (["run", "_linear", "--param", "in_features"], "--param: expected key=value"),
        (["run", "_linear", "--param", "colour=red"], "no parameter 'colour'"),
        (["run", "_linear", "--preset", "huge"], "--preset: unknown preset 'huge'"),
        (["run", "_linear", "--device", "tpu"], "--device: unknown device 'tpu'"),
        (["run", "_linear", "--max-time", "0"], "--max-time: must be positive"),
        (["run", "_linear", "--timeout", "-1"], "--timeout: must be positive"),
        (["run", "_linear", "--target-ci", "2"], "--target-ci"),
        (["run", "_crash", "--param", "where=nowhere"], "invalid configuration"),
        (["run"], "give a scenario name"),
    ],
)
def test_bad_usage_exits_2_naming_the_problem(args, needle, tmp_path):
    r = invoke(*args, "--out", str(tmp_path / "x.csv"))
    assert r.exit_code == 2, r.output
    assert needle in r.output
    assert not (tmp_path / "x.csv").exists()  # nothing written before the input was checked


def test_width_zero_is_accepted_where_it_is_the_default(tmp_path) -> None:
    # resnet's width defaults to 0 ("as the arch defines"); the default preset sets 32, and
    # impl=timm needs width=0, so `--width 0` must pass validation.
    import importlib.util

    from bench import api

    impls = "dlcore,timm" if importlib.util.find_spec("timm") else "dlcore"
    plan = api.plan_run(
        "resnet",
        params={"width": "0", "impl": impls},
        device="cpu",
        out=tmp_path / "x.csv",
        modes="forward",
    )
    assert {c.params_dict["impl"] for c in plan.configs} == set(impls.split(","))
    assert {c.params_dict["width"] for c in plan.configs} == {0}
    plan.writer.unlock()


def test_missing_optional_package_exits_2_before_any_work(tmp_path, monkeypatch) -> None:
    # timm is installed with the test extras: hide it, as on a machine without it
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "timm" else find_spec(name, *a)
    )
    r = invoke("run", "resnet", "-p", "impl=timm", "--width", "0", "--out", str(tmp_path / "x.csv"))
    assert r.exit_code == 2 and "needs the timm package" in r.output
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_exits_2(tmp_path):
    r = invoke("run", "_linear", "--device", "cuda", "--out", str(tmp_path / "x.csv"))
    assert r.exit_code == 2 and "CUDA is not available" in r.output


def test_unwritable_or_foreign_output_exits_2(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    r = invoke("run", "_linear", "--out", str(blocker / "sub" / "x.csv"))
    assert r.exit_code == 2 and "--out: cannot write" in r.output
    r = invoke("run", "_linear", "--out", str(tmp_path))
    assert r.exit_code == 2 and "is a directory" in r.output
    other = tmp_path / "crash.csv"
    results.ResultsWriter(other, results.columns_for(["batch_size", "where"]))
    r = invoke("run", "_linear", "--out", str(other))
    assert r.exit_code == 2 and "different column set" in r.output


def test_sweep_file_of_skipped_configs_exits_0(tmp_path):
    sweep = tmp_path / "s.toml"
    out = tmp_path / "sweep.csv"
    sweep.write_text(
        'scenario = "_linear"\ndevice = "cpu"\n[axes]\nmode = ["forward"]\nprecision = ["amp-fp16"]\n'
        f'batch_size = [1, 2]\n[options]\nout = "{out}"\n'
    )
    r = invoke("run", "--sweep", str(sweep))
    assert r.exit_code == 0, r.output
    df = results.load_results(out)
    assert df["status"].tolist() == ["skipped", "skipped"] and df["batch_size"].tolist() == [1, 2]
    r = invoke("run", "_crash", "--sweep", str(sweep))
    assert r.exit_code == 2 and "is for scenario '_linear'" in r.output


def test_run_exit_0_and_summary_table(tmp_path):
    out = tmp_path / "ok.csv"
    r = invoke("run", "_linear", "--mode", "forward", "--no-isolation", *FAST, "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "median" in r.output and "ok" in r.output and str(out.name) in r.output
    assert results.load_results(out)["status"].tolist() == ["ok"]


def test_run_exit_1_when_a_configuration_fails(tmp_path):
    r = invoke("run", "_oom", "--mode", "forward", "--no-isolation", *FAST, "--out", str(tmp_path / "f.csv"))
    assert r.exit_code == 1, r.output
    assert "oom" in r.output
