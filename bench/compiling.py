"""``torch.compile`` as a technique applied from outside the model: what is compiled, and in which slot.

The slot (``bench.workload.make_step``, and ``bench.run.parallel.build_parallel_step`` for a rank):
activation checkpointing, then compile, then DDP / FSDP / pipeline, then the precision (autocast at
call time), as torchtitan's ``parallelize_llama`` orders them. Checkpointing comes first so that each
compiled block holds its own recomputation (dynamo traces ``torch.utils.checkpoint`` as one
higher-order op); the data-parallel wrappers come last, so that DDP's gradient hooks and FSDP2's
per-block all-gathers run between compiled regions, never inside one.

What is compiled (``apply_compile``):

* **Each repeated block, in place**: every instance of ``Workload.blocks`` (the scenario's, or the
  blocks detected in a model of your own) gets its ``forward`` compiled (``torch.compile(mode=...)``,
  set on the instance; its hooks stay outside: ``_compile_forward``). Per block rather than the
  whole model, because:

  - identical blocks share one compiled graph. Dynamo inlines nn modules and passes their
    parameters as graph inputs, so a block's code is traced and compiled once and serves every
    instance: a 12-layer GPT-2 compiles one layer, not twelve (minutes on a CPU);
  - block boundaries are where the later techniques act: FSDP's per-block groups, DDP's gradient
    all-reduce (each block's backward is its own autograd node, so one block's all-reduce overlaps
    the next one's backward; a whole-model graph would hand every gradient over at its very end), a
    pipeline's stages;
  - in place, rather than in an ``OptimizedModule`` wrapper, keeps parameter names, ``state_dict``
    keys and the optimizer's parameter references as they were, and module hooks (FSDP's,
    MemTracker's) run around the compiled forward.

  What it gives up: fusion across block boundaries, and the layers outside the blocks (embeddings,
  final norm, head) stay eager. Blocks that differ (a ResNet's stages differ in width) share the
  code but not the graph: dynamo recompiles once per variant, and ``recompiles`` counts them.
* **The whole model, in place**, when it has no repeated blocks: there is nothing to share.
* **The loss, as a compiled region of its own**, where the workload gives it as a function of the
  model's output (``Workload.loss_fn``). That is honest: the eager row computes the same loss in the
  same forward phase, so compiling it changes how it runs, not what is timed. It is not fused into
  the model's region, because the model must stay a module that DDP / FSDP wrap after compiling (the
  order above). A model that computes its own loss from labels (Hugging Face) keeps it inside its
  top-level ``forward``: compiled with it when the model is compiled whole, eager beside compiled
  blocks. The mean square dlbench falls back on for a model without a loss stays eager.
* **Not the optimizer step.** ``AdamWWithWarmup`` runs torch's fused AdamW kernel (one kernel per
  step already), and its learning rate changes every warm-up step: a compiled ``step()`` would guard
  on the Python float and recompile each step. The compiled rows measure the model's compute.

A configuration that cannot compile here is ``Unsupported`` (a ``skipped`` row with the reason):
CUDA graphs (``reduce-overhead``) off CUDA, inductor without a C++ compiler on CPU (torch's own
message), without Triton on CUDA, a scenario that times a custom step instead of a model. A
compilation that fails while the step first runs is an ``error`` row with torch's message
(``bench.run.child``). ``max-autotune`` is legal on a CPU: inductor autotunes its C++ GEMM templates;
its CUDA graphs do not apply there (the row says so).

Torch-free at import (the grid checks ``compile_skip_reason`` before any process starts).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import Unsupported
from bench.registry import COMPILE_MODES

if TYPE_CHECKING:
    from torch import nn

__all__ = ["COMPILE_MODES", "apply_compile", "check_compile", "compile_skip_reason", "inductor_cache_env"]

CUDA_GRAPH_MODES: frozenset[str] = frozenset({"reduce-overhead"})  # CUDA graphs are the point of the mode
# torch.compile's backend: inductor, whose modes --compile names. DLBENCH_COMPILE_BACKEND=aot_eager
# (read in every process, so a child or a rank sees it) runs dynamo and AOTAutograd without
# inductor's code generation: the same graphs, breaks and recompiles in seconds instead of minutes,
# for debugging and for the tests that check those counters; the row's extra.compile_backend says so.
BACKEND_ENV = "DLBENCH_COMPILE_BACKEND"
BACKEND: Any = os.environ.get(BACKEND_ENV, "").strip() or "inductor"


def compile_skip_reason(device: str, compile: str) -> str | None:
    """Why ``compile`` cannot run on ``device`` (torch-free, checked before any process starts), or None."""
    if compile not in COMPILE_MODES:
        return f"compile {compile!r} unknown; expected one of {COMPILE_MODES}"
    if compile in CUDA_GRAPH_MODES and not device.startswith("cuda"):
        return (
            f"compile={compile} replays the step as CUDA graphs, which need a CUDA device; the device is "
            f"{device} (use default, max-autotune or max-autotune-no-cudagraphs)"
        )
    return None


def inductor_cache_env(compile: str, folder: Path | str) -> dict[str, str]:
    """The environment of a compiled configuration's process: inductor's caches in ``folder/inductor``.

    ``folder`` is the one the runner owns for that process (removed with it, also after a kill), so
    every configuration compiles from a cold cache and ``compile_time_s`` is a cold start, the same on
    every run. A ``TORCHINDUCTOR_CACHE_DIR`` the user set is kept (a warm cache, on purpose); an eager
    configuration gets nothing.
    """
    if compile == "none" or _user_cache_dir():
        return {}
    return {"TORCHINDUCTOR_CACHE_DIR": str(Path(folder) / "inductor")}


def _user_cache_dir() -> str | None:
    """``TORCHINDUCTOR_CACHE_DIR`` when the user set it. torch writes its default into the variable
    the first time it looks the folder up, so a value equal to torch's default counts as not set."""
    given = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not given:
        return None
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    return None if os.path.abspath(given) == os.path.abspath(default_cache_dir()) else given


