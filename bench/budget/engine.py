"""Run a budget plan: for each technique combination, search its largest batch, then measure it there.

Per combination, in the grid's order:

1. **Search** (``bench.budget.search.find_max_batch``): each probe is one isolated child running one
   step at one batch (``bench.run.execute.run_in_child`` with ``task="probe"``; a parallel strategy:
   one torchrun job, ``bench.run.launch.probe_parallel``; ``--no-isolation``: this process), judged
   by the device's fit rule (``bench.budget.fit``). A configuration ``dlbench run`` would skip here
   (amp-fp16 on a CPU, checkpointing in forward mode) is skipped without a probe.
2. **Measure** at the max batch with the same measurement as ``dlbench run``
   (``bench.run.execute.runner_for``: timing, memory and FLOP passes in a child; on CUDA under the
   same allocator cap as the probes), and append the row with ``budget_bytes``, ``max_batch`` and
   ``probes``; the sidecar record keeps every probe (``budget.probes``).

Each combination's row is written as soon as its measurement ends, so an interrupted budget run
keeps every finished combination. Searching a combination and then measuring it, rather than
searching every combination first, is what makes that so.

A combination whose smallest batch does not fit is a ``skipped`` row whose reason says what that
batch needs (``extra.budget_needs_bytes``); one whose smallest probe failed otherwise (an error or a
timeout that is not about memory) is a row of that status.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench import results
from bench.budget.fit import ProbeResult, judge
from bench.budget.plan import BudgetPlan
from bench.budget.search import SearchResult, find_max_batch
from bench.report.budget import BudgetReport, summarize
from bench.report.format import fmt_bytes
from bench.run.execute import Outcome, run_in_child, run_in_process, runner_for
from bench.run.grid import RunConfig, config_skip_reason, varying_params
from bench.signals import shielded


class BudgetProgress(Protocol):
    """What the engine reports as it goes (the CLI prints it; ``None`` reports nothing)."""

    def combo_start(self, i: int, n: int, label: str) -> None: ...
    def probe(self, label: str, result: ProbeResult) -> None: ...
    def measuring(self, label: str, batch: int) -> None: ...
    def combo_done(self, i: int, n: int, label: str, row: dict[str, Any]) -> None: ...


@dataclass
class BudgetRun:
    """What a budget run did: the rows it wrote (in order), each combination's search, the report."""

    plan: BudgetPlan
    rows: list[dict[str, Any]] = field(default_factory=list)
    searches: list[SearchResult | None] = field(default_factory=list)
    report: BudgetReport | None = None

    @property
    def csv_path(self) -> Path:
        return self.plan.run.writer.path

    @property
    def samples_path(self) -> Path:
        return self.plan.run.writer.samples_path

    @property
    def exit_code(self) -> int:
        """0 when every combination was searched and measured (or skipped), 1 when any failed."""
        return 1 if any(r["status"] in results.FAILED_STATUSES for r in self.rows) else 0


def probe_runner(plan: BudgetPlan) -> Callable[[RunConfig], Outcome]:
    """How one probe runs: a torchrun job for a parallel strategy, else a child (or this process)."""
    request = plan.request

    def run(cfg: RunConfig) -> Outcome:
        if cfg.parallel != "none":
            from bench.run.launch import probe_parallel

            return probe_parallel(cfg, request)
        if plan.run.isolation:
            return run_in_child(cfg, request, task="probe")
        return run_in_process(cfg, request, task="probe")

    return run


def execute_budget(
    plan: BudgetPlan,
    *,
    env: dict[str, Any],
    progress: BudgetProgress | None = None,
    prober: Callable[[RunConfig], Outcome] | None = None,
) -> BudgetRun:
    """Search and measure every combination of ``plan``, appending one row each to its CSV."""
    out = BudgetRun(plan)
    prober = prober or probe_runner(plan)
    varying = [v for v in varying_params(plan.combos) if v != "batch_size"]
    n = len(plan.combos)
    try:
        for i, combo in enumerate(plan.combos):
            label = combo.label(varying)
            if progress:
                progress.combo_start(i, n, label)
            row, search = _one(plan, combo, label, env=env, progress=progress, prober=prober)
            out.rows.append(row)
            out.searches.append(search)
            if progress:
                progress.combo_done(i, n, label, row)
    finally:
        plan.run.writer.unlock()
    out.report = summarize(
        out.rows,
        budget_bytes=plan.budget_bytes,
        device=plan.device,
        scenario=plan.spec.name,
        csv_path=str(out.csv_path),
    )
    return out


