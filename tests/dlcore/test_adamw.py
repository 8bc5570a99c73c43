"""AdamWWithWarmup against torch.optim.AdamW + LambdaLR, and regression tests for the seed's bugs."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.optim.adam as adam_module
from torch import nn

from dlcore import AdamWWithWarmup, warmup_cosine_lr

LR, MIN_LR, WARMUP, TOTAL, STEPS = 0.02, 0.002, 20, 150, 220  # warm-up, cosine and held regimes


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: intra-op threads only add barrier waits (35x slower on 2 busy shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ref_lr(k: int, lr: float, warmup: int, total: int, min_lr: float) -> float:
    """The contract's formula, written independently of the library."""
    if k <= warmup:
        return lr * k / warmup
    if k <= total:
        return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * (k - warmup) / (total - warmup)))
    return min_lr


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))


BATCHES = [
    (x, y)
    for x, y in zip(
        torch.randn(STEPS, 16, 8, generator=torch.Generator().manual_seed(1)),
        torch.randn(STEPS, 16, 4, generator=torch.Generator().manual_seed(2)),
        strict=True,
    )
]


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: range, sched=None) -> list[list[float]]:
    """Run ``steps``; return the lrs each step applied (param_group['lr'] just before the step)."""
    applied = []
    for i in steps:
        x, y = BATCHES[i]
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        applied.append([g["lr"] for g in opt.param_groups])
        opt.step()
        if sched is not None:
            sched.step()
    return applied


def reference(model: nn.Module, warmup: int, groups=None, fused: bool | None = True):
    """torch AdamW + LambdaLR implementing the formula (per group: its own lr and min_lr)."""
    groups = groups or [{"params": model.parameters(), "lr": LR, "min_lr": MIN_LR}]
    opt = torch.optim.AdamW(
        [{"params": g["params"], "lr": g["lr"]} for g in groups], weight_decay=0.05, fused=fused
    )
    lambdas = [(lambda e, g=g: ref_lr(e + 1, g["lr"], warmup, TOTAL, g["min_lr"]) / g["lr"]) for g in groups]
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambdas)


def flat(rows) -> list[float]:
    return [x for row in rows for x in row]


def assert_same_params(a: nn.Module, b: nn.Module, exact: bool = False) -> None:
    tol = {"rtol": 0.0, "atol": 0.0} if exact else {}
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, **tol)


# --- the pure formula ---------------------------------------------------------------------------------


def test_warmup_cosine_lr_formula_all_regimes() -> None:
    kw = {"lr": LR, "warmup_steps": WARMUP, "total_steps": TOTAL, "min_lr": MIN_LR}
    for k in range(STEPS + 1):
        assert warmup_cosine_lr(k, **kw) == pytest.approx(ref_lr(k, LR, WARMUP, TOTAL, MIN_LR), rel=1e-12)
    assert warmup_cosine_lr(WARMUP, **kw) == pytest.approx(LR)
    assert warmup_cosine_lr(TOTAL, **kw) == pytest.approx(MIN_LR)
    lrs = [warmup_cosine_lr(k, **kw) for k in range(WARMUP, 10 * TOTAL)]
    assert all(b <= a for a, b in zip(lrs, lrs[1:], strict=False)), (
        "the cosine must never rise again after its peak"
    )
    assert all(lr == MIN_LR for lr in lrs[TOTAL - WARMUP :])


def test_warmup_cosine_lr_degenerate_schedules_do_not_divide_by_zero() -> None:
    # seed bug: warmup_steps=0 raised ZeroDivisionError
    assert warmup_cosine_lr(1, lr=1.0, warmup_steps=0, total_steps=4) == pytest.approx(
        0.5 * (1 + math.cos(math.pi / 4))
    )
    assert warmup_cosine_lr(0, lr=1.0, warmup_steps=0, total_steps=4) == 1.0
    # warmup_steps == total_steps: warm-up, then straight to min_lr
    assert [warmup_cosine_lr(k, lr=1.0, warmup_steps=2, total_steps=2, min_lr=0.1) for k in (1, 2, 3, 9)] == [
        0.5,
        1.0,
        0.1,
        0.1,
    ]
    assert warmup_cosine_lr(5, lr=1.0, warmup_steps=0, total_steps=0, min_lr=0.25) == 0.25
    with pytest.raises(ValueError, match="k=-1"):
        warmup_cosine_lr(-1, lr=1.0, warmup_steps=0, total_steps=4)


