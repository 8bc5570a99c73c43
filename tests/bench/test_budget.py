"""dlbench budget end to end on CPU: the exact search against a closed form, encoder's checkpointing
fitting a larger batch in real child processes, failed probes, the rows and outputs, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import bench.api as api
from bench.budget.engine import search_combination
from bench.budget.search import probe_bound
from bench.cli import app
from bench.results import load_results, load_samples
from bench.run.execute import Outcome
from bench.scenarios.testing import budget_peak_bytes

IN, OUT = 8, 16  # the _budget scenario's default features


def _peak(batch: int) -> int:
    return budget_peak_bytes(batch, IN, OUT)


def _plan(tmp_path: Path, name: str, scenario: str = "_budget", **kw: object):
    kw.setdefault("isolation", False)
    kw.setdefault("device", "cpu")
    return api.plan_budget(scenario, csv=tmp_path / f"{name}.csv", **kw)


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        (_peak(5) - 1, 4),  # one byte below the boundary of batch 5
        (_peak(5), 5),  # exactly on it
        (_peak(23) + 1, 23),  # one byte above the boundary of batch 23
        (_peak(24) - 1, 23),  # just below the next one
    ],
)
def test_search_finds_the_closed_form_max_batch(tmp_path: Path, budget: int, expected: int) -> None:
    # the closed form's answer: the largest batch whose tracked peak is within the budget
    assert max(b for b in range(1, 65) if _peak(b) <= budget) == expected
    plan = _plan(tmp_path, "s", memory=budget, max_batch=64, tolerance=0)
    (combo,) = plan.combos
    res = search_combination(plan, combo)
    assert res.max_batch == expected
    assert res.n_probes <= probe_bound(64)
    for p in res.probes:  # every probe's figure is the closed form, judged by the cpu rule
        assert p.status == "ok" and p.peak_bytes == p.tracked_peak_bytes == _peak(p.batch)
        assert p.fits == (p.peak_bytes <= budget)
    plan.run.writer.unlock()


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One in-process budget run of ``_budget`` (fp32 fits 23; amp-fp16 is skipped on a CPU)."""
    out = tmp_path_factory.mktemp("budget")
    return api.budget(
        "_budget", memory=f"{_peak(23) + 1}", device="cpu", isolation=False, tolerance=0, max_batch=64,
        max_time_s=0.02, csv=out / "b.csv", progress=False, precisions="fp32,amp-fp16",
    )  # fmt: skip


def test_budget_writes_the_row_at_the_max_batch_with_its_probes(budget_run) -> None:  # type: ignore[no-untyped-def]
    budget, run = _peak(23) + 1, budget_run
    assert run.exit_code == 0
    row, skipped = run.rows
    assert skipped["status"] == "skipped" and skipped["precision"] == "amp-fp16" and skipped["probes"] == 0
    assert row["status"] == "ok" and row["batch_size"] == row["max_batch"] == 23
    assert row["budget_bytes"] == budget and 0 < row["probes"] <= probe_bound(64)
    # stage 2 measures the same figure the search compared: the closed form at the max batch
    assert row["peak_mem_bytes"] == _peak(23) <= budget
    df = load_results(run.csv_path)
    assert list(df["max_batch"])[:1] == [23] and list(df["probes"]) == [row["probes"], 0]
    assert str(df["budget_bytes"].dtype) == "Int64"
    record = load_samples(run.csv_path)[0]
    b = record["budget"]
    assert b["rule"] == "cpu" and b["max_batch"] == 23 and len(b["probes"]) == row["probes"]
    assert [p["batch"] for p in b["probes"]][:5] == [1, 2, 4, 8, 16]
    assert record["samples_ms"]  # the measurement's own samples are there too
    rep = run.report
    assert rep is not None and rep.rule == "cpu"
    assert rep.recommendation.startswith("Use fp32 ckpt=none (the baseline) at batch 23")


