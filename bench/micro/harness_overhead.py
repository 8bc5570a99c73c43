"""How much does dlbench's timing harness add, and how repeatable is one of its figures?

    python -m bench.micro.harness_overhead                          # both parts, 5 runs of encoder tiny
    python -m bench.micro.harness_overhead --quick                  # fewer rounds and runs (smoke check)
    python -m bench.micro.harness_overhead --scenario attention --preset default --repeats 5
    python -m bench.micro.harness_overhead --threads 1              # one thread (shared machines)

Part 1, timing overhead per iteration. ``bench.harness.time_step`` times a step that takes
nanoseconds in blocks of ``k`` back-to-back calls (see ``bench.harness.timing``); its loop calls the
step through a Python function call. ``torch.utils.benchmark.Timer.blocked_autorange`` (the
reference) runs its statement in a compiled loop. Both time the same two steps: ``torch.add`` of
two 16-element tensors (a real, dispatcher-bound op) and an empty step (a function that returns
None, which isolates the loop). Rounds are interleaved (dlbench then Timer, alternating order) so
that drift in machine load hits both; figures are medians over rounds. The overhead is reported
against ``Timer("fn()")`` (the same callable: the harness's own loop cost) and against the inline
statement ``Timer("torch.add(a, b)")`` (what it costs to pass the step as a callable at all).

Part 2, run-to-run spread. ``bench.api.run`` measures one configuration (default: ``encoder``,
``tiny`` preset, train mode, fp32) ``--repeats`` times, each in its own child process (subprocess
isolation, as ``dlbench run`` does), and the table shows each run's ``time_median_ms`` and 95 % CI
and the spread ``max / min - 1`` of the medians (goal: at most 3 %). On a shared machine the
spread mostly measures the neighbours; the machine's load average is printed beside it.

``--threads N`` sets torch's thread count here and ``OMP_NUM_THREADS`` for the runner's child
processes. On a 2-core machine shared with other jobs, two OpenMP threads per process can hit a
cliff: every parallel region waits at a barrier for a thread the scheduler has parked, and a 2 ms
step was seen taking 650 ms; ``--threads 1`` avoids it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.benchmark import Timer

from bench.harness import time_step

__all__ = ["OverheadRow", "SpreadResult", "measure_overhead", "measure_spread", "main"]

SPREAD_GOAL = 0.03


@dataclass
class OverheadRow:
    """Per-iteration times (ns) of one step under dlbench's harness and under ``torch.utils.benchmark``."""

    case: str
    dlbench_ns: float  # median over rounds of time_step's median
    timer_call_ns: float  # Timer("fn()"): the same callable
    timer_inline_ns: float  # Timer(<inline statement>)
    calls_per_sample: int  # k chosen by time_step (median over rounds)
    rounds: int

    @property
    def overhead_vs_call_ns(self) -> float:
        return self.dlbench_ns - self.timer_call_ns

    @property
    def overhead_vs_inline_ns(self) -> float:
        return self.dlbench_ns - self.timer_inline_ns


@dataclass
class SpreadResult:
    """``time_median_ms`` (and CI) of repeated runs of one configuration."""

    label: str
    medians_ms: list[float]
    ci_ms: list[tuple[float, float]]
    statuses: list[str]

    @property
    def spread(self) -> float:
        """``max / min - 1`` of the medians (nan without two ok runs)."""
        ok = [m for m in self.medians_ms if m == m and m > 0]
        return max(ok) / min(ok) - 1.0 if len(ok) >= 2 else float("nan")


