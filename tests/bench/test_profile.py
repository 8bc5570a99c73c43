"""bench.profile: the files ``profile_step`` writes, the summary.json contract, and categorisation.

One profile of the tiny attention scenario (amp-bf16, train, CPU, two active steps) is shared by
the file tests; the summary arithmetic and the categoriser are tested on plain rows.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.profile.summary import (
    CATEGORIES,
    CSV_COLUMNS,
    SUMMARY_KEYS,
    OpRow,
    categorize,
    interval_union_us,
    summarize,
)

TOP_OP_KEYS = {"name", "self_time_us", "calls", "share"}


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory):
    from bench.profile import profile_step
    from bench.registry import BuildContext, get_scenario
    from bench.workload import make_step

    spec = get_scenario("attention")
    cfg = spec.make_config("tiny")
    w = spec.build(cfg, BuildContext(device="cpu", mode="train", seed=0))
    step = make_step(w, mode="train", precision="amp-bf16", checkpointing="none", device="cpu")
    out = tmp_path_factory.mktemp("profile")
    return profile_step(step, device="cpu", out_dir=out, active=2, scenario="attention")


# --- the files ------------------------------------------------------------------------------------


def test_files_exist(profiled) -> None:
    for path in profiled.files():
        assert path.is_file() and path.stat().st_size > 0, path
    assert profiled.tensorboard_trace.parent == profiled.out_dir
    assert profiled.tensorboard_trace.name.endswith(".pt.trace.json")
    assert profiled.tensorboard_trace.name.startswith(profiled.worker_name + ".")
    assert profiled.chrome_trace.name == "trace.json"
    assert profiled.artifacts_dir == profiled.out_dir


def test_chrome_trace_is_json_with_phases(profiled) -> None:
    trace = json.loads(profiled.chrome_trace.read_text())
    events = trace["traceEvents"]
    assert isinstance(events, list) and events
    names = {e.get("name") for e in events}
    assert {"forward", "backward", "optimizer"} <= names  # record_function labels per phase
    assert any(str(n).startswith("ProfilerStep") for n in names)
    assert {"aten::mm", "aten::addmm"} & names


def test_top_ops_csv_has_matmul_family(profiled) -> None:
    with profiled.top_ops_csv.open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
        rows = list(reader)
    assert rows
    matmul = {r["name"] for r in rows if r["category"] == "matmul"}
    assert {"aten::mm", "aten::addmm", "aten::linear"} & matmul
    times = [float(r["self_time_us"]) for r in rows]
    assert times == sorted(times, reverse=True)
    assert not any(r["name"].startswith("ProfilerStep") or r["name"] == "forward" for r in rows)
    md = profiled.top_ops_md.read_text()
    assert "| category | share |" in md and "aten::" in md


def test_summary_json_contract(profiled) -> None:
    summary = json.loads(profiled.summary_json.read_text())
    assert summary == profiled.summary
    assert set(summary) == set(SUMMARY_KEYS)
    assert summary["scenario"] == "attention"
    assert summary["device"] == "cpu"
    assert summary["active_steps"] == 2
    assert summary["step_time_ms"] > 0
    cats = summary["categories"]
    assert list(cats) == list(CATEGORIES)
    assert all(0.0 <= v <= 1.0 for v in cats.values())
    assert 0.99 <= sum(cats.values()) <= 1.01
    assert cats["matmul"] > 0 and cats["attention"] > 0 and cats["optimizer"] > 0
    assert cats["communication"] == 0.0
    assert summary["top_ops"]
    for op in summary["top_ops"]:
        assert set(op) == TOP_OP_KEYS
        assert isinstance(op["name"], str) and isinstance(op["calls"], int)
        assert op["self_time_us"] > 0 and 0 < op["share"] <= 1
    assert sum(op["share"] for op in summary["top_ops"]) <= 1 - cats["idle"] + 1e-9


def test_memory_timeline_needs_with_stack(profiled) -> None:
    assert profiled.memory_timeline is None
    assert "with_stack=True" in profiled.memory_timeline_note


def test_profile_scenario_rank_layout_and_memory_timeline(tmp_path: Path) -> None:
    from bench.profile import profile_scenario

    res = profile_scenario(
        "attention",
        preset="tiny",
        precision="amp-bf16",
        params={"seq_len": "16"},  # CLI strings are parsed to the field's type
        out_dir=tmp_path,
        wait=0,
        warmup=1,
        active=1,
        with_stack=True,
        rank=1,
    )
    assert res.worker_name == "rank1"
    assert res.tensorboard_trace.parent == tmp_path.resolve()
    assert res.tensorboard_trace.name.startswith("rank1.")
    assert res.artifacts_dir == tmp_path.resolve() / "rank1"
    assert (res.artifacts_dir / "summary.json").is_file()
    assert res.summary["active_steps"] == 1
    # export_memory_timeline works on CPU in torch 2.13 (with record_shapes, profile_memory, with_stack)
    assert res.memory_timeline is not None and res.memory_timeline.is_file()
    assert res.memory_timeline_data is not None
    times, sizes = json.loads(res.memory_timeline_data.read_text())
    assert len(times) == len(sizes) > 0 and max(sum(s) for s in sizes) > 0
    # Python frames recorded by with_stack are not operators
    assert not any(op["name"].startswith("<built-in") for op in res.summary["top_ops"])
    assert 0.99 <= sum(res.summary["categories"].values()) <= 1.01


def test_profile_scenario_rejects_bad_input(tmp_path: Path) -> None:
    from bench.errors import UsageError
    from bench.profile import profile_scenario

    with pytest.raises(UsageError, match="amp-fp16"):
        profile_scenario("attention", preset="tiny", precision="amp-fp16", out_dir=tmp_path)
    with pytest.raises(ValueError, match="no parameter"):
        profile_scenario("attention", preset="tiny", params={"nope": 1}, out_dir=tmp_path)
    with pytest.raises(ValueError, match="active"):
        profile_scenario("attention", preset="tiny", out_dir=tmp_path, active=0)
    assert not list(tmp_path.iterdir())  # nothing written before the input is checked


# --- summarize on plain rows ----------------------------------------------------------------------


def test_summarize_counts_only_operator_self_times() -> None:
    rows = [
        OpRow("ProfilerStep*", 40.0, kind="annotation"),
        OpRow("forward", 30.0, kind="annotation"),
        OpRow("<built-in method run_backward>", 10.0, kind="python"),
        OpRow("aten::linear", 5.0, calls=2),  # its own self time only; the addmm below is separate
        OpRow("aten::addmm", 40.0, calls=2),
        {"name": "aten::gelu", "self_time_us": 15.0, "calls": 1},  # a plain mapping works too
        OpRow("aten::copy_", 10.0),
        OpRow("aten::view", 0.0),  # zero time: no share, not a top op
    ]
    s = summarize(rows, step_time_us=100.0)
    cats = s["categories"]
    assert cats["matmul"] == pytest.approx(0.45)
    assert cats["elementwise"] == pytest.approx(0.15)
    assert cats["memory_copy"] == pytest.approx(0.10)
    assert cats["idle"] == pytest.approx(0.30)
    assert sum(cats.values()) == pytest.approx(1.0)
    assert [op["name"] for op in s["top_ops"]] == ["aten::addmm", "aten::gelu", "aten::copy_", "aten::linear"]
    assert s["top_ops"][0] == {"name": "aten::addmm", "self_time_us": 40.0, "calls": 2, "share": 0.4}


def test_summarize_overlap_is_scaled_to_the_busy_time() -> None:
    # two streams' worth of kernels attributed (120 us) while the device was busy 80 us of 100 us
    rows = [OpRow("aten::mm", 90.0), OpRow("nccl:all_reduce", 30.0)]
    s = summarize(rows, step_time_us=100.0, busy_us=80.0)
    cats = s["categories"]
    assert cats["matmul"] == pytest.approx(0.6)
    assert cats["communication"] == pytest.approx(0.2)
    assert cats["idle"] == pytest.approx(0.2)
    assert sum(cats.values()) == pytest.approx(1.0)
    assert s["top_ops"][0]["share"] == pytest.approx(0.6)


def test_summarize_unattributed_busy_time_is_other_and_overfull_step_has_no_idle() -> None:
    s = summarize([OpRow("aten::mm", 50.0)], step_time_us=100.0, busy_us=70.0)
    assert s["categories"]["other"] == pytest.approx(0.2)
    assert s["categories"]["idle"] == pytest.approx(0.3)
    s = summarize([OpRow("aten::mm", 150.0)], step_time_us=100.0)  # two threads busy at once
    assert s["categories"]["matmul"] == pytest.approx(1.0)
    assert s["categories"]["idle"] == 0.0
    empty = summarize([], step_time_us=0.0)["categories"]
    assert empty["idle"] == 1.0 and sum(empty.values()) == 1.0


def test_interval_union_counts_overlap_once_and_clips_to_windows() -> None:
    kernels = [(0.0, 10.0), (5.0, 15.0), (20.0, 30.0), (28.0, 29.0), (40.0, 60.0)]
    assert interval_union_us(kernels, [(0.0, 100.0)]) == pytest.approx(15 + 10 + 20)
    assert interval_union_us(kernels, [(0.0, 12.0), (25.0, 50.0)]) == pytest.approx(12 + 5 + 10)
    assert interval_union_us([], [(0.0, 1.0)]) == 0.0


def test_summary_module_imports_no_torch() -> None:
    code = "import sys, bench.profile.summary, bench.profile.hta; assert 'torch' not in sys.modules, 'torch'"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


# --- categorize -----------------------------------------------------------------------------------

TRUTH_TABLE = [
    # matmul family (convolutions included: they run as GEMMs)
    ("aten::mm", "matmul"),
    ("aten::addmm", "matmul"),
    ("aten::bmm", "matmul"),
    ("aten::baddbmm", "matmul"),
    ("aten::matmul", "matmul"),
    ("aten::linear", "matmul"),
    ("aten::conv2d", "matmul"),
    ("aten::convolution", "matmul"),
    ("aten::_convolution", "matmul"),
    ("aten::mkldnn_convolution", "matmul"),
    ("aten::cudnn_convolution", "matmul"),
    ("aten::convolution_backward", "matmul"),
    ("aten::slow_conv2d_forward", "matmul"),
    ("aten::conv_transpose2d", "matmul"),
    ("ampere_bf16_s16816gemm_bf16_128x128_ldg8_f2f_stages_32x5_nn", "matmul"),
    ("nvjet_tst_128x256_64x4_2x1_v_bz_coopA_TNT", "matmul"),
    # attention
    ("aten::scaled_dot_product_attention", "attention"),
    ("aten::_scaled_dot_product_flash_attention", "attention"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu_backward", "attention"),
    ("aten::_scaled_dot_product_efficient_attention", "attention"),
    ("aten::_flash_attention_forward", "attention"),
    ("aten::_efficient_attention_backward", "attention"),
    ("aten::_scaled_dot_product_cudnn_attention", "attention"),
    ("fmha_cutlassF_bf16_aligned_64x64_rf_sm80", "attention"),
    # normalization
    ("aten::layer_norm", "normalization"),
    ("aten::native_layer_norm", "normalization"),
    ("aten::native_layer_norm_backward", "normalization"),
    ("aten::batch_norm", "normalization"),
    ("aten::native_batch_norm", "normalization"),
    ("aten::_batch_norm_impl_index", "normalization"),
    ("aten::cudnn_batch_norm_backward", "normalization"),
    ("aten::group_norm", "normalization"),
    ("aten::native_group_norm", "normalization"),
    ("aten::rms_norm", "normalization"),
    ("aten::_fused_rms_norm", "normalization"),
    # elementwise (pointwise, activations, softmax, dropout, single-pass reductions)
    ("aten::add", "elementwise"),
    ("aten::add_", "elementwise"),
    ("aten::mul", "elementwise"),
    ("aten::div_", "elementwise"),
    ("aten::gelu", "elementwise"),
    ("aten::gelu_backward", "elementwise"),
    ("aten::relu", "elementwise"),
    ("aten::threshold_backward", "elementwise"),
    ("aten::softmax", "elementwise"),
    ("aten::_softmax", "elementwise"),
    ("aten::_softmax_backward_data", "elementwise"),
    ("aten::dropout", "elementwise"),
    ("aten::native_dropout", "elementwise"),
    ("aten::native_dropout_backward", "elementwise"),
    ("aten::silu", "elementwise"),
    ("aten::pow", "elementwise"),
    ("aten::mean", "elementwise"),
    ("aten::sum", "elementwise"),
    ("aten::fill_", "elementwise"),
    ("aten::linalg_vector_norm", "elementwise"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::GeluCUDAKernelImpl>", "elementwise"),
    # memory copies
    ("aten::copy_", "memory_copy"),
    ("aten::to", "memory_copy"),
    ("aten::_to_copy", "memory_copy"),
    ("aten::contiguous", "memory_copy"),
    ("aten::clone", "memory_copy"),
    ("aten::cat", "memory_copy"),
    ("aten::stack", "memory_copy"),
    ("Memcpy HtoD (Pageable -> Device)", "memory_copy"),
    ("Memset (Device)", "memory_copy"),
    # optimizer
    ("aten::_fused_adamw_", "optimizer"),
    ("aten::_fused_adam_", "optimizer"),
    ("aten::_foreach_add_", "optimizer"),
    ("aten::_foreach_mul_", "optimizer"),
    ("aten::_foreach_norm", "optimizer"),
    ("Optimizer.step#AdamW.step", "optimizer"),
    ("adam_step", "optimizer"),
    # communication
    ("c10d::allreduce_", "communication"),
    ("c10d::_allgather_base_", "communication"),
    ("c10d::_reduce_scatter_base_", "communication"),
    ("record_param_comms", "communication"),
    ("nccl:all_reduce", "communication"),
    ("ncclDevKernel_AllReduce_Sum_f32_RING_LL(ncclDevComm*, unsigned long, ncclWork*)", "communication"),
    ("gloo:all_gather", "communication"),
    ("_c10d_functional::all_gather_into_tensor", "communication"),
    ("_c10d_functional::wait_tensor", "communication"),
    ("all_reduce", "communication"),
    ("reduce_scatter", "communication"),
    # other: views, allocations, autograd engine bookkeeping, unknown
    ("aten::view", "other"),
    ("aten::transpose", "other"),
    ("aten::t", "other"),
    ("aten::empty", "other"),
    ("aten::empty_strided", "other"),
    ("aten::broadcast_tensors", "other"),
    ("aten::_convert_indices_from_coo_to_csr", "other"),
    ("autograd::engine::evaluate_function: AddmmBackward0", "other"),
    ("AddmmBackward0", "other"),
    ("torch::autograd::AccumulateGrad", "other"),
    ("cudaLaunchKernel", "other"),
    ("something_new", "other"),
]


@pytest.mark.parametrize(("name", "category"), TRUTH_TABLE)
def test_categorize(name: str, category: str) -> None:
    assert categorize(name) == category


def test_categorize_never_says_idle() -> None:
    assert "idle" not in {categorize(name) for name, _ in TRUTH_TABLE}
    assert {c for _, c in TRUTH_TABLE} == set(CATEGORIES) - {"idle"}


# --- hta: optional ---------------------------------------------------------------------------------


def test_hta_not_installed_returns_none_with_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bench.profile import hta

    # make `import hta` fail even where HTA happens to be installed
    monkeypatch.setitem(sys.modules, "hta", None)
    monkeypatch.setitem(sys.modules, "hta.trace_analysis", None)
    reason = hta.hta_unavailable_reason()
    assert reason is not None
    assert "not installed" in reason and hta.INSTALL_HINT in reason
    notes: list[str] = []
    assert hta.hta_breakdown(tmp_path, notes=notes) is None
    assert notes == [reason]
    assert hta.hta_breakdown(tmp_path) is None  # without notes: still None, no exception


# --- bounds, partial outputs, an existing profile --------------------------------------------------


def test_the_schedule_is_capped_before_anything_runs(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bench.cli import app

    for flag, value in (("--active", "100000"), ("--warmup", "101"), ("--wait", "10001")):
        r = CliRunner().invoke(
            app, ["profile", "_linear", "--device", "cpu", flag, value, "-o", str(tmp_path / "p")]
        )
        assert r.exit_code == 2 and f"{flag}: expected an integer from" in r.output, r.output
    assert not list(tmp_path.iterdir())


def test_a_profile_without_parallel_honours_its_timeout(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bench.cli import app

    out = tmp_path / "slow"
    r = CliRunner().invoke(
        app, ["profile", "_sleep", "-p", "seconds=600", "--device", "cpu", "--timeout", "3", "-o", str(out)]
    )
    assert r.exit_code == 1, r.output
    assert "profile failed (timeout): the profile ran past --timeout 3 s and was killed" in r.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no partial profile beside it either


def test_an_existing_profile_is_refused_or_replaced_whole_and_commands_are_quoted(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bench.cli import app

    out = tmp_path / "my profile"  # a space: the printed commands quote it
    out.mkdir()
    (out / "summary.json").write_text("{}")  # an earlier profile's files
    (out / "old.1.pt.trace.json").write_text("{}")
    args = ["profile", "_linear", "--device", "cpu", "--wait", "0", "--warmup", "0", "--active", "1",
            "--no-with-stack", "-o", str(out)]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "already holds a profile" in r.output and "--overwrite" in r.output
    r = CliRunner().invoke(app, [*args, "--overwrite"])
    assert r.exit_code == 0, r.output
    traces = [p.name for p in out.glob("*.pt.trace.json")]
    assert len(traces) == 1 and "old.1.pt.trace.json" not in traces  # replaced whole, nothing mixed in
    assert json.loads((out / "summary.json").read_text())["active_steps"] == 1
    assert f"--logdir '{out.resolve()}'" in r.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["my profile"]  # no staging or old folder beside it
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    r = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "other"), "--overwrite"])
    assert r.exit_code == 2 and "not a dlbench profile" in r.output
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
