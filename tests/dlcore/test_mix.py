"""MixUp / CutMix: no writes into the caller's batch, exact λ, reproducibility, channels_last, bad input."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

import dlcore.augment.mix as mix_module
from dlcore import CutMix, MixUp, cutmix_batch, mixup_batch
from dlcore.augment.mix import mix_loss, mix_targets


def labelled_images(batch: int = 8, channels: int = 3, size: tuple[int, int] = (12, 10)) -> torch.Tensor:
    """Image i is filled with the value i + 1, so each pixel tells which sample it came from."""
    x = torch.arange(1, batch + 1, dtype=torch.float32).view(batch, 1, 1, 1)
    return x.expand(batch, channels, *size).contiguous()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("fn", [mixup_batch, cutmix_batch])
def test_inputs_untouched(fn) -> None:
    """Seed bug: CutMix wrote the pasted boxes into the caller's batch."""
    x = torch.randn(6, 3, 8, 8)
    y = torch.arange(6)
    x0, y0 = x.clone(), y.clone()
    for seed in range(5):
        out = fn(x, y, 1.0, generator=gen(seed))
        assert out[0].data_ptr() != x.data_ptr()
    torch.testing.assert_close(x, x0, rtol=0, atol=0)
    torch.testing.assert_close(y, y0, rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(20))
def test_cutmix_lambda_equals_kept_area_exactly(seed: int) -> None:
    x = labelled_images()
    y = torch.arange(8)
    x_mixed, y_a, y_b, lam = cutmix_batch(x, y, alpha=1.0, generator=gen(seed))
    height, width = x.shape[-2:]
    # pixels that came from another sample (the box is the same for every sample; fixed points of the
    # permutation paste onto themselves, so take the sample that shows the most)
    pasted = (x_mixed != x).all(dim=1).flatten(1).sum(dim=1)  # per sample, over all channels
    assert lam == pytest.approx(1.0 - int(pasted.max()) / (height * width), abs=1e-12)
    # each pasted pixel carries its partner's value, and y_b names that partner
    for i in range(8):
        values = set(x_mixed[i].unique().tolist())
        assert values <= {float(i + 1), float(y_b[i] + 1)}
    assert torch.equal(y_a, y)
    assert sorted(y_b.tolist()) == list(range(8))


def test_cutmix_lambda_with_box_clipped_at_border() -> None:
    """λ is recomputed from the clipped box, not the sampled one: over many seeds some boxes hit the
    border, and still λ = kept fraction."""
    x = labelled_images(8, 1, (9, 7))
    hits_border = 0
    for seed in range(60):
        x_mixed, _, _, lam = cutmix_batch(x, torch.arange(8), alpha=0.5, generator=gen(seed))
        changed = (x_mixed != x)[:, 0]
        area = int(changed.flatten(1).sum(1).max())
        if area:
            rows = changed.any(dim=0).any(dim=1).nonzero()
            cols = changed.any(dim=0).any(dim=0).nonzero()
            hits_border += int(rows.min() == 0 or rows.max() == 8 or cols.min() == 0 or cols.max() == 6)
        assert lam == pytest.approx(1.0 - area / 63, abs=1e-12)
    assert hits_border > 0


def test_mixup_values_and_targets() -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 4)
    y = torch.tensor([0, 1, 2, 1, 0])
    x_mixed, y_a, y_b, lam = mixup_batch(x, y, alpha=0.4, generator=gen(3))
    assert 0.0 <= lam <= 1.0 and isinstance(lam, float)
    # y_b = y[perm]; rebuild perm from y_b is ambiguous, so rebuild it from the same generator
    g = gen(3)
    torch.randint(0, 2**62, (1,), generator=g)  # λ draw
    perm = torch.randperm(5, generator=g)
    torch.testing.assert_close(x_mixed, lam * x + (1 - lam) * x[perm])
    assert torch.equal(y_b, y[perm]) and torch.equal(y_a, y)
    # one-hot targets and the soft target
    _, ya1, yb1, lam1 = mixup_batch(x, y, alpha=0.4, num_classes=3, generator=gen(3))
    assert ya1.shape == (5, 3) and ya1.dtype == torch.float32
    soft = mix_targets(ya1, yb1, lam1)
    torch.testing.assert_close(soft.sum(1), torch.ones(5))
    # the mixed loss with index targets equals cross-entropy against the soft target
    logits = torch.randn(5, 3)
    torch.testing.assert_close(
        mix_loss(F.cross_entropy, logits, y_a, y_b, lam), F.cross_entropy(logits, soft)
    )


