"""bench.harness.memory: tracked bytes equal closed forms for a Linear stack (fp32) and known optimizers."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch
from torch import nn

from bench.harness.memory import MemoryResult, measure_memory
from bench.workload import Workload, make_step

B, D0, D1, D2, D3 = 4, 8, 16, 12, 20
FP32 = 4


def _model(dims: tuple[int, ...]) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=False)])


def _numel(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


OptFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]
OPTIMIZERS: dict[str, tuple[OptFactory, Callable[[int, int], int]]] = {
    # name: (factory, optimizer-state bytes as a function of (P params, T param tensors))
    "sgd": (lambda ps: torch.optim.SGD(ps, lr=0.1), lambda p, t: 0),
    "sgd-momentum": (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9), lambda p, t: FP32 * p),
    # exp_avg + exp_avg_sq, plus one float32 0-dim `step` tensor per parameter tensor
    "adamw-foreach": (lambda ps: torch.optim.AdamW(ps, foreach=True), lambda p, t: 2 * FP32 * p + FP32 * t),
    "adamw-fused": (lambda ps: torch.optim.AdamW(ps, fused=True), lambda p, t: 2 * FP32 * p + FP32 * t),
    "adamw-single": (lambda ps: torch.optim.AdamW(ps, foreach=False), lambda p, t: 2 * FP32 * p + FP32 * t),
    "adamw-amsgrad": (
        lambda ps: torch.optim.AdamW(ps, foreach=True, amsgrad=True),
        lambda p, t: 3 * FP32 * p + FP32 * t,  # + max_exp_avg_sq
    ),
}


def _train_step(dims: tuple[int, ...], opt_name: str):
    model = _model(dims)
    factory, _ = OPTIMIZERS[opt_name]
    w = Workload(
        model=model,
        inputs=(torch.randn(B, dims[0]),),
        optimizer=factory(list(model.parameters())),
        loss_fn=lambda out: out.sum(),  # saves nothing for backward: activations stay a closed form
    )
    return make_step(w, mode="train", precision="fp32"), model


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_train_step_closed_forms(opt_name: str) -> None:
    step, model = _train_step((D0, D1, D2), opt_name)
    p, t = _numel(model), len(list(model.parameters()))
    r = measure_memory(step)
    opt_bytes = OPTIMIZERS[opt_name][1](p, t)
    inputs = FP32 * B * D0
    assert r.mem_params_bytes == FP32 * p
    assert r.mem_grads_bytes == FP32 * p
    assert r.mem_optimizer_bytes == opt_bytes
    assert r.mem_inputs_bytes == inputs and r.mem_buffers_bytes == 0
    # forward keeps both Linear outputs (each is saved by the next op or is the output) + the 0-dim loss
    act = FP32 * B * (D1 + D2) + FP32
    assert r.mem_activations_bytes == act
    assert r.per_phase["forward"]["activations_peak_bytes"] == act
    # forward peak: params + optimizer state + batch + activations (grads were set to None)
    assert r.mem_fwd_peak_bytes == FP32 * p + opt_bytes + inputs + act
    assert r.per_phase["forward"]["at_end"]["activations"] == FP32 * B * D1 + FP32  # out2 not saved by sum
    assert r.per_phase["backward"]["at_end"]["gradients"] == FP32 * p
    assert r.per_phase["backward"]["at_end"]["activations"] == 0
    assert r.mem_bwd_peak_bytes is not None and r.mem_bwd_peak_bytes >= 2 * FP32 * p + opt_bytes + inputs
    assert r.mem_opt_peak_bytes is not None and r.mem_opt_peak_bytes >= 2 * FP32 * p + opt_bytes + inputs
    if opt_name in ("sgd", "adamw-fused"):  # in-place updates: no temporaries in .step()
        assert r.mem_opt_peak_bytes == 2 * FP32 * p + opt_bytes + inputs
    assert r.peak_mem_bytes == max(r.mem_fwd_peak_bytes, r.mem_bwd_peak_bytes, r.mem_opt_peak_bytes)
    assert r.method == "mem_tracker" and r.cuda_reserved_peak_bytes is None
    assert r.peak_rss_bytes > 0


def test_cold_step_creates_optimizer_state_in_the_optimizer_phase() -> None:
    step, model = _train_step((D0, D1, D2), "adamw-foreach")
    p, t = _numel(model), len(list(model.parameters()))
    r = measure_memory(step, warm=False)
    assert r.mem_optimizer_bytes == 2 * FP32 * p + FP32 * t
    assert r.per_phase["forward"]["at_peak"]["optimizer"] == 0
    assert r.per_phase["optimizer"]["at_end"]["optimizer"] == 2 * FP32 * p + FP32 * t


def test_activations_train_vs_inference_three_layers() -> None:
    step, _ = _train_step((D0, D1, D2, D3), "sgd")
    assert measure_memory(step).mem_activations_bytes == FP32 * B * (D1 + D2 + D3) + FP32
    # inference frees each output once the next layer has consumed it: two outputs alive at most
    model = _model((D0, D1, D2, D3))
    w = Workload(model=model, inputs=(torch.randn(B, D0),))
    r = measure_memory(make_step(w, mode="forward", precision="fp32"))
    assert r.mem_activations_bytes == FP32 * B * max(D1 + D2, D2 + D3)
    assert r.mem_bwd_peak_bytes is None and r.mem_opt_peak_bytes is None
    assert r.mem_grads_bytes == 0 and r.mem_optimizer_bytes == 0
    expected_peak = FP32 * (_numel(model) + B * D0) + r.mem_activations_bytes
    assert r.mem_fwd_peak_bytes == r.peak_mem_bytes == expected_peak


def test_custom_step_and_to_dict() -> None:
    model = _model((D0, D1))
    for prm in model.parameters():
        prm.grad = torch.ones_like(prm)
    opt = torch.optim.AdamW(model.parameters(), foreach=True)
    w = Workload(model=model, inputs=(), optimizer=opt, custom_step=opt.step)
    r = measure_memory(make_step(w, mode="train", precision="fp32"))
    p, t = _numel(model), 2
    assert list(r.per_phase) == ["optimizer"]
    assert r.mem_fwd_peak_bytes is None and r.mem_bwd_peak_bytes is None
    assert r.mem_params_bytes == r.mem_grads_bytes == FP32 * p
    assert r.mem_optimizer_bytes == 2 * FP32 * p + FP32 * t
    d = json.loads(json.dumps(r.to_dict()))
    assert d["mem_optimizer_bytes"] == r.mem_optimizer_bytes
    assert set(d) >= set(MemoryResult.__dataclass_fields__)


def _rounded(nbytes: int) -> int:
    return -(-nbytes // 512) * 512  # the CUDA caching allocator's block size, as MemTracker counts


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["fused", "foreach", "capturable"])
def test_cuda_memory(kind: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512), nn.Linear(512, 128)).cuda()
    kwargs = {"fused": {"fused": True}, "foreach": {"foreach": True}, "capturable": {"capturable": True}}[
        kind
    ]
    opt = torch.optim.AdamW(model.parameters(), **kwargs)
    w = Workload(model=model, inputs=(torch.randn(64, 256, device="cuda"),), optimizer=opt)
    r = measure_memory(make_step(w, mode="train", precision="fp32", device="cuda"), device="cuda")
    per_tensor = [_rounded(FP32 * p.numel()) for p in model.parameters()]
    # step counters live on the GPU for fused/capturable, on the CPU (not counted) otherwise
    steps = 0 if kind == "foreach" else 512 * len(per_tensor)
    print(f"cuda {kind}: {json.dumps({k: v for k, v in r.to_dict().items() if k != 'per_phase'})}")
    assert r.method == "cuda+mem_tracker"
    assert r.mem_params_bytes == r.mem_grads_bytes == sum(per_tensor)
    assert r.mem_optimizer_bytes == 2 * sum(per_tensor) + steps
    for d in r.per_phase.values():
        assert d["cuda_reserved_peak_bytes"] >= d["cuda_allocated_peak_bytes"] >= d["peak_bytes"] > 0
    assert r.cuda_reserved_peak_bytes is not None and r.cuda_reserved_peak_bytes >= r.peak_mem_bytes
