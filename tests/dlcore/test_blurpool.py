"""BlurPool2d (Zhang 2019) against an explicit float64 computation; low-pass regressions."""

import math

import pytest
import torch
import torch.nn.functional as F

from dlcore import BlurPool2d


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """These tensors are tiny: intra-op threads only add barrier waits (costly on a shared CPU)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _reflect_index(n: int, lo: int, hi: int) -> torch.Tensor:
    idx = []
    for i in range(-lo, n + hi):
        r = abs(i)
        if r >= n:
            r = 2 * (n - 1) - r
        idx.append(r)
    return torch.tensor(idx)


def _reference(x: torch.Tensor, filt_size: int, stride: int) -> torch.Tensor:
    """out[b,c,i,j] = sum_uv f[u] f[v] xpad[b,c,s*i+u,s*j+v]; binomial f; reflect padding by index."""
    f = torch.tensor([math.comb(filt_size - 1, k) for k in range(filt_size)], dtype=torch.float64)
    f = f / 2 ** (filt_size - 1)
    lo, hi = (filt_size - 1) // 2, filt_size // 2
    h, w = x.shape[-2:]
    xp = x[:, :, _reflect_index(h, lo, hi)][:, :, :, _reflect_index(w, lo, hi)]
    ho = (h + lo + hi - filt_size) // stride + 1
    wo = (w + lo + hi - filt_size) // stride + 1
    out = torch.zeros(x.shape[0], x.shape[1], ho, wo, dtype=torch.float64)
    for u in range(filt_size):
        for v in range(filt_size):
            out += (
                f[u]
                * f[v]
                * xp[:, :, u : u + stride * (ho - 1) + 1 : stride, v : v + stride * (wo - 1) + 1 : stride]
            )
    return out


@pytest.mark.parametrize(
    "filt_size, stride, hw", [(3, 2, (8, 9)), (5, 2, (7, 6)), (4, 2, (8, 8)), (3, 1, (5, 5))]
)
def test_matches_explicit_float64(filt_size: int, stride: int, hw: tuple) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, *hw, dtype=torch.float64)
    bp = BlurPool2d(3, filt_size=filt_size, stride=stride, dtype=torch.float64)
    out = bp(x)
    torch.testing.assert_close(out, _reference(x, filt_size, stride), rtol=1e-12, atol=1e-12)
    if filt_size % 2 == 1:
        assert out.shape[-2:] == tuple(math.ceil(n / stride) for n in hw)
    # channels_last gives the same numbers
    torch.testing.assert_close(bp(x.to(memory_format=torch.channels_last)), out, rtol=1e-12, atol=1e-12)


def test_filter_is_normalised_binomial_buffer() -> None:
    bp = BlurPool2d(4, filt_size=3)
    assert list(bp.parameters()) == []
    assert "filt" in dict(bp.named_buffers())
    assert "filt" not in bp.state_dict()  # constant from filt_size, not a checkpointed tensor
    assert bp.filt.shape == (4, 1, 3, 3)
    expected = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    for c in range(4):
        torch.testing.assert_close(bp.filt[c, 0], expected)
    for k in range(1, 8):
        assert BlurPool2d(1, filt_size=k, dtype=torch.float64).filt.sum().item() == pytest.approx(
            1.0, abs=1e-15
        )
    assert BlurPool2d(2, dtype=torch.float64).filt.dtype == torch.float64
    if hasattr(torch, "float16"):
        assert BlurPool2d(2).half().filt.dtype == torch.float16  # moves with .to() like any buffer


@pytest.mark.parametrize("pad_mode", ["reflect", "replicate", "circular"])
def test_constant_image_stays_constant(pad_mode: str) -> None:
    x = torch.full((1, 2, 9, 9), 3.5, dtype=torch.float64)
    out = BlurPool2d(2, filt_size=5, pad_mode=pad_mode, dtype=torch.float64)(x)
    torch.testing.assert_close(out, torch.full_like(out, 3.5), rtol=0, atol=1e-12)


def test_reflect_on_tiny_maps_falls_back_to_replicate() -> None:
    # a 1x1 (or 1xW) map cannot be reflected; it happens deep in a ResNet on small images
    bp = BlurPool2d(2, dtype=torch.float64)
    x = torch.randn(1, 2, 1, 1, dtype=torch.float64)
    torch.testing.assert_close(bp(x), x, rtol=0, atol=1e-15)
    x = torch.randn(1, 2, 1, 6, dtype=torch.float64)
    ref = BlurPool2d(2, pad_mode="replicate", dtype=torch.float64)(x)
    torch.testing.assert_close(bp(x), ref, rtol=0, atol=0)


def test_zeros_padding_darkens_border_only() -> None:
    x = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    out = BlurPool2d(1, pad_mode="zeros", dtype=torch.float64)(x)
    assert out[0, 0, 0, 0].item() == pytest.approx(9 / 16)
    assert out[0, 0, 1:, 1:].eq(1.0).all()


def test_checkerboard_attenuated_unlike_strided_subsampling_regression() -> None:
    # seed bug: "anti-alias" without a low-pass before subsampling. A checkerboard (the Nyquist
    # frequency) aliases to a constant of full amplitude under plain subsampling; BlurPool removes it.
    i = torch.arange(16)
    board = ((-1.0) ** (i[:, None] + i[None, :])).to(torch.float64).expand(1, 1, 16, 16)
    plain = board[..., ::2, ::2]
    assert plain.abs().min().item() == 1.0
    blurred = BlurPool2d(1, dtype=torch.float64)(board)
    assert blurred.abs().max().item() < 1e-12
    # filt_size=1 is exactly strided subsampling (the control)
    torch.testing.assert_close(BlurPool2d(1, filt_size=1, dtype=torch.float64)(board), plain)


def test_near_nyquist_attenuation_beats_box_filter() -> None:
    # cos(w n) with w = 3*pi/4 aliases to pi/2 after stride 2. The binomial [1,2,1]/4 has response
    # cos(w/2)^2 ~ 0.146; the seed's 2x2 average pool (a box) only cos(w/2) ~ 0.383; plain keeps 1.
    w = 3 * math.pi / 4
    n = torch.arange(32, dtype=torch.float64)
    x = torch.cos(w * n)[None, :].expand(32, 32)[None, None]  # varies along H only
    blur = BlurPool2d(1, dtype=torch.float64)(x)[..., 2:-2, :]  # interior rows (no border effects)
    box = F.avg_pool2d(x, 2, 2)
    plain = x[..., ::2, ::2]
    assert blur.abs().max().item() <= math.cos(w / 2) ** 2 + 1e-12
    assert box.abs().max().item() > 0.25
    assert plain.abs().max().item() > 0.7


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"channels": 0}, "channels"),
        ({"channels": 2, "filt_size": 0}, r"filt_size.*\[1, 7\]"),
        ({"channels": 2, "filt_size": 8}, r"filt_size.*\[1, 7\]"),
        ({"channels": 2, "stride": 0}, "stride"),
        ({"channels": 2, "pad_mode": "mirror"}, "pad_mode"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BlurPool2d(**kwargs)


@pytest.mark.parametrize("shape", [(2, 4, 8), (2, 3, 8, 8)])
def test_bad_input_shape(shape: tuple) -> None:
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        BlurPool2d(4)(torch.randn(*shape))


def test_gradient_flows_and_dtype_follows_input() -> None:
    bp = BlurPool2d(2)
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    out = bp(x)  # float32 filter cast to the input's dtype
    assert out.dtype == torch.float64
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
