"""Pre-activation bottleneck ResNet with squeeze-excitation, stochastic depth and BlurPool.

He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016 (arXiv:1603.05027):
the pre-activation ordering BN -> ReLU -> conv inside each residual branch, a clean identity
path, and a final BN -> ReLU before pooling. Optional extras, each from its own paper:
squeeze-excitation (Hu et al. 2018, ``squeeze_excite.py``), stochastic depth with a linear
schedule over depth (Huang et al. 2016, ``drop.py``) and anti-aliased downsampling (Zhang 2019,
``blurpool.py``).

Architecture (``layers=(3, 4, 6, 3)``, ``base_width=64`` is ResNet-50 shaped):

* stem: conv 7x7 stride 2 -> BN -> ReLU -> max-pool 3x3 stride 2 (the torchvision/timm stem);
* four stages of :class:`PreActBottleneck`, widths ``base_width * 4 * 2**i`` (256 ... 2048),
  stride 1 in the first stage and 2 in the others (on the 3x3 conv of each stage's first block);
* final BN -> ReLU, global average pool, linear classifier.

Differences from torchvision's / timm's ``resnet50`` (post-activation, v1.5): each block has
BN-ReLU *before* its convs, so block BNs sit on the block input and on the bottleneck width
(2*in + 4*mid affine parameters instead of 4*mid + 2*out); the projection shortcut is a bare
1x1 conv on the pre-activated input (no BN); there is one extra BN on the final features.
The ``resnet50`` preset therefore has 25,549,480 parameters (torchvision resnet50: 25,557,032;
timm's pre-activation ``resnetv2_50`` has this layout without the stem BN, 128 fewer).
``seresnet50`` has 28,080,472 (SE hidden width ``C / 16``, FC layers with bias).

Initialisation: convs Kaiming-normal (``fan_out``, ReLU); conv biases 0; BN weight 1, bias 0;
the classifier normal(std=0.01), bias 0. With ``zero_init_last=True`` the last conv of every
residual branch (``conv3``, pre-activation blocks end with a conv, not a BN) starts at zero so every
block starts as the identity (the pre-activation analogue of "zero-init the last BN gamma",
Goyal et al. 2017); it is off by default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from dlcore.layers.blurpool import BlurPool2d
from dlcore.layers.drop import DropPath, _check_drop_prob
from dlcore.layers.squeeze_excite import SqueezeExcite

__all__ = ["PreActBottleneck", "ResNet", "resnet_presets", "create_resnet"]


def _make_act(act_layer: Callable[..., nn.Module], inplace: bool = True) -> nn.Module:
    """Instantiate ``act_layer`` with ``inplace=inplace`` when it takes that argument (in-place by
    default, as torchvision does for ReLU); layers without an ``inplace`` argument are built bare."""
    try:
        return act_layer(inplace=inplace)
    except TypeError:
        return act_layer()


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck block (He et al. 2016, "Identity Mappings").

    ``out = shortcut(x) + drop_path(se(conv3(act(bn3(conv2(act(bn2(conv1(act(bn1(x))))))))))``

    Channels are given as ``in_channels`` -> ``out_channels``; the bottleneck width is
    ``out_channels // expansion`` (``expansion = 4``), so ``out_channels`` must be a multiple of 4.

    Args:
        in_channels: input channels.
        out_channels: output channels (a multiple of 4).
        stride: spatial downsampling of the block (1 or more). Without ``anti_alias`` it is applied
            by the 3x3 conv; with ``anti_alias`` the 3x3 conv has stride 1 and a
            :class:`BlurPool2d` follows it (Zhang 2019).
        se: add a :class:`SqueezeExcite` on the residual branch, after ``conv3``.
        se_rd_ratio: SE reduction ratio (hidden width ``out_channels * se_rd_ratio``).
        drop_path: stochastic-depth probability of this block's residual branch.
        anti_alias: use BlurPool for the downsampling in both the branch and the shortcut.
        blur_filt_size: BlurPool kernel size when ``anti_alias``.
        norm_layer, act_layer: normalisation (called with the channel count) and activation.
        device, dtype: factory kwargs, as in torch modules.

    The shortcut is the identity when ``in_channels == out_channels`` and ``stride == 1``;
    otherwise a 1x1 conv applied to the *pre-activated* input ``act(bn1(x))`` (as in the paper's
    code and timm's ``ResNetV2``), strided, or preceded by a BlurPool when ``anti_alias``.
    """

    expansion: int = 4

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        se: bool = False,
        se_rd_ratio: float = 1.0 / 16,
        drop_path: float = 0.0,
        anti_alias: bool = False,
        blur_filt_size: int = 3,
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
        act_layer: Callable[..., nn.Module] = nn.ReLU,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if in_channels <= 0:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        if out_channels <= 0 or out_channels % self.expansion:
            raise ValueError(
                f"out_channels must be a positive multiple of expansion={self.expansion}, "
                f"got {out_channels!r}"
            )
        if stride < 1:
            raise ValueError(f"stride must be an int >= 1, got {stride!r}")
        _check_drop_prob(drop_path)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        mid = out_channels // self.expansion
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

        self.bn1 = norm_layer(in_channels, **factory)
        # not in-place: with norm_layer=nn.Identity, bn1(x) is x itself, and an in-place act1 would
        # overwrite the caller's x (and the identity shortcut)
        self.act1 = _make_act(act_layer, inplace=False)
        self.conv1 = nn.Conv2d(in_channels, mid, 1, bias=False, **factory)
        self.bn2 = norm_layer(mid, **factory)
        self.act2 = _make_act(act_layer)
        blur = anti_alias and stride > 1
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=1 if blur else stride, padding=1, bias=False, **factory)
        self.pool: nn.Module = (
            BlurPool2d(mid, filt_size=blur_filt_size, stride=stride, **factory) if blur else nn.Identity()
        )
        self.bn3 = norm_layer(mid, **factory)
        self.act3 = _make_act(act_layer)
        self.conv3 = nn.Conv2d(mid, out_channels, 1, bias=False, **factory)
        self.se: nn.Module = (
            SqueezeExcite(out_channels, rd_ratio=se_rd_ratio, **factory) if se else nn.Identity()
        )
        self.drop_path: nn.Module = DropPath(drop_path) if drop_path > 0 else nn.Identity()

        self.downsample: nn.Module | None
        if stride != 1 or in_channels != out_channels:
            proj = nn.Conv2d(
                in_channels, out_channels, 1, stride=1 if blur else stride, bias=False, **factory
            )
            if blur:
                self.downsample = nn.Sequential(
                    BlurPool2d(in_channels, filt_size=blur_filt_size, stride=stride, **factory), proj
                )
            else:
                self.downsample = proj
        else:
            self.downsample = None

    def zero_init_last(self) -> None:
        """Zero the last conv of the residual branch, so the block starts as its shortcut."""
        nn.init.zeros_(self.conv3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"PreActBottleneck expects x of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        x_preact = self.act1(self.bn1(x))  # (B, Cin, H, W)
        shortcut = x if self.downsample is None else self.downsample(x_preact)  # (B, Cout, H/s, W/s)
        out = self.conv1(x_preact)  # (B, Cin, H, W) -> (B, mid, H, W)
        out = self.conv2(self.act2(self.bn2(out)))  # (B, mid, H/s, W/s); (B, mid, H, W) if anti-aliased
        out = self.pool(out)  # (B, mid, H/s, W/s)
        out = self.conv3(self.act3(self.bn3(out)))  # (B, mid, ...) -> (B, Cout, H/s, W/s)
        out = self.se(out)
        return self.drop_path(out) + shortcut

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, stride={self.stride}"


class ResNet(nn.Module):
    """Pre-activation bottleneck ResNet (see the module docstring for the architecture).

    Args:
        layers: number of blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50; any number of
            stages >= 1, each with >= 1 block.
        num_classes: classifier outputs; ``0`` gives no classifier (``forward`` returns the pooled
            features).
        in_chans: input image channels.
        base_width: stem width and bottleneck width of the first stage (64 for ResNet-50); stage
            ``i`` outputs ``base_width * 4 * 2**i`` channels.
        se: squeeze-excitation in every block; ``se_rd_ratio`` its reduction ratio.
        drop_path_rate: stochastic depth of the deepest block; block ``i`` of ``N`` (counted over
            the whole network) gets ``drop_path_rate * i / (N - 1)``.
        anti_alias: BlurPool downsampling in the strided blocks (stem unchanged).
        zero_init_last: zero-init ``conv3`` of every block (each block starts as the identity).
        norm_layer, act_layer: normalisation and activation everywhere.
        device, dtype: factory kwargs, as in torch modules (``device="meta"`` builds without memory).
    """

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 6, 3),
        num_classes: int = 1000,
        in_chans: int = 3,
        base_width: int = 64,
        se: bool = False,
        se_rd_ratio: float = 1.0 / 16,
        drop_path_rate: float = 0.0,
        anti_alias: bool = False,
        zero_init_last: bool = False,
        norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
        act_layer: Callable[..., nn.Module] = nn.ReLU,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        layers = tuple(layers)
        if not layers or any(not isinstance(n, int) or n < 1 for n in layers):
            raise ValueError(f"layers must be a non-empty sequence of positive ints, got {layers!r}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes!r}")
        if in_chans <= 0:
            raise ValueError(f"in_chans must be a positive int, got {in_chans!r}")
        if base_width <= 0:
            raise ValueError(f"base_width must be a positive int, got {base_width!r}")
        _check_drop_prob(drop_path_rate)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.in_chans = in_chans
        self.num_classes = num_classes

        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, base_width, 7, stride=2, padding=3, bias=False, **factory),
            norm_layer(base_width, **factory),
            _make_act(act_layer),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )

        n_blocks = sum(layers)
        rates = [drop_path_rate * i / (n_blocks - 1) if n_blocks > 1 else 0.0 for i in range(n_blocks)]
        stages: list[nn.Module] = []
        in_ch, k = base_width, 0
        for i, depth in enumerate(layers):
            out_ch = base_width * PreActBottleneck.expansion * 2**i
            blocks = []
            for j in range(depth):
                blocks.append(
                    PreActBottleneck(
                        in_ch,
                        out_ch,
                        stride=(1 if i == 0 else 2) if j == 0 else 1,
                        se=se,
                        se_rd_ratio=se_rd_ratio,
                        drop_path=rates[k],
                        anti_alias=anti_alias,
                        norm_layer=norm_layer,
                        act_layer=act_layer,
                        **factory,
                    )
                )
                in_ch, k = out_ch, k + 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = in_ch
        self.norm = norm_layer(in_ch, **factory)  # pre-activation nets normalise the final features
        self.act = _make_act(act_layer)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Module = nn.Linear(in_ch, num_classes, **factory) if num_classes > 0 else nn.Identity()
        self.reset_parameters(zero_init_last=zero_init_last)

    @torch.no_grad()
    def reset_parameters(self, zero_init_last: bool = False) -> None:
        """Kaiming-normal (fan_out, ReLU) convs, BN 1/0, classifier N(0, 0.01); see module docstring."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm | nn.LayerNorm):
                if getattr(m, "weight", None) is not None:
                    nn.init.ones_(m.weight)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, PreActBottleneck):
                    m.zero_init_last()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, in_chans, H, W)`` -> final feature map ``(B, num_features, H/32, W/32)``."""
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"ResNet expects x of shape (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        x = self.stem(x)  # (B, in_chans, H, W) -> (B, base_width, H/4, W/4)
        x = self.stages(x)  # -> (B, num_features, H/32, W/32) with 4 stages
        return self.act(self.norm(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map ``(B, C, h, w)`` -> logits ``(B, num_classes)`` (or pooled ``(B, C)``)."""
        x = self.global_pool(x).flatten(1)  # (B, C, h, w) -> (B, C)
        return x if pre_logits else self.fc(x)  # (B, C) -> (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


resnet_presets: dict[str, dict[str, Any]] = {
    "resnet50": {"layers": (3, 4, 6, 3)},
    "resnet101": {"layers": (3, 4, 23, 3)},
    "resnet152": {"layers": (3, 8, 36, 3)},
    "seresnet50": {"layers": (3, 4, 6, 3), "se": True},
    # for tests and CPU smoke runs: 4 stages of one block, widths 32/64/128/256, 10 classes
    "tiny": {"layers": (1, 1, 1, 1), "base_width": 8, "num_classes": 10},
}


def create_resnet(name: str, **overrides: Any) -> ResNet:
    """Build the preset ``name`` from :data:`resnet_presets`, with keyword ``overrides`` applied."""
    if name not in resnet_presets:
        raise ValueError(
            f"unknown ResNet preset {name!r}; known presets: {', '.join(sorted(resnet_presets))}"
        )
    return ResNet(**{**resnet_presets[name], **overrides})
