"""``timm:<model name>``: any timm model, with random weights, on random images (``dlbench[timm]``).

``timm.create_model(name, pretrained=False, num_classes=...)`` builds it (nothing is downloaded; a
model whose input size is fixed, a ViT, gets ``img_size=image_size``). The batch is
``(batch_size, 3, image_size, image_size)`` random images with random labels, the loss cross-entropy
of the logits; throughput counts images. The blocks are detected (``bench.foreign.blocks``: a ResNet's
``BasicBlock`` / ``Bottleneck``, a ViT's ``Block``, a ConvNeXt's ``ConvNeXtBlock``).

Parameters: ``batch_size`` (8), ``image_size`` (the model's own input size, 224 for most) and
``num_classes`` (1000); preset ``tiny`` is a batch of 2 at 64 px. An unknown name exits 2 with the
closest timm names; without timm installed, with the extra to install.
"""

from __future__ import annotations

import difflib
from typing import Any

from bench.constraints import Check
from bench.errors import UsageError
from bench.foreign.factory import Param, make_spec
from bench.registry import BuildContext, ScenarioSpec


def import_timm(what: str) -> Any:
    """The timm module; ``UsageError`` naming the extra when it is not installed."""
    from bench.foreign.compat import ensure_importable

    try:
        ensure_importable()
        import timm
    except ImportError:
        raise UsageError(f"{what} needs timm, which is not installed: pip install 'dlbench[timm]'") from None
    return timm


def timm_spec(model_name: str) -> ScenarioSpec:
    """The scenario ``timm:<model_name>``; ``UsageError`` for a name timm does not have."""
    name = f"timm:{model_name}"
    timm = import_timm(name)
    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UsageError(f"scenario {name!r}: timm has no model {model_name!r} (timm.list_models()).{hint}")
    pretrained = timm.get_pretrained_cfg(model_name)
    size = int(pretrained.input_size[-1]) if pretrained is not None and pretrained.input_size else 224
    fixed = bool(getattr(pretrained, "fixed_input_size", False))
    params = [
        Param("batch_size", int, 8, Check("size")),
        Param("image_size", int, size, Check("size")),
        Param("num_classes", int, 1000, Check("size")),
    ]

    def build(cfg: Any, ctx: BuildContext) -> Any:
        import torch
        import torch.nn.functional as F

        from bench.foreign.prepare import finish
        from bench.workload import Workload

        kwargs: dict[str, Any] = {"pretrained": False, "num_classes": cfg.num_classes}
        if fixed:
            kwargs["img_size"] = cfg.image_size
        with torch.device(ctx.device):
            model = timm.create_model(model_name, **kwargs)
            x = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size)  # (B, 3, H, W)
            labels = torch.randint(0, cfg.num_classes, (cfg.batch_size,))

        def loss_fn(logits: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(logits.float(), labels)  # (B, num_classes) vs (B,)

        out = Workload(
            model=model, inputs=(x,), loss_fn=loss_fn, items_per_step=cfg.batch_size, unit="images"
        )
        out.extra["model_class"] = type(model).__name__
        return finish(out, cfg, ctx, origin=f"timm.create_model({model_name!r})")

    return make_spec(
        name,
        params,
        build,
        presets={"tiny": {"batch_size": 2, "image_size": 64}},
        description=f"timm model {model_name} (random weights) on random images, cross-entropy; "
        "items = images",
    )
