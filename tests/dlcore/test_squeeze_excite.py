"""SqueezeExcite (Hu et al. 2018) against a float64 closed form."""

import pytest
import torch

from dlcore import SqueezeExcite


def _reference(se: SqueezeExcite, x: torch.Tensor) -> torch.Tensor:
    w1 = se.fc1.weight.flatten(1)  # (rd, C)
    w2 = se.fc2.weight.flatten(1)  # (C, rd)
    pooled = x.sum(dim=(2, 3)) / (x.shape[2] * x.shape[3])  # (B, C)
    hidden = torch.clamp(pooled @ w1.T + se.fc1.bias, min=0)  # (B, rd)
    gate = 1.0 / (1.0 + torch.exp(-(hidden @ w2.T + se.fc2.bias)))  # (B, C)
    return x * gate[:, :, None, None]


@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_closed_form_float64(channels_last: bool) -> None:
    torch.manual_seed(0)
    se = SqueezeExcite(32, dtype=torch.float64)
    assert se.rd_channels == 2
    x = torch.randn(3, 32, 5, 7, dtype=torch.float64)
    expected = _reference(se, x)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    out = se(x)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    if channels_last:
        assert out.is_contiguous(memory_format=torch.channels_last)


def test_reduction_and_layers() -> None:
    assert SqueezeExcite(256).rd_channels == 16
    assert SqueezeExcite(8).rd_channels == 1  # never zero
    assert SqueezeExcite(64, rd_ratio=0.25).rd_channels == 16
    assert SqueezeExcite(64, rd_channels=5).rd_channels == 5
    se = SqueezeExcite(16, act_layer=torch.nn.SiLU, gate_layer=torch.nn.Hardsigmoid)
    assert isinstance(se.act, torch.nn.SiLU) and isinstance(se.gate, torch.nn.Hardsigmoid)
    se(torch.randn(2, 16, 3, 3)).sum().backward()
    assert se.fc1.weight.grad is not None and se.fc2.bias.grad is not None


def test_gate_in_unit_interval_and_scale_only() -> None:
    torch.manual_seed(1)
    se = SqueezeExcite(8, rd_ratio=0.5)
    x = torch.rand(2, 8, 4, 4) + 0.1
    ratio = se(x) / x
    assert torch.all((ratio > 0) & (ratio < 1))
    # one gate per (sample, channel): constant over space
    torch.testing.assert_close(ratio, ratio[:, :, :1, :1].expand_as(ratio))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"channels": 0}, "channels"),
        ({"channels": -4}, "channels"),
        ({"channels": 16, "rd_ratio": 0.0}, "rd_ratio"),
        ({"channels": 16, "rd_channels": 0}, "rd_channels"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SqueezeExcite(**kwargs)


@pytest.mark.parametrize("shape", [(2, 16, 4), (2, 8, 4, 4)])
def test_bad_input_shape(shape: tuple) -> None:
    with pytest.raises(ValueError, match=r"\(B, 16, H, W\)"):
        SqueezeExcite(16)(torch.randn(*shape))
