"""``optimizer``: one optimizer step, nothing else, on a bank of parameters with fixed gradients.

An optimizer step is a memory-bound sweep over parameters, gradients and state, so its figure of
merit is achieved bandwidth: ``Workload.extra["bytes_per_step"]`` is the nominal traffic of one
step (fp32 AdamW reads p, g, m, v and writes p, m, v: 7 x 4 bytes per parameter; SGD with momentum
reads p, g, buf and writes p, buf: 5 x 4 bytes), which the runner divides by the step time.

This module also holds ``make_optimizer``, the optimizer factory every scenario uses in train mode,
so all of them accept the same ``optimizer`` config field:

- ``adamw_warmup`` (default): ``dlcore.AdamWWithWarmup``, dlcore's own AdamW with a linear warmup
  and cosine decay; this is what dlbench measures by default.
- ``adamw_fused`` / ``adamw_foreach`` / ``adamw_forloop``: ``torch.optim.AdamW`` with
  ``fused=True``, ``foreach=True`` or ``foreach=False``, for comparison with torch's kernels.
- ``sgd``: ``torch.optim.SGD`` with momentum 0.9.

Parameters are always fp32: mixed precision does not apply to an optimizer step, so the
``amp-*`` precisions run exactly the fp32 step (the step ignores autocast), and activation
checkpointing has nothing to act on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from bench.registry import BuildContext, register_scenario
from bench.workload import Workload

OPTIMIZERS: tuple[str, ...] = ("adamw_warmup", "adamw_fused", "adamw_foreach", "adamw_forloop", "sgd")

# fp32 bytes moved per parameter by one step: reads + writes of p, grad and optimizer state
_BYTES_PER_PARAM: dict[str, int] = {
    "adamw_warmup": 7 * 4,
    "adamw_fused": 7 * 4,
    "adamw_foreach": 7 * 4,
    "adamw_forloop": 7 * 4,
    "sgd": 5 * 4,
}


def make_optimizer(
    kind: str, params: Iterable[nn.Parameter], *, lr: float = 1e-3, weight_decay: float = 0.01
) -> torch.optim.Optimizer:
    """The optimizer named ``kind`` (one of ``OPTIMIZERS``) over ``params``.

    ``adamw_warmup`` uses a short warmup (10 steps) so that the very first step already moves the
    parameters; the schedule changes the learning rate, not the cost of a step.
    """
    params = list(params)
    if kind == "adamw_warmup":
        from dlcore import AdamWWithWarmup

        return AdamWWithWarmup(params, lr=lr, weight_decay=weight_decay, warmup_steps=10, total_steps=100_000)
    if kind == "adamw_fused":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    if kind == "adamw_foreach":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)
    if kind == "adamw_forloop":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=False)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"optimizer: unknown optimizer {kind!r}; expected one of {OPTIMIZERS}")


def check_optimizer(kind: str) -> None:
    """ValueError naming the choices when ``kind`` is not a known optimizer."""
    if kind not in OPTIMIZERS:
        raise ValueError(f"optimizer: unknown optimizer {kind!r}; expected one of {OPTIMIZERS}")


@dataclass(frozen=True)
class OptimizerConfig:
    """One optimizer step over ``num_params`` fp32 parameters split into ``num_tensors`` tensors."""

    num_params: int = 16_777_216  # 16 Mi parameters: 64 MiB of fp32 weights, far beyond the caches
    num_tensors: int = 8  # the bank is split into this many (nearly) equal tensors
    optimizer: str = "adamw_warmup"  # one of OPTIMIZERS
    lr: float = 1e-3

    def __post_init__(self) -> None:
        check_optimizer(self.optimizer)
        if self.num_params < 1 or self.num_tensors < 1:
            raise ValueError("num_params and num_tensors must be >= 1")
        if self.num_tensors > self.num_params:
            raise ValueError(f"num_tensors ({self.num_tensors}) exceeds num_params ({self.num_params})")


class ParameterBank(nn.Module):
    """A model with nothing but parameters: ``sizes[i]`` elements in tensor ``i``."""

    def __init__(self, sizes: list[int], device: torch.device | str | None = None) -> None:
        super().__init__()
        self.tensors = nn.ParameterList(
            nn.Parameter(torch.randn(n, device=device) * 0.02)
            for n in sizes  # (n,)
        )

    def forward(self) -> torch.Tensor:
        """Sum of squares of all parameters (only there so the module is callable)."""
        return sum((p.pow(2).sum() for p in self.tensors), torch.zeros((), device=self.tensors[0].device))


def _split(total: int, parts: int) -> list[int]:
    base, rest = divmod(total, parts)
    return [base + (1 if i < rest else 0) for i in range(parts)]


@register_scenario(
    "optimizer",
    config=OptimizerConfig,
    presets={
        "tiny": {"num_params": 1024, "num_tensors": 4},
        "default": {},
        "large": {"num_params": 67_108_864, "num_tensors": 16},  # 64 Mi params, 256 MiB fp32
    },
    description=(
        "one optimizer.step() on fp32 parameters with fixed grads (no forward/backward); "
        "amp-* precisions run the same fp32 step"
    ),
    unsupported_modes={"forward": "an optimizer step is training-only; use --mode train"},
)
def build_optimizer(cfg: OptimizerConfig, ctx: BuildContext) -> Workload:
    """One optimizer step; items are parameters, extra["bytes_per_step"] the nominal traffic."""
    torch.manual_seed(ctx.seed)
    bank = ParameterBank(_split(cfg.num_params, cfg.num_tensors), device=ctx.device)
    for p in bank.parameters():
        p.grad = torch.randn_like(p) * 1e-3  # set once; the step never zeroes them
    opt = make_optimizer(cfg.optimizer, bank.parameters(), lr=cfg.lr)

    def step() -> None:
        opt.step()  # no zero_grad: the same gradients feed every step

    return Workload(
        model=bank,
        inputs=(),
        optimizer=opt,
        items_per_step=cfg.num_params,
        unit="params",
        custom_step=step,
        custom_phase_name="optimizer",
        extra={
            "bytes_per_step": _BYTES_PER_PARAM[cfg.optimizer] * cfg.num_params,
            "optimizer": cfg.optimizer,
            "param_dtype": "float32",
        },
    )
