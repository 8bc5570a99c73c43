"""Run a grid of configurations, each in its own child process, appending one row per configuration.

``execute`` runs them one after another. A configuration that cannot run here
(``bench.run.grid.config_skip_reason``) becomes a ``skipped`` row without starting a child. Every
other one runs in ``python -m bench.run.child`` with a timeout: a Python-level OOM -> ``oom``; any
other exception -> ``error``; death by a signal (segfault, ``os.abort()``) or a non-zero exit ->
``error`` with the signal and the last line of the child's stderr; killed by SIGKILL that the
runner did not send -> ``oom`` (the kernel OOM killer is the usual sender); past the timeout -> the
child is killed, ``timeout``.

Each row is appended to the CSV (``bench.results.ResultsWriter``) as soon as its configuration
finishes, so an interrupted sweep keeps every finished row; configurations whose ``config_key`` is
already in the file are not run again when resuming.
"""

from __future__ import annotations

import datetime as _dt
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
from bench.registry import CHILD_ENV_VAR, ScenarioSpec
from bench.run.grid import RunConfig, config_skip_reason
from bench.run.request import RunRequest


@dataclass
class Outcome:
    """What one configuration produced: status, reason and (when ok) the typed measurement."""

    status: str
    reason: str = ""
    measurement: Any = None  # bench.run.measure.Measurement
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


def _outcome(data: Mapping[str, Any], elapsed_s: float) -> Outcome:
    from bench.run.measure import Measurement

    m = data.get("measurement")
    return Outcome(
        data["status"], data.get("reason") or "", Measurement.from_dict(m) if m else None, elapsed_s
    )


def run_in_child(cfg: RunConfig, options: RunRequest, *, device_name: str | None = None) -> Outcome:
    """Measure ``cfg`` in ``python -m bench.run.child``; never raises for what happens in the child."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dlbench-") as tmp:
        req, res, log = Path(tmp, "request.json"), Path(tmp, "result.json"), Path(tmp, "child.log")
        request = {
            "config": cfg.to_json(),
            "request": options.to_dict(),
            "device_name": device_name,
            "parent_pid": os.getpid(),
        }
        req.write_text(json.dumps(request, default=str), encoding="utf-8")
        env = {**os.environ, CHILD_ENV_VAR: "1", "PYTHONUNBUFFERED": "1"}
        with log.open("wb") as logf:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.run.child", str(req), str(res)],
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
            return _outcome(json.loads(res.read_text(encoding="utf-8")), elapsed)
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


def run_in_process(cfg: RunConfig, options: RunRequest, *, device_name: str | None = None) -> Outcome:
    """Measure ``cfg`` in this process (``--no-isolation``): no timeout, a crash takes us down too."""
    from bench.run.child import run_request

    t0 = time.perf_counter()
    data = run_request({"config": cfg.to_json(), "request": options.to_dict(), "device_name": device_name})
    return _outcome(data, time.perf_counter() - t0)


def new_run_id() -> str:
    """``<UTC time>-<6 hex>``: one per invocation, shared by its rows."""
    return f"{_dt.datetime.now(_dt.UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


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
    options: RunRequest,
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
        row = results.build_row(cfg, outcome, run_id=run_id, env=env, request=options, columns=writer.columns)
        writer.append(row, results.samples_record(row, outcome) if outcome.status != "skipped" else None)
        out.rows.append(row)
        if on_done:
            on_done(i, cfg, row)
    return out
