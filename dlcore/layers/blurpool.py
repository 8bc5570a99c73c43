"""Anti-aliased downsampling (BlurPool).

Zhang, "Making Convolutional Networks Shift-Invariant Again", ICML 2019 (arXiv:1904.11486).

Strided subsampling aliases: frequencies above the new Nyquist limit fold back into the output
(a checkerboard becomes a constant). BlurPool low-pass filters first, with a fixed normalised
binomial kernel applied depthwise (``filt_size = 3`` gives ``[1, 2, 1] / 4`` per axis), and then
subsamples by ``stride``. The kernel is a registered buffer, not a parameter: it is moved by
``.to()`` but never trained. It is non-persistent (kept out of ``state_dict``) because it is a
constant determined by ``filt_size``.

The seed's "anti-alias" was a stride-1 conv followed by a 2x2 average pool (a box filter, the
weakest low-pass: ``filt_size = 2`` here); this module is the paper's method.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BlurPool2d", "binomial_filter"]

_PAD_MODES = {"reflect": "reflect", "replicate": "replicate", "circular": "circular", "zeros": "constant"}
_MAX_FILT_SIZE = 7  # the sizes of the paper's reference implementation: 1..7


def binomial_filter(filt_size: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The normalised 1-D binomial kernel of length ``filt_size`` (row ``filt_size - 1`` of Pascal)."""
    n = filt_size - 1
    coeffs = torch.tensor([math.comb(n, k) for k in range(filt_size)], dtype=torch.float64)
    return (coeffs / coeffs.sum()).to(dtype)  # (filt_size,), sums to 1


class BlurPool2d(nn.Module):
    """Depthwise binomial blur followed by subsampling with ``stride``.

    Args:
        channels: number of input channels ``C`` (the filter is applied to each independently).
        filt_size: length of the binomial kernel per axis, an int in ``[1, 7]``; ``1`` is plain
            strided subsampling (no blur), ``3`` is the paper's default.
        stride: subsampling factor, ``>= 1``.
        pad_mode: border handling before filtering: ``"reflect"`` (paper default), ``"replicate"``,
            ``"circular"`` or ``"zeros"``. ``"reflect"`` falls back to ``"replicate"`` for maps too
            small to reflect (a side not longer than the padding, e.g. 1x1). Output size is
            ``ceil(H / stride)`` for odd ``filt_size``.
        device, dtype: factory kwargs for the filter buffer.
    """

    filt: torch.Tensor

    def __init__(
        self,
        channels: int,
        filt_size: int = 3,
        stride: int = 2,
        pad_mode: str = "reflect",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if channels <= 0:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        if not isinstance(filt_size, int) or not 1 <= filt_size <= _MAX_FILT_SIZE:
            raise ValueError(f"filt_size must be an int in [1, {_MAX_FILT_SIZE}], got {filt_size!r}")
        if stride < 1:
            raise ValueError(f"stride must be an int >= 1, got {stride!r}")
        if pad_mode not in _PAD_MODES:
            raise ValueError(f"pad_mode must be one of {sorted(_PAD_MODES)}, got {pad_mode!r}")
        self.channels = channels
        self.filt_size = filt_size
        self.stride = stride
        self.pad_mode = pad_mode
        # (left, right, top, bottom): floor / ceil of (filt_size - 1) / 2, as in the paper's code
        lo, hi = (filt_size - 1) // 2, filt_size // 2
        self.padding = (lo, hi, lo, hi)
        f1 = binomial_filter(filt_size)  # (k,)
        f2 = torch.outer(f1, f1)  # (k, k), sums to 1
        filt = f2.expand(channels, 1, filt_size, filt_size).contiguous()  # (C, 1, k, k): depthwise
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        self.register_buffer("filt", filt.to(device=device, dtype=dtype), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"BlurPool2d expects x of shape (B, {self.channels}, H, W), got {tuple(x.shape)}"
            )
        filt = self.filt if self.filt.dtype == x.dtype else self.filt.to(x.dtype)
        if self.filt_size > 1:
            mode = _PAD_MODES[self.pad_mode]
            if mode == "reflect" and min(x.shape[-2:]) <= max(self.padding):
                mode = "replicate"  # reflection is undefined for a map this small (e.g. 1x1)
            x = F.pad(x, self.padding, mode=mode)  # (B, C, H + k - 1, W + k - 1)
        return F.conv2d(x, filt, stride=self.stride, groups=self.channels)  # (B, C, ~H/s, ~W/s)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, filt_size={self.filt_size}, stride={self.stride}, "
            f"pad_mode={self.pad_mode!r}"
        )
