"""``optimizer``: one optimizer step, nothing else, on a bank of parameters with fixed gradients.

An optimizer step is a memory-bound sweep over parameters, gradients and state, so its figure of
merit is achieved bandwidth: ``Workload.extra["bytes_per_step"]`` is the nominal traffic of one
step (fp32 AdamW reads p, g, m, v and writes p, m, v: 7 x 4 bytes per parameter; SGD with momentum
reads p, g, buf and writes p, buf: 5 x 4 bytes), which the runner divides by the step time.

The optimizers are those of ``bench.scenarios._shared.make_optimizer`` (``adamw_warmup``,
``adamw_fused``, ``adamw_foreach``, ``adamw_forloop``, ``sgd``).

Parameters are always fp32: mixed precision does not apply to an optimizer step, so the
``amp-*`` precisions run exactly the fp32 step (the step ignores autocast), and activation
checkpointing has nothing to act on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bench.registry import BuildContext, choice, positive, register_scenario, size
from bench.scenarios._shared import BYTES_PER_PARAM, OPTIMIZERS, make_optimizer
from bench.workload import Workload


@dataclass(frozen=True)
class OptimizerConfig:
    """One optimizer step over ``num_params`` fp32 parameters split into ``num_tensors`` tensors."""

    num_params: int = size(16_777_216)  # 16 Mi parameters: 64 MiB of fp32 weights, far beyond the caches
    num_tensors: int = size(8)  # the bank is split into this many (nearly) equal tensors
    optimizer: str = choice("adamw_warmup", OPTIMIZERS)
    lr: float = positive(1e-3)

    def __post_init__(self) -> None:
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
            "bytes_per_step": BYTES_PER_PARAM[cfg.optimizer] * cfg.num_params,
            "optimizer": cfg.optimizer,
            "param_dtype": "float32",
        },
    )
