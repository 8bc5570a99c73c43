"""Profile one configuration of a scenario, named with ``dlbench run``'s options.

    plan = plan_profile("attention", preset="tiny", precision="amp-bf16", out_dir="reports/att")
    res = plan.run()          # bench.profile.trace.ProfileResult; == profile_scenario(...)

    # the CLI's way: run options as ``dlbench run`` / ``bench.api.run`` spell them (RunRequest fields)
    plan = plan_from_run_options("attention", out_dir="reports/att", preset="tiny", amp=True)

``plan_profile`` checks everything before any work (nothing is built, nothing is written): the
scenario, preset, mode, device, the precision / checkpointing / compile combination (``skip_reason``), every
parameter (parsed to the config field's type, range-checked by the config), the profiler schedule
(each count capped: ``SCHEDULE_LIMITS``) and the output folder (``check_out_dir``: a new or empty
folder; one that already holds a profile only with ``overwrite``, and then replaced whole; never one
holding other files). Bad input raises ``bench.errors.UsageError`` (a ``ValueError``) naming the
argument; the CLI turns it into exit 2.

Running (``ProfilePlan.run``) never leaves a partial profile: the traces are written into a
staging folder beside the target (``.<name>.dlbench-partial-<pid>-<random>``, registered with an
owned entry of ``bench.owned``), which is renamed into place only once the whole profile is
written; an error, a timeout, SIGINT or SIGTERM removes it (and a guardian, or the next dlbench
command, if dlbench is killed outright). A profile in this process's configuration runs in a child
process (``bench.profile.child``) under ``timeout_s``, like a parallel profile's job.

``plan_from_run_options`` parses the options through ``bench.run.request.RunRequest`` (the same
parsing and constraints as ``dlbench run``), then asks for one configuration: one mode, one
precision (``amp=True`` means the device's preferred AMP, as in ``dlbench run``), one checkpointing
value, one value per parameter, and one ``parallel`` strategy (one pipeline schedule).

A parallel plan (``parallel`` ddp / fsdp / pipeline / dp, ``nproc`` ranks on one node) runs as one
torchrun job through ``dlbench run``'s launcher (``bench.run.launch.profile_parallel``: same
rendezvous, ``timeout_s`` per job, failed or hung ranks killed): every rank builds its step and
applies the strategy exactly as for timing (``bench.run.parallel.build_parallel_step``), then runs
``profile_step(step, out_dir=out_dir, rank=r)``. ``out_dir`` gets one TensorBoard trace per rank
(``rank<r>.<time_ns>.pt.trace.json``, worker ``rank<r>`` in torch-tb-profiler) and each rank's
tables and ``summary.json`` in ``out_dir/rank<r>/``. ``run()`` then returns a
``ParallelProfileResult``; a rank that fails or a job past the timeout raises
``ParallelProfileError`` (one line: which rank, why), with nothing of the job left running.

The build is exactly ``dlbench run``'s: ``bench.workload.build_step`` (seeded build, channels_last,
checkpointing and torch.compile applied from outside, the precision's autocast) under
``cuda_device_current``. A compiled configuration runs its first step (the compilation) before the
profiler starts, so the trace shows compiled steps, not the compiler.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.owned import PARTIAL_TAG
from bench.profile.trace import SCHEDULE_DEFAULTS, ProfileResult, check_schedule, profile_step
from bench.registry import BuildContext, ScenarioSpec, get_scenario

__all__ = [
    "PROFILE_RUN_OPTIONS",
    "ParallelProfileError",
    "ParallelProfileResult",
    "ProfileError",
    "ProfilePlan",
    "check_out_dir",
    "holds_profile",
    "plan_from_run_options",
    "plan_profile",
    "profile_scenario",
]

# the RunRequest fields that mean something for one profiled configuration
PROFILE_RUN_OPTIONS: tuple[str, ...] = (
    "preset",
    "modes",
    "precisions",
    "amp",
    "checkpointing",
    "compile",
    "params",
    "device",
    "seed",
    "channels_last",
    "parallel",
    "nproc",
    "microbatches",
    "pipeline_schedule",
    "timeout_s",
    "oversubscribe",
)


class ProfileError(RuntimeError):
    """A profile gave no whole result: ``status`` (error, oom, timeout, skipped) and why."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(f"{status}: {reason}" if reason else status)
        self.status = status
        self.reason = reason


