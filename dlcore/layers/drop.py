"""Stochastic depth ("drop path") for residual networks.

Huang, Sun, Liu, Sedra, Weinberger, "Deep Networks with Stochastic Depth", ECCV 2016
(arXiv:1603.09382).

During training each *sample* of the batch independently drops the residual branch with
probability ``drop_prob``; the branches that survive are scaled by ``1 / (1 - drop_prob)`` so the
expected output equals the input (the "inverted dropout" convention used by timm and torchvision's
``stochastic_depth(mode="row")``). In eval mode, or with ``drop_prob == 0``, it is the identity.

The seed sketch drew one ``torch.rand(1)`` for the whole batch (every sample dropped together)
and did not rescale the survivors; both are fixed here and covered by tests.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["drop_path", "DropPath"]


def _check_drop_prob(drop_prob: float) -> float:
    p = float(drop_prob)
    if not (0.0 <= p < 1.0) or math.isnan(p):
        raise ValueError(
            f"drop_prob must be in [0, 1) (a probability of dropping a sample), got {drop_prob!r}"
        )
    return p


def drop_path(
    x: torch.Tensor, drop_prob: float = 0.0, training: bool = False, scale_by_keep: bool = True
) -> torch.Tensor:
    """Drop whole samples of ``x`` (a residual branch) with probability ``drop_prob``.

    Args:
        x: tensor of shape ``(B, ...)``; the first dimension is the batch.
        drop_prob: probability in ``[0, 1)`` that a sample's branch is zeroed.
        training: apply the drop only when ``True`` (pass ``module.training``).
        scale_by_keep: scale the kept samples by ``1 / (1 - drop_prob)`` so the expectation is
            preserved (the default, as in Huang et al. and timm).

    Returns:
        A tensor of the same shape as ``x``: ``x * mask`` with ``mask`` of shape ``(B, 1, ..., 1)``.
    """
    p = _check_drop_prob(drop_prob)
    if x.ndim == 0:
        raise ValueError("drop_path expects x with a leading batch dimension, got a 0-d tensor")
    if not training or p == 0.0:
        return x
    keep_prob = 1.0 - p
    mask_shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # (B, 1, 1, ...): one draw per sample
    # the scaled mask is built in at least float32: in bf16/fp16, 1 / keep_prob itself would be rounded
    # (1 / 0.9 -> 1.109375 in bf16) before the product, and the expectation would no longer be kept
    mask_dtype = torch.promote_types(x.dtype, torch.float32) if x.is_floating_point() else x.dtype
    mask = torch.empty(mask_shape, dtype=mask_dtype, device=x.device).bernoulli_(keep_prob)
    if scale_by_keep:
        mask.div_(keep_prob)
    return (x * mask).to(x.dtype)  # (B, ...) broadcast against (B, 1, ..., 1); one rounding to x.dtype


class DropPath(nn.Module):
    """Module form of :func:`drop_path`; active only in ``train()`` mode."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        self.drop_prob = _check_drop_prob(drop_prob)
        self.scale_by_keep = scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training, self.scale_by_keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:g}, scale_by_keep={self.scale_by_keep}"
