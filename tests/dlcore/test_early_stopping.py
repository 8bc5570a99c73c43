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


class WithExtraState(nn.Module):
    """A module whose state_dict holds a non-tensor entry (``get_extra_state``)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.tag = {"v": 1}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def get_extra_state(self) -> dict:
        return self.tag

    def set_extra_state(self, state: dict) -> None:
        self.tag = state


@pytest.mark.parametrize("state_device", [None, "cpu"])
def test_snapshot_of_non_tensor_extra_state_regression(state_device: str | None) -> None:
    # regression: _snapshot called .detach() on every state_dict entry and crashed on extra state
    torch.manual_seed(0)
    model = WithExtraState()
    stopper = EarlyStopping(patience=1, state_device=state_device)
    stopper(0.1, model)
    best = snapshot(model.linear)
    assert stopper.best_state is not None and stopper.best_state["_extra_state"] == {"v": 1}
    model.tag["v"] = 2  # a deep copy: mutating the live extra state does not change the saved one
    train_a_bit(model)
    assert stopper(0.2, model) is True
    assert model.tag == {"v": 1}
    torch.testing.assert_close(snapshot(model.linear), best, rtol=0, atol=0)
    model.tag["v"] = 3  # the restored extra state is a copy too
    assert stopper.best_state["_extra_state"] == {"v": 1}


def test_state_dict_round_trip_resumes_and_restores(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    stopper = EarlyStopping(patience=3, min_delta=0.01)
    for epoch, loss in enumerate([0.5, 0.3, 0.35]):
        stopper(loss, model, epoch)
        if epoch == 1:
            best = snapshot(model)
        train_a_bit(model)
    torch.save(stopper.state_dict(), tmp_path / "es.pt")
    state = torch.load(tmp_path / "es.pt", weights_only=True)

    resumed = EarlyStopping(patience=3, min_delta=0.01)
    resumed.load_state_dict(state)
    assert (resumed.counter, resumed.best_loss, resumed.best_epoch, resumed.should_stop) == (1, 0.3, 1, False)
    assert resumed.state_dict().keys() == stopper.state_dict().keys()
    torch.testing.assert_close(resumed.best_state, best, rtol=0, atol=0)
    # the loaded best weights are a copy, not the dict that was passed in
    state["best_state"]["weight"].zero_()
    torch.testing.assert_close(resumed.best_state, best, rtol=0, atol=0)
    assert resumed(0.4, model) is False  # default epoch continues from the saved call count
    assert resumed(0.4, model) is True and resumed.counter == 3
    torch.testing.assert_close(snapshot(model), best, rtol=0, atol=0)

    # without restore_best_weights no weights are saved, and none are loaded
    plain = EarlyStopping(patience=3, restore_best_weights=False)
    plain(0.5, model)
    assert "best_state" not in plain.state_dict()
    again = EarlyStopping(patience=3, restore_best_weights=False)
    again.load_state_dict(plain.state_dict())
    assert again.best_state is None and again.best_loss == 0.5 and again.best_epoch == 0
    with pytest.raises(ValueError, match="lacks the keys"):
        again.load_state_dict({"counter": 0})
