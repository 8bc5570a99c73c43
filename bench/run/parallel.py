"""The parallel technique inside one rank: ``apply_parallel`` in ``build_step``'s order, and timing.

A rank of a torchrun job (``bench.run.rank_worker``) builds its step here, in the fixed order of
``bench.workload.build_step`` with the parallel wrapper in its slot (torchtitan's ``parallelize_*``
order: activation checkpointing, then torch.compile, then the data/model parallelism, then the
precision):

1. ``build_workload``: seed, build, channels_last. The batch is the rank's share of the global
   ``batch_size`` (``local_batch_size``): ``ddp`` / ``fsdp`` ranks take ``batch_size / world_size``
   each; ``dp`` (one process) and a ``pipeline`` take the whole batch. Every rank builds with the same
   seed, so the replicas start from the same weights (FSDP2 does not broadcast them);
2. activation checkpointing, then ``torch.compile`` (``bench.workload.make_step``,
   ``bench.compiling``: each repeated block's forward, or the whole model's, and the loss), on the
   unsplit, unwrapped model, so DDP and FSDP wrap compiled blocks and their hooks run between
   compiled regions. A pipeline compiles its stage instead, once cut (torchtitan's order for pipeline
   parallelism: split, then compile each stage): a traced stage is no longer made of the model's
   blocks, and tracing does not go through compiled code;
3. ``apply_parallel``: ``dlcore.parallel`` ``wrap_dp`` / ``wrap_ddp`` / ``wrap_fsdp`` (one group per
   ``Workload.blocks`` block, then the root; the AMP dtype as FSDP's ``mp_dtype``), or
   ``split_encoder`` / ``split_resnet`` + ``build_pipeline`` (any other model: cut at its blocks by
   tracing, ``bench.run.traced_pipeline``; this rank's stage only; the optimizer keeps only that
   stage's parameters). FSDP replaces the parameters by DTensor shards, so the optimizer's parameter
   groups are pointed at the new parameters (no step has run yet, so there is no state to carry);
4. the precision: autocast around each phase at call time (``PhasedStep``, or ``PipelineStep``).

Timing under distribution (``time_distributed``): every rank must run the same number of steps, or
one of them waits forever in a collective. Warm-up is a fixed number of full steps; then samples
are taken in batches, and after each batch the ranks all-reduce (MAX) a small vector: "my median is
not yet precise enough", elapsed time, median. The decision to stop and the size of the next batch
are computed from that reduced vector, so every rank takes the same decision. Each sample is one
full step on this rank's clock (CUDA: synchronized), communication included (DDP's gradient
all-reduce, FSDP's all-gathers and reduce-scatters, the pipeline's sends and receives); the
all-reduce between batches is outside the timed region.

The bytes communicated per step come from the strategy, in closed form (``dlcore.parallel.comm``):
gradient bytes for DDP, parameter and gradient bytes for FSDP (in the AMP dtype when the parameters
are gathered in it), the activation at each stage boundary for a pipeline (recorded from the stage
outputs' shapes and dtypes, so it is deterministic too).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from bench.errors import Unsupported
from bench.registry import BuildContext, get_scenario
from bench.run.grid import RunConfig
from bench.workload import PRECISION_DTYPES, Workload, autocast_context, build_workload, make_step


class ParallelUnsupported(Unsupported):
    """This configuration cannot be parallelised this way (the row is ``skipped``, not ``error``)."""


@dataclass
class ParallelInfo:
    """What ``apply_parallel`` knows about the strategy as applied on this rank."""

    parallel: str
    rank: int
    world_size: int
    comm_bytes_per_step: int = 0
    bubble_fraction: float | None = None
    stage_index: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # pipelines: the bytes of this stage's output per micro-batch, known after the first step
    stage_output_bytes: Callable[[], int] | None = None


def local_batch_size(cfg: RunConfig) -> int:
    """This rank's batch: the global ``batch_size`` split over ddp/fsdp ranks, whole otherwise."""
    batch = int(cfg.params_dict["batch_size"])
    return batch // cfg.world_size if cfg.parallel in ("ddp", "fsdp") else batch


