"""PreActBottleneck and ResNet (He et al. 2016, pre-activation) with SE, drop path and BlurPool."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlcore import BlurPool2d, DropPath, PreActBottleneck, ResNet, create_resnet, resnet_presets

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """These tensors are tiny: intra-op threads only add barrier waits (costly on a shared CPU)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _randomize_bn(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g, dtype=m.weight.dtype) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g, dtype=m.bias.dtype) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g, dtype=m.running_mean.dtype) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g, dtype=m.running_var.dtype) + 0.5)


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    shape = (1, -1, 1, 1)
    xhat = (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
    return xhat * bn.weight.view(shape) + bn.bias.view(shape)


def _blur(x: torch.Tensor, stride: int) -> torch.Tensor:
    k = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype) / 4
    filt = torch.outer(k, k).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), filt, stride=stride, groups=x.shape[1])


def _reference_block(
    b: PreActBottleneck, x: torch.Tensor, stride: int, anti_alias: bool, se: bool
) -> torch.Tensor:
    """Eval-mode functional re-implementation with the block's weights."""
    pre = F.relu(_bn(x, b.bn1))
    if b.downsample is None:
        shortcut = x
    elif anti_alias and stride > 1:
        shortcut = F.conv2d(_blur(pre, stride), b.downsample[1].weight)
    else:
        shortcut = F.conv2d(pre, b.downsample.weight, stride=stride)
    out = F.conv2d(pre, b.conv1.weight)
    out = F.relu(_bn(out, b.bn2))
    if anti_alias and stride > 1:
        out = _blur(F.conv2d(out, b.conv2.weight, padding=1), stride)
    else:
        out = F.conv2d(out, b.conv2.weight, stride=stride, padding=1)
    out = F.conv2d(F.relu(_bn(out, b.bn3)), b.conv3.weight)
    if se:
        s = out.mean((2, 3))
        s = F.relu(s @ b.se.fc1.weight.flatten(1).T + b.se.fc1.bias)
        out = out * torch.sigmoid(s @ b.se.fc2.weight.flatten(1).T + b.se.fc2.bias)[:, :, None, None]
    return out + shortcut


@pytest.mark.parametrize(
    "cin, cout, stride, anti_alias, se",
    [(16, 16, 1, False, False), (8, 16, 1, False, True), (16, 32, 2, False, True), (16, 32, 2, True, True)],
)
def test_block_matches_functional_reference(
    cin: int, cout: int, stride: int, anti_alias: bool, se: bool
) -> None:
    torch.manual_seed(0)
    b = PreActBottleneck(
        cin, cout, stride=stride, se=se, se_rd_ratio=0.25, anti_alias=anti_alias, drop_path=0.2, dtype=F64
    )
    _randomize_bn(b)
    b.eval()
    x = torch.randn(2, cin, 9, 10, dtype=F64)
    out = b(x)
    assert out.shape == (2, cout, math.ceil(9 / stride), math.ceil(10 / stride))
    torch.testing.assert_close(out, _reference_block(b, x, stride, anti_alias, se), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(b(x), out, rtol=0, atol=0)  # eval is deterministic


def test_block_identity_norm_leaves_input_unchanged_regression() -> None:
    # regression: act1 was in-place on bn1(x); with norm_layer=nn.Identity that is x itself, so the
    # block overwrote the caller's x and its identity shortcut (out = relu(x) + F(x), not x + F(x))
    torch.manual_seed(0)
    b = PreActBottleneck(8, 8, norm_layer=nn.Identity, dtype=F64).eval()
    x = torch.randn(2, 8, 5, 5, dtype=F64)
    x0 = x.clone()
    out = b(x)
    torch.testing.assert_close(x, x0, rtol=0, atol=0)
    branch = b.conv3(F.relu(b.conv2(F.relu(b.conv1(F.relu(x0))))))
    torch.testing.assert_close(out, x0 + branch, rtol=1e-12, atol=1e-12)
    # a leaf input that requires grad (an in-place op on it raised RuntimeError)
    xg = x0.clone().requires_grad_()
    b(xg).sum().backward()
    assert xg.grad is not None and torch.equal(xg.detach(), x0)


def test_anti_alias_uses_blurpool_not_strided_conv_regression() -> None:
    # seed bug: "anti-alias" was a conv followed by avg-pool; here: stride-1 conv, then BlurPool
    b = PreActBottleneck(16, 32, stride=2, anti_alias=True)
    assert b.conv2.stride == (1, 1)
    assert isinstance(b.pool, BlurPool2d) and b.pool.stride == 2
    assert isinstance(b.downsample, nn.Sequential) and isinstance(b.downsample[0], BlurPool2d)
    assert not any(isinstance(m, nn.AvgPool2d) for m in b.modules())
    plain = PreActBottleneck(16, 32, stride=2)
    assert plain.conv2.stride == (2, 2) and isinstance(plain.pool, nn.Identity)
    # the blur adds no parameters
    assert sum(p.numel() for p in b.parameters()) == sum(p.numel() for p in plain.parameters())


def test_block_drop_path_is_per_sample() -> None:
    torch.manual_seed(1)
    p = 0.5
    b = PreActBottleneck(16, 16, drop_path=p, dtype=F64)
    _randomize_bn(b)
    b.eval()
    x = torch.randn(32, 16, 4, 4, dtype=F64)
    full = b(x)  # eval: residual always kept, unscaled
    residual = full - x
    b.drop_path.train()  # BN stays in eval, only stochastic depth is active
    out = b(x)
    kept = torch.isclose(out, x + residual / (1 - p), rtol=0, atol=1e-10).flatten(1).all(1)
    dropped = torch.isclose(out, x, rtol=0, atol=1e-10).flatten(1).all(1)
    assert torch.all(kept ^ dropped), "each sample is either dropped or kept with scale 1/(1-p)"
    assert 0 < dropped.sum().item() < 32


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"in_channels": 0, "out_channels": 16}, "in_channels"),
        ({"in_channels": 8, "out_channels": 0}, "out_channels"),
        ({"in_channels": 8, "out_channels": 18}, r"out_channels.*multiple"),
        ({"in_channels": 8, "out_channels": 16, "stride": 0}, "stride"),
        ({"in_channels": 8, "out_channels": 16, "drop_path": 1.0}, r"drop_prob.*\[0, 1\)"),
        ({"in_channels": 8, "out_channels": 16, "drop_path": -0.1}, r"drop_prob.*\[0, 1\)"),
    ],
)
def test_block_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PreActBottleneck(**kwargs)


