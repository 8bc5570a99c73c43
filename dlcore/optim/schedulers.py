"""Learning-rate schedules as torch ``LRScheduler``s: cosine, polynomial, exponential, warm-up + cosine.

Papers:
    - Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017 (cosine
      annealing; one cycle here, no restarts).
    - Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (AdamW, with which these
      schedules are usually paired).
    - Goyal et al., "Accurate, Large Minibatch SGD", 2017 (linear warm-up).

Each factory returns a ``torch.optim.lr_scheduler.LambdaLR`` over any torch optimizer, so it saves and
loads with ``state_dict()`` like torch's own schedulers (``last_epoch`` is the step counter; build the
scheduler with the same arguments, then ``load_state_dict``).

Counting. A schedule is a function of ``t``, the number of ``scheduler.step()`` calls so far; the
lr right after construction is that of ``t = 0``. The intended use is one ``scheduler.step()`` per
optimizer step, right after ``optimizer.step()``, so ``total_steps`` counts optimizer steps; calling it
once per epoch works the same way with ``total_steps`` counting epochs. For ``t >= total_steps`` the
lr is held at its floor: the cosine never rises again (the seed's cosine did, since it had no clamp).

``min_lr`` is absolute, as torch's ``eta_min``: one float for every param group, or one per group;
each group's floor must not exceed its lr. (``AdamWWithWarmup`` differs for groups with their own lr:
there a group without its own ``min_lr`` keeps the constructor's ratio ``min_lr / lr``.)

Do not attach any of these to ``dlcore.AdamWWithWarmup``: it schedules itself, and its ``step()``
raises ``RuntimeError`` when it finds a scheduler attached. ``warmup_cosine_schedule`` on a plain
``torch.optim.AdamW`` reproduces ``AdamWWithWarmup`` step for step (single group, or groups with
explicit per-group floors).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch
from torch.optim.lr_scheduler import LambdaLR

from dlcore.optim.adamw import _check_nonneg_float, _check_nonneg_int, warmup_cosine_lr

__all__ = ["cosine_schedule", "polynomial_schedule", "exponential_schedule", "warmup_cosine_schedule"]


def _check_total(total_steps: object) -> int:
    total = _check_nonneg_int("total_steps", total_steps)
    if total < 1:
        raise ValueError(f"total_steps={total_steps!r}: expected an integer >= 1")
    return total


def _base_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer={optimizer!r}: expected a torch.optim.Optimizer")
    # LambdaLR's base lrs: 'initial_lr' if a scheduler already set it, else the current lr
    return [float(group.get("initial_lr", group["lr"])) for group in optimizer.param_groups]


def _floors(optimizer: torch.optim.Optimizer, min_lr: float | Sequence[float]) -> list[tuple[float, float]]:
    """(base lr, min lr) for each param group, validated."""
    bases = _base_lrs(optimizer)
    given_mins: object = min_lr
    if isinstance(given_mins, numbers.Real) or not isinstance(given_mins, Sequence):
        mins: list[object] = [given_mins] * len(bases)  # a scalar (validated below)
    else:
        mins = list(given_mins)
    if len(mins) != len(bases):
        raise ValueError(
            f"min_lr={min_lr!r}: expected a float or one float per param group ({len(bases)} groups)"
        )
    pairs: list[tuple[float, float]] = []
    for i, (base, given) in enumerate(zip(bases, mins, strict=True)):
        floor = _check_nonneg_float("min_lr", given)
        if floor > base:
            raise ValueError(
                f"min_lr={floor!r}: expected min_lr <= the lr of every param group "
                f"(group {i} has lr={base!r})"
            )
        pairs.append((base, floor))
    return pairs


def _scaled(base: float, floor: float, shape: Callable[[int], float]) -> Callable[[int], float]:
    """The LambdaLR factor for ``lr(t) = floor + (base - floor) * shape(t)``, shape going from 1 to 0."""
    if base == 0.0:
        return lambda t: 0.0
    return lambda t: (floor + (base - floor) * shape(t)) / base


def cosine_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, min_lr: float | Sequence[float] = 0.0
) -> LambdaLR:
    """Cosine annealing (SGDR, one cycle): after t steps ``lr = min_lr + (lr0 - min_lr)(1 + cos(pi t/T))/2``.

    ``t`` is clamped to ``T = total_steps``: the lr stays at ``min_lr`` afterwards.
    """
    total = _check_total(total_steps)

    def shape(t: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total))

    return LambdaLR(optimizer, [_scaled(b, m, shape) for b, m in _floors(optimizer, min_lr)])


def polynomial_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    power: float = 1.0,
    min_lr: float | Sequence[float] = 0.0,
) -> LambdaLR:
    """Polynomial decay: after t steps ``lr = min_lr + (lr0 - min_lr) (1 - min(t, T)/T) ** power``.

    ``power=1`` is linear decay; ``power`` must be > 0. Held at ``min_lr`` after ``T = total_steps``.
    """
    total = _check_total(total_steps)
    if isinstance(power, bool) or not isinstance(power, numbers.Real) or not (0 < power < math.inf):
        raise ValueError(f"power={power!r}: expected a finite float > 0")
    p = float(power)

    def shape(t: int) -> float:
        return (1.0 - min(t, total) / total) ** p

    return LambdaLR(optimizer, [_scaled(b, m, shape) for b, m in _floors(optimizer, min_lr)])


def exponential_schedule(optimizer: torch.optim.Optimizer, gamma: float) -> LambdaLR:
    """Exponential decay: after t steps ``lr = lr0 * gamma ** t``, with ``gamma`` in (0, 1].

    The lr never increases (the seed passed the number of epochs as the decay rate, so its lr grew as
    ``total_epochs ** epoch``); ``gamma > 1`` is rejected.
    """
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma={gamma!r}: expected a decay rate in (0, 1]")
    g = float(gamma)
    _base_lrs(optimizer)  # type check
    return LambdaLR(optimizer, lambda t: g**t)


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    min_lr: float | Sequence[float] = 0.0,
) -> LambdaLR:
    """Linear warm-up then cosine decay, the schedule of ``AdamWWithWarmup`` for any optimizer.

    After t calls of ``scheduler.step()`` the lr is ``warmup_cosine_lr(t + 1, ...)``: the lr of the
    (t+1)-th optimizer step, so the first ``optimizer.step()`` runs at ``lr0 / warmup_steps`` (or, with
    ``warmup_steps=0``, at the first cosine value). Held at ``min_lr`` after ``total_steps``.
    """
    warmup = _check_nonneg_int("warmup_steps", warmup_steps)
    total = _check_nonneg_int("total_steps", total_steps)
    if warmup > total:
        raise ValueError(f"warmup_steps={warmup}: expected warmup_steps <= total_steps (total_steps={total})")

    def factor(base: float, floor: float) -> Callable[[int], float]:
        if base == 0.0:
            return lambda t: 0.0
        return lambda t: (
            warmup_cosine_lr(t + 1, lr=base, warmup_steps=warmup, total_steps=total, min_lr=floor) / base
        )

    return LambdaLR(optimizer, [factor(b, m) for b, m in _floors(optimizer, min_lr)])
