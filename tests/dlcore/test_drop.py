"""drop_path / DropPath: per-sample stochastic depth (Huang et al. 2016); the seed's bugs as regressions."""

import math

import pytest
import torch

from dlcore import DropPath, drop_path


def _mask_of(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Recover the per-sample multiplier from out = x * mask (x has no zeros)."""
    ratio = out / x  # (B, ...)
    per_sample = ratio.flatten(1)
    # the multiplier is constant within each sample
    torch.testing.assert_close(per_sample, per_sample[:, :1].expand_as(per_sample), rtol=0, atol=1e-12)
    return per_sample[:, 0]


def test_identity_in_eval_and_at_zero_prob() -> None:
    x = torch.randn(8, 3, 4, 4)
    assert drop_path(x, 0.5, training=False) is x
    assert drop_path(x, 0.0, training=True) is x
    m = DropPath(0.5).eval()
    torch.testing.assert_close(m(x), x, rtol=0, atol=0)
    torch.testing.assert_close(m(x), m(x), rtol=0, atol=0)  # eval is deterministic


def test_per_sample_mask_regression_whole_batch_drop() -> None:
    # seed bug: one torch.rand(1) for the whole batch -> all samples dropped or all kept
    torch.manual_seed(0)
    x = torch.rand(64, 4, 2, 2, dtype=torch.float64) + 0.5
    out = drop_path(x, 0.5, training=True)
    mask = _mask_of(x, out)
    dropped = (mask == 0).sum().item()
    assert 0 < dropped < 64, "some samples must be dropped and some kept within one batch"


def test_kept_samples_scaled_by_inverse_keep_prob_regression() -> None:
    # seed bug: survivors were not scaled by 1 / (1 - p)
    torch.manual_seed(1)
    p = 0.3
    x = torch.rand(256, 5, dtype=torch.float64) + 0.5
    mask = _mask_of(x, drop_path(x, p, training=True))
    kept = mask[mask != 0]
    assert kept.numel() > 0
    torch.testing.assert_close(kept, torch.full_like(kept, 1.0 / (1.0 - p)), rtol=0, atol=1e-12)
    # without scale_by_keep, survivors pass unchanged
    mask_raw = _mask_of(x, drop_path(x, p, training=True, scale_by_keep=False))
    assert set(mask_raw.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_scale_computed_in_float32_regression(dtype: torch.dtype) -> None:
    # regression: the mask was built in x.dtype, so 1 / (1 - 0.1) was rounded to bf16 (1.109375)
    # before the product; now the scaled mask is fp32 and only the product is rounded to x.dtype
    torch.manual_seed(3)
    p = 0.1
    x = (torch.rand(512, 3) + 0.5).to(dtype)
    out = drop_path(x, p, training=True)
    assert out.dtype == dtype and out.shape == x.shape
    kept = (out != 0).all(1)
    assert 0 < int(kept.sum()) < 512
    expected = (x[kept].float() * (1.0 / (1.0 - p))).to(dtype)
    torch.testing.assert_close(out[kept], expected, rtol=0, atol=0)
    assert torch.all(out[~kept] == 0)
    # the scale of an all-ones input is 1/0.9 rounded once to x.dtype, not bf16(1/0.9) = 1.109375
    ones = drop_path(torch.ones(1000, 1, dtype=dtype), p, training=True)
    assert ones.max().item() == torch.tensor(1.0 / (1.0 - p)).to(dtype).item()


def test_expectation_preserved_fixed_seed() -> None:
    torch.manual_seed(2)
    p, n = 0.3, 40_000
    base = torch.randn(1, 6, dtype=torch.float64)
    x = base.expand(n, 6).contiguous()
    mean = drop_path(x, p, training=True).mean(0)  # (6,)
    # std of the sample mean: |x| * sqrt(p / (1 - p)) / sqrt(n); allow 5 sigma
    tol = 5 * base.abs().squeeze(0) * math.sqrt(p / (1 - p)) / math.sqrt(n)
    assert torch.all((mean - base.squeeze(0)).abs() <= tol), (mean, base)
    # the drop rate itself
    rate = (drop_path(torch.ones(n, 1), p, training=True) == 0).double().mean().item()
    assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_gradient_is_the_mask() -> None:
    torch.manual_seed(3)
    p = 0.25
    x = (torch.rand(32, 3, 2, dtype=torch.float64) + 0.5).requires_grad_()
    out = drop_path(x, p, training=True)
    mask = _mask_of(x.detach(), out.detach())
    out.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, mask.view(-1, 1, 1).expand_as(x), rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda t: drop_path(t, 0.0, training=True), (x.detach().requires_grad_(),)
    )


def test_module_is_stochastic_in_train() -> None:
    m = DropPath(0.5).train()
    x = torch.ones(128, 2)
    torch.manual_seed(4)
    a = m(x)
    b = m(x)
    assert not torch.equal(a, b)
    assert "drop_prob=0.5" in repr(m)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_drop_prob_raises(bad: float) -> None:
    with pytest.raises(ValueError, match=r"drop_prob.*\[0, 1\)"):
        drop_path(torch.ones(2, 2), bad, training=True)
    with pytest.raises(ValueError, match=r"drop_prob.*\[0, 1\)"):
        DropPath(bad)


def test_zero_dim_input_raises() -> None:
    with pytest.raises(ValueError, match="batch dimension"):
        drop_path(torch.tensor(1.0), 0.5, training=True)
