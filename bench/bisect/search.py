"""The bisection, on an abstract gate: confirm, binary search, skips, re-measurement, the culprit's step.

``bisect(good, bad, commits, gate, ...)`` finds which commit of ``commits`` (the first-parent
history ``GOOD..BAD``, oldest first, BAD last) made the scenario slower, using only
``gate(base, new, slices, extend) -> Measurement``: one interleaved gate of two commits
(``bench.bisect.probe`` runs the real one; the tests pass a fake, so every rule below is proven
without timing anything). The gate calls ``extend(measurement)`` after measuring: a larger slice
count means "measure on, with the same workers, up to that many", None means "done".

1. **Confirm**: gate GOOD against BAD. Not ``slower`` -> outcome ``nothing`` (exit 0): there is
   nothing to find at this threshold. GOOD or BAD that cannot be measured -> ``CannotBisect``.
2. **Binary search** over the commits between: the known-good end ``lo`` (GOOD) and the known-slower
   end ``hi`` (BAD). Each probe gates GOOD against the candidate nearest the middle: ``slower``
   moves ``hi`` to it, ``same`` or ``faster`` moves ``lo``. GOOD is the base of every probe, so each
   probe asks "is this commit slower than GOOD", which is monotone in the history even when the
   machine is not (both sides of each gate share its time windows).
3. An ``inconclusive`` gate is measured again with twice the slices, up to ``max_slices`` (the
   gate goes on with the workers it has: the slices already measured count, and no second start
   or warm-up is paid); still inconclusive, the commit is **skipped**, as ``git bisect skip``
   skips one: the next candidate is the unskipped one nearest the middle. A commit whose tree
   cannot build the scenario (``Unmeasurable``: no ``bench/workload.py``, an import error, a build
   error, a configuration that differs from GOOD's) is skipped the same way, with its reason.
4. **The culprit's own step**: the first slower commit is gated against its parent, so the reported
   ratio is that commit's own slowdown (the probe of GOOD against it is reused when its parent is
   GOOD). Its verdict decides the outcome:

   * ``culprit``: the step is ``slower`` (or could not be measured; the reason is kept);
   * ``steps``: it is not -- the slowdown arrived in several smaller steps, none slower than the
     threshold against its parent. ``rises`` lists, in history order, where the measured ratio
     against GOOD rose;
   * ``range``: skipped commits lie between the last good and the first slower commit, so the
     first slower one is any of them (``range``); the step is gated across the whole range.

Every gate run is one ``Probe`` in the log (gates that could not measure included), its
earlier inconclusive looks in ``looks``. Torch-free, no git, no process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

SKIPPED = "skipped"  # a probe's verdict when the gate could not measure the pair
ROLES = ("confirm", "probe", "step")  # GOOD vs BAD; GOOD vs a candidate; the culprit's parent vs it
OUTCOMES = ("culprit", "steps", "range", "nothing")


@dataclass(frozen=True)
class Commit:
    """A commit as the report names it: full and short hash, subject, author date (ISO 8601)."""

    sha: str
    short: str
    subject: str = ""
    date: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"commit": self.sha, "short": self.short, "subject": self.subject, "date": self.date}


@dataclass(frozen=True)
class Measurement:
    """What one gate found: its verdict and NEW/BASE ratio with the CI (None: an unbounded end)."""

    verdict: str  # "slower" | "same" | "faster" | "inconclusive"
    ratio: float
    ci_low: float | None
    ci_high: float | None
    slices: int  # slices per worker pair and side the result covers

    def to_dict(self) -> dict[str, Any]:
        return {
            "slices": self.slices,
            "verdict": self.verdict,
            "ratio": self.ratio,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
        }


class Unmeasurable(Exception):
    """The gate could not measure a pair: a tree that cannot build the scenario, a worker that died."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Extend = Callable[[Measurement], int | None]
GateFn = Callable[[Commit, Commit, int, Extend], Measurement]


@dataclass(frozen=True)
class Probe:
    """One gate of the log: ``commit`` (NEW) against ``base`` (BASE), what it found, how long it took."""

    n: int  # 1-based: the n-th gate of the bisection
    role: str  # ROLES
    base: Commit
    commit: Commit
    slices: int  # slices per worker pair and side (the gate's --slices)
    verdict: str  # a gate verdict, or SKIPPED (could not be measured: ``reason``)
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    seconds: float
    reason: str = ""
    looks: tuple[Measurement, ...] = ()  # the inconclusive results before the last, each re-measured

    @property
    def measured(self) -> bool:
        return self.verdict != SKIPPED

    @property
    def decisive(self) -> bool:
        """Measured and not inconclusive: the probe moves the search."""
        return self.measured and self.verdict != "inconclusive"

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "role": self.role,
            **self.commit.to_dict(),
            "base": self.base.sha,
            "base_short": self.base.short,
            "ratio": self.ratio,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "verdict": self.verdict,
            "slices": self.slices,
            "seconds": round(self.seconds, 3),
            "reason": self.reason,
            "looks": [m.to_dict() for m in self.looks],
        }


