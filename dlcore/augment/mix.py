"""MixUp and CutMix batch augmentation.

- MixUp: Zhang et al., "mixup: Beyond Empirical Risk Minimization" (ICLR 2018), arXiv:1710.09412.
  ``x = λ·x_i + (1-λ)·x_j``, ``λ ~ Beta(α, α)``.
- CutMix: Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with Localizable
  Features" (ICCV 2019), arXiv:1905.04899. A box of area ``(1-λ)·H·W`` from a permuted image is pasted
  in; the box is clipped to the image, so λ is then recomputed from the area actually pasted.

Target convention (a choice): both functions return ``(x_mixed, y_a, y_b, lam)`` — the partner
targets are ``y_b = y[perm]`` and the loss is ``lam·loss(out, y_a) + (1-lam)·loss(out, y_b)``
(``mix_loss``). ``lam`` is a Python float. This works for class indices and for soft targets alike;
with ``num_classes`` the index targets are returned one-hot (float), so ``lam·y_a + (1-lam)·y_b`` is
the soft target (``mix_targets``).

Unlike the seed's ``AdvancedAugmentation``: nothing is written into the caller's tensors, nothing
calls ``.cuda()`` (outputs live on the input's device), there is no numpy, and all randomness comes
from torch, optionally from a ``torch.Generator`` (reproducible runs).
"""

from __future__ import annotations

import abc
import math
import random
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["mixup_batch", "cutmix_batch", "MixUp", "CutMix", "mix_loss", "mix_targets", "MixResult"]

MixResult = tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, int | float) and alpha > 0 and math.isfinite(alpha)):
        raise ValueError(
            f"alpha: expected a finite number > 0 (the Beta(alpha, alpha) parameter); got {alpha!r}"
        )


def _check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x: expected a non-empty batch (batch dimension first); got shape {tuple(x.shape)}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"y: expected {x.shape[0]} targets (one per sample of x); got shape {tuple(y.shape)}"
        )


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _sample_beta(alpha: float, generator: torch.Generator | None) -> float:
    # torch.distributions.Beta takes no Generator; derive a seed from torch's RNG (the generator, or
    # the global one) and draw from Python's Beta sampler, so torch.manual_seed / generator fix λ.
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=_gen_device(generator)).item())
    return random.Random(seed).betavariate(alpha, alpha)


def _permutation(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.randperm(n, generator=generator, device=_gen_device(generator)).to(device)


def _one_hot(y: torch.Tensor, num_classes: int | None) -> torch.Tensor:
    if num_classes is None:
        return y
    if y.dtype.is_floating_point:
        raise ValueError("num_classes: only for integer class-index targets; y is already floating point")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"y: class indices must lie in [0, {num_classes}); got range [{int(y.min())}, {int(y.max())}]"
        )
    return F.one_hot(y, num_classes).float()


def mixup_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    alpha: float = 0.2,
    *,
    num_classes: int | None = None,
    generator: torch.Generator | None = None,
) -> MixResult:
    """MixUp a batch: ``(λ·x + (1-λ)·x[perm], y, y[perm], λ)`` with ``λ ~ Beta(alpha, alpha)``.

    ``x`` is not modified; the result keeps its device and memory format, and the dtype of a
    floating-point ``x``. An integer ``x`` (e.g. uint8 images) comes back as floating point (torch's
    default dtype, float32 unless changed), since mixing makes fractional values. With ``num_classes``,
    integer targets come back one-hot.
    """
    _check_alpha(alpha)
    _check_batch(x, y)
    lam = _sample_beta(alpha, generator)
    perm = _permutation(x.shape[0], generator, x.device)
    x_mixed = torch.lerp(x[perm], x, lam) if x.is_floating_point() else (lam * x + (1 - lam) * x[perm])
    y_t = _one_hot(y, num_classes)
    return x_mixed, y_t, y_t[perm], lam