class ParallelProfileError(ProfileError):
    """A parallel profiling job gave no whole result (a rank failed, or the job ran past its timeout)."""


@dataclass
class ParallelProfileResult:
    """What every rank of a parallel profile wrote (``ranks``: one record per rank, in rank order).

    Each record holds the rank's paths (``tensorboard_trace``, ``chrome_trace``, ``summary_json``,
    ``top_ops_csv``, ``top_ops_md``, ``memory_timeline``, ...; str or None), ``artifacts_dir``
    (``out_dir/rank<r>``), ``worker_name`` (``rank<r>``) and ``summary`` (the summary.json contract).
    """

    out_dir: Path  # the TensorBoard logdir, shared by every rank's trace
    parallel: str
    world_size: int
    ranks: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class ProfilePlan:
    """One checked configuration to profile; ``run()`` builds it and profiles it."""

    spec: ScenarioSpec
    config: Any  # the scenario's config dataclass, preset and parameters applied
    ctx: BuildContext
    precision: str
    checkpointing: str
    out_dir: Path
    profile_kw: dict[str, Any] = field(default_factory=dict)  # profile_step's keywords
    parallel: Any = None  # bench.run.grid.RunConfig of a parallel plan; None: one process
    options: Any = None  # bench.run.request.RunRequest of a parallel plan (timeout_s, rendezvous)
    overrides: dict[str, Any] = field(default_factory=dict)  # the parameters given (parsed)
    preset: str = "default"
    timeout_s: float = 600.0  # the whole profile, in its child process (or the parallel job)
    isolation: bool = True  # False: profile in this process (no timeout; tests, debugging)
    overwrite: bool = False  # replace a folder that already holds a profile
    compile: str = "none"  # torch.compile mode (bench.compiling)

    @property
    def device(self) -> str:
        return self.ctx.device

    @property
    def mode(self) -> str:
        return self.ctx.mode

    def describe(self) -> str:
        """``attention train amp-bf16 ckpt=none on cpu``: the configuration in one line."""
        text = f"{self.spec.name} {self.mode} {self.precision} ckpt={self.checkpointing}"
        text += (
            f" compile={self.compile} on {self.device}" if self.compile != "none" else f" on {self.device}"
        )
        if self.parallel is not None:
            cfg = self.parallel
            shape = f"{cfg.pipeline_schedule},m={cfg.microbatches}," if cfg.parallel == "pipeline" else ""
            text += f", {cfg.parallel}({shape}ws={cfg.world_size})"
        return text

    def run(self) -> ProfileResult | ParallelProfileResult:
        """Profile in a child process (``ProfileResult``), or as a torchrun job when the plan is
        parallel (``ParallelProfileResult``); the folder appears only when the profile is whole.

        ``ProfileError`` (a ``ParallelProfileError``) when the child or a rank fails or runs past
        ``timeout_s``; nothing of it is left, neither files nor processes.
        """
        from bench.owned import owned

        final = self.out_dir.resolve()
        final.parent.mkdir(parents=True, exist_ok=True)
        with owned("profile", guard=True) as own:
            staging = final.parent / f".{final.name}{PARTIAL_TAG}{os.getpid()}-{own.name[-8:]}"
            own.register_partial(staging)
            staging.mkdir()
            if self.parallel is not None:
                res: ProfileResult | ParallelProfileResult = self._run_parallel(staging)
            elif self.isolation:
                res = self._run_child(staging, own)
            else:
                res = self.profile_here(staging)
            _install(staging, final, overwrite=self.overwrite)
            own.forget_partial(staging)
        if isinstance(res, ParallelProfileResult):
            return _moved_parallel(res, staging, final)
        return res.moved(staging, final)

    def profile_here(self, out_dir: Path) -> ProfileResult:
        """Build the step in this process and profile it into ``out_dir`` (no timeout, no staging)."""
        from bench.run.measure import cuda_device_current
        from bench.workload import build_step

        with cuda_device_current(self.device):
            _, step = build_step(
                self.spec,
                self.config,
                self.ctx,
                precision=self.precision,
                checkpointing=self.checkpointing,
                compile=self.compile,
            )
            if self.compile != "none":  # compile before the profiler starts: the trace is of compiled steps
                step.run()
            return profile_step(step, device=self.device, out_dir=out_dir, **self.profile_kw)

    def child_request(self, out_dir: Path) -> dict[str, Any]:
        """What ``bench.profile.child`` needs to plan the same profile again (JSON-ready)."""
        return {
            "scenario": self.spec.name,
            "preset": self.preset,
            "mode": self.mode,
            "precision": self.precision,
            "checkpointing": self.checkpointing,
            "compile": self.compile,
            "params": dict(self.overrides),
            "device": self.device,
            "seed": self.ctx.seed,
            "channels_last": self.ctx.channels_last,
            "out_dir": str(out_dir),
            "profile_kw": {k: v for k, v in self.profile_kw.items() if k != "scenario"},
        }

    def _run_child(self, out_dir: Path, own: Any) -> ProfileResult:
        from bench.profile.child import run_child

        return run_child(self.child_request(out_dir), own, timeout_s=self.timeout_s, compile=self.compile)

    def _run_parallel(self, out_dir: Path) -> ParallelProfileResult:
        from bench.run.launch import profile_parallel

        outcome = profile_parallel(self.parallel, self.options, out_dir=out_dir, profile_kw=self.profile_kw)
        if outcome.status != "ok":
            raise ParallelProfileError(outcome.status, outcome.reason)
        return ParallelProfileResult(
            out_dir=out_dir,
            parallel=self.parallel.parallel,
            world_size=self.parallel.world_size,
            ranks=list(outcome.measurement),
            notes=[n for n in outcome.reason.split("; ") if n],
            elapsed_s=outcome.elapsed_s,
        )


