"""FLOPs of one step, counted by ``torch.utils.flop_counter.FlopCounterMode``, with attention made right.

What is counted: FlopCounterMode counts matmul-like ops only (mm, addmm, bmm, baddbmm, convolution
forward and backward, scaled-dot-product attention kernels): 2 FLOPs per multiply-accumulate.
Elementwise ops, norms, softmax, reductions and the optimizer update count 0. A Linear's forward is
``2·B·in·out``; its backward adds ``2·B·in·out`` for the weight gradient and another ``2·B·in·out``
for the input gradient only when the input needs a gradient (the first layer of a model usually
does not: a training step of one Linear on a plain batch is 2x its forward, a deeper layer 3x).

Attention (``F.scaled_dot_product_attention``), as torch 2.11-2.13 counts it and as adjusted here:

* Fused kernels (flash, memory-efficient, cuDNN on CUDA; the flash kernel for CPU) are counted as
  two batched matmuls, ``QK^T`` and ``PV``: ``2·B·H·L·S·(Dqk + Dv)`` forward (``4·B·H·L·S·D`` for
  one head size), and five in backward (``2·B·H·L·S·(3·Dqk + 2·Dv)``, recomputing ``QK^T``).
  torch's own formulas ignore ``is_causal`` ("NB: We aren't accounting for causal attention
  here") and torch has no formula at all for the CPU flash kernel
  (``_scaled_dot_product_flash_attention_for_cpu`` and its backward), which therefore counted 0.
  ``ATTENTION_FLOP_MAPPING`` registers all of them: with ``is_causal=True`` (or the
  memory-efficient kernel's causal ``custom_mask_type``) exactly half of the dense figure is
  counted (integer-halved), the convention of FlashAttention's benchmarks and of MFU accounting,
  because a causal kernel skips the masked upper triangle of the score matrix. (The exact share of
  unmasked scores for L == S is (L+1)/(2L), a hair above one half.) An explicit ``attn_mask`` is an
  arbitrary pattern and is counted dense.
* The math path (SDPA falling back to ``_scaled_dot_product_attention_math``, or attention written
  with ``matmul`` + mask + softmax) decomposes into bmm ops that really compute the full score
  matrix, masked entries included; those are counted as computed, i.e. dense, with no halving.
* ``torch.nn.MultiheadAttention`` in eval mode without autograd takes a fast path, one
  ``aten._native_multi_head_attention`` op that FlopCounterMode has no formula for (it counted 0).
  ``count_flops`` and ``count_flops_by_phase`` therefore switch that fast path off while they
  count (``torch.backends.mha.set_fastpath_enabled(False)``, the previous setting restored after):
  the module then runs its projections and SDPA as separate ops, the same math, which are counted
  as above. Timing and memory passes keep the fast path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, flop_registry

aten = torch.ops.aten

__all__ = [
    "ATTENTION_FLOP_MAPPING",
    "attention_backward_flops",
    "attention_forward_flops",
    "count_flops",
    "count_flops_by_phase",
    "flop_counter",
    "mha_fastpath_disabled",
]


def attention_forward_flops(q_shape: Any, k_shape: Any, v_shape: Any, *, causal: bool = False) -> int:
    """``QK^T`` and ``PV`` of one SDPA forward: ``2·B·Hq·L·S·(Dqk + Dv)``, halved when causal."""
    b, h, lq, dqk = (int(x) for x in q_shape[-4:])
    s = int(k_shape[-2])
    dv = int(v_shape[-1])
    dense = 2 * b * h * lq * s * (dqk + dv)
    return dense // 2 if causal else dense


def attention_backward_flops(q_shape: Any, k_shape: Any, v_shape: Any, *, causal: bool = False) -> int:
    """Five matmuls of an SDPA backward (``QK^T`` recomputed, dP, dV, dQ, dK), halved when causal."""
    b, h, lq, dqk = (int(x) for x in q_shape[-4:])
    s = int(k_shape[-2])
    dv = int(v_shape[-1])
    dense = 2 * b * h * lq * s * (3 * dqk + 2 * dv)
    return dense // 2 if causal else dense


def _arg(op: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], default: Any = None) -> Any:
    """Value of argument ``name`` of ``op`` (an OpOverloadPacket) from positional or keyword arguments."""
    if name in kwargs:
        return kwargs[name]
    schema_args = op.default._schema.arguments
    for i, a in enumerate(schema_args):
        if a.name == name:
            return args[i] if i < len(args) else default
    return default


def _is_causal(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    names = {a.name for a in op.default._schema.arguments}
    if "is_causal" in names:
        return bool(_arg(op, "is_causal", args, kwargs, False))
    if "custom_mask_type" in names:  # memory-efficient kernel: 0 none, 1 causal top-left, 2 bottom-right
        return int(_arg(op, "custom_mask_type", args, kwargs, 0) or 0) != 0
    return False


def _raw(fn: Callable[..., int]) -> Callable[..., int]:
    fn._get_raw = True  # type: ignore[attr-defined]  # FlopCounterMode passes tensors, not shapes
    return fn


def _sdpa_forward(op: Any) -> Callable[..., int]:
    @_raw
    def formula(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
        q, k, v = args[0], args[1], args[2]
        return attention_forward_flops(q.shape, k.shape, v.shape, causal=_is_causal(op, args, kwargs))

    return formula


def _sdpa_backward(op: Any) -> Callable[..., int]:
    @_raw
    def formula(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
        q, k, v = args[1], args[2], args[3]  # args[0] is grad_out
        return attention_backward_flops(q.shape, k.shape, v.shape, causal=_is_causal(op, args, kwargs))

    return formula


def _halve_if_causal(op: Any, base: Callable[..., int]) -> Callable[..., int]:
    """Wrap torch's own formula (it handles nested/varlen shapes) and halve it when the op is causal."""

    @_raw
    def formula(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
        n = int(base(*args, out_val=out_val, **kwargs))
        return n // 2 if _is_causal(op, args, kwargs) else n

    return formula


def _build_mapping() -> dict[Any, Callable[..., int]]:
    mapping: dict[Any, Callable[..., int]] = {}
    sdpa_fwd = [
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_fused_attention_overrideable",
    ]
    sdpa_bwd = [name + "_backward" for name in sdpa_fwd]
    for name in sdpa_fwd:
        if hasattr(aten, name):
            op = getattr(aten, name)
            mapping[op] = _sdpa_forward(op)
    for name in sdpa_bwd:
        if hasattr(aten, name):
            op = getattr(aten, name)
            mapping[op] = _sdpa_backward(op)
    for name in (
        "_flash_attention_forward",
        "_flash_attention_backward",
        "_efficient_attention_forward",
        "_efficient_attention_backward",
    ):
        op = getattr(aten, name, None)
        if op is not None and op in flop_registry:
            mapping[op] = _halve_if_causal(op, flop_registry[op])
    return mapping


ATTENTION_FLOP_MAPPING: dict[Any, Callable[..., int]] = _build_mapping()


def flop_counter() -> FlopCounterMode:
    """A silent ``FlopCounterMode`` with the attention formulas of this module."""
    return FlopCounterMode(display=False, custom_mapping=ATTENTION_FLOP_MAPPING)


@contextmanager
def mha_fastpath_disabled() -> Iterator[None]:
    """``nn.MultiheadAttention``'s fused fast path off inside the block (restored after).

    The fast path (``aten._native_multi_head_attention``) has no FLOP formula; without it the module
    runs the same math as countable ops (see the module docstring).
    """
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "get_fastpath_enabled"):
        yield
        return
    previous = bool(mha.get_fastpath_enabled())
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(previous)


def count_flops_by_phase(step: Any) -> dict[str, int]:
    """FLOPs of each phase of one run of ``step`` (a ``PhasedStep``), in phase order.

    Runs the step once for real (weights are updated as in any step), with the MHA fast path off.
    """
    counts: dict[str, int] = {}
    with mha_fastpath_disabled():
        for name, fn in step.phases:
            with flop_counter() as counter:
                fn()
            counts[name] = int(counter.get_total_flops())
    return counts


def count_flops(step: Any) -> int:
    """Total FLOPs of one step (all phases) under one ``FlopCounterMode``; runs the step once.

    The MHA fast path is off while counting (see the module docstring).
    """
    run = step.run if hasattr(step, "run") else step
    with mha_fastpath_disabled(), flop_counter() as counter:
        run()
    return int(counter.get_total_flops())
