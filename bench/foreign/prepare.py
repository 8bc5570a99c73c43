"""Finish what a factory or adapter built into a ``Workload`` dlbench can measure (torch).

``finish(out, cfg, ctx, origin)``:

1. ``out`` must be a ``bench.workload.Workload``; anything else (an ``nn.Module``, a tuple) is a
   ``TypeError`` that says what to return instead;
2. the model and every tensor of the batch go to the run's device (the factory ran under
   ``torch.device(device)``, so this moves only what it placed explicitly elsewhere);
3. the repeated blocks: ``checkpoint_blocks`` when set (``bench.foreign.blocks.blocks_by_name``;
   an unknown class is a ``UsageError``), else what the factory declared, else the detected ones. The
   row's ``extra`` says which (``blocks``, ``blocks_from``: ``checkpoint_blocks`` | ``declared`` |
   ``detected`` | ``none``);
4. in train mode, an optimizer when the factory gave none: ``dlcore.AdamWWithWarmup`` (the
   ``adamw_warmup`` of every built-in scenario: lr 1e-3, weight decay 0.01, 10 warm-up steps).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map

from bench.errors import UsageError
from bench.foreign.blocks import blocks_by_name, describe, detect_blocks
from bench.registry import BuildContext
from bench.workload import Workload


def finish(
    out: Any, cfg: Any, ctx: BuildContext, *, origin: str, declared_from: str = "declared"
) -> Workload:
    """``out`` checked, on ``ctx.device``, with its blocks and optimizer (see the module docstring)."""
    if not isinstance(out, Workload):
        what = type(out).__name__
        hint = (
            "; wrap the model: Workload(model=model, inputs=(batch,), ...)"
            if isinstance(out, nn.Module)
            else ""
        )
        raise TypeError(f"{origin} returned {what}, not a bench.api.Workload{hint}")
    if not isinstance(out.model, nn.Module):
        raise TypeError(f"{origin}: Workload.model is {type(out.model).__name__}, not a torch.nn.Module")
    device = torch.device(ctx.device)
    if device.type != "meta":
        out.model.to(device)
        out.inputs = tuple(tree_map(lambda t: _to(t, device), list(out.inputs)))
        out.kwargs = dict(tree_map(lambda t: _to(t, device), dict(out.kwargs)))
    names = str(getattr(cfg, "checkpoint_blocks", "") or "")
    if names:
        try:
            out.blocks = blocks_by_name(out.model, names)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        source = "checkpoint_blocks"
    elif out.blocks:
        out.blocks = tuple(out.blocks)
        source = declared_from
    else:
        out.blocks = detect_blocks(out.model)
        source = "detected" if out.blocks else "none"
    out.extra.setdefault("blocks", describe(out.blocks))
    out.extra.setdefault("blocks_from", source)
    if ctx.mode == "train" and out.optimizer is None and out.custom_step is None:
        from bench.scenarios._shared import make_optimizer

        out.optimizer = make_optimizer("adamw_warmup", out.model.parameters())
    return out


def _to(x: Any, device: torch.device) -> Any:
    return x.to(device) if isinstance(x, torch.Tensor) and x.device != device else x