def test_report_draws_the_budget_figure_only_where_budget_rows_exist(budget_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from bench.report.build import build_report

    res = build_report([budget_run.csv_path], tmp_path / "with")
    (fig,) = [f for f in res.figures if f.name == "budget"]
    assert fig.png.stat().st_size > 0 and fig.svg.exists()
    assert any(n.startswith("budget, _budget on cpu") and "Use fp32 ckpt=none" in n for n in res.notes)
    assert "Use fp32 ckpt=none (the baseline) at batch 23" in res.summary_md.read_text(encoding="utf-8")
    plain = Path(__file__).resolve().parents[1] / "fixtures" / "report" / "attention.csv"
    res = build_report([plain], tmp_path / "without")
    assert "budget" not in [f.name for f in res.figures] + [name for name, _ in res.skipped]


def test_failed_probes_do_not_fit(tmp_path: Path) -> None:
    # a probe that runs out of memory, or raises, counts as "does not fit" (its batch and above)
    plan = _plan(tmp_path, "oom", memory="1MiB", max_batch=16, tolerance=0, params={"oom_above": [6]})
    res = search_combination(plan, plan.combos[0])
    assert res.max_batch == 6
    assert {p.batch: p.status for p in res.probes if not p.fits} == {8: "oom", 7: "oom"}
    plan.run.writer.unlock()
    plan = _plan(tmp_path, "crash", memory="1MiB", max_batch=4, tolerance=0, params={"crash_above": [2]})
    res = search_combination(plan, plan.combos[0])
    assert res.max_batch == 2 and [(p.batch, p.status) for p in res.probes] == [
        (1, "ok"), (2, "ok"), (4, "error"), (3, "error"),
    ]  # fmt: skip
    plan.run.writer.unlock()

    # a probe that times out (any outcome the runner reports) does not fit either
    def prober(cfg):  # type: ignore[no-untyped-def]
        b = cfg.params_dict["batch_size"]
        if b > 3:
            return Outcome("timeout", "timed out after 1 s (child killed)")
        return Outcome("ok", "", {"tracked_peak_bytes": 100 * b})

    plan = _plan(tmp_path, "timeout", memory="1MiB", max_batch=64, tolerance=0)
    res = search_combination(plan, plan.combos[0], prober=prober)
    assert res.max_batch == 3
    assert [(p.batch, p.status) for p in res.probes] == [(1, "ok"), (2, "ok"), (4, "timeout"), (3, "ok")]
    plan.run.writer.unlock()


def test_nothing_fits_says_what_batch_1_needs(tmp_path: Path) -> None:
    budget = _peak(1) - 4
    run = api.budget(
        "_budget", memory=budget, device="cpu", isolation=False, csv=tmp_path / "n.csv", progress=False,
        precisions="fp32,amp-fp16",
    )  # fmt: skip
    assert run.exit_code == 0
    by = {r["precision"]: r for r in run.rows}
    assert by["amp-fp16"]["status"] == "skipped" and "CUDA" in by["amp-fp16"]["reason"]
    row = by["fp32"]
    assert row["status"] == "skipped" and row["max_batch"] == 0 and row["probes"] == 1
    assert f"needs 2.04 KiB (tracked peak, {_peak(1)} bytes)" in row["reason"]
    assert run.report is not None
    assert run.report.recommendation.startswith("Nothing fits in 2.04 KiB: even at batch 1")


def test_encoder_checkpointing_fits_a_larger_batch_in_child_processes(tmp_path: Path) -> None:
    # tiny encoder, 4 layers of 64 tokens: fp32 tracked peak at batch 1 / 2 is 1.20 / 1.77 MB without
    # checkpointing, 0.95 ... 1.48 MB at batch 1 ... 4 with it; each probe is a real child process
    plan = _plan(
        tmp_path, "enc", "encoder", isolation=True, memory=1_700_000, max_batch=4, preset="tiny",
        checkpointing="none,full", params={"depth": [4], "seq_len": [64]},
    )  # fmt: skip
    found = {c.checkpointing: search_combination(plan, c) for c in plan.combos}
    plan.run.writer.unlock()
    assert found["none"].max_batch == 1
    assert found["full"].max_batch == 4 > found["none"].max_batch
    for res in found.values():
        assert res.n_probes <= probe_bound(4)
        assert all(p.status == "ok" and p.rss_increase_bytes is not None for p in res.probes)


def test_cli_json_out_and_the_report_rebuilt_from_the_csv(tmp_path: Path) -> None:
    from rich.console import Console

    from bench.cli.budget import print_report
    from bench.report.budget import summarize

    csv, out = tmp_path / "c.csv", tmp_path / "o.json"
    res = CliRunner().invoke(
        app,
        ["budget", "_budget", "--memory", str(_peak(5)), "--device", "cpu", "--no-isolation", "--max-time",
         "0.02", "--csv", str(csv), "--max-batch", "8", "--tolerance", "0", "--format", "json",
         "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    printed = json.loads(res.stdout)
    assert printed == json.loads(out.read_text(encoding="utf-8"))
    assert printed["fit_rule"] == "cpu" and printed["budget_bytes"] == _peak(5)
    (combo,) = printed["combinations"]
    assert combo["max_batch"] == 5 and combo["peak_bytes"] == _peak(5) and combo["pareto"]
    assert printed["recommendation"].startswith("Use fp32 ckpt=none (the baseline) at batch 5")
    # the same report from the CSV alone (what dlbench report reads), as markdown and as the table
    rep = summarize(load_results(csv).to_dict("records"))
    assert rep.to_dict() | {"csv": ""} == printed | {"csv": ""}
    assert "| fp32 ckpt=none \\* | 5 |" in rep.to_markdown()
    console = Console(record=True, width=200)
    print_report(rep, console)
    text = console.export_text()
    assert "fit rule: cpu" in text and "Pareto front" in text and "Use fp32 ckpt=none" in text


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["_budget", "--memory", "0"], "--memory: must be a positive size"),
        (["_budget", "--memory", "-1"], "--memory: expected a positive size"),
        (["_budget", "--memory", "abc"], "--memory: expected a positive size"),
        (["_budget", "--memory", "1e30"], "--memory: expected a positive size"),
        (["_budget", "--memory", "12 GB"], "--memory: expected a positive size"),
        (["_budget", "--memory", "1000000TiB"], "--memory: '1000000TiB' is"),
        (["_budget"], "--memory: give the memory budget"),
        (["optimizer", "--memory", "1GiB"], "has no batch_size parameter"),
        (["_budget", "--memory", "1GiB", "--max-batch", "0"], "--max-batch: must be a positive integer"),
        (["_budget", "--memory", "1GiB", "--batch-multiple", "0"], "--batch-multiple: must be"),
        (["_budget", "--memory", "1GiB", "--tolerance", "1"], "--tolerance: must be"),
        (["_budget", "--memory", "1GiB", "-p", "batch_size=4"], "batch_size: dlbench budget searches"),
        (["_budget", "--memory", "1GiB", "--format", "xml"], "--format: unknown format"),
        (["_budget", "--memory", "1GiB", "--precision", "fp8"], "--precision"),
        (["_budget", "--memory", "1GiB", "--parallel", "ddp", "--max-batch", "1"], "--max-batch: 1 is below"),
        (["nosuch", "--memory", "1GiB"], "unknown scenario"),
    ],
)
def test_bad_input_exits_2_naming_it_before_any_work(tmp_path: Path, args: list[str], needle: str) -> None:
    csv = tmp_path / "never.csv"
    res = CliRunner().invoke(app, ["budget", *args, "--device", "cpu", "--csv", str(csv)])
    assert res.exit_code == 2, res.output
    assert needle in " ".join(res.output.split()), res.output
    assert "Traceback" not in res.output
    assert not csv.exists()  # nothing was started


