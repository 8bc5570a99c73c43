"""Test-only scenarios for parallel runs (hidden from ``dlbench list`` unless ``--all``): one rank
misbehaves, so the launcher's failure handling can be tested.

- ``_rank_raise``: rank ``rank`` raises ``RuntimeError`` while building (``where="build"``) or in
  its model's forward (``where="step"``); ``where="never"`` runs normally.
- ``_rank_hang``: rank ``rank`` sleeps forever while building or in its forward; its peers then
  block in a collective until the runner's timeout kills the job.

The model is two bias-free ``nn.Linear`` layers with AdamW on a (batch_size, 16) batch. The rank is
read from torchrun's ``RANK`` variable. Outside a dlbench rank (``RANK`` unset, or not in a dlbench
child process) both raise unless ``where="never"``, so an in-process test cannot hang.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from bench.registry import CHILD_ENV_VAR, BuildContext, choice, register_scenario, size, size0
from bench.workload import Workload

_TINY: dict[str, dict[str, object]] = {"tiny": {}, "default": {}}


@dataclass(frozen=True)
class RankFaultConfig:
    """Which rank misbehaves (``rank``) and where: "build", "step" or "never"."""

    batch_size: int = size(2)
    rank: int = size0(1)
    where: str = choice("build", ("build", "step", "never"))


def _this_rank() -> int | None:
    """torchrun's ``RANK`` inside a dlbench rank process, else None."""
    if os.environ.get(CHILD_ENV_VAR) != "1" or "RANK" not in os.environ:
        return None
    return int(os.environ["RANK"])


def _raise(what: str) -> None:
    raise RuntimeError(f"_rank_raise: rank {os.environ.get('RANK', '?')} fails {what} (on purpose)")


def _hang(what: str) -> None:
    while True:  # until the runner kills the job
        time.sleep(1.0)


class _FaultyMLP(nn.Module):
    """``Linear(16, 16) -> ReLU -> Linear(16, 8)``; ``fault`` runs before each forward on the bad rank."""

    def __init__(self, device: str, fault: Callable[[str], None] | None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 16, bias=False, device=device)
        self.fc2 = nn.Linear(16, 8, bias=False, device=device)
        self.fault = fault

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fault is not None:
            self.fault("in forward")
        return self.fc2(torch.relu(self.fc1(x)))  # (B, 16) -> (B, 8)


def _build(cfg: RankFaultConfig, ctx: BuildContext, fault: Callable[[str], None]) -> Workload:
    rank = _this_rank()
    if cfg.where != "never" and rank is None:  # in-process: never hang the caller
        raise RuntimeError(f"{fault.__name__}: misbehaves only in a dlbench rank process; raising instead")
    bad = cfg.where != "never" and rank == cfg.rank
    if bad and cfg.where == "build":
        fault("while building")
    model = _FaultyMLP(ctx.device, fault if bad else None)
    x = torch.randn(cfg.batch_size, 16, device=ctx.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3) if ctx.mode == "train" else None
    return Workload(model=model, inputs=(x,), optimizer=opt, items_per_step=cfg.batch_size, unit="samples")


@register_scenario(
    "_rank_raise",
    config=RankFaultConfig,
    presets=_TINY,
    test_only=True,
    description="test: one rank raises (parallel runs)",
)
def build_rank_raise(cfg: RankFaultConfig, ctx: BuildContext) -> Workload:
    """Rank ``cfg.rank`` raises ``RuntimeError`` while building or in forward."""
    return _build(cfg, ctx, _raise)


@register_scenario(
    "_rank_hang",
    config=RankFaultConfig,
    presets=_TINY,
    test_only=True,
    description="test: one rank hangs (parallel runs)",
)
def build_rank_hang(cfg: RankFaultConfig, ctx: BuildContext) -> Workload:
    """Rank ``cfg.rank`` sleeps forever while building or in forward."""
    return _build(cfg, ctx, _hang)
