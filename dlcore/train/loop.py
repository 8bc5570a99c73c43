"""A training loop combining the techniques: AMP, activation checkpointing, one LR schedule,
MixUp/CutMix, gradient clipping, early stopping and atomic checkpoints.

The recipe follows common practice (e.g. Goyal et al., "Accurate, Large Minibatch SGD", 2017,
arXiv:1706.02677 for per-step warm-up schedules; He et al., "Bag of Tricks for Image Classification",
CVPR 2019, arXiv:1812.01187 for cosine schedules and mixup in one recipe). What the seed's
``advanced_training_loop`` got wrong and this one does not:

- one scheduler, stepped once per optimizer step (``fit`` takes exactly one; two schedules writing
  the same ``lr`` fight each other); a step skipped for inf/NaN gradients does not advance it;
- no ``torch.cuda`` calls: the device is a parameter, AMP goes through ``torch.amp``;
- checkpoints are written atomically (temp file in the same directory, fsync, ``os.replace``), so a
  crash mid-write never leaves a truncated checkpoint in place of a good one, and loaded with
  ``torch.load(weights_only=True)`` (no arbitrary unpickling).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import pickle
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dlcore.augment.mix import mix_loss
from dlcore.train.amp import MixedPrecisionTrainer, _to_device
from dlcore.train.checkpointing import apply_activation_checkpointing
from dlcore.train.early_stopping import EarlyStopping

__all__ = ["fit", "History", "save_checkpoint", "load_checkpoint", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = 1
MixFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]]


@dataclass
class History:
    """Per-epoch figures of a ``fit`` run (lists indexed by epoch)."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)  # empty without a val_loader
    lr: list[float] = field(default_factory=list)  # first param group's lr at the end of each epoch
    optimizer_steps: int = 0
    skipped_steps: int = 0  # steps skipped for inf/NaN gradients
    stopped_early: bool = False
    best_epoch: int | None = None  # from early stopping, when used

    @property
    def epochs_run(self) -> int:
        return len(self.train_loss)

    def as_dict(self) -> dict[str, Any]:
        return {
            "train_loss": list(self.train_loss),
            "val_loss": list(self.val_loss),
            "lr": list(self.lr),
            "optimizer_steps": self.optimizer_steps,
            "skipped_steps": self.skipped_steps,
            "stopped_early": self.stopped_early,
            "best_epoch": self.best_epoch,
        }


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform/filesystem lets a directory be fsynced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_EXTRA_ALLOWED = (
    "tensors, numbers, strings, booleans, None, and lists/tuples/dicts of those "
    "(what torch.load(weights_only=True) accepts)"
)


def _weights_only_reason(error: BaseException) -> str:
    """The gist of a ``torch.load(weights_only=True)`` / pickling error (torch's message is long)."""
    text = str(error)
    found = re.search(r"WeightsUnpickler error: (.*?\.)(?:\s|$)", text)
    reason = found.group(1) if found else (text.strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {reason}"


def _check_extra(extra: dict[str, Any]) -> None:
    """Raise ``ValueError`` unless ``extra`` survives ``torch.save`` + ``torch.load(weights_only=True)``."""
    buf = io.BytesIO()
    try:
        torch.save(extra, buf)
    except (pickle.PickleError, TypeError, AttributeError, ValueError, RuntimeError) as e:
        raise ValueError(
            f"extra: cannot be saved ({_weights_only_reason(e)}); expected only {_EXTRA_ALLOWED}"
        ) from e
    buf.seek(0)
    try:
        torch.load(buf, map_location="cpu", weights_only=True)
    except (pickle.PickleError, TypeError, AttributeError, ValueError, RuntimeError) as e:
        raise ValueError(
            "extra: load_checkpoint (torch.load(weights_only=True)) could not load it back "
            f"({_weights_only_reason(e)}); expected only {_EXTRA_ALLOWED}"
        ) from e


def _umask() -> int:
    """The process umask (read by setting it and setting it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    *,
    epoch: int = 0,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save model/optimizer/scheduler state to ``path`` atomically; return the path.

    The payload is written to a temp file in the same directory, flushed and fsynced, then renamed
    over ``path`` with ``os.replace`` (atomic on POSIX and Windows); on any error the temp file is
    removed and an existing checkpoint at ``path`` is left untouched. The file gets the usual mode of a
    new file (``0o666`` less the process umask), not the temp file's ``0o600``. ``extra`` must hold only
    what ``torch.load(weights_only=True)`` accepts: tensors, numbers, strings, None, lists/tuples/dicts;
    anything else raises ``ValueError`` before any file is written.
    """
    if extra is not None:
        _check_extra(extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "epoch": int(epoch),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "extra": extra if extra is not None else {},
    }
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes the file 0o600; os.replace would keep that mode
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)
    return path


