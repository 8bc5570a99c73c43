"""``resnet``: an image classifier (``dlcore.create_resnet`` or timm) on random images and labels.

``impl="dlcore"`` builds ``dlcore.create_resnet(arch, num_classes=..., base_width=...)``;
``impl="timm"`` builds ``timm.create_model(arch, pretrained=False, num_classes=...)`` so the two
``resnet50`` can be compared in the same harness (timm must be installed; otherwise the build
raises and the runner records an error row). Loss: cross-entropy against random labels.
Throughput counts images (B). The ``default`` preset is the ResNet-50 layout at half its width
(``width=32``) on 64 px images, batch 4, so that a training step stays near 50 ms on a 2-core CPU
(ResNet-50 itself: 130-200 ms); ``large`` is ResNet-50 proper at 224 px, batch 128. Activation
checkpointing wraps every bottleneck block. ``channels_last`` puts model and
input in NHWC memory format (applied by ``bench.workload.build_workload``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.registry import BuildContext, choice, register_scenario, size, size0
from bench.scenarios._shared import OPTIMIZERS, make_optimizer
from bench.workload import Workload

IMPLS: tuple[str, ...] = ("dlcore", "timm")


@dataclass(frozen=True)
class ResNetConfig:
    """A ResNet architecture (``arch``) on (batch_size, 3, image_size, image_size) images."""

    batch_size: int = size(4)
    image_size: int = size(64)
    arch: str = "resnet50"  # a dlcore.resnet_presets name (or a timm model name with impl="timm")
    width: int = size0(0)  # base_width override (stem and first-stage bottleneck width); 0 keeps the preset's
    num_classes: int = size(1000)
    channels_last: bool = False  # applied by bench.workload.build_workload, like --channels-last
    impl: str = choice("dlcore", IMPLS)
    optimizer: str = choice("adamw_warmup", OPTIMIZERS)

    def __post_init__(self) -> None:
        if self.impl == "dlcore":
            from dlcore.layers.resnet import resnet_presets

            if self.arch not in resnet_presets:
                raise ValueError(
                    f"arch: unknown dlcore ResNet {self.arch!r}; expected one of {sorted(resnet_presets)}"
                )
        if self.impl == "timm" and self.width:
            raise ValueError(
                "width: a base_width override applies to impl='dlcore' only; set width=0 with impl='timm'"
            )
        if self.image_size < 32:
            raise ValueError(f"image_size ({self.image_size}) must be >= 32 (the network downsamples 32x)")
        if self.impl == "timm" and importlib.util.find_spec("timm") is None:  # optional, checked up front
            raise ValueError(
                "impl: 'timm' needs the timm package, which is not installed (pip install 'dlbench[timm]')"
            )


def _build_model(cfg: ResNetConfig, device: str) -> tuple[nn.Module, tuple[type[nn.Module], ...]]:
    """The classifier and its repeated block classes (checkpointing and FSDP wrap each)."""
    if cfg.impl == "timm":
        from bench.foreign.compat import ensure_importable

        try:
            ensure_importable()  # a torchvision built for another torch must not stop timm's import
            import timm
            from timm.models.resnet import BasicBlock, Bottleneck
        except ImportError as e:
            raise RuntimeError("impl='timm' needs the timm package (pip install timm)") from e
        model = timm.create_model(cfg.arch, pretrained=False, num_classes=cfg.num_classes)
        return model.to(device), (Bottleneck, BasicBlock)
    from dlcore import PreActBottleneck, create_resnet

    overrides: dict[str, object] = {"num_classes": cfg.num_classes, "device": device}
    if cfg.width:
        overrides["base_width"] = cfg.width
    return create_resnet(cfg.arch, **overrides), (PreActBottleneck,)


@register_scenario(
    "resnet",
    config=ResNetConfig,
    presets={
        "tiny": {"batch_size": 2, "image_size": 32, "arch": "tiny", "num_classes": 10},
        # ResNet-50 layout at half width on 64 px images: ~50 ms per train step on a quiet 2-core CPU
        # (ResNet-50 itself: ~130-200 ms at batch 4, 64 px)
        "default": {"width": 32},
        "large": {"batch_size": 128, "image_size": 224},  # ResNet-50 proper
    },
    description="ResNet classifier (dlcore.create_resnet, or timm with impl=timm), cross-entropy; "
    "items = images",
)
def build_resnet(cfg: ResNetConfig, ctx: BuildContext) -> Workload:
    """ResNet on random images with random labels."""
    model, targets = _build_model(cfg, ctx.device)
    x = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size, device=ctx.device)
    labels = torch.randint(0, cfg.num_classes, (cfg.batch_size,), device=ctx.device)

    def loss_fn(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels)  # (B, num_classes) vs (B,)

    train = ctx.mode == "train"
    return Workload(
        model=model,
        inputs=(x,),
        loss_fn=loss_fn,
        optimizer=make_optimizer(cfg.optimizer, model.parameters()) if train else None,
        items_per_step=cfg.batch_size,
        unit="images",
        blocks=targets,
        extra={"impl": cfg.impl, "arch": cfg.arch},
    )
