"""Parallel scenarios in ``dlbench run``: grid, keys and rows (fast), then real torchrun jobs (gloo, CPU).

The numerics of the wrappers are ``dlcore``'s tests; here: launching through torchrun, merging the
ranks into one row, the job-level columns, a rank that raises / hangs (``error`` / ``timeout`` rows
within the timeout, the next configuration still runs), two launcher agents rendezvousing as two
nodes on 127.0.0.1, and no process left behind (every process a test starts carries a tag in its
environment; none may be alive afterwards). Each torchrun job costs a few seconds of start-up (the
agent and every rank import torch), so each test starts as few as it can, with tiny presets.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

from bench import api, results
from bench.errors import UsageError
from bench.registry import get_scenario
from bench.run.grid import RunConfig, auto_microbatches, config_skip_reason, expand_grid
from bench.run.request import RunRequest

ROOT = Path(__file__).resolve().parents[2]
FAST: dict[str, Any] = {
    "max_time_s": 0.3,
    "target_rel_ci": 0.5,
    "progress": False,
    "device": "cpu",
    "preset": "tiny",
    "modes": "train",
}
TAG = "DLBENCH_TEST_PARALLEL_TAG"


def _grid(scenario: str = "encoder", **kw: Any) -> list[RunConfig]:
    args: dict[str, Any] = dict(
        preset="tiny", modes=["train"], precisions=["fp32"], checkpointing=["none"], axes={}, device="cpu"
    )
    args.update(kw)
    return expand_grid(get_scenario(scenario), **args)


# --- grid, keys, skips, request: no process started ------------------------------------------------


def test_none_keeps_its_key_and_parallel_configurations_append_theirs() -> None:
    none, ddp, gp, fb = _grid(
        parallel=["none", "ddp", "pipeline"], nproc=2, pipeline_schedule=["gpipe", "1f1b"]
    )
    base = results.config_key(
        scenario="encoder", mode="train", precision="fp32", checkpointing="none", device="cpu",
        params=none.params_dict, channels_last=False, seed=0,
    )  # fmt: skip
    assert none.key == base and "|par=" not in base  # today's key, unchanged
    assert ddp.key == base + "|par=ddp|ws=2"
    assert gp.key == base + "|par=pipeline|ws=2|mb=2|sched=gpipe"
    assert fb.key == base + "|par=pipeline|ws=2|mb=2|sched=1f1b"
    assert {results.schema.baseline_key(c.key) for c in (none, ddp, gp, fb)} == {base}
    (two_nodes,) = _grid(parallel=["fsdp"], nproc=1, nnodes=2)
    assert two_nodes.key == base + "|par=fsdp|ws=2|nn=2" and two_nodes.nproc_per_node == 1
    assert RunConfig.from_json(json.loads(json.dumps(gp.to_json()))) == gp
    assert [c.label() for c in (none, ddp, gp)] == [
        "train fp32", "train fp32 ddp(ws=2)", "train fp32 pipeline(gpipe,m=2,ws=2)",
    ]  # fmt: skip


def test_auto_microbatches_divide_the_batch() -> None:
    assert [auto_microbatches(b, 2) for b in (1, 2, 3, 4, 6, 8, 16)] == [1, 2, 3, 4, 3, 4, 4]
    assert auto_microbatches(64, 8) == 8 and auto_microbatches(None, 2) == 1


def test_skip_reasons_of_parallel_configurations() -> None:
    spec = get_scenario("encoder")

    def reason(**kw: Any) -> str | None:
        (cfg,) = _grid(**kw)
        return config_skip_reason(spec, cfg)

    assert "2 CUDA devices" in reason(parallel=["dp"], nproc=2)
    assert "training schedules" not in (reason(parallel=["fsdp"], nproc=2, modes=["forward"]) or "")
    assert reason(parallel=["fsdp"], nproc=2, modes=["forward"]) is None  # sharded inference runs
    assert "pipeline inference" in reason(parallel=["pipeline"], nproc=2, modes=["forward"])
    assert "does not split evenly over 2 ranks" in reason(parallel=["ddp"], nproc=2, axes={"batch_size": [3]})
    assert "equal micro-batches" in reason(parallel=["pipeline"], nproc=2, microbatches=4)
    assert "1f1b needs microbatches >= stages" in reason(
        parallel=["pipeline"], nproc=4, axes={"batch_size": [3]}, pipeline_schedule=["1f1b"]
    )
    assert reason(parallel=["ddp"], nproc=2) is None and reason(parallel=["pipeline"], nproc=2) is None
    (opt,) = expand_grid(
        get_scenario("optimizer"), preset="tiny", modes=["train"], precisions=["fp32"],
        checkpointing=["none"], axes={}, device="cpu", parallel=["ddp"], nproc=2,
    )  # fmt: skip
    if "batch_size" not in opt.params_dict:
        assert "no batch_size" in config_skip_reason(get_scenario("optimizer"), opt)


def test_request_checks_the_launch_options(tmp_path: Path) -> None:
    req = RunRequest.build({"parallel": "none,ddp", "nproc": "3", "pipeline_schedule": "1f1b"})
    assert req.parallel == ("none", "ddp") and req.nproc == 3 and req.pipeline_schedule == ("1f1b",)
    assert RunRequest.from_dict(json.loads(json.dumps(req.to_dict()))) == req
    for bad, needle in (
        ({"parallel": "ddp,tp"}, "--parallel"),
        ({"nproc": "0"}, "--nproc"),
        ({"nnodes": "2"}, "--rdzv-endpoint"),
        ({"nnodes": "2", "node_rank": "2", "rdzv_endpoint": "h:1"}, "--node-rank"),
        ({"nnodes": "2", "rdzv_endpoint": "h:1"}, "--rdzv-id: --nnodes 2 needs a run id"),
        ({"rdzv_id": "a b"}, "--rdzv-id: expected"),
        ({"rdzv_endpoint": "nohost"}, "HOST:PORT"),
        ({"rdzv_backend": "zookeeper"}, "--rdzv-backend"),
    ):
        with pytest.raises(UsageError, match=needle):
            RunRequest.build(bad)
    sweep = tmp_path / "s.toml"
    sweep.write_text(
        'scenario = "encoder"\n[axes]\nparallel = ["none", "fsdp"]\npipeline_schedule = "gpipe"\n'
        "[options]\nnproc = 2\nmicrobatches = 2\n",
        encoding="utf-8",
    )
    req = api.plan_run(sweep=sweep, device="cpu", preset="tiny", out=tmp_path / "o.csv").request
    assert req.parallel == ("none", "fsdp") and req.nproc == 2 and req.microbatches == 2


def test_cli_help_explains_the_parallel_flags() -> None:
    from typer.testing import CliRunner

    from bench.cli import app

    r = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    for flag in ("--parallel", "--nproc", "--microbatches", "--pipeline-schedule", "--nnodes", "--node-rank",
                 "--rdzv-endpoint", "--rdzv-backend"):  # fmt: skip
        assert flag in r.output, flag
    assert "GLOBAL batch" in r.output


def _rank(rank: int, median_ms: float, peak: int, **kw: Any) -> dict[str, Any]:
    samples = [median_ms * f for f in (0.99, 1.0, 1.0, 1.01, 1.0, 0.995, 1.005)]
    mem = {
        "peak_mem_bytes": peak, "mem_fwd_peak_bytes": peak, "mem_bwd_peak_bytes": peak,
        "mem_opt_peak_bytes": peak, "mem_params_bytes": 100, "mem_grads_bytes": 100,
        "mem_optimizer_bytes": 200, "mem_activations_bytes": peak - 400, "cuda_reserved_peak_bytes": None,
        "peak_rss_bytes": 1, "method": "mem_tracker", "per_phase": {},
    }  # fmt: skip
    return {
        "rank": rank, "host": "h", "device": "cpu", "threads": 1, "status": "ok",
        "timing": {"samples_ms": samples, "warmup_iters": 1, "stop_reason": "time_cap", "target_rel_ci": 0.5},
        "memory": mem, "flops_per_step": 1000, "items_per_step": 8, "unit": "tokens",
        "extra": {"local_batch_size": 1}, "notes": [], "comm_bytes_per_step": 300 + rank,
        "bubble_fraction": None, "stage_index": None, "mfu": {"mfu": rank / 10}, **kw,
    }  # fmt: skip


def test_ranks_merge_into_one_row_slowest_time_most_loaded_memory(tmp_path: Path) -> None:
    from bench.run.execute import Outcome, with_scaling
    from bench.run.launch import merge_ranks

    none, ddp = _grid(parallel=["none", "ddp"], nproc=2)
    m = merge_ranks(ddp, [_rank(0, 10.0, 5000), _rank(1, 12.0, 4000)])
    assert m.timing.median_ms == pytest.approx(12.0)  # the slowest rank's samples
    assert m.memory.peak_mem_bytes == 5000 and m.max_rank_peak_mem_bytes == 5000  # the most loaded
    assert m.job_throughput == pytest.approx(16 / 0.012)  # the global batch over the slowest median
    assert m.comm_bytes_per_step == 301 and [r["rank"] for r in m.ranks] == [0, 1]
    assert m.extra["slowest_rank"] == 1 and m.extra["most_loaded_rank"] == 0 and m.mfu == 0.1
    cols = results.columns_for(get_scenario("encoder").parameters())
    req = RunRequest(max_time_s=0.3)
    row = results.build_row(ddp, Outcome("ok", "", m, 1.0), run_id="r", env={}, request=req, columns=cols)
    assert (row["parallel"], row["world_size"], row["nnodes"], row["microbatches"]) == ("ddp", 2, 1, None)
    assert row["throughput"] == pytest.approx(8 / 0.012)  # one rank's share of the batch
    assert row["job_throughput"] == pytest.approx(16 / 0.012)
    baselines = {none.key: 500.0}
    with_scaling(row, baselines)
    assert row["scaling_efficiency"] == pytest.approx(16 / 0.012 / (2 * 500.0))
    assert "ranks" in results.samples_record(row, Outcome("ok", "", m, 1.0))
    failed = results.build_row(ddp, Outcome("error", "x"), run_id="r", env={}, request=req, columns=cols)
    with_scaling(failed, baselines)
    assert failed["scaling_efficiency"] is None and failed.get("job_throughput") is None


# --- real torchrun jobs ---------------------------------------------------------------------------


def _env_tag(p: psutil.Process) -> str | None:
    try:
        return p.environ().get(TAG)
    except (psutil.Error, OSError):
        return None


@pytest.fixture
def no_orphans(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Tag every process the test starts (through the environment) and fail if any outlives it."""
    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG, tag)
    yield tag
    me = os.getpid()
    deadline = time.monotonic() + 3.0
    while True:
        left = [p for p in psutil.process_iter() if p.pid != me and _env_tag(p) == tag]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for p in left:
        p.kill()
    assert not left, [" ".join(p.cmdline()[:6]) for p in left]
    assert not psutil.Process().children(recursive=True)