def check_compile(device: str, compile: str) -> None:
    """``Unsupported`` with torch's own message when inductor cannot compile for ``device`` here."""
    reason = compile_skip_reason(device, compile)
    if reason is not None:
        raise Unsupported(reason)
    if BACKEND != "inductor":
        return
    if device.startswith("cuda"):
        from torch.utils._triton import has_triton

        if not has_triton():
            raise Unsupported(f"compile={compile}: inductor needs Triton on CUDA, and it is not installed")
        return
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception as exc:  # torch._inductor.exc.InvalidCxxCompiler: no working C++ compiler
        raise Unsupported(
            f"compile={compile}: inductor needs a C++ compiler on CPU: {type(exc).__name__}: {exc}"
        ) from None


def _outermost(model: nn.Module, types: tuple[type[nn.Module], ...]) -> list[nn.Module]:
    """Instances of ``types`` in ``model``, outermost only (a block inside a block is compiled with it)."""
    found: list[nn.Module] = []

    def visit(m: nn.Module) -> None:
        if isinstance(m, types):
            found.append(m)
            return
        for child in m.children():
            visit(child)

    visit(model)
    return found


def _compile_forward(module: nn.Module, compile: str) -> None:
    """Compile ``module``'s forward in place: an instance attribute, as checkpointing sets one.

    Its ``forward`` (the checkpointed one, when checkpointing came first) rather than the whole call
    (``nn.Module.compile`` compiles ``_call_impl``, hooks included): module hooks then run outside
    the compiled region, where FSDP2 expects its per-block all-gathers (dynamo skips FSDP hooks, which
    would break the graph twice a block) and where MemTracker's hooks see the block.
    """
    import torch

    module.forward = torch.compile(module.forward, backend=BACKEND, mode=compile)  # type: ignore[method-assign]


def apply_compile(workload: Any, compile: str, *, device: str, whole: str = "whole model") -> list[str]:
    """Compile ``workload``'s blocks (or its whole model) and its loss, in place; see the module docstring.

    ``workload`` is a ``bench.workload.Workload``. Returns what was compiled, for the row
    (``["TransformerEncoderLayer x2", "loss"]``); nothing runs or compiles yet (torch compiles lazily,
    at the first call: ``bench.harness.compile_stats`` times that cold start).
    """
    import torch

    if workload.custom_step is not None:
        raise Unsupported(
            f"compile={compile}: the scenario times a custom step ({workload.custom_phase_name}), not a "
            "model to compile"
        )
    check_compile(device, compile)
    regions: list[str] = []
    blocks = _outermost(workload.model, tuple(workload.blocks)) if workload.blocks else []
    if blocks:
        # blocks that differ (a ResNet's stages in width, a first block with a downsample) each need
        # their own graph: dynamo recompiles the shared code once per variant (``recompiles`` counts
        # them). Its default limit (8 per code object) would leave the rest eager, silently: raise it
        # to cover every instance (twice: requires_grad of a first block's input can differ too)
        config = torch._dynamo.config
        config.recompile_limit = max(config.recompile_limit, 2 * len(blocks))
        for block in blocks:
            _compile_forward(block, compile)
        counts = Counter(type(b).__name__ for b in blocks)
        regions += [f"{name} x{n}" for name, n in counts.items()]
    else:
        _compile_forward(workload.model, compile)
        regions.append(f"{type(workload.model).__name__} ({whole})")
    if workload.loss_fn is not None:
        workload.loss_fn = torch.compile(workload.loss_fn, backend=BACKEND, mode=compile)
        regions.append("loss")
    if BACKEND != "inductor":
        workload.extra["compile_backend"] = getattr(BACKEND, "__name__", str(BACKEND))
    if compile == "max-autotune" and not device.startswith("cuda"):
        workload.extra["compile_note"] = (
            f"max-autotune on {device}: inductor autotunes its C++ GEMM templates; the mode's CUDA graphs "
            "need CUDA and do not apply (as max-autotune-no-cudagraphs)"
        )
    return regions
