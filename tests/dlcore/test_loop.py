"""fit / save_checkpoint / load_checkpoint: loss falls, one scheduler per optimizer step, atomic saves."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dlcore.train.loop as loop_module
from dlcore import EarlyStopping, MixUp, fit, load_checkpoint, save_checkpoint


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.fc(x))


def classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), Block(16), Block(16), nn.Linear(16, 3))


def batches(n_batches: int = 8, batch: int = 32, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Three Gaussian blobs: a linearly separable toy problem."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 6, generator=g) * 2
    out = []
    for _ in range(n_batches):
        y = torch.randint(0, 3, (batch,), generator=g)
        out.append((centres[y] + 0.5 * torch.randn(batch, 6, generator=g), y))
    return out


def test_loss_falls_with_the_whole_recipe(tmp_path: Path) -> None:
    model = classifier()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=6 * 8)
    lines: list[str] = []
    hist = fit(
        model,
        batches(),
        optimizer=opt,
        loss_fn=F.cross_entropy,
        epochs=6,
        precision="bf16",
        scheduler=sched,
        val_loader=batches(2, seed=1),
        early_stopping=EarlyStopping(patience=3),
        mix=MixUp(0.2, p=0.5, generator=torch.Generator().manual_seed(0)),
        checkpointing=(Block,),
        max_grad_norm=1.0,
        checkpoint_path=tmp_path / "ckpt.pt",
        log=lines.append,
    )
    assert hist.epochs_run == 6 and len(hist.val_loss) == 6 and len(hist.lr) == 6 and len(lines) == 6
    assert hist.train_loss[-1] < 0.5 * hist.train_loss[0]
    assert hist.val_loss[-1] < 0.5 * hist.val_loss[0]
    assert hist.optimizer_steps == 48 and hist.skipped_steps == 0
    assert (tmp_path / "ckpt.pt").exists()
    assert "train_loss" in lines[0] and "val_loss" in lines[0]


def test_scheduler_steps_once_per_optimizer_step() -> None:
    model = classifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: calls.append(step) or 1.0 / (1 + step))
    n_opt_steps = []
    opt.register_step_post_hook(lambda *_: n_opt_steps.append(1))
    hist = fit(model, batches(5), optimizer=opt, epochs=3, scheduler=sched)
    assert len(n_opt_steps) == 15 == hist.optimizer_steps
    assert sched.last_epoch == 15  # one scheduler step per optimizer step
    assert hist.lr[-1] == pytest.approx(0.1 / 16)
    assert hist.lr[0] == pytest.approx(0.1 / 6)


def test_two_schedulers_are_refused() -> None:
    """Seed bug: AdamWWithWarmup's own schedule and AdvancedLRScheduler both wrote the lr."""
    model = classifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    s1 = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    s2 = torch.optim.lr_scheduler.StepLR(opt, 1)
    params = inspect.signature(fit).parameters
    assert "scheduler" in params and not any("schedulers" in p for p in params)
    with pytest.raises(TypeError, match="scheduler: expected ONE"):
        fit(model, batches(1), optimizer=opt, epochs=1, scheduler=[s1, s2])
    other = torch.optim.SGD(classifier().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="scheduler: it drives a different optimizer"):
        fit(model, batches(1), optimizer=opt, epochs=1, scheduler=torch.optim.lr_scheduler.StepLR(other, 1))


def test_no_cuda_calls_in_loop() -> None:
    """Seed bug: torch.cuda / .cuda() everywhere; here the device is a parameter."""
    code = inspect.getsource(loop_module).split('"""', 2)[2]
    assert ".cuda(" not in code and "torch.cuda" not in code


def test_early_stopping_restores_best_and_checkpoint_holds_it(tmp_path: Path) -> None:
    model = classifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    # validation targets are random labels: val loss soon stops improving while training goes on
    g = torch.Generator().manual_seed(3)
    val = [(torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g))]
    stopper = EarlyStopping(patience=2)
    hist = fit(
        model,
        batches(),
        optimizer=opt,
        epochs=30,
        val_loader=val,
        early_stopping=stopper,
        checkpoint_path=tmp_path / "c.pt",
    )
    assert hist.stopped_early and hist.epochs_run < 30
    assert hist.best_epoch == stopper.best_epoch == min(range(hist.epochs_run), key=hist.val_loss.__getitem__)
    torch.testing.assert_close(model.state_dict(), stopper.best_state, rtol=0, atol=0)
    fresh = classifier()
    payload = load_checkpoint(tmp_path / "c.pt", fresh)
    torch.testing.assert_close(fresh.state_dict(), stopper.best_state, rtol=0, atol=0)
    assert payload["epoch"] == hist.epochs_run - 1
    assert payload["extra"]["history"]["stopped_early"] is True


