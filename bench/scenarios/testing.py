"""Test-only scenarios (hidden from ``dlbench list`` unless ``--all``) that exercise the runner.

- ``_linear``: one ``nn.Linear(in_features, out_features, bias=False)`` with AdamW, so memory and
  FLOPs have closed forms: params = grads = in*out*4 bytes (fp32), AdamW state = 2*params (+ one
  scalar ``step`` tensor), forward FLOPs = 2*B*in*out.
- ``_crash``: ``os.abort()`` when built (``where="build"``) or when its step runs (``where="step"``);
  ``where="never"`` is ``_linear``. Only aborts inside a runner child process (``DLBENCH_CHILD=1``);
  in-process (``--no-isolation``, or a test importing it) it raises ``RuntimeError`` instead, so
  it cannot take the caller down.
- ``_sleep``: sleeps ``seconds`` while building, to run past the runner's timeout.
- ``_oom``: raises ``torch.OutOfMemoryError`` when built (``where="build"``) or run (``"step"``).
- ``_budget``: tracked train-step bytes that are a closed form of the batch (``budget_peak_bytes``),
  for ``dlbench budget``'s exact-search test; ``oom_above`` / ``crash_above`` make every batch above
  them raise ``torch.OutOfMemoryError`` / ``os.abort()`` (a probe that fails, not one over budget).
- ``_spawn``: starts a sleeping process while building (in a session of its own with
  ``session=true``), then holds the build ``hold`` seconds: nothing may outlive the command.
- ``_busy``: each step hashes ``kib`` KiB with SHA-256 (no torch op, one thread), so its time is
  proportional to the work and steady between processes: a code change that adds work is a
  slowdown of a known size (the bisection's synthetic history plants one in ``busy_step``).
- ``_compile_probe``: two small blocks that ``--compile`` compiles, with switches for what compile
  reports: ``item`` reads a value with ``.item()`` in the middle of each block's forward (a graph
  break), ``reshape_at=N`` feeds the blocks one sample fewer from the N-th call of the model on (a
  shape change between steps: a recompile). Its top-level forward sleeps 2 ms (outside the compiled
  blocks), so a step never counts as fast and ``time_step`` warms up exactly ``warmup_iters`` calls:
  with ``warmup_iters=1``, call 1 is the cold start, call 2 the warm-up and call 3 the first timed step.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

import torch
from torch import nn

from bench.registry import CHILD_ENV_VAR, BuildContext, choice, nonneg, register_scenario, size, size0
from bench.workload import Workload


def in_child_process() -> bool:
    """True inside a ``bench.run.child`` process started by the runner."""
    return os.environ.get(CHILD_ENV_VAR) == "1"


def _abort(what: str) -> None:
    if in_child_process():
        os.abort()
    raise RuntimeError(f"_crash: would os.abort() {what}; refusing outside a dlbench child process")


@dataclass(frozen=True)
class LinearConfig:
    """``nn.Linear(in_features, out_features, bias=False)`` on a (batch_size, in_features) batch."""

    batch_size: int = size(4)
    in_features: int = size(64)
    out_features: int = size(32)


def build_linear_workload(cfg: LinearConfig, ctx: BuildContext) -> Workload:
    """The ``_linear`` workload; AdamW only in train mode so forward mode holds params alone."""
    model = nn.Linear(cfg.in_features, cfg.out_features, bias=False, device=ctx.device)
    x = torch.randn(cfg.batch_size, cfg.in_features, device=ctx.device)  # (B, in)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3) if ctx.mode == "train" else None
    return Workload(
        model=model,
        inputs=(x,),
        optimizer=opt,
        items_per_step=cfg.batch_size,
        unit="samples",
        extra={"n_params": cfg.in_features * cfg.out_features},
    )


_TINY: dict[str, dict[str, object]] = {"tiny": {}, "default": {}}


@register_scenario(
    "_linear", config=LinearConfig, presets=_TINY, test_only=True, description="test: one nn.Linear"
)
def build_linear(cfg: LinearConfig, ctx: BuildContext) -> Workload:
    """One bias-free ``nn.Linear`` with AdamW: closed-form memory and FLOPs."""
    return build_linear_workload(cfg, ctx)


@dataclass(frozen=True)
class CrashConfig:
    """Where to abort: "build", "step" or "never"."""

    batch_size: int = size(2)
    where: str = choice("build", ("build", "step", "never"))


@register_scenario(
    "_crash", config=CrashConfig, presets=_TINY, test_only=True, description="test: os.abort() in the child"
)
def build_crash(cfg: CrashConfig, ctx: BuildContext) -> Workload:
    """Abort the child process while building or running; ``where="never"`` runs ``_linear``."""
    if cfg.where == "build":
        _abort("while building")
    w = build_linear_workload(LinearConfig(batch_size=cfg.batch_size), ctx)
    if cfg.where == "step":

        def crash_step() -> None:
            _abort("while running a step")

        w.custom_step = crash_step
    return w


@dataclass(frozen=True)
class SleepConfig:
    """Sleep ``seconds`` while building (then run ``_linear``)."""

    batch_size: int = size(1)
    seconds: float = nonneg(60.0)


@register_scenario(
    "_sleep", config=SleepConfig, presets=_TINY, test_only=True, description="test: sleeps past the timeout"
)
def build_sleep(cfg: SleepConfig, ctx: BuildContext) -> Workload:
    """Sleep, then build ``_linear``: with ``seconds`` above the runner's timeout this times out."""
    time.sleep(cfg.seconds)
    return build_linear_workload(LinearConfig(batch_size=cfg.batch_size), ctx)


