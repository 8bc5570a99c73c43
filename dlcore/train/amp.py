"""Mixed-precision training step with device-agnostic ``torch.amp``.

Method: Micikevicius et al., "Mixed Precision Training" (ICLR 2018), arXiv:1710.03740 — compute in a
16-bit type, keep fp32 master weights, and scale the loss so that small fp16 gradients do not
underflow. bfloat16 (Kalamkar et al., "A Study of BFLOAT16 for Deep Learning Training", 2019,
arXiv:1905.12322) has fp32's exponent range, so it needs no loss scaling.

What this does that the seed's ``MixedPrecisionTrainer`` did not:

- uses ``torch.autocast(device_type=...)`` and ``torch.amp.GradScaler(device_type)``, not the deprecated,
  CUDA-only ``torch.cuda.amp``; bf16 runs on CPU and GPU;
- creates a ``GradScaler`` only for fp16 (bf16 and fp32 have no underflow problem to fix);
- clips gradients *after* ``scaler.unscale_`` so ``max_grad_norm`` is in true gradient units;
- counts skipped steps: for fp16 the scaler skips a step when it finds inf/NaN gradients (seen as a
  decrease of the loss scale after ``update()``); for bf16 and fp32 there is no scaler, so the trainer
  itself checks that the total gradient norm is finite and, if it is not, skips ``optimizer.step()``
  (a single inf/NaN would otherwise poison every weight it touches).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MixedPrecisionTrainer", "resolve_amp_dtype", "PRECISION_ALIASES"]

# accepted spellings -> dtype
PRECISION_ALIASES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "amp-bf16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "amp-fp16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
}
_FP16_DEVICES = ("cuda", "xpu")  # where fp16 autocast + GradScaler is supported and worthwhile


def resolve_amp_dtype(device: str | torch.device, precision: str | torch.dtype) -> torch.dtype:
    """The autocast dtype for ``precision`` on ``device``: torch.bfloat16, torch.float16 or torch.float32
    (fp32 = autocast off).

    Raises:
        ValueError: unknown precision; fp16 on a device without fp16 AMP support (e.g. CPU); bf16 on a GPU
            that does not support it.
    """
    if isinstance(precision, torch.dtype):
        dtype = precision
        if dtype not in (torch.bfloat16, torch.float16, torch.float32):
            raise ValueError(
                f"precision: expected torch.bfloat16, torch.float16 or torch.float32; got {precision}"
            )
    elif isinstance(precision, str) and precision.lower() in PRECISION_ALIASES:
        dtype = PRECISION_ALIASES[precision.lower()]
    else:
        raise ValueError(
            f"precision: expected one of {sorted(PRECISION_ALIASES)} or a torch dtype; got {precision!r}"
        )
    device_type = torch.device(device).type
    if dtype == torch.float16 and device_type not in _FP16_DEVICES:
        raise ValueError(
            f"precision: fp16 mixed precision needs a GPU device ({', '.join(_FP16_DEVICES)}) with a "
            f"GradScaler; got device {str(device)!r}. Use precision='bf16' (or 'fp32') on {device_type}"
        )
    if dtype == torch.bfloat16 and device_type == "cuda" and torch.cuda.is_available():
        if not torch.cuda.is_bf16_supported():
            raise ValueError(
                f"precision: this GPU ({torch.cuda.get_device_name(torch.device(device))}) does not support "
                "bf16; use precision='fp16'"
            )
    return dtype


def _infer_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, tuple | list):
        return type(obj)(_to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


class MixedPrecisionTrainer:
    """One optimizer step per ``train_step`` call, under autocast, with optional clipping and scaling.

    Args:
        model: the model (already on ``device``).
        optimizer: its optimizer.
        device: where inputs are moved and autocast runs; default: the device of the model's parameters.
        precision: "bf16" (default), "fp16" (GPU only, with a ``GradScaler``), "fp32" (autocast off), or the
            matching torch dtype; aliases "amp-bf16", "bfloat16", "half", ... are accepted.
        max_grad_norm: clip the total gradient norm to this value (after unscaling); None = no clipping.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``; default ``F.cross_entropy``.
        skip_nonfinite: bf16/fp32 only — check the gradient norm and skip the step if it is inf/NaN
            (costs one host sync per step). fp16 always skips through its ``GradScaler``.
        scaler_kwargs: extra arguments for ``torch.amp.GradScaler`` (e.g. ``init_scale``), fp16 only.

    Attributes:
        scaler: the ``torch.amp.GradScaler`` (fp16) or None.
        step_count: ``train_step`` calls; optimizer_steps: steps taken; skipped_steps: steps skipped.
        last_step_skipped: whether the latest call skipped ``optimizer.step()``.
        last_grad_norm: total gradient norm of the latest step (unscaled) when it was computed, else None.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        device: str | torch.device | None = None,
        precision: str | torch.dtype = "bf16",
        max_grad_norm: float | None = None,
        loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
        skip_nonfinite: bool = True,
        scaler_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm: expected a positive number or None; got {max_grad_norm!r}")
        self.model = model
        self.optimizer = optimizer
        self.device = torch.device(device) if device is not None else _infer_device(model)
        self.dtype = resolve_amp_dtype(self.device, precision)
        self.max_grad_norm = max_grad_norm
        self.loss_fn: Callable[[Any, Any], torch.Tensor] = loss_fn or F.cross_entropy
        self.skip_nonfinite = skip_nonfinite
        self.scaler: torch.amp.GradScaler | None = None
        if self.dtype == torch.float16:
            self.scaler = torch.amp.GradScaler(self.device.type, **(scaler_kwargs or {}))
        elif scaler_kwargs:
            raise ValueError("scaler_kwargs: a GradScaler is only used with precision='fp16'")
        self.step_count = 0
        self.optimizer_steps = 0
        self.skipped_steps = 0
        self.last_step_skipped = False
        self.last_grad_norm: float | None = None

    @property
    def autocast_enabled(self) -> bool:
        return self.dtype != torch.float32

    def autocast(self) -> torch.autocast:
        """The autocast context this trainer runs forward passes in (also right for validation)."""
        return torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=self.autocast_enabled)

    def forward(self, inputs: Any) -> Any:
        """Run the model on ``inputs`` (a tensor, a tuple/list of positional args or a dict of kwargs)."""
        inputs = _to_device(inputs, self.device)
        with self.autocast():
            if isinstance(inputs, dict):
                return self.model(**inputs)
            if isinstance(inputs, tuple | list):
                return self.model(*inputs)
            return self.model(inputs)

    def train_step(
        self, inputs: Any, targets: Any, *, loss_fn: Callable[[Any, Any], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Forward, backward, (unscale, clip), optimizer step; returns the loss, detached, as fp32 tensor.

        ``loss_fn`` overrides the trainer's loss for this step (e.g. a MixUp loss over two target sets);
        ``targets`` are moved to the device and passed to it unchanged.
        """
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        targets = _to_device(targets, self.device)
        outputs = self.forward(inputs)
        with self.autocast():
            loss = (loss_fn or self.loss_fn)(outputs, targets)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)  # grads in true units before clipping
        else:
            loss.backward()

        params = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm: torch.Tensor | None = None
        if self.max_grad_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        elif self.scaler is None and self.skip_nonfinite and params:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])  # type: ignore[misc]

        if self.scaler is not None:
            scale_before = self.scaler.get_scale()
            self.scaler.step(self.optimizer)  # skipped internally if unscale_ found inf/NaN
            self.scaler.update()
            skipped = self.scaler.get_scale() < scale_before  # scale backs off only after a skipped step
        else:
            skipped = False
            if norm is not None and self.skip_nonfinite:
                skipped = not math.isfinite(float(norm))
            if not skipped:
                self.optimizer.step()
        self.last_grad_norm = float(norm) if norm is not None else None
        if skipped:
            self.optimizer.zero_grad(set_to_none=True)
        self.step_count += 1
        self.skipped_steps += int(skipped)
        self.optimizer_steps += int(not skipped)
        self.last_step_skipped = skipped
        return loss.detach().float()

    def state_dict(self) -> dict[str, Any]:
        """Counters and the scaler state (for resuming); model/optimizer state is saved separately."""
        return {
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step_count": self.step_count,
            "optimizer_steps": self.optimizer_steps,
            "skipped_steps": self.skipped_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step_count = int(state.get("step_count", 0))
        self.optimizer_steps = int(state.get("optimizer_steps", 0))
        self.skipped_steps = int(state.get("skipped_steps", 0))
