"""The noise sentinel: how busy the machine was while a step was being timed.

Why: another process using the cores made steps here up to 7x slower, and a row's own CI cannot
see that (it covers the noise inside the timing window, not a neighbour who was there for all of
it). So the timing pass is bracketed by two readings of

- ``/proc/stat`` (first ``cpu`` line): the machine's clock ticks since boot, summed over all CPUs,
  split into busy (user, nice, system, irq, softirq), idle (idle, iowait) and steal (time a
  hypervisor gave this VM's CPUs to someone else); ``guest`` is already inside ``user``;
- ``/proc/self/stat``: this process's own CPU ticks (utime, stime, and cutime, cstime of waited-for
  children), every thread included (torch's intra-op pool).

Over the window, with ``capacity`` = all ticks of all CPUs (busy + idle + steal):

    noise_other_cpu_pct = max(0, busy - own) / capacity * 100   # everyone else's CPU use
    noise_steal_pct     = steal / capacity * 100

A measurement is *busy* when ``noise_other_cpu_pct > NOISY_OTHER_CPU_PCT`` (25 %: on 2 cores,
another process using half a core or more for the whole window), and the row is flagged ``noisy``
with the figure in its reason.

Ticks are ``USER_HZ`` (100 per second) and per-process accounting is sampled on ticks, so a reading
is good to a couple of ticks: windows under ``MIN_WINDOW_TICKS`` of capacity (0.1 s on 2 cores)
report None rather than a figure made of rounding. Where ``/proc`` is missing (macOS, a sandbox)
both figures are None and nothing is flagged. Torch-free and cheap: two small file reads a side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

NOISY_OTHER_CPU_PCT = 25.0  # other processes above this share of the machine -> the row is noisy
MIN_WINDOW_TICKS = 20  # below this many ticks of capacity in the window, the figures are None
PROC_ROOT = "/proc"  # where the readings come from (tests point it at a folder that does not exist)


@dataclass(frozen=True)
class CpuTicks:
    """One reading: the machine's busy/idle/steal ticks (all CPUs) and this process's own ticks."""

    busy: int
    idle: int
    steal: int
    own: int

    @property
    def capacity(self) -> int:
        return self.busy + self.idle + self.steal


@dataclass(frozen=True)
class NoiseFigures:
    """How busy the machine was over a window; None where it could not be told."""

    other_cpu_pct: float | None = None
    steal_pct: float | None = None
    window_ticks: int = 0  # capacity of the window in clock ticks (all CPUs)

    @property
    def busy(self) -> bool:
        """True when other processes used more than ``NOISY_OTHER_CPU_PCT`` of the machine."""
        return is_busy(self.other_cpu_pct)

    def reason(self) -> str:
        """The note for a row's reason when ``busy`` (empty otherwise)."""
        if not self.busy:
            return ""
        return busy_reason(self.other_cpu_pct, self.steal_pct)


def is_busy(other_cpu_pct: float | None) -> bool:
    """``other_cpu_pct`` above ``NOISY_OTHER_CPU_PCT`` (None: unknown, not busy)."""
    return other_cpu_pct is not None and other_cpu_pct > NOISY_OTHER_CPU_PCT


def busy_reason(other_cpu_pct: float | None, steal_pct: float | None = None) -> str:
    """``machine busy: other processes used 43% of the CPU capacity during timing (threshold 25%)``."""
    steal = f", steal {steal_pct:.0f}%" if steal_pct else ""
    return (
        f"machine busy: other processes used {other_cpu_pct:.0f}% of the CPU capacity during timing"
        f"{steal} (threshold {NOISY_OTHER_CPU_PCT:.0f}%)"
    )


def read_ticks(proc: Path | str | None = None) -> CpuTicks | None:
    """The current reading, or None when ``proc``/stat or ``proc``/self/stat cannot be read."""
    root = Path(PROC_ROOT if proc is None else proc)
    try:
        with open(root / "stat", encoding="ascii") as f:
            first = f.readline().split()
        with open(root / "self" / "stat", encoding="ascii", errors="replace") as f:
            own_line = f.read()
    except OSError:
        return None
    try:
        if not first or first[0] != "cpu":
            return None
        v = [int(x) for x in first[1:9]] + [0] * max(0, 8 - len(first[1:9]))
        user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
        # comm (field 2) may hold spaces and parentheses: the fields after the last ")" start at 3
        rest = own_line[own_line.rindex(")") + 1 :].split()
        utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
    except (ValueError, IndexError):
        return None
    return CpuTicks(
        busy=user + nice + system + irq + softirq,
        idle=idle + iowait,
        steal=steal,
        own=utime + stime + cutime + cstime,
    )


def figures(before: CpuTicks | None, after: CpuTicks | None) -> NoiseFigures:
    """The window's figures from two readings (None figures when either is missing or too short)."""
    if before is None or after is None:
        return NoiseFigures()
    capacity = after.capacity - before.capacity
    if capacity < MIN_WINDOW_TICKS:
        return NoiseFigures(window_ticks=max(0, capacity))
    other = max(0, (after.busy - before.busy) - (after.own - before.own))
    steal = max(0, after.steal - before.steal)
    return NoiseFigures(
        other_cpu_pct=min(100.0, 100.0 * other / capacity),
        steal_pct=min(100.0, 100.0 * steal / capacity),
        window_ticks=capacity,
    )


class NoiseMonitor:
    """``with NoiseMonitor() as mon: time_step(...)`` then ``mon.figures`` for that window.

    Never raises for a missing or odd ``/proc``: the figures are None then.
    """

    def __init__(self, proc: Path | str | None = None) -> None:
        self.proc = PROC_ROOT if proc is None else proc
        self._before: CpuTicks | None = None
        self.figures = NoiseFigures()

    def __enter__(self) -> NoiseMonitor:
        self._before = read_ticks(self.proc)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.figures = figures(self._before, read_ticks(self.proc))