def load_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    *,
    map_location: str | torch.device | None = "cpu",
    strict: bool = True,
) -> dict[str, Any]:
    """Load a ``save_checkpoint`` file into ``model`` (and ``optimizer``/``scheduler`` when given) with
    ``torch.load(..., weights_only=True)``; return the payload (``epoch``, ``extra``, state dicts)."""
    payload = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or "model" not in payload:
        raise ValueError(f"path: {str(path)!r} is not a dlcore checkpoint (no 'model' entry)")
    model.load_state_dict(payload["model"], strict=strict)
    if optimizer is not None:
        if payload.get("optimizer") is None:
            raise ValueError(f"optimizer: the checkpoint {str(path)!r} holds no optimizer state")
        optimizer.load_state_dict(payload["optimizer"])
    if scheduler is not None:
        if payload.get("scheduler") is None:
            raise ValueError(f"scheduler: the checkpoint {str(path)!r} holds no scheduler state")
        scheduler.load_state_dict(payload["scheduler"])
    return payload


def _check_scheduler(scheduler: Any, optimizer: torch.optim.Optimizer) -> None:
    if scheduler is None:
        return
    if isinstance(scheduler, list | tuple | set | dict):
        raise TypeError(
            "scheduler: expected ONE learning-rate scheduler (stepped once per optimizer step); got a "
            f"{type(scheduler).__name__}. Two schedules on one optimizer overwrite each other's lr — "
            "compose them into one (e.g. torch.optim.lr_scheduler.SequentialLR or a single LambdaLR)"
        )
    if not callable(getattr(scheduler, "step", None)):
        raise TypeError(f"scheduler: expected an object with .step(); got {type(scheduler).__name__}")
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        raise ValueError(
            "scheduler: ReduceLROnPlateau is not supported: its step() needs a metric (step(val_loss)), "
            "but fit steps its scheduler once per optimizer step without one. Use a schedule driven by the "
            "step count (e.g. OneCycleLR, LambdaLR, dlcore.warmup_cosine_schedule), or run your own loop to "
            "step ReduceLROnPlateau once per epoch on the validation loss"
        )
    sched_opt = getattr(scheduler, "optimizer", None)
    if sched_opt is not None and sched_opt is not optimizer:
        raise ValueError("scheduler: it drives a different optimizer than the one passed to fit")


def _lr(optimizer: torch.optim.Optimizer) -> float:
    lr = optimizer.param_groups[0]["lr"]
    return float(lr.item() if isinstance(lr, torch.Tensor) else lr)


def _evaluate(
    trainer: MixedPrecisionTrainer,
    loader: Iterable[tuple[Any, Any]],
    loss_fn: Callable[[Any, Any], torch.Tensor],
) -> float:
    model = trainer.model
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=trainer.device)
    count = 0
    with torch.no_grad():
        for x, y in loader:
            y = _to_device(y, trainer.device)
            out = trainer.forward(x)
            with trainer.autocast():
                loss = loss_fn(out, y)
            n = len(y) if hasattr(y, "__len__") else 1
            total += loss.detach().float() * n
            count += n
    model.train(was_training)
    return float(total) / max(count, 1)