@dataclass(frozen=True)
class OomConfig:
    """Where to raise ``torch.OutOfMemoryError``: "build" or "step"."""

    batch_size: int = size(2)
    where: str = choice("build", ("build", "step"))


def _raise_oom() -> None:
    raise torch.OutOfMemoryError("_oom: simulated out of memory (tried to allocate 1.00 TiB)")


@register_scenario(
    "_oom", config=OomConfig, presets=_TINY, test_only=True, description="test: raises OutOfMemoryError"
)
def build_oom(cfg: OomConfig, ctx: BuildContext) -> Workload:
    """Raise ``torch.OutOfMemoryError`` while building or on every step."""
    if cfg.where == "build":
        _raise_oom()
    w = build_linear_workload(LinearConfig(batch_size=cfg.batch_size), ctx)
    w.custom_step = _raise_oom
    return w


@dataclass(frozen=True)
class SpawnConfig:
    """Start a process that sleeps, then hold the build for ``hold`` seconds (then run ``_linear``)."""

    batch_size: int = size(1)
    hold: float = nonneg(60.0)
    session: bool = False  # the spawned process leaves the builder's process group (setsid)


@register_scenario(
    "_spawn",
    config=SpawnConfig,
    presets=_TINY,
    test_only=True,
    description="test: starts a process of its own while building",
)
def build_spawn(cfg: SpawnConfig, ctx: BuildContext) -> Workload:
    """Code under test that starts a process: it must not outlive the command that measures it.

    Inside a dlbench child process only (elsewhere it raises): starts ``python -c 'sleep 600'``
    (in a session of its own with ``session=true``, out of reach of a process-group kill), appends
    its pid to the file named by ``DLBENCH_TEST_SPAWN_FILE`` if set, then sleeps ``hold`` seconds.
    """
    if not in_child_process():
        raise RuntimeError("_spawn: starts processes only inside a dlbench child process; refusing here")
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=cfg.session
    )
    where = os.environ.get("DLBENCH_TEST_SPAWN_FILE")
    if where:
        with open(where, "a", encoding="utf-8") as f:
            f.write(f"{proc.pid}\n")
    time.sleep(cfg.hold)
    return build_linear_workload(LinearConfig(batch_size=cfg.batch_size), ctx)


@dataclass(frozen=True)
class BusyConfig:
    """SHA-256 of ``kib`` KiB per step (about 0.6 ms per MiB on a laptop core)."""

    batch_size: int = size(1)
    kib: int = size(2048)


def busy_step(data: memoryview) -> bytes:
    """One step of ``_busy``: the work itself (``bench.micro.bisect_demo`` plants a slowdown here)."""
    return hashlib.sha256(data).digest()


@register_scenario(
    "_busy", config=BusyConfig, presets=_TINY, test_only=True, description="test: fixed work, one thread"
)
def build_busy(cfg: BusyConfig, ctx: BuildContext) -> Workload:
    """SHA-256 of ``kib`` KiB per step (a ``_linear`` model is built, unused).

    Hashing runs in C on one thread, so its time is proportional to the bytes and steady between
    processes: the per-process medians of six processes agreed within 2 % here, where a pure-Python
    loop's differed by up to 28 % (memory layout), which one worker pair would read as a change.
    """
    w = build_linear_workload(LinearConfig(batch_size=cfg.batch_size), ctx)
    data = memoryview(bytes(range(256)) * (4 * cfg.kib))  # 1 KiB per 4 repeats of 256 bytes

    def step() -> None:
        busy_step(data)

    w.custom_step = step
    return w


@dataclass(frozen=True)
class CompileProbeConfig:
    """Two ``ProbeBlock`` s of ``width`` on (batch_size, width); see the module docstring."""

    batch_size: int = size(4)
    width: int = size(16)
    item: bool = False  # .item() mid-forward: a graph break in each compiled block
    reshape_at: int = nonneg(0)  # from this call of the model on, one sample fewer (0: never)


