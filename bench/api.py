"""dlbench's Python API; the ``dlbench`` CLI is a thin layer over these functions.

    import bench.api as dlbench

    summary = dlbench.run("attention", precisions=["amp-bf16"], params={"seq_len": [128, 256]})
    summary.exit_code          # 0 all ok (skipped is not a failure), 1 some error/oom/timeout
    summary.csv_path           # results/attention_cpu_torch2.13.0-cpu_<time>.csv
    df = dlbench.load_results(summary.csv_path)

    dlbench.list_scenarios()   # names, parameters with defaults, presets
    dlbench.env("cpu")         # the environment fingerprint that goes into every row

Bad input raises ``UsageError`` (a ``ValueError``) naming the problem before any work starts:
unknown scenario, preset, mode, precision or checkpointing value, unknown or mistyped parameter,
a size that is not positive (0 only where it is the field's default), a device that is not there,
an output file that cannot be written or holds another scenario's columns.

Defaults: modes forward and train; precision fp32; checkpointing none; device "cuda" when CUDA is
available, else "cpu"; a per-configuration timeout of 600 s; timing stops when the 95% CI of the
median is within +-2% or after 5 s of timed iterations.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import results
from bench.measure import MeasureOptions
from bench.registry import MODES, ScenarioSpec, get_scenario, load_scenarios
from bench.results import load_results, load_samples
from bench.runner import RunConfig, execute, expand_grid, new_run_id, varying_params
from bench.workload import CHECKPOINTING, PRECISIONS, preferred_amp

__all__ = [
    "RunSummary",
    "UsageError",
    "env",
    "list_scenarios",
    "load_results",
    "load_samples",
    "parse_assignments",
    "run",
]

DEFAULT_MODES: tuple[str, ...] = ("forward", "train")
DEFAULT_PRECISIONS: tuple[str, ...] = ("fp32",)
DEFAULT_CHECKPOINTING: tuple[str, ...] = ("none",)
DEFAULT_PRESET = "default"
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MAX_TIME_S = 5.0
DEFAULT_TARGET_REL_CI = 0.02
# Sizes: int parameters whose name contains one of these words, or whose default is positive
# (``ffn_mult``, ``num_tensors``, ...), must be positive; 0 is accepted only where it is the field's
# own default (resnet's ``width=0``: "as the arch defines"). See ``_check_size``.
_SIZE_WORDS = (
    "size", "len", "width", "depth", "dim", "heads", "layers", "channels", "blocks", "features",
    "hidden", "classes", "tokens", "vocab",
)  # fmt: skip


class UsageError(ValueError):
    """Bad input to ``run`` (the CLI exits with code 2 and prints the message)."""


@dataclass
class RunSummary:
    """What ``run`` did: the rows it wrote (in order), where, and the exit status."""

    scenario: str
    csv_path: Path
    samples_path: Path
    run_id: str
    rows: list[dict[str, Any]]
    configs: list[RunConfig]
    resumed: int = 0  # configurations found in the file and not run again (--resume)
    varying: list[str] = field(default_factory=list)  # parameters that vary across the grid

    @property
    def counts(self) -> dict[str, int]:
        """Rows of this run by status."""
        out: dict[str, int] = {}
        for r in self.rows:
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] in results.FAILED_STATUSES]

    @property
    def noisy(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "ok" and r.get("noisy")]

    @property
    def exit_code(self) -> int:
        """0 when every configuration is ok or skipped, 1 when any is error, oom or timeout."""
        return 1 if self.failed else 0

    def print(self, console: Any = None) -> None:
        """The human summary: a table of configurations, noisy warnings, where the CSV is."""
        from bench.console import print_summary

        print_summary(self, console)


# ---------------------------------------------------------------------------------------------
# validation helpers


def default_device() -> str:
    """ "cuda" when CUDA is available, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str) -> str:
    """``device`` if it names a device that exists here, else ``UsageError``."""
    import torch

    m = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", device.strip())
    if not m or (m.group(1) == "cpu" and m.group(2) is not None):
        raise UsageError(f"--device: unknown device {device!r}; expected cpu, cuda or cuda:N")
    if m.group(1) == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
                f"cuda build: {torch.version.cuda or 'none'}); use --device cpu"
            )
        idx = int(m.group(2) or 0)
        if idx >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device.strip()


