"""Stage 1 of ``dlbench budget``: the largest batch that fits, by doubling then bisection.

``find_max_batch(probe, max_batch=..., multiple=..., tolerance=...)`` calls ``probe(batch)`` (one
isolated child running one step, ``bench.budget.engine``; any callable in tests) and reads
``.fits`` of what it returns. It assumes what memory does: a batch that fits means every smaller one
fits too. Candidates are multiples of ``multiple`` (``--batch-multiple``, or what a parallel
strategy needs to split the batch), up to ``max_batch`` (``--max-batch``) rounded down to one:

1. **Doubling.** Probe 1, 2, 4, ... multiples until one does not fit. When the next doubling would
   pass the cap, probe the cap itself instead; if that fits, the search ends there (``capped``: the
   true maximum may be larger).
2. **Bisection** between the last batch that fit (``lo``) and the first that did not (``hi``), while
   ``hi - lo`` is more than one multiple and more than ``tolerance`` of ``lo``. Stopping at the
   tolerance ("within a few per cent") saves the last probes of a large search; the answer is then
   within ``tolerance`` of the largest fitting batch, never above it. ``tolerance=0`` is exact.

The answer is always a batch that was probed and fitted (0 when the smallest does not fit), so a
probe that misjudges never makes the search report a batch nobody ran.

**Cost.** With U = max_batch // multiple candidates, doubling probes at most floor(log2 U) + 2
batches and bisects an interval of at most 2^floor(log2 U) candidates, at most floor(log2 U) more
probes; in every case at most ``2 * floor(log2 U) + 2 <= 2 * log2(max_batch) + 2`` probes
(``probe_bound``; tests assert it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class Verdict(Protocol):
    """What the search reads from a probe's result."""

    @property
    def fits(self) -> bool: ...


def probe_bound(max_batch: int) -> int:
    """The most probes one search may make: ``2 * floor(log2(max_batch)) + 2``."""
    return 2 * int(math.log2(max_batch)) + 2 if max_batch >= 1 else 0


@dataclass
class SearchResult:
    """What one search found: the largest fitting batch (0: none) and every probe, in order."""

    max_batch: int
    probes: list[Any] = field(default_factory=list)  # the probe results, in the order they ran
    capped: bool = False  # the cap itself fits: the true maximum may be larger (raise --max-batch)
    stopped_by: str = ""  # exact | tolerance | cap | nothing-fits

    @property
    def n_probes(self) -> int:
        return len(self.probes)


def find_max_batch(
    probe: Callable[[int], Verdict],
    *,
    max_batch: int,
    multiple: int = 1,
    tolerance: float = 0.0,
) -> SearchResult:
    """The largest batch in {multiple, 2 multiple, ...} <= ``max_batch`` for which ``probe`` fits."""
    if multiple < 1 or max_batch < multiple:
        raise ValueError(f"max_batch ({max_batch}) must be >= multiple ({multiple}) >= 1")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    units = max_batch // multiple
    out = SearchResult(max_batch=0)

    def fits(u: int) -> bool:
        r = probe(u * multiple)
        out.probes.append(r)
        return bool(r.fits)

    if not fits(1):
        out.stopped_by = "nothing-fits"
        return out
    lo, hi = 1, 0  # lo fits; hi (once found) does not
    while not hi:
        if lo == units:
            out.max_batch, out.capped, out.stopped_by = lo * multiple, True, "cap"
            return out
        nxt = min(2 * lo, units)
        if fits(nxt):
            lo = nxt
        else:
            hi = nxt
    while hi - lo > 1 and hi - lo > tolerance * lo:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    out.max_batch = lo * multiple
    out.stopped_by = "exact" if hi - lo == 1 else "tolerance"
    return out
