"""Activation checkpointing applied from outside the model.

Method: Chen et al., "Training Deep Nets with Sublinear Memory Cost" (2016), arXiv:1604.06174.
A checkpointed module keeps only its inputs during the forward pass and recomputes its internal
activations during backward: peak activation memory falls, and each training step costs about one
extra forward of the checkpointed modules.

We use the non-re-entrant implementation, ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``.
The re-entrant one (the seed's) gives the parameters inside a checkpointed block **no gradients** when
the block's input does not require grad (e.g. the first block, fed raw data), does not support keyword
arguments, and ignores ``torch.autograd.grad(inputs=...)``.

How it is applied (a design choice): instead of replacing each chosen submodule with a wrapper module
(which renames parameters to ``..._checkpoint_wrapped_module.weight`` and breaks ``isinstance`` checks),
we patch the chosen module *instance*'s ``forward`` with a small callable object that runs the
class's ``forward`` under ``checkpoint``. Consequences:

- parameter names and ``state_dict`` keys are unchanged, so checkpoints load into plain models and back;
- ``isinstance(block, TransformerEncoderLayer)`` still holds, and module hooks still run (outside the
  recomputation, so they fire once per forward);
- ``copy.deepcopy`` and ``pickle`` of the model keep the checkpointing (the callable holds the module,
  and both copy and pickle follow the reference cycle through their memo);
- keyword arguments (``src_key_padding_mask=...``) pass through; when autograd is off (inference,
  ``torch.no_grad()``) the module runs its plain forward, since there is nothing to save.

BatchNorm: a plain ``checkpoint`` runs a training-mode BatchNorm twice per step, so its running
statistics take two momentum updates (and ``num_batches_tracked`` counts 2) per batch. We snapshot
the running buffers of the BatchNorm layers inside a checkpointed module before the recomputation
and put them back after it, so running statistics match the un-checkpointed model exactly.

When a chosen module contains another chosen module, only the outermost one is checkpointed:
nesting would recompute the inner module twice in backward for no memory gain.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

__all__ = ["apply_activation_checkpointing", "is_activation_checkpointed", "remove_activation_checkpointing"]


@contextlib.contextmanager
def _running_stats_restored(module: nn.Module) -> Iterator[None]:
    """Undo the running-statistics updates that BatchNorm layers in ``module`` make inside the block."""
    saved = [
        (buf, buf.clone())
        for m in module.modules()
        if isinstance(m, _BatchNorm) and m.training and m.track_running_stats
        for buf in (m.running_mean, m.running_var, m.num_batches_tracked)
        if buf is not None
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


class _CheckpointedForward:
    """Replaces ``module.forward`` on one instance: runs ``type(module).forward`` under checkpoint."""

    def __init__(self, module: nn.Module, preserve_rng_state: bool) -> None:
        self.module = module
        self.preserve_rng_state = preserve_rng_state

    def _plain_forward(self, *args: Any, **kwargs: Any) -> Any:
        return type(self.module).forward(self.module, *args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return self._plain_forward(*args, **kwargs)
        if not any(
            isinstance(m, _BatchNorm) and m.training and m.track_running_stats for m in self.module.modules()
        ):
            # nothing to restore after the recomputation: checkpoint the plain forward, which has no
            # Python side effect, so torch.compile traces the checkpoint as one op (the counter below
            # mutates a variable outside the checkpointed function, and dynamo breaks the graph there)
            return checkpoint(
                self._plain_forward,
                *args,
                use_reentrant=False,
                preserve_rng_state=self.preserve_rng_state,
                **kwargs,
            )
        calls = 0

        def run(*a: Any, **k: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:  # the forward pass
                return self._plain_forward(*a, **k)
            with _running_stats_restored(self.module):  # the recomputation in backward
                return self._plain_forward(*a, **k)

        return checkpoint(
            run,
            *args,
            use_reentrant=False,
            preserve_rng_state=self.preserve_rng_state,
            **kwargs,
        )

    def __repr__(self) -> str:
        name = type(self.module).__name__
        return f"_CheckpointedForward({name}, preserve_rng_state={self.preserve_rng_state})"


def is_activation_checkpointed(module: nn.Module) -> bool:
    """True when ``apply_activation_checkpointing`` patched this module instance."""
    return isinstance(module.__dict__.get("forward"), _CheckpointedForward)


def apply_activation_checkpointing(
    model: nn.Module,
    module_types: type[nn.Module] | tuple[type[nn.Module], ...] | None = None,
    check_fn: Callable[[nn.Module], bool] | None = None,
    *,
    preserve_rng_state: bool = True,
) -> nn.Module:
    """Checkpoint, in place, every submodule of ``model`` that is an instance of ``module_types`` or for
    which ``check_fn(module)`` is True (either criterion selects), and return ``model``.

    Args:
        model: the model; it may itself be selected.
        module_types: a module class or a tuple of classes, e.g. ``(nn.TransformerEncoderLayer,)``.
        check_fn: a predicate on modules, for selections a type cannot express.
        preserve_rng_state: restore the RNG state before recomputation so that dropout draws the same
            mask twice (needed for exact gradients with dropout; costs an RNG state copy per block).

    Raises:
        ValueError: when neither ``module_types`` nor ``check_fn`` is given, or ``module_types`` holds
            something that is not an ``nn.Module`` subclass.

    Applying it twice is harmless: already checkpointed modules are left as they are.
    """
    if module_types is None and check_fn is None:
        raise ValueError(
            "apply_activation_checkpointing: pass module_types (an nn.Module subclass or tuple of them, "
            "e.g. (nn.TransformerEncoderLayer,)) or check_fn (a predicate module -> bool); got neither"
        )
    types: tuple[type[nn.Module], ...] = ()
    if module_types is not None:
        types = module_types if isinstance(module_types, tuple) else (module_types,)
        bad = [t for t in types if not (isinstance(t, type) and issubclass(t, nn.Module))]
        if bad or not types:
            raise ValueError(
                "module_types: expected an nn.Module subclass or a non-empty tuple of them; "
                f"got {module_types!r}"
            )

    def selected(module: nn.Module) -> bool:
        return bool((types and isinstance(module, types)) or (check_fn is not None and check_fn(module)))

    def visit(module: nn.Module) -> None:
        if is_activation_checkpointed(module):
            return
        if selected(module):
            # instance attribute shadows the class's forward; nn.Module.__call__ looks up self.forward
            module.forward = _CheckpointedForward(module, preserve_rng_state)  # type: ignore[method-assign]
            return  # outermost only: do not checkpoint inside a checkpointed module
        for child in module.children():
            visit(child)

    visit(model)
    return model


def remove_activation_checkpointing(model: nn.Module) -> nn.Module:
    """Undo ``apply_activation_checkpointing`` on every submodule of ``model``; return ``model``."""
    for module in model.modules():
        if is_activation_checkpointed(module):
            del module.forward
    return model
