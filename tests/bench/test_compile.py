"""``--compile``: compiled steps equal eager ones, and the rows carry torch's own counters.

- Equality, on inductor (the real ``default`` mode): ``encoder`` and the fixture model
  ``tests/fixtures/tiny_gpt.py:build``, each built twice from one seed, once eager and once through
  ``build_step(..., compile="default")``: output, loss and every gradient ``assert_close``; the compiled
  encoder broke no graph.
- Rows, on ``aot_eager`` (dynamo and AOTAutograd as with inductor, without inductor's code generation:
  the counters are dynamo's, so the backend does not change them): ``encoder`` reports 0 graph
  breaks, its block's graph shared by both layers; ``_compile_probe -p item=true`` (``.item()`` mid
  forward) at least 1, with torch's reason in the sidecar; ``-p reshape_at=3`` (a shape change from
  the first timed step on) a recompile, which flags the row ``noisy`` with the reason.
- Failure is data: ``reduce-overhead`` on CPU and inductor without a C++ compiler are ``skipped``
  rows with the reason (torch's own message for the compiler), a backend that fails an ``error`` row
  with torch's message.

Cost: inductor compiles two tiny models (the bulk of this file's time); the rows run in this process.
``TORCHINDUCTOR_CACHE_DIR`` points at one folder for the session (``inductor_cache``): safe, because
inductor's FX-graph and AOTAutograd caches are keyed by the graph, its inputs' metadata, torch's
version and inductor's configuration, so a hit returns the code a miss would generate; and the
counters asserted here are dynamo's, counted while it traces, before any cache is consulted.
``torch._dynamo.reset()`` (``bench.run.measure.compile_cold_start`` calls it for every compiled
configuration) gives each build fresh in-memory caches.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import bench.compiling
from bench import api
from bench.cli import app
from bench.harness.compile_stats import CompileWatch
from bench.registry import BuildContext, get_scenario
from bench.workload import build_step

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = "tests/fixtures/tiny_gpt.py:build"


@pytest.fixture(scope="module")
def inductor_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One inductor cache folder for this module's compilations (see the module docstring for why)."""
    folder = tmp_path_factory.mktemp("inductor")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCHINDUCTOR_CACHE_DIR", str(folder))
        yield folder


def _eager_and_compiled(name: str, mode: str = "default") -> dict[str, Any]:
    """One train forward + backward of ``name`` (tiny preset, fp32) eager and compiled, from one seed."""
    spec = get_scenario(name)
    cfg = spec.make_config("tiny")
    ctx = BuildContext(device="cpu", mode="train", seed=0)
    runs: dict[str, Any] = {}
    torch._dynamo.reset()
    for comp in ("none", mode):
        w, _ = build_step(spec, cfg, ctx, precision="fp32", checkpointing="none", compile=comp)
        watch = CompileWatch(comp)
        out = w.model(*w.inputs, **w.kwargs)
        loss = w.loss_fn(out)
        loss.backward()
        runs[comp] = {
            "out": out.detach(),
            "loss": loss.detach(),
            "grads": {n: p.grad for n, p in w.model.named_parameters()},
            "extra": dict(w.extra),
            "stats": watch.result(),
        }
    return runs


@pytest.fixture(scope="module")
def encoder_runs(inductor_cache: Path) -> dict[str, Any]:
    return _eager_and_compiled("encoder")