# --- trajectory against torch's AdamW + LambdaLR ------------------------------------------------------


@pytest.mark.parametrize("warmup", [WARMUP, 0], ids=["warmup20", "warmup0"])
@pytest.mark.parametrize("ref_fused", [True, None], ids=["ref-fused", "ref-default"])
def test_trajectory_matches_adamw_plus_lambdalr(warmup: int, ref_fused: bool | None) -> None:
    model, ref_model = make_model(), make_model()
    opt = AdamWWithWarmup(
        model.parameters(), lr=LR, weight_decay=0.05, warmup_steps=warmup, total_steps=TOTAL, min_lr=MIN_LR
    )
    ref_opt, sched = reference(ref_model, warmup, fused=ref_fused)
    assert opt.get_last_lr() == pytest.approx(sched.get_last_lr(), rel=1e-12)
    applied, ref_applied = [], []
    for chunk in (range(0, 10), range(10, 100), range(100, STEPS)):  # compare along the way too
        applied += train(model, opt, chunk)
        ref_applied += train(ref_model, ref_opt, chunk, sched)
        assert_same_params(model, ref_model)
        assert opt.get_last_lr() == pytest.approx(sched.get_last_lr(), rel=1e-12)
    assert [a[0] for a in applied] == pytest.approx(
        [ref_lr(k, LR, warmup, TOTAL, MIN_LR) for k in range(1, STEPS + 1)], rel=1e-12
    )
    assert flat(applied) == pytest.approx(flat(ref_applied), rel=1e-12)
    assert opt.schedule_step == STEPS


def test_resume_from_state_dict_mid_training_is_exact() -> None:
    model = make_model()
    opt = AdamWWithWarmup(model.parameters(), lr=LR, warmup_steps=WARMUP, total_steps=TOTAL, min_lr=MIN_LR)
    train(model, opt, range(STEPS))

    first = make_model()
    opt1 = AdamWWithWarmup(first.parameters(), lr=LR, warmup_steps=WARMUP, total_steps=TOTAL, min_lr=MIN_LR)
    train(first, opt1, range(100))
    buf = io.BytesIO()
    torch.save({"model": first.state_dict(), "optim": opt1.state_dict()}, buf)
    assert opt1.state_dict()["param_groups"][0]["schedule_step"] == 100

    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    second = make_model(seed=123)  # different init: everything must come from the checkpoint
    opt2 = AdamWWithWarmup(second.parameters(), lr=LR, warmup_steps=WARMUP, total_steps=TOTAL, min_lr=MIN_LR)
    second.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["optim"])
    assert opt2.schedule_step == 100 and opt2.get_last_lr() == opt1.get_last_lr()
    applied = train(second, opt2, range(100, STEPS))
    assert [a[0] for a in applied] == pytest.approx(
        [ref_lr(k, LR, WARMUP, TOTAL, MIN_LR) for k in range(101, STEPS + 1)]
    )
    assert_same_params(model, second, exact=True)


def test_loading_a_plain_adamw_state_dict_is_refused() -> None:
    model = make_model()
    plain = torch.optim.AdamW(model.parameters())
    opt = AdamWWithWarmup(model.parameters())
    with pytest.raises(ValueError, match="schedule_step"):
        opt.load_state_dict(plain.state_dict())