class ProbeBlock(nn.Module):
    """Linear, GELU, Linear with a residual; ``item=True`` logs a norm with ``.item()`` on the way."""

    def __init__(self, width: int, item: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, 2 * width)
        self.fc2 = nn.Linear(2 * width, width)
        self.item = item
        self.seen = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.gelu(self.fc1(x))
        if self.item:
            self.seen = float(h.norm().item())  # a logged scalar: dynamo breaks the graph here
        return x + self.fc2(h)


class ProbeModel(nn.Module):
    """An input projection, then two ``ProbeBlock`` s; counts its calls, and from call ``reshape_at`` on
    drops the last sample. The projection (like an embedding) makes every block's input require grad
    in training, so both blocks share one compiled graph (a raw batch into the first block would
    recompile the second, for ``requires_grad``)."""

    def __init__(self, cfg: CompileProbeConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(cfg.width, cfg.width)
        self.blocks = nn.ModuleList(ProbeBlock(cfg.width, cfg.item) for _ in range(2))
        self.reshape_at = cfg.reshape_at
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        time.sleep(0.002)  # eager, outside the compiled blocks: a step is never "fast" (no bursts)
        if self.reshape_at and self.calls >= self.reshape_at:
            x = x[:-1]  # (B, W) -> (B-1, W): the compiled blocks see a new shape
        x = self.proj(x)
        for block in self.blocks:
            x = block(x)
        return x


@register_scenario(
    "_compile_probe",
    config=CompileProbeConfig,
    presets=_TINY,
    test_only=True,
    description="test: blocks with a graph break or a shape change, for --compile",
)
def build_compile_probe(cfg: CompileProbeConfig, ctx: BuildContext) -> Workload:
    """``ProbeModel`` on a (batch_size, width) batch, AdamW in train mode; blocks are ``ProbeBlock``."""
    model = ProbeModel(cfg).to(ctx.device)
    x = torch.randn(cfg.batch_size, cfg.width, device=ctx.device)  # (B, W)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3) if ctx.mode == "train" else None
    return Workload(
        model=model, inputs=(x,), optimizer=opt, items_per_step=cfg.batch_size, blocks=(ProbeBlock,)
    )


@dataclass(frozen=True)
class BudgetConfig:
    """A bias-free ``nn.Linear`` with fused AdamW and a sum loss; failures above a batch when asked."""

    batch_size: int = size(1)
    in_features: int = size(8)
    out_features: int = size(16)
    oom_above: int = size0(0)  # 0: never
    crash_above: int = size0(0)  # 0: never


def budget_peak_bytes(batch: int, in_features: int, out_features: int) -> int:
    """The tracked peak (``MemTracker``, every phase, fp32) of one ``_budget`` train step at ``batch``.

    P = 4 in out (the weight), S = 2P + 4 (fused AdamW: exp_avg, exp_avg_sq, a 0-dim ``step``):

    - forward holds the weight, the state, the batch (4 B in), the output (4 B out), the 0-dim loss:
      ``P + S + 4 B (in + out) + 4``;
    - backward holds the weight, the state, the batch, the loss, the sum's 0-dim gradient (expanded,
      never materialised) and the weight's gradient (the output is gone: ``sum`` saves nothing):
      ``2P + S + 4 B in + 8``;
    - the optimizer step (fused, in place) holds the weight, its gradient, the state, the batch:
      ``2P + S + 4 B in``, never above backward.
    """
    p = 4 * in_features * out_features
    s = 2 * p + 4
    return max(p + s + 4 * batch * (in_features + out_features) + 4, 2 * p + s + 4 * batch * in_features + 8)


@register_scenario(
    "_budget",
    config=BudgetConfig,
    presets=_TINY,
    test_only=True,
    description="test: tracked bytes a closed form of the batch (dlbench budget)",
)
def build_budget(cfg: BudgetConfig, ctx: BuildContext) -> Workload:
    """A bias-free ``nn.Linear`` with fused AdamW and ``sum`` as the loss: memory in closed form."""
    if cfg.crash_above and cfg.batch_size > cfg.crash_above:
        _abort(f"at batch {cfg.batch_size} > crash_above {cfg.crash_above}")
    if cfg.oom_above and cfg.batch_size > cfg.oom_above:
        raise torch.OutOfMemoryError(f"_budget: simulated out of memory at batch {cfg.batch_size}")
    model = nn.Linear(cfg.in_features, cfg.out_features, bias=False, device=ctx.device)
    x = torch.randn(cfg.batch_size, cfg.in_features, device=ctx.device)  # (B, in)
    train = ctx.mode == "train"
    return Workload(
        model=model,
        inputs=(x,),
        loss_fn=lambda out: out.sum(),  # saves nothing for backward
        optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True) if train else None,
        items_per_step=cfg.batch_size,
    )
