"""``transformer``: the encoder-decoder ``dlcore.Transformer`` on random token ids (seq2seq).

Source ids (B, seq_len) and target ids (B, tgt_len) are drawn uniformly from the vocabulary; the
decoder's self-attention is causal (``tgt_is_causal=True``) and the loss is
cross-entropy of the logits (B, tgt_len, vocab_size) against random labels. Throughput counts
*target* tokens (B x tgt_len), the tokens the model predicts, as in translation benchmarks.
Activation checkpointing wraps every encoder and decoder layer. Dropout defaults to 0.0 so runs
are deterministic; set ``dropout`` to include its cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.registry import BuildContext, choice, probability, register_scenario, size
from bench.scenarios._shared import ATTN_IMPLS, OPTIMIZERS, make_optimizer, set_attn_impl
from bench.workload import Workload


@dataclass(frozen=True)
class TransformerConfig:
    """Seq2seq Transformer: ``depth`` encoder and ``depth`` decoder layers of width ``width``."""

    batch_size: int = size(2)
    seq_len: int = size(64)  # source length
    tgt_len: int = size(64)  # target length
    width: int = size(256)  # d_model
    depth: int = size(2)  # encoder layers = decoder layers = depth
    heads: int = size(8)
    ffn_mult: int = size(4)  # dim_feedforward = ffn_mult * width
    vocab_size: int = size(4096)  # source and target vocabularies
    norm_first: bool = False  # post-LN, the 2017 paper's layout (True: pre-LN with final LayerNorms)
    activation: str = choice("relu", ("relu", "gelu"))
    dropout: float = probability(0.0)
    attn_impl: str = choice("sdpa", ATTN_IMPLS)
    optimizer: str = choice("adamw_warmup", OPTIMIZERS)

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")


class Seq2Seq(nn.Module):
    """``transformer(src, tgt, tgt_is_causal=True)``: causal decoder self-attention; returns logits."""

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        # no explicit mask: the causal mask is built inside (and never materialised on the fused path)
        return self.transformer(src, tgt, tgt_is_causal=True)  # (B, S), (B, T) -> (B, T, V)


@register_scenario(
    "transformer",
    config=TransformerConfig,
    presets={
        "tiny": {
            "batch_size": 2,
            "seq_len": 12,
            "tgt_len": 10,
            "width": 32,
            "depth": 1,
            "heads": 4,
            "vocab_size": 64,
        },
        "default": {},
        "large": {
            "batch_size": 16,
            "seq_len": 1024,
            "tgt_len": 1024,
            "width": 1024,
            "depth": 6,
            "heads": 16,
            "vocab_size": 32000,
        },
    },
    description="encoder-decoder Transformer (dlcore.Transformer) on token ids, cross-entropy; "
    "items = target tokens",
)
def build_transformer(cfg: TransformerConfig, ctx: BuildContext) -> Workload:
    """Seq2seq Transformer with random source/target ids and random labels."""
    from dlcore import Transformer, TransformerDecoderLayer, TransformerEncoderLayer

    core = Transformer(
        cfg.vocab_size,
        cfg.vocab_size,
        d_model=cfg.width,
        nhead=cfg.heads,
        num_encoder_layers=cfg.depth,
        num_decoder_layers=cfg.depth,
        dim_feedforward=cfg.ffn_mult * cfg.width,
        dropout=cfg.dropout,
        max_len=max(5000, cfg.seq_len, cfg.tgt_len),
        activation=cfg.activation,
        norm_first=cfg.norm_first,
        batch_first=True,
        device=ctx.device,
    )
    model = Seq2Seq(core)
    set_attn_impl(model, cfg.attn_impl)
    src = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.seq_len), device=ctx.device)
    tgt = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.tgt_len), device=ctx.device)
    labels = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.tgt_len), device=ctx.device)

    def loss_fn(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten())  # (B*T, V) vs (B*T,)

    train = ctx.mode == "train"
    return Workload(
        model=model,
        inputs=(src, tgt),
        loss_fn=loss_fn,
        optimizer=make_optimizer(cfg.optimizer, model.parameters()) if train else None,
        items_per_step=cfg.batch_size * cfg.tgt_len,
        unit="tokens",
        blocks=(TransformerEncoderLayer, TransformerDecoderLayer),
        extra={"attn_impl": cfg.attn_impl, "src_tokens": cfg.batch_size * cfg.seq_len},
    )