def rank_device(cfg: RunConfig, local_rank: int) -> str:
    """The device a rank drives: ``cuda:<local rank>`` (dp: the first of its GPUs), or ``cpu``."""
    if not cfg.device.startswith("cuda"):
        return "cpu"
    return "cuda:0" if cfg.parallel == "dp" else f"cuda:{local_rank}"


def _param_bytes(model: nn.Module, dtype: torch.dtype | None = None) -> int:
    """Bytes of every trainable parameter, in ``dtype`` when given (the dtype it is sent in)."""
    size = torch.empty((), dtype=dtype).element_size() if dtype is not None else None
    return sum(p.numel() * (size or p.element_size()) for p in model.parameters() if p.requires_grad)


def _retarget_optimizer(opt: torch.optim.Optimizer | None, old: dict[int, str], model: nn.Module) -> None:
    """Point the optimizer's groups at ``model``'s parameters of the same names (FSDP2 replaced them)."""
    if opt is None:
        return
    new = dict(model.named_parameters())
    for group in opt.param_groups:
        group["params"] = [new[old[id(p)]] for p in group["params"]]


def apply_parallel(
    workload: Workload,
    parallel: str,
    *,
    device: str,
    precision: str,
    mode: str,
    rank: int,
    world_size: int,
    microbatches: int = 1,
    schedule: str = "gpipe",
) -> tuple[ParallelInfo, Any]:
    """Wrap, shard or cut ``workload.model`` for ``parallel`` (in place); returns the info and, for a
    pipeline, the ``dlcore.parallel.Pipeline`` of this rank's stage (else None).

    ``workload.model`` becomes the wrapper (dp, ddp), the sharded model (fsdp) or this rank's stage
    (pipeline); ``workload.optimizer`` follows its parameters.
    """
    from dlcore.parallel import comm

    info = ParallelInfo(parallel, rank, world_size)
    model = workload.model
    amp = PRECISION_DTYPES[precision] if precision != "fp32" else None
    train = mode == "train"
    if parallel == "dp":
        from dlcore.parallel import wrap_dp

        workload.model = wrap_dp(model, device_ids=list(range(world_size)))
        return info, None
    if parallel == "ddp":
        from dlcore.parallel import wrap_ddp

        grads = _param_bytes(model)
        workload.model = wrap_ddp(model, device=device if device.startswith("cuda") else None)
        info.comm_bytes_per_step = round(
            comm.comm_bytes_per_step("ddp", grad_bytes=grads, world_size=world_size) if train else 0
        )
        return info, None
    if parallel == "fsdp":
        from dlcore.parallel import DEFAULT_BLOCK_TYPES, wrap_fsdp

        if amp is not None and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            # FSDP's param_dtype would hand BatchNorm bf16/fp16 weights beside its fp32 running
            # statistics, which batch_norm rejects ("expected scalar type BFloat16 but found Float"):
            # keep the parameters in fp32 and let autocast alone set the compute precision
            amp = None
        info.extra["fsdp_param_dtype"] = str(amp or "model dtype").replace("torch.", "")
        params, grads = _param_bytes(model, amp), _param_bytes(model, torch.float32 if amp else None)
        names = {id(p): n for n, p in model.named_parameters()}
        try:  # one group per repeated block (the scenario's, or the detected ones), then the root
            wrap_fsdp(model, block_types=workload.blocks or DEFAULT_BLOCK_TYPES, mp_dtype=amp)
        except ValueError:  # no known block type: shard the root as one group
            wrap_fsdp(model, block_types=(), mp_dtype=amp)
            info.extra["fsdp_groups"] = "root"
        _retarget_optimizer(workload.optimizer, names, model)
        info.comm_bytes_per_step = round(
            comm.comm_bytes_per_step("fsdp", param_bytes=params, grad_bytes=grads, world_size=world_size)
            if train
            else comm.all_gather_bytes(params, world_size)  # inference: one all-gather per block
        )
        return info, None
    if parallel == "pipeline":
        return _apply_pipeline(workload, info, device, microbatches, schedule)
    raise ValueError(f"parallel: unknown strategy {parallel!r}")


