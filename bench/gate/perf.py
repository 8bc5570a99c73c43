"""Timing checks for CI that a slower or faster machine cannot flake: interleaved ratios, not times.

A CI machine may be 2x slower than the one a baseline was made on, or busy; an absolute step time
compared with a committed one would flake either way. What does not move with the machine's speed
is a *ratio* of two workloads measured in the same time windows. Each check here therefore runs
one ``dlbench gate`` (``plan_gate`` / ``run_gate``, both sides from this tree) between a torch
reference (BASE) and the dlcore variant (NEW), and compares the NEW/BASE median slice ratio with a
reference ratio committed in ``results/baseline/perf.json``:

* ``attention``: ``dlcore.MultiHeadAttention`` vs ``torch.nn.MultiheadAttention`` (``impl``);
* ``optimizer``: ``dlcore.AdamWWithWarmup`` vs torch's fused AdamW (``optimizer``);
* ``checkpointing``: ``checkpointing=full`` vs ``none`` on a small encoder (the overhead of
  recomputing the forward in backward).

Verdict per check (``judge``), with ``limit = reference * (1 + tolerance)``:

* ``"slower"`` -- the ratio's CI lies entirely above ``limit``: the dlcore side got significantly
  slower relative to its reference, beyond the tolerance. The only failing verdict;
* ``"faster"`` -- the CI lies entirely below ``reference / (1 + tolerance)``: fine, with a note to
  refresh the reference (``dlbench baseline update --ratios``) so the gain is kept;
* ``"unclear"`` -- the CI straddles the limit but the median ratio itself lies above it: the data
  lean towards a regression and cannot clear it, so the check fails closed (more ``--slices``
  decide). Without it, one noisy slice among the fewest accepted (6, whose CI is their (min, max))
  would let a 2x slowdown pass;
* ``"ok"`` -- anything else (a CI that straddles the limit with the median below it);
* ``"error"`` -- the gate could not measure (a worker died): fails, as the gate fails closed.

The tolerance absorbs what interleaving cannot cancel: the ratio of two *different* workloads
moves a little with the machine (thread count, cache sizes, memory bandwidth under load), unlike
an A/A ratio. The file records the torch version and thread count it was measured with; a check
under others says so beside its result.

``DLBENCH_PLANT_SLOWDOWN=f`` in this process's environment reaches NEW's workers only (see
``run_gate``), so it plants a slowdown in the dlcore side of every check run (tests, and
``nox -s perf`` when it is to be seen failing).

Library only (no rich, no typer); ``bench.cli.gate`` (``dlbench baseline ratios`` and
``dlbench baseline update --ratios``) renders and exits.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.gate.baseline import PERF_KIND as KIND
from bench.gate.baseline import PERF_VERSION as VERSION
from bench.gate.baseline import check_writable, default_perf_path, load_references, write_document
from bench.gate.interleave import GatePlan, GateResult, check_slice_count, plan_gate, run_gate
from bench.gate.worker import WorkerError

STATUSES = ("ok", "faster", "slower", "unclear", "error")
UPDATE_HINT = "dlbench baseline update --ratios"

Runner = Callable[[GatePlan], GateResult]  # run_gate, or a fake in tests


@dataclass(frozen=True)
class PerfCheck:
    """One timing ratio: NEW (the dlcore variant) over BASE (the torch reference), same tree.

    ``base`` / ``new`` are the ``--base-param`` / ``--new-param`` of ``dlbench gate`` (scenario
    parameters or ``mode`` / ``precision`` / ``checkpointing``), ``params`` the ``--param`` of both.
    The measuring options are sized so a check takes about 10-20 s on 2 cores.
    """

    name: str
    scenario: str
    preset: str
    base: Mapping[str, str]
    new: Mapping[str, str]
    params: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    # written to perf.json by `update`; the file's value is the one checked. At most 10 % for
    # attention, so that a 20 % slowdown of dlcore's attention fails `nox -s perf`.
    tolerance: float = 0.10
    slices: int = 12
    slice_time_s: float = 0.1
    pairs: int = 2

    def plan(self, *, slices: int | None = None, device: str = "cpu") -> GatePlan:
        """The gate of this check (both sides this tree), validated; ``slices`` overrides the declared.

        ``UsageError`` naming ``--slices`` when this check's pairs x slices ratios could not bound the
        CI (``check_slice_count``): such a check could never fail, whatever the slowdown.
        """
        k = self.slices if slices is None else slices
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise UsageError(f"--slices: expected a positive integer, got {k!r}")
        check_slice_count(k, self.pairs, flag="--slices", pairs_flag="")
        return plan_gate(
            self.scenario,
            preset=self.preset,
            params=dict(self.params),
            base_params=dict(self.base),
            new_params=dict(self.new),
            device=device,
            threshold=self.tolerance,
            slices=k,
            slice_time_s=self.slice_time_s,
            pairs=self.pairs,
        )

    def config_dict(self) -> dict[str, Any]:
        """What the reference ratio depends on (stored beside it; a mismatch makes it stale)."""
        return {
            "scenario": self.scenario,
            "preset": self.preset,
            "params": dict(self.params),
            "base": dict(self.base),
            "new": dict(self.new),
        }


CHECKS: tuple[PerfCheck, ...] = (
    PerfCheck(
        "attention",
        "attention",
        "default",
        base={"impl": "torch"},
        new={"impl": "dlcore"},
        params={"seq_len": "64"},
        description="dlcore.MultiHeadAttention / nn.MultiheadAttention, train step, fp32",
    ),
    PerfCheck(
        "optimizer",
        "optimizer",
        "default",
        base={"optimizer": "adamw_fused"},
        new={"optimizer": "adamw_warmup"},
        params={"num_params": "2097152"},
        description="dlcore.AdamWWithWarmup / torch AdamW(fused=True), one step over 2 Mi fp32 parameters",
        tolerance=0.15,  # a memory-bound step: its ratio to a fused kernel moves with memory bandwidth
    ),
    PerfCheck(
        "checkpointing",
        "encoder",
        "default",
        base={"checkpointing": "none"},
        new={"checkpointing": "full"},
        params={"seq_len": "32", "width": "128"},
        description="activation checkpointing overhead: encoder train step, checkpointing full / none",
        tolerance=0.15,  # 1.55-1.74 over 5 runs here: forward/backward cost balance varies by machine
    ),
)


def check_names(checks: Sequence[PerfCheck] = CHECKS) -> list[str]:
    return [c.name for c in checks]


def select_checks(names: Sequence[str] | None, checks: Sequence[PerfCheck] = CHECKS) -> list[PerfCheck]:
    """The checks named (all when ``names`` is empty), in declared order; ``UsageError`` if unknown."""
    if not names:
        return list(checks)
    known = {c.name: c for c in checks}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"--check: unknown check {unknown[0]!r}; expected one of {check_names(checks)}")
    wanted = set(names)
    return [c for c in checks if c.name in wanted]


# ------------------------------------------------------------------------------------------------
# the reference file: found, checked and written by bench.gate.baseline (one place for both files)
# ------------------------------------------------------------------------------------------------
def _bad(p: Path, why: str) -> UsageError:
    return UsageError(f"--perf: {p}: {why}")


def reference_for(
    data: Mapping[str, Any], check: PerfCheck, path: Path | str | None = None
) -> tuple[float, float]:
    """``(reference, tolerance)`` of ``check``; ``UsageError`` when absent or measured for another config."""
    p = Path(path) if path is not None else default_perf_path()
    entry = data["checks"].get(check.name)
    hint = f"`{UPDATE_HINT} --check {check.name}`"
    if entry is None:
        raise _bad(p, f"no reference for check {check.name!r}; measure one with {hint}")
    if entry["config"] != check.config_dict():
        raise _bad(
            p,
            f"the reference for {check.name!r} was measured for {entry['config']}, the check is now "
            f"{check.config_dict()}; re-measure it with {hint}",
        )
    return float(entry["reference"]), float(entry["tolerance"])


# ------------------------------------------------------------------------------------------------
# the verdict
# ------------------------------------------------------------------------------------------------
def judge(
    reference: float, tolerance: float, ci_low: float, ci_high: float, ratio: float | None = None
) -> tuple[str, str]:
    """``(status, note)`` of a measured ratio (its CI, and its median ``ratio`` when known) against
    ``reference`` (see the module docstring)."""
    limit = reference * (1.0 + tolerance)
    floor = reference / (1.0 + tolerance)
    if ci_low > limit:
        return "slower", (
            f"CI [{ci_low:.3f}, {ci_high:.3f}] lies above {limit:.3f} = reference {reference:.3f} "
            f"x (1 + {tolerance:.0%}): the dlcore side is significantly slower than its reference"
        )
    if ratio is not None and ratio > limit:
        return "unclear", (
            f"the median ratio {ratio:.3f} lies above {limit:.3f} = reference {reference:.3f} x "
            f"(1 + {tolerance:.0%}) but its CI [{ci_low:.3f}, {ci_high:.3f}] does not: failing closed; "
            "more --slices decide"
        )
    if ci_high < floor:
        return "faster", (
            f"CI [{ci_low:.3f}, {ci_high:.3f}] lies below {floor:.3f}: faster than the reference; "
            f"run `{UPDATE_HINT}` and commit to keep the gain"
        )
    return "ok", ""


@dataclass
class PerfOutcome:
    """One check's result: the ratio and CI, the reference and limit, the status."""

    check: PerfCheck
    reference: float
    tolerance: float
    status: str
    note: str = ""
    ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n_slices: int = 0
    base_median_ms: float | None = None
    new_median_ms: float | None = None
    threads: int | None = None
    elapsed_s: float = 0.0

    @property
    def limit(self) -> float:
        return self.reference * (1.0 + self.tolerance)

    @property
    def failed(self) -> bool:
        return self.status in ("slower", "unclear", "error")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.check.name,
            "description": self.check.description,
            **self.check.config_dict(),
            "reference": self.reference,
            "tolerance": self.tolerance,
            "limit": self.limit,
            "ratio": self.ratio,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n_slices": self.n_slices,
            "base_median_ms": self.base_median_ms,
            "new_median_ms": self.new_median_ms,
            "threads": self.threads,
            "status": self.status,
            "note": self.note,
            "elapsed_s": self.elapsed_s,
        }


