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

With ``--repeat R`` (R >= 2) each configuration is measured in R independent children, round-robin
over the grid (every configuration once, then every configuration again, ...), so drift over time
spreads over every configuration instead of landing on the last ones. A row is written when its
configuration's last repeat finishes (so in the last round), its median and CI built from the R
processes (``bench.stats.hierarchical_summary``), the per-process figures in the sidecar's
``repeats``; a failed repeat writes the failed row at once and the configuration leaves the later
rounds. A killed sweep keeps every row written and never a row of fewer than R processes.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import results
from bench.compiling import inductor_cache_env
from bench.registry import CHILD_ENV_VAR, ScenarioSpec
from bench.results.schema import baseline_key, scaling_efficiency
from bench.run.grid import RunConfig, config_skip_reason
from bench.run.request import RunRequest
from bench.signals import shielded


@dataclass
class Outcome:
    """What one configuration produced: status, reason and (when ok) the typed measurement."""

    status: str
    reason: str = ""
    measurement: Any = None  # bench.run.measure.Measurement
    elapsed_s: float = 0.0
    repeats: list[dict[str, Any]] | None = None  # per-process records of a --repeat row (the sidecar)


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


def _outcome(data: Mapping[str, Any], elapsed_s: float, task: str = "time") -> Outcome:
    """The ``Outcome`` of a child's result: a ``Measurement`` for ``time``, the probe's dict for ``probe``."""
    from bench.run.measure import Measurement

    m = data.get("measurement")
    if m and task == "time":
        m = Measurement.from_dict(m)
    return Outcome(data["status"], data.get("reason") or "", m or None, elapsed_s)


def run_in_child(
    cfg: RunConfig, options: RunRequest, *, device_name: str | None = None, task: str = "time"
) -> Outcome:
    """Run ``task`` on ``cfg`` in ``python -m bench.run.child``; never raises for what happens in the child.

    ``task`` is ``time`` (measure it, as ``dlbench run`` does) or ``probe`` (``dlbench budget``: one
    step and its memory, ``bench.budget.probe``; the outcome's ``measurement`` is the probe's dict).
    """
    from bench.owned import owned

    t0 = time.perf_counter()
    # the child's files in an owned folder (bench.owned); its marker finds whatever it started
    with owned("child") as own:
        tmp = own.path
        req, res, log = Path(tmp, "request.json"), Path(tmp, "result.json"), Path(tmp, "child.log")
        request = {
            "config": cfg.to_json(),
            "request": options.to_dict(),
            "device_name": device_name,
            "parent_pid": os.getpid(),
            "task": task,
        }
        req.write_text(json.dumps(request, default=str), encoding="utf-8")
        env = {
            **own.child_env(),
            CHILD_ENV_VAR: "1",
            "PYTHONUNBUFFERED": "1",
            **inductor_cache_env(cfg.compile, tmp),  # a compiled configuration: a cold inductor cache
        }
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
            return _outcome(json.loads(res.read_text(encoding="utf-8")), elapsed, task)
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


def run_in_process(
    cfg: RunConfig, options: RunRequest, *, device_name: str | None = None, task: str = "time"
) -> Outcome:
    """``run_in_child`` in this process (``--no-isolation``): no timeout, a crash takes us down too."""
    from bench.run.child import run_request

    t0 = time.perf_counter()
    data = run_request(
        {"config": cfg.to_json(), "request": options.to_dict(), "device_name": device_name, "task": task}
    )
    return _outcome(data, time.perf_counter() - t0, task)


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
    if options.repeat > 1:
        return _execute_repeated(
            spec, configs, writer=writer, env=env, options=options, run_id=run_id,
            isolation=isolation, resume=resume, on_start=on_start, on_done=on_done,
        )  # fmt: skip
    done = writer.done_keys() if resume else set()
    out = ExecuteResult()
    device_name = env.get("device_name")
    baselines = file_baselines(writer.path)
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
            outcome = runner_for(cfg, isolation)(cfg, options, device_name=device_name)
        row = results.build_row(cfg, outcome, run_id=run_id, env=env, request=options, columns=writer.columns)
        with_scaling(row, baselines)
        with shielded():  # a signal waits until the row and its sidecar record are both written
            writer.append(row, results.samples_record(row, outcome) if outcome.status != "skipped" else None)
        out.rows.append(row)
        if on_done:
            on_done(i, cfg, row)
    return out