def _split(workload: Workload, n_stages: int) -> list[nn.Module]:
    """The model cut into ``n_stages`` consecutive stages, by ``dlcore.parallel``'s splitters."""
    from dlcore import ResNet, TransformerEncoder
    from dlcore.parallel import split_encoder, split_resnet

    model = workload.model
    try:
        if isinstance(model, TransformerEncoder):
            return list(split_encoder(model, n_stages, is_causal=bool(workload.extra.get("causal"))))
        if isinstance(model, ResNet):
            return list(split_resnet(model, n_stages, granularity="block"))
    except ValueError as exc:  # fewer layers/blocks than stages
        raise ParallelUnsupported(f"pipeline: {exc}") from None
    raise ParallelUnsupported(
        f"pipeline: no stage splitter for {type(model).__name__} (dlcore.parallel splits a "
        "TransformerEncoder and a dlcore ResNet); use ddp or fsdp"
    )


def _pipeline_loss(output: Any, target: torch.Tensor) -> torch.Tensor:
    """Per-micro-batch loss of the last stage: the mean square of the output (of its first tensor when
    a traced stage returns several; the scenario's own loss closes over full-batch labels; its cost is
    negligible beside the stages' compute)."""
    if isinstance(output, tuple | list):
        output = output[0]
    return output.float().pow(2).mean()


def _apply_pipeline(
    workload: Workload, info: ParallelInfo, device: str, microbatches: int, schedule: str
) -> tuple[ParallelInfo, Any]:
    from dlcore import ResNet, TransformerEncoder
    from dlcore.parallel import bubble_fraction, build_pipeline

    p, rank = info.world_size, info.rank
    pipe = None
    if not isinstance(workload.model, TransformerEncoder | ResNet):  # any other model: traced at its blocks
        from bench.run.traced_pipeline import traced_pipeline

        pipe = traced_pipeline(
            workload, stage_index=rank, num_stages=p, device=device, microbatches=microbatches,
            schedule=schedule, loss_fn=_pipeline_loss,
        )  # fmt: skip
        stage = pipe.module
    else:
        if len(workload.inputs) < 1 or not isinstance(workload.inputs[0], torch.Tensor):
            raise ParallelUnsupported("pipeline: the scenario's model does not take one input tensor")
        stage = _split(workload, p)[rank]
    keep = {id(q) for q in stage.parameters()}
    if workload.optimizer is not None:
        for group in workload.optimizer.param_groups:
            group["params"] = [q for q in group["params"] if id(q) in keep]
    out_bytes: list[int] = []

    def record(_m: nn.Module, _args: Any, out: Any) -> None:
        sent = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]  # a traced stage: several
        if not out_bytes and sent:
            out_bytes.append(sum(t.numel() * t.element_size() for t in sent))

    stage.register_forward_hook(record)
    if pipe is None:
        pipe = build_pipeline(
            stage,
            stage_index=rank,
            num_stages=p,
            device=device,
            microbatches=microbatches,
            schedule=schedule,  # type: ignore[arg-type]  # checked by the grid: gpipe | 1f1b
            loss_fn=_pipeline_loss,
        )
    workload.model = stage  # the full model and the other stages are dropped with ``stages``
    info.stage_index = rank
    info.bubble_fraction = bubble_fraction(p, microbatches)
    info.stage_output_bytes = lambda: out_bytes[0] if out_bytes else 0
    info.extra.update(pipeline_loss="mean_square", stage_params=sum(q.numel() for q in stage.parameters()))
    return info, pipe


def _memtracker_reset_hook(stage: nn.Module) -> Any:
    """Let torch's ``MemTracker`` (``bench.harness.memory``) follow a pipeline stage.

    A stage's ``forward`` runs once per micro-batch. MemTracker refuses a root module called a second
    time in forward ("multiple iterative calls") unless its module statistics are reset in between
    (``reset_mod_stats``, which only clears per-module reports, not the category totals the harness
    reads). This global forward pre-hook, registered before any tracker is entered and so run before
    the tracker's own hook, does that reset for the stage whenever a tracker is active.
    """

    def hook(module: nn.Module, _args: Any) -> None:
        if module is not stage:
            return
        try:
            from torch.distributed._tools.mem_tracker import MemTracker
            from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

            for mode in _get_current_dispatch_mode_stack():
                if isinstance(mode, MemTracker) and module in mode.memory_tracking:
                    if not mode._mod_tracker.is_bw:  # a recomputation in backward is tracked as such
                        mode.reset_mod_stats()
        except (ImportError, AttributeError):  # another torch: the memory pass says why it failed
            return

    return nn.modules.module.register_module_forward_pre_hook(hook)


