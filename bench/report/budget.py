"""What ``dlbench budget`` concludes from its rows: the table, the Pareto front, one recommendation.

``summarize(rows)`` reads budget rows (``max_batch`` set; live dicts or a results file loaded with
``bench.results.load_results``) and returns a ``BudgetReport``:

- one ``Entry`` per technique combination: its max batch, the peak memory the fit rule compared
  (``cuda_reserved_peak_bytes`` on CUDA, ``peak_mem_bytes`` on CPU; for a parallel row the most
  loaded rank's), the job's throughput at that batch (``job_throughput``: the whole batch of a
  parallel job; the same as ``throughput`` for one process) with the 95% CI that follows from the
  step time's, and that throughput relative to the **baseline** of its group: fp32, no
  checkpointing, no compile, no parallel strategy, same mode and parameters;
- the **Pareto front** over (peak memory, throughput): the combinations that no other beats on both
  (``bench.stats.pareto``);
- one **recommendation** sentence per group: the fastest combination that fits, by how much it
  beats the baseline at the baseline's own max batch, and at which batch; a lead inside the noise
  (throughput CIs that overlap) is said to be one; where nothing fits, what the smallest batch needs.

``to_json`` / ``to_markdown`` render it (every cell and sentence escaped: text from a results file
never becomes markup); the CLI renders the same report as a rich table, and ``dlbench report`` draws
it (``bench.report.figures_budget``). It lives in the report layer, below the budget engine, so that
both can use it. Torch-free.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.report.escape import md_cell, md_text
from bench.report.format import fmt_bytes, fmt_si, is_missing, num
from bench.stats.pareto import pareto_front

# The fit rules of ``dlbench budget`` (``bench.budget.fit`` judges probes by them): what fits, in the
# words the output uses, and the results column each compares with the budget at the max batch.
RULES: dict[str, str] = {
    "cuda": (
        "cuda: the step ran under torch.cuda.set_per_process_memory_fraction(budget / total) without "
        "running out of memory, and its peak reserved memory is at most the budget"
    ),
    "cpu": (
        "cpu: the tracked peak bytes (MemTracker, every phase of the step) are at most the budget; the "
        "peak RSS increase is recorded, not enforced"
    ),
}
# the figure each rule compares with the budget: a results column of the row measured at the max batch
RULE_COLUMN: dict[str, str] = {"cuda": "cuda_reserved_peak_bytes", "cpu": "peak_mem_bytes"}


def rule_for(device: str) -> str:
    """The fit rule of a device: ``cuda`` for ``cuda``/``cuda:N``, else ``cpu``."""
    return "cuda" if str(device).startswith("cuda") else "cpu"


_NONE = ("", "none", None)


def _cell(row: Mapping[str, Any], key: str) -> Any:
    v = row.get(key)
    return None if is_missing(v) else v


def _extra(row: Mapping[str, Any]) -> dict[str, Any]:
    e = _cell(row, "extra")
    if isinstance(e, str):
        try:
            e = json.loads(e)
        except ValueError:
            return {}
    return dict(e) if isinstance(e, Mapping) else {}


def is_budget_row(row: Mapping[str, Any]) -> bool:
    """A row written by ``dlbench budget`` (its ``budget_bytes`` cell is filled)."""
    return _cell(row, "budget_bytes") is not None


def combination_label(row: Mapping[str, Any], varying: Sequence[str] = ()) -> str:
    """``amp-bf16 ckpt=full``, ``fp32 ckpt=none compile=default ddp(ws=2)``, ``... seq_len=256``."""
    parts = [str(_cell(row, "precision") or "?"), f"ckpt={_cell(row, 'checkpointing') or 'none'}"]
    comp = _cell(row, "compile")
    if comp not in _NONE:
        parts.append(f"compile={comp}")
    par = _cell(row, "parallel")
    if par not in _NONE:
        parts.append(f"{par}(ws={_cell(row, 'world_size')})")
    parts += [f"{c.removeprefix('param_')}={_cell(row, c)}" for c in varying]
    return " ".join(parts)


def _group_columns(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """(columns that identify a group, the varying ones shown in labels): mode, seed, channels_last and
    every parameter except the batch, which is what the search varies."""
    cols = ["mode", "seed", "channels_last"] + sorted(
        {k for r in rows for k in r if str(k).startswith("param_")}
    )
    varying = [c for c in cols if len({repr(_cell(r, c)) for r in rows}) > 1]
    return cols, varying


def is_baseline(row: Mapping[str, Any]) -> bool:
    """fp32, no checkpointing, no compile, no parallel strategy."""
    return (
        _cell(row, "precision") == "fp32"
        and _cell(row, "checkpointing") in _NONE
        and _cell(row, "compile") in _NONE
        and _cell(row, "parallel") in _NONE
    )


@dataclass
class Entry:
    """One technique combination of a budget run."""

    label: str
    group: str  # mode and the parameters that vary, for matching its baseline ("" with one group)
    status: str
    max_batch: int | None
    peak_bytes: float | None  # the figure the fit rule compared, at the max batch
    throughput: float | None  # the job's items per second at the max batch
    throughput_ci: tuple[float, float] | None
    unit: str
    probes: int | None
    reason: str = ""
    note: str = ""  # how the fit was judged, where it is not the rule's plain figure
    capped: bool = False  # the --max-batch cap itself fitted
    needs_bytes: float | None = None  # nothing fits: what the smallest batch needed
    smallest_batch: int | None = None
    baseline: bool = False
    relative: float | None = None  # throughput / the baseline's
    on_front: bool = False
    config_key: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.throughput is not None and self.peak_bytes is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "combination": self.label,
            "group": self.group,
            "status": self.status,
            "max_batch": self.max_batch,
            "peak_bytes": self.peak_bytes,
            "throughput": self.throughput,
            "throughput_ci": list(self.throughput_ci) if self.throughput_ci else None,
            "throughput_unit": self.unit,
            "relative_to_baseline": self.relative,
            "baseline": self.baseline,
            "pareto": self.on_front,
            "probes": self.probes,
            "capped": self.capped,
            "needs_bytes": self.needs_bytes,
            "smallest_batch": self.smallest_batch,
            "reason": self.reason,
            "note": self.note,
            "config_key": self.config_key,
        }


def _entry(row: Mapping[str, Any], rule: str, varying: Sequence[str], group: str) -> Entry:
    extra = _extra(row)
    thr = num(_cell(row, "job_throughput")) or num(_cell(row, "throughput"))
    med, lo, hi = (num(_cell(row, k)) for k in ("time_median_ms", "time_ci_low_ms", "time_ci_high_ms"))
    ci = None
    if thr and med and lo and hi:
        ci = (thr * med / hi, thr * med / lo)  # items per step are fixed: throughput ~ 1 / time
    # the figure the fit rule compared at the max batch (the search's), else the row's own column
    peak = num(extra.get("budget_peak_bytes"))
    if peak is None:
        peak = num(_cell(row, RULE_COLUMN[rule]))
        if rule == "cpu" and _cell(row, "parallel") not in _NONE:
            peak = num(_cell(row, "max_rank_peak_mem_bytes")) or peak
    unit = str(_cell(row, "throughput_unit") or "items/s")
    mb = num(_cell(row, "max_batch"))
    probes = num(_cell(row, "probes"))
    return Entry(
        label=combination_label(row, varying),
        group=group,
        status=str(_cell(row, "status") or ""),
        max_batch=int(mb) if mb is not None else None,
        peak_bytes=peak,
        throughput=thr,
        throughput_ci=ci,
        unit=unit,
        probes=int(probes) if probes is not None else None,
        reason=str(_cell(row, "reason") or ""),
        note=str(extra.get("budget_note") or ""),
        capped=bool(extra.get("budget_capped")),
        needs_bytes=num(extra.get("budget_needs_bytes")),
        smallest_batch=int(extra["budget_smallest_batch"]) if extra.get("budget_smallest_batch") else None,
        baseline=is_baseline(row),
        config_key=str(_cell(row, "config_key") or ""),
    )


@dataclass
class BudgetReport:
    """A budget run's conclusions (see the module docstring)."""

    scenario: str
    device: str
    budget_bytes: int | None
    rule: str
    entries: list[Entry] = field(default_factory=list)
    recommendations: list[str] = field(default_factory=list)
    csv_path: str = ""

    @property
    def rule_text(self) -> str:
        return RULES[self.rule]

    @property
    def front(self) -> list[Entry]:
        ok = [e for e in self.entries if e.on_front]
        return sorted(ok, key=lambda e: (e.group, e.peak_bytes or 0.0, -(e.throughput or 0.0)))

    @property
    def recommendation(self) -> str:
        return " ".join(self.recommendations)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "device": self.device,
            "budget_bytes": self.budget_bytes,
            "fit_rule": self.rule,
            "fit_rule_text": self.rule_text,
            "combinations": [e.to_dict() for e in self.entries],
            "pareto": [e.label for e in self.front],
            "recommendation": self.recommendation,
            "csv": self.csv_path,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str) + "\n"

    def to_markdown(self) -> str:
        return to_markdown(self)


