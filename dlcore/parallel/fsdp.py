"""Fully sharded data parallelism with FSDP2 (``torch.distributed.fsdp.fully_shard``), applied from outside.

ZeRO stage 3 (Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion Parameter
Models", SC 2020, arXiv:1910.02054); FSDP (Zhao et al., "PyTorch FSDP", VLDB 2023, arXiv:2304.11277).
Each rank keeps only a 1/W shard of every parameter, gradient and optimizer state. Before a block's
forward its parameters are all-gathered, after it they are freed (``reshard_after_forward=True``) and
all-gathered again in backward; its gradients are reduce-scattered so each rank receives the averaged
gradient of its own shard, and the optimizer steps on shards only.

Applied as torchtitan's ``apply_fsdp`` does: ``fully_shard`` on every block (one communication group
per block, so block k+1's all-gather overlaps block k's compute and only one block is ever unsharded
at a time), then on the root for the parameters left over (embeddings, stem, head, final norm).

FSDP2 shards each parameter on dim 0 with ``torch.chunk`` semantics: with ``d0`` rows and W ranks,
rank r holds ``min(c, max(0, d0 - r*c))`` rows where ``c = ceil(d0 / W)``, stored in a buffer padded to
``c`` rows on every rank (for equal-size all-gathers). :func:`fsdp_shard_numel` and
:func:`fsdp_padded_shard_numel` give those numbers; :func:`local_numel` counts the local elements of a
tensor or DTensor, so memory "that follows from the strategy" can be checked exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from dlcore.layers.resnet import PreActBottleneck
from dlcore.layers.transformer import TransformerDecoderLayer, TransformerEncoderLayer

__all__ = [
    "DEFAULT_BLOCK_TYPES",
    "fsdp_padded_shard_numel",
    "fsdp_shard_numel",
    "local_nbytes",
    "local_numel",
    "wrap_fsdp",
]

DEFAULT_BLOCK_TYPES: tuple[type[nn.Module], ...] = (
    TransformerEncoderLayer,
    TransformerDecoderLayer,
    PreActBottleneck,
)


def wrap_fsdp(
    model: nn.Module,
    *,
    block_types: type[nn.Module] | Sequence[type[nn.Module]] = DEFAULT_BLOCK_TYPES,
    mp_dtype: torch.dtype | None = None,
    reshard_after_forward: bool = True,
    mesh: torch.distributed.device_mesh.DeviceMesh | None = None,
) -> nn.Module:
    """Shard ``model`` in place with ``fully_shard``: each ``block_types`` module, then the root.

    Args:
        model: a single-device model, identical on every rank (its parameters are sharded as they are;
            FSDP2 does not broadcast, so seed or load the same weights everywhere first).
        block_types: module classes that each get their own ``fully_shard`` (one all-gather /
            reduce-scatter group per block); ``()`` shards the root only.
        mp_dtype: the AMP dtype (``torch.bfloat16`` / ``torch.float16``): parameters are all-gathered and
            used in that dtype, gradients are reduce-scattered in float32
            (``MixedPrecisionPolicy(param_dtype=mp_dtype, reduce_dtype=torch.float32)``); the sharded
            parameters and the optimizer stay in the model's dtype. ``None``: no mixed precision.
        reshard_after_forward: free the unsharded parameters after forward and all-gather them again in
            backward (ZeRO-3; least memory). ``False`` keeps them from forward to backward (ZeRO-2-like:
            one all-gather per step, more memory). Applied to the blocks and to the root alike.
        mesh: a 1-D device mesh for FSDP (2-D: HSDP); default: every rank of the world group, on the
            current accelerator (CPU with gloo when there is none).

    Returns:
        ``model`` itself, now an ``FSDPModule``; its parameters are ``DTensor`` shards.

    Raises:
        ValueError: when ``block_types`` is not empty and ``model`` contains none of those modules
            (sharding only the root would all-gather the whole model at once, which is rarely meant).
    """
    types = (block_types,) if isinstance(block_types, type) else tuple(block_types)
    bad = [t for t in types if not (isinstance(t, type) and issubclass(t, nn.Module))]
    if bad:
        raise ValueError(f"wrap_fsdp: block_types must be nn.Module subclasses; got {bad!r}")
    mp_policy = (
        MixedPrecisionPolicy(param_dtype=mp_dtype, reduce_dtype=torch.float32)
        if mp_dtype is not None
        else MixedPrecisionPolicy()
    )
    blocks = [m for m in model.modules() if m is not model and types and isinstance(m, types)]
    if types and not blocks:
        names = ", ".join(t.__name__ for t in types)
        raise ValueError(
            f"wrap_fsdp: {type(model).__name__} contains no module of block_types ({names}); pass the "
            "model's block classes, or block_types=() to shard the root only"
        )
    # bottom-up: a block nested in another block is sharded first, so each parameter lands in the
    # innermost group (reversed pre-order visits children before their parents)
    for block in reversed(blocks):
        fully_shard(block, mesh=mesh, reshard_after_forward=reshard_after_forward, mp_policy=mp_policy)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward, mp_policy=mp_policy)
    return model


def fsdp_shard_numel(shape: Sequence[int], world_size: int, rank: int) -> int:
    """Elements of rank ``rank``'s dim-0 shard of a tensor of ``shape`` under FSDP2 (``torch.chunk``)."""
    _check_rank(world_size, rank)
    _check_shape(shape)
    d0, rest = shape[0], math.prod(shape[1:])
    c = -(-d0 // world_size)  # ceil
    return min(c, max(0, d0 - rank * c)) * rest


def fsdp_padded_shard_numel(shape: Sequence[int], world_size: int) -> int:
    """Elements of the padded shard buffer every rank allocates for a tensor of ``shape``: ``ceil(d0/W)``
    rows (FSDP2 pads so that all-gather inputs have equal size)."""
    _check_rank(world_size, 0)
    _check_shape(shape)
    return -(-shape[0] // world_size) * math.prod(shape[1:])


def local_numel(tensors: torch.Tensor | Iterable[torch.Tensor]) -> int:
    """Elements held by this rank: a ``DTensor`` counts its local shard, a plain tensor all of itself."""
    if isinstance(tensors, torch.Tensor):
        tensors = [tensors]
    total = 0
    for t in tensors:
        to_local = getattr(t, "to_local", None)
        total += (to_local() if callable(to_local) else t).numel()
    return total


def local_nbytes(tensors: torch.Tensor | Iterable[torch.Tensor]) -> int:
    """Bytes of the elements held by this rank (``local_numel * element_size``, per tensor)."""
    if isinstance(tensors, torch.Tensor):
        tensors = [tensors]
    return sum(local_numel(t) * t.element_size() for t in tensors)


def _check_shape(shape: Sequence[int]) -> None:
    if len(shape) == 0:
        raise ValueError("shape: got a 0-d shape; FSDP2 shards on dim 0, so a tensor needs at least one dim")


def _check_rank(world_size: int, rank: int) -> None:
    if world_size < 1:
        raise ValueError(f"world_size: got {world_size}, expected a positive integer")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank: got {rank}, expected 0 <= rank < world_size={world_size}")
