"""A pipeline stage of a model ``dlcore.parallel`` has no splitter for: cut at its blocks by tracing.

``bench.run.parallel`` cuts a ``dlcore`` ``TransformerEncoder`` or ``ResNet`` with their own
splitters; any other model (a model of your own, a timm or Hugging Face model, a built-in such as
``resblock``) goes through ``traced_pipeline``:

- the cut points are its repeated blocks (``Workload.blocks``, by qualified name in module order,
  ``bench.foreign.blocks.block_paths``): stage k starts at a block, the blocks shared as equally as
  possible (``dlcore.parallel.block_split_points``);
- the model is traced by ``torch.distributed.pipelining.pipeline`` on one micro-batch of the batch:
  the positional inputs and the keyword inputs except ``labels`` (``LOSS_ONLY_KWARGS``: a Hugging
  Face model's own loss targets; its pipeline takes the mean square of the last stage's output as its
  loss, as every pipeline here does, see ``bench.run.parallel._pipeline_loss``);
- activation checkpointing survives: tracing would inline a checkpointed block, so the plain model is
  traced and the same blocks of the stage (same module names) are checkpointed again;
- a model without blocks, with fewer blocks than stages, or that does not trace raises
  ``ParallelUnsupported`` (a ``skipped`` row) whose reason carries torch's own message and cause.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from bench.workload import Workload

LOSS_ONLY_KWARGS: tuple[str, ...] = ("labels",)
_MAX_REASON = 400


def pipeline_batch(workload: Workload) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The first stage's whole-batch inputs: positional inputs and keyword inputs (not ``labels``),
    tensors detached (the first stage feeds the batch; no input gradient)."""

    def plain(x: Any) -> Any:
        return x.detach() if isinstance(x, torch.Tensor) else x

    args = tuple(plain(x) for x in workload.inputs)
    kwargs = {k: plain(v) for k, v in workload.kwargs.items() if k not in LOSS_ONLY_KWARGS}
    return args, kwargs


def _first_chunk(x: Any, microbatches: int) -> Any:
    return x.chunk(microbatches)[0] if isinstance(x, torch.Tensor) and x.dim() > 0 else x


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:_MAX_REASON]}"


def traced_pipeline(
    workload: Workload,
    *,
    stage_index: int,
    num_stages: int,
    device: str,
    microbatches: int,
    schedule: str,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Any:
    """This rank's ``dlcore.parallel.Pipeline`` of ``workload.model`` (see the module docstring)."""
    from bench.foreign.blocks import block_paths
    from bench.run.parallel import ParallelUnsupported
    from dlcore import apply_activation_checkpointing
    from dlcore.parallel import block_split_points, build_traced_pipeline
    from dlcore.train.checkpointing import is_activation_checkpointed, remove_activation_checkpointing

    model = workload.model
    kind = type(model).__name__
    if not workload.blocks:
        raise ParallelUnsupported(
            f"pipeline: {kind} has no repeated blocks to cut between (none declared or detected; "
            "-p checkpoint_blocks=ClassName names them)"
        )
    names = block_paths(model, workload.blocks)
    try:
        split = block_split_points(names, num_stages)
    except ValueError:
        raise ParallelUnsupported(
            f"pipeline: {kind} has {len(names)} block(s) ({'+'.join(t.__name__ for t in workload.blocks)}), "
            f"fewer than the {num_stages} stages"
        ) from None
    args, kwargs = pipeline_batch(workload)
    example_args = tuple(_first_chunk(x, microbatches) for x in args)
    example_kwargs = {k: _first_chunk(v, microbatches) for k, v in kwargs.items()}
    # tracing would inline a checkpointed block (no recomputation left): trace the plain model, then
    # checkpoint the same blocks of this rank's stage (the stage keeps the model's module names)
    checkpointed = [name for name, m in model.named_modules() if is_activation_checkpointed(m)]
    remove_activation_checkpointing(model)
    try:
        pipe = build_traced_pipeline(
            model,
            split_before=split,
            example_args=example_args,
            example_kwargs=example_kwargs,
            stage_index=stage_index,
            num_stages=num_stages,
            device=device,
            microbatches=microbatches,
            schedule=schedule,  # type: ignore[arg-type]  # checked by the grid: gpipe | 1f1b
            loss_fn=loss_fn,
        )
    except Exception as exc:
        cause = exc.__cause__ or exc.__context__
        because = f"; cause: {_line(cause)}" if cause is not None else ""
        raise ParallelUnsupported(
            f"pipeline: {kind} does not trace with torch.distributed.pipelining ({_line(exc)}{because})"
        ) from None
    if checkpointed:
        stage_modules = dict(pipe.module.named_modules())
        chosen = {id(stage_modules[name]) for name in checkpointed if name in stage_modules}
        apply_activation_checkpointing(pipe.module, check_fn=lambda m: id(m) in chosen)
    return pipe
