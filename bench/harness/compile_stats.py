"""What ``torch.compile`` cost and did, read from torch's own counters: ``CompileWatch`` -> ``CompileResult``.

Nothing here parses logs. The figures come from dynamo's in-process records:

* ``torch._dynamo.utils.counters``: ``counters["graph_break"]`` maps each graph-break message to how
  many times dynamo broke the graph for it (``graph_breaks`` is their sum, as the dynamo benchmark
  runner counts them; the messages with their counts go to the sidecar), and
  ``counters["stats"]["unique_graphs"]`` counts the FX graphs dynamo handed to the backend;
* ``torch._dynamo.utils.get_compilation_metrics()``: one ``CompilationMetrics`` record per frame
  compilation (forward; and one per lazily compiled backward), each with torch's own
  ``recompile_reason`` when it recompiled a frame whose earlier compilation's guards failed.
  ``recompiles`` counts those records; their reasons go to the sidecar.

A watch takes a snapshot of both when it starts and reports what changed since: from the first call
of the step (the cold start) to the end of the timed steps. It is also a timing window
(``bench.harness.timing.TimingWindow``): ``begin`` / ``end`` bracket exactly the timed steps, and any
compilation between them (a recompile, a frame compiled late) is counted in ``timed_compiles``. Such
a row's step time includes compiling: ``CompileResult.noisy_reason`` says so, and the row is flagged
``noisy`` with it.

``cold_start`` times the first call of the step, synchronized, apart from the timed steps: it runs
until compilation is done (a train step compiles its forward, then its backward lazily in the same
call) and then runs the step itself. ``compile_time_s`` is that cold start less one steady compiled
step (the timed steps' median, ``result(step_s=...)``): what compiling adds to the first step. With
it, ``compile_time_s / (eager step - compiled step)`` is exactly the step count after which the
compiled run has caught up (cold start + (N - 1) compiled steps = N eager steps). The raw first call
is ``cold_start_s``.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# the compilation metrics torch keeps (a ring buffer); raised so a model with many compiled regions
# does not push the earliest records out before they are read
_METRICS_LIMIT = 4096


@dataclass
class CompileResult:
    """What compiling one configuration cost and did (``build_row`` reads the columns off it)."""

    mode: str
    compile_time_s: float | None = None  # the cold start less one compiled step: what compiling adds
    cold_start_s: float | None = None  # the first call, compilation and its own run
    graph_breaks: int = 0
    unique_graphs: int = 0
    recompiles: int = 0
    timed_compiles: int = 0  # compilations during the timed steps (recompiles among them)
    break_reasons: dict[str, int] = field(default_factory=dict)  # torch's message -> count
    recompile_reasons: list[str] = field(default_factory=list)
    timed_reasons: list[str] = field(default_factory=list)  # why each timed compilation happened
    compiled: list[str] = field(default_factory=list)  # the regions (bench.compiling.apply_compile)
    frames: int = 0  # frame compilations in all (first compilations and recompiles)
    inductor_cache: str = ""  # where inductor's caches were: a fresh folder, or the user's
    notes: list[str] = field(default_factory=list)

    @property
    def noisy_reason(self) -> str | None:
        """Why the timing is poisoned by compilation, or None."""
        if not self.timed_compiles:
            return None
        why = "; ".join(dict.fromkeys(self.timed_reasons)) or "a frame compiled late"
        return (
            f"noisy: torch.compile compiled {self.timed_compiles} time(s) during the timed steps, so the "
            f"step time includes compiling ({why})"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> CompileResult | None:
        if not d:
            return None
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class _Snapshot:
    breaks: dict[str, int]
    unique_graphs: int
    metrics: list[Any]


def _snapshot() -> _Snapshot:
    from torch._dynamo.utils import counters, get_compilation_metrics

    return _Snapshot(
        breaks=dict(counters["graph_break"]),
        unique_graphs=int(counters["stats"]["unique_graphs"]),
        metrics=get_compilation_metrics(),
    )


def _new_metrics(before: _Snapshot, after: _Snapshot) -> list[Any]:
    """Compilation records made between two snapshots (by identity: the buffer drops old ones)."""
    seen = {id(m) for m in before.metrics}
    return [m for m in after.metrics if id(m) not in seen]


def _describe(m: Any) -> str:
    """One compilation record as a reason: its recompile reason, or what was compiled."""
    reason = getattr(m, "recompile_reason", None)
    name = getattr(m, "co_name", None) or "backward"
    if reason:
        return f"recompiled {name}: {reason}"
    return f"compiled {name}" if getattr(m, "is_forward", True) is not False else "compiled a backward"


class CompileWatch:
    """Counts what dynamo compiles from its creation on, and during a timed window (see the module doc)."""

    def __init__(self, mode: str, *, compiled: list[str] | None = None, inductor_cache: str = "") -> None:
        from torch._dynamo.utils import set_compilation_metrics_limit

        set_compilation_metrics_limit(_METRICS_LIMIT)
        self.mode = mode
        self.compiled = list(compiled or [])
        self.inductor_cache = inductor_cache
        self.cold_start_s: float | None = None
        self._start = _snapshot()
        self._window: list[_Snapshot] = []
        self._end: _Snapshot | None = None

    # --- the cold start ----------------------------------------------------------------------
    def cold_start(self, step: Callable[[], None], device: str) -> float:
        """Run the step's first call, synchronized; its wall time is ``cold_start_s``."""
        from bench.workload import synchronize

        synchronize(device)
        t0 = time.perf_counter()
        step()
        synchronize(device)
        self.cold_start_s = time.perf_counter() - t0
        return self.cold_start_s

    # --- bench.harness.timing.TimingWindow -----------------------------------------------------
    def begin(self) -> None:
        self._window = [_snapshot()]

    def end(self) -> None:
        if self._window:
            self._window.append(_snapshot())

    def stop(self) -> None:
        """The end of what this watch counts (after the timed steps; later passes are not counted)."""
        self._end = _snapshot()

    def result(self, step_s: float | None = None) -> CompileResult:
        """What was counted; ``step_s``, a steady compiled step (the timed median), turns the cold
        start into ``compile_time_s``."""
        end = self._end or _snapshot()
        new = _new_metrics(self._start, end)
        breaks = {
            msg: n - self._start.breaks.get(msg, 0)
            for msg, n in end.breaks.items()
            if n - self._start.breaks.get(msg, 0) > 0
        }
        timed: list[Any] = _new_metrics(self._window[0], self._window[1]) if len(self._window) == 2 else []
        recompiled = [m for m in new if getattr(m, "recompile_reason", None)]
        return CompileResult(
            mode=self.mode,
            compile_time_s=_added(self.cold_start_s, step_s),
            cold_start_s=self.cold_start_s,
            graph_breaks=sum(breaks.values()),
            unique_graphs=end.unique_graphs - self._start.unique_graphs,
            recompiles=len(recompiled),
            timed_compiles=len(timed),
            break_reasons=breaks,
            recompile_reasons=[_describe(m) for m in recompiled],
            timed_reasons=[_describe(m) for m in timed],
            compiled=self.compiled,
            frames=sum(1 for m in new if getattr(m, "is_forward", True) is not False),
            inductor_cache=self.inductor_cache,
        )


