"""What "fits" means: the two fit rules, and one probe's verdict under them. Torch-free.

A probe (``bench.budget.probe``) runs one step of a configuration in an isolated child and reports
its memory figures; the parent judges them here:

- **cuda** (a CUDA device): the child ran the step under
  ``torch.cuda.set_per_process_memory_fraction(budget / total)``, so the caching allocator refuses
  to hold more than the budget, as a smaller card would; the step fits when it ran without running
  out of memory *and* the peak reserved by the allocator (``max_memory_reserved``, per phase) is at
  most the budget. This makes a 24 GiB card testable on an 80 GiB one. What the cap does not cover:
  the CUDA context and libraries' own memory outside the caching allocator.
- **cpu**: nothing can cap the allocator, so the rule is the tracked peak: the live tensor bytes that
  ``MemTracker`` counts over every phase of the step (``peak_mem_bytes`` of ``dlbench run``, exact
  and deterministic) must be at most the budget. The process's peak RSS increase over the step is
  recorded beside it (allocator slack, the interpreter, kernels' scratch memory), not enforced: it is
  not reproducible from run to run and includes memory the model does not own.

A probe that ran out of memory, crashed, timed out or raised counts as "does not fit"; a
configuration found unable to run (``skipped``) stops its search.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from bench.report.budget import RULES, rule_for  # the rules' words and names live with their display
from bench.report.format import fmt_bytes

__all__ = ["RULES", "ProbeResult", "judge", "rule_for"]


@dataclass
class ProbeResult:
    """One probe: a batch, how its child ended, its memory figures, and whether it fits."""

    batch: int
    status: str  # the child's: ok | oom | error | timeout | skipped
    fits: bool
    peak_bytes: int | None = None  # the figure the rule compares: reserved (cuda) or tracked (cpu)
    tracked_peak_bytes: int | None = None  # MemTracker's peak over the phases (CUDA: allocated)
    reserved_peak_bytes: int | None = None  # CUDA only
    rss_increase_bytes: int | None = None  # peak RSS over the step minus RSS before building
    judged_eager: bool = False  # a compiled step on CPU: the figures are its eager run's (see probe)
    reason: str = ""
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self, budget_bytes: int) -> str:
        """``fits (120 MiB <= 256 MiB)``, ``does not fit (300 MiB > 256 MiB)``, ``does not fit: oom ...``."""

        if self.status == "ok" and self.peak_bytes is not None:
            op = "<=" if self.fits else ">"
            verdict = "fits" if self.fits else "does not fit"
            return f"{verdict} ({fmt_bytes(self.peak_bytes)} {op} {fmt_bytes(budget_bytes)})"
        if self.status == "skipped":
            return f"skipped: {self.reason}"
        return f"does not fit: {self.status}{': ' + self.reason if self.reason else ''}"


def judge(
    batch: int,
    *,
    rule: str,
    budget_bytes: int,
    status: str,
    reason: str = "",
    figures: Mapping[str, Any] | None = None,
    elapsed_s: float = 0.0,
) -> ProbeResult:
    """The verdict of one probe: ``figures`` are the child's (``bench.budget.probe.probe_step``)."""
    f = dict(figures or {})
    tracked = f.get("tracked_peak_bytes")
    reserved = f.get("reserved_peak_bytes")
    peak = reserved if rule == "cuda" else tracked
    if status == "ok" and peak is None:
        status, reason = "error", f"the probe gave no {'reserved' if rule == 'cuda' else 'tracked'} peak"
    return ProbeResult(
        batch=batch,
        status=status,
        fits=status == "ok" and peak is not None and int(peak) <= budget_bytes,
        peak_bytes=int(peak) if peak is not None else None,
        tracked_peak_bytes=int(tracked) if tracked is not None else None,
        reserved_peak_bytes=int(reserved) if reserved is not None else None,
        rss_increase_bytes=f.get("rss_increase_bytes"),
        judged_eager=bool(f.get("judged_eager")),
        reason=reason,
        elapsed_s=round(float(elapsed_s), 3),
    )
