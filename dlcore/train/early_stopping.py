"""Early stopping on a validation loss, restoring the best weights.

Method: Prechelt, "Early Stopping — But When?", in Neural Networks: Tricks of the Trade (1998);
the "patience" rule as in Goodfellow, Bengio & Courville, Deep Learning (2016), §7.8.

The seed kept ``model.state_dict().copy()``: a *shallow* copy whose tensors are the live parameters,
so the "best" weights changed with every optimizer step and the restore was a no-op. Here the best
state is a deep copy (``tensor.detach().clone()`` of every tensor entry, ``copy.deepcopy`` of the
non-tensor ones such as a module's ``get_extra_state()``), taken when the loss improves.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

__all__ = ["EarlyStopping"]


class EarlyStopping:
    """Stop when the validation loss has not improved by more than ``min_delta`` for ``patience`` calls.

    Call once per epoch: ``stopper(val_loss, model) -> bool`` (True = stop). An improvement is
    ``val_loss < best_loss - min_delta``; NaN never improves. When it says stop and
    ``restore_best_weights`` is set, the model is loaded with the weights of the best epoch.

    Args:
        patience: how many calls without improvement are tolerated (>= 1).
        min_delta: the smallest decrease that counts as an improvement (>= 0).
        restore_best_weights: keep a copy of the best weights and load it when stopping.
        state_device: where the best-weights copy lives (e.g. "cpu" to spare GPU memory); None = where
            the weights are.

    Attributes:
        counter: calls since the last improvement; best_loss: the best loss seen (inf before any call);
        best_epoch: 0-based index of the call (or the ``epoch`` passed) that gave ``best_loss``;
        should_stop: whether the latest call said stop; best_state: the saved weights or None.

    ``state_dict()`` / ``load_state_dict()`` save and resume all of these (the best weights too when
    ``restore_best_weights`` is set, so a resumed run can still restore them).
    """

    def __init__(
        self,
        patience: int = 7,
        min_delta: float = 0.0,
        restore_best_weights: bool = True,
        *,
        state_device: str | torch.device | None = None,
    ) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(
                f"patience: expected an integer >= 1 (epochs without improvement); got {patience!r}"
            )
        if not (isinstance(min_delta, int | float) and min_delta >= 0 and math.isfinite(min_delta)):
            raise ValueError(f"min_delta: expected a finite number >= 0; got {min_delta!r}")
        self.patience = patience
        self.min_delta = float(min_delta)
        self.restore_best_weights = restore_best_weights
        self.state_device = torch.device(state_device) if state_device is not None else None
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self.counter = 0
        self.best_loss = math.inf
        self.best_epoch: int | None = None
        self.best_state: dict[str, Any] | None = None
        self.should_stop = False
        self._calls = 0

    def _copy_state(self, state: dict[str, Any]) -> dict[str, Any]:
        # deep copy: clone every tensor (onto state_device if set), so later optimizer steps cannot change
        # the saved weights; other entries (a module's get_extra_state(), ...) are deep-copied
        out: dict[str, Any] = {}
        for k, v in state.items():
            if isinstance(v, torch.Tensor):
                v = v.detach()
                out[k] = v.to(self.state_device, copy=True) if self.state_device else v.clone()
            else:
                out[k] = copy.deepcopy(v)
        return out

    def _snapshot(self, model: nn.Module) -> dict[str, Any]:
        return self._copy_state(model.state_dict())

    def __call__(self, val_loss: float | torch.Tensor, model: nn.Module, epoch: int | None = None) -> bool:
        loss = float(val_loss)
        epoch = self._calls if epoch is None else epoch
        self._calls += 1
        if loss < self.best_loss - self.min_delta:  # False for NaN
            self.best_loss = loss
            self.best_epoch = epoch
            self.counter = 0
            if self.restore_best_weights:
                self.best_state = self._snapshot(model)
        else:
            self.counter += 1
        self.should_stop = self.counter >= self.patience
        if self.should_stop and self.restore_best_weights and self.best_state is not None:
            self.restore(model)
        return self.should_stop

    def restore(self, model: nn.Module) -> None:
        """Load the best weights into ``model`` (copied in; the saved copy stays intact)."""
        if self.best_state is None:
            raise RuntimeError(
                "EarlyStopping.restore: no best weights saved "
                "(no call improved yet, or restore_best_weights=False)"
            )
        # tensors are copied into the model's own; other entries are handed over as copies, so a
        # module that keeps (and later mutates) its extra state cannot change the saved one
        model.load_state_dict(
            {k: v if isinstance(v, torch.Tensor) else copy.deepcopy(v) for k, v in self.best_state.items()}
        )

    def state_dict(self) -> dict[str, Any]:
        """The progress so far (and the best weights when ``restore_best_weights``), for a checkpoint."""
        state: dict[str, Any] = {
            "counter": self.counter,
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "calls": self._calls,
            "should_stop": self.should_stop,
        }
        if self.restore_best_weights:
            state["best_state"] = self.best_state
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state_dict()``. The best weights are copied in (onto ``state_device`` if set);
        a state without them (saved with ``restore_best_weights=False``) leaves none to restore."""
        missing = [key for key in ("counter", "best_loss", "best_epoch", "calls") if key not in state]
        if missing:
            raise ValueError(
                f"state: lacks the keys {missing}; expected a dict from EarlyStopping.state_dict()"
            )
        best_state = state.get("best_state")
        self.counter = int(state["counter"])
        self.best_loss = float(state["best_loss"])
        self.best_epoch = None if state["best_epoch"] is None else int(state["best_epoch"])
        self._calls = int(state["calls"])
        self.should_stop = bool(state.get("should_stop", False))
        self.best_state = (
            self._copy_state(best_state) if best_state is not None and self.restore_best_weights else None
        )

    def __repr__(self) -> str:
        return (
            f"EarlyStopping(patience={self.patience}, min_delta={self.min_delta}, "
            f"restore_best_weights={self.restore_best_weights}, counter={self.counter}, "
            f"best_loss={self.best_loss:.6g}, best_epoch={self.best_epoch})"
        )
