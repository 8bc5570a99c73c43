"""Pipeline stages of any model, cut at its block boundaries by tracing it.

``split_encoder`` and ``split_resnet`` (``dlcore.parallel.pipeline``) cut models whose structure
they know. Any other model is cut by ``torch.distributed.pipelining.pipeline``: the model is traced
(``torch.export``) on one micro-batch, with a split point before the first block of every stage but
the first (``SplitPoint.BEGINNING``), and each rank builds its own stage from the traced graph
(``Pipe.build_stage``). The stages keep the model's parameters (the same tensors) under their
original names (``blocks.3.fc1.weight``).

:func:`block_split_points` places the cuts: the model's blocks (qualified names, in order) are cut
into ``num_stages`` runs of consecutive blocks as equal in count as possible
(``balanced_partition``); whatever precedes the first block (embeddings, a stem) joins the first
stage and whatever follows the last (a final norm, a head) the last stage.

A model that does not trace (data-dependent control flow, outputs of types ``torch.export`` cannot
flatten) raises torch's own error from :func:`build_traced_pipeline`; callers report it as is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from dlcore.parallel.pipeline import (
    _SCHEDULES,
    Pipeline,
    ScheduleName,
    balanced_partition,
    check_pipeline_args,
)

__all__ = ["block_split_points", "build_traced_pipeline"]


def block_split_points(block_names: Sequence[str], num_stages: int) -> list[str]:
    """The blocks each stage after the first starts with: ``num_stages - 1`` names of ``block_names``.

    ``ValueError`` when there are fewer blocks than stages.
    """
    if num_stages < 1:
        raise ValueError(f"block_split_points: num_stages must be >= 1; got {num_stages}")
    if len(block_names) < num_stages:
        raise ValueError(f"block_split_points: cannot cut {len(block_names)} blocks into {num_stages} stages")
    parts = balanced_partition([1] * len(block_names), num_stages)
    return [block_names[part.start] for part in parts[1:]]


def build_traced_pipeline(
    model: nn.Module,
    *,
    split_before: Sequence[str],
    example_args: tuple[Any, ...],
    example_kwargs: Mapping[str, Any] | None = None,
    stage_index: int,
    num_stages: int,
    device: torch.device | str,
    microbatches: int,
    schedule: ScheduleName = "gpipe",
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    group: dist.ProcessGroup | None = None,
) -> Pipeline:
    """Trace ``model`` on one micro-batch (``example_args`` / ``example_kwargs``), cut it before each
    module named in ``split_before``, and build this rank's stage and schedule.

    Same contract as ``build_pipeline`` (one stage per rank of ``group``, ``loss_fn(output, target)``
    on the last stage, ``"1f1b"`` needs ``microbatches >= num_stages``); ``model`` must already be on
    ``device``. Tracing errors propagate as torch raises them.
    """
    from torch.distributed.pipelining import SplitPoint, pipeline

    check_pipeline_args(
        "build_traced_pipeline", schedule=schedule, microbatches=microbatches, stage_index=stage_index,
        num_stages=num_stages, group=group,
    )  # fmt: skip
    if len(split_before) != num_stages - 1:
        raise ValueError(
            f"build_traced_pipeline: {num_stages} stages need {num_stages - 1} split points; "
            f"got {list(split_before)}"
        )
    pipe = pipeline(
        model,
        mb_args=tuple(example_args),
        mb_kwargs=dict(example_kwargs or {}),
        split_spec={name: SplitPoint.BEGINNING for name in split_before},
    )
    if pipe.num_stages != num_stages:  # a split point the traced graph never reached
        raise ValueError(
            f"build_traced_pipeline: the traced model has {pipe.num_stages} stages, expected {num_stages} "
            f"(split points {list(split_before)})"
        )
    stage = pipe.build_stage(stage_index, torch.device(device), group)
    sched = _SCHEDULES[schedule](stage, n_microbatches=microbatches, loss_fn=loss_fn, scale_grads=True)
    return Pipeline(stage, sched, microbatches, schedule, traced=True)