def _timer_ns(stmt: str, globals_: dict[str, object], min_run_time: float) -> float:
    timer = Timer(stmt=stmt, globals=globals_, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e9


def measure_overhead(rounds: int = 5, min_run_time: float = 0.2) -> list[OverheadRow]:
    """Part 1: dlbench ``time_step`` against ``Timer.blocked_autorange`` on tiny steps, interleaved."""
    a = torch.randn(16)
    b = torch.randn(16)

    def add_step() -> None:
        torch.add(a, b)

    def empty_step() -> None:
        return None

    cases: list[tuple[str, Callable[[], None], str]] = [
        ("torch.add, 16 elements", add_step, "torch.add(a, b)"),
        ("empty step", empty_step, "pass"),
    ]
    rows = []
    for label, fn, inline in cases:
        g = {"fn": fn, "torch": torch, "a": a, "b": b}
        dl: list[float] = []
        call: list[float] = []
        inl: list[float] = []
        ks: list[int] = []
        for r in range(rounds):
            order = (0, 1) if r % 2 == 0 else (1, 0)
            for which in order:
                if which == 0:
                    res = time_step(fn, target_rel_ci=0.01, max_time_s=max(0.5, 2 * min_run_time))
                    dl.append(res.median_ms * 1e6)
                    ks.append(res.calls_per_sample)
                else:
                    call.append(_timer_ns("fn()", g, min_run_time))
                    inl.append(_timer_ns(inline, g, min_run_time))
        rows.append(
            OverheadRow(
                case=label,
                dlbench_ns=statistics.median(dl),
                timer_call_ns=statistics.median(call),
                timer_inline_ns=statistics.median(inl),
                calls_per_sample=int(statistics.median(ks)),
                rounds=rounds,
            )
        )
    return rows


def measure_spread(
    scenario: str = "encoder",
    *,
    preset: str = "tiny",
    mode: str = "train",
    precision: str = "fp32",
    repeats: int = 5,
    isolation: bool = True,
    out_dir: Path | None = None,
) -> SpreadResult:
    """Part 2: ``bench.api.run`` of one configuration ``repeats`` times; each run's median and CI."""
    from bench.api import run

    medians: list[float] = []
    cis: list[tuple[float, float]] = []
    statuses: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dlbench-spread-") as tmp:
        folder = out_dir or Path(tmp)
        for i in range(repeats):
            summary = run(
                scenario,
                preset=preset,
                modes=mode,
                precisions=precision,
                out=folder / f"{scenario}_{preset}_{mode}_run{i}.csv",
                isolation=isolation,
                resume=False,
                progress=False,
            )
            row = summary.rows[0]
            statuses.append(str(row["status"]))
            ok = row["status"] == "ok"
            medians.append(float(row["time_median_ms"]) if ok else float("nan"))
            nan = float("nan")
            cis.append((float(row["time_ci_low_ms"]), float(row["time_ci_high_ms"])) if ok else (nan, nan))
    label = f"{scenario} --preset {preset} --mode {mode} --precision {precision}"
    return SpreadResult(label=label, medians_ms=medians, ci_ms=cis, statuses=statuses)


def _print_overhead(rows: Sequence[OverheadRow]) -> None:
    threads = torch.get_num_threads()
    print(f"Part 1: timing overhead per iteration (ns), torch {torch.__version__}, {threads} threads")
    head = (
        f"{'step':<24}{'dlbench':>10}{'Timer fn()':>12}{'Timer inline':>14}"
        f"{'overhead vs fn()':>18}{'vs inline':>11}{'k':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r.case:<24}{r.dlbench_ns:>10.1f}{r.timer_call_ns:>12.1f}{r.timer_inline_ns:>14.1f}"
            f"{r.overhead_vs_call_ns:>+18.1f}{r.overhead_vs_inline_ns:>+11.1f}{r.calls_per_sample:>6d}"
        )
    print(f"(medians over {rows[0].rounds} interleaved rounds; k = calls per sample chosen by time_step)\n")


def _print_spread(res: SpreadResult) -> None:
    n = len(res.medians_ms)
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    print(f"Part 2: run-to-run spread of time_median_ms, {n} runs of: dlbench run {res.label}")
    print(f"(child processes: OMP_NUM_THREADS={threads})")
    head = f"{'run':>4}{'status':>9}{'median ms':>12}{'95% CI ms':>24}"
    print(head)
    print("-" * len(head))
    for i, (m, (lo, hi), s) in enumerate(zip(res.medians_ms, res.ci_ms, res.statuses, strict=True)):
        print(f"{i:>4}{s:>9}{m:>12.4f}{f'[{lo:.4f}, {hi:.4f}]':>24}")
    spread = res.spread
    verdict = "met" if spread <= SPREAD_GOAL else "NOT met"
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(
        f"spread max/min - 1 = {spread:.2%} (goal <= {SPREAD_GOAL:.0%}: {verdict}); "
        f"load average {load[0]:.2f} on {os.cpu_count()} CPUs"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: print the overhead table and the spread table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=None, help="runs of the configuration in part 2 (5)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds in part 1 (5)")
    ap.add_argument("--scenario", default="encoder", help="scenario for part 2 (encoder)")
    ap.add_argument("--preset", default="tiny", help="preset for part 2 (tiny)")
    ap.add_argument("--mode", default="train", choices=("forward", "train"))
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--no-isolation", action="store_true", help="part 2 in this process (no child processes)")
    ap.add_argument("--skip-overhead", action="store_true", help="run part 2 only")
    ap.add_argument("--skip-spread", action="store_true", help="run part 1 only")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads here and OMP_NUM_THREADS for the child processes (default: torch's default)",
    )
    ap.add_argument("--quick", action="store_true", help="2 rounds, 3 runs, shorter timers (a smoke check)")
    args = ap.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            ap.error("--threads must be >= 1")
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the runner's child processes
        torch.set_num_threads(args.threads)
    rounds = args.rounds or (2 if args.quick else 5)
    repeats = args.repeats or (3 if args.quick else 5)
    if rounds < 1 or repeats < 1:
        ap.error("--rounds and --repeats must be >= 1")
    if not args.skip_overhead:
        _print_overhead(measure_overhead(rounds=rounds, min_run_time=0.05 if args.quick else 0.2))
    if not args.skip_spread:
        _print_spread(
            measure_spread(
                args.scenario,
                preset=args.preset,
                mode=args.mode,
                precision=args.precision,
                repeats=repeats,
                isolation=not args.no_isolation,
            )
        )


if __name__ == "__main__":
    main()