def fit(
    model: nn.Module,
    train_loader: Iterable[tuple[Any, Any]],
    *,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor] = F.cross_entropy,
    epochs: int,
    device: str | torch.device = "cpu",
    precision: str | torch.dtype = "fp32",
    scheduler: Any | None = None,
    val_loader: Iterable[tuple[Any, Any]] | None = None,
    early_stopping: EarlyStopping | None = None,
    mix: MixFn | None = None,
    checkpointing: type[nn.Module] | tuple[type[nn.Module], ...] | None = None,
    max_grad_norm: float | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> History:
    """Train ``model`` for up to ``epochs`` epochs; return a ``History``.

    Args:
        model: moved to ``device`` (in place) before training. Build ``optimizer`` over its parameters.
        train_loader: an iterable of ``(inputs, targets)`` batches, re-iterated each epoch.
        optimizer: the optimizer.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``.
        epochs: maximum number of epochs (>= 1).
        device: where to train; precision: "fp32" (default), "bf16" (CPU/GPU) or "fp16" (GPU) — see
            ``MixedPrecisionTrainer``.
        scheduler: ONE learning-rate scheduler, stepped (``scheduler.step()``, no metric) after every
            optimizer step that was taken; ``ReduceLROnPlateau`` is refused (it needs a metric).
        val_loader: batches for the validation loss (computed each epoch, under the same autocast).
        early_stopping: an ``EarlyStopping``, fed the validation loss (the train loss without a
            ``val_loader``); when it says stop, training ends (with the best weights restored if it is
            configured to).
        mix: a batch transform ``(x, y) -> (x_mixed, y_a, y_b, lam)`` such as ``MixUp`` or ``CutMix``; the
            loss becomes ``lam·loss_fn(out, y_a) + (1-lam)·loss_fn(out, y_b)``.
        checkpointing: module types to wrap with ``apply_activation_checkpointing`` (applied in place).
        max_grad_norm: clip the total gradient norm (after unscaling).
        checkpoint_path: if given, a checkpoint (model, optimizer, scheduler, epoch, history) is saved
            there atomically at the end of every epoch (after early stopping ran, so the last file holds the
            restored best weights when it stopped training).
        log: called with one line per epoch (e.g. ``print``); None = silent.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs: expected an integer >= 1; got {epochs!r}")
    _check_scheduler(scheduler, optimizer)
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise TypeError(f"early_stopping: expected an EarlyStopping; got {type(early_stopping).__name__}")
    device = torch.device(device)
    model.to(device)
    if checkpointing is not None:
        apply_activation_checkpointing(model, module_types=checkpointing)
    trainer = MixedPrecisionTrainer(
        model, optimizer, device=device, precision=precision, max_grad_norm=max_grad_norm, loss_fn=loss_fn
    )
    history = History()

    def save(epoch: int) -> None:
        if checkpoint_path is not None:
            save_checkpoint(
                checkpoint_path,
                model,
                optimizer,
                scheduler,
                epoch=epoch,
                extra={"history": history.as_dict()},
            )

    for epoch in range(epochs):
        model.train()
        total = torch.zeros((), device=device)
        batches = 0
        for x, y in train_loader:
            if mix is not None:
                x = _to_device(x, device)
                y = _to_device(y, device)
                x, y_a, y_b, lam = mix(x, y)

                def mixed(out: Any, targets: Any, lam: float = lam) -> torch.Tensor:
                    return mix_loss(loss_fn, out, targets[0], targets[1], lam)

                loss = trainer.train_step(x, (y_a, y_b), loss_fn=mixed)
            else:
                loss = trainer.train_step(x, y)
            if scheduler is not None and not trainer.last_step_skipped:
                scheduler.step()
            total += loss
            batches += 1
        if batches == 0:
            raise ValueError("train_loader: yielded no batches")
        train_loss = float(total) / batches
        history.train_loss.append(train_loss)
        history.lr.append(_lr(optimizer))
        history.optimizer_steps = trainer.optimizer_steps
        history.skipped_steps = trainer.skipped_steps
        monitored = train_loss
        line = f"epoch {epoch + 1}/{epochs}  train_loss {train_loss:.4f}"
        if val_loader is not None:
            val_loss = _evaluate(trainer, val_loader, loss_fn)
            history.val_loss.append(val_loss)
            monitored = val_loss
            line += f"  val_loss {val_loss:.4f}"
        line += f"  lr {history.lr[-1]:.3g}"
        if trainer.skipped_steps:
            line += f"  skipped_steps {trainer.skipped_steps}"
        if log is not None:
            log(line)
        stop = False
        if early_stopping is not None:
            stop = early_stopping(monitored if math.isfinite(monitored) else math.nan, model, epoch)
            history.best_epoch = early_stopping.best_epoch
        history.stopped_early = stop
        save(epoch)
        if stop:
            if log is not None:
                log(f"early stopping at epoch {epoch + 1}; best epoch {(history.best_epoch or 0) + 1}")
            break
    return history