def summarize(
    rows: Iterable[Mapping[str, Any]],
    *,
    budget_bytes: int | None = None,
    device: str | None = None,
    scenario: str | None = None,
    csv_path: str = "",
) -> BudgetReport:
    """The report of a budget run's rows (rows without ``budget_bytes`` are ignored)."""
    rows = [r for r in rows if is_budget_row(r)]
    device = device or (str(_cell(rows[0], "device")) if rows else "cpu")
    rule = rule_for(device)
    if budget_bytes is None and rows:
        budget_bytes = int(num(_cell(rows[0], "budget_bytes")) or 0) or None
    group_cols, varying = _group_columns(rows)
    shown = [c for c in varying if c.startswith("param_")]
    entries: list[Entry] = []
    for r in rows:
        group = " ".join(f"{c.removeprefix('param_')}={_cell(r, c)}" for c in varying)
        entries.append(_entry(r, rule, shown, group))
    report = BudgetReport(
        scenario=scenario or (str(_cell(rows[0], "scenario")) if rows else ""),
        device=device,
        budget_bytes=budget_bytes,
        rule=rule,
        entries=entries,
        csv_path=csv_path,
    )
    for group in dict.fromkeys(e.group for e in entries):
        members = [e for e in entries if e.group == group]
        ok = [e for e in members if e.ok]
        base = next((e for e in ok if e.baseline), None)
        for e in ok:
            e.relative = (e.throughput or 0.0) / base.throughput if base and base.throughput else None
        points = [(float(e.peak_bytes or 0.0), float(e.throughput or 0.0)) for e in ok]
        for i in pareto_front(points):
            ok[i].on_front = True
        report.recommendations.append(recommend(members, budget_bytes, group=group))
    return report