def runner_for(cfg: RunConfig, isolation: bool) -> Callable[..., Outcome]:
    """How ``cfg`` runs: a parallel configuration is a torchrun job (``bench.run.launch``, with or
    without ``--no-isolation``); any other one a child process, or this process without isolation."""
    if cfg.parallel != "none":
        from bench.run.launch import run_parallel

        return run_parallel
    return run_in_child if isolation else run_in_process


def file_baselines(path: Path) -> dict[str, float]:
    """``config_key`` -> throughput of the ok ``parallel == "none"`` rows already in ``path``."""
    import csv

    out: dict[str, float] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                if r.get("parallel") == "none" and r.get("status") == "ok" and r.get("throughput"):
                    try:
                        out[baseline_key(r.get("config_key") or "")] = float(r["throughput"])
                    except ValueError:
                        continue
    except (OSError, csv.Error, UnicodeDecodeError):
        pass
    return out


def with_scaling(row: dict[str, Any], baselines: dict[str, float]) -> None:
    """Record an ok ``none`` row as a baseline; give a parallel row its ``scaling_efficiency``."""
    if row.get("parallel") == "none":
        if row.get("status") == "ok" and row.get("throughput"):
            baselines[str(row["config_key"])] = float(row["throughput"])
    else:
        row["scaling_efficiency"] = scaling_efficiency(row, baselines)


# --- --repeat R: R independent processes per configuration, round-robin over the grid ---------------


def _execute_repeated(
    spec: ScenarioSpec,
    configs: Sequence[RunConfig],
    *,
    writer: results.ResultsWriter,
    env: Mapping[str, Any],
    options: RunRequest,
    run_id: str,
    isolation: bool,
    resume: bool,
    on_start: Callable[[int, RunConfig], None] | None,
    on_done: Callable[[int, RunConfig, dict[str, Any] | None], None] | None,
) -> ExecuteResult:
    """``execute`` for ``options.repeat >= 2``: round r measures every configuration still going once.

    Skipped configurations are written first (they never start a child); a failed repeat writes the
    failed row at once (its reason says which repeat; the repeats that did finish are in its sidecar
    record) and drops the configuration; the last round writes each ok row as its last repeat ends.
    ``on_start`` is called before every repeat, ``on_done`` once per configuration (its row).
    """
    n_rep = options.repeat
    done = writer.done_keys() if resume else set()
    out = ExecuteResult()
    device_name = env.get("device_name")
    baselines = file_baselines(writer.path)

    def write(i: int, cfg: RunConfig, outcome: Outcome) -> None:
        row = results.build_row(cfg, outcome, run_id=run_id, env=env, request=options, columns=writer.columns)
        with_scaling(row, baselines)
        with shielded():  # a signal waits until the row and its sidecar record are both written
            writer.append(row, results.samples_record(row, outcome) if outcome.status != "skipped" else None)
        out.rows.append(row)
        if on_done:
            on_done(i, cfg, row)

    active: list[tuple[int, RunConfig]] = []
    for i, cfg in enumerate(configs):
        if cfg.key in done:
            out.resumed.append(cfg)
            if on_done:
                on_done(i, cfg, None)
            continue
        reason = config_skip_reason(spec, cfg)
        if reason is not None:
            if on_start:
                on_start(i, cfg)
            write(i, cfg, Outcome("skipped", reason))
            continue
        active.append((i, cfg))

    finished: dict[int, list[Outcome]] = {i: [] for i, _ in active}
    for r in range(n_rep):
        still: list[tuple[int, RunConfig]] = []
        for i, cfg in active:
            if on_start:
                on_start(i, cfg)
            outcome = runner_for(cfg, isolation)(cfg, options, device_name=device_name)
            prior = finished[i]
            if outcome.status != "ok" or outcome.measurement is None:
                outcome.reason = f"repeat {r + 1}/{n_rep}: {outcome.reason or outcome.status}"
                outcome.elapsed_s += sum(o.elapsed_s for o in prior)
                outcome.repeats = [repeat_record(k, o) for k, o in enumerate(prior)] or None
                write(i, cfg, outcome)
                del finished[i]
                continue
            prior.append(outcome)
            if r == n_rep - 1:
                # a parallel configuration is a torchrun job (its own processes) even with --no-isolation
                covers = "between-process" if isolation or cfg.parallel != "none" else "between-run"
                write(i, cfg, aggregate_repeats(finished.pop(i), covers=covers, options=options))
            else:
                still.append((i, cfg))
        active = still
    return out


