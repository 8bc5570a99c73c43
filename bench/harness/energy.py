"""Energy over the timed window, typed: joules per step and per item and the average power.

``EnergyResult`` is what one measuring process (``bench.harness.energy_meter.EnergyMeter``), one
parallel job (``merge_ranks``) or one ``--repeat R`` row (``combine_repeats``) knows about energy;
``bench.results.schema.build_row`` turns it into the ``energy_*`` and ``avg_power_w`` columns.

From a window of ``J`` joules, ``t`` seconds and ``s`` steps (samples x calls per sample) of ``b``
items each (the job's global batch for a parallel row), summed over the measured devices::

    energy_j_per_step = J / s       energy_j_per_item = J / s / b       avg_power_w = J / t

The window is the timing pass's: the same steps as the step time (see ``energy_meter``).

Resolution: each end of a window reads a counter that may be up to one update period old, so a
window is good to about one period's energy. A window gives figures only when it lasts at least
``update period / MAX_REL_ERROR`` and ``MIN_WINDOW_S``: NVML's counters update about every 100 ms
(Zeus's own assumption: "as slow as 10 Hz"), so 2 s; RAPL's every millisecond, so the 0.1 s floor.
A shorter window, or a counter that did not advance, gives a ``failed`` result with the reason and
no figure: never a 0 where nothing was counted. ``unavailable`` means no counter here at all (or
Zeus missing): the same reason for every row of the machine.

Torch-free and Zeus-free: the runner merges ranks and repeats without either.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_REL_ERROR = 0.05  # a window must last at least update period / MAX_REL_ERROR
MIN_WINDOW_S = 0.1  # ... and at least this long
# Update period of each source's counter, seconds (what a reading can be stale by).
COUNTER_PERIOD_S: dict[str, float] = {
    "nvml": 0.1,
    "nvml-power": 0.1,
    "amdsmi": 0.1,
    "amdsmi-power": 0.1,
    "rapl-package": 0.001,
}
STATUSES = ("ok", "unavailable", "failed")


def min_window_s(source: str) -> float:
    """The shortest window that gives ``source`` figures within ``MAX_REL_ERROR``."""
    return max(MIN_WINDOW_S, COUNTER_PERIOD_S.get(source, 0.1) / MAX_REL_ERROR)


# --- the typed result ---------------------------------------------------------------------------


@dataclass
class EnergyResult:
    """Energy over one timing window (or a job's, or R repeats'), or why there is none.

    ``status``: ``ok`` (the figures are set), ``unavailable`` (no counter here, or Zeus missing: the
    same for every row of the machine) or ``failed`` (this window gave no figure: too short, a
    counter that did not move, a read error). ``readings`` keeps each device's joules, window and
    steps (and rank, in a parallel job) for the sidecar.
    """

    status: str
    reason: str = ""
    source: str = ""  # nvml, rapl-package, ... ("+"-joined if a job's ranks differ)
    scope: str = ""  # "device" (GPUs) or "cpu-package" (RAPL: the whole package)
    devices: list[str] = field(default_factory=list)
    joules: float | None = None  # over the window, all devices
    window_s: float | None = None
    steps: int | None = None
    items_per_step: int | None = None
    energy_j_per_step: float | None = None
    energy_j_per_item: float | None = None
    avg_power_w: float | None = None
    min_window_s: float | None = None
    readings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_readings(
        cls,
        readings: Sequence[dict[str, Any]],
        *,
        source: str,
        scope: str,
        items_per_step: int,
        min_window: float,
    ) -> EnergyResult:
        """Figures from per-device readings ``{"device", "joules", "window_s", "steps", ...}``.

        ``J/step`` and watts are summed over the devices, each over its own window and steps (the
        ranks of a job run the same steps in windows a few milliseconds apart); ``J/item`` divides
        by ``items_per_step``. A window shorter than ``min_window`` or a counter that did not
        advance gives a ``failed`` result with the reason, never a figure.
        """
        windows = [float(r["window_s"]) for r in readings]
        steps = [int(r["steps"]) for r in readings]

        def make(status: str, reason: str = "", **figures: float | None) -> EnergyResult:
            return cls(
                status,
                reason,
                source=source,
                scope=scope,
                devices=[str(r["device"]) for r in readings],
                window_s=max(windows) if windows else None,
                steps=min(steps) if steps else None,
                items_per_step=items_per_step,
                min_window_s=min_window,
                readings=[dict(r) for r in readings],
                **figures,
            )

        if not readings:
            return make("failed", "energy: no device was measured")
        if min(windows) < min_window:
            return make(
                "failed",
                f"energy: the timed window lasted {min(windows):.3g} s, shorter than the {min_window:.3g} s "
                f"the {source} counter needs for {MAX_REL_ERROR:.0%} (it updates about every "
                f"{COUNTER_PERIOD_S.get(source, 0.1) * 1e3:.0f} ms); raise --max-time to at least "
                f"{min_window:.3g}",
            )
        if min(steps) <= 0:
            return make("failed", "energy: no step ran inside the window")
        for r in readings:
            j = r.get("joules")
            if j is None or not math.isfinite(float(j)) or float(j) <= 0.0:
                what = "could not be read" if j is None else f"read {float(j):.6g} J"
                return make(
                    "failed",
                    f"energy: the {source} counter of {r['device']} {what} over a "
                    f"{float(r['window_s']):.3g} s window (a counter that does not advance gives no figure)",
                )
        per_step = sum(float(r["joules"]) / int(r["steps"]) for r in readings)
        return make(
            "ok",
            joules=sum(float(r["joules"]) for r in readings),
            energy_j_per_step=per_step,
            energy_j_per_item=per_step / items_per_step if items_per_step > 0 else None,
            avg_power_w=sum(float(r["joules"]) / float(r["window_s"]) for r in readings),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> EnergyResult | None:
        if not d:
            return None
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})


def merge_ranks(
    results: Sequence[EnergyResult | None], *, hosts: Sequence[str], job_items_per_step: int
) -> EnergyResult:
    """The job's energy: every rank's devices summed (a device two ranks of a host both measured,
    such as a shared CPU package, counted once: the first rank's reading).

    Any rank without a figure leaves the job without one (a sum missing a device is not the job's
    energy): ``unavailable`` when every rank said so for the same reason, else ``failed`` naming
    the rank.
    """
    multi_host = len(set(hosts)) > 1
    if not results or any(r is None for r in results):
        return EnergyResult("unavailable", "energy: a rank did not report its energy")
    rs = [r for r in results if r is not None]
    bad = [(k, r) for k, r in enumerate(rs) if not r.ok]
    if bad:
        reasons = {r.reason for _, r in bad}
        if all(r.status == "unavailable" for _, r in bad) and len(bad) == len(rs) and len(reasons) == 1:
            return EnergyResult("unavailable", reasons.pop())
        k, first = bad[0]
        return EnergyResult("failed", f"rank {k}: {first.reason}" if len(rs) > 1 else first.reason)
    readings: list[dict[str, Any]] = []
    seen: set[str] = set()
    shared: list[str] = []
    sources: list[str] = []
    scopes: list[str] = []
    for k, r in enumerate(rs):
        sources += [s for s in r.source.split("+") if s and s not in sources]
        scopes += [s for s in r.scope.split("+") if s and s not in scopes]
        for reading in r.readings:
            label = f"{hosts[k]}/{reading['device']}" if multi_host else str(reading["device"])
            if label in seen:
                shared.append(f"{label} (rank {k})")
                continue
            seen.add(label)
            readings.append({**reading, "device": label, "rank": k})
    source = "+".join(sources)
    merged = EnergyResult.from_readings(
        readings,
        source=source,
        scope="+".join(scopes),
        items_per_step=job_items_per_step,
        min_window=max(r.min_window_s or 0.0 for r in rs),
    )
    if shared and merged.ok:
        merged.reason = f"energy: counted once, read by several ranks: {', '.join(shared)}"
    return merged


def combine_repeats(results: Sequence[EnergyResult | None]) -> EnergyResult | None:
    """The energy of a ``--repeat R`` row: the median of the R processes' figures (as the row's
    time is the median of their medians); any repeat without a figure leaves the row without one."""
    rs = [r for r in results if r is not None]
    if not rs:
        return None
    if len(rs) < len(results) or not all(r.ok for r in rs):
        first = next((r for r in rs if not r.ok), rs[0])
        k = rs.index(first)
        if first.status == "unavailable":
            return EnergyResult("unavailable", first.reason)
        return EnergyResult("failed", f"repeat {k + 1}/{len(results)}: {first.reason or 'no energy figure'}")

    def med(name: str) -> float | None:
        vals = [getattr(r, name) for r in rs]
        return float(statistics.median(vals)) if all(v is not None for v in vals) else None

    first = rs[0]
    return EnergyResult(
        "ok",
        first.reason,
        source=first.source,
        scope=first.scope,
        devices=list(first.devices),
        joules=med("joules"),
        window_s=med("window_s"),
        steps=int(statistics.median(r.steps or 0 for r in rs)),
        items_per_step=first.items_per_step,
        energy_j_per_step=med("energy_j_per_step"),
        energy_j_per_item=med("energy_j_per_item"),
        avg_power_w=med("avg_power_w"),
        min_window_s=first.min_window_s,
    )
