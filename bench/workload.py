"""What a scenario builds (``Workload``) and how one training/inference step is run (``PhasedStep``).

A scenario builder returns a ``Workload``: a model, a batch, a loss, an optimizer. The harness
never calls the model directly. ``build_step`` is the one place where a configuration becomes the
step that is measured (``dlbench run``) or profiled (``dlbench profile``), applying the techniques
in a fixed order, as torchtitan's ``parallelize_*`` does:

1. ``build_workload``: seed, build, then the memory format (channels_last: model and 4-D inputs);
2. ``make_step``: activation checkpointing of ``Workload.blocks`` (from outside the model; a model
   without blocks is ``Unsupported``, a ``skipped`` row), then ``torch.compile`` (each block in place,
   or the whole model, and the loss: ``bench.compiling``), then the precision (autocast, and a
   GradScaler for fp16 training) inside ``PhasedStep``. A rank of a parallel job puts DDP / FSDP /
   the pipeline between compile and the precision (``bench.run.parallel``).

A ``PhasedStep`` knows the mode (forward = inference, train = forward + backward + optimizer).
Timing calls ``step.run()``; the memory pass calls the phases one by one (``step.phases``) to
attribute peaks to each phase.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from bench.errors import Unsupported
from bench.registry import CHECKPOINTING, PRECISIONS, BuildContext, ScenarioSpec

__all__ = ["CHECKPOINTING", "PRECISIONS", "PRECISION_DTYPES", "PhasedStep", "Workload"]

# the one precision -> dtype table (the parameters' dtype for fp32, autocast's for amp-*)
PRECISION_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "amp-bf16": torch.bfloat16,
    "amp-fp16": torch.float16,
}


@dataclass
class Workload:
    """What one step measures: a model, a batch, a loss and an optimizer. Public as ``bench.api.Workload``.

    A scenario builder, or your own factory (README "Your model"), returns one. The batch is made by
    the builder at the size its ``batch_size`` parameter asks for (a ddp rank builds its share, the
    budget search builds each size it probes), on the device it is built on, and reused every step:

    - ``inputs``: the positional arguments of ``model(...)``; ``kwargs``: its keyword arguments (a
      Hugging Face model takes ``input_ids=..., labels=...``). Any nesting of tensors;
    - ``loss_fn(output) -> scalar`` for training. ``None``: the output's own ``loss`` (a model that
      computes it from ``labels``, as Hugging Face models do), else the mean square of the output;
    - ``optimizer``: required in train mode (a factory that returns none gets
      ``dlcore.AdamWWithWarmup`` over the model's parameters);
    - ``items_per_step`` and ``unit``: what throughput counts (``f"{unit}/s"``); 0 counts the batch's
      leading dimension (of the first tensor input);
    - ``blocks``: the model's repeated block types (a Transformer layer, a residual block).
      Activation checkpointing wraps each, FSDP shards each before the root, and a pipeline is cut
      between them. A factory may leave it empty: dlbench then detects them
      (``bench.foreign.blocks``).
    """

    model: nn.Module
    inputs: tuple[Any, ...] = ()  # positional arguments of model(...)
    loss_fn: Callable[[Any], torch.Tensor] | None = None  # model output -> scalar loss (train mode)
    optimizer: torch.optim.Optimizer | None = None  # required in train mode unless custom_step
    items_per_step: int = 0  # what throughput counts: tokens, images, samples, params (0: the batch)
    unit: str = "samples"  # throughput_unit is f"{unit}/s"
    # the repeated block types: checkpointing wraps each, FSDP shards each, a pipeline cuts between them
    blocks: tuple[type[nn.Module], ...] = ()
    # replaces forward/backward/optimizer entirely (e.g. the optimizer scenario times only .step())
    custom_step: Callable[[], None] | None = None
    custom_phase_name: str = "optimizer"
    extra: dict[str, Any] = field(default_factory=dict)  # scenario-specific result columns
    kwargs: dict[str, Any] = field(default_factory=dict)  # keyword arguments of model(...)

    def batch_tensors(self) -> list[torch.Tensor]:
        """Every tensor of the batch (``inputs`` and ``kwargs``), in order."""
        leaves = tree_flatten([list(self.inputs), self.kwargs])[0]
        return [t for t in leaves if isinstance(t, torch.Tensor)]

    def batch_len(self) -> int:
        """The leading dimension of the first tensor input (1 when there is none)."""
        first = next((t for t in self.batch_tensors() if t.dim() > 0), None)
        return int(first.shape[0]) if first is not None else 1


def preferred_amp(device: str) -> str:
    """What ``--amp`` means on a device: bf16 where supported (CPU, Ampere+), else fp16."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return "amp-bf16" if torch.cuda.is_bf16_supported() else "amp-fp16"
    return "amp-bf16"


def autocast_context(device: str, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    return torch.autocast(device_type=device_type, dtype=PRECISION_DTYPES[precision])


def _default_loss(out: Any) -> torch.Tensor:
    """The model's own loss when its output carries one (``out.loss`` / ``out["loss"]``, as a Hugging
    Face model computes from ``labels``), else the mean square of the (first) output tensor."""
    own = out.get("loss") if isinstance(out, dict) else getattr(out, "loss", None)
    if isinstance(own, torch.Tensor):
        return own
    if isinstance(out, dict):
        out = next(iter(out.values()))
    if isinstance(out, tuple | list):
        out = out[0]
    return out.float().pow(2).mean()


class PhasedStep:
    """One step of a workload, split into named phases that share state through ``self``."""

    def __init__(self, workload: Workload, *, mode: str, precision: str, device: str) -> None:
        self.w = workload
        self.mode = mode
        self.precision = precision
        self.device = device
        self._loss: torch.Tensor | None = None
        use_scaler = mode == "train" and precision == "amp-fp16"
        self.scaler = torch.amp.GradScaler(torch.device(device).type) if use_scaler else None
        if workload.custom_step is not None:
            self.phases: list[tuple[str, Callable[[], None]]] = [
                (workload.custom_phase_name, workload.custom_step)
            ]
        elif mode == "forward":
            workload.model.eval()
            self.phases = [("forward", self._forward_inference)]
        elif mode == "train":
            if workload.optimizer is None:
                raise ValueError("train mode needs Workload.optimizer")
            workload.model.train()
            self.phases = [
                ("forward", self._forward_train),
                ("backward", self._backward),
                ("optimizer", self._optimizer),
            ]
        else:
            raise ValueError(f"mode: unknown mode {mode!r}; expected 'forward' or 'train'")

    @property
    def phase_names(self) -> list[str]:
        return [name for name, _ in self.phases]

    def run(self) -> None:
        for _, fn in self.phases:
            fn()

    __call__ = run

    # phases ------------------------------------------------------------------------------
    def _forward_inference(self) -> None:
        with torch.no_grad(), autocast_context(self.device, self.precision):
            self.w.model(*self.w.inputs, **self.w.kwargs)

    def _forward_train(self) -> None:
        with autocast_context(self.device, self.precision):
            out = self.w.model(*self.w.inputs, **self.w.kwargs)
            loss_fn = self.w.loss_fn or _default_loss
            self._loss = loss_fn(out)

    def _backward(self) -> None:
        assert self._loss is not None, "backward phase before forward phase"
        loss, self._loss = self._loss, None
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _optimizer(self) -> None:
        opt = self.w.optimizer
        assert opt is not None
        if self.scaler is not None:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)


def apply_channels_last(workload: Workload) -> None:
    """Model and every 4-D batch tensor in channels_last (NHWC) memory format, in place.

    Inputs are converted through ``.data`` so that the tensor objects a builder's loss closure holds
    (and clears the gradient of) stay the same objects.
    """
    workload.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stub lacks it
    for x in workload.batch_tensors():
        if x.dim() == 4:
            x.data = x.data.contiguous(memory_format=torch.channels_last)


def build_workload(spec: ScenarioSpec, cfg: Any, ctx: BuildContext) -> Workload:
    """Seed, build the scenario, and apply channels_last when ``ctx`` or the config asks for it."""
    with seeded(ctx.seed):
        workload: Workload = spec.build(cfg, ctx)
    if workload.items_per_step <= 0:
        workload.items_per_step = workload.batch_len()
    if hasattr(cfg, "channels_last"):
        workload.extra["channels_last"] = bool(ctx.channels_last or cfg.channels_last)
    if ctx.channels_last or getattr(cfg, "channels_last", False) is True:
        apply_channels_last(workload)
    return workload


def build_step(
    spec: ScenarioSpec,
    cfg: Any,
    ctx: BuildContext,
    *,
    precision: str,
    checkpointing: str,
    compile: str = "none",
) -> tuple[Workload, PhasedStep]:
    """The configuration as the step to measure: ``build_workload`` then ``make_step``."""
    workload = build_workload(spec, cfg, ctx)
    step = make_step(
        workload,
        mode=ctx.mode,
        precision=precision,
        checkpointing=checkpointing,
        device=ctx.device,
        compile=compile,
    )
    return workload, step


def make_step(
    workload: Workload,
    *,
    mode: str,
    precision: str,
    checkpointing: str = "none",
    device: str = "cpu",
    compile: str = "none",
) -> PhasedStep:
    """Apply checkpointing (from outside the model), then ``torch.compile``, then wrap the precision in
    the step to measure. What was compiled goes to ``workload.extra["compiled"]`` (the row's ``extra``)."""
    if checkpointing == "full" and workload.custom_step is None:
        if not workload.blocks:
            raise Unsupported(
                f"checkpointing=full: {type(workload.model).__name__} has no repeated blocks to checkpoint "
                "(none declared, and no ModuleList or Sequential of same-type children with parameters "
                "found); a model of your own can name them with -p checkpoint_blocks=ClassName"
            )
        from dlcore import apply_activation_checkpointing

        apply_activation_checkpointing(workload.model, module_types=workload.blocks)
    if compile != "none":
        from bench.compiling import apply_compile

        workload.extra["compiled"] = ", ".join(apply_compile(workload, compile, device=device))
    return PhasedStep(workload, mode=mode, precision=precision, device=device)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Fixed seed for building a workload, so every child process builds the same weights."""
    torch.manual_seed(seed)
    yield
