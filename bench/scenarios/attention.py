"""``attention``: multi-head self-attention (``dlcore.MultiHeadAttention``) on a (B, L, E) batch.

One attention block: QKV projections, scaled dot-product attention (fused SDPA or dlcore's explicit
softmax(QK^T/sqrt(d))V math path, chosen by ``attn_impl``), output projection. Throughput counts
tokens (B x L). In train mode the input requires grad, as it would inside a network, so backward
also computes the input gradient of the QKV projection; the loss is the mean square of the output.

The module is wrapped in a one-child container (``SelfAttention``) so that activation
checkpointing (``blocks = (MultiHeadAttention,)``) finds a submodule to wrap.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.registry import BuildContext, choice, register_scenario, size
from bench.scenarios._shared import ATTN_IMPLS, OPTIMIZERS, clear_input_grad, make_optimizer, set_attn_impl
from bench.workload import Workload

IMPLS: tuple[str, ...] = ("dlcore", "sdpa", "torch")


@dataclass(frozen=True)
class AttentionConfig:
    """Self-attention on (batch_size, seq_len, width) with ``heads`` heads."""

    batch_size: int = size(4)
    seq_len: int = size(256)
    width: int = size(256)  # embed_dim
    heads: int = size(8)
    causal: bool = False
    # "sdpa" (fused scaled_dot_product_attention) or "math" (explicit softmax)
    attn_impl: str = choice("sdpa", ATTN_IMPLS)
    optimizer: str = choice("adamw_warmup", OPTIMIZERS)
    # "dlcore": dlcore.MultiHeadAttention; "sdpa": the same projections and F.scaled_dot_product_attention
    # called directly (the floor dlcore is measured against); "torch": torch.nn.MultiheadAttention
    impl: str = choice("dlcore", IMPLS)

    def __post_init__(self) -> None:
        if self.impl != "dlcore" and self.attn_impl != "sdpa":
            raise ValueError(
                f"attn_impl: {self.attn_impl!r} is a dlcore option; impl={self.impl!r} needs attn_impl='sdpa'"
            )
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")


class DirectSDPA(nn.Module):
    """Packed in-projection, ``F.scaled_dot_product_attention`` called directly, out-projection.

    The same FLOPs and parameters as ``MultiHeadAttention`` with no module logic in between: the
    reference that tells what dlcore's mask handling and checks cost.
    """

    def __init__(self, embed_dim: int, num_heads: int, device: str) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj = nn.Linear(embed_dim, 3 * embed_dim, device=device)
        self.out_proj = nn.Linear(embed_dim, embed_dim, device=device)

    def forward(self, x: torch.Tensor, is_causal: bool = False) -> torch.Tensor:
        b, length, e = x.shape
        qkv = self.in_proj(x).view(b, length, 3, self.num_heads, e // self.num_heads)  # (B, L, 3, H, D)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, L, D)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)  # (B, H, L, D)
        return self.out_proj(out.transpose(1, 2).reshape(b, length, e))  # (B, L, E)


class SelfAttention(nn.Module):
    """``attn(x, x, x)`` returning only the output: a container so checkpointing can wrap ``attn``."""

    def __init__(self, attn: nn.Module, causal: bool) -> None:
        super().__init__()
        self.attn = attn
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.attn, DirectSDPA):
            return self.attn(x, is_causal=self.causal)  # (B, L, E)
        if isinstance(self.attn, nn.MultiheadAttention):
            length = x.shape[1]
            mask = (
                nn.Transformer.generate_square_subsequent_mask(length, device=x.device)
                if self.causal
                else None
            )
            out, _ = self.attn(x, x, x, need_weights=False, attn_mask=mask, is_causal=self.causal)
            return out
        out, _ = self.attn(x, x, x, need_weights=False, is_causal=self.causal)  # (B, L, E)
        return out


@register_scenario(
    "attention",
    config=AttentionConfig,
    presets={
        "tiny": {"batch_size": 2, "seq_len": 16, "width": 32, "heads": 4},
        "default": {},
        "large": {"batch_size": 8, "seq_len": 4096, "width": 2048, "heads": 16},
    },
    description="multi-head self-attention (dlcore.MultiHeadAttention), sdpa or math path; items = tokens",
)
def build_attention(cfg: AttentionConfig, ctx: BuildContext) -> Workload:
    """Self-attention block on random (B, L, E) embeddings."""
    from dlcore import MultiHeadAttention

    attn: nn.Module
    if cfg.impl == "sdpa":
        attn = DirectSDPA(cfg.width, cfg.heads, ctx.device)
    elif cfg.impl == "torch":
        attn = nn.MultiheadAttention(cfg.width, cfg.heads, dropout=0.0, batch_first=True, device=ctx.device)
    else:
        attn = MultiHeadAttention(cfg.width, cfg.heads, dropout=0.0, batch_first=True, device=ctx.device)
    model = SelfAttention(attn, cfg.causal)
    set_attn_impl(model, cfg.attn_impl)
    train = ctx.mode == "train"
    x = torch.randn(cfg.batch_size, cfg.seq_len, cfg.width, device=ctx.device, requires_grad=train)

    def loss_fn(out: torch.Tensor) -> torch.Tensor:
        clear_input_grad(x)
        return out.float().pow(2).mean()

    return Workload(
        model=model,
        inputs=(x,),
        loss_fn=loss_fn,
        optimizer=make_optimizer(cfg.optimizer, model.parameters()) if train else None,
        items_per_step=cfg.batch_size * cfg.seq_len,
        unit="tokens",
        blocks=(type(attn),),
        extra={"attn_impl": cfg.attn_impl, "causal": cfg.causal, "impl": cfg.impl},
    )