def repeat_record(k: int, outcome: Outcome) -> dict[str, Any]:
    """The sidecar record of one repeat (process) ``k`` (0-based): its own median, CI and samples."""
    m = outcome.measurement
    t = m.timing
    return {
        "repeat": k + 1,
        "median_ms": t.median_ms,
        "ci_low_ms": t.ci_low_ms,
        "ci_high_ms": t.ci_high_ms,
        "n": t.n,
        "samples_ms": list(t.samples_ms),
        "stop_reason": t.stop_reason,
        "noisy": bool(t.noisy),
        "noise_other_cpu_pct": m.noise_other_cpu_pct,
        "noise_steal_pct": m.noise_steal_pct,
        "elapsed_s": round(outcome.elapsed_s, 3),
        **repeat_energy(getattr(m, "energy", None)),
        **({"compile_time_s": m.compile.compile_time_s} if getattr(m, "compile", None) is not None else {}),
    }


def repeat_energy(energy: Any) -> dict[str, Any]:
    """One repeat's energy figures for its sidecar record (None where it gave none, with the reason)."""
    if energy is None:
        return {}
    ok = energy.status == "ok"
    return {
        "energy_j_per_step": energy.energy_j_per_step if ok else None,
        "energy_j_per_item": energy.energy_j_per_item if ok else None,
        "avg_power_w": energy.avg_power_w if ok else None,
        "energy_window_s": energy.window_s if ok else None,
        "energy_reason": energy.reason,
    }


@dataclass
class RepeatedTiming:
    """The timing of a ``--repeat R`` row: the same reading surface as ``TimingResult``, over R processes.

    ``median_ms`` and the CI come from ``bench.stats.hierarchical_summary`` of the R processes'
    samples (each process reduced to its median; the CI across those medians), so the CI covers the
    drift between processes, which no single process's samples can show, and never reaches beyond
    their medians. ``n``, ``samples_ms``, ``iqr_ms`` and ``cv`` are over all samples pooled;
    ``stop_reason`` is the first of ``time_cap``, ``max_samples``, ``ci_target`` that any process
    stopped by. ``noisy``: the CI is wider than ``+-target_rel_ci`` of the median, or R is too small
    for a CI at the confidence level (R < 6 at 95 %: the CI is the medians' range, and the reason
    states its lower coverage).
    """

    repeats: list[Any]  # bench.harness.timing.TimingResult, one per process
    target_rel_ci: float
    ci_covers: str = "between-process"  # "between-run" when the repeats shared one process
    confidence: float = 0.95

    def __post_init__(self) -> None:
        from bench.stats.compare import hierarchical_summary

        self._center, self._lo, self._hi = hierarchical_summary(
            [t.samples_ms for t in self.repeats], self.confidence
        )

    @property
    def samples_ms(self) -> list[float]:
        return [x for t in self.repeats for x in t.samples_ms]

    @property
    def n(self) -> int:
        return sum(t.n for t in self.repeats)

    @property
    def median_ms(self) -> float:
        return float(self._center)

    @property
    def ci_low_ms(self) -> float:
        return float(self._lo)

    @property
    def ci_high_ms(self) -> float:
        return float(self._hi)

    def _pooled(self) -> Any:
        from bench.harness.timing import TimingResult

        return TimingResult(self.samples_ms, 0, "", self.target_rel_ci)

    @property
    def iqr_ms(self) -> float:
        return self._pooled().iqr_ms

    @property
    def cv(self) -> float:
        return self._pooled().cv

    @property
    def stop_reason(self) -> str:
        reasons = {t.stop_reason for t in self.repeats}
        return next((s for s in ("time_cap", "max_samples", "ci_target") if s in reasons), "")

    @property
    def rel_ci_halfwidth(self) -> float:
        med = self.median_ms
        return (self.ci_high_ms - self.ci_low_ms) / 2.0 / med if med > 0 else 0.0

    @property
    def noisy_reasons(self) -> list[str]:
        from bench.stats import order_stat_ranks
        from bench.stats.compare import range_coverage

        r = len(self.repeats)
        unit = "processes" if self.ci_covers == "between-process" else "runs in one process"
        out = []
        if order_stat_ranks(r, self.confidence) is None:
            need = next(k for k in range(r, 64) if order_stat_ranks(k, self.confidence) is not None)
            out.append(
                f"only {r} {unit}: the CI is the range of their medians, which covers the median "
                f"{range_coverage(r):.0%} of the time, not {self.confidence:.0%} (--repeat {need} or more)"
            )
        rel = self.rel_ci_halfwidth
        if rel > self.target_rel_ci:
            out.append(
                f"{self.ci_covers} CI half-width {rel:.2%} of the median exceeds target "
                f"{self.target_rel_ci:.2%} ({r} {unit}; more --repeat narrows it)"
            )
        return out

    @property
    def noisy(self) -> bool:
        return bool(self.noisy_reasons)

    def to_dict(self) -> dict[str, Any]:
        """The row's timing statistics for the sidecar (the per-process ones are in ``repeats``)."""
        return {
            "method": "hierarchical",
            "ci_covers": self.ci_covers,
            "repeats": len(self.repeats),
            "n": self.n,
            "median_ms": self.median_ms,
            "ci_low_ms": self.ci_low_ms,
            "ci_high_ms": self.ci_high_ms,
            "iqr_ms": self.iqr_ms,
            "cv": self.cv,
            "rel_ci_halfwidth": self.rel_ci_halfwidth,
            "noisy": self.noisy,
            "noisy_reasons": self.noisy_reasons,
            "stop_reason": self.stop_reason,
            "target_rel_ci": self.target_rel_ci,
            "confidence": self.confidence,
            "samples_ms": self.samples_ms,
        }