def _rows(summary: Any) -> list[dict[str, Any]]:
    return [{k: r.get(k) for k in r} for r in summary.rows]


@pytest.mark.distributed
def test_encoder_ddp_fsdp_pipeline_rows_are_ok(tmp_path: Path, no_orphans: str) -> None:
    out = tmp_path / "e.csv"
    s = api.run("encoder", parallel="ddp,fsdp,pipeline", nproc=2, out=out, **FAST)
    ddp, fsdp, pipe = _rows(s)
    assert [r["status"] for r in (ddp, fsdp, pipe)] == ["ok"] * 3, [r["reason"] for r in s.rows]
    assert [r["parallel"] for r in (ddp, fsdp, pipe)] == ["ddp", "fsdp", "pipeline"]
    assert all(r["world_size"] == 2 and r["nnodes"] == 1 for r in (ddp, fsdp, pipe))
    # closed forms of the bytes sent per step, from the strategy (P = all parameters, fp32)
    p_bytes = ddp["mem_params_bytes"]  # a DDP rank holds every parameter
    assert ddp["comm_bytes_per_step"] == p_bytes  # all-reduce of the gradients: 2 (W-1)/W P
    assert fsdp["mem_params_bytes"] == p_bytes // 2  # a shard each
    assert fsdp["comm_bytes_per_step"] == 3 * p_bytes // 2  # 2 all-gathers + 1 reduce-scatter of P
    b, seq, width = 2, 16, 32  # the tiny encoder: each boundary sends one micro-batch of (1, L, E) fp32
    assert pipe["microbatches"] == 2 and pipe["pipeline_schedule"] == "gpipe"
    assert pipe["comm_bytes_per_step"] == 2 * (b // 2) * seq * width * 4
    assert pipe["bubble_fraction"] == pytest.approx(1 / 3)
    assert ddp["job_throughput"] == pytest.approx(2 * ddp["throughput"], rel=0.01)  # each rank: half
    assert pipe["job_throughput"] == pytest.approx(pipe["throughput"])  # every stage sees every item
    for r in (ddp, fsdp, pipe):
        assert r["config_key"].endswith(
            f"|par={r['parallel']}|ws=2" + ("|mb=2|sched=gpipe" if r is pipe else "")
        )
        assert r["max_rank_peak_mem_bytes"] == r["peak_mem_bytes"] > 0
        assert r["scaling_efficiency"] is None  # no none row in this sweep or file
    side = [json.loads(line) for line in out.with_suffix(".samples.jsonl").read_text().splitlines()]
    assert [len(rec["ranks"]) for rec in side] == [2, 2, 2]
    assert [rec["ranks"][1]["stage_index"] for rec in side] == [None, None, 1]


@pytest.mark.distributed
def test_transformer_fsdp_and_resnet_pipeline_train(tmp_path: Path, no_orphans: str) -> None:
    s = api.run("transformer", parallel="fsdp", nproc=2, out=tmp_path / "t.csv", **FAST)
    assert [r["status"] for r in s.rows] == ["ok"], [r["reason"] for r in s.rows]
    # BatchNorm needs 2+ samples per micro-batch in training: a global batch of 4 in 2 micro-batches
    s = api.run(
        "resnet", parallel="pipeline", pipeline_schedule="1f1b", microbatches=2, nproc=2,
        params={"batch_size": [4]}, out=tmp_path / "r.csv", **FAST,
    )  # fmt: skip
    (row,) = s.rows
    assert row["status"] == "ok", row["reason"]
    assert (row["pipeline_schedule"], row["microbatches"], row["batch_size"]) == ("1f1b", 2, 4)


@pytest.mark.distributed
def test_a_rank_that_raises_is_an_error_row_within_the_timeout(tmp_path: Path, no_orphans: str) -> None:
    t0 = time.monotonic()
    s = api.run("_rank_raise", parallel="ddp", nproc=2, timeout_s=60, out=tmp_path / "x.csv", **FAST)
    (bad,) = s.rows
    assert bad["status"] == "error" and "rank 1 of 2: RuntimeError: _rank_raise" in bad["reason"]
    assert "Connection closed" not in bad["reason"]  # the cause, not its echo on the other rank
    assert time.monotonic() - t0 < 60 and s.exit_code == 1


@pytest.mark.distributed
def test_a_rank_that_hangs_is_a_timeout_row_and_the_next_configuration_runs(
    tmp_path: Path, no_orphans: str
) -> None:
    timeout = 15.0
    s = api.run(
        "_rank_hang", parallel="ddp", nproc=2, params={"where": ["build", "never"]}, timeout_s=timeout,
        out=tmp_path / "h.csv", **FAST,
    )  # fmt: skip
    hung, good = s.rows
    assert hung["status"] == "timeout", hung["reason"]
    assert hung["elapsed_s"] < timeout + 12  # killed at the timeout, and waited for
    # which rank hung, where and for how long, and where its peer waits (DDP's wrap waits for it)
    assert re.search(r"rank 1 hung in build for [\d.]+ s; rank 0 waits in wrap", hung["reason"]), hung[
        "reason"
    ]
    assert good["status"] == "ok", good["reason"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.distributed
def test_two_launcher_agents_rendezvous_as_two_nodes(tmp_path: Path, no_orphans: str) -> None:
    endpoint = f"127.0.0.1:{_free_port()}"
    run_id = uuid.uuid4().hex[:8]  # the same on both nodes, new for this run
    procs = []
    for node in (0, 1):
        cmd = [
            sys.executable, "-m", "bench.cli", "run", "encoder", "--preset", "tiny", "--mode", "train",
            "--device", "cpu", "--parallel", "ddp", "--nproc", "1", "--nnodes", "2", "--node-rank", str(node),
            "--rdzv-endpoint", endpoint, "--rdzv-id", run_id, "--max-time", "0.3", "--target-ci", "0.5",
            "--timeout", "120",
            "--out", str(tmp_path / f"node{node}.csv"),
        ]  # fmt: skip
        log = (tmp_path / f"node{node}.log").open("wb")
        procs.append((subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log))
    try:
        rcs = [p.wait(timeout=170) for p, _ in procs]
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            log.close()
    logs = [(tmp_path / f"node{n}.log").read_text(errors="replace")[-1500:] for n in (0, 1)]
    assert rcs == [0, 0], logs
    for node in (0, 1):
        (row,) = results.load_results(tmp_path / f"node{node}.csv").to_dict("records")
        assert row["status"] == "ok" and row["world_size"] == 2 and row["nnodes"] == 2, row["reason"]
        assert row["config_key"].endswith("|par=ddp|ws=2|nn=2")


# --- launch options, rendezvous, messages: no process started --------------------------------------


def test_launch_options_are_checked_before_anything_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.run import plan as plan_mod

    def plan(**kw: Any) -> Any:
        return api.plan_run("encoder", device="cpu", preset="tiny", parallel="ddp", out=None, **kw)

    monkeypatch.setattr(plan_mod, "cpu_cores", lambda: 2)
    with pytest.raises(UsageError, match=r"--nproc: 3 ranks per node on the CPU, but this machine has 2"):
        plan_mod.check_launch(RunRequest.build({"parallel": "ddp", "nproc": "3"}), "cpu")
    plan_mod.check_launch(RunRequest.build({"parallel": "ddp", "nproc": "3", "oversubscribe": True}), "cpu")
    plan_mod.check_launch(RunRequest.build({"parallel": "none", "nproc": "3"}), "cpu")  # no ranks: fine
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(UsageError, match="--rdzv-backend etcd: needs the python-etcd package"):
        plan_mod.check_launch(RunRequest.build({"parallel": "ddp", "rdzv_backend": "etcd"}), "cpu")
    with pytest.raises(UsageError, match="--rdzv-endpoint: cannot resolve host 'no-such-host.invalid'"):
        plan_mod.check_launch(
            RunRequest.build({"parallel": "ddp", "rdzv_endpoint": "no-such-host.invalid:29500"}), "cpu"
        )


def test_every_one_node_job_gets_its_own_rendezvous_and_loopback_stores(tmp_path: Path) -> None:
    from bench.run.launch import is_loopback, torchrun_args

    (ddp,) = _grid(parallel=["ddp"], nproc=2)
    req = RunRequest.build({"parallel": "ddp", "rdzv_endpoint": "127.0.0.1:29511"})
    a, b = (torchrun_args(ddp, req, tmp_path / "r", tmp_path / "o", log_dir=tmp_path / "l") for _ in "ab")
    ids = [next(x for x in args if x.startswith("--rdzv-id=")) for args in (a, b)]
    assert ids[0] != ids[1]  # the same endpoint twice: two rendezvous, never one
    assert "--rdzv-conf=join_timeout=600,is_host=true" in a  # hosts its own store: a taken port fails
    assert f"--log-dir={tmp_path / 'l'}" in a and "--local-addr=127.0.0.1" in a
    static = torchrun_args(ddp, RunRequest.build({"rdzv_backend": "static"}), tmp_path, tmp_path)
    assert "--rdzv-backend=static" in static and "--rdzv-conf=timeout=600" in static  # honoured, not c10d
    assert any(x.startswith("--rdzv-endpoint=127.0.0.1:") for x in static)
    (two,) = _grid(parallel=["ddp"], nproc=1, nnodes=2)
    multi = RunRequest.build({"nnodes": "2", "rdzv_endpoint": "10.0.0.1:29500", "rdzv_id": "run7"})
    m1, m2 = (torchrun_args(two, multi, tmp_path, tmp_path) for _ in "ab")
    assert m1 == m2 and any(x.startswith("--rdzv-id=dlbench-run7-") for x in m1)  # the same on every node
    assert not any(x.startswith("--local-addr") for x in m1)  # a network endpoint, on purpose
    assert [is_loopback(e) for e in ("127.0.0.1:1", "localhost:1", "[::1]:1", "10.0.0.1:1")] == [
        True, True, True, False,
    ]  # fmt: skip


def test_the_launchers_own_error_and_which_rank_hung_are_named(tmp_path: Path) -> None:
    from bench.run import launch

    log = tmp_path / "agent.log"
    log.write_text(
        '[W] something\nTraceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
        "torch.distributed.DistNetworkError: The server socket has failed to listen on any local network "
        "address. port: 29511, useIpv6: false, code: -98, name: EADDRINUSE, message: address already in use\n"
        "\nThe above exception was the direct cause of the following exception:\n\n"
        'Traceback (most recent call last):\n  File "y.py", line 2, in f\n'
        "torch.distributed.elastic.rendezvous.api.RendezvousConnectionError: The connection to the C10d "
        "store has failed. See inner exception for details.\n"
    )
    (ddp,) = _grid(parallel=["ddp"], nproc=2)
    out = tmp_path / "out"
    out.mkdir()
    o = launch._failed(ddp, out, 1, log, 1.0)
    assert o.status == "error" and "the torchrun launcher failed before any rank started" in o.reason
    assert "RendezvousConnectionError: The connection to the C10d store has failed" in o.reason
    now = time.time()
    (out / "rank0.phase").write_text(f"wrap\t{now - 3:.3f}")
    (out / "rank1.phase").write_text(f"build\t{now - 4:.3f}")
    msg = launch._phases(out, 2)
    assert re.fullmatch(r"rank 1 hung in build for 4\.\d s; rank 0 waits in wrap for 3\.\d s", msg), msg
    (out / "rank1.phase").write_text(f"wrap\t{now:.3f}")
    assert launch._phases(out, 3).startswith("rank 2 never started; rank 0 waits in wrap")


def test_parallel_rows_carry_the_noise_sentinel() -> None:
    from bench.run.launch import merge_ranks

    (ddp,) = _grid(parallel=["ddp"], nproc=2)
    m = merge_ranks(
        ddp, [_rank(0, 10.0, 5000, noise_other_cpu_pct=3.0), _rank(1, 12.0, 4000, noise_other_cpu_pct=41.0)]
    )
    assert m.noise_other_cpu_pct == 41.0 and m.machine_busy  # the busiest window: the row is flagged
    cols = results.columns_for(get_scenario("encoder").parameters())
    from bench.run.execute import Outcome

    row = results.build_row(
        ddp, Outcome("ok", "", m, 1.0), run_id="r", env={}, request=RunRequest(), columns=cols
    )
    assert row["noise_other_cpu_pct"] == 41.0 and row["noisy"] is True