class PipelineStep:
    """One training step of this rank's pipeline stage: the schedule's forward and backward over the
    micro-batches, then the stage's optimizer step. Same surface as ``PhasedStep`` (``w``, ``phases``,
    ``run``) so the memory and FLOP passes measure it like any step."""

    def __init__(self, workload: Workload, pipe: Any, *, precision: str, device: str) -> None:
        from bench.run.traced_pipeline import pipeline_batch

        # stage 0 feeds the batch (no input grad): a split model its one input tensor, a traced one
        # its positional and keyword inputs; later stages receive theirs from the previous stage
        self.args: tuple[Any, ...] = ()
        self.kwargs: dict[str, Any] = {}
        if pipe.is_first:
            self.args, self.kwargs = (
                pipeline_batch(workload) if pipe.traced else ((workload.inputs[0].detach(),), {})
            )
        self.w = Workload(
            model=workload.model,
            inputs=self.args,
            kwargs=self.kwargs,
            optimizer=workload.optimizer,
            items_per_step=workload.items_per_step,
            unit=workload.unit,
            extra=workload.extra,
        )
        self.pipe = pipe
        self.precision = precision
        self.device = device
        batch = workload.batch_len()
        self.target = torch.zeros(batch, device=device) if pipe.is_last else None
        self._hook = _memtracker_reset_hook(workload.model)  # lives as long as the step
        self.phases: list[tuple[str, Callable[[], None]]] = [
            ("forward_backward", self._forward_backward),
            ("optimizer", self._optimizer),
        ]

    @property
    def phase_names(self) -> list[str]:
        return [name for name, _ in self.phases]

    def run(self) -> None:
        for _, fn in self.phases:
            fn()

    __call__ = run

    def _forward_backward(self) -> None:
        with autocast_context(self.device, self.precision):
            self.pipe.step(*self.args, target=self.target, **self.kwargs)

    def _optimizer(self) -> None:
        opt = self.w.optimizer
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)


def build_parallel_step(
    cfg: RunConfig,
    *,
    rank: int,
    world_size: int,
    device: str,
    phase: Callable[[str], None] | None = None,
) -> tuple[Workload, Any, ParallelInfo]:
    """This rank's workload, step and strategy info, in ``build_step``'s order (see the module doc).

    ``phase("wrap")`` is called before the strategy is applied (DDP and FSDP wait there for every
    rank), so a rank that hangs while building is told apart from the peers waiting for it.
    """
    spec = get_scenario(cfg.scenario)
    params = {**cfg.params_dict, "batch_size": local_batch_size(cfg)}
    scfg = spec.make_config(cfg.preset, **params)
    ctx = BuildContext(device=device, mode=cfg.mode, seed=cfg.seed, channels_last=cfg.channels_last)
    workload = build_workload(spec, scfg, ctx)
    if workload.custom_step is not None:
        raise ParallelUnsupported(f"parallel={cfg.parallel}: the scenario times a custom step, not a model")
    pipeline = cfg.parallel == "pipeline"
    try:
        step: Any = make_step(
            workload,
            mode=cfg.mode,
            precision=cfg.precision,
            checkpointing=cfg.checkpointing,
            device=device,
            compile="none" if pipeline else cfg.compile,
        )  # 1. build, 2. checkpointing and compile; the precision wraps each phase when it runs (4.)
    except Unsupported as exc:  # no blocks to checkpoint, no compiler: a skipped row, as a rank reports it
        raise ParallelUnsupported(str(exc)) from None
    if phase is not None:
        phase("wrap")
    info, pipe = apply_parallel(  # 3. the parallel technique
        workload,
        cfg.parallel,
        device=device,
        precision=cfg.precision,
        mode=cfg.mode,
        rank=rank,
        world_size=world_size,
        microbatches=cfg.microbatches or 1,
        schedule=cfg.pipeline_schedule or "gpipe",
    )
    if pipe is not None:
        if cfg.compile != "none":  # this rank's stage, now that it is cut (see the module docstring)
            from bench.compiling import apply_compile

            stage = Workload(model=workload.model, blocks=workload.blocks)
            try:
                regions = apply_compile(stage, cfg.compile, device=device, whole="whole stage")
                workload.extra["compiled"] = ", ".join(regions)
            except Unsupported as exc:
                raise ParallelUnsupported(str(exc)) from None
            workload.extra.update(stage.extra)
        step = PipelineStep(workload, pipe, precision=cfg.precision, device=device)
    info.extra.update(local_batch_size=params["batch_size"])
    return workload, step, info


