"""Single-process data parallelism: ``torch.nn.DataParallel``, applied from outside the model.

``nn.DataParallel`` (one process, several GPUs) replicates the module onto every device in each
forward, scatters the batch along dim 0, runs the replicas in threads, gathers the outputs on
``device_ids[0]`` and sums the gradients back there. It is the seed's "DP", claimed but never
written. It is here as the baseline that DDP beats (PyTorch's own docs recommend DDP even on one
node: DP re-replicates every step, is GIL-bound, and funnels everything through one GPU).

It needs CUDA and at least two devices: with one device it would only add overhead, and on CPU
``DataParallel`` silently runs the plain module. :func:`wrap_dp` raises a ``RuntimeError`` that
names the need instead, so a benchmark can record a ``skipped`` row.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["wrap_dp"]


def wrap_dp(model: nn.Module, device_ids: Sequence[int | torch.device] | None = None) -> nn.DataParallel:
    """Wrap ``model`` in ``nn.DataParallel`` over ``device_ids`` (default: every visible CUDA device).

    The model is moved to ``device_ids[0]`` (where DataParallel keeps the master copy and gathers
    outputs). Raises ``RuntimeError`` when CUDA is unavailable or fewer than two devices are given.
    """
    n_visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n_visible == 0:
        raise RuntimeError(
            "wrap_dp: nn.DataParallel needs at least 2 CUDA devices; CUDA is not available here"
        )
    ids = list(range(n_visible)) if device_ids is None else list(device_ids)
    indices = [torch.device(d).index if isinstance(d, torch.device) else int(d) for d in ids]
    if len(indices) < 2:
        raise RuntimeError(
            f"wrap_dp: nn.DataParallel needs at least 2 CUDA devices; got device_ids={indices} "
            f"({n_visible} visible)"
        )
    bad = [i for i in indices if i is None or not 0 <= i < n_visible]
    if bad:
        raise RuntimeError(f"wrap_dp: device_ids {bad} are not visible CUDA devices (0..{n_visible - 1})")
    model = model.to(torch.device("cuda", indices[0]))
    return nn.DataParallel(model, device_ids=indices, output_device=indices[0])