def test_block_bad_input_shape() -> None:
    b = PreActBottleneck(8, 16)
    with pytest.raises(ValueError, match=r"\(B, 8, H, W\)"):
        b(torch.randn(2, 8, 4))
    with pytest.raises(ValueError, match=r"\(B, 8, H, W\)"):
        b(torch.randn(2, 4, 4, 4))


# ----------------------------------------------------------------------------- ResNet


def _closed_form_params(
    layers: tuple, base: int = 64, num_classes: int = 1000, in_chans: int = 3, se: bool = False
) -> int:
    total = in_chans * base * 49 + 2 * base  # stem conv 7x7 + BN
    cin = base
    for i, depth in enumerate(layers):
        mid = base * 2**i
        cout = 4 * mid
        for j in range(depth):
            total += 2 * cin + cin * mid  # bn1, conv1
            total += 2 * mid + 9 * mid * mid  # bn2, conv2
            total += 2 * mid + mid * cout  # bn3, conv3
            if j == 0 and (i > 0 or cin != cout):
                total += cin * cout  # projection shortcut (no BN in pre-activation)
            if se:
                rd = cout // 16
                total += cout * rd + rd + rd * cout + cout
            cin = cout
    return total + 2 * cin + cin * num_classes + num_classes  # final BN + classifier


def test_resnet50_preset_param_count_and_shape() -> None:
    m = create_resnet("resnet50", device="meta")  # no memory, no init cost
    n = sum(p.numel() for p in m.parameters())
    assert n == _closed_form_params((3, 4, 6, 3)) == 25_549_480
    feats = m.forward_features(torch.empty(2, 3, 224, 224, device="meta"))
    assert feats.shape == (2, 2048, 7, 7)
    assert m.forward_head(feats).shape == (2, 1000)
    se = create_resnet("seresnet50", device="meta")
    assert sum(p.numel() for p in se.parameters()) == _closed_form_params((3, 4, 6, 3), se=True) == 28_080_472
    assert sum(isinstance(b, PreActBottleneck) for b in m.modules()) == 16


