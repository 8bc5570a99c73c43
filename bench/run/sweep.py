"""Sweep files: a TOML description of one scenario's grid, run with ``dlbench run --sweep FILE.toml``.

    scenario = "attention"          # required
    preset = "default"              # optional: tiny | default | large
    device = "cpu"                  # optional: cpu | cuda | cuda:N

    [axes]                          # each value: a list (a grid axis) or a single value
    mode = ["forward", "train"]
    precision = ["fp32", "amp-bf16"]
    checkpointing = ["none", "full"]
    compile = ["none", "default"]   # torch.compile modes
    parallel = ["none", "ddp"]      # also pipeline_schedule = ["gpipe", "1f1b"]; nproc etc. in [options]
    batch_size = [4, 8]             # any config field of the scenario
    seq_len = [128, 256]

    [options]                       # all optional
    out = "results/attention_sweep.csv"
    resume = true
    timeout_s = 600
    target_rel_ci = 0.02
    max_time_s = 5.0
    seed = 0
    channels_last = false
    isolation = true

Command-line options given explicitly override the file (``--max-time 1`` beats ``max_time_s``).
Which keys a file may set, and how each value is parsed and checked, is ``bench.run.request``'s
``RunRequest`` (its ``Opt.sweep``): this module only reads the file and maps its keys to fields.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.run.request import RunRequest

_RUN_AXES = ("compile", "parallel", "pipeline_schedule")  # [axes] keys that are run options, not parameters
TOP_KEYS = frozenset({"description", "axes", "options"} | set(RunRequest.sweep_keys("top")))


class SweepError(UsageError):
    """A sweep file that cannot be read or does not follow the format."""


@dataclass(frozen=True)
class Sweep:
    """A read sweep file (values as TOML typed them; ``RunRequest.build`` parses and checks them)."""

    path: Path
    scenario: str
    preset: str | None = None
    device: str | None = None
    modes: list[str] | None = None
    precisions: list[str] | None = None
    checkpointing: list[str] | None = None
    params: dict[str, list[Any]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # keyed as in the file's [options]
    # other run-option axes ([axes] compile, parallel, pipeline_schedule), keyed as in the file
    run_axes: dict[str, list[str]] = field(default_factory=dict)

    def request_fields(self) -> dict[str, Any]:
        """``RunRequest`` field name -> value, for ``RunRequest.build(sweep=...)``."""
        out: dict[str, Any] = {
            "scenario": self.scenario,
            "preset": self.preset,
            "device": self.device,
            "modes": self.modes,
            "precisions": self.precisions,
            "checkpointing": self.checkpointing,
            "params": self.params or None,
        }
        option_keys = RunRequest.sweep_keys("options")
        out.update({option_keys[k]: v for k, v in self.options.items()})
        axis_keys = RunRequest.sweep_keys("axes")
        out.update({axis_keys[k]: v for k, v in self.run_axes.items()})
        return {k: v for k, v in out.items() if v is not None}


def _axis(name: str, value: Any) -> list[Any]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise SweepError(f"axes.{name}: empty list")
    for v in values:
        if isinstance(v, dict | list):
            raise SweepError(f"axes.{name}: values must be numbers, strings or booleans, got {v!r}")
    return values


def load_sweep(path: Path | str) -> Sweep:
    """Read and shape-check a sweep file; ``SweepError`` names the offending key."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SweepError(f"--sweep: no such file {str(p)!r}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepError(f"--sweep: cannot read {str(p)!r}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"--sweep: {p} is not valid TOML: {exc}") from exc
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise SweepError(f"--sweep: {p}: unknown key(s) {unknown}; expected {sorted(TOP_KEYS)}")
    scenario = data.get("scenario")
    if not isinstance(scenario, str) or not scenario:
        raise SweepError(f"--sweep: {p}: 'scenario = \"<name>\"' is required")
    for key in ("preset", "device"):
        if key in data and not isinstance(data[key], str):
            raise SweepError(f"--sweep: {p}: {key} must be a string")
    axes = data.get("axes", {})
    options = data.get("options", {})
    if not isinstance(axes, dict) or not isinstance(options, dict):
        raise SweepError(f"--sweep: {p}: [axes] and [options] must be tables")
    option_keys = RunRequest.sweep_keys("options")
    bad_opts = sorted(set(options) - set(option_keys))
    if bad_opts:
        raise SweepError(f"--sweep: {p}: unknown option(s) {bad_opts}; expected {sorted(option_keys)}")
    grid = {name: _axis(name, value) for name, value in axes.items()}
    lists = {k: [str(v) for v in grid.pop(k)] for k in ("mode", "precision", "checkpointing") if k in grid}
    run_axes = {k: [str(v) for v in grid.pop(k)] for k in _RUN_AXES if k in grid}
    return Sweep(
        path=p,
        scenario=scenario,
        preset=data.get("preset"),
        device=data.get("device"),
        modes=lists.get("mode"),
        precisions=lists.get("precision"),
        checkpointing=lists.get("checkpointing"),
        params=grid,
        options=dict(options),
        run_axes=run_axes,
    )
