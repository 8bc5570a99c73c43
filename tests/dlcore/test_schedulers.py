"""The schedules against their closed forms, step by step; regression tests for the seed's scheduler bugs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dlcore import (
    AdamWWithWarmup,
    cosine_schedule,
    exponential_schedule,
    polynomial_schedule,
    warmup_cosine_schedule,
)

LRS = (0.1, 0.03)  # two param groups with their own lr
T = 40


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: intra-op threads only add barrier waits on 2 busy shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sgd() -> torch.optim.SGD:
    return torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(2))], "lr": lr} for lr in LRS], lr=LRS[0])


def lrs_over(sched: torch.optim.lr_scheduler.LRScheduler, steps: int) -> list[list[float]]:
    """The lr of every group after t = 0, 1, ..., steps calls of scheduler.step()."""
    opt = sched.optimizer
    out = [[g["lr"] for g in opt.param_groups]]
    for _ in range(steps):
        opt.step()
        sched.step()
        out.append([g["lr"] for g in opt.param_groups])
    return out


def assert_lrs(got: list[list[float]], closed_form) -> None:
    for t, row in enumerate(got):
        expected = [closed_form(t, base) for base in LRS]
        assert row == pytest.approx(expected, rel=1e-12, abs=1e-15), f"t={t}"


def non_increasing(got: list[list[float]]) -> bool:
    return all(
        b <= a for prev, row in zip(got, got[1:], strict=False) for a, b in zip(prev, row, strict=True)
    )


def test_cosine_matches_closed_form_and_never_rises_after_total_steps() -> None:
    floor = 0.01
    got = lrs_over(cosine_schedule(sgd(), total_steps=T, min_lr=floor), 3 * T)

    def closed(t: int, base: float) -> float:
        return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * min(t, T) / T))

    assert_lrs(got, closed)
    # seed bug: cos(pi * epoch / total) rises again for epoch > total; here it is held at min_lr
    assert non_increasing(got)
    assert all(row == pytest.approx([floor, floor]) for row in got[T:])


@pytest.mark.parametrize("power", [1.0, 2.0, 0.5])
def test_polynomial_matches_closed_form(power: float) -> None:
    floor = 0.005
    got = lrs_over(polynomial_schedule(sgd(), total_steps=T, power=power, min_lr=floor), 2 * T)

    def closed(t: int, base: float) -> float:
        return floor + (base - floor) * (1 - min(t, T) / T) ** power

    assert_lrs(got, closed)
    assert non_increasing(got)


@pytest.mark.parametrize("gamma", [0.9, 0.5, 1.0])
def test_exponential_matches_closed_form_and_never_grows(gamma: float) -> None:
    got = lrs_over(exponential_schedule(sgd(), gamma=gamma), 300)
    assert_lrs(got, lambda t, base: base * gamma**t)
    assert non_increasing(got)  # seed bug: total_epochs passed as the decay rate, lr = total_epochs ** epoch


def test_exponential_refuses_the_seed_call() -> None:
    total_epochs = 100  # what the seed passed as decay rate
    with pytest.raises(ValueError, match=r"gamma=100: expected a decay rate in \(0, 1\]"):
        exponential_schedule(sgd(), gamma=total_epochs)


@pytest.mark.parametrize("warmup", [5, 0, T])
def test_warmup_cosine_matches_closed_form(warmup: int) -> None:
    floor = 0.002
    got = lrs_over(warmup_cosine_schedule(sgd(), warmup_steps=warmup, total_steps=T, min_lr=floor), 2 * T)

    def closed(t: int, base: float) -> float:  # the lr of optimizer step k = t + 1
        k = t + 1
        if k <= warmup:
            return base * k / warmup
        if k <= T:
            return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * (k - warmup) / (T - warmup)))
        return floor

    assert_lrs(got, closed)
    assert non_increasing(got[warmup:])


def test_per_group_min_lr() -> None:
    got = lrs_over(cosine_schedule(sgd(), total_steps=T, min_lr=[0.05, 0.0]), T + 5)
    assert got[-1] == pytest.approx([0.05, 0.0])
    assert got[T // 2] == pytest.approx([0.05 + 0.05 * 0.5, 0.03 * 0.5])


def test_torch_adamw_with_warmup_cosine_schedule_reproduces_adamw_with_warmup() -> None:
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    ref_model = nn.Linear(6, 3)
    ref_model.load_state_dict(model.state_dict())
    ours = AdamWWithWarmup(model.parameters(), lr=0.05, warmup_steps=5, total_steps=30, min_lr=0.005)
    ref = torch.optim.AdamW(ref_model.parameters(), lr=0.05, fused=True)
    sched = warmup_cosine_schedule(ref, warmup_steps=5, total_steps=30, min_lr=0.005)
    g = torch.Generator().manual_seed(1)
    for _ in range(45):
        x = torch.randn(8, 6, generator=g)
        for m, o in ((model, ours), (ref_model, ref)):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
        sched.step()
        assert ours.get_last_lr() == pytest.approx(sched.get_last_lr(), rel=1e-12)
    for a, b in zip(model.parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_scheduler_state_dict_resumes() -> None:
    full = lrs_over(cosine_schedule(sgd(), total_steps=T), T)
    sched = cosine_schedule(sgd(), total_steps=T)
    lrs_over(sched, 17)
    state_opt, state_sched = sched.optimizer.state_dict(), sched.state_dict()
    opt2 = sgd()  # torch's order: build optimizer and scheduler, then load both states
    sched2 = cosine_schedule(opt2, total_steps=T)
    opt2.load_state_dict(state_opt)
    sched2.load_state_dict(state_sched)
    assert lrs_over(sched2, T - 17) == full[17:]


def test_attaching_a_schedule_to_adamw_with_warmup_is_detected() -> None:
    p = nn.Parameter(torch.ones(2))
    opt = AdamWWithWarmup([p], warmup_steps=2, total_steps=10)
    cosine_schedule(opt, total_steps=10)
    p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match="two schedules would fight"):
        opt.step()


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda o: cosine_schedule(o, total_steps=0), "total_steps=0"),
        (lambda o: cosine_schedule(o, total_steps=-3), "total_steps=-3"),
        (lambda o: cosine_schedule(o, total_steps=10, min_lr=-0.1), "min_lr=-0.1"),
        (lambda o: cosine_schedule(o, total_steps=10, min_lr=0.05), r"min_lr=0.05.*group 1 has lr=0.03"),
        (lambda o: cosine_schedule(o, total_steps=10, min_lr=[0.0]), "one float per param group"),
        (lambda o: polynomial_schedule(o, total_steps=10, power=0.0), "power=0.0"),
        (lambda o: polynomial_schedule(o, total_steps=10, power=-1), "power=-1"),
        (lambda o: exponential_schedule(o, gamma=0.0), "gamma=0.0"),
        (lambda o: exponential_schedule(o, gamma=1.5), "gamma=1.5"),
        (lambda o: warmup_cosine_schedule(o, warmup_steps=11, total_steps=10), "warmup_steps=11"),
        (lambda o: warmup_cosine_schedule(o, warmup_steps=-1, total_steps=10), "warmup_steps=-1"),
    ],
)
def test_bad_input_raises_value_error(make, needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as info:
        make(sgd())
    assert "expected" in str(info.value)