@dataclass
class PerfReport:
    """Every check's outcome and what the references were measured with."""

    path: Path
    outcomes: list[PerfOutcome]
    measured_with: dict[str, Any]  # torch_version, threads of the reference file
    torch_now: str
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(o.failed for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def failures(self) -> list[str]:
        return [o.check.name for o in self.outcomes if o.failed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "dlbench-perf-check",
            "version": VERSION,
            "path": str(self.path),
            "ok": self.ok,
            "failed": self.failures(),
            "measured_with": self.measured_with,
            "torch_now": self.torch_now,
            "notes": list(self.notes),
            "checks": [o.to_dict() for o in self.outcomes],
        }


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _threads(result: GateResult) -> int | None:
    ts = {w.get("threads") for ws in result.workers.values() for w in ws}
    return ts.pop() if len(ts) == 1 else None


def outcome_of(check: PerfCheck, reference: float, tolerance: float, result: GateResult) -> PerfOutcome:
    """Judge one gate result (its slice-ratio estimate) against ``reference``."""
    est = result.estimate
    d = result.to_dict()
    lo, hi = float(est.ci_low), float(est.ci_high)
    status, note = judge(reference, tolerance, lo, hi, float(est.ratio))
    if not (math.isfinite(hi) and lo > 0):
        note = (note + "; " if note else "") + f"too few slices for a CI ({len(result.slices)})"
    return PerfOutcome(
        check,
        reference,
        tolerance,
        status,
        note,
        ratio=float(est.ratio),
        ci_low=_finite(lo),
        ci_high=_finite(hi),
        n_slices=len(result.slices),
        base_median_ms=d["base"]["median_ms"],
        new_median_ms=d["new"]["median_ms"],
        threads=_threads(result),
        elapsed_s=result.elapsed_s,
    )


def run_checks(
    path: Path | str | None = None,
    names: Sequence[str] | None = None,
    *,
    slices: int | None = None,
    checks: Sequence[PerfCheck] = CHECKS,
    runner: Runner | None = None,
    on_outcome: Callable[[PerfOutcome], None] | None = None,
) -> PerfReport:
    """Run the checks named (all by default) against the reference file; every input checked first.

    ``UsageError`` (nothing measured) for a bad or missing file, an unknown or stale check; a
    check whose gate cannot measure (``WorkerError``) is an ``"error"`` outcome and the others
    still run. ``on_outcome`` receives each outcome as it is judged (progress for CI logs).
    """
    import torch

    p = Path(path) if path is not None else default_perf_path()
    selected = select_checks(names, checks)
    data = load_references(p)
    refs = {c.name: reference_for(data, c, p) for c in selected}
    plans = {c.name: c.plan(slices=slices) for c in selected}
    run = runner if runner is not None else run_gate
    measured_with = {k: data.get(k) for k in ("torch_version", "threads", "measured_at")}
    outcomes: list[PerfOutcome] = []
    for c in selected:
        ref, tol = refs[c.name]
        t0 = time.monotonic()
        try:
            result = run(plans[c.name])
        except WorkerError as exc:
            out = PerfOutcome(c, ref, tol, "error", f"the gate could not measure: {exc}")
            out.elapsed_s = time.monotonic() - t0
        else:
            out = outcome_of(c, ref, tol, result)
        outcomes.append(out)
        if on_outcome is not None:
            on_outcome(out)
    notes = []
    if data.get("torch_version") and data["torch_version"] != torch.__version__:
        notes.append(
            f"the references were measured with torch {data['torch_version']}, "
            f"this is torch {torch.__version__}"
        )
    threads = {o.threads for o in outcomes if o.threads is not None}
    if data.get("threads") and threads and threads != {data["threads"]}:
        notes.append(
            f"the references were measured with {data['threads']} threads, here {sorted(threads)}: "
            "ratios of different workloads move with the thread count"
        )
    return PerfReport(p, outcomes, measured_with, torch.__version__, notes)


# ------------------------------------------------------------------------------------------------
# measuring the references
# ------------------------------------------------------------------------------------------------
def measure_reference(
    check: PerfCheck,
    runs: int = 3,
    *,
    slices: int | None = None,
    runner: Runner | None = None,
    on_run: Callable[[PerfCheck, int, GateResult], None] | None = None,
) -> dict[str, Any]:
    """The perf.json entry of ``check``: the median of ``runs`` gate ratios, each run recorded."""
    if isinstance(runs, bool) or not isinstance(runs, int) or not 1 <= runs <= 100:
        raise UsageError(f"--runs: expected an integer from 1 to 100, got {runs!r}")
    plan = check.plan(slices=slices)
    run = runner if runner is not None else run_gate
    results = []
    for i in range(runs):
        res = run(plan)
        results.append(res)
        if on_run is not None:
            on_run(check, i, res)
    ratios = [float(r.estimate.ratio) for r in results]
    return {
        "description": check.description,
        "config": check.config_dict(),
        "reference": round(statistics.median(ratios), 4),
        "tolerance": check.tolerance,
        "runs": [
            {
                "ratio": round(float(r.estimate.ratio), 4),
                "ci_low": _finite(r.estimate.ci_low),
                "ci_high": _finite(r.estimate.ci_high),
                "n_slices": len(r.slices),
                "base_median_ms": r.to_dict()["base"]["median_ms"],
                "new_median_ms": r.to_dict()["new"]["median_ms"],
                "elapsed_s": round(r.elapsed_s, 1),
            }
            for r in results
        ],
        "options": {
            "slices": plan.options.slices,
            "slice_time_s": plan.options.slice_time_s,
            "pairs": plan.options.pairs,
        },
        "threads": _threads(results[0]) if results else None,
    }


def update_references(
    path: Path | str | None = None,
    names: Sequence[str] | None = None,
    *,
    runs: int = 3,
    slices: int | None = None,
    checks: Sequence[PerfCheck] = CHECKS,
    runner: Runner | None = None,
    on_run: Callable[[PerfCheck, int, GateResult], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Re-measure the checks named (all by default) and write the file; other checks' entries are kept.

    Entries of checks no longer declared are dropped. Returns the path and the written document.
    """
    import os
    import platform

    import torch

    from bench.harness.env import cpu_model

    p = check_writable(Path(path) if path is not None else default_perf_path(), "--perf")  # before measuring
    selected = select_checks(names, checks)
    old: dict[str, Any] = {}
    if p.exists() and names:
        old = load_references(p)["checks"]
    if isinstance(runs, bool) or not isinstance(runs, int) or not 1 <= runs <= 100:
        raise UsageError(f"--runs: expected an integer from 1 to 100, got {runs!r}")
    for c in selected:  # every check's settings, before the first is measured
        c.plan(slices=slices)
    entries = {
        c.name: measure_reference(c, runs, slices=slices, runner=runner, on_run=on_run) for c in selected
    }
    declared = check_names(checks)
    merged: dict[str, Any] = {
        n: entries[n] if n in entries else old[n] for n in declared if n in entries or n in old
    }
    threads = {e.get("threads") for e in merged.values()} - {None}
    doc = {
        "kind": KIND,
        "version": VERSION,
        "about": (
            "Reference NEW/BASE timing ratios (dlcore variant / torch reference), each the median of "
            "interleaved `dlbench gate` runs on one machine. `dlbench baseline ratios` fails a check "
            "when its ratio's CI lies above reference x (1 + tolerance). Re-measure on a quiet machine "
            f"with `{UPDATE_HINT}` and commit."
        ),
        "torch_version": torch.__version__,
        "threads": threads.pop() if len(threads) == 1 else None,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "checks": merged,
    }
    write_document(p, doc)
    return p, doc


__all__ = [
    "CHECKS",
    "KIND",
    "PerfCheck",
    "PerfOutcome",
    "PerfReport",
    "judge",
    "load_references",
    "measure_reference",
    "outcome_of",
    "reference_for",
    "run_checks",
    "select_checks",
    "update_references",
]
