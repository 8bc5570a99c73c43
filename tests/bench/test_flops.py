"""bench.harness.flops: closed-form FLOP counts for Linear and scaled-dot-product attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench.harness.flops import count_flops, count_flops_by_phase, flop_counter
from bench.workload import Workload, make_step

B, IN, OUT, HID = 8, 32, 16, 24


def _linear_workload(model: nn.Module, x: torch.Tensor) -> Workload:
    return Workload(model=model, inputs=(x,), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_linear_forward_is_2_b_in_out() -> None:
    torch.manual_seed(0)
    w = _linear_workload(nn.Linear(IN, OUT), torch.randn(B, IN))
    step = make_step(w, mode="forward", precision="fp32")
    assert count_flops(step) == 2 * B * IN * OUT


def test_linear_train_step_by_phase() -> None:
    torch.manual_seed(0)
    fwd = 2 * B * IN * OUT
    # input without grad: backward computes only the weight gradient -> 2x forward in total
    w = _linear_workload(nn.Linear(IN, OUT), torch.randn(B, IN))
    step = make_step(w, mode="train", precision="fp32")
    assert count_flops_by_phase(step) == {"forward": fwd, "backward": fwd, "optimizer": 0}
    assert count_flops(step) == 2 * fwd
    # input that needs a gradient: weight gradient + input gradient -> 3x forward
    w = _linear_workload(nn.Linear(IN, OUT), torch.randn(B, IN, requires_grad=True))
    assert count_flops(make_step(w, mode="train", precision="fp32")) == 3 * fwd


def test_linear_stack_train_step() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(IN, HID), nn.ReLU(), nn.Linear(HID, OUT))
    step = make_step(_linear_workload(model, torch.randn(B, IN)), mode="train", precision="fp32")
    first, second = 2 * B * IN * HID, 2 * B * HID * OUT
    assert count_flops(step) == 2 * first + 3 * second  # the first layer has no input gradient


BH, H, L, S, D = 2, 3, 8, 16, 4


def _qkv(requires_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(BH, H, L, D, generator=g, requires_grad=requires_grad)
    k = torch.randn(BH, H, S, D, generator=g, requires_grad=requires_grad)
    v = torch.randn(BH, H, S, D, generator=g, requires_grad=requires_grad)
    return q, k, v


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_fused_forward_and_backward(causal: bool) -> None:
    q, k, v = _qkv()
    dense_fwd = 4 * BH * H * L * S * D
    with flop_counter() as c:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    assert c.get_total_flops() == (dense_fwd // 2 if causal else dense_fwd)
    with flop_counter() as c:
        out.sum().backward()
    dense_bwd = 10 * BH * H * L * S * D  # five matmuls: QK^T again, dP, dV, dQ, dK
    assert c.get_total_flops() == (dense_bwd // 2 if causal else dense_bwd)


def test_sdpa_math_path_and_explicit_mask_count_dense() -> None:
    q, k, v = _qkv(requires_grad=False)
    dense_fwd = 4 * BH * H * L * S * D
    with sdpa_kernel(SDPBackend.MATH), flop_counter() as c:
        F.scaled_dot_product_attention(q, k, v, is_causal=True)  # full matmuls really run
    assert c.get_total_flops() == dense_fwd
    mask = torch.ones(L, S, dtype=torch.bool).tril()
    with flop_counter() as c:
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert c.get_total_flops() == dense_fwd


def test_sdpa_in_a_train_step() -> None:
    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(D, D, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            qkv = self.proj(x)  # (BH, H, L, D)
            return F.scaled_dot_product_attention(qkv, qkv, qkv, is_causal=True)

    x = torch.randn(BH, H, L, D)
    model = Attn()
    step = make_step(_linear_workload(model, x), mode="train", precision="fp32")
    proj = 2 * BH * H * L * D * D
    attn_fwd = 4 * BH * H * L * L * D // 2
    attn_bwd = 10 * BH * H * L * L * D // 2
    assert count_flops_by_phase(step) == {
        "forward": proj + attn_fwd,
        "backward": attn_bwd + proj,  # weight gradient only: x needs no gradient
        "optimizer": 0,
    }


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION"])
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_cuda_kernels(backend: str, causal: bool) -> None:
    b, h, n, d = 2, 4, 256, 64
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (
        torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
        for _ in range(3)
    )
    try:
        with sdpa_kernel(getattr(SDPBackend, backend)), flop_counter() as c:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    except RuntimeError as e:  # backend not available on this card / build
        pytest.skip(f"{backend}: {e}")
    fwd = 4 * b * h * n * n * d
    assert c.get_total_flops() == (fwd // 2 if causal else fwd), c.get_flop_counts()
    with flop_counter() as c:
        out.float().sum().backward()
    bwd = 10 * b * h * n * n * d
    assert c.get_total_flops() == (bwd // 2 if causal else bwd), c.get_flop_counts()


def _attention_forward_flops(impl: str) -> int:
    from bench.registry import BuildContext, get_scenario

    spec = get_scenario("attention")
    cfg = spec.make_config("tiny", impl=impl)
    w = spec.build(cfg, BuildContext(device="cpu", mode="forward"))
    return count_flops(make_step(w, mode="forward", precision="fp32"))


def test_torch_mha_forward_counts_like_sdpa() -> None:
    # eval + no_grad: nn.MultiheadAttention's fast path (_native_multi_head_attention) has no
    # FLOP formula; counting switches it off, so impl=torch counts the same math as impl=sdpa.
    before = torch.backends.mha.get_fastpath_enabled()
    flops_torch = _attention_forward_flops("torch")
    assert flops_torch > 0
    assert flops_torch == _attention_forward_flops("sdpa")
    assert torch.backends.mha.get_fastpath_enabled() == before  # restored