def _moved_parallel(res: ParallelProfileResult, old: Path, new: Path) -> ParallelProfileResult:
    """``res`` with every path under ``old`` (the staging folder) moved under ``new``."""
    from bench.profile.trace import relocate

    ranks = []
    for rank in res.ranks:
        ranks.append(
            {k: str(relocate(Path(v), old, new)) if isinstance(v, str) and v.startswith("/") else v
             for k, v in rank.items()}
        )  # fmt: skip
    return dataclasses.replace(res, out_dir=new, ranks=ranks)


def _install(staging: Path, final: Path, *, overwrite: bool) -> None:
    """Put the finished profile ``staging`` at ``final``: a new name, an empty folder, or (with
    ``overwrite``) a previous profile, which is moved aside and removed once the new one is in place."""
    import shutil

    from bench.signals import shielded

    with shielded():
        aside = None
        if final.is_dir() and not final.is_symlink():
            if any(final.iterdir()):
                if not overwrite or not holds_profile(final):  # checked at plan time; re-checked here
                    raise UsageError(f"--out: {final} is no longer empty; the new profile was not put there")
                aside = final.parent / f".{final.name}{PARTIAL_TAG}old-{os.getpid()}"
                os.rename(final, aside)
            else:
                final.rmdir()
        os.rename(staging, final)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)


def holds_profile(folder: Path) -> bool:
    """True when ``folder`` holds a dlbench profile: a TensorBoard trace or a ``summary.json``."""
    if any(folder.glob("*.pt.trace.json*")) or (folder / "summary.json").is_file():
        return True
    return any(folder.glob("rank*/summary.json"))


def check_out_dir(
    out_dir: str | os.PathLike[str], *, label: str = "out_dir", overwrite: bool = False
) -> Path:
    """``out_dir`` as a Path when a profile can be put there; ``UsageError`` otherwise.

    Allowed: a new folder (its nearest existing parent a writable folder), an empty folder, or,
    with ``overwrite``, a folder that holds a profile (``holds_profile``), replaced whole once the
    new profile is written. Refused: a file, a symbolic link, a folder holding a profile without
    ``overwrite`` (old and new traces would mix), a folder holding anything else.
    """
    path = Path(out_dir).expanduser()
    if not str(out_dir).strip():
        raise UsageError(f"{label}: an empty path; give a folder")
    if path.is_symlink():
        raise UsageError(f"{label}: {path} is a symbolic link; give the folder's own path")
    if path.exists() and not path.is_dir():
        raise UsageError(f"{label}: {path} is a file; give a folder")
    if path.is_dir() and any(path.iterdir()):
        if not holds_profile(path):
            raise UsageError(
                f"{label}: {path} holds files that are not a dlbench profile; give a new or empty folder"
            )
        if not overwrite:
            raise UsageError(
                f"{label}: {path} already holds a profile (its traces would mix with the new ones in "
                "TensorBoard); give a new folder, or --overwrite to replace it whole"
            )
    for parent in path.resolve().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{label}: {parent} is a file, so {path} cannot be a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UsageError(f"{label}: cannot write into {parent} (permission denied or read-only)")
            break
    return path


