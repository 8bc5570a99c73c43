"""``resblock``: a stack of ``depth`` pre-activation bottleneck blocks (``dlcore.PreActBottleneck``).

Each block maps (B, width, H, W) to (B, width, H, W) (bottleneck width ``width // 4``, stride 1,
identity shortcut), so the stack isolates the residual block from the stem, the downsampling and
the classifier of a full ResNet (see ``resnet``). Input: random images (B, width, image_size,
image_size); loss: mean square of the output. Throughput counts images (B). Activation
checkpointing wraps each block. ``channels_last`` puts the model and input in NHWC memory
format (applied by ``bench.workload.build_workload``). In train mode the input requires grad, as
inside a network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bench.registry import BuildContext, choice, register_scenario, size
from bench.scenarios._shared import OPTIMIZERS, clear_input_grad, make_optimizer
from bench.workload import Workload


@dataclass(frozen=True)
class ResBlockConfig:
    """``depth`` bottleneck blocks of ``width`` channels on (batch_size, width, image_size, image_size)."""

    batch_size: int = size(8)
    image_size: int = size(28)  # H = W of the block input (a feature map, not the network's input image)
    width: int = size(128)  # channels in and out of every block; the bottleneck has width // 4
    depth: int = size(2)  # number of blocks
    se: bool = False  # squeeze-excitation in every block
    channels_last: bool = False  # applied by bench.workload.build_workload, like --channels-last
    optimizer: str = choice("adamw_warmup", OPTIMIZERS)

    def __post_init__(self) -> None:
        if self.width % 4:
            raise ValueError(f"width ({self.width}) must be a multiple of 4 (bottleneck expansion)")


@register_scenario(
    "resblock",
    config=ResBlockConfig,
    presets={
        "tiny": {"batch_size": 2, "image_size": 8, "width": 16, "depth": 2},
        "default": {},
        "large": {"batch_size": 64, "image_size": 56, "width": 256, "depth": 3},  # ResNet-50 stage 1
    },
    description="stack of pre-activation bottleneck blocks (dlcore.PreActBottleneck); items = images",
)
def build_resblock(cfg: ResBlockConfig, ctx: BuildContext) -> Workload:
    """Bottleneck block stack on random (B, C, H, W) feature maps."""
    from dlcore import PreActBottleneck

    model = nn.Sequential(
        *(PreActBottleneck(cfg.width, cfg.width, se=cfg.se, device=ctx.device) for _ in range(cfg.depth))
    )
    train = ctx.mode == "train"
    x = torch.randn(cfg.batch_size, cfg.width, cfg.image_size, cfg.image_size, device=ctx.device)
    x.requires_grad_(train)

    def loss_fn(out: torch.Tensor) -> torch.Tensor:
        clear_input_grad(x)
        return out.float().pow(2).mean()

    return Workload(
        model=model,
        inputs=(x,),
        loss_fn=loss_fn,
        optimizer=make_optimizer(cfg.optimizer, model.parameters()) if train else None,
        items_per_step=cfg.batch_size,
        unit="images",
        blocks=(PreActBottleneck,),
    )
