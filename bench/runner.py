"""Run a grid of configurations, each in its own child process, appending one row per configuration.

- ``expand_grid`` turns axes (modes x precisions x checkpointing x scenario parameters) into
  ``RunConfig`` s; the order is parameters outermost, then mode, precision, checkpointing. A
  scenario field named ``channels_last`` set to true and ``--channels-last`` are folded together
  (both true when either is).
- ``execute`` runs them one after another. A configuration that cannot run here
  (``bench.workload.skip_reason``, ``ScenarioSpec.unsupported_modes``) becomes a ``skipped`` row
  without starting a child. Every other one runs in ``python -m bench.child`` with a timeout:
  a Python-level OOM -> ``oom``; any other exception -> ``error``; death by a signal
  (segfault, ``os.abort()``) or a non-zero exit -> ``error`` with the signal and the last line of
  the child's stderr; killed by SIGKILL that the runner did not send -> ``oom`` (the kernel OOM
  killer is the usual sender); past the timeout -> the child is killed, ``timeout``.
- Each row is appended to the CSV (``bench.results.ResultsWriter``) as soon as its configuration
  finishes, so an interrupted sweep keeps every finished row; configurations whose ``config_key``
  is already in the file are not run again when resuming.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import results
from bench.child import CHILD_ENV_VAR
from bench.measure import MeasureOptions
from bench.registry import ScenarioSpec
from bench.workload import skip_reason


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
        )

    def label(self, varying: Sequence[str] | None = None) -> str:
        """Short human label: mode, precision, checkpointing, and the parameters in ``varying``."""
        parts = [self.mode, self.precision]
        if self.checkpointing != "none":
            parts.append(f"ckpt={self.checkpointing}")
        p = self.params_dict
        for name in varying if varying is not None else ():
            if name in p:
                parts.append(f"{name}={p[name]}")
        return " ".join(parts)

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
) -> list[RunConfig]:
    """Every combination of the axes, each validated by building its config (ValueError if bad)."""
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
        for mode, precision, ckpt in itertools.product(modes, precisions, checkpointing):
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
            )
            if rc.key not in seen:
                seen.add(rc.key)
                out.append(rc)
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
    return skip_reason(cfg.device, cfg.mode, cfg.precision, cfg.checkpointing)


@dataclass
class Outcome:
    """What one configuration produced: status, reason and (when ok) the measurement dict."""

    status: str
    reason: str = ""
    measurement: dict[str, Any] | None = None
    elapsed_s: float = 0.0


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _last_lines(path: Path, n: int = 3) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])


def run_in_child(cfg: RunConfig, options: MeasureOptions, *, device_name: str | None = None) -> Outcome:
    """Measure ``cfg`` in ``python -m bench.child``; never raises for what happens in the child."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dlbench-") as tmp:
        req, res, log = Path(tmp, "request.json"), Path(tmp, "result.json"), Path(tmp, "child.log")
        request = {
            "config": cfg.to_json(),
            "options": options.to_dict(),
            "device_name": device_name,
            "parent_pid": os.getpid(),
        }
        req.write_text(json.dumps(request, default=str), encoding="utf-8")
        env = {**os.environ, CHILD_ENV_VAR: "1", "PYTHONUNBUFFERED": "1"}
        with log.open("wb") as logf:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.child", str(req), str(res)],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
            )
            try:
                rc = proc.wait(timeout=options.timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                return Outcome(
                    "timeout",
                    f"timed out after {options.timeout_s:g} s (child killed); raise --timeout to allow more",
                    elapsed_s=time.perf_counter() - t0,
                )
            except BaseException:  # Ctrl-C or the parent being stopped: never leave the child behind
                proc.kill()
                proc.wait()
                raise
        elapsed = time.perf_counter() - t0
        tail = _last_lines(log)
        if rc == 0 and res.exists():
            data = json.loads(res.read_text(encoding="utf-8"))
            return Outcome(data["status"], data.get("reason") or "", data.get("measurement"), elapsed)
        if rc < 0 and -rc == signal.SIGKILL:
            return Outcome(
                "oom",
                "child killed by SIGKILL that dlbench did not send; most likely the kernel OOM killer "
                f"(check dmesg). {tail}".strip(),
                elapsed_s=elapsed,
            )
        if rc < 0:
            return Outcome("error", f"child crashed: {_signal_name(-rc)}. {tail}".strip(), elapsed_s=elapsed)
        return Outcome(
            "error", f"child exited with code {rc} and no result. {tail}".strip(), elapsed_s=elapsed
        )


def run_in_process(cfg: RunConfig, options: MeasureOptions, *, device_name: str | None = None) -> Outcome:
    """Measure ``cfg`` in this process (``--no-isolation``): no timeout, a crash takes us down too."""
    from bench.child import run_request

    t0 = time.perf_counter()
    data = run_request({"config": cfg.to_json(), "options": options.to_dict(), "device_name": device_name})
    return Outcome(
        data["status"], data.get("reason") or "", data.get("measurement"), time.perf_counter() - t0
    )


def new_run_id() -> str:
    """``<UTC time>-<6 hex>``: one per invocation, shared by its rows."""
    return f"{_dt.datetime.now(_dt.UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


def build_row(
    cfg: RunConfig,
    outcome: Outcome,
    *,
    run_id: str,
    env: Mapping[str, Any],
    options: MeasureOptions,
    columns: Sequence[str],
) -> dict[str, Any]:
    """The results row of one configuration (failed rows keep config and env, no measurements)."""
    colset = set(columns)
    extra: dict[str, Any] = {}
    row: dict[str, Any] = {
        "schema_version": results.SCHEMA_VERSION,
        "run_id": run_id,
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "scenario": cfg.scenario,
        "mode": cfg.mode,
        "precision": cfg.precision,
        "checkpointing": cfg.checkpointing,
        "parallel": "none",
        "world_size": 1,
        "device": cfg.device,
        "status": outcome.status,
        "reason": results.one_line(outcome.reason),
        "preset": cfg.preset,
        "seed": cfg.seed,
        "channels_last": cfg.channels_last,
        "timeout_s": options.timeout_s,
        "target_rel_ci": options.target_rel_ci,
        "max_time_s": options.max_time_s,
        "elapsed_s": round(outcome.elapsed_s, 3),
        "config_key": cfg.key,
    }
    for k, v in env.items():
        if k == "device":
            continue  # the row's device is the configuration's
        if k in colset:
            row[k] = v
        else:
            extra[f"env.{k}"] = v
    for name, value in cfg.params:
        row[results.param_column(name)] = value
    m = outcome.measurement
    if outcome.status == "ok" and m:
        for k, v in m.get("fields", {}).items():
            if k in colset:
                row[k] = v
            else:
                extra[k] = v
        extra.update(m.get("extra") or {})
    row["extra"] = extra or None
    return row


def samples_record(row: Mapping[str, Any], outcome: Outcome) -> dict[str, Any]:
    """The sidecar record of a row: raw per-iteration samples and the full timing/memory results."""
    m = outcome.measurement or {}
    timing = {k: v for k, v in (m.get("timing") or {}).items() if k != "samples_ms"}
    return {
        "scenario": row.get("scenario"),
        "status": outcome.status,
        "samples_ms": m.get("samples_ms") or [],
        "timing": timing,
        "memory": m.get("memory"),
    }


@dataclass
class ExecuteResult:
    """Rows written by ``execute`` (in order) and the configurations it did not run again."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    resumed: list[RunConfig] = field(default_factory=list)


def execute(
    spec: ScenarioSpec,
    configs: Sequence[RunConfig],
    *,
    writer: results.ResultsWriter,
    env: Mapping[str, Any],
    options: MeasureOptions,
    run_id: str | None = None,
    isolation: bool = True,
    resume: bool = False,
    on_start: Callable[[int, RunConfig], None] | None = None,
    on_done: Callable[[int, RunConfig, dict[str, Any] | None], None] | None = None,
) -> ExecuteResult:
    """Run ``configs`` in order, appending each row to ``writer`` as it finishes."""
    run_id = run_id or new_run_id()
    done = writer.done_keys() if resume else set()
    out = ExecuteResult()
    runner = run_in_child if isolation else run_in_process
    device_name = env.get("device_name")
    for i, cfg in enumerate(configs):
        if cfg.key in done:
            out.resumed.append(cfg)
            if on_done:
                on_done(i, cfg, None)
            continue
        if on_start:
            on_start(i, cfg)
        reason = config_skip_reason(spec, cfg)
        if reason is not None:
            outcome = Outcome("skipped", reason)
        else:
            outcome = runner(cfg, options, device_name=device_name)
        row = build_row(cfg, outcome, run_id=run_id, env=env, options=options, columns=writer.columns)
        writer.append(row, samples_record(row, outcome) if outcome.status != "skipped" else None)
        out.rows.append(row)
        if on_done:
            on_done(i, cfg, row)
    return out