# --- timing under distribution ---------------------------------------------------------------


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def agree_max(values: list[float], group: Any = None) -> list[float]:
    """Element-wise MAX of ``values`` over all ranks (every rank gets the same list).

    ``group``: the control group (``bench.run.rank_worker`` makes a gloo group beside the data-plane
    one, so these small CPU messages never queue behind, or mix with, the strategy's own traffic).
    """
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return [float(v) for v in t.tolist()]


def time_distributed(
    step: Any,
    *,
    device: str,
    warmup_iters: int = 3,
    min_samples: int = 10,
    max_samples: int = 10_000,
    target_rel_ci: float = 0.02,
    max_time_s: float = 5.0,
    batch_target_s: float = 0.2,
    group: Any = None,
    min_time_s: float = 0.0,
    window: Any = None,
) -> Any:
    """Time ``step`` on every rank with a collective stopping rule; returns this rank's ``TimingResult``.

    Stops with ``ci_target`` once every rank's median is within ``target_rel_ci`` (95% CI) and the
    slowest rank has sampled the largest ``min_time_s`` of the ranks, else ``max_samples``, else
    ``time_cap`` once the slowest rank has sampled ``max_time_s`` seconds. ``window``
    (``bench.harness.timing.TimingWindow``, an energy meter) opens just before the first timed step
    and closes after the last one.
    """
    from bench.harness.timing import TimingResult
    from bench.stats import median_ci, order_stat_ranks

    clock = time.perf_counter_ns
    warm: list[float] = []
    for _ in range(max(1, warmup_iters)):
        t0 = clock()
        step.run()
        _sync(device)
        warm.append((clock() - t0) * 1e-9)
    # every rank leaves warm-up together, with the slowest rank's estimate of a step
    est_s, min_time_s = agree_max([statistics.median(warm), min_time_s], group)

    def next_batch(n: int, step_s: float, elapsed_s: float) -> int:
        """About ``batch_target_s`` (at most 5% of the cap) of the slowest rank's steps; the first
        batch stops at ``min_samples``, later ones grow the count by half at most."""
        budget = min(batch_target_s, 0.05 * max_time_s, max(0.0, max_time_s - elapsed_s))
        by_time = int(budget / step_s) if step_s > 0 else max_samples
        growth = min_samples - n if n < min_samples else max(1, n // 2)
        return max(1, min(by_time, growth, max_samples - n))

    samples: list[float] = []
    if window is not None:
        window.begin()
    t_start = clock()
    batch = next_batch(0, est_s, 0.0)
    stop = ""
    while not stop:
        for _ in range(batch):
            t0 = clock()
            step.run()
            _sync(device)
            samples.append((clock() - t0) * 1e-6)
        n = len(samples)
        med = statistics.median(samples)
        precise = 0.0
        if n >= min_samples and order_stat_ranks(n, 0.95) is not None:
            lo, hi = median_ci(samples)
            precise = 1.0 if med > 0 and (hi - lo) / 2.0 / med <= target_rel_ci else 0.0
        elapsed_s = (clock() - t_start) * 1e-9
        not_precise, elapsed_max, med_max = agree_max([1.0 - precise, elapsed_s, med], group)
        if not_precise == 0.0 and elapsed_max >= min_time_s:
            stop = "ci_target"
        elif n >= max_samples:
            stop = "max_samples"
        elif elapsed_max >= max_time_s:
            stop = "time_cap"
        else:
            batch = next_batch(n, med_max * 1e-3, elapsed_max)
    if window is not None:
        window.end()
    return TimingResult(
        samples_ms=samples,
        warmup_iters=max(1, warmup_iters),
        stop_reason=stop,
        target_rel_ci=target_rel_ci,
        device=device,
        elapsed_s=(clock() - t_start) * 1e-9,
        min_samples=min_samples,
    )
