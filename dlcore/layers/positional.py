"""Sinusoidal positional encoding, after Vaswani et al. 2017, "Attention Is All You Need", §3.5.

``PE(pos, 2i) = sin(pos / 10000^(2i/d_model))``, ``PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model))``,
added to batch-first token embeddings (B, L, D) and followed by dropout. The table is precomputed
for ``max_len`` positions; unlike the seed sketch it is laid out batch-first, so no transposes are
needed around it, and odd ``d_model`` works.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["SinusoidalPositionalEncoding", "sinusoidal_table"]


def sinusoidal_table(max_len: int, d_model: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The (max_len, d_model) table of sinusoidal encodings."""
    position = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)  # (max_len, 1)
    div_term = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model)
    )  # (ceil(d_model / 2),)
    angles = position * div_term  # (max_len, ceil(d_model / 2))
    pe = torch.zeros(max_len, d_model, dtype=torch.float64)  # (max_len, d_model)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : d_model // 2])
    return pe.to(dtype)


class SinusoidalPositionalEncoding(nn.Module):
    """Add fixed sinusoidal position encodings to batch-first inputs (B, L, D), then dropout.

    Args:
        d_model: embedding dimension D.
        max_len: the longest sequence accepted; longer inputs raise ``ValueError``.
        dropout: dropout probability applied after the addition.
    """

    pe: Tensor

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.1) -> None:
        super().__init__()
        if d_model <= 0:
            raise ValueError(f"d_model: got {d_model}, expected a positive integer")
        if max_len <= 0:
            raise ValueError(f"max_len: got {max_len}, expected a positive integer")
        self.d_model = d_model
        self.max_len = max_len
        self.dropout = nn.Dropout(dropout)
        # not persistent: it is a pure function of (max_len, d_model), so checkpoints stay small and
        # load into a module built with another max_len.
        self.register_buffer("pe", sinusoidal_table(max_len, d_model), persistent=False)  # (max_len, D)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}"

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, L, D) -> (B, L, D)."""
        if x.dim() != 3 or x.size(-1) != self.d_model:
            raise ValueError(
                f"x: got shape {tuple(x.shape)}, expected (batch, seq_len, d_model) "
                f"with d_model={self.d_model}"
            )
        seq_len = x.size(1)
        if seq_len > self.max_len:
            raise ValueError(
                f"x: got shape {tuple(x.shape)} with sequence length {seq_len}, expected sequence length "
                f"<= max_len={self.max_len}; build the encoding with a larger max_len"
            )
        # cast the table to x's dtype so bf16/fp16 activations are not promoted to fp32
        return self.dropout(x + self.pe[:seq_len].to(x.dtype))  # (B, L, D) + (L, D) -> (B, L, D)
