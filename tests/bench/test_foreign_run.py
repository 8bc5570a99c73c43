"""Your model measured like a built-in: the fixture decoder through ``dlbench run``, timm and HF models.

- ``tests/fixtures/tiny_gpt.py:build`` (a GPT-style decoder outside the package) with
  ``--precision fp32,amp-bf16 --checkpointing none,full --mode train``, through the CLI and a child
  process per row (the relative path resolved in each): every row ``ok``; FLOPs equal to the closed
  form below; checkpointing lowers the tracked activation bytes, and what stays alive after a
  checkpointed forward equals its closed form exactly.
- ``timm:resnet18`` and ``hf:gpt2 -p n_layer=2`` at their smallest honest sizes (``--preset tiny``),
  ``--mode train --precision fp32,amp-bf16``: ``ok`` rows (in this process: the imports are the cost);
  GPT-2's forward FLOPs agree with a closed form from its configuration.
- The README's "Your model" example is the file in ``examples/``, and runs as documented.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bench import api
from bench.cli import app
from bench.harness.memory import measure_memory
from bench.registry import BuildContext, get_scenario
from bench.workload import build_step

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = "tests/fixtures/tiny_gpt.py:build"
# the fixture's tiny preset: batch B, length L, width D, heads, feed-forward F, vocabulary V, N blocks
B, L, D, HEADS, F, V, N = 4, 8, 16, 2, 64, 32, 2
FP32, INT64 = 4, 8


def gpt_train_flops(checkpointing: str) -> int:
    """FLOPs of one train step of the fixture (2 per multiply-accumulate; bench.harness.flops).

    Per block, forward: the linears qkv (D -> 3D), proj (D -> D), fc1 (D -> F), fc2 (F -> D), and causal
    SDPA, counted as half of the dense QK^T + PV (4 B L^2 D). The head (D -> V, no bias). Backward: every
    linear twice its forward (weight and input gradients; the embeddings are lookups, 0 FLOPs), SDPA's
    backward half of its dense 10 B L^2 D. With checkpointing, each block's forward runs again in backward,
    up to the last tensor backward needs (torch's non-reentrant checkpoint stops early): qkv, attention,
    proj and fc1 (fc2's output is not saved, so fc2 is not recomputed).
    """
    to_fc1 = 2 * B * L * (D * 3 * D + D * D + D * F)  # qkv, proj, fc1
    linears = to_fc1 + 2 * B * L * F * D  # + fc2
    attn_fwd, attn_bwd = 4 * B * L * L * D // 2, 10 * B * L * L * D // 2
    head = 2 * B * L * D * V
    forward = N * (linears + attn_fwd) + head
    backward = 2 * (N * linears + head) + N * attn_bwd
    recompute = N * (to_fc1 + attn_fwd) if checkpointing == "full" else 0
    return forward + backward + recompute


def checkpointed_forward_activations() -> int:
    """Bytes autograd keeps after a checkpointed forward of the fixture (fp32), term by term.

    Each checkpointed block keeps only its input (N tensors of B x L x D); the final LayerNorm keeps its
    input and its mean and 1/std (B x L each); the head keeps its input; the loss keeps log-softmax's
    output (B x L x V), its target (``y.flatten()`` copies the non-contiguous slice: B x L int64) and two
    scalars (the loss and nll's total weight); the position embedding keeps its indices (L int64).
    """
    blocks_in, ln_f_in, head_in = N * B * L * D * FP32, B * L * D * FP32, B * L * D * FP32
    ln_stats = 2 * B * L * FP32
    loss = B * L * V * FP32 + B * L * INT64 + 2 * FP32
    positions = L * INT64
    return blocks_in + ln_f_in + ln_stats + head_in + loss + positions


@pytest.fixture(scope="module")
def fixture_rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The issue's command on the fixture file, through the CLI, one child process per row."""
    out = tmp_path_factory.mktemp("fixture") / "gpt.csv"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)  # the relative path as a user types it
        mp.setenv("DLBENCH_SCENARIO_DIR", "")  # restored (removed) afterwards
        args = f"run {FIXTURE} --preset tiny --precision fp32,amp-bf16 --checkpointing none,full --mode train"
        r = CliRunner().invoke(
            app,
            [
                *shlex.split(args),
                "--device",
                "cpu",
                "--max-time",
                "0.2",
                "--target-ci",
                "0.5",
                "--out",
                str(out),
            ],
        )
    assert r.exit_code == 0, r.output
    return list(api.load_results(out).to_dict("records"))


def test_the_fixture_model_gives_ok_rows_with_closed_form_flops(fixture_rows: list[dict[str, Any]]) -> None:
    got = [(r["precision"], r["checkpointing"], r["status"]) for r in fixture_rows]
    want = [(p, c, "ok") for p in ("fp32", "amp-bf16") for c in ("none", "full")]
    assert got == want, [r["reason"] for r in fixture_rows]
    for r in fixture_rows:
        assert r["scenario"] == FIXTURE and r["config_key"].startswith(FIXTURE + "|train|")
        assert r["flops_per_step"] == gpt_train_flops(r["checkpointing"]), r
        assert r["items_per_step"] == B * L and r["throughput_unit"] == "tokens/s"
        assert '"blocks": "DecoderBlock"' in r["extra"] and '"blocks_from": "detected"' in r["extra"]
        assert r["mfu"] > 0 and r["peak_mem_bytes"] > 0 and r["mem_fwd_peak_bytes"] > 0  # MFU, memory
        assert r["torch_version"] and r["cpu_model"] and r["threads"] >= 1  # the environment


def test_checkpointing_lowers_the_fixture_activations_exactly(fixture_rows: list[dict[str, Any]]) -> None:
    by = {(r["precision"], r["checkpointing"]): r for r in fixture_rows}
    for precision in ("fp32", "amp-bf16"):
        full, none = by[(precision, "full")], by[(precision, "none")]
        assert full["mem_activations_bytes"] < none["mem_activations_bytes"]
        assert full["mem_params_bytes"] == none["mem_params_bytes"]
    # the same step measured here: MemTracker's figures are exact, the same in the child and in this process
    spec = get_scenario(str(ROOT / FIXTURE))
    for ckpt in ("none", "full"):
        _, step = build_step(
            spec, spec.make_config("tiny"), BuildContext(device="cpu", mode="train"), precision="fp32",
            checkpointing=ckpt,
        )  # fmt: skip
        mem = measure_memory(step)
        assert mem.mem_activations_bytes == by[("fp32", ckpt)]["mem_activations_bytes"]
        if ckpt == "full":
            assert mem.per_phase["forward"]["at_end"]["activations"] == checkpointed_forward_activations()


# --- timm and Hugging Face, in this process ---------------------------------------------------------------

FAST = {"max_time_s": 0.05, "target_rel_ci": 0.5, "progress": False, "device": "cpu", "isolation": False}


@pytest.mark.parametrize(
    ("name", "params"), [("timm:resnet18", {}), ("hf:gpt2", {"n_layer": [2]})], ids=["timm", "hf"]
)
def test_timm_and_hf_models_train_in_both_precisions(
    name: str, params: dict[str, Any], tmp_path: Path
) -> None:
    s = api.run(
        name, preset="tiny", modes="train", precisions="fp32,amp-bf16", params=params, out=tmp_path / "x.csv",
        **FAST,
    )  # fmt: skip
    assert [r["status"] for r in s.rows] == ["ok", "ok"], [r["reason"] for r in s.rows]
    for r in s.rows:
        assert r["flops_per_step"] > 0 and r["mem_activations_bytes"] > 0 and r["scenario"] == name
        assert r["extra"]["blocks"] == ("BasicBlock" if name.startswith("timm") else "GPT2Block")


def test_hf_gpt2_forward_flops_match_its_configuration() -> None:
    """Every linear's matmuls (attention in/out projections, the MLP, the LM head) plus attention.

    In inference GPT-2 calls SDPA with ``is_causal`` and no mask: the fused kernel skips the masked
    half of the L x L scores, counted as half of the dense QK^T + PV (4 B L^2 d per layer), the
    convention of ``bench.harness.flops``. At L = 64 attention is 9% of the total, so counting it dense
    would be off by more than the 2% allowed (the count here agrees exactly).
    """
    spec = get_scenario("hf:gpt2")
    cfg = spec.make_config("tiny", n_layer=2, seq_len=64)
    b, seq, d, v, layers = cfg.batch_size, cfg.seq_len, cfg.n_embd, cfg.vocab_size, cfg.n_layer
    _, step = build_step(
        spec, cfg, BuildContext(device="cpu", mode="forward"), precision="fp32", checkpointing="none"
    )
    from bench.harness.flops import count_flops

    linears = (
        layers * 2 * b * seq * (d * 3 * d + d * d + d * 4 * d + 4 * d * d)
    )  # c_attn, c_proj, c_fc, c_proj
    attention = layers * 4 * b * seq * seq * d // 2  # causal: half of the dense score matrix
    lm_head = 2 * b * seq * d * v
    closed = linears + attention + lm_head
    assert abs(count_flops(step) - closed) <= 0.02 * closed


# --- the README's example ---------------------------------------------------------------------------------


def test_the_readme_example_is_the_file_and_runs_as_documented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Your model") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    example = ROOT / "bench/examples/your_model/transformer.py"
    assert code.group(1) == example.read_text(encoding="utf-8")  # the README shows the file itself
    commands = re.findall(r"^dlbench run (bench/examples/your_model/\S+.*?)(?:\s+#.*)?$", section, re.M)
    assert commands, "the section shows how to run the example"
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("DLBENCH_SCENARIO_DIR", "")
    argv = ["run", *shlex.split(commands[0]), "--preset", "tiny", "--device", "cpu", "--max-time", "0.05"]
    r = CliRunner().invoke(app, [*argv, "--no-isolation", "--out", str(tmp_path / "ex.csv")])
    assert r.exit_code == 0, r.output
    rows = api.load_results(tmp_path / "ex.csv")
    assert set(rows["status"]) == {"ok"} and len(rows) >= 2
