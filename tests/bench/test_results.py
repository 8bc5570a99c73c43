"""The results schema, the crash-safe CSV writer and the sweep-file format (no child processes)."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from bench import results
from bench.errors import UsageError
from bench.run.sweep import SweepError, load_sweep

REQUIRED = (
    "schema_version, run_id, timestamp, scenario, mode, precision, checkpointing, parallel, world_size, "
    "batch_size, device, device_name, torch_version, git_commit, status, reason, n_samples, time_median_ms, "
    "time_ci_low_ms, time_ci_high_ms, time_iqr_ms, throughput, throughput_unit, flops_per_step, "
    "achieved_tflops, peak_tflops_measured, mfu, peak_mem_bytes, mem_fwd_peak_bytes, mem_bwd_peak_bytes, "
    "mem_opt_peak_bytes, mem_params_bytes, mem_grads_bytes, mem_optimizer_bytes, mem_activations_bytes"
).split(", ")
ALSO = ["time_cv", "noisy", "preset", "mfu_datasheet", "peak_tflops_datasheet", "cuda_reserved_peak_bytes"]
ENV_KEYS = [
    "device", "device_name", "torch_version", "git_commit", "python_version", "os", "hostname", "cpu_model",
    "cpu_count", "threads", "cuda_version", "cudnn_version", "gpu_driver", "gpu_clock_sm_mhz",
    "gpu_clock_mem_mhz", "gpu_count", "allow_tf32",
]  # fmt: skip


def test_columns_required_order_then_params():
    cols = results.columns_for(["batch_size", "seq_len", "causal"])
    assert cols[: len(REQUIRED)] == REQUIRED
    for c in ALSO + ENV_KEYS + ["peak_rss_bytes", "stop_reason", "config_key"]:
        assert c in cols
    assert cols[-2:] == ["param_seq_len", "param_causal"]
    assert cols.count("batch_size") == 1
    assert len(cols) == len(set(cols))


def _row(i: int, **kw):
    return {
        "schema_version": results.SCHEMA_VERSION,
        "scenario": "s",
        "status": "ok",
        "config_key": f"k{i}",
        "batch_size": i,
        "time_median_ms": 1.5 + i,
        **kw,
    }


def test_writer_header_once_append_and_pandas(tmp_path):
    path = tmp_path / "sub" / "r.csv"
    cols = results.columns_for(["batch_size", "seq_len"])
    w = results.ResultsWriter(path, cols)
    assert pd.read_csv(path).empty  # header only: already a valid CSV
    first = _row(1, reason="line one\nline two", noisy=True, param_seq_len=8, mem_params_bytes=8192)
    w.append(first, {"samples_ms": [1.0, 2.0]})
    w2 = results.ResultsWriter(path, cols)  # reopening appends, no second header
    w2.append(_row(2, extra={"a": 1}), None)
    text = path.read_text()
    assert text.count("schema_version") == 1 and text.endswith("\n")
    df = results.load_results(path)
    assert list(df.columns) == cols
    assert df["batch_size"].tolist() == [1, 2]
    assert df["reason"][0] == "line one | line two"
    assert bool(df["noisy"][0]) and pd.isna(df["noisy"][1])
    assert str(df["mem_params_bytes"].dtype) == "Int64" and df["mem_params_bytes"][0] == 8192
    assert json.loads(df["extra"][1]) == {"a": 1}
    assert results.completed_keys(path) == {"k1", "k2"}
    samples = results.load_samples(path)
    assert samples == [{"run_id": None, "config_key": "k1", "samples_ms": [1.0, 2.0]}]
    assert results.samples_path_for(path).name == "r.samples.jsonl"


def test_writer_rejects_other_columns(tmp_path):
    path = tmp_path / "r.csv"
    w = results.ResultsWriter(path, results.columns_for(["batch_size", "seq_len"]))
    with pytest.raises(results.SchemaMismatchError, match="param_image_size"):
        w.append(_row(1, param_image_size=3))
    with pytest.raises(results.SchemaMismatchError, match="different column set"):
        results.ResultsWriter(path, results.columns_for(["batch_size", "image_size"]))
    assert path.read_text().count("\n") == 1  # nothing was written by the failed attempts


def test_torn_last_line_is_cut_on_reopen(tmp_path):
    path = tmp_path / "r.csv"
    cols = results.columns_for(["batch_size"])
    results.ResultsWriter(path, cols).append(_row(1))
    with path.open("a") as f:
        f.write("1,torn-row-without-newline")
    results.ResultsWriter(path, cols).append(_row(2))
    assert results.load_results(path)["config_key"].tolist() == ["k1", "k2"]


def test_config_key_ignores_param_order_and_names_everything():
    a = results.config_key(
        scenario="s", mode="train", precision="fp32", checkpointing="none", device="cpu",
        params={"b": 2, "a": True},
    )  # fmt: skip
    b = results.config_key(
        scenario="s", mode="train", precision="fp32", checkpointing="none", device="cpu",
        params={"a": True, "b": 2},
    )  # fmt: skip
    assert a == b == "s|train|fp32|none|cpu|cl=false|seed=0|a=true,b=2"
    c = results.config_key(
        scenario="s", mode="train", precision="fp32", checkpointing="none", device="cpu",
        params={"a": True, "b": 2}, seed=5,
    )  # fmt: skip
    assert c == "s|train|fp32|none|cpu|cl=false|seed=5|a=true,b=2"


def test_completed_keys_reads_old_keys_with_the_seed_column(tmp_path):
    path = tmp_path / "old.csv"
    cols = results.columns_for(["batch_size"])
    w = results.ResultsWriter(path, cols)
    w.append({"config_key": "s|train|fp32|none|cpu|cl=false|batch_size=4", "seed": 3})
    w.append({"config_key": "s|train|fp32|none|cpu|cl=true|seed=1|batch_size=4", "seed": 1})
    assert results.completed_keys(path) == {
        "s|train|fp32|none|cpu|cl=false|seed=3|batch_size=4",
        "s|train|fp32|none|cpu|cl=true|seed=1|batch_size=4",
    }


def test_default_out_path_and_latest(tmp_path):
    t = dt.datetime(2026, 11, 27, 14, 25, 1, tzinfo=dt.UTC)
    kw = {"torch_version": "2.11.0+cu128", "results_dir": tmp_path}
    p = results.default_out_path("attention", "cuda:1", now=t, **kw)
    assert p.name == "attention_cuda-1_torch2.11.0-cu128_20261127T142501.csv"
    assert results.latest_out_path("attention", "cuda:1", **kw) is None
    later = results.default_out_path("attention", "cuda:1", now=t + dt.timedelta(hours=1), **kw)
    p.write_text("x\n")
    later.write_text("x\n")
    (tmp_path / "attention_cuda-1_torch2.11.0-cu128_notes.csv").write_text("x\n")
    assert results.latest_out_path("attention", "cuda:1", **kw) == later
    name = results.default_out_path("attention", "cpu", torch_version="2.13.0+cpu").name
    assert re.fullmatch(r"attention_cpu_torch.+_\d{8}T\d{6}\.csv", name)


def test_sweep_file_format(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text(
        'scenario = "attention"\npreset = "tiny"\n[axes]\nmode = "train"\nprecision = ["fp32", "amp-bf16"]\n'
        "seq_len = [16, 32]\ncausal = true\n[options]\nmax_time_s = 1.0\nout = 'x.csv'\n"
    )
    sw = load_sweep(f)
    assert (sw.scenario, sw.preset, sw.modes, sw.precisions, sw.checkpointing) == (
        "attention", "tiny", ["train"], ["fp32", "amp-bf16"], None,
    )  # fmt: skip
    assert sw.params == {"seq_len": [16, 32], "causal": [True]}
    assert sw.options == {"max_time_s": 1.0, "out": "x.csv"}
    f.write_text('scenario = "attention"\n[options]\nmax_tme_s = 1\n')
    with pytest.raises(SweepError, match="max_tme_s"):
        load_sweep(f)
    f.write_text("[axes]\nmode = ['train']\n")
    with pytest.raises(SweepError, match="scenario"):
        load_sweep(f)
    with pytest.raises(SweepError, match="no such file"):
        load_sweep(tmp_path / "missing.toml")


def _documented_columns() -> list[str]:
    """Column names in results/README.md's schema section: table rows' first cells, the env paragraph."""
    text = (Path(__file__).resolve().parents[2] / "results" / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Schema") : text.index("### Scenario parameters")]
    cols: list[str] = []
    env = section[section.index("### Environment") :]
    for line in section.splitlines():
        if line.startswith("| `"):
            cols += re.findall(r"`([a-z_0-9]+)`", line.split("|")[1])
    cols += [c for c in re.findall(r"`([a-z_0-9]+)`", env) if c not in cols]
    return cols


def test_header_of_a_real_run_matches_the_schema_table_and_its_docs(tmp_path):
    from bench import api

    out = tmp_path / "a.csv"
    s = api.run(
        "attention", amp=True, preset="tiny", device="cpu", out=out, isolation=False, max_time_s=0.05,
        progress=False,
    )  # fmt: skip
    assert s.exit_code == 0
    header = results.read_header(out)
    spec_params = api.list_scenarios()[0]["parameters"]  # attention is first in name order
    assert header == results.columns_for(spec_params)
    # the core block is the documented contract, in this order (schema_version 1)
    assert header[:5] == ["schema_version", "run_id", "timestamp", "scenario", "mode"]
    params_in_header = [c for c in header if c.startswith(results.PARAM_PREFIX)]
    assert params_in_header == [results.param_column(p) for p in spec_params if p != "batch_size"]
    core_and_env = list(results.CORE_COLUMNS) + list(results.ENV_COLUMNS)
    documented = _documented_columns()
    assert sorted(documented) == sorted(core_and_env), (
        f"undocumented: {sorted(set(core_and_env) - set(documented))}; "
        f"documented but not written: {sorted(set(documented) - set(core_and_env))}"
    )
    assert set(results.COLUMN_TYPES) == set(core_and_env)
    df = results.load_results(out)
    for col in results.INT_COLUMNS:
        if col in df.columns and df[col].notna().any():
            assert str(df[col].dtype) == "Int64", col


def test_a_lock_file_that_cannot_be_written_stops_the_run_with_one_line(tmp_path, monkeypatch):
    # a full disk before the first row: writing the pid into <file>.lock used to end in a traceback
    import errno

    from bench.registry import get_scenario
    from bench.results import store
    from bench.run.plan import _open_writer

    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.os, "pwrite", full)
    out = tmp_path / "r.csv"
    with pytest.raises(
        results.ResultsLockError, match="cannot write the lock file .*No space left on device"
    ):
        results.ResultsWriter(out, results.columns_for(["batch_size"])).lock()
    with pytest.raises(UsageError, match=r"^--out: cannot write the lock file .*s\.csv\.lock: No space left"):
        _open_writer(get_scenario("_linear"), tmp_path / "s.csv")
    assert not store.ResultsWriter._held  # the lock was released, nothing is held