def test_param_groups_each_scaled_from_their_own_lr() -> None:
    model, ref_model = make_model(), make_model()
    first, second = list(model[0].parameters()), list(model[2].parameters())
    opt = AdamWWithWarmup(
        [{"params": first}, {"params": second, "lr": 5 * LR}, {"params": [], "lr": 2 * LR, "min_lr": 0.0}],
        lr=LR,
        weight_decay=0.05,
        warmup_steps=WARMUP,
        total_steps=TOTAL,
        min_lr=MIN_LR,
    )
    groups = opt.param_groups
    assert [g["base_lr"] for g in groups] == [LR, 5 * LR, 2 * LR]
    assert [g["min_lr"] for g in groups] == pytest.approx(
        [MIN_LR, 5 * MIN_LR, 0.0]
    )  # ratio kept unless given
    ref_opt, sched = reference(
        ref_model,
        WARMUP,
        groups=[
            {"params": ref_model[0].parameters(), "lr": LR, "min_lr": MIN_LR},
            {"params": ref_model[2].parameters(), "lr": 5 * LR, "min_lr": 5 * MIN_LR},
        ],
    )
    applied = train(model, opt, range(STEPS))
    ref_applied = train(ref_model, ref_opt, range(STEPS), sched)
    assert flat(a[:2] for a in applied) == pytest.approx(flat(ref_applied), rel=1e-12)
    assert [a[2] for a in applied] == pytest.approx(
        [ref_lr(k, 2 * LR, WARMUP, TOTAL, 0.0) for k in range(1, STEPS + 1)]
    )
    assert_same_params(model, ref_model)


def test_param_group_added_mid_training_joins_the_schedule() -> None:
    model = make_model()
    opt = AdamWWithWarmup(model[0].parameters(), lr=LR, warmup_steps=WARMUP, total_steps=TOTAL)
    train(model, opt, range(30))
    opt.add_param_group({"params": model[2].parameters(), "lr": 2 * LR})
    assert opt.param_groups[1]["schedule_step"] == 30
    assert opt.get_last_lr() == pytest.approx(
        [ref_lr(31, LR, WARMUP, TOTAL, 0.0), ref_lr(31, 2 * LR, WARMUP, TOTAL, 0.0)]
    )


def test_weight_decay_is_decoupled() -> None:
    # zero gradient: Adam's moments stay 0, so only the decoupled decay p <- p * (1 - lr * wd) moves p;
    # L2-coupled Adam would instead move p by about lr per step (g = wd * p normalised by sqrt(v)).
    p = nn.Parameter(torch.linspace(-2, 2, 11))
    p0 = p.detach().clone()
    opt = AdamWWithWarmup([p], lr=0.1, weight_decay=0.3, warmup_steps=4, total_steps=10)
    p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(p.detach(), p0 * (1 - (0.1 / 4) * 0.3))


# --- seed bugs ------------------------------------------------------------------------------------------


def test_uses_torch_fused_kernel_not_a_python_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model()
    opt = AdamWWithWarmup(model.parameters(), warmup_steps=2, total_steps=5)
    assert opt.defaults["fused"] is True and all(g["fused"] for g in opt.param_groups)
    calls = []
    real = torch._fused_adamw_

    def counting(params, *args, **kwargs):
        calls.append(len(params))
        return real(params, *args, **kwargs)

    def no_loop(*args, **kwargs):
        raise AssertionError("per-tensor Python loop used")

    monkeypatch.setattr(torch, "_fused_adamw_", counting)
    monkeypatch.setattr(adam_module, "_single_tensor_adam", no_loop)
    train(model, opt, range(3))
    assert calls == [4, 4, 4]  # one fused call per step for all 4 tensors (one device and dtype)