@pytest.fixture(scope="module")
def fixture_runs(inductor_cache: Path, monkeypatch_module: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch_module.chdir(ROOT)
    return _eager_and_compiled(FIXTURE)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _assert_equal_runs(runs: dict[str, Any]) -> None:
    eager, comp = runs["none"], runs["default"]
    # inductor fuses and reorders fp32 reductions: equal to eager within fp32 rounding, not bitwise
    tol = {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(comp["out"], eager["out"], **tol)
    torch.testing.assert_close(comp["loss"], eager["loss"], **tol)
    assert eager["grads"].keys() == comp["grads"].keys()
    for name, g in eager["grads"].items():
        assert g is not None and comp["grads"][name] is not None, name
        torch.testing.assert_close(comp["grads"][name], g, **tol, msg=lambda m, n=name: f"{n}: {m}")
    assert comp["stats"].unique_graphs >= 1  # it did compile (with inductor: the real default mode)


def test_compiled_encoder_equals_eager_on_inductor(encoder_runs: dict[str, Any]) -> None:
    _assert_equal_runs(encoder_runs)
    comp = encoder_runs["default"]
    assert comp["extra"]["compiled"] == "TransformerEncoderLayer x2, loss"  # per block, and the loss
    assert comp["stats"].graph_breaks == 0, comp["stats"].break_reasons


def test_compiled_fixture_model_equals_eager_on_inductor(fixture_runs: dict[str, Any]) -> None:
    _assert_equal_runs(fixture_runs)
    # the fixture names no blocks: the detected DecoderBlock ones are compiled, and its loss
    assert fixture_runs["default"]["extra"]["compiled"] == "DecoderBlock x2, loss"


# --- rows from torch's counters (aot_eager) ---------------------------------------------------------


@pytest.fixture
def aot_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench.compiling, "BACKEND", "aot_eager")


def _run(tmp_path: Path, scenario: str, **options: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows and sidecar records of an in-process run (tiny, train, fp32, cpu)."""
    out = tmp_path / f"{re.sub(r'[^A-Za-z0-9]+', '_', scenario).strip('_')}.csv"
    options = {"preset": "tiny", "modes": "train", "device": "cpu", "max_time_s": 0.3, **options}
    summary = api.run(scenario, isolation=False, progress=False, out=out, **options)
    rows = list(api.load_results(out).to_dict("records"))
    assert len(rows) == len(summary.rows)
    sidecar = out.with_suffix(".samples.jsonl")
    records = [json.loads(line) for line in sidecar.read_text().splitlines()] if sidecar.exists() else []
    return rows, records


@pytest.fixture(scope="module")
def encoder_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``encoder`` eager and compiled (aot_eager), one CSV with its sidecar."""
    folder = tmp_path_factory.mktemp("encoder_rows")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench.compiling, "BACKEND", "aot_eager")
        _run(folder, "encoder", compile="none,default")
    return folder / "encoder.csv"


def _rows_and_records(csv: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = list(api.load_results(csv).to_dict("records"))
    records = [json.loads(line) for line in csv.with_suffix(".samples.jsonl").read_text().splitlines()]
    return rows, records


def test_encoder_rows_report_no_graph_break_and_one_shared_block_graph(encoder_csv: Path) -> None:
    rows, records = _rows_and_records(encoder_csv)
    eager, comp = rows
    assert (eager["compile"], comp["compile"]) == ("none", "default")
    assert eager["status"] == comp["status"] == "ok", comp["reason"]
    # an eager row has no compile figures; the compiled one has torch's counters
    assert all(pd.isna(eager[c]) for c in ("compile_time_s", "graph_breaks", "unique_graphs", "recompiles"))
    assert comp["graph_breaks"] == 0
    assert comp["unique_graphs"] == 2  # one graph serves both layers; the loss is the second
    assert comp["recompiles"] == 0
    assert comp["compile_time_s"] > 0
    assert comp["config_key"] == eager["config_key"] + "|compile=default"
    assert "compile" not in eager["config_key"]
    assert comp["mem_method"] == "mem_tracker:eager" and eager["mem_method"] == "mem_tracker"
    assert comp["flops_per_step"] == eager["flops_per_step"]  # the model's FLOPs either way
    rec = records[1]["compile"]
    # compile_time_s: what the first call took beyond one steady compiled step
    assert rec["cold_start_s"] == pytest.approx(comp["compile_time_s"] + comp["time_median_ms"] / 1e3)
    assert rec["compiled"] == ["TransformerEncoderLayer x2", "loss"]
    assert rec["break_reasons"] == {} and rec["timed_compiles"] == 0
    assert "compile" not in records[0]  # an eager row's sidecar has no compile record
    assert "torch.compile" not in str(comp["reason"])


def test_compare_by_compile_gives_the_speed_up_and_the_break_even(encoder_csv: Path) -> None:
    from bench.report.compare_format import as_dict
    from bench.results.compare import compare_by
    from bench.results.compare_pairs import break_even_steps

    assert break_even_steps(10.0, 100.0, 0.5) == pytest.approx(200.0)  # 10 s / (0.1 s - 0.05 s)
    assert break_even_steps(10.0, 100.0, 1.0) == math.inf  # not faster: never
    d = as_dict(compare_by([encoder_csv], "compile"))
    assert d["by"] == {"axis": "compile", "base_value": "none"}
    (p,) = d["pairs"]
    rows, _ = _rows_and_records(encoder_csv)
    assert p["compile_time_s"] == pytest.approx(rows[1]["compile_time_s"])
    # compile_time_s / (eager step - compiled step), from the ratio the CI is built on
    saved_s = p["base_value"] / 1e3 * (1 - p["ratio"])
    expected = "never" if saved_s <= 0 else pytest.approx(p["compile_time_s"] / saved_s)
    assert p["break_even_steps"] == expected
    assert "compile" in p["summary"] and (
        "pays off after" in p["summary"] or "never pays off" in p["summary"]
    )
    r = CliRunner().invoke(app, ["compare", str(encoder_csv), "--by", "compile", "--format", "markdown"])
    assert r.exit_code == 0, r.output
    assert "compile=default" in r.output and "compile " in r.output


def test_the_report_draws_the_compile_figure(encoder_csv: Path) -> None:
    from matplotlib.figure import Figure

    from bench.report.figures_compile import compile_figure

    df = api.load_results(encoder_csv)
    notes: list[str] = []
    fig = compile_figure(df, notes)
    assert isinstance(fig, Figure), fig
    texts = [t.get_text() for ax in fig.get_axes() for t in ax.texts]
    assert any(t.endswith(" s") for t in texts)  # the compile time
    assert any("steps" in t or t == "never" for t in texts)  # the break-even
    assert any(t.startswith("×") for t in texts)  # the speed-up
    eager_only = df[df["compile"] == "none"]
    assert "no compiled row" in str(compile_figure(eager_only, []))


def test_item_mid_forward_is_a_graph_break_with_the_reason_in_the_sidecar(
    tmp_path: Path, aot_eager: None
) -> None:
    rows, records = _run(tmp_path, "_compile_probe", compile="default", params={"item": True})
    (row,) = rows
    assert row["status"] == "ok", row["reason"]
    assert row["graph_breaks"] >= 1
    reasons = records[0]["compile"]["break_reasons"]
    assert sum(reasons.values()) == row["graph_breaks"]
    assert any("item" in msg for msg in reasons), reasons  # torch's own message names Tensor.item()


def test_a_shape_change_in_the_timed_steps_is_a_recompile_and_a_noisy_row(
    tmp_path: Path, aot_eager: None
) -> None:
    # call 1: the cold start, call 2: the one warm-up call, call 3 on: timed, one sample fewer
    rows, records = _run(
        tmp_path, "_compile_probe", compile="default", params={"reshape_at": 3}, warmup_iters=1
    )
    (row,) = rows
    assert row["status"] == "ok", row["reason"]
    assert row["recompiles"] >= 1
    assert row["graph_breaks"] == 0
    rec = records[0]["compile"]
    assert rec["timed_compiles"] >= 1
    assert any("size mismatch" in r for r in rec["recompile_reasons"]), rec["recompile_reasons"]
    assert row["noisy"] is True
    assert "torch.compile compiled" in row["reason"] and "during the timed steps" in row["reason"]


def test_a_shape_change_before_timing_is_a_recompile_but_not_noisy(tmp_path: Path, aot_eager: None) -> None:
    rows, records = _run(
        tmp_path, "_compile_probe", compile="default", params={"reshape_at": 2}, warmup_iters=1
    )
    (row,) = rows
    assert row["recompiles"] >= 1 and records[0]["compile"]["timed_compiles"] == 0
    assert "torch.compile" not in str(row["reason"])


# --- failure is data ----------------------------------------------------------------------------------


def test_reduce_overhead_on_cpu_is_a_skipped_row(tmp_path: Path) -> None:
    rows, _ = _run(tmp_path, "_linear", compile="reduce-overhead")
    (row,) = rows
    assert row["status"] == "skipped"
    assert "CUDA graphs" in row["reason"] and "cpu" in row["reason"]
    assert row["compile"] == "reduce-overhead"


def test_inductor_without_a_cpp_compiler_is_a_skipped_row_with_torchs_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", (None, str(tmp_path / "no-such-g++")))
    rows, _ = _run(tmp_path, "_linear", compile="default")
    (row,) = rows
    assert row["status"] == "skipped"
    assert "inductor needs a C++ compiler" in row["reason"]
    assert "No working C++ compiler found" in row["reason"]  # torch's InvalidCxxCompiler


def test_a_compile_error_is_an_error_row_with_torchs_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_backend(gm: Any, example_inputs: Any) -> Any:
        raise RuntimeError("this backend cannot compile anything")

    monkeypatch.setattr(bench.compiling, "BACKEND", broken_backend)
    rows, _ = _run(tmp_path, "_compile_probe", compile="default")
    (row,) = rows
    assert row["status"] == "error"
    assert "this backend cannot compile anything" in row["reason"]


# --- parallel jobs and profiles ---------------------------------------------------------------------


def test_parallel_jobs_compile_in_their_slot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixture model (blocks detected) under ddp, fsdp and a traced pipeline, compiled in every rank.

    DDP and FSDP wrap compiled blocks: FSDP's per-block hooks stay outside the compiled regions, so no
    graph breaks; a pipeline compiles its stage once cut. ``DLBENCH_COMPILE_BACKEND`` reaches the ranks.
    """
    monkeypatch.setenv(bench.compiling.BACKEND_ENV, "aot_eager")
    monkeypatch.chdir(ROOT)
    rows, records = _run(
        tmp_path,
        FIXTURE,
        compile="default",
        parallel="ddp,fsdp,pipeline",
        nproc=2,
        max_time_s=0.2,
    )
    assert [r["parallel"] for r in rows] == ["ddp", "fsdp", "pipeline"]
    for row in rows:
        assert row["status"] == "ok", (row["parallel"], row["reason"])
        assert row["compile"] == "default" and row["compile_time_s"] > 0
        assert row["graph_breaks"] == 0, (row["parallel"], records)
        assert row["config_key"].endswith(
            f"|compile=default|par={row['parallel']}|ws=2"
            + (f"|mb={row['microbatches']}|sched=gpipe" if row["parallel"] == "pipeline" else "")
        )
        extra = json.loads(row["extra"]) if isinstance(row["extra"], str) else row["extra"]
        assert extra["compile_backend"] == "aot_eager"
    compiled = [
        json.loads(r["extra"])["compiled"] if isinstance(r["extra"], str) else r["extra"]["compiled"]
        for r in rows
    ]
    assert compiled == ["DecoderBlock x2, loss", "DecoderBlock x2, loss", "GraphModule (whole stage)"]


def test_a_profile_of_a_compiled_step(tmp_path: Path, aot_eager: None) -> None:
    """The trace shows the compiled steps and no compilation: the first step compiled before it."""
    from bench.profile.scenario import plan_profile

    plan = plan_profile(
        "_compile_probe", preset="tiny", device="cpu", compile="default", out_dir=tmp_path / "p",
        isolation=False, wait=0, warmup=0, active=1, with_stack=False,
    )  # fmt: skip
    res = plan.run()
    trace = res.chrome_trace.read_text(encoding="utf-8")
    assert "Torch-Compiled Region" in trace  # the compiled blocks ran in the recorded step
    assert "(dynamo_timed)" not in trace  # dynamo's compile-time events: none recorded
