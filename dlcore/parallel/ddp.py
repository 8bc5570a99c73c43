"""Multi-process data parallelism: ``torch.nn.parallel.DistributedDataParallel``, applied from outside.

Li et al., "PyTorch Distributed: Experiences on Accelerating Data Parallel Training", VLDB 2020
(arXiv:2006.15704). Every rank holds a full replica; in backward DDP all-reduces gradients in buckets
as they become ready, overlapping communication with the rest of backward, so after ``backward()``
every rank holds the gradient averaged over the global batch and the same optimizer step keeps the
replicas identical.

``find_unused_parameters`` defaults to ``False``. The seed set it to ``True`` for a model with no unused
parameters: that makes DDP traverse the autograd graph after every forward to find parameters that will
get no gradient, a cost paid each step for nothing. Pass ``find_unused_parameters=True`` only for a
model whose forward really skips parameters (DDP then raises a clear error if it is needed).

On CPU (gloo) DDP takes no ``device_ids``; on CUDA it takes the one device this process drives.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["wrap_ddp"]


def wrap_ddp(
    model: nn.Module,
    *,
    device: torch.device | str | int | None = None,
    process_group: dist.ProcessGroup | None = None,
    **kw: Any,
) -> DistributedDataParallel:
    """Move ``model`` to ``device`` (when given) and wrap it in ``DistributedDataParallel``.

    Args:
        model: a single-device model, identical on every rank (DDP broadcasts rank 0's state at wrap).
        device: the device this rank uses; a CUDA device becomes ``device_ids=[device]``, a CPU device
            (or ``None``: leave the model where it is) passes no ``device_ids``.
        process_group: the data-parallel group (default: the world group).
        **kw: further ``DistributedDataParallel`` arguments (``bucket_cap_mb``, ``gradient_as_bucket_view``,
            ``static_graph``, ...); ``find_unused_parameters`` defaults to ``False``.

    Raises:
        RuntimeError: when no process group is initialised.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "wrap_ddp: torch.distributed is not initialised; call "
            "torch.distributed.init_process_group(...) first (e.g. under torchrun)"
        )
    kw.setdefault("find_unused_parameters", False)
    if isinstance(device, int):
        device = torch.device("cuda", device)
    elif isinstance(device, str):
        device = torch.device(device)
    device_ids: list[torch.device] | None = None
    if device is not None:
        model = model.to(device)
        if device.type == "cuda":
            if device.index is None:
                device = torch.device("cuda", torch.cuda.current_device())
            device_ids = [device]
    return DistributedDataParallel(model, device_ids=device_ids, process_group=process_group, **kw)