def test_falls_back_to_torch_default_when_fused_is_unsupported() -> None:
    z = nn.Parameter(torch.randn(5, dtype=torch.complex64))  # fused AdamW has no complex kernel
    z_ref = nn.Parameter(z.detach().clone())
    opt = AdamWWithWarmup([z], lr=0.1, warmup_steps=0, total_steps=3)
    ref = torch.optim.AdamW([z_ref], lr=0.1)
    assert opt.defaults["fused"] is None
    for k in (1, 2):
        z.grad = torch.full_like(z, 1 + 1j)
        z_ref.grad = z.grad.clone()
        ref.param_groups[0]["lr"] = ref_lr(k, 0.1, 0, 3, 0.0)
        opt.step()
        ref.step()
    torch.testing.assert_close(z, z_ref)


def test_step_skipped_by_grad_scaler_does_not_advance_the_schedule() -> None:
    p = nn.Parameter(torch.ones(3))
    opt = AdamWWithWarmup([p], lr=0.1, warmup_steps=4, total_steps=10)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0)
    scaler.scale(torch.ones(()))  # initialises the scale
    p.grad = torch.full_like(p, math.inf)
    scaler.step(opt)  # fused optimizer: the scaler hands it found_inf and the kernel skips the update
    scaler.update()
    assert opt.schedule_step == 0 and opt.get_last_lr() == [0.1 / 4]
    torch.testing.assert_close(p.detach(), torch.ones(3))
    p.grad = torch.ones_like(p)
    scaler.scale(torch.ones(()))
    scaler.step(opt)
    assert opt.schedule_step == 1 and opt.get_last_lr() == [0.2 / 4]
    assert not torch.equal(p.detach(), torch.ones(3))


def test_step_hooks_run_once_per_step() -> None:
    torch.optim.AdamW(make_model().parameters())  # makes torch wrap AdamW.step in its hook runner
    model = make_model()
    opt = AdamWWithWarmup(model.parameters(), warmup_steps=2, total_steps=5)
    pre, post = [], []
    opt.register_step_pre_hook(lambda *a: pre.append(1))
    opt.register_step_post_hook(lambda *a: post.append(1))
    train(model, opt, range(3))
    assert len(pre) == len(post) == 3


def test_lr_stays_at_min_lr_after_total_steps() -> None:
    model = make_model()
    opt = AdamWWithWarmup(model.parameters(), lr=0.01, warmup_steps=3, total_steps=10, min_lr=1e-4)
    applied = [a[0] for a in train(model, opt, range(60))]
    assert applied[9:] == [1e-4] * 51  # steps 10..60: never rises again
    assert max(applied[3:]) == applied[3] and all(
        b <= a for a, b in zip(applied[2:], applied[3:], strict=False)
    )


@pytest.mark.parametrize("warmup,total", [(0, 10), (0, 0), (10, 10)])
def test_degenerate_warmup_and_total_do_not_divide_by_zero(warmup: int, total: int) -> None:
    model = make_model()
    opt = AdamWWithWarmup(model.parameters(), lr=0.01, warmup_steps=warmup, total_steps=total, min_lr=1e-3)
    applied = [a[0] for a in train(model, opt, range(15))]
    assert applied == pytest.approx(
        [
            warmup_cosine_lr(k, lr=0.01, warmup_steps=warmup, total_steps=total, min_lr=1e-3)
            for k in range(1, 16)
        ]
    )
    if warmup == 0 and total:
        assert applied[0] == pytest.approx(1e-3 + (0.01 - 1e-3) * 0.5 * (1 + math.cos(math.pi / total)))


def test_a_second_scheduler_is_detected() -> None:
    model = make_model()
    opt = AdamWWithWarmup(model.parameters(), warmup_steps=2, total_steps=5)
    torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
    with pytest.raises(RuntimeError, match="LRScheduler"):
        train(model, opt, range(1))

    opt = AdamWWithWarmup(model.parameters(), warmup_steps=2, total_steps=5)
    train(model, opt, range(2))
    opt.param_groups[0]["lr"] = 0.5  # another schedule writing into the same lr
    with pytest.raises(RuntimeError, match="changed param_group"):
        train(model, opt, range(1))