def _check_choices(option: str, values: Sequence[str], choices: Sequence[str]) -> list[str]:
    vals = [str(v).strip() for v in values]
    if not vals:
        raise UsageError(f"{option}: no value given; expected some of {list(choices)}")
    for v in vals:
        if v not in choices:
            raise UsageError(f"{option}: unknown value {v!r}; expected one of {list(choices)}")
    return list(dict.fromkeys(vals))


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _field_types(spec: ScenarioSpec) -> dict[str, Any]:
    try:
        return typing.get_type_hints(spec.config_cls)
    except Exception:
        return {}


def _base_type(hint: Any, default: Any) -> type | None:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if hint in (int, float, bool, str):
        return hint
    if len(args) == 1 and args[0] in (int, float, bool, str):
        return args[0]
    if isinstance(default, bool | int | float | str):
        return type(default)
    return None


def coerce_param(spec: ScenarioSpec, name: str, value: Any) -> Any:
    """``value`` converted to the type of config field ``name`` (strings from the CLI parsed)."""
    params = spec.parameters()
    if name not in params:
        raise UsageError(
            f"scenario {spec.name!r} has no parameter {name!r}; its parameters are {sorted(params)}"
        )
    typ = _base_type(_field_types(spec).get(name), params[name])
    v = value.strip() if isinstance(value, str) else value
    try:
        if typ is bool:
            if isinstance(v, bool):
                out: Any = v
            elif isinstance(v, str) and v.lower() in _TRUE | _FALSE:
                out = v.lower() in _TRUE
            else:
                raise ValueError
        elif typ is int:
            if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
                raise ValueError
            out = int(v)
        elif typ is float:
            if isinstance(v, bool):
                raise ValueError
            out = float(v)
        elif typ is str:
            out = str(v)
        else:
            out = v
    except (TypeError, ValueError):
        kinds: dict[Any, str] = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
        kind = kinds.get(typ, "a valid value")
        raise UsageError(f"{name}: expected {kind} for scenario {spec.name!r}, got {value!r}") from None
    if typ is int:
        _check_size(name, out, params[name])
    return out


def _check_size(name: str, value: int, default: Any) -> None:
    """``UsageError`` when ``value`` is not a valid size for int parameter ``name`` (see ``_SIZE_WORDS``)."""
    positive_default = isinstance(default, int) and not isinstance(default, bool) and default > 0
    if not (positive_default or any(w in name for w in _SIZE_WORDS)):
        return
    zero_is_default = isinstance(default, int) and not isinstance(default, bool) and default == 0
    if value < 0 or (value == 0 and not zero_is_default):
        allowed = "a positive integer (or 0, its default)" if zero_is_default else "a positive integer"
        raise UsageError(f"{name}: must be {allowed}, got {value}")


def parse_assignments(items: Sequence[str]) -> dict[str, list[str]]:
    """``["seq_len=128,256", "causal=true"]`` -> ``{"seq_len": ["128", "256"], "causal": ["true"]}``."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UsageError(f"--param: expected key=value (value may be a comma list), got {item!r}")
        out.setdefault(key.strip(), []).extend(split_list(value))
    return out


def split_list(text: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]`` (empty items dropped)."""
    return [p.strip() for p in str(text).split(",") if p.strip()]


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        return split_list(value)
    if isinstance(value, list | tuple | set):
        return list(value)
    return [value]


# ---------------------------------------------------------------------------------------------
# the plan: everything validated, nothing run yet


@dataclass
class RunPlan:
    """A validated run: the grid, where it goes, how it is measured."""

    spec: ScenarioSpec
    configs: list[RunConfig]
    writer: results.ResultsWriter
    options: MeasureOptions
    device: str
    isolation: bool
    resume: bool


def _open_writer(spec: ScenarioSpec, out: Path) -> results.ResultsWriter:
    """The writer of ``out``; an existing file must hold the same columns (it is appended to)."""
    columns = results.columns_for(spec.parameters())
    if out.exists() and out.is_dir():
        raise UsageError(f"--out: {out} is a directory; give a file name such as {out / 'results.csv'}")
    try:
        return results.ResultsWriter(out, columns)
    except results.SchemaMismatchError as exc:
        raise UsageError(f"--out: {exc}") from None
    except OSError as exc:
        raise UsageError(f"--out: cannot write {out}: {exc.strerror or exc}") from None


