"""Fault injection: results survive anything — no finished row lost, no file corrupted, no bad value run.

One test (or parametrized case) per defect class found by the robustness review, plus guards for
what already held: real signals to real processes, a real full filesystem (a small tmpfs, as root),
real concurrent processes.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from bench import api, results
from bench.cli import app

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--device", "cpu", "--max-time", "0.2", "--target-ci", "0.5"]
COLS = results.columns_for(["batch_size", "in_features", "out_features"])


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _row(**kw):
    base = {c: None for c in COLS}
    base.update(schema_version=1, run_id="r", scenario="_linear", status="ok", config_key="k")
    base.update(kw)
    return base


# --- torn-line repair: only what is provably torn --------------------------------------------


def test_complete_last_row_without_newline_is_kept(tmp_path):
    path = tmp_path / "r.csv"
    w = results.ResultsWriter(path, COLS)
    w.append(_row(config_key="a"))
    w.append(_row(config_key="b"))
    path.write_bytes(path.read_bytes().rstrip(b"\n"))  # an editor saved it without a final newline
    results.ResultsWriter(path, COLS).append(_row(config_key="c"))
    assert list(pd.read_csv(path)["config_key"]) == ["a", "b", "c"]


def test_header_only_file_without_newline_keeps_its_header(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text(",".join(COLS))
    results.ResultsWriter(path, COLS).append(_row(config_key="a"))
    df = pd.read_csv(path)
    assert list(df.columns) == COLS and list(df["config_key"]) == ["a"]


def test_torn_last_row_is_cut_and_nothing_else(tmp_path):
    path = tmp_path / "r.csv"
    w = results.ResultsWriter(path, COLS)
    w.append(_row(config_key="a"))
    with path.open("ab") as f:
        f.write(b'1,r2,2026,_linear,"half a reas')  # power loss mid-write
    results.ResultsWriter(path, COLS).append(_row(config_key="c"))
    assert list(pd.read_csv(path)["config_key"]) == ["a", "c"]


def test_torn_sidecar_line_is_cut_and_does_not_swallow_the_next_record(tmp_path):
    path = tmp_path / "r.csv"
    w = results.ResultsWriter(path, COLS)
    w.append(_row(config_key="a"), {"samples_ms": [1.0]})
    with w.samples_path.open("ab") as f:
        f.write(b'{"config_key": "torn", "samp')
    results.ResultsWriter(path, COLS).append(_row(config_key="b"), {"samples_ms": [2.0]})
    keys = [r["config_key"] for r in results.load_samples(path)]
    assert keys == ["a", "b"]


def test_complete_sidecar_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "r.csv"
    w = results.ResultsWriter(path, COLS)
    w.append(_row(config_key="a"), {"samples_ms": [1.0]})
    w.samples_path.write_bytes(w.samples_path.read_bytes().rstrip(b"\n"))
    results.ResultsWriter(path, COLS).append(_row(config_key="b"), {"samples_ms": [2.0]})
    assert [r["config_key"] for r in results.load_samples(path)] == ["a", "b"]


# --- the sidecar and the output checked before any work --------------------------------------


def test_sidecar_path_that_is_a_directory_exits_2_before_work(tmp_path):
    out = tmp_path / "x.csv"
    results.samples_path_for(out).mkdir()
    r = invoke("run", "_linear", "--mode", "forward", "--out", str(out), *FAST)
    assert r.exit_code == 2 and "samples" in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_non_utf8_results_file_exits_2_naming_it(tmp_path):
    out = tmp_path / "x.csv"
    out.write_bytes(",".join(COLS).encode() + b"\n\xff\xfe garbage\n")
    r = invoke("run", "_linear", "--mode", "forward", "--out", str(out), *FAST)
    assert r.exit_code == 2 and "UTF-8" in r.output and str(out) in r.output.replace("\n", "")


def test_file_pandas_cannot_parse_is_not_resumed_silently(tmp_path):
    out = tmp_path / "x.csv"
    out.write_text(",".join(COLS) + "\n" + "a,b,c\n")  # 3 fields under a 70-field header
    r = invoke("run", "_linear", "--mode", "forward", "--resume", "--out", str(out), *FAST)
    assert r.exit_code == 2 and "fields" in r.output


# --- a write error mid-sweep (disk full) -------------------------------------------------------


def _small_tmpfs(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "full"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    return mnt


def test_real_full_filesystem_leaves_nothing_torn(tmp_path):
    mnt = _small_tmpfs(tmp_path)
    try:
        path = mnt / "r.csv"
        w = results.ResultsWriter(path, COLS)
        w.append(_row(config_key="a"), {"samples_ms": [1.0] * 10})
        filler = mnt / "filler"
        with filler.open("wb", buffering=0) as f:  # fill the filesystem to the last byte
            for chunk in (4096, 1):
                try:
                    while True:
                        f.write(b"\0" * chunk)
                except OSError:
                    pass
        csv_before, side_before = path.read_bytes(), w.samples_path.read_bytes()
        with pytest.raises(results.ResultsWriteError, match="r.(csv|samples.jsonl)"):
            w.append(_row(config_key="b", reason="x" * 3000), {"samples_ms": [2.0] * 2000})
        assert path.read_bytes() == csv_before and w.samples_path.read_bytes() == side_before
        assert list(pd.read_csv(path)["config_key"]) == ["a"]
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_write_error_mid_sweep_is_one_line_exit_1(tmp_path, monkeypatch):
    import errno

    from bench.results import store

    real = store._append_durably
    calls = {"n": 0}

    def fails_on_the_second_row(path, data):
        if path.suffix == ".csv" and data.count(b"\n") == 1 and not data.startswith(b"schema_version"):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(store, "_append_durably", fails_on_the_second_row)
    out = tmp_path / "x.csv"
    r = invoke(
        "run",
        "_linear",
        "--mode",
        "forward",
        "--batch-size",
        "1,2,3",
        "--no-isolation",
        "--out",
        str(out),
        *FAST,
    )
    assert r.exit_code == 1, r.output
    assert (
        "No space left" in r.output and str(out) in r.output.replace("\n", "") and "Traceback" not in r.output
    )
    df = pd.read_csv(out)
    assert list(df["batch_size"]) == [1]  # the first row is kept, nothing torn
    assert [s["config_key"] for s in results.load_samples(out)] == list(df["config_key"])


# --- concurrency -----------------------------------------------------------------------------


def test_second_run_on_the_same_file_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "x.csv"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "run", "_sleep", "-p", "seconds=4", "--mode", "forward",
         "--out", str(out),
         *FAST],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        lock = out.with_name(out.name + ".lock")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (lock.exists() and lock.read_text().strip()):
            time.sleep(0.1)
        r = invoke(
            "run", "_sleep", "-p", "seconds=0", "--mode", "forward", "--resume", "--out", str(out), *FAST
        )
        assert r.exit_code == 2, r.output
        assert f"pid {first.pid}" in r.output.replace("\n", "")
    finally:
        first.kill()
        first.wait()


def test_default_file_names_differ_for_runs_in_the_same_second():
    import datetime as dt

    now = dt.datetime(2026, 12, 2, 12, 0, 0, tzinfo=dt.UTC)
    a = results.default_out_path("x", "cpu", torch_version="t", now=now, run_tag="aaaaaa")
    b = results.default_out_path("x", "cpu", torch_version="t", now=now, run_tag="bbbbbb")
    assert a != b and a.name.startswith("x_cpu_torcht_20261202T120000")


def _create(path: str, barrier) -> None:
    barrier.wait()
    results.ResultsWriter(path, COLS)


def test_concurrent_creators_write_one_header(tmp_path):
    ctx = mp.get_context("fork")
    for attempt in range(5):
        path = tmp_path / f"c{attempt}.csv"
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_create, args=(str(path), barrier)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        assert all(p.exitcode == 0 for p in procs)
        assert path.read_text().count("schema_version") == 1


# --- every option from every source through one typed path -------------------------------------


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ('channels_last = "yes"', "channels_last: expected true or false"),
        ('resume = "no"', "resume: expected true or false"),
        ("timeout_s = true", "timeout_s: expected a number"),
        ('max_time_s = "fast"', "max_time_s: expected a number"),
        ("seed = 1.5", "seed: expected an integer"),
    ],
)
def test_sweep_options_are_type_checked(tmp_path, options, needle):
    f = tmp_path / "s.toml"
    f.write_text(f'scenario = "_linear"\n[axes]\nmode = "forward"\n[options]\n{options}\n')
    r = invoke("run", "--sweep", str(f), "--out", str(tmp_path / "x.csv"), "--device", "cpu")
    assert r.exit_code == 2 and needle in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["resnet", "-p", "arch=resnet5O"], "arch: unknown dlcore ResNet 'resnet5O'"),
        (["encoder", "-p", "dropout=1.5"], "dropout: must be a probability"),
        (["optimizer", "-p", "lr=-1"], "lr: must be positive"),
        (["_linear", "--batch-size", str(2**70)], "within int64"),
        (["_linear", "--timeout", "nan"], "--timeout: expected a finite number"),
        (["_linear", "--max-time", "nan"], "--max-time: expected a finite number"),
        (["_linear", "--seq-len", "16", "-p", "seq_len=32"], "given twice"),
        (["encoder", "--seq-len", "16", "-p", "seq_len=32"], "seq_len: given twice"),
    ],
)
def test_what_a_builder_would_reject_exits_2_before_any_child(tmp_path, args, needle):
    out = tmp_path / "x.csv"
    r = invoke("run", args[0], *FAST, *args[1:], "--out", str(out))  # the value under test comes last
    assert r.exit_code == 2 and needle in r.output, r.output
    assert not out.exists()


def test_no_isolation_row_claims_no_timeout(tmp_path):
    out = tmp_path / "x.csv"
    r = invoke(
        "run", "_linear", "--mode", "forward", "--no-isolation", "--timeout", "2", "--out", str(out), *FAST
    )
    assert r.exit_code == 0, r.output
    assert pd.read_csv(out)["timeout_s"].isna().all()


def test_bad_peak_ttl_exits_2(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_PEAK_TTL_S", "abc")
    r = invoke("run", "_linear", "--mode", "forward", "--out", str(tmp_path / "x.csv"), *FAST)
    assert r.exit_code == 2 and "DLBENCH_PEAK_TTL_S" in r.output


def test_corrupt_peak_cache_is_ignored_rewritten_and_mfu_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("DLBENCH_CACHE_DIR", str(tmp_path))
    cache = tmp_path / "peaks.json"
    cache.write_text("[1, 2, 3]")  # valid JSON, not an object
    out = tmp_path / "x.csv"
    with pytest.warns(RuntimeWarning, match="not an object"):
        s = api.run(
            "_linear", modes="forward", out=out, device="cpu", max_time_s=0.2, isolation=False, progress=False
        )
    assert s.exit_code == 0
    assert isinstance(json.loads(cache.read_text()), dict)
    assert pd.read_csv(out)["mfu"].notna().all()


# --- nothing lost: a sweep, each fault in turn, every earlier row there exactly once -------------


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_nothing_lost_when_a_sweep_is_stopped_then_resumed(tmp_path, sig):
    out = tmp_path / "x.csv"
    cmd = [sys.executable, "-m", "bench.cli", "run", "_linear", "--mode", "forward",
           "--batch-size", "1,2,3,4,5,6",
           "--out", str(out), *FAST]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if out.exists() and out.read_text().count("\n") >= 3:  # header + 2 rows
            break
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.wait(30)
    before = pd.read_csv(out)
    assert len(before) >= 2 and before["config_key"].is_unique
    side = {s["config_key"] for s in results.load_samples(out)}
    assert set(before["config_key"]) <= side  # every row has its sidecar record
    r = subprocess.run([*cmd, "--resume"], cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stdout.decode()[-500:]
    after = pd.read_csv(out)
    assert sorted(after["batch_size"]) == [1, 2, 3, 4, 5, 6] and after["config_key"].is_unique
    kept = after.set_index("config_key").loc[before["config_key"], "time_median_ms"]
    assert list(kept) == list(before["time_median_ms"])  # the earlier rows, unchanged
    assert set(after["config_key"]) <= {s["config_key"] for s in results.load_samples(out)}
