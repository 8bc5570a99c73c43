"""``encoder``: a stack of ``depth`` dlcore Transformer encoder layers on (B, L, width) embeddings.

``dlcore.TransformerEncoder`` of ``dlcore.TransformerEncoderLayer`` (d_model = width, ``heads``
heads, feed-forward ``ffn_mult`` x width, GELU, pre-norm by default). The input is a batch of
random embeddings, not token ids: the embedding lookup is not what this scenario measures (see
``transformer`` for a full model with vocabularies). Dropout defaults to 0.0 so that runs are
deterministic and the step is all matmuls and attention; set ``dropout`` to include its cost.
Throughput counts tokens (B x L); activation checkpointing wraps each encoder layer. In train mode
the input requires grad, as it would after an embedding layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.registry import BuildContext, choice, probability, register_scenario, size
from bench.scenarios._shared import ATTN_IMPLS, OPTIMIZERS, clear_input_grad, make_optimizer, set_attn_impl
from bench.workload import Workload


@dataclass(frozen=True)
class EncoderConfig:
    """``depth`` encoder layers of width ``width`` on (batch_size, seq_len, width) inputs."""

    batch_size: int = size(2)
    seq_len: int = size(128)
    width: int = size(256)  # d_model
    depth: int = size(2)  # number of encoder layers
    heads: int = size(8)
    ffn_mult: int = size(4)  # dim_feedforward = ffn_mult * width
    norm_first: bool = True  # pre-LN (True) or post-LN (False, the 2017 paper's layout)
    activation: str = choice("gelu", ("relu", "gelu"))
    dropout: float = probability(0.0)
    causal: bool = False
    attn_impl: str = choice("sdpa", ATTN_IMPLS)
    optimizer: str = choice("adamw_warmup", OPTIMIZERS)

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")


@register_scenario(
    "encoder",
    config=EncoderConfig,
    presets={
        "tiny": {"batch_size": 2, "seq_len": 16, "width": 32, "depth": 2, "heads": 4},
        "default": {},
        "large": {"batch_size": 8, "seq_len": 2048, "width": 2048, "depth": 12, "heads": 16},
    },
    description="N-layer Transformer encoder (dlcore.TransformerEncoder) on embeddings; items = tokens",
)
def build_encoder(cfg: EncoderConfig, ctx: BuildContext) -> Workload:
    """Transformer encoder stack on random (B, L, width) embeddings."""
    from dlcore import TransformerEncoder, TransformerEncoderLayer

    layer = TransformerEncoderLayer(
        cfg.width,
        cfg.heads,
        dim_feedforward=cfg.ffn_mult * cfg.width,
        dropout=cfg.dropout,
        activation=cfg.activation,
        batch_first=True,
        norm_first=cfg.norm_first,
        device=ctx.device,
    )
    model = TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False).to(ctx.device)
    set_attn_impl(model, cfg.attn_impl)
    train = ctx.mode == "train"
    x = torch.randn(cfg.batch_size, cfg.seq_len, cfg.width, device=ctx.device, requires_grad=train)
    # TransformerEncoder.forward(src, mask, src_key_padding_mask, is_causal): causal without a mask
    inputs: tuple[object, ...] = (x, None, None, True) if cfg.causal else (x,)

    def loss_fn(out: torch.Tensor) -> torch.Tensor:
        clear_input_grad(x)
        return out.float().pow(2).mean()

    return Workload(
        model=model,
        inputs=inputs,
        loss_fn=loss_fn,
        optimizer=make_optimizer(cfg.optimizer, model.parameters()) if train else None,
        items_per_step=cfg.batch_size * cfg.seq_len,
        unit="tokens",
        blocks=(TransformerEncoderLayer,),
        extra={"attn_impl": cfg.attn_impl, "causal": cfg.causal, "norm_first": cfg.norm_first},
    )