def inductor_cache_note() -> str:
    """Where inductor keeps its caches in this process: ``TORCHINDUCTOR_CACHE_DIR``, or torch's default."""
    import os

    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    return os.environ.get("TORCHINDUCTOR_CACHE_DIR") or f"{default_cache_dir()} (torch's default)"


def _added(cold_s: float | None, step_s: float | None) -> float | None:
    """The cold start less one steady step, never below 0 (the cold start alone without a step)."""
    if cold_s is None:
        return None
    return max(0.0, cold_s - step_s) if step_s is not None else cold_s


def combine_repeats(results: Sequence[CompileResult | None]) -> CompileResult | None:
    """One ``CompileResult`` for a ``--repeat R`` row: the median cold start of the R processes (each
    compiled on its own), the most graph breaks, graphs and recompiles any of them saw, and every
    compilation that fell into a process's timed steps (any one poisons the row's timing)."""
    return _combine(results, statistics.median, "the median of {n} processes' cold starts")


def combine_ranks(results: Sequence[CompileResult | None]) -> CompileResult | None:
    """One ``CompileResult`` for a parallel row: the slowest rank's cold start (the job waits for it:
    the ranks' first steps meet in collectives), the most any rank counted, every timed compilation."""
    return _combine(results, max, "the slowest of {n} ranks' cold starts")


def _combine(
    results: Sequence[CompileResult | None], pick: Callable[[list[float]], float], note: str
) -> CompileResult | None:
    rs = [r for r in results if r is not None]
    if not rs:
        return None
    times = [r.compile_time_s for r in rs if r.compile_time_s is not None]
    colds = [r.cold_start_s for r in rs if r.cold_start_s is not None]
    first = rs[0]
    return dataclasses.replace(
        first,
        compile_time_s=pick(times) if times else None,
        cold_start_s=pick(colds) if colds else None,
        graph_breaks=max(r.graph_breaks for r in rs),
        unique_graphs=max(r.unique_graphs for r in rs),
        recompiles=max(r.recompiles for r in rs),
        timed_compiles=sum(r.timed_compiles for r in rs),
        timed_reasons=[why for r in rs for why in r.timed_reasons],
        notes=[*first.notes, f"compile_time_s: {note.format(n=len(times))}"],
    )