def test_checkpoint_roundtrip(tmp_path: Path) -> None:
    model = classifier()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    fit(model, batches(4), optimizer=opt, epochs=2, scheduler=sched)
    path = save_checkpoint(tmp_path / "sub" / "m.pt", model, opt, sched, epoch=1, extra={"note": "x", "n": 3})
    m2 = nn.Sequential(nn.Linear(6, 16), Block(16), Block(16), nn.Linear(16, 3))
    o2 = torch.optim.AdamW(m2.parameters(), lr=1e-2)
    s2 = torch.optim.lr_scheduler.StepLR(o2, step_size=3, gamma=0.5)
    payload = load_checkpoint(path, m2, o2, s2)
    assert payload["epoch"] == 1 and payload["extra"] == {"note": "x", "n": 3}
    torch.testing.assert_close(m2.state_dict(), model.state_dict(), rtol=0, atol=0)
    torch.testing.assert_close(o2.state_dict()["state"], opt.state_dict()["state"], rtol=0, atol=0)
    assert s2.state_dict() == sched.state_dict()
    # the restored pair continues exactly like the original
    x, y = batches(1, seed=9)[0]
    for m, o in ((model, opt), (m2, o2)):
        o.zero_grad()
        F.cross_entropy(m(x), y).backward()
        o.step()
    torch.testing.assert_close(m2.state_dict(), model.state_dict())


def test_load_is_weights_only(tmp_path: Path) -> None:
    """A checkpoint that needs arbitrary unpickling is refused."""

    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "extra": Evil()}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        load_checkpoint(path, nn.Linear(1, 1), strict=False)


def test_atomic_save_keeps_old_file_when_write_fails(tmp_path: Path, monkeypatch) -> None:
    model = classifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model, opt, epoch=1)
    good = path.read_bytes()

    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)  # writes the whole payload into the temp file ...
        f.write(b"partial")
        raise OSError("disk full")  # ... then fails before the rename

    with torch.no_grad():
        model[0].weight.add_(1.0)
    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, opt, epoch=2)
    monkeypatch.undo()
    assert path.read_bytes() == good  # old checkpoint intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # no temp file left
    assert load_checkpoint(path, classifier())["epoch"] == 1


def test_saved_checkpoint_mode_follows_the_umask_regression(tmp_path: Path) -> None:
    # regression: the mkstemp temp file is 0o600 and os.replace kept that mode for the checkpoint
    model = classifier()
    old = os.umask(0o027)
    try:
        path = save_checkpoint(tmp_path / "a.pt", model)
        assert path.stat().st_mode & 0o777 == 0o640
        os.umask(0o022)
        save_checkpoint(path, model)  # replacing an existing file too
        assert path.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]


@pytest.mark.parametrize(
    "extra, needle",
    [
        ({"path": Path("/x")}, "could not load it back"),  # pickles, but weights_only refuses it
        ({"fn": lambda x: x}, "cannot be saved"),  # does not even pickle
    ],
)
def test_extra_that_load_checkpoint_would_refuse_is_rejected_regression(
    tmp_path: Path, extra: dict, needle: str
) -> None:
    # regression: save_checkpoint wrote an `extra` that load_checkpoint (weights_only=True) then refused
    model = classifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    path = save_checkpoint(tmp_path / "ckpt.pt", model, opt, epoch=1, extra={"ok": [1, 2.5, "s", None]})
    good = path.read_bytes()
    with pytest.raises(ValueError, match=rf"extra: .*{needle}.*expected only tensors, numbers, strings"):
        save_checkpoint(path, model, opt, epoch=2, extra=extra)
    assert path.read_bytes() == good  # the old checkpoint is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # and no temp file is left
    payload = load_checkpoint(path, classifier(), torch.optim.SGD(classifier().parameters(), lr=0.1))
    assert payload["epoch"] == 1 and payload["extra"] == {"ok": [1, 2.5, "s", None]}


def test_reduce_lr_on_plateau_is_refused_regression() -> None:
    # regression: fit accepted ReduceLROnPlateau, then crashed on its first step() (no metric)
    model = classifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    with pytest.raises(ValueError, match="scheduler: ReduceLROnPlateau .*needs a metric"):
        fit(model, batches(2), optimizer=opt, epochs=1, scheduler=sched)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # nothing ran


def test_bad_arguments() -> None:
    model = classifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="epochs: expected an integer >= 1"):
        fit(model, batches(1), optimizer=opt, epochs=0)
    with pytest.raises(ValueError, match="precision: fp16"):
        fit(model, batches(1), optimizer=opt, epochs=1, precision="fp16")
    with pytest.raises(ValueError, match="train_loader: yielded no batches"):
        fit(model, [], optimizer=opt, epochs=1)
    with pytest.raises(TypeError, match="early_stopping"):
        fit(model, batches(1), optimizer=opt, epochs=1, early_stopping=3)  # type: ignore[arg-type]


def test_recipe_example_runs_and_loss_falls() -> None:
    """The example (dlcore ResNet + Transformer, whole recipe), shortened: it returns 0 iff the loss fell."""
    from dlcore.examples import recipe

    lines: list[str] = []
    assert recipe.main([], epochs=3, steps_per_epoch=5, log=lines.append) == 0
    assert sum("reloaded equal: ok" in line for line in lines) == 2
    assert lines[-1] == "recipe: loss fell for every model"