def plan_profile(
    scenario: str,
    *,
    preset: str = "default",
    mode: str = "train",
    precision: str = "fp32",
    checkpointing: str = "none",
    params: Mapping[str, Any] | None = None,
    device: str = "cpu",
    seed: int = 0,
    channels_last: bool = False,
    out_dir: str | os.PathLike[str],
    compile: str = "none",
    timeout_s: float = 600.0,
    isolation: bool = True,
    overwrite: bool = False,
    **profile_kw: Any,
) -> ProfilePlan:
    """Check one configuration and the profiler options; ``UsageError`` before any work.

    ``params`` values may be strings (from a CLI) or typed values; they are parsed to the config's
    field types. ``profile_kw`` goes to ``profile_step`` (``wait``, ``warmup``, ``active``,
    ``with_stack``, ``rank``, ...); ``scenario`` defaults to the scenario's name. ``timeout_s``
    bounds the whole profile (its child process); ``isolation=False`` profiles in this process;
    ``overwrite`` allows replacing a folder that already holds a profile.
    """
    from bench.run.grid import skip_reason
    from bench.run.plan import check_device

    try:
        spec = get_scenario(scenario)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if preset not in spec.presets:
        raise UsageError(f"--preset: unknown preset {preset!r}; {spec.name!r} has {sorted(spec.presets)}")
    if mode not in spec.modes:
        raise UsageError(f"mode: scenario {scenario!r} supports modes {list(spec.modes)}, not {mode!r}")
    if mode in spec.unsupported_modes:
        raise UsageError(f"mode {mode!r}: {spec.unsupported_modes[mode]}")
    device = check_device(device)
    reason = skip_reason(device, mode, precision, checkpointing, compile)
    if reason:
        raise UsageError(reason)
    schedule = {name: profile_kw.get(name, default) for name, default in SCHEDULE_DEFAULTS.items()}
    check_schedule(**schedule, rank=profile_kw.get("rank"))
    out = check_out_dir(out_dir, overwrite=overwrite)
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not 0 < timeout_s < 1e9:
        raise UsageError(f"--timeout: expected positive seconds, got {timeout_s!r}")
    try:
        overrides = {name: spec.coerce(name, value) for name, value in (params or {}).items()}
        cfg = spec.make_config(preset, **overrides)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    ctx = BuildContext(device=device, mode=mode, seed=seed, channels_last=channels_last)
    kw = dict(profile_kw)
    kw.setdefault("scenario", scenario)
    return ProfilePlan(
        spec,
        cfg,
        ctx,
        precision,
        checkpointing,
        out,
        kw,
        overrides=overrides,
        preset=preset,
        timeout_s=float(timeout_s),
        isolation=isolation,
        overwrite=overwrite,
        compile=compile,
    )


def _one(label: str, values: Any) -> Any:
    values = list(dict.fromkeys(values))
    if len(values) != 1:
        raise UsageError(
            f"{label}: dlbench profile traces one configuration; got {len(values)} values {values} "
            "(a comma list is a grid axis of `dlbench run`)"
        )
    return values[0]