@dataclass(frozen=True)
class GateStart:
    """A gate about to run: which, and about how many more a bisection needs after it (at most)."""

    n: int
    role: str
    base: Commit
    commit: Commit
    slices: int
    left: int  # gates still to run after this one if nothing is skipped


@dataclass(frozen=True)
class MoreSlices:
    """Gate ``n`` was inconclusive at ``looked.slices`` slices and measures on up to ``slices``."""

    n: int
    looked: Measurement
    slices: int


Event = GateStart | MoreSlices | Probe  # what ``on_event`` receives, in this order per gate


@dataclass(frozen=True)
class Rise:
    """Between ``before`` and ``after`` (probed commits, in history order) the ratio against GOOD rose."""

    before: Commit
    after: Commit
    ratio_before: float
    ratio_after: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.before.sha,
            "from_short": self.before.short,
            "to": self.after.sha,
            "to_short": self.after.short,
            "to_subject": self.after.subject,
            "ratio_from": self.ratio_before,
            "ratio_to": self.ratio_after,
        }


class CannotBisect(Exception):
    """GOOD against BAD could not be measured, so there is nothing to bisect from (exit 2)."""

    def __init__(self, message: str, probes: Sequence[Probe]) -> None:
        super().__init__(message)
        self.probes = list(probes)


@dataclass
class BisectResult:
    """What a bisection found (``outcome``), every gate it ran (``probes``), and how long it took."""

    good: Commit
    bad: Commit
    commits: list[Commit]  # GOOD..BAD, first parent, oldest first (BAD last)
    outcome: str  # OUTCOMES
    probes: list[Probe]
    confirm: Probe  # the last gate of GOOD against BAD
    culprit: Commit | None = None  # the first commit slower than GOOD (culprit, steps; range: its end)
    step: Probe | None = None  # the culprit's parent against it (range: the last good against its end)
    range: list[Commit] = field(default_factory=list)  # "range": the first slower is one of these
    rises: list[Rise] = field(default_factory=list)  # "steps" (and a range whose step is not slower)
    skipped: dict[str, str] = field(default_factory=dict)  # sha -> why it was skipped
    elapsed_s: float = 0.0

    @property
    def gates(self) -> int:
        """Gates run, re-measurements and gates that could not measure included."""
        return len(self.probes)

    @property
    def exit_code(self) -> int:
        """1 when the slowdown was confirmed and located (culprit, steps, range); 0 when nothing to find."""
        return 0 if self.outcome == "nothing" else 1


def _from(m: Measurement) -> tuple[str, float | None, float | None, float | None]:
    return m.verdict, float(m.ratio), m.ci_low, m.ci_high