def plan_run(
    scenario: str | None = None,
    *,
    sweep: str | Path | None = None,
    preset: str | None = None,
    modes: Sequence[str] | str | None = None,
    precisions: Sequence[str] | str | None = None,
    amp: bool = False,
    checkpointing: Sequence[str] | str | None = None,
    params: Mapping[str, Any] | None = None,
    device: str | None = None,
    out: str | Path | None = None,
    resume: bool | None = None,
    timeout_s: float | None = None,
    target_rel_ci: float | None = None,
    max_time_s: float | None = None,
    seed: int | None = None,
    isolation: bool | None = None,
    channels_last: bool | None = None,
) -> RunPlan:
    """Validate everything ``run`` takes (``UsageError`` otherwise) and open the output file."""
    from bench.sweep import SweepError, load_sweep

    sw_params: dict[str, list[Any]] = {}
    sw_opts: dict[str, Any] = {}
    if sweep is not None:
        try:
            sw = load_sweep(sweep)
        except SweepError as exc:
            raise UsageError(str(exc)) from None
        if scenario is not None and scenario != sw.scenario:
            raise UsageError(f"--sweep: {sweep} is for scenario {sw.scenario!r}, not {scenario!r}")
        scenario = sw.scenario
        preset = preset if preset is not None else sw.preset
        device = device if device is not None else sw.device
        modes = modes if modes is not None else sw.modes
        precisions = precisions if precisions is not None else sw.precisions
        checkpointing = checkpointing if checkpointing is not None else sw.checkpointing
        sw_params, sw_opts = sw.params, sw.options
    if scenario is None:
        raise UsageError("scenario: give a scenario name (see `dlbench list`) or --sweep FILE.toml")
    try:
        spec = get_scenario(scenario)
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    def opt(value: Any, key: str, default: Any) -> Any:
        return value if value is not None else sw_opts.get(key, default)

    preset = preset or DEFAULT_PRESET
    if preset not in spec.presets:
        raise UsageError(f"--preset: unknown preset {preset!r}; {spec.name!r} has {sorted(spec.presets)}")
    device = check_device(device if device is not None else default_device())
    mode_list = _check_choices("--mode", _as_list(modes) if modes is not None else DEFAULT_MODES, MODES)
    prec_in = _as_list(precisions) if precisions is not None else ([] if amp else list(DEFAULT_PRECISIONS))
    if amp:
        prec_in.append(preferred_amp(device))
    prec_list = _check_choices("--precision", prec_in, PRECISIONS)
    ckpt_list = _check_choices(
        "--checkpointing",
        _as_list(checkpointing) if checkpointing is not None else DEFAULT_CHECKPOINTING,
        CHECKPOINTING,
    )
    merged = {**sw_params, **dict(params or {})}
    axes: dict[str, list[Any]] = {}
    for name, value in merged.items():
        values = _as_list(value)
        if not values:
            raise UsageError(f"{name}: no value given")
        axes[name] = list(dict.fromkeys(coerce_param(spec, name, v) for v in values))

    options = MeasureOptions(
        target_rel_ci=float(opt(target_rel_ci, "target_rel_ci", DEFAULT_TARGET_REL_CI)),
        max_time_s=float(opt(max_time_s, "max_time_s", DEFAULT_MAX_TIME_S)),
        timeout_s=float(opt(timeout_s, "timeout_s", DEFAULT_TIMEOUT_S)),
    )
    if not 0 < options.target_rel_ci < 1:
        raise UsageError(f"--target-ci: must be between 0 and 1 (0.02 = +-2%), got {options.target_rel_ci}")
    if options.max_time_s <= 0:
        raise UsageError(f"--max-time: must be positive, got {options.max_time_s}")
    if options.timeout_s <= 0:
        raise UsageError(f"--timeout: must be positive, got {options.timeout_s}")
    seed_v = int(opt(seed, "seed", 0))
    cl = bool(opt(channels_last, "channels_last", False))
    try:
        configs = expand_grid(
            spec,
            preset=preset,
            modes=mode_list,
            precisions=prec_list,
            checkpointing=ckpt_list,
            axes=axes,
            device=device,
            seed=seed_v,
            channels_last=cl,
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{spec.name}: invalid configuration: {exc}") from None

    resume_v = bool(opt(resume, "resume", False))
    out_v = opt(out, "out", None)
    if out_v is not None:
        out_path = Path(out_v).expanduser()
    else:
        latest = results.latest_out_path(spec.name, device) if resume_v else None
        out_path = latest or results.default_out_path(spec.name, device)
    writer = _open_writer(spec, out_path)
    return RunPlan(
        spec=spec,
        configs=configs,
        writer=writer,
        options=options,
        device=device,
        isolation=bool(opt(isolation, "isolation", True)),
        resume=resume_v,
    )


# ---------------------------------------------------------------------------------------------
# public functions


def run(
    scenario: str | None = None,
    *,
    sweep: str | Path | None = None,
    preset: str | None = None,
    modes: Sequence[str] | str | None = None,
    precisions: Sequence[str] | str | None = None,
    amp: bool = False,
    checkpointing: Sequence[str] | str | None = None,
    params: Mapping[str, Any] | None = None,
    device: str | None = None,
    out: str | Path | None = None,
    resume: bool | None = None,
    timeout_s: float | None = None,
    target_rel_ci: float | None = None,
    max_time_s: float | None = None,
    seed: int | None = None,
    isolation: bool | None = None,
    channels_last: bool | None = None,
    progress: bool = True,
    console: Any = None,
) -> RunSummary:
    """Measure every configuration of a scenario's grid and append one row each to a CSV.

    ``params`` maps config fields to a value or a list of values (a grid axis); ``modes``,
    ``precisions`` and ``checkpointing`` are lists or comma-separated strings; ``amp=True`` adds
    ``bench.workload.preferred_amp(device)`` to the precisions. ``sweep`` reads all of these from a
    TOML file (``bench.sweep``); arguments given here override it. Options left as None take the
    module defaults. ``isolation=False`` runs in this process (no timeout; for debugging).
    """
    plan = plan_run(
        scenario,
        sweep=sweep,
        preset=preset,
        modes=modes,
        precisions=precisions,
        amp=amp,
        checkpointing=checkpointing,
        params=params,
        device=device,
        out=out,
        resume=resume,
        timeout_s=timeout_s,
        target_rel_ci=target_rel_ci,
        max_time_s=max_time_s,
        seed=seed,
        isolation=isolation,
        channels_last=channels_last,
    )
    return execute_plan(plan, progress=progress, console=console)


def execute_plan(plan: RunPlan, *, progress: bool = True, console: Any = None) -> RunSummary:
    """Run a validated plan (see ``plan_run``), with a progress bar when ``progress``."""
    from bench.console import RunProgress

    env_fp = env(plan.device)
    run_id = new_run_id()
    varying = varying_params(plan.configs)
    on_start: Callable[[int, RunConfig], None] | None = None
    on_done: Callable[[int, RunConfig, dict[str, Any] | None], None] | None = None
    bar = RunProgress(plan.spec.name, len(plan.configs), varying, console=console) if progress else None
    if bar is not None:
        on_start, on_done = bar.start, bar.done
    try:
        if bar is not None:
            bar.__enter__()
        res = execute(
            plan.spec,
            plan.configs,
            writer=plan.writer,
            env=env_fp,
            options=plan.options,
            run_id=run_id,
            isolation=plan.isolation,
            resume=plan.resume,
            on_start=on_start,
            on_done=on_done,
        )
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    return RunSummary(
        scenario=plan.spec.name,
        csv_path=plan.writer.path,
        samples_path=plan.writer.samples_path,
        run_id=run_id,
        rows=res.rows,
        configs=list(plan.configs),
        resumed=len(res.resumed),
        varying=varying,
    )


def list_scenarios(include_test_only: bool = False) -> list[dict[str, Any]]:
    """Registered scenarios: name, description, parameters (defaults), presets, modes."""
    out = []
    for name, spec in sorted(load_scenarios().items()):
        if spec.test_only and not include_test_only:
            continue
        out.append(
            {
                "name": name,
                "description": spec.description,
                "parameters": spec.parameters(),
                "presets": {k: dict(v) for k, v in spec.presets.items()},
                "modes": list(spec.modes),
                "unsupported_modes": dict(spec.unsupported_modes),
                "test_only": spec.test_only,
            }
        )
    return out


def env(device: str | None = None) -> dict[str, Any]:
    """The environment fingerprint that goes into every row (``bench.harness.env``)."""
    from bench.harness.env import env_fingerprint

    return dict(env_fingerprint(check_device(device) if device is not None else default_device()))