def piecewise_reference(lr_of_step, steps: range) -> nn.Module:
    """torch AdamW (fused) + LambdaLR applying ``lr_of_step(k)`` at step k; the trained model."""
    ref_model = make_model()
    ref_opt = torch.optim.AdamW(ref_model.parameters(), lr=LR, weight_decay=0.05, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(ref_opt, lambda e: lr_of_step(e + 1) / LR)
    train(ref_model, ref_opt, steps, sched)
    return ref_model


@pytest.mark.parametrize(
    "key,value",
    [("base_lr", LR / 2), ("min_lr", MIN_LR * 3), ("warmup_steps", 40), ("total_steps", 300)],
)
def test_changing_schedule_keys_mid_run_is_applied_regression(key: str, value: float) -> None:
    # regression: step() raised "param group 0 has lr=... but its schedule prescribes ..." after a
    # change of the schedule keys, the very way the docstring and that error message recommend
    model = make_model()
    opt = AdamWWithWarmup(
        model.parameters(), lr=LR, weight_decay=0.05, warmup_steps=WARMUP, total_steps=TOTAL, min_lr=MIN_LR
    )
    train(model, opt, range(30))
    opt.param_groups[0][key] = value
    new = {"lr": LR, "warmup": WARMUP, "total": TOTAL, "min_lr": MIN_LR}
    new[{"base_lr": "lr", "min_lr": "min_lr", "warmup_steps": "warmup", "total_steps": "total"}[key]] = value
    applied = train(model, opt, range(30, 60))  # the new schedule applies from step 31 on
    assert opt.schedule_step == 60
    assert [a[0] for a in applied[1:]] == pytest.approx([ref_lr(k, **new) for k in range(32, 61)], rel=1e-12)
    assert opt.get_last_lr() == [pytest.approx(ref_lr(61, **new), rel=1e-12)]
    old = {"lr": LR, "warmup": WARMUP, "total": TOTAL, "min_lr": MIN_LR}
    ref_model = piecewise_reference(lambda k: ref_lr(k, **(old if k <= 30 else new)), range(60))
    assert_same_params(model, ref_model)
    # someone else writing lr is still detected after a schedule change
    opt.param_groups[0]["lr"] = 0.5
    with pytest.raises(RuntimeError, match="changed param_group"):
        opt.step()


def test_resumed_run_can_lengthen_total_steps_regression() -> None:
    model = make_model()
    kwargs = {"lr": LR, "weight_decay": 0.05, "warmup_steps": WARMUP, "total_steps": TOTAL, "min_lr": MIN_LR}
    opt = AdamWWithWarmup(model.parameters(), **kwargs)
    train(model, opt, range(100))
    saved = opt.state_dict()
    assert saved["param_groups"][0]["_sched_lr"] == opt.get_last_lr()[0]
    buf = io.BytesIO()
    torch.save(saved, buf)
    buf.seek(0)
    resumed = AdamWWithWarmup(model.parameters(), **kwargs)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    resumed.param_groups[0]["total_steps"] = 2 * TOTAL  # train longer than first planned
    applied = train(model, resumed, range(100, STEPS))
    assert [a[0] for a in applied[1:]] == pytest.approx(
        [ref_lr(k, LR, WARMUP, 2 * TOTAL, MIN_LR) for k in range(102, STEPS + 1)], rel=1e-12
    )
    ref_model = piecewise_reference(
        lambda k: ref_lr(k, LR, WARMUP, TOTAL if k <= 100 else 2 * TOTAL, MIN_LR), range(STEPS)
    )
    assert_same_params(model, ref_model)


def test_state_dict_without_sched_lr_still_loads_and_detects_a_changed_lr() -> None:
    # state dicts saved before param_group["_sched_lr"] existed
    model = make_model()
    kwargs = {"lr": LR, "warmup_steps": WARMUP, "total_steps": TOTAL, "min_lr": MIN_LR}
    opt = AdamWWithWarmup(model.parameters(), **kwargs)
    train(model, opt, range(10))
    old = opt.state_dict()
    for group in old["param_groups"]:
        del group["_sched_lr"]
    resumed = AdamWWithWarmup(model.parameters(), **kwargs)
    resumed.load_state_dict(old)
    assert resumed.param_groups[0]["_sched_lr"] == ref_lr(11, LR, WARMUP, TOTAL, MIN_LR)
    resumed.param_groups[0]["base_lr"] = LR / 2
    train(model, resumed, range(10, 12))
    assert resumed.get_last_lr() == [pytest.approx(ref_lr(13, LR / 2, WARMUP, TOTAL, MIN_LR))]
    old["param_groups"][0]["lr"] = 0.5  # an old checkpoint whose lr was overwritten by something else
    resumed.load_state_dict(old)
    with pytest.raises(RuntimeError, match="changed param_group"):
        resumed.step()


# --- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"warmup_steps": 11, "total_steps": 10}, "warmup_steps=11"),
        ({"warmup_steps": -1}, "warmup_steps=-1"),
        ({"total_steps": -5, "warmup_steps": 0}, "total_steps=-5"),
        ({"warmup_steps": 2.5}, "warmup_steps=2.5"),
        ({"lr": -0.1}, "lr=-0.1"),
        ({"lr": float("nan")}, "lr=nan"),
        ({"lr": 1e-3, "min_lr": 1e-2}, "min_lr=0.01"),
        ({"min_lr": -1e-5}, "min_lr=-1e-05"),
        ({"betas": (1.0, 0.999)}, r"betas\[0\]=1.0"),
        ({"betas": (0.9, -0.1)}, r"betas\[1\]=-0.1"),
        ({"betas": (0.9,)}, "betas="),
        ({"eps": -1e-8}, "eps=-1e-08"),
        ({"weight_decay": -0.01}, "weight_decay=-0.01"),
    ],
)
def test_bad_input_raises_value_error_naming_argument_value_and_expectation(
    kwargs: dict, needle: str
) -> None:
    with pytest.raises(ValueError, match=needle) as info:
        AdamWWithWarmup(make_model().parameters(), **kwargs)
    assert "expected" in str(info.value)