@pytest.mark.gpu
def test_cuda_rule_caps_the_allocator_and_checkpointing_fits_more(tmp_path: Path) -> None:
    # in process (the cap is this process's; set back after): every fitting probe's reserved peak is
    # within the budget, the next batch up did not fit, and full checkpointing fits a larger batch
    import torch

    budget = 256 * 2**20
    try:
        plan = _plan(
            tmp_path, "cuda", "encoder", device="cuda", memory=budget, max_batch=512, tolerance=0,
            checkpointing="none,full",
        )  # fmt: skip
        assert plan.rule == "cuda"
        found = {c.checkpointing: search_combination(plan, c) for c in plan.combos}
        plan.run.writer.unlock()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    for res in found.values():
        assert 0 < res.max_batch < 512 and res.n_probes <= probe_bound(512)
        for p in res.probes:
            if p.fits:
                assert p.reserved_peak_bytes is not None and p.reserved_peak_bytes <= budget
            else:  # ran out of memory under the cap, or reserved more than the budget
                assert p.status == "oom" or (p.reserved_peak_bytes or 0) > budget
        assert any(p.batch == res.max_batch + 1 and not p.fits for p in res.probes)
    assert found["full"].max_batch > found["none"].max_batch


def test_sigterm_mid_probe_stops_cleanly(tmp_path: Path) -> None:
    # a real SIGTERM (twice: the second during the cleanup) while a probe child runs: exit 143, no
    # process or owned folder left, the CSV holds only whole rows (here none: nothing had finished)
    import os
    import signal
    import subprocess
    import sys
    import time
    import uuid

    import psutil

    from bench import owned

    tag, scratch, csv = uuid.uuid4().hex, tmp_path / "scratch", tmp_path / "k.csv"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k != owned.MARKER_ENV}
    env.update({"DLBENCH_TEST_BUDGET_TAG": tag, owned.ROOT_ENV: str(scratch)})

    def tagged(what: str = "") -> list[psutil.Process]:
        out = []
        for p in psutil.process_iter():
            try:
                if p.pid != os.getpid() and p.environ().get("DLBENCH_TEST_BUDGET_TAG") == tag:
                    if p.status() != psutil.STATUS_ZOMBIE and what in " ".join(p.cmdline()):
                        out.append(p)
            except psutil.Error:
                continue
        return out

    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "budget", "_budget", "--memory", "1MiB", "--device", "cpu",
         "--csv", str(csv)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not tagged("bench.run.child") and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert tagged("bench.run.child"), "no probe child started"
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 20
        while tagged() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not tagged(), [p.cmdline()[:4] for p in tagged()]
        assert sorted(os.listdir(scratch)) == []  # no owned folder left
        assert len(load_results(csv)) == 0  # the header, and no torn row
    finally:
        for p in tagged():
            p.kill()