def cutmix_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    alpha: float = 1.0,
    *,
    num_classes: int | None = None,
    generator: torch.Generator | None = None,
) -> MixResult:
    """CutMix a batch of images ``x`` of shape (B, C, H, W) (any memory format; the last two dims are
    the spatial ones): paste one random box from ``x[perm]`` into a copy of ``x``.

    Returns ``(x_mixed, y, y[perm], lam)`` with ``lam = 1 - box_area / (H·W)`` for the box after clipping
    to the image, i.e. exactly the fraction of each image that was kept.
    """
    _check_alpha(alpha)
    _check_batch(x, y)
    if x.dim() < 3:
        raise ValueError(
            f"x: expected images with two trailing spatial dims (B, C, H, W); got shape {tuple(x.shape)}"
        )
    height, width = x.shape[-2], x.shape[-1]
    lam = _sample_beta(alpha, generator)
    perm = _permutation(x.shape[0], generator, x.device)
    # box of area (1-λ)·H·W centred uniformly at random, then clipped to the image
    cut_ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut_ratio), int(width * cut_ratio)
    gdev = _gen_device(generator)
    cy = int(torch.randint(0, height, (1,), generator=generator, device=gdev).item())
    cx = int(torch.randint(0, width, (1,), generator=generator, device=gdev).item())
    y1, y2 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x1, x2 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    x_mixed = x.clone()  # preserves memory format (channels_last stays channels_last)
    x_mixed[..., y1:y2, x1:x2] = x[perm][..., y1:y2, x1:x2]
    lam = 1.0 - (y2 - y1) * (x2 - x1) / (height * width)
    y_t = _one_hot(y, num_classes)
    return x_mixed, y_t, y_t[perm], lam


def mix_targets(y_a: torch.Tensor, y_b: torch.Tensor, lam: float) -> torch.Tensor:
    """Soft targets ``lam·y_a + (1-lam)·y_b`` (targets must be one-hot / probabilities)."""
    return torch.lerp(y_b, y_a, lam)


def mix_loss(
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor],
    outputs: Any,
    y_a: torch.Tensor,
    y_b: torch.Tensor,
    lam: float,
) -> torch.Tensor:
    """``lam·loss_fn(outputs, y_a) + (1-lam)·loss_fn(outputs, y_b)``: the mixed-sample objective."""
    if lam == 1.0:
        return loss_fn(outputs, y_a)
    return lam * loss_fn(outputs, y_a) + (1.0 - lam) * loss_fn(outputs, y_b)


class _RandomMix(abc.ABC):
    def __init__(
        self,
        alpha: float,
        p: float = 1.0,
        *,
        num_classes: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        _check_alpha(alpha)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p: expected a probability in [0, 1]; got {p!r}")
        self.alpha = alpha
        self.p = p
        self.num_classes = num_classes
        self.generator = generator

    @abc.abstractmethod
    def _apply(self, x: torch.Tensor, y: torch.Tensor) -> MixResult:
        """Mix the batch unconditionally (the subclass's method)."""

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> MixResult:
        """Mix with probability ``p``; otherwise return ``(x, y, y, 1.0)`` (x itself, unmodified)."""
        if self.p < 1.0:
            draw = torch.rand((), generator=self.generator, device=_gen_device(self.generator))
            if float(draw) >= self.p:
                _check_batch(x, y)
                y_t = _one_hot(y, self.num_classes)
                return x, y_t, y_t, 1.0
        return self._apply(x, y)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha={self.alpha}, p={self.p}, num_classes={self.num_classes})"


class MixUp(_RandomMix):
    """MixUp as a callable batch transform: ``MixUp(alpha=0.2, p=1.0)(x, y) -> (x, y_a, y_b, lam)``."""

    def __init__(
        self,
        alpha: float = 0.2,
        p: float = 1.0,
        *,
        num_classes: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(alpha, p, num_classes=num_classes, generator=generator)

    def _apply(self, x: torch.Tensor, y: torch.Tensor) -> MixResult:
        return mixup_batch(x, y, self.alpha, num_classes=self.num_classes, generator=self.generator)


class CutMix(_RandomMix):
    """CutMix as a callable batch transform: ``CutMix(alpha=1.0, p=1.0)(x, y) -> (x, y_a, y_b, lam)``."""

    def __init__(
        self,
        alpha: float = 1.0,
        p: float = 1.0,
        *,
        num_classes: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(alpha, p, num_classes=num_classes, generator=generator)

    def _apply(self, x: torch.Tensor, y: torch.Tensor) -> MixResult:
        return cutmix_batch(x, y, self.alpha, num_classes=self.num_classes, generator=self.generator)
