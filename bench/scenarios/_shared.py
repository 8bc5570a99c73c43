"""Helpers every scenario shares: the optimizer factory and the attention-implementation switch.

Scenarios import these from here, never from a sibling scenario module (so removing or renaming
one scenario cannot break another).

- ``make_optimizer`` builds the optimizer every scenario uses in train mode, so all of them accept
  the same ``optimizer`` config field: ``adamw_warmup`` (default, ``dlcore.AdamWWithWarmup`` with a
  linear warm-up and cosine decay), ``adamw_fused`` / ``adamw_foreach`` / ``adamw_forloop``
  (``torch.optim.AdamW`` with ``fused=True``, ``foreach=True`` or ``foreach=False``) and ``sgd``
  (momentum 0.9).
- ``set_attn_impl`` selects the SDPA or the explicit-softmax path of every dlcore attention module.
- ``seed_everything`` is the single place where a builder's random state is fixed.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

OPTIMIZERS: tuple[str, ...] = ("adamw_warmup", "adamw_fused", "adamw_foreach", "adamw_forloop", "sgd")

# fp32 bytes moved per parameter by one step: reads + writes of p, grad and optimizer state
BYTES_PER_PARAM: dict[str, int] = {
    "adamw_warmup": 7 * 4,
    "adamw_fused": 7 * 4,
    "adamw_foreach": 7 * 4,
    "adamw_forloop": 7 * 4,
    "sgd": 5 * 4,
}


def make_optimizer(
    kind: str, params: Iterable[nn.Parameter], *, lr: float = 1e-3, weight_decay: float = 0.01
) -> torch.optim.Optimizer:
    """The optimizer named ``kind`` (one of ``OPTIMIZERS``) over ``params``.

    ``adamw_warmup`` uses a short warmup (10 steps) so that the very first step already moves the
    parameters; the schedule changes the learning rate, not the cost of a step.
    """
    params = list(params)
    if kind == "adamw_warmup":
        from dlcore import AdamWWithWarmup

        return AdamWWithWarmup(params, lr=lr, weight_decay=weight_decay, warmup_steps=10, total_steps=100_000)
    if kind == "adamw_fused":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    if kind == "adamw_foreach":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)
    if kind == "adamw_forloop":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=False)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"optimizer: unknown optimizer {kind!r}; expected one of {OPTIMIZERS}")


def check_optimizer(kind: str) -> None:
    """ValueError naming the choices when ``kind`` is not a known optimizer."""
    if kind not in OPTIMIZERS:
        raise ValueError(f"optimizer: unknown optimizer {kind!r}; expected one of {OPTIMIZERS}")


ATTN_IMPLS: tuple[str, ...] = ("sdpa", "math")


def check_attn_impl(impl: str) -> None:
    """ValueError naming the choices when ``impl`` is not a known attention implementation."""
    if impl not in ATTN_IMPLS:
        raise ValueError(
            f"attn_impl: unknown attention implementation {impl!r}; expected one of {ATTN_IMPLS}"
        )


def set_attn_impl(model: nn.Module, impl: str) -> int:
    """Select ``impl`` ("sdpa" or "math") on every ``dlcore.MultiHeadAttention`` in ``model``.

    Returns how many attention modules were switched.
    """
    from dlcore import MultiHeadAttention

    check_attn_impl(impl)
    n = 0
    for m in model.modules():
        if isinstance(m, MultiHeadAttention):
            m.attn_impl = impl  # type: ignore[assignment]  # validated by check_attn_impl above
            n += 1
    return n


def clear_input_grad(x: torch.Tensor) -> None:
    """Drop the input's gradient from the previous step so it is not accumulated step after step."""
    x.grad = None
