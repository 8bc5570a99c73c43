"""EarlyStopping: patience rule, deep-copied best weights restored after further training, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dlcore import EarlyStopping


def train_a_bit(model: nn.Module, steps: int = 3) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        opt.step()


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_restores_best_epoch_weights_not_last() -> None:
    """Seed bug: state_dict().copy() aliased the live tensors, so the 'restore' kept the last weights."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
    stopper = EarlyStopping(patience=2)
    losses = [1.0, 0.5, 0.7, 0.6]  # best at epoch 1; epochs 2, 3 do not improve -> stop at epoch 3
    weights = []
    stops = []
    for loss in losses:
        train_a_bit(model)  # the model keeps training in place
        weights.append(snapshot(model))
        stops.append(stopper(loss, model))
    assert stops == [False, False, False, True]
    assert stopper.best_epoch == 1 and stopper.best_loss == 0.5 and stopper.counter == 2
    torch.testing.assert_close(snapshot(model), weights[1], rtol=0, atol=0)
    assert not all(torch.equal(weights[1][k], weights[3][k]) for k in weights[1])
    # the saved copy is not aliased to the model: training further and restoring again still gives epoch 1
    train_a_bit(model)
    stopper.restore(model)
    torch.testing.assert_close(snapshot(model), weights[1], rtol=0, atol=0)
    assert all(v.data_ptr() != model.state_dict()[k].data_ptr() for k, v in stopper.best_state.items())


def test_min_delta_and_counter_reset() -> None:
    model = nn.Linear(2, 1)
    stopper = EarlyStopping(patience=3, min_delta=0.1)
    assert stopper(1.0, model) is False
    assert stopper(0.95, model) is False and stopper.counter == 1  # improvement below min_delta
    assert stopper(0.85, model) is False and stopper.counter == 0  # 0.85 < 1.0 - 0.1
    assert stopper.best_epoch == 2
    assert stopper(float("nan"), model) is False and stopper.counter == 1  # NaN never improves
    assert stopper(math.inf, model) is False
    assert stopper(0.8, model) is True and stopper.should_stop
    assert stopper.best_loss == 0.85


def test_no_restore_when_disabled_and_explicit_epoch() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    stopper = EarlyStopping(patience=1, restore_best_weights=False)
    stopper(0.1, model, epoch=10)
    train_a_bit(model)
    after = snapshot(model)
    assert stopper(0.2, model, epoch=11) is True
    assert stopper.best_epoch == 10 and stopper.best_state is None
    torch.testing.assert_close(snapshot(model), after, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="no best weights"):
        stopper.restore(model)


def test_state_device_cpu_copy() -> None:
    model = nn.Linear(3, 1)
    stopper = EarlyStopping(patience=1, state_device="cpu")
    stopper(0.3, model)
    assert all(v.device.type == "cpu" for v in stopper.best_state.values())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"patience": 0}, "patience: expected an integer >= 1"),
        ({"patience": -3}, "patience: expected an integer >= 1"),
        ({"patience": 2.5}, "patience: expected an integer >= 1"),
        ({"min_delta": -0.1}, "min_delta: expected a finite number >= 0"),
        ({"min_delta": float("nan")}, "min_delta: expected a finite number >= 0"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EarlyStopping(**kwargs)
