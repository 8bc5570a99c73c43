"""MixedPrecisionTrainer / resolve_amp_dtype: torch.amp on any device, scaler only for fp16, skipped steps."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dlcore.train.amp as amp_module
from dlcore import MixedPrecisionTrainer, resolve_amp_dtype


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))


def regression_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(128, 8, generator=g)
    w = torch.randn(8, 1, generator=g)
    return x, torch.sin(x @ w) + 0.5 * x[:, :1]


@pytest.mark.parametrize(
    "precision, dtype",
    [
        ("bf16", torch.bfloat16),
        ("amp-bf16", torch.bfloat16),
        ("BFloat16", torch.bfloat16),
        ("fp32", torch.float32),
        ("float32", torch.float32),
        (torch.bfloat16, torch.bfloat16),
        (torch.float32, torch.float32),
    ],
)
def test_resolve_amp_dtype_cpu(precision, dtype) -> None:
    assert resolve_amp_dtype("cpu", precision) == dtype


@pytest.mark.parametrize("precision", ["fp16", "half", "amp-fp16", torch.float16])
def test_fp16_on_cpu_is_rejected(precision) -> None:
    with pytest.raises(ValueError, match=r"precision: fp16 .* needs a GPU .*bf16"):
        resolve_amp_dtype("cpu", precision)
    with pytest.raises(ValueError, match="precision: fp16"):
        MixedPrecisionTrainer(mlp(), torch.optim.SGD(mlp().parameters(), lr=0.1), precision=precision)


@pytest.mark.parametrize("precision", ["int8", "fp8", torch.float64, 16])
def test_unknown_precision(precision) -> None:
    with pytest.raises(ValueError, match="precision: expected"):
        resolve_amp_dtype("cpu", precision)


def test_bad_max_grad_norm() -> None:
    model = mlp()
    with pytest.raises(ValueError, match="max_grad_norm: expected a positive number"):
        MixedPrecisionTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1), max_grad_norm=0.0)


def test_no_grad_scaler_for_bf16_and_fp32() -> None:
    """Seed bug: a GradScaler (CUDA's) was created whatever the dtype; bf16/fp32 need none."""
    for precision in ("bf16", "fp32"):
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        trainer = MixedPrecisionTrainer(model, opt, precision=precision)
        assert trainer.scaler is None
        assert trainer.device == torch.device("cpu")  # inferred from the model, not hard-coded CUDA


def test_uses_torch_amp_not_torch_cuda_amp() -> None:
    """Seed bug: deprecated, CUDA-only torch.cuda.amp.{autocast,GradScaler}."""
    code = inspect.getsource(amp_module).split('"""', 2)[2]  # after the module docstring
    assert "torch.cuda.amp" not in code and "torch.amp.GradScaler" in code and "torch.autocast(" in code


def test_bf16_forward_really_runs_in_bf16_on_cpu() -> None:
    model = mlp()
    trainer = MixedPrecisionTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1), precision="bf16")
    out = trainer.forward(torch.randn(4, 8))
    assert out.dtype == torch.bfloat16
    assert model[0].weight.dtype == torch.float32  # master weights stay fp32


def _train(precision: str, steps: int = 100) -> list[float]:
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    trainer = MixedPrecisionTrainer(model, opt, precision=precision, loss_fn=F.mse_loss)
    x, y = regression_data()
    losses = [float(trainer.train_step(x, y)) for _ in range(steps)]
    assert trainer.skipped_steps == 0 and trainer.optimizer_steps == steps
    return losses


def test_bf16_trains_to_fp32_loss() -> None:
    """Fixed seed, 100 Adam steps on a small MLP regression. bf16 keeps 8 mantissa bits (relative
    rounding 2^-9 ≈ 0.2 %) in matmul inputs/outputs; with fp32 master weights, the final loss should be
    within a few percent of fp32's, far below the 10x drop both achieve. We allow 10 % + 2e-3 absolute."""
    fp32 = _train("fp32")
    bf16 = _train("bf16")
    assert fp32[-1] < fp32[0] / 10 and bf16[-1] < bf16[0] / 10
    assert abs(bf16[-1] - fp32[-1]) <= 0.10 * fp32[-1] + 2e-3, (fp32[-1], bf16[-1])


def test_clipping_bounds_the_update() -> None:
    model = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    trainer = MixedPrecisionTrainer(model, opt, precision="fp32", max_grad_norm=0.5, loss_fn=F.mse_loss)
    trainer.train_step(torch.full((2, 4), 100.0), torch.full((2, 1), 100.0))
    assert trainer.last_grad_norm is not None and trainer.last_grad_norm > 0.5  # the norm before clipping
    torch.testing.assert_close(model.weight.norm(), torch.tensor(0.5))  # the step was clipped to 0.5


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_nonfinite_grads_skip_the_step_without_scaler(precision: str) -> None:
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = MixedPrecisionTrainer(model, opt, precision=precision, loss_fn=F.mse_loss)
    x, y = regression_data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bad = x.clone()
    bad[0, 0] = float("inf")
    trainer.train_step(bad, y)
    assert trainer.last_step_skipped and trainer.skipped_steps == 1 and trainer.optimizer_steps == 0
    torch.testing.assert_close(model.state_dict(), before, rtol=0, atol=0)  # weights untouched
    trainer.train_step(x, y)
    assert not trainer.last_step_skipped and trainer.optimizer_steps == 1 and trainer.step_count == 2


def test_loss_fn_override_and_tuple_inputs() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.lin(a + b)

    model = Two()
    trainer = MixedPrecisionTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1), precision="bf16")
    y = torch.tensor([0, 1])
    loss = trainer.train_step(
        (torch.randn(2, 3), torch.randn(2, 3)),
        (y, y),
        loss_fn=lambda out, t: F.cross_entropy(out, t[0]) + F.cross_entropy(out, t[1]),
    )
    assert loss.dtype == torch.float32 and loss.ndim == 0 and not loss.requires_grad


@pytest.mark.gpu
def test_fp16_on_gpu_uses_scaler_and_counts_skips() -> None:
    model = mlp().cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    trainer = MixedPrecisionTrainer(model, opt, precision="fp16", loss_fn=F.mse_loss, max_grad_norm=1.0)
    assert isinstance(trainer.scaler, torch.amp.GradScaler)
    x, y = regression_data()
    trainer.train_step(x, y)  # moved to cuda by the trainer
    assert trainer.optimizer_steps == 1 and trainer.skipped_steps == 0
    bad = x.clone()
    bad[0, 0] = float("inf")
    scale = trainer.scaler.get_scale()
    trainer.train_step(bad, y)
    assert trainer.last_step_skipped and trainer.skipped_steps == 1 and trainer.scaler.get_scale() < scale
    for _ in range(20):
        trainer.train_step(x, y)
    assert trainer.optimizer_steps == 21


@pytest.mark.gpu
def test_bf16_on_gpu_no_scaler() -> None:
    if not torch.cuda.is_bf16_supported():
        pytest.skip("GPU without bf16")
    model = mlp().cuda()
    trainer = MixedPrecisionTrainer(
        model, torch.optim.SGD(model.parameters(), lr=0.01), precision="bf16", loss_fn=F.mse_loss
    )
    assert trainer.scaler is None and trainer.device.type == "cuda"
    x, y = regression_data()
    assert torch.isfinite(trainer.train_step(x, y))