def _thr(e: Entry) -> str:
    return fmt_si(e.throughput, e.unit)


def _overlap(a: Entry, b: Entry) -> bool:
    return bool(a.throughput_ci and b.throughput_ci and a.throughput_ci[0] <= b.throughput_ci[1])


def recommend(entries: Sequence[Entry], budget_bytes: int | None, *, group: str = "") -> str:
    """One sentence: what to use within the budget, by how much, at which batch (see the module docstring)."""
    where = f" ({group})" if group else ""
    budget = fmt_bytes(budget_bytes) if budget_bytes else "the budget"
    ok = sorted((e for e in entries if e.ok), key=lambda e: -(e.throughput or 0.0))
    if not ok:
        needs = [e for e in entries if e.needs_bytes is not None]
        if needs:
            e = min(needs, key=lambda e: e.needs_bytes or 0.0)
            return (
                f"Nothing fits in {budget}{where}: even at batch {e.smallest_batch or 1}, the leanest "
                f"combination, {e.label}, needs {fmt_bytes(e.needs_bytes)}."
            )
        return f"No combination could be measured in {budget}{where}; see the reasons above."
    best = ok[0]
    cap = " (the --max-batch cap: a larger batch may fit)" if best.capped else ""
    base = next((e for e in ok if e.baseline), None)
    second = ok[1] if len(ok) > 1 else None
    if base is best:
        text = (
            f"Use {best.label} (the baseline) at batch {best.max_batch}{cap}{where}: {_thr(best)}, the "
            f"fastest of the {len(ok)} combination(s) that fit in {budget}"
        )
        if second is not None:
            text += f"; the next, {second.label} at batch {second.max_batch}, reaches {_ratio(second, best)}"
    elif base is not None:
        text = (
            f"Use {best.label} at batch {best.max_batch}{cap}{where}: {_ratio(best, base)} the throughput of "
            f"the baseline {base.label} at its own max batch {base.max_batch} ({_thr(best)} vs "
            f"{_thr(base)}), within {budget}"
        )
    else:
        missing = next((e for e in entries if e.baseline), None)
        why = "did not fit" if missing is not None else "was not among the combinations"
        text = f"Use {best.label} at batch {best.max_batch}{cap}{where}: {_thr(best)} in {budget}"
        if second is not None:
            text += f", {_ratio(best, second)} the next fastest, {second.label}"
        text += f" (the baseline, fp32 without checkpointing, {why})"
    if second is not None and _overlap(best, second):
        text += f"; its lead over {second.label} is within the measurement's noise (their CIs overlap)"
    return text + "."