def plan_from_run_options(
    scenario: str | None,
    *,
    out_dir: str | os.PathLike[str],
    profile_kw: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    **options: Any,
) -> ProfilePlan:
    """``plan_profile`` from ``dlbench run``'s options (``RunRequest`` fields; None = not given).

    ``modes`` defaults to ``"train"`` (forward, backward and optimizer phases in the trace). Any
    option that would make a grid (two modes, ``--precision fp32 --amp``, ``-p seq_len=64,128``,
    two strategies or pipeline schedules) is a ``UsageError``. One parallel strategy makes a
    parallel plan (``nproc`` ranks on this node, ``timeout_s`` for the job); a configuration that
    ``dlbench run`` would skip (an uneven batch split, 1F1B with too few micro-batches, more ranks
    than GPUs, ...) is a ``UsageError`` too.
    """
    from bench.run.plan import check_device, default_device, make_request
    from bench.workload import preferred_amp

    unknown = sorted(set(options) - set(PROFILE_RUN_OPTIONS))
    if unknown:
        raise TypeError(f"not a profile option: {unknown}; expected some of {list(PROFILE_RUN_OPTIONS)}")
    if options.get("modes") is None:
        options["modes"] = "train"
    req = make_request(scenario, **options)
    if req.scenario is None:
        raise UsageError("scenario: give a scenario name (see `dlbench list`)")
    parallel = _one("--parallel", req.parallel)
    if parallel != "none" and (req.nnodes != 1 or req.rdzv_endpoint is not None):
        raise UsageError(
            "--nnodes: dlbench profile runs a parallel profile on one node; use `dlbench run` across nodes"
        )
    device = check_device(req.device if req.device is not None else default_device())
    precisions = list(req.precisions) if req.precisions is not None else ([] if req.amp else ["fp32"])
    if req.amp:
        precisions.append(preferred_amp(device))
    params = {name: _one(name, values) for name, values in req.params.items()}
    plan = plan_profile(
        req.scenario,
        preset=req.preset,
        mode=_one("--mode", req.modes),
        precision=_one("--precision/--amp", precisions),
        checkpointing=_one("--checkpointing", req.checkpointing),
        compile=_one("--compile", req.compile),
        params=params,
        device=device,
        seed=req.seed,
        channels_last=req.channels_last,
        out_dir=out_dir,
        timeout_s=req.timeout_s,
        overwrite=overwrite,
        **dict(profile_kw or {}),
    )
    if parallel == "none":
        return plan
    from bench.run.plan import check_launch

    check_launch(req, device)
    return _parallel_plan(plan, req, parallel)


def _parallel_plan(plan: ProfilePlan, req: Any, parallel: str) -> ProfilePlan:
    """``plan`` as one torchrun job of ``parallel`` (the ``RunConfig`` ``dlbench run`` would launch)."""
    import dataclasses

    from bench.run.grid import config_skip_reason, expand_grid

    if plan.profile_kw.get("rank") is not None or plan.profile_kw.get("worker_name") is not None:
        raise UsageError(f"rank: a --parallel {parallel} profile names every rank itself (rank<r>)")
    schedule = _one("--pipeline-schedule", req.pipeline_schedule) if parallel == "pipeline" else "gpipe"
    spec = plan.spec
    axes = {name: [getattr(plan.config, name)] for name in spec.parameters()}
    try:
        (cfg,) = expand_grid(
            spec,
            preset=req.preset,
            modes=[plan.mode],
            precisions=[plan.precision],
            checkpointing=[plan.checkpointing],
            compile=[plan.compile],
            axes=axes,
            device=plan.device,
            seed=plan.ctx.seed,
            channels_last=plan.ctx.channels_last,
            parallel=[parallel],
            nproc=req.nproc,
            nnodes=1,
            microbatches=req.microbatches,
            pipeline_schedule=[schedule],
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{spec.name}: invalid configuration: {exc}") from None
    reason = config_skip_reason(spec, cfg)
    if reason:
        raise UsageError(f"--parallel {parallel}: {reason}")
    return dataclasses.replace(plan, parallel=cfg, options=req)


def profile_scenario(
    scenario: str,
    *,
    preset: str = "default",
    mode: str = "train",
    precision: str = "fp32",
    checkpointing: str = "none",
    params: Mapping[str, Any] | None = None,
    device: str = "cpu",
    seed: int = 0,
    channels_last: bool = False,
    out_dir: str | os.PathLike[str],
    **profile_kw: Any,
) -> ProfileResult:
    """Build the configuration exactly as ``dlbench run`` measures it, then ``profile_step`` it.

    ``plan_profile(...).run()``: bad input raises ``bench.errors.UsageError`` (a ``ValueError``)
    before anything is built or written.
    """
    res = plan_profile(
        scenario,
        preset=preset,
        mode=mode,
        precision=precision,
        checkpointing=checkpointing,
        params=params,
        device=device,
        seed=seed,
        channels_last=channels_last,
        out_dir=out_dir,
        **profile_kw,
    ).run()
    assert isinstance(res, ProfileResult)  # plan_profile plans one process
    return res
