"""What a scenario builds (``Workload``) and how one training/inference step is run (``PhasedStep``).

A scenario builder returns a ``Workload``: a model, a batch, a loss, an optimizer. The harness
never calls the model directly; it asks ``make_step`` for a ``PhasedStep`` that knows the mode
(forward = inference, train = forward + backward + optimizer), the precision (fp32, amp-bf16,
amp-fp16) and whether activation checkpointing is applied. Timing calls ``step.run()``; the
memory pass calls the phases one by one (``step.phases``) to attribute peaks to each phase.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

PRECISIONS: tuple[str, ...] = ("fp32", "amp-bf16", "amp-fp16")
CHECKPOINTING: tuple[str, ...] = ("none", "full")
_AMP_DTYPES = {"amp-bf16": torch.bfloat16, "amp-fp16": torch.float16}


@dataclass
class Workload:
    model: nn.Module
    inputs: tuple[Any, ...]  # positional arguments of model(...)
    loss_fn: Callable[[Any], torch.Tensor] | None = None  # model output -> scalar loss (train mode)
    optimizer: torch.optim.Optimizer | None = None  # required in train mode unless custom_step
    items_per_step: int = 1  # what throughput counts: tokens, images, samples, params
    unit: str = "samples"  # throughput_unit is f"{unit}/s"
    # submodule types wrapped by apply_activation_checkpointing when checkpointing == "full"
    checkpoint_targets: tuple[type[nn.Module], ...] = ()
    # replaces forward/backward/optimizer entirely (e.g. the optimizer scenario times only .step())
    custom_step: Callable[[], None] | None = None
    custom_phase_name: str = "optimizer"
    extra: dict[str, Any] = field(default_factory=dict)  # scenario-specific result columns


def skip_reason(device: str, mode: str, precision: str, checkpointing: str) -> str | None:
    """Why this combination cannot run here, or None. Checked before any child process starts."""
    if precision not in PRECISIONS:
        return f"precision {precision!r} unknown; expected one of {PRECISIONS}"
    if checkpointing not in CHECKPOINTING:
        return f"checkpointing {checkpointing!r} unknown; expected one of {CHECKPOINTING}"
    if precision == "amp-fp16" and not device.startswith("cuda"):
        return "amp-fp16 needs a CUDA device (fp16 autocast with GradScaler is GPU-only); use amp-bf16 on CPU"
    if checkpointing != "none" and mode != "train":
        return "activation checkpointing only changes training (it recomputes activations in backward)"
    return None


def preferred_amp(device: str) -> str:
    """What ``--amp`` means on a device: bf16 where supported (CPU, Ampere+), else fp16."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return "amp-bf16" if torch.cuda.is_bf16_supported() else "amp-fp16"
    return "amp-bf16"


def autocast_context(device: str, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    device_type = torch.device(device).type
    return torch.autocast(device_type=device_type, dtype=_AMP_DTYPES[precision])


def _default_loss(out: Any) -> torch.Tensor:
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
            self.w.model(*self.w.inputs)

    def _forward_train(self) -> None:
        with autocast_context(self.device, self.precision):
            out = self.w.model(*self.w.inputs)
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


def make_step(
    workload: Workload, *, mode: str, precision: str, checkpointing: str = "none", device: str = "cpu"
) -> PhasedStep:
    """Apply checkpointing (from outside the model) and return the step to measure."""
    if checkpointing == "full" and workload.custom_step is None:
        if not workload.checkpoint_targets:
            raise ValueError("checkpointing: this scenario declares no checkpoint_targets")
        from dlcore import apply_activation_checkpointing

        apply_activation_checkpointing(workload.model, module_types=workload.checkpoint_targets)
    return PhasedStep(workload, mode=mode, precision=precision, device=device)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Fixed seed for building a workload, so every child process builds the same weights."""
    torch.manual_seed(seed)
    yield