def _ratio(a: Entry, b: Entry) -> str:
    return f"{(a.throughput or 0.0) / (b.throughput or 1.0):.2f}x"


def table_rows(report: BudgetReport) -> list[list[str]]:
    """The table's cells, one list per combination (the CLI's rich table and markdown share them).

    ``*`` after a combination marks the Pareto front; ``base`` in the relative column, the baseline;
    throughput is in the unit of the header (``table_head``).
    """
    out = []
    for e in report.entries:
        rel = "base" if e.baseline and e.ok else f"{e.relative:.2f}x" if e.relative is not None else "-"
        notes = [f"{e.status}: {e.reason}"] if e.status != "ok" else []
        if e.status == "ok" and e.capped:
            notes.append("the --max-batch cap fitted: a larger batch may fit too")
        if e.note:
            notes.append(e.note)
        note = "; ".join(notes)
        out.append(
            [
                e.label + (" *" if e.on_front else ""),
                str(e.max_batch) if e.max_batch is not None else "-",
                fmt_bytes(e.peak_bytes),
                fmt_si(e.throughput) if e.throughput is not None else "-",
                rel,
                str(e.probes) if e.probes is not None else "-",
                note,
            ]
        )
    return out


def table_head(report: BudgetReport) -> list[str]:
    """The column names: ``combination`` ... ``<unit>`` (throughput's, e.g. ``tokens/s``) ... ``notes``."""
    units = {e.unit for e in report.entries if e.throughput is not None}
    unit = units.pop() if len(units) == 1 else "items/s"
    return ["combination", "max batch", "peak", unit, "vs baseline", "probes", "notes"]


def front_line(report: BudgetReport) -> str:
    """``Pareto front (least memory, most throughput): A (120 MiB, 5.1k tokens/s); B (...)``."""
    items = [f"{e.label} ({fmt_bytes(e.peak_bytes)}, {_thr(e)})" for e in report.front]
    return "Pareto front (* above; peak memory vs throughput): " + (
        "; ".join(items) if items else "empty (nothing fit)"
    )


def to_markdown(report: BudgetReport) -> str:
    head = table_head(report)
    where = f"{fmt_bytes(report.budget_bytes)} on {md_text(report.device)}"
    lines = [
        f"## dlbench budget {md_text(report.scenario)}: {where}",
        "",
        f"Fit rule: {md_text(report.rule_text)}. Peak: the figure the rule compares, at the max batch.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(md_cell(c) for c in cells) + " |" for cells in table_rows(report)]
    lines += ["", md_text(front_line(report)), "", md_text(report.recommendation), ""]
    return "\n".join(lines)
