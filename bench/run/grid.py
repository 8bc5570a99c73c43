"""The grid: every combination of the run's axes as a ``RunConfig``, validated before any work.

``expand_grid`` turns axes (modes x precisions x checkpointing x compile modes x scenario parameters
x parallel strategies) into ``RunConfig`` s; the order is parameters outermost, then mode, precision,
checkpointing, compile (so each compiled row follows its eager twin), and the parallel strategy
innermost (so each ``none`` row, the baseline of ``scaling_efficiency``, comes just before the
parallel rows of the same configuration). A scenario
field named ``channels_last`` set to true and ``--channels-last`` are folded together (both true
when either is). Each point builds its scenario config, so a value a builder would reject fails
here (``ValueError``), in the parent.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench import results
from bench.registry import ScenarioSpec


@dataclass(frozen=True)
class RunConfig:
    """One point of the grid: everything that identifies what is measured."""

    scenario: str
    mode: str
    precision: str
    checkpointing: str
    device: str
    params: tuple[tuple[str, Any], ...]  # every config field, in dataclass order
    preset: str = "default"
    seed: int = 0
    channels_last: bool = False
    # parallel strategy and the shape of its job; "none" is one process (world_size 1)
    parallel: str = "none"
    world_size: int = 1  # ranks (nproc x nnodes), or the GPUs of one dp process
    nnodes: int = 1
    microbatches: int = 0  # pipelines only (resolved, never 0 there)
    pipeline_schedule: str = ""  # pipelines only: gpipe | 1f1b
    compile: str = "none"  # torch.compile mode (bench.compiling), "none" for eager

    @property
    def params_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def key(self) -> str:
        """``bench.results.config_key`` of this configuration (what ``--resume`` matches on)."""
        return results.config_key(
            scenario=self.scenario,
            mode=self.mode,
            precision=self.precision,
            checkpointing=self.checkpointing,
            device=self.device,
            params=self.params_dict,
            channels_last=self.channels_last,
            seed=self.seed,
            parallel=self.parallel,
            world_size=self.world_size,
            nnodes=self.nnodes,
            microbatches=self.microbatches,
            pipeline_schedule=self.pipeline_schedule,
            compile=self.compile,
        )

    @property
    def nproc_per_node(self) -> int:
        """Processes torchrun starts on each node (one for dp, which drives its GPUs from one process)."""
        return 1 if self.parallel == "dp" else max(1, self.world_size // self.nnodes)

    def label(self, varying: Sequence[str] | None = None) -> str:
        """Short human label: mode, precision, checkpointing, and the parameters in ``varying``."""
        parts = [self.mode, self.precision]
        if self.checkpointing != "none":
            parts.append(f"ckpt={self.checkpointing}")
        if self.compile != "none":
            parts.append(f"compile={self.compile}")
        p = self.params_dict
        for name in varying if varying is not None else ():
            if name in p:
                parts.append(f"{name}={p[name]}")
        if self.parallel != "none":  # e.g. "ddp(ws=2)", "pipeline(1f1b,m=4,ws=2)"; no [..]: rich markup
            shape = f"{self.pipeline_schedule},m={self.microbatches}," if self.parallel == "pipeline" else ""
            nodes = f",nodes={self.nnodes}" if self.nnodes > 1 else ""
            parts.append(f"{self.parallel}({shape}ws={self.world_size}{nodes})")
        return " ".join(parts)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RunConfig:
        """Inverse of ``to_json``."""
        return cls(
            scenario=d["scenario"],
            mode=d["mode"],
            precision=d["precision"],
            checkpointing=d["checkpointing"],
            device=d["device"],
            params=tuple(dict(d["params"]).items()),
            preset=d.get("preset", "default"),
            seed=int(d.get("seed", 0)),
            channels_last=bool(d.get("channels_last", False)),
            parallel=d.get("parallel", "none"),
            world_size=int(d.get("world_size", 1)),
            nnodes=int(d.get("nnodes", 1)),
            microbatches=int(d.get("microbatches", 0)),
            pipeline_schedule=d.get("pipeline_schedule", ""),
            compile=d.get("compile", "none"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "mode": self.mode,
            "precision": self.precision,
            "checkpointing": self.checkpointing,
            "device": self.device,
            "params": dict(self.params),
            "preset": self.preset,
            "seed": self.seed,
            "channels_last": self.channels_last,
            "parallel": self.parallel,
            "world_size": self.world_size,
            "nnodes": self.nnodes,
            "microbatches": self.microbatches,
            "pipeline_schedule": self.pipeline_schedule,
            "compile": self.compile,
        }


def expand_grid(
    spec: ScenarioSpec,
    *,
    preset: str,
    modes: Sequence[str],
    precisions: Sequence[str],
    checkpointing: Sequence[str],
    axes: Mapping[str, Sequence[Any]],
    device: str,
    seed: int = 0,
    channels_last: bool = False,
    parallel: Sequence[str] = ("none",),
    nproc: int = 1,
    nnodes: int = 1,
    microbatches: int = 0,
    pipeline_schedule: Sequence[str] = ("gpipe",),
    compile: Sequence[str] = ("none",),
) -> list[RunConfig]:
    """Every combination of the axes, each validated by building its config (ValueError if bad).

    ``parallel`` strategies other than ``none`` run ``nproc`` processes on each of ``nnodes`` nodes
    (``dp``: one process driving ``nproc`` GPUs); a pipeline gets one row per ``pipeline_schedule``
    and ``microbatches`` (0: ``auto_microbatches`` of the configuration's global batch).
    """
    names = list(axes)
    out: list[RunConfig] = []
    seen: set[str] = set()
    for values in itertools.product(*(list(axes[n]) for n in names)):
        overrides = dict(zip(names, values, strict=True))
        cfg = spec.make_config(preset, **overrides)
        params = tuple((f, getattr(cfg, f)) for f in spec.parameters())
        # A config field named channels_last and --channels-last measure the same thing: either
        # sets both, so the row's channels_last column and the config_key agree.
        cl = channels_last or getattr(cfg, "channels_last", None) is True
        if cl:
            params = tuple(
                (f, True if f == "channels_last" and isinstance(v, bool) else v) for f, v in params
            )
        batch = dict(params).get("batch_size")
        for mode, precision, ckpt, comp in itertools.product(modes, precisions, checkpointing, compile):
            for shape in _parallel_shapes(parallel, nproc, nnodes, microbatches, pipeline_schedule, batch):
                rc = RunConfig(
                    scenario=spec.name,
                    mode=mode,
                    precision=precision,
                    checkpointing=ckpt,
                    device=device,
                    params=params,
                    preset=preset,
                    seed=seed,
                    channels_last=cl,
                    compile=comp,
                    **shape,
                )
                if rc.key not in seen:
                    seen.add(rc.key)
                    out.append(rc)
    return out


def auto_microbatches(batch_size: int | None, num_stages: int) -> int:
    """``--microbatches 0``: the largest divisor of the global batch that is at most ``max(4, stages)``.

    At least as many micro-batches as stages where the batch allows it (1F1B needs that, and the
    bubble ``(p-1)/(m+p-1)`` shrinks with m), but small enough that each micro-batch keeps a few
    samples on a small batch.
    """
    if not batch_size:
        return 1
    cap = max(4, num_stages)
    return max(d for d in range(1, min(cap, batch_size) + 1) if batch_size % d == 0)


def _parallel_shapes(
    parallel: Sequence[str],
    nproc: int,
    nnodes: int,
    microbatches: int,
    schedules: Sequence[str],
    batch_size: int | None,
) -> list[dict[str, Any]]:
    """The ``RunConfig`` fields of each parallel strategy of the axis, in order."""
    out: list[dict[str, Any]] = []
    for par in parallel:
        if par == "none":
            out.append({})
        elif par == "dp":
            out.append({"parallel": "dp", "world_size": nproc, "nnodes": nnodes})
        elif par == "pipeline":
            ws = nproc * nnodes
            m = microbatches or auto_microbatches(batch_size, ws)
            for sched in schedules:
                out.append(
                    {"parallel": par, "world_size": ws, "nnodes": nnodes, "microbatches": m,
                     "pipeline_schedule": sched}
                )  # fmt: skip
        else:
            out.append({"parallel": par, "world_size": nproc * nnodes, "nnodes": nnodes})
    return out


def varying_params(configs: Sequence[RunConfig]) -> list[str]:
    """Names of the parameters that take more than one value across ``configs``."""
    if not configs:
        return []
    names = [n for n, _ in configs[0].params]
    return [n for n in names if len({repr(c.params_dict.get(n)) for c in configs}) > 1]


def config_skip_reason(spec: ScenarioSpec, cfg: RunConfig) -> str | None:
    """Why ``cfg`` is reported as ``skipped`` without running, or None."""
    if cfg.mode not in spec.modes:
        return f"scenario {spec.name!r} has no mode {cfg.mode!r} (its modes: {list(spec.modes)})"
    if cfg.mode in spec.unsupported_modes:
        return spec.unsupported_modes[cfg.mode]
    reason = skip_reason(cfg.device, cfg.mode, cfg.precision, cfg.checkpointing, cfg.compile)
    if reason is None and cfg.parallel != "none":
        reason = parallel_skip_reason(cfg)
    return reason


def _cuda_device_count() -> int:
    import torch  # only for CUDA configurations: the grid itself stays torch-free

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parallel_skip_reason(cfg: RunConfig) -> str | None:
    """Why a parallel configuration cannot run here, or None. Checked before torchrun starts.

    Forward mode: dp, ddp and fsdp are data-parallel inference (ddp communicates nothing in forward;
    fsdp all-gathers each block's parameters, as sharded inference does); a pipeline is skipped,
    its schedules being training schedules (fill and drain with backward).
    """
    p, ws = cfg.parallel, cfg.world_size
    batch = cfg.params_dict.get("batch_size")
    if not isinstance(batch, int):
        return f"parallel={p}: the scenario has no batch_size to split over ranks or micro-batches"
    is_cuda = cfg.device.startswith("cuda")
    if p == "dp":
        if not is_cuda:
            return "dp (nn.DataParallel) needs >= 2 CUDA devices in one process; the device is cpu"
        if cfg.compile != "none":
            return (
                "dp (nn.DataParallel) with compile: DataParallel copies the model to every GPU on each "
                "forward, and a copy of a module compiled in place calls the original's compiled code; "
                "use ddp"
            )
        if cfg.nnodes > 1:
            return "dp (nn.DataParallel) is one process on one node; use ddp or fsdp across nodes"
        n = _cuda_device_count()
        if ws < 2 or n < ws:
            return f"dp (nn.DataParallel) needs >= 2 CUDA devices (--nproc {ws}); {n} here"
    elif is_cuda:
        n = _cuda_device_count()
        if cfg.nproc_per_node > n:
            return f"{p} with --nproc {cfg.nproc_per_node} needs one CUDA device per process; {n} here"
    if p == "pipeline":
        m = cfg.microbatches
        if cfg.mode != "train":
            return "pipeline inference is not measured: GPipe and 1F1B train; use ddp or fsdp for inference"
        if cfg.precision == "amp-fp16":
            return "pipeline with amp-fp16: the schedule runs backward itself, so no GradScaler can scale it"
        if m < 1 or batch % m:
            return f"pipeline: the global batch_size {batch} does not split into {m} equal micro-batches"
        if cfg.pipeline_schedule == "1f1b" and m < ws:
            return f"pipeline 1f1b needs microbatches >= stages; got {m} < {ws} (raise --microbatches)"
    elif p in ("ddp", "fsdp") and batch % ws:
        return f"{p}: the global batch_size {batch} does not split evenly over {ws} ranks"
    return None


def skip_reason(
    device: str, mode: str, precision: str, checkpointing: str, compile: str = "none"
) -> str | None:
    """Why this combination cannot run here, or None. Checked before any child process starts."""
    from bench.compiling import compile_skip_reason
    from bench.registry import CHECKPOINTING, PRECISIONS

    if precision not in PRECISIONS:
        return f"precision {precision!r} unknown; expected one of {PRECISIONS}"
    if checkpointing not in CHECKPOINTING:
        return f"checkpointing {checkpointing!r} unknown; expected one of {CHECKPOINTING}"
    if precision == "amp-fp16" and not device.startswith("cuda"):
        return "amp-fp16 needs a CUDA device (fp16 autocast with GradScaler is GPU-only); use amp-bf16 on CPU"
    if checkpointing != "none" and mode != "train":
        return "activation checkpointing only changes training (it recomputes activations in backward)"
    return compile_skip_reason(device, compile)