# per-process "noisy:" notes a repeated row keeps: a busy machine, a compilation during the timed steps
_KEPT_NOISY = ("noisy: machine busy", "noisy: torch.compile")


def _repeat_notes(measurements: Sequence[Any]) -> list[str]:
    """The repeats' notes for the row's reason: a note every repeat has once, others per repeat.

    Each process's own "noisy:" timing notes are dropped (the row's noise is the between-process
    CI's, ``RepeatedTiming.noisy_reasons``); a busy machine is kept, per repeat.
    """
    n_rep = len(measurements)
    per = [
        [n for n in m.notes if not n.startswith("noisy: ") or n.startswith(_KEPT_NOISY)] for m in measurements
    ]
    out: list[str] = []
    for k, notes in enumerate(per):
        for note in notes:
            if all(note in other for other in per):
                if note not in out:
                    out.append(note)
            else:
                out.append(f"repeat {k + 1}/{n_rep}: {note}")
    return out


def aggregate_repeats(outcomes: Sequence[Outcome], *, covers: str, options: RunRequest) -> Outcome:
    """One ok ``Outcome`` from R ok repeats of a configuration: what its row is built from.

    Time: ``RepeatedTiming``. Memory, FLOPs, peaks, items and extra columns: the first repeat's
    (deterministic, the same in every process), as are a parallel job's own figures (the
    measurement keeps its type); achieved TFLOP/s and MFU from the row's median; the noise
    figures: the largest over the repeats (the worst window); energy: the median of the repeats'
    figures (``bench.harness.energy.combine_repeats``); torch.compile's cold start: the median of the
    repeats' (``bench.harness.compile_stats.combine_repeats``). ``elapsed_s``: the sum.
    """
    from bench.harness.compile_stats import combine_repeats as combine_compile
    from bench.harness.energy import combine_repeats

    ms = [o.measurement for o in outcomes]
    first = ms[0]
    timing = RepeatedTiming([m.timing for m in ms], options.target_rel_ci, ci_covers=covers)
    notes = [f"noisy: {'; '.join(timing.noisy_reasons)}"] if timing.noisy else []
    notes += _repeat_notes(ms)
    others = [m.noise_other_cpu_pct for m in ms if m.noise_other_cpu_pct is not None]
    steals = [m.noise_steal_pct for m in ms if m.noise_steal_pct is not None]
    median_s = timing.median_ms / 1e3
    achieved = first.flops_per_step / median_s / 1e12 if first.flops_per_step and median_s > 0 else None
    peak, sheet = first.peak_tflops_measured, first.peak_tflops_datasheet
    m = dataclasses.replace(
        first,
        timing=timing,
        achieved_tflops=achieved,
        mfu=achieved / peak if achieved and peak else None,
        mfu_datasheet=achieved / sheet if achieved and sheet else None,
        extra=dict(first.extra),
        notes=notes,
        noise_other_cpu_pct=max(others) if others else None,
        noise_steal_pct=max(steals) if steals else None,
        energy=combine_repeats([getattr(x, "energy", None) for x in ms]),
        compile=combine_compile([getattr(x, "compile", None) for x in ms]),
    )
    job_tp = getattr(first, "job_throughput", None)
    if job_tp and first.timing.median_ms > 0 and median_s > 0:
        # a parallel job's throughput follows the row's median: the job's items per step / median
        m = dataclasses.replace(m, job_throughput=job_tp * first.timing.median_ms / 1e3 / median_s)
    return Outcome(
        "ok",
        "; ".join(notes),
        m,
        elapsed_s=sum(o.elapsed_s for o in outcomes),
        repeats=[repeat_record(k, o) for k, o in enumerate(outcomes)],
    )
