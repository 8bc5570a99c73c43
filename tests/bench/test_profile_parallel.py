"""``dlbench profile --parallel``: one torchrun job (``launch.profile_parallel``), one trace per rank.

Fast checks first (planning and refusals: no process started), then real gloo jobs on
CPU: a DDP profile of the tiny encoder (one TensorBoard trace per rank named ``rank<r>.<ns>.pt.trace
.json``, each rank's summary in ``DIR/rank<r>/``, communication in the summary, the whole folder in
``dlbench report``) and a rank that raises (exit 1, one line naming the rank, nothing left running).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import psutil
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.errors import UsageError
from bench.profile.scenario import plan_from_run_options

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "report"
runner = CliRunner()
# tensorboard_trace_handler's file name: <worker>.<time_ns>.pt.trace.json; the worker is rank<r>
TRACE_NAME = re.compile(r"^rank(\d+)\.\d+\.pt\.trace\.json$")


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


# --- planning: nothing started --------------------------------------------------------------------


def test_a_parallel_plan_is_the_configuration_dlbench_run_would_launch(tmp_path: Path) -> None:
    plan = plan_from_run_options(
        "encoder", out_dir=tmp_path / "p", preset="tiny", device="cpu", parallel="pipeline", nproc=2
    )
    cfg = plan.parallel
    assert (cfg.parallel, cfg.world_size, cfg.nnodes, cfg.pipeline_schedule) == ("pipeline", 2, 1, "gpipe")
    assert cfg.microbatches >= 1 and "pipeline(gpipe" in plan.describe()
    assert plan_from_run_options("encoder", out_dir=tmp_path / "q", device="cpu").parallel is None
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"parallel": "ddp,fsdp"}, "--parallel: dlbench profile traces one configuration"),
        ({"parallel": "ddp", "params": {"batch_size": "3"}}, "does not split evenly over 2 ranks"),
        ({"parallel": "pipeline", "pipeline_schedule": "gpipe,1f1b"}, "--pipeline-schedule:"),
    ],
)
def test_a_parallel_profile_that_cannot_run_is_a_usage_error(
    options: dict[str, Any], named: str, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match=re.escape(named)):
        plan_from_run_options("encoder", out_dir=tmp_path / "p", preset="tiny", device="cpu", **options)
    assert not (tmp_path / "p").exists()


def test_the_cli_names_a_refused_parallel_profile_exit_2(tmp_path: Path) -> None:
    r = invoke("profile", "encoder", "--preset", "tiny", "--device", "cpu", "--parallel", "ddp",
               "--batch-size", "3", "-o", str(tmp_path / "p"))  # fmt: skip
    assert r.exit_code == 2, r.output
    assert "does not split evenly" in r.stderr and not (tmp_path / "p").exists()


# --- real torchrun jobs ---------------------------------------------------------------------------


def _no_children_left() -> None:
    left = psutil.Process().children(recursive=True)
    for p in left:
        p.kill()
    assert not left, [" ".join(p.cmdline()[:6]) for p in left]


@pytest.mark.distributed
@pytest.mark.slow
def test_ddp_profile_writes_one_trace_per_rank_and_each_ranks_summary(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    r = invoke("profile", "encoder", "--preset", "tiny", "--device", "cpu", "--parallel", "ddp",
               "--nproc", "2", "--no-with-stack", "--timeout", "120", "-o", str(out))  # fmt: skip
    _no_children_left()
    assert r.exit_code == 0, r.output
    traces = sorted(p.name for p in out.glob("*.pt.trace.json"))
    assert [m.group(1) for n in traces if (m := TRACE_NAME.match(n))] == ["0", "1"], traces
    for rank in (0, 1):
        (trace,) = out.glob(f"rank{rank}.*.pt.trace.json")
        info = json.loads(trace.read_text())["distributedInfo"]  # torch-tb-profiler's distributed view
        assert (info["backend"], info["rank"], info["world_size"]) == ("gloo", rank, 2)
        summary = json.loads((out / f"rank{rank}" / "summary.json").read_text())
        # DDP's gradient all-reduce (c10d::allreduce_ over gloo) is communication on every rank
        assert summary["categories"]["communication"] > 0, summary["categories"]
        with (out / f"rank{rank}" / "top_ops.csv").open() as f:
            comm = [row["name"] for row in csv.DictReader(f) if row["category"] == "communication"]
        assert any("allreduce" in n for n in comm), comm
        assert (out / f"rank{rank}" / "trace.json").is_file()
        assert f"wrote rank {rank} summary: {out / f'rank{rank}' / 'summary.json'}" in r.stdout
    assert "ddp(ws=2)" in r.stderr and "workers rank0, rank1" in r.stdout

    # the report takes the whole folder (one profile per rank) or one rank's folder
    rep = tmp_path / "rep"
    r = invoke("report", str(FIX / "attention.csv"), "--profile", str(out), "-o", str(rep))
    assert r.exit_code == 0, r.output
    md = (rep / "summary.md").read_text()
    assert f"`{out / 'rank0'}`" in md and f"`{out / 'rank1'}`" in md
    assert "no summary.json" not in md
    r = invoke("report", str(FIX / "attention.csv"), "--profile", str(out / "rank1"), "-o", str(rep))
    assert r.exit_code == 0, r.output
    md = (rep / "summary.md").read_text()
    assert f"`{out / 'rank1'}`" in md and f"`{out / 'rank0'}`" not in md


@pytest.mark.distributed
@pytest.mark.slow
def test_a_rank_that_raises_exits_1_with_one_line_naming_it(tmp_path: Path) -> None:
    r = invoke("profile", "_rank_raise", "--device", "cpu", "--parallel", "ddp", "--nproc", "2",
               "--no-with-stack", "--timeout", "60", "-o", str(tmp_path / "bad"))  # fmt: skip
    _no_children_left()
    assert r.exit_code == 1, r.output
    lines = r.stderr.strip().splitlines()
    want = "error: parallel profile failed (error): rank 1 of 2: RuntimeError: _rank_raise"
    assert lines[-1].startswith(want), r.stderr
    assert "Traceback" not in r.output