def test_tiny_forward_backward() -> None:
    torch.manual_seed(0)
    m = create_resnet("tiny", se=True, anti_alias=True, drop_path_rate=0.1)
    assert sum(p.numel() for p in m.parameters()) == _closed_form_params(
        (1, 1, 1, 1), base=8, num_classes=10, se=True
    )
    x = torch.randn(2, 3, 32, 32)
    out = m(x)
    assert out.shape == (2, 10)
    out.square().sum().backward()
    missing = [name for name, p in m.named_parameters() if p.grad is None]
    assert not missing
    feats = m.forward_features(x)
    assert feats.shape == (2, m.num_features, 1, 1) and m.num_features == 256
    assert m.forward_head(feats, pre_logits=True).shape == (2, 256)


@pytest.mark.parametrize("anti_alias", [False, True])
def test_channels_last_matches_contiguous(anti_alias: bool) -> None:
    torch.manual_seed(0)
    m = create_resnet("tiny", se=True, anti_alias=anti_alias, dtype=F64)
    _randomize_bn(m)
    m.eval()
    x = torch.randn(2, 3, 32, 32, dtype=F64)
    ref = m(x)
    out = m.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)


def test_linear_drop_path_schedule() -> None:
    m = ResNet(layers=(2, 1, 2), base_width=4, num_classes=0, drop_path_rate=0.4, device="meta")
    blocks = [b for b in m.modules() if isinstance(b, PreActBottleneck)]
    rates = [b.drop_path.drop_prob if isinstance(b.drop_path, DropPath) else 0.0 for b in blocks]
    assert rates == pytest.approx([0.4 * i / 4 for i in range(5)])
    assert isinstance(blocks[0].drop_path, nn.Identity)  # rate 0: no module at all
    one = ResNet(layers=(1,), base_width=4, num_classes=0, drop_path_rate=0.4, device="meta")
    assert all(not isinstance(b, DropPath) for b in one.modules())


def test_initialisation() -> None:
    torch.manual_seed(0)
    m = create_resnet("tiny")
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            assert torch.all(mod.weight == 1) and torch.all(mod.bias == 0)
    conv = m.stages[3][0].conv2  # (64, 64, 3, 3): fan_out = 64 * 9
    expected_std = math.sqrt(2.0 / (64 * 9))
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    assert conv.weight.abs().sum() > 0
    z = create_resnet("tiny", zero_init_last=True)
    for b in z.modules():
        if isinstance(b, PreActBottleneck):
            assert torch.all(b.conv3.weight == 0)
    # with zero-init every block is its shortcut: an identity block passes its input unchanged
    blk = PreActBottleneck(16, 16)
    blk.zero_init_last()
    x = torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(blk(x), x)


def test_eval_deterministic_train_stochastic() -> None:
    torch.manual_seed(0)
    m = create_resnet("tiny", drop_path_rate=0.5)
    x = torch.randn(8, 3, 32, 32)
    m.eval()
    torch.testing.assert_close(m(x), m(x), rtol=0, atol=0)
    m.train()
    torch.manual_seed(1)
    a = m(x)
    torch.manual_seed(2)
    b = m(x)
    assert not torch.allclose(a, b)
    torch.manual_seed(1)
    torch.testing.assert_close(m(x), a, rtol=0, atol=0)  # same seed, same masks


def test_presets_and_overrides() -> None:
    assert {"resnet50", "seresnet50", "tiny"} <= set(resnet_presets)
    before = {k: dict(v) for k, v in resnet_presets.items()}
    m = create_resnet("tiny", num_classes=3, in_chans=1).eval()
    assert m(torch.randn(1, 1, 32, 32)).shape == (1, 3)
    assert resnet_presets == before  # overrides do not leak into the presets
    assert isinstance(create_resnet("tiny", num_classes=0).fc, nn.Identity)
    assert create_resnet("tiny", num_classes=0).eval()(torch.randn(1, 3, 32, 32)).shape == (1, 256)


def test_unknown_preset_lists_known_names() -> None:
    with pytest.raises(ValueError, match="resnet51") as info:
        create_resnet("resnet51")
    for name in resnet_presets:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"layers": ()}, "layers"),
        ({"layers": (1, 0)}, "layers"),
        ({"num_classes": -1}, "num_classes"),
        ({"in_chans": 0}, "in_chans"),
        ({"base_width": 0}, "base_width"),
        ({"drop_path_rate": 1.0}, r"drop_prob.*\[0, 1\)"),
    ],
)
def test_resnet_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ResNet(**{"layers": (1,), "base_width": 4, "device": "meta", **kwargs})


def test_resnet_bad_input_shape() -> None:
    m = create_resnet("tiny", device="meta")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        m(torch.empty(3, 32, 32, device="meta"))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        m(torch.empty(1, 1, 32, 32, device="meta"))