def test_mixup_dtype_as_documented() -> None:
    # the docstring once said the dtype is always kept; integer images come back as float
    x = torch.randint(0, 256, (4, 3, 2, 2), dtype=torch.uint8)
    x_mixed = mixup_batch(x, torch.arange(4), generator=gen(0))[0]
    assert x_mixed.dtype == torch.get_default_dtype()
    xf = x.to(torch.float64)
    assert mixup_batch(xf, torch.arange(4), generator=gen(0))[0].dtype == torch.float64
    assert mixup_batch(x.half(), torch.arange(4), generator=gen(0))[0].dtype == torch.float16


@pytest.mark.parametrize("fn", [mixup_batch, cutmix_batch])
def test_reproducible_with_generator(fn) -> None:
    x = torch.randn(8, 3, 16, 16)
    y = torch.arange(8)
    a = fn(x, y, 1.0, generator=gen(42))
    b = fn(x, y, 1.0, generator=gen(42))
    c = fn(x, y, 1.0, generator=gen(43))
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2]) and a[3] == b[3]
    assert not (torch.equal(a[0], c[0]) and a[3] == c[3])
    # without a generator, torch.manual_seed fixes the draw
    torch.manual_seed(5)
    d = fn(x, y, 1.0)
    torch.manual_seed(5)
    e = fn(x, y, 1.0)
    assert torch.equal(d[0], e[0]) and d[3] == e[3]


@pytest.mark.parametrize("fn", [mixup_batch, cutmix_batch])
def test_channels_last_same_values(fn) -> None:
    x = torch.randn(4, 3, 8, 8)
    y = torch.arange(4)
    x_cl = x.to(memory_format=torch.channels_last)
    out = fn(x, y, 1.0, generator=gen(0))
    out_cl = fn(x_cl, y, 1.0, generator=gen(0))
    torch.testing.assert_close(out_cl[0], out[0])
    assert out_cl[3] == out[3]
    if fn is cutmix_batch:
        assert out_cl[0].is_contiguous(memory_format=torch.channels_last)


def test_wrappers_probability_and_generator() -> None:
    x = torch.randn(4, 3, 8, 8)
    y = torch.arange(4)
    never = CutMix(alpha=1.0, p=0.0)
    x_out, y_a, y_b, lam = never(x, y)
    assert x_out is x and lam == 1.0 and torch.equal(y_a, y_b)
    always = MixUp(alpha=0.2, generator=gen(1))
    assert always(x, y)[3] != 1.0
    # p = 0.5: about half the batches are mixed, reproducibly
    m = MixUp(alpha=1.0, p=0.5, generator=gen(2))
    mixed = [m(x, y)[3] != 1.0 for _ in range(200)]
    assert 60 < sum(mixed) < 140
    m2 = MixUp(alpha=1.0, p=0.5, generator=gen(2))
    assert mixed == [m2(x, y)[3] != 1.0 for _ in range(200)]


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_alpha(alpha: float) -> None:
    x, y = torch.randn(2, 3, 4, 4), torch.arange(2)
    for call in (
        lambda: mixup_batch(x, y, alpha),
        lambda: cutmix_batch(x, y, alpha),
        lambda: MixUp(alpha),
        lambda: CutMix(alpha),
    ):
        with pytest.raises(ValueError, match="alpha.*> 0"):
            call()


def test_other_bad_input() -> None:
    with pytest.raises(ValueError, match="p: expected a probability"):
        MixUp(0.2, p=1.5)
    with pytest.raises(ValueError, match="y: expected 3 targets"):
        mixup_batch(torch.randn(3, 4), torch.arange(2))
    with pytest.raises(ValueError, match="x: expected images"):
        cutmix_batch(torch.randn(3, 4), torch.arange(3))
    with pytest.raises(ValueError, match=r"class indices must lie in \[0, 2\)"):
        mixup_batch(torch.randn(3, 4), torch.arange(3), num_classes=2)


def test_no_cuda_or_numpy_hardcoded() -> None:
    """Seed bugs: `.cuda()` hard-coded, `np` used without import. Outputs stay on the input's device."""
    code = inspect.getsource(mix_module).split('"""', 2)[2]  # after the module docstring
    assert ".cuda(" not in code and "np." not in code and "import numpy" not in code
    x = torch.randn(2, 1, 4, 4)
    out = cutmix_batch(x, torch.arange(2), generator=gen(0))
    assert out[0].device == x.device and out[2].device == x.device


@pytest.mark.gpu
@pytest.mark.parametrize("fn", [mixup_batch, cutmix_batch])
def test_cuda_tensors_with_cpu_generator(fn) -> None:
    x = torch.randn(4, 3, 8, 8, device="cuda")
    y = torch.arange(4, device="cuda")
    x0 = x.clone()
    out = fn(x, y, 1.0, generator=gen(0))
    out_cpu = fn(x.cpu(), y.cpu(), 1.0, generator=gen(0))
    assert out[0].device.type == "cuda" and out[2].device.type == "cuda"
    torch.testing.assert_close(out[0].cpu(), out_cpu[0])
    torch.testing.assert_close(x, x0)
