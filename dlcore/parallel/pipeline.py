"""Pipeline parallelism over ``torch.distributed.pipelining``, applied from outside the model.

GPipe (Huang et al., "GPipe: Efficient Training of Giant Neural Networks using Pipeline Parallelism",
NeurIPS 2019, arXiv:1811.06965) and 1F1B (Narayanan et al., "PipeDream: Generalized Pipeline
Parallelism for DNN Training", SOSP 2019, and "Efficient Large-Scale Language Model Training on GPU
Clusters Using Megatron-LM", SC 2021, arXiv:2104.04473). The model is cut into ``p`` consecutive
stages, one per rank, and each batch into ``m`` micro-batches; while stage k works on micro-batch i,
stage k-1 already works on micro-batch i+1. GPipe runs all forwards then all backwards (holds ``m``
micro-batches of activations); 1F1B alternates one forward and one backward once the pipe is full
(holds at most ``p``). Both idle for the same bubble, a fraction ``(p-1)/(m+p-1)`` of each step
(:func:`bubble_fraction`). The seed's ``PipelineParallelModel`` ran the stages one after another on
the whole batch: with no micro-batches only one device ever worked at a time.

Splitting (the model code stays single-device): :func:`split_encoder` cuts a ``TransformerEncoder``
at its layers, :func:`split_resnet` a ``ResNet`` at its residual stages (or blocks). Each returns one
module per pipeline stage that *shares* the model's submodules (no copy) and keeps the model's
parameter names, so ``stage.state_dict()`` keys are a subset of ``model.state_dict()`` keys and a
checkpoint maps back without renaming. A rank keeps only its own stage (drop the model and the other
stages; or build the model on ``device="meta"`` and materialise only the stage), so only the stage's
parameters live on it.

:func:`build_pipeline` wraps one stage in ``PipelineStage`` and ``ScheduleGPipe`` / ``Schedule1F1B``
(``n_microbatches=microbatches``, gradients averaged over micro-batches) and returns a
:class:`Pipeline` whose ``step`` runs one forward and backward of the whole batch. Any other model is
cut by tracing it (``dlcore.parallel.traced``), into the same :class:`Pipeline`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

__all__ = [
    "EncoderStage",
    "Pipeline",
    "ResNetStage",
    "balanced_partition",
    "bubble_fraction",
    "build_pipeline",
    "split_encoder",
    "split_resnet",
]

ScheduleName = Literal["gpipe", "1f1b"]
_SCHEDULES: dict[str, type[ScheduleGPipe] | type[Schedule1F1B]] = {
    "gpipe": ScheduleGPipe,
    "1f1b": Schedule1F1B,
}


def bubble_fraction(num_stages: int, microbatches: int) -> float:
    """Idle fraction of a GPipe / 1F1B step with ``p = num_stages`` and ``m = microbatches``:
    ``(p - 1) / (m + p - 1)`` (equal per-stage, per-micro-batch costs; communication ignored)."""
    if num_stages < 1 or microbatches < 1:
        raise ValueError(
            f"bubble_fraction: got num_stages={num_stages}, microbatches={microbatches}; expected both >= 1"
        )
    return (num_stages - 1) / (microbatches + num_stages - 1)


def balanced_partition(costs: Sequence[int], n_parts: int) -> list[range]:
    """Cut ``costs`` into ``n_parts`` non-empty consecutive ranges minimising the largest range's total.

    Among the optimal cuts it returns the one that fills earlier parts first (for equal costs: the
    sizes of ``numpy.array_split``, larger parts first).
    """
    n = len(costs)
    if not 1 <= n_parts <= n:
        raise ValueError(f"balanced_partition: cannot cut {n} units into {n_parts} non-empty parts")
    if any(c < 0 for c in costs):
        raise ValueError(f"balanced_partition: costs must be non-negative; got {list(costs)}")

    def cut(capacity: int) -> list[range] | None:
        parts: list[range] = []
        start, total = 0, 0
        for i, c in enumerate(costs):
            must_cut = n - i == n_parts - len(parts) - 1  # exactly one unit left per part still to open
            if i > start and (total + c > capacity or must_cut):
                parts.append(range(start, i))
                start, total = i, 0
            total += c
        parts.append(range(start, n))
        if len(parts) > n_parts or any(sum(costs[j] for j in p) > capacity for p in parts):
            return None
        return parts

    # candidate capacities: every sum of consecutive units; the smallest that cuts into n_parts wins
    sums = sorted({sum(costs[a:b]) for a in range(n) for b in range(a + 1, n + 1)})
    for capacity in sums:
        parts = cut(capacity)
        if parts is not None:
            return parts
    raise AssertionError("unreachable: the total cost always fits")  # pragma: no cover


class EncoderStage(nn.Module):
    """A run of consecutive encoder layers (and, on the last stage, the encoder's final norm).

    ``layers`` is a ``ModuleDict`` keyed by the layers' indices in the full encoder, so parameter names
    (``layers.3.linear1.weight``, ``norm.weight``) are the full model's. No masks: a pipeline stage takes
    one tensor; ``is_causal=True`` applies the causal mask in every layer.
    """

    def __init__(
        self, layers: dict[str, nn.Module], norm: nn.Module | None = None, is_causal: bool = False
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleDict(layers)
        self.norm = norm
        self.is_causal = is_causal

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, L, E) -> (B, L, E)."""
        for layer in self.layers.values():
            x = layer(x, is_causal=self.is_causal)
        if self.norm is not None:
            x = self.norm(x)
        return x


def split_encoder(model: nn.Module, n_stages: int, *, is_causal: bool = False) -> list[EncoderStage]:
    """Cut a ``TransformerEncoder`` (anything with ``.layers`` and ``.norm``) into ``n_stages`` stages of
    consecutive layers, as equal in size as possible (layers are identical, so equal layer counts balance
    compute and parameters alike); the final norm joins the last stage. The stages share the model's
    layers."""
    layers = list(cast(Iterable[nn.Module], model.layers))
    if not 1 <= n_stages <= len(layers):
        raise ValueError(f"split_encoder: cannot cut {len(layers)} layers into {n_stages} stages")
    parts = balanced_partition([1] * len(layers), n_stages)
    norm = getattr(model, "norm", None)
    return [
        EncoderStage(
            {str(i): layers[i] for i in part},
            norm=norm if k == n_stages - 1 else None,
            is_causal=is_causal,
        )
        for k, part in enumerate(parts)
    ]


class ResNetStage(nn.Module):
    """The stem (first stage only), consecutive residual blocks, and the head (last stage only).

    Parameter names are the full ResNet's: ``stem.0.weight``, ``stages.2.1.conv1.weight`` (``stages`` is
    a ``ModuleDict`` of residual stages, each a ``ModuleDict`` of blocks, keyed by their indices in the
    model), ``norm.weight``, ``fc.weight``.
    """

    def __init__(
        self,
        blocks: dict[str, dict[str, nn.Module]],
        stem: nn.Module | None = None,
        head: dict[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleDict({i: nn.ModuleDict(b) for i, b in blocks.items()})
        self.has_head = head is not None
        if head is not None:
            self.norm, self.act, self.global_pool, self.fc = (
                head["norm"],
                head["act"],
                head["global_pool"],
                head["fc"],
            )

    def forward(self, x: Tensor) -> Tensor:
        """First stage: images (B, C, H, W); others: feature maps; last stage returns (B, num_classes)."""
        if self.stem is not None:
            x = self.stem(x)  # (B, C, H, W) -> (B, base_width, H/4, W/4)
        for stage in self.stages.values():
            for block in cast(nn.ModuleDict, stage).values():
                x = block(x)
        if self.has_head:
            x = self.act(self.norm(x))
            x = self.global_pool(x).flatten(1)  # (B, C, h, w) -> (B, C)
            x = self.fc(x)  # (B, C) -> (B, num_classes)
        return x


def split_resnet(
    model: nn.Module, n_stages: int, *, granularity: Literal["stage", "block"] = "stage"
) -> list[ResNetStage]:
    """Cut a ``dlcore`` ``ResNet`` into ``n_stages`` pipeline stages.

    ``granularity="stage"`` cuts only between residual stages (at most ``len(model.stages)`` pipeline
    stages); ``"block"`` may also cut inside one. Either way the cut balances the number of residual
    blocks per pipeline stage: in a ResNet every block costs about the same FLOPs (each residual stage
    doubles the width and halves the resolution), so this balances compute. Parameters are *not*
    balanced (a later block holds about 4x the parameters of an earlier one). The stem joins the first
    pipeline stage, the head (final norm, pooling, classifier) the last. The stages share the model's
    modules.
    """
    if granularity not in ("stage", "block"):
        raise ValueError(f"split_resnet: granularity must be 'stage' or 'block'; got {granularity!r}")
    res_stages = list(cast(Iterable[nn.Module], model.stages))
    # units: one per residual stage, or one per block; each a list of (stage index, block index, block)
    units: list[list[tuple[str, str, nn.Module]]] = []
    for i, stage in enumerate(res_stages):
        stage_blocks = [(str(i), str(j), b) for j, b in enumerate(cast(Iterable[nn.Module], stage))]
        units.extend([stage_blocks] if granularity == "stage" else [[b] for b in stage_blocks])
    if not 1 <= n_stages <= len(units):
        what = "residual stages" if granularity == "stage" else "blocks"
        raise ValueError(f"split_resnet: cannot cut {len(units)} {what} into {n_stages} pipeline stages")
    parts = balanced_partition([len(u) for u in units], n_stages)
    head = {name: getattr(model, name) for name in ("norm", "act", "global_pool", "fc")}
    out = []
    for k, part in enumerate(parts):
        blocks: dict[str, dict[str, nn.Module]] = {}
        for si, bj, block in itertools.chain.from_iterable(units[u] for u in part):
            blocks.setdefault(si, {})[bj] = block
        out.append(
            ResNetStage(
                blocks,
                stem=cast(nn.Module, model.stem) if k == 0 else None,
                head=head if k == n_stages - 1 else None,
            )
        )
    return out


class _UndoShapeInferenceForward:
    """Undo what the first forward of ``module`` does to its buffers (BatchNorm running statistics).

    On the first step, ``PipelineStage`` infers shapes by running the stage once more on the first
    micro-batch's shapes (``_forward_metadata_inference``, train mode, grad enabled, then an
    ``autograd.grad`` through it); without this guard that extra forward gives every BatchNorm one more
    running-statistics update (``num_batches_tracked`` = m + 1 after the first step) than the unsplit
    model gets. The buffers are saved before that first forward and put back just before the second
    (the first real micro-batch), once the inference graph has been used: restoring them earlier would
    bump the version of tensors that graph saved. ``build_pipeline`` always builds its stages in
    dynamic-shape mode, where that inference forward runs; the distributed test compares every buffer
    with the unsplit model's, so a torch release that drops the extra forward would show up there.
    """

    def __init__(self, module: nn.Module) -> None:
        self.saved: list[tuple[Tensor, Tensor]] | None = None
        self.handle = module.register_forward_pre_hook(self._pre_forward)

    def _pre_forward(self, module: nn.Module, args: Any) -> None:
        if self.saved is None:  # the shape-inference forward
            self.saved = [(b, b.detach().clone()) for b in module.buffers()]
            return
        with torch.no_grad():  # the first real micro-batch
            for buf, value in self.saved:
                buf.copy_(value)
        self.remove()

    def remove(self) -> None:
        self.handle.remove()
        self.saved = []


class Pipeline:
    """One rank's stage of a pipeline and its schedule; :meth:`step` runs one training step's forward
    and backward over ``microbatches`` micro-batches (the optimizer step stays the caller's)."""

    def __init__(
        self,
        stage: Any,
        schedule: ScheduleGPipe | Schedule1F1B,
        microbatches: int,
        schedule_name: str,
        *,
        traced: bool = False,
    ) -> None:
        self.stage = stage  # a PipelineStage, or the stage a traced Pipe built (dlcore.parallel.traced)
        self.schedule = schedule
        self.microbatches = microbatches
        self.schedule_name = schedule_name
        # a traced stage knows its shapes from the trace: no shape-inference forward to undo
        self.traced = traced
        self._metadata_inferred = traced

    @property
    def module(self) -> nn.Module:
        return self.stage.submod

    @property
    def stage_index(self) -> int:
        return self.stage.stage_index

    @property
    def num_stages(self) -> int:
        return self.stage.num_stages

    @property
    def is_first(self) -> bool:
        return self.stage.is_first

    @property
    def is_last(self) -> bool:
        return self.stage.is_last

    def step(
        self, *inputs: Any, target: Tensor | None = None, losses: list[Tensor] | None = None, **kwargs: Any
    ) -> Any:
        """Run the schedule on the whole batch.

        Every rank may make the same call (SPMD style): ``inputs`` and keyword ``kwargs`` are used on
        the first stage only, ``target`` and ``losses`` (a list that receives one loss per micro-batch)
        on the last only. Every tensor's dim 0 is split into ``microbatches`` equal micro-batches.
        Returns the merged output on the last stage, else None.
        Gradients accumulate into the stage's ``.grad`` as the mean over micro-batches, which equals the
        gradient of the full-batch mean loss when the loss is a per-micro-batch mean.
        """
        if not self.is_first:
            inputs, kwargs = (), {}  # later stages receive their input from the previous stage
        for t in (*inputs, *kwargs.values(), target):
            if isinstance(t, Tensor) and (t.dim() == 0 or t.size(0) % self.microbatches != 0):
                raise ValueError(
                    f"Pipeline.step: a batch of shape {tuple(t.shape)} does not split into "
                    f"{self.microbatches} equal micro-batches along dim 0"
                )
        if not self.is_last:
            target, losses = None, None
        if self._metadata_inferred:
            return self.schedule.step(*inputs, target=target, losses=losses, **kwargs)
        guard = _UndoShapeInferenceForward(self.module)  # the first forward is shape inference
        try:
            return self.schedule.step(*inputs, target=target, losses=losses, **kwargs)
        finally:
            guard.remove()
            self._metadata_inferred = True

    def __repr__(self) -> str:
        return (
            f"Pipeline(stage {self.stage_index}/{self.num_stages}, schedule={self.schedule_name!r}, "
            f"microbatches={self.microbatches})"
        )


def check_pipeline_args(
    who: str,
    *,
    schedule: str,
    microbatches: int,
    stage_index: int,
    num_stages: int,
    group: dist.ProcessGroup | None = None,
) -> None:
    """The checks every pipeline builder makes before it touches the network (``who`` names it)."""
    if schedule not in _SCHEDULES:
        raise ValueError(f"{who}: schedule must be one of {sorted(_SCHEDULES)}; got {schedule!r}")
    if microbatches < 1:
        raise ValueError(f"{who}: microbatches must be >= 1; got {microbatches}")
    if not 0 <= stage_index < num_stages:
        raise ValueError(f"{who}: stage_index {stage_index} not in [0, num_stages={num_stages})")
    if schedule == "1f1b" and microbatches < num_stages:
        raise ValueError(f"{who}: 1F1B needs microbatches >= num_stages; got {microbatches} < {num_stages}")
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            f"{who}: torch.distributed is not initialised; call "
            "torch.distributed.init_process_group(...) first (one process per stage)"
        )
    group_size, group_rank = dist.get_world_size(group), dist.get_rank(group)
    if group_size != num_stages or group_rank != stage_index:
        raise ValueError(
            f"{who}: one stage per rank: expected num_stages == group size ({group_size}) and "
            f"stage_index == group rank ({group_rank}); got num_stages={num_stages}, "
            f"stage_index={stage_index}"
        )


def build_pipeline(
    stage_module: nn.Module,
    *,
    stage_index: int,
    num_stages: int,
    device: torch.device | str,
    microbatches: int,
    schedule: ScheduleName = "gpipe",
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    group: dist.ProcessGroup | None = None,
) -> Pipeline:
    """Place ``stage_module`` on ``device`` and wrap it in ``PipelineStage`` and a single-stage schedule.

    One stage per rank: ``stage_index`` must be this rank's rank in ``group`` (default: the world) and
    ``num_stages`` the group's size. ``loss_fn(output, target)`` (a per-micro-batch mean loss) runs on
    the last stage; ``None`` builds a forward-only pipeline. ``"1f1b"`` needs
    ``microbatches >= num_stages``.
    """
    check_pipeline_args(
        "build_pipeline", schedule=schedule, microbatches=microbatches, stage_index=stage_index,
        num_stages=num_stages, group=group,
    )  # fmt: skip
    device = torch.device(device)
    stage_module.to(device)
    stage = PipelineStage(stage_module, stage_index, num_stages, device, group=group)
    sched = _SCHEDULES[schedule](stage, n_microbatches=microbatches, loss_fn=loss_fn, scale_grads=True)
    return Pipeline(stage, sched, microbatches, schedule)