def _one(
    plan: BudgetPlan,
    combo: RunConfig,
    label: str,
    *,
    env: dict[str, Any],
    progress: BudgetProgress | None,
    prober: Callable[[RunConfig], Outcome],
) -> tuple[dict[str, Any], SearchResult | None]:
    """Search one combination, measure it at its max batch, write its row."""
    smallest = _at_batch(plan, combo, plan.step_of(combo))
    reason = config_skip_reason(plan.spec, smallest)
    if reason is not None:
        return _write(plan, smallest, Outcome("skipped", reason), None, env=env), None
    search = search_combination(plan, combo, prober=prober, progress=progress, label=label)
    first = search.probes[0]
    if search.max_batch == 0:
        if first.status == "skipped":
            outcome = Outcome("skipped", first.reason)
        elif first.status in ("ok", "oom"):
            outcome = Outcome("skipped", _needs(plan, first))
        else:
            outcome = Outcome(first.status, f"probing batch {first.batch}: {first.reason}")
        cfg = _at_batch(plan, combo, first.batch)
        extra = {"budget_smallest_batch": first.batch}
        if first.status in ("ok", "oom") and first.peak_bytes is not None:
            extra["budget_needs_bytes"] = first.peak_bytes
        return _write(plan, cfg, outcome, search, max_batch=0, extra=extra, env=env), search
    cfg = plan.at_batch(combo, search.max_batch)
    if progress:
        progress.measuring(label, search.max_batch)
    outcome = runner_for(cfg, plan.run.isolation)(cfg, plan.request, device_name=env.get("device_name"))
    if outcome.status != "ok":
        outcome.reason = f"measuring at the max batch {search.max_batch}: {outcome.reason or outcome.status}"
    # the figure the rule compared at the max batch: the table's peak (a compiled row's own memory
    # columns are its eager step's, bench.run.measure)
    at_max = next(p for p in reversed(search.probes) if p.batch == search.max_batch)
    found: dict[str, Any] = {"budget_peak_bytes": at_max.peak_bytes}
    if search.capped:
        found["budget_capped"] = True
    if at_max.judged_eager:
        found["budget_note"] = EAGER_NOTE
    return _write(plan, cfg, outcome, search, max_batch=search.max_batch, extra=found, env=env), search


EAGER_NOTE = (
    "compiled, but judged by the same step run eagerly: on a CPU MemTracker cannot see inside compiled "
    "code (on CUDA the compiled step's own reserved peak is judged)"
)


def search_combination(
    plan: BudgetPlan,
    combo: RunConfig,
    *,
    prober: Callable[[RunConfig], Outcome] | None = None,
    progress: BudgetProgress | None = None,
    label: str = "",
) -> SearchResult:
    """Stage 1 for one combination: its largest batch under the plan's budget (``find_max_batch``).

    Each probe runs ``combo`` at one batch through ``prober`` (default: ``probe_runner(plan)``) and
    is judged by the plan's fit rule; a batch ``dlbench run`` would skip, or the scenario refuses, is
    judged without running (``skipped`` / ``error``: does not fit).
    """
    run = prober or probe_runner(plan)

    def probe(batch: int) -> ProbeResult:
        try:
            cfg = plan.at_batch(combo, batch)
        except ValueError as exc:  # the scenario refuses this batch (a cross-field rule)
            r = judge(batch, rule=plan.rule, budget_bytes=plan.budget_bytes, status="error", reason=str(exc))
        else:
            why = config_skip_reason(plan.spec, cfg)
            if why is not None:
                r = judge(batch, rule=plan.rule, budget_bytes=plan.budget_bytes, status="skipped", reason=why)
            else:
                o = run(cfg)
                r = judge(
                    batch,
                    rule=plan.rule,
                    budget_bytes=plan.budget_bytes,
                    status=o.status,
                    reason=o.reason,
                    figures=o.measurement if o.status == "ok" and isinstance(o.measurement, dict) else None,
                    elapsed_s=o.elapsed_s,
                )
        if progress:
            progress.probe(label, r)
        return r

    return find_max_batch(
        probe, max_batch=plan.max_batch, multiple=plan.step_of(combo), tolerance=plan.tolerance
    )


def _at_batch(plan: BudgetPlan, combo: RunConfig, batch: int) -> RunConfig:
    """``combo`` at ``batch`` for its row; as it stands where the scenario refuses that batch (the
    probe of that batch says why)."""
    try:
        return plan.at_batch(combo, batch)
    except ValueError:
        return combo


def _needs(plan: BudgetPlan, first: ProbeResult) -> str:
    budget = fmt_bytes(plan.budget_bytes)
    if first.status == "oom":
        return (
            f"does not fit in {budget} even at batch {first.batch}: it ran out of memory under the "
            f"budget ({first.reason})"
        )
    what = "reserved peak" if plan.rule == "cuda" else "tracked peak"
    return (
        f"does not fit in {budget} even at batch {first.batch}: that batch needs "
        f"{fmt_bytes(first.peak_bytes)} ({what}, {first.peak_bytes} bytes)"
    )


def _write(
    plan: BudgetPlan,
    cfg: RunConfig,
    outcome: Outcome,
    search: SearchResult | None,
    *,
    max_batch: int | None = None,
    env: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the row as ``dlbench run`` does, add the budget columns, append it and its sidecar record."""
    writer = plan.run.writer
    row = results.build_row(
        cfg, outcome, run_id=plan.run.run_id, env=env, request=plan.request,
        columns=writer.columns,
    )  # fmt: skip
    row["max_batch"] = max_batch
    row["probes"] = search.n_probes if search is not None else 0
    row["extra"] = {**(row.get("extra") or {}), "budget_rule": plan.rule, **(extra or {})}
    budget = {
        "rule": plan.rule,
        "budget_bytes": plan.budget_bytes,
        "max_batch": max_batch,
        "tolerance": plan.tolerance,
        "batch_step": plan.step_of(cfg),
        "stopped_by": search.stopped_by if search is not None else "",
        "capped": search.capped if search is not None else False,
        "probes": [p.to_dict() for p in search.probes] if search is not None else [],
    }
    if (
        outcome.status != "skipped"
        and outcome.measurement is not None
        and not isinstance(outcome.measurement, dict)
    ):
        record = results.samples_record(row, outcome)
    else:
        record = {"scenario": row.get("scenario"), "status": outcome.status, "samples_ms": []}
    record["budget"] = budget
    with shielded():  # a signal waits until the row and its sidecar record are both written
        writer.append(row, record)
    return row
