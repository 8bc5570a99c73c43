"""Squeeze-and-Excitation channel attention.

Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018 (arXiv:1709.01507).

``y = x * gate(W2 act(W1 mean_hw(x) + b1) + b2)``: a global average pool ("squeeze"), a bottleneck
of two fully-connected layers ("excitation", reduction ``1 / rd_ratio``, 16 in the paper) and a
sigmoid gate that rescales each channel. The fully-connected layers are 1x1 convolutions with bias
(as in timm's ``SEModule``), so the module works on ``channels_last`` tensors without reshapes;
their weights have shape ``(out, in, 1, 1)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["SqueezeExcite"]


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation block for ``(B, C, H, W)`` feature maps.

    Args:
        channels: number of input (and output) channels ``C``.
        rd_ratio: reduction ratio; the hidden width is ``max(1, round(channels * rd_ratio))``.
            The default ``1/16`` is the paper's reduction ``r = 16``.
        rd_channels: explicit hidden width; overrides ``rd_ratio`` when given.
        act_layer: activation between the two FC layers (ReLU in the paper).
        gate_layer: gating non-linearity (sigmoid in the paper).
        device, dtype: factory kwargs for the parameters, as in torch modules.
    """

    def __init__(
        self,
        channels: int,
        rd_ratio: float = 1.0 / 16,
        rd_channels: int | None = None,
        act_layer: Callable[[], nn.Module] = nn.ReLU,
        gate_layer: Callable[[], nn.Module] = nn.Sigmoid,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if channels <= 0:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        if rd_channels is None:
            if not rd_ratio > 0:
                raise ValueError(f"rd_ratio must be > 0, got {rd_ratio!r}")
            rd_channels = max(1, round(channels * rd_ratio))
        elif rd_channels <= 0:
            raise ValueError(f"rd_channels must be a positive int, got {rd_channels!r}")
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.channels = channels
        self.rd_channels = rd_channels
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=True, **factory)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=True, **factory)
        self.gate = gate_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"SqueezeExcite expects x of shape (B, {self.channels}, H, W), got {tuple(x.shape)}"
            )
        s = x.mean(dim=(2, 3), keepdim=True)  # (B, C, H, W) -> (B, C, 1, 1): squeeze
        s = self.act(self.fc1(s))  # (B, C, 1, 1) -> (B, rd, 1, 1)
        s = self.gate(self.fc2(s))  # (B, rd, 1, 1) -> (B, C, 1, 1): per-channel gate
        return x * s  # (B, C, H, W), memory format of x kept

    def extra_repr(self) -> str:
        return f"channels={self.channels}, rd_channels={self.rd_channels}"