class _Runner:
    """Runs gates through ``gate``, extending inconclusive ones, and keeps the log."""

    def __init__(
        self,
        gate: GateFn,
        slices: int,
        max_slices: int,
        on_event: Callable[[Event], None] | None,
        clock: Callable[[], float],
    ) -> None:
        self.gate, self.slices, self.max_slices = gate, slices, max_slices
        self.on_event, self.clock = on_event, clock
        self.log: list[Probe] = []
        self.left = 0  # the search's estimate of the gates still needed after the current one

    def _say(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def measure(self, role: str, base: Commit, new: Commit) -> Probe:
        """Gate ``new`` against ``base``; inconclusive: on with twice the slices, up to the cap."""
        n = len(self.log) + 1
        self._say(GateStart(n, role, base, new, self.slices, self.left))
        looks: list[Measurement] = []

        def extend(m: Measurement) -> int | None:
            if m.verdict != "inconclusive" or 2 * m.slices > self.max_slices:
                return None
            looks.append(m)
            self._say(MoreSlices(n, m, 2 * m.slices))
            return 2 * m.slices

        t0 = self.clock()
        try:
            m = self.gate(base, new, self.slices, extend)
            verdict, ratio, lo, hi, k, reason = m.verdict, float(m.ratio), m.ci_low, m.ci_high, m.slices, ""
        except Unmeasurable as exc:
            verdict, ratio, lo, hi, reason = SKIPPED, None, None, None, exc.reason
            k = looks[-1].slices * 2 if looks else self.slices
        probe = Probe(n, role, base, new, k, verdict, ratio, lo, hi, self.clock() - t0, reason, tuple(looks))
        self.log.append(probe)
        self._say(probe)
        return probe

    def find(self, base: Commit, new: Commit) -> Probe | None:
        """A decisive probe of ``new`` against ``base`` already in the log (a gate not to repeat)."""
        for p in reversed(self.log):
            if p.base.sha == base.sha and p.commit.sha == new.sha and p.decisive:
                return p
        return None


def search_left(lo: int, hi: int, skipped: set[int]) -> int:
    """Probes a binary search still needs between ``lo`` and ``hi`` (nothing more skipped)."""
    unknown = sum(1 for i in range(lo + 1, hi) if i not in skipped)
    return math.ceil(math.log2(unknown + 1)) if unknown else 0


def next_candidate(lo: int, hi: int, skipped: set[int]) -> int | None:
    """The unskipped index strictly between ``lo`` and ``hi`` nearest their middle (the lower on a tie)."""
    cands = [i for i in range(lo + 1, hi) if i not in skipped]
    if not cands:
        return None
    mid = (lo + hi) / 2
    return min(cands, key=lambda i: (abs(i - mid), i))


def bisect(
    good: Commit,
    bad: Commit,
    commits: Sequence[Commit],
    gate: GateFn,
    *,
    slices: int,
    max_slices: int,
    first_parent: Commit | None = None,
    on_event: Callable[[Event], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> BisectResult:
    """Find the commit of ``commits`` (oldest first, ending with ``bad``) that made it slower than ``good``.

    ``first_parent``: the first parent of ``commits[0]`` (GOOD unless GOOD is off the first-parent
    chain), the base of that commit's own step. ``on_event`` hears every gate start
    (``GateStart``), every re-measurement (``MoreSlices``) and every result (``Probe``). See the
    module docstring for the rules.
    """
    commits = list(commits)
    if not commits or commits[-1].sha != bad.sha:
        raise ValueError("commits must be the history GOOD..BAD, oldest first, ending with BAD")
    if not 1 <= slices <= max_slices:
        raise ValueError(f"expected 1 <= slices <= max_slices, got {slices} and {max_slices}")
    t0 = clock()
    run = _Runner(gate, slices, max_slices, on_event, clock)
    hi, lo = len(commits) - 1, -1
    skipped: dict[int, str] = {}
    run.left = search_left(lo, hi, set()) + 1
    confirm = run.measure("confirm", good, bad)
    if not confirm.measured:
        raise CannotBisect(
            f"GOOD {good.short} against BAD {bad.short} could not be measured: {confirm.reason}", run.log
        )

    def done(outcome: str, **kw: Any) -> BisectResult:
        why = {commits[i].sha: r for i, r in sorted(skipped.items())}
        return BisectResult(
            good, bad, commits, outcome, run.log, confirm, skipped=why, elapsed_s=clock() - t0, **kw
        )

    if confirm.verdict != "slower":
        return done("nothing")

    ratios: dict[int, float] = {hi: float(confirm.ratio or 0.0)}
    while (i := next_candidate(lo, hi, set(skipped))) is not None:
        run.left = max(0, search_left(lo, hi, {*skipped, i}) - 1) + 1
        p = run.measure("probe", good, commits[i])
        if not p.measured:
            skipped[i] = p.reason
        elif p.verdict == "inconclusive":
            skipped[i] = f"inconclusive up to {p.slices} slices (ratio {p.ratio:.3f})"
        elif p.verdict == "slower":
            hi, ratios[i] = i, float(p.ratio or 0.0)
        else:
            lo, ratios[i] = i, float(p.ratio or 0.0)

    between = [commits[i] for i in range(lo + 1, hi)]  # every one of them skipped
    culprit = commits[hi]
    if between:
        base = commits[lo] if lo >= 0 else good
    else:
        base = commits[hi - 1] if hi >= 1 else (first_parent or good)
    run.left = 0
    step = run.find(base, culprit) or run.measure("step", base, culprit)
    points = [(good, 1.0)] + [(commits[i], r) for i, r in sorted(ratios.items())]
    rises = [Rise(a, b, ra, rb) for (a, ra), (b, rb) in zip(points, points[1:], strict=False) if rb > ra]
    if between:
        return done(
            "range",
            culprit=culprit,
            step=step,
            range=[*between, culprit],
            rises=[] if step.verdict == "slower" else rises,
        )
    if step.verdict in ("slower", SKIPPED):
        return done("culprit", culprit=culprit, step=step)
    return done("steps", culprit=culprit, step=step, rises=rises)


__all__ = [
    "OUTCOMES",
    "ROLES",
    "SKIPPED",
    "BisectResult",
    "CannotBisect",
    "Commit",
    "Event",
    "Extend",
    "GateFn",
    "GateStart",
    "Measurement",
    "MoreSlices",
    "Probe",
    "Rise",
    "Unmeasurable",
    "bisect",
    "next_candidate",
    "search_left",
]