def test_bad_param_group_names_the_group() -> None:
    model = make_model()
    with pytest.raises(ValueError, match=r"param group 1: min_lr=0.5.*expected"):
        AdamWWithWarmup([{"params": model[0].parameters()}, {"params": model[2].parameters(), "min_lr": 0.5}])


@pytest.mark.gpu
def test_trajectory_matches_on_cuda() -> None:
    model, ref_model = make_model().cuda(), make_model().cuda()
    opt = AdamWWithWarmup(
        model.parameters(), lr=LR, weight_decay=0.05, warmup_steps=WARMUP, total_steps=TOTAL, min_lr=MIN_LR
    )
    assert opt.defaults["fused"] is True
    ref_opt, sched = reference(ref_model, WARMUP)
    for i in range(STEPS):
        x, y = (t.cuda() for t in BATCHES[i])
        for m, o in ((model, opt), (ref_model, ref_opt)):
            o.zero_grad()
            nn.functional.mse_loss(m(x), y).backward()
            o.step()
        sched.step()
    assert_same_params(model, ref_model)


def test_benchmark_byte_count_and_smoke_run() -> None:
    from bench.micro.optimizer_bandwidth import adamw_bytes_per_step, main

    params = [torch.zeros(1000), torch.zeros(10, 10, dtype=torch.float64)]
    assert adamw_bytes_per_step(params) == 7 * 4 * 1000 + 7 * 8 * 100  # read p, g, m, v; write p, m, v
    report = main(["--params", "4096", "--tensors", "2", "--rounds", "2", "--inner", "1", "--threads", "1"])
    assert len(report.ours.seconds) == len(report.torch_fused.seconds) == 2
    assert report.ours.bytes_per_call == 7 * 4 * 4096 and report.ratio > 0
