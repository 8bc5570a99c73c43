"""Scenario smoke and contract tests, generated from the registry.

Every registered (non-test-only) scenario builds in its ``tiny`` preset on CPU and runs one step
in every supported mode through ``bench.workload.make_step`` (fp32 and amp-bf16; activation
checkpointing in train mode where the scenario declares targets): the loss is finite, every
parameter gets a gradient and the optimizer moves them. Then the config fields of the built-in
scenarios are checked to reach the model and the batch (shapes, items per step, layer counts,
attention path, memory format, optimizer kind).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch
from torch import nn

from bench.registry import PRESETS, BuildContext, ScenarioSpec, load_scenarios
from bench.workload import Workload, build_workload, make_step

SCENARIOS = load_scenarios()
PUBLIC = sorted(name for name, spec in SCENARIOS.items() if not spec.test_only)
BUILTIN = ("attention", "encoder", "transformer", "resblock", "resnet", "optimizer")


def _build(name: str, mode: str = "train", preset: str = "tiny", **overrides: Any) -> Workload:
    spec = SCENARIOS[name]
    return build_workload(
        spec, spec.make_config(preset, **overrides), BuildContext(device="cpu", mode=mode, seed=0)
    )


def _step_cases() -> list[Any]:
    cases = []
    for name in PUBLIC:
        spec = SCENARIOS[name]
        for mode in spec.modes:
            if mode in spec.unsupported_modes:
                continue
            for precision in ("fp32", "amp-bf16"):
                cases.append(pytest.param(name, mode, precision, "none", id=f"{name}-{mode}-{precision}"))
            if mode == "train":
                cases.append(pytest.param(name, mode, "amp-bf16", "full", id=f"{name}-{mode}-amp-bf16-ckpt"))
    return cases


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_scenarios_registered_with_all_presets(name: str) -> None:
    spec = SCENARIOS[name]
    assert set(spec.presets) == set(PRESETS)
    assert spec.description
    for field in ("batch_size", "width") if name != "optimizer" else ("num_params", "optimizer"):
        assert field in spec.parameters(), f"{name} lacks the CLI field {field!r}"


@pytest.mark.parametrize("name", PUBLIC)
def test_presets_validate(name: str) -> None:
    spec: ScenarioSpec = SCENARIOS[name]
    for preset in spec.presets:
        cfg = spec.make_config(preset)
        assert dataclasses.is_dataclass(cfg)
        with pytest.raises(dataclasses.FrozenInstanceError):
            cfg.__setattr__(dataclasses.fields(cfg)[0].name, None)
    with pytest.raises(ValueError, match="no parameter"):
        spec.make_config("tiny", no_such_field=1)


@pytest.mark.parametrize(("name", "mode", "precision", "checkpointing"), _step_cases())
def test_tiny_step_runs(name: str, mode: str, precision: str, checkpointing: str) -> None:
    w = _build(name, mode)
    if checkpointing == "full" and w.custom_step is None:  # every model scenario must be checkpointable
        assert w.blocks, f"{name} declares no repeated blocks"
    assert w.items_per_step > 0 and w.unit
    losses: list[float] = []
    if w.loss_fn is not None or w.custom_step is None:
        from bench.workload import _default_loss

        inner = w.loss_fn or _default_loss

        def recording_loss(out: Any) -> torch.Tensor:
            loss = inner(out)
            losses.append(float(loss.detach()))
            return loss

        w.loss_fn = recording_loss
    before = _snapshot(w.model)
    step = make_step(w, mode=mode, precision=precision, checkpointing=checkpointing, device="cpu")
    if mode == "forward":
        assert w.optimizer is None or w.custom_step is None
        step.run()
        with torch.no_grad():
            out = w.model(*w.inputs)
        out = out[0] if isinstance(out, tuple | list) else out
        assert torch.isfinite(out.float()).all()
        after = _snapshot(w.model)
        assert all(torch.equal(before[n], after[n]) for n in before), "a forward step changed parameters"
        return
    if w.custom_step is not None:
        step.run()
    else:
        phases = dict(step.phases)
        assert list(phases) == ["forward", "backward", "optimizer"]
        phases["forward"]()
        phases["backward"]()
        missing = [n for n, p in w.model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, f"parameters without gradient after backward: {missing[:5]}"
        phases["optimizer"]()
        assert losses and all(math.isfinite(v) for v in losses), losses
    after = _snapshot(w.model)
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert len(changed) == len(before), (
        f"unchanged after a train step: {sorted(set(before) - set(changed))[:5]}"
    )
    assert all(torch.isfinite(t).all() for t in after.values())
    step.run()  # a second step runs too (optimizer state exists now)


@pytest.mark.parametrize("name", [n for n in BUILTIN if n != "optimizer"])
def test_checkpointing_wraps_targets(name: str) -> None:
    from dlcore.train.checkpointing import is_activation_checkpointed

    w = _build(name)
    make_step(w, mode="train", precision="fp32", checkpointing="full")
    wrapped = [m for m in w.model.modules() if is_activation_checkpointed(m)]
    assert wrapped and all(isinstance(m, w.blocks) for m in wrapped)


def test_same_seed_same_workload() -> None:
    a, b = _build("encoder"), _build("encoder")
    for (na, pa), (nb, pb) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        assert na == nb and torch.equal(pa, pb)
    assert torch.equal(a.inputs[0], b.inputs[0])


# ---------------------------------------------------------------- config fields reach the workload
@pytest.mark.parametrize(
    ("name", "overrides", "shapes", "items"),
    [
        ("attention", {"batch_size": 3, "seq_len": 5, "width": 16, "heads": 2}, [(3, 5, 16)], 15),
        ("encoder", {"batch_size": 3, "seq_len": 7, "width": 16, "heads": 2}, [(3, 7, 16)], 21),
        ("transformer", {"batch_size": 3, "seq_len": 6, "tgt_len": 4}, [(3, 6), (3, 4)], 12),
        ("resblock", {"batch_size": 3, "image_size": 5, "width": 8}, [(3, 8, 5, 5)], 3),
        ("resnet", {"batch_size": 3, "image_size": 40}, [(3, 3, 40, 40)], 3),
    ],
)
def test_config_sets_input_shape_and_items(
    name: str, overrides: dict[str, Any], shapes: list[tuple[int, ...]], items: int
) -> None:
    w = _build(name, "forward", **overrides)
    assert [tuple(x.shape) for x in w.inputs[: len(shapes)]] == shapes
    assert w.items_per_step == items
    assert w.optimizer is None  # forward mode builds no optimizer
    with torch.no_grad():
        w.model(*w.inputs)


def test_attention_fields() -> None:
    from dlcore import MultiHeadAttention

    w = _build("attention", "forward", width=24, heads=3, attn_impl="math", causal=True)
    attn = [m for m in w.model.modules() if isinstance(m, MultiHeadAttention)]
    assert len(attn) == 1 and attn[0].embed_dim == 24 and attn[0].num_heads == 3
    assert attn[0].attn_impl == "math"
    assert w.unit == "tokens" and w.extra["attn_impl"] == "math" and w.extra["causal"] is True
    # causal: the first token's output does not depend on later tokens
    x = w.inputs[0]
    with torch.no_grad():
        y1 = w.model(x)
        x2 = x.clone()
        x2[:, 1:] += 1.0
        y2 = w.model(x2)
    torch.testing.assert_close(y1[:, 0], y2[:, 0])
    assert not torch.allclose(y1[:, 1:], y2[:, 1:])
    # sdpa and math paths agree
    ws = _build("attention", "forward", width=24, heads=3, attn_impl="sdpa", causal=True)
    with torch.no_grad():
        torch.testing.assert_close(ws.model(x), y1, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="attn_impl"):
        SCENARIOS["attention"].make_config("tiny", attn_impl="flash")
    with pytest.raises(ValueError, match="divisible"):
        SCENARIOS["attention"].make_config("tiny", width=30, heads=4)


def test_encoder_fields() -> None:
    from dlcore import MultiHeadAttention, TransformerEncoderLayer

    w = _build("encoder", "forward", depth=3, width=16, heads=2, ffn_mult=2, attn_impl="math")
    layers = [m for m in w.model.modules() if isinstance(m, TransformerEncoderLayer)]
    assert len(layers) == 3
    assert layers[0].linear1.out_features == 32
    assert all(m.attn_impl == "math" for m in w.model.modules() if isinstance(m, MultiHeadAttention))
    w = _build("encoder", "forward", causal=True)
    x = w.inputs[0]
    with torch.no_grad():
        y1 = w.model(*w.inputs)
        x2 = x.clone()
        x2[:, -1] += 1.0
        y2 = w.model(x2, *w.inputs[1:])
    torch.testing.assert_close(y1[:, :-1], y2[:, :-1])


def test_transformer_fields() -> None:
    from dlcore import TransformerDecoderLayer, TransformerEncoderLayer

    w = _build("transformer", "train", depth=2, vocab_size=50)
    assert sum(isinstance(m, TransformerEncoderLayer) for m in w.model.modules()) == 2
    assert sum(isinstance(m, TransformerDecoderLayer) for m in w.model.modules()) == 2
    src, tgt = w.inputs
    assert src.dtype == tgt.dtype == torch.int64 and int(src.max()) < 50
    logits = w.model(src, tgt)
    assert logits.shape == (*tgt.shape, 50)
    loss = w.loss_fn(logits)
    assert abs(float(loss.detach()) - math.log(50)) < 1.0  # untrained cross-entropy is about log(V)
    assert w.extra["src_tokens"] == src.numel()


@pytest.mark.parametrize("name", ["resblock", "resnet"])
def test_channels_last(name: str) -> None:
    w = _build(name, "forward", channels_last=True)
    assert w.inputs[0].is_contiguous(memory_format=torch.channels_last)
    conv = next(m for m in w.model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert w.extra["channels_last"] is True
    spec = SCENARIOS[name]
    w = build_workload(spec, spec.make_config("tiny"), BuildContext(mode="forward", channels_last=True))
    assert w.inputs[0].is_contiguous(memory_format=torch.channels_last)  # the context's flag works too
    with torch.no_grad():
        w.model(*w.inputs)


def test_resblock_depth_and_width() -> None:
    from dlcore import PreActBottleneck

    w = _build("resblock", "forward", depth=3, width=32)
    blocks = [m for m in w.model.modules() if isinstance(m, PreActBottleneck)]
    assert len(blocks) == 3 and all(b.in_channels == b.out_channels == 32 for b in blocks)
    with pytest.raises(ValueError, match="multiple of 4"):
        SCENARIOS["resblock"].make_config("tiny", width=18)


def test_resnet_fields() -> None:
    w = _build("resnet", "forward", width=4, num_classes=7)
    assert w.model.stem[0].out_channels == 4
    with torch.no_grad():
        assert w.model(*w.inputs).shape == (2, 7)
    assert int(w.inputs[0].shape[1]) == 3
    spec = SCENARIOS["resnet"]
    assert spec.make_config("large").arch == "resnet50" and spec.make_config("large").width == 0
    with pytest.raises(ValueError, match="impl"):
        spec.make_config("tiny", impl="torchvision")
    with pytest.raises(ValueError, match="width"):
        spec.make_config("tiny", impl="timm", width=8)


def test_resnet_timm_impl() -> None:
    from bench.foreign.compat import ensure_importable

    try:
        ensure_importable()  # a torchvision built against another torch (see bench.foreign.compat)
        import timm  # noqa: F401
    except ImportError:
        # a missing optional package is refused by the config, in the parent, before any build
        with pytest.raises(ValueError, match="needs the timm package"):
            _build("resnet", "forward", impl="timm", arch="resnet18", num_classes=5)
        return
    w = _build("resnet", "train", impl="timm", arch="resnet18", num_classes=5)
    step = make_step(w, mode="train", precision="fp32", checkpointing="full")
    step.run()


@pytest.mark.parametrize("kind", ["adamw_warmup", "adamw_fused", "adamw_foreach", "adamw_forloop", "sgd"])
def test_optimizer_kinds(kind: str) -> None:
    from dlcore import AdamWWithWarmup

    w = _build("optimizer", num_params=1000, num_tensors=3, optimizer=kind)
    params = list(w.model.parameters())
    assert [p.numel() for p in params] == [334, 333, 333]
    assert w.items_per_step == 1000 and w.unit == "params"
    assert w.extra["bytes_per_step"] == (20 if kind == "sgd" else 28) * 1000
    expected = {"sgd": torch.optim.SGD, "adamw_warmup": AdamWWithWarmup}.get(kind, torch.optim.AdamW)
    assert isinstance(w.optimizer, expected)
    before = _snapshot(w.model)
    step = make_step(w, mode="train", precision="fp32")
    assert step.phase_names == ["optimizer"]
    step.run()
    step.run()
    assert all(p.grad is not None for p in params)  # grads are set once and kept
    assert all(not torch.equal(before[n], p) for n, p in w.model.named_parameters())
    # the other scenarios take the same optimizer field
    tw = _build("attention", "train", optimizer=kind)
    assert isinstance(tw.optimizer, expected)


def test_optimizer_forward_unsupported() -> None:
    spec = SCENARIOS["optimizer"]
    assert "forward" in spec.unsupported_modes and "train" not in spec.unsupported_modes
    with pytest.raises(ValueError, match="optimizer"):
        spec.make_config("tiny", optimizer="lion")
    with pytest.raises(ValueError, match="num_tensors"):
        spec.make_config("tiny", num_params=2, num_tensors=3)


@pytest.mark.parametrize("name", BUILTIN)
def test_end_to_end_run_tiny(name: str, tmp_path: Any) -> None:
    """One in-process ``bench.api.run`` per scenario (tiny preset, fp32, both modes): rows are written."""
    from bench.api import run

    summary = run(
        name,
        preset="tiny",
        modes="forward,train",
        precisions="fp32",
        out=tmp_path / f"{name}.csv",
        isolation=False,
        progress=False,
        max_time_s=0.2,
        resume=False,
    )
    by_mode = {r["mode"]: r for r in summary.rows}
    assert set(by_mode) == {"forward", "train"}
    for mode, row in by_mode.items():
        if mode in SCENARIOS[name].unsupported_modes:
            assert row["status"] == "skipped" and row["reason"] == SCENARIOS[name].unsupported_modes[mode]
            continue
        assert row["status"] == "ok", row.get("reason")
        assert float(row["time_median_ms"]) > 0 and float(row["throughput"]) > 0
        assert row["throughput_unit"].endswith("/s")
    assert summary.csv_path.exists()