def test_compile_is_an_axis_and_a_compiled_step_on_cpu_says_it_was_judged_eager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    import bench.compiling

    monkeypatch.setattr(bench.compiling, "BACKEND", "aot_eager")  # dynamo's graphs, no code generation
    torch._dynamo.reset()
    try:
        run = api.budget(
            "_budget", memory="1MiB", device="cpu", isolation=False, max_batch=4, max_time_s=0.02,
            compile="none,default", csv=tmp_path / "c.csv", progress=False,
        )  # fmt: skip
    finally:
        torch._dynamo.reset()
    assert run.exit_code == 0, [r["reason"] for r in run.rows]
    eager, compiled = run.rows
    assert (eager["compile"], compiled["compile"]) == ("none", "default")
    assert eager["max_batch"] == compiled["max_batch"] == 4  # the cap: both fit it
    assert compiled["extra"]["budget_note"].startswith("compiled, but judged by the same step run eagerly")
    assert "budget_note" not in eager["extra"]
    search = run.searches[1]
    assert search is not None and all(p.judged_eager for p in search.probes)
    rep = run.report
    assert rep is not None
    by = {e.label: e for e in rep.entries}
    assert by["fp32 ckpt=none"].baseline and not by["fp32 ckpt=none compile=default"].baseline
    assert by["fp32 ckpt=none compile=default"].relative is not None
