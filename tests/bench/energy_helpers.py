"""Results files with known joules, for the compare and report tests of energy.

``write_energy`` rewrites rows of the compare fixture ``base.csv`` (attention forward/train x
fp32/amp-bf16, 512 tokens a step, run ``base-1``) with the energy columns and a sidecar written
here: a row's ``energy_j_per_item`` is the figure given, ``energy_j_per_step`` 512 times it; a
``--repeat`` row gets one sidecar record per repeat with its own figure, and the cell is their
median, as ``bench.harness.energy.combine_repeats`` writes it. A row without a figure gets empty
cells and the sidecar's ``energy`` record with its status and reason, as ``dlbench run`` writes it.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.bench.results_helpers import FIX, csv_text, read_rows

ENERGY_COLUMNS = (
    "energy_j_per_step",
    "energy_j_per_item",
    "avg_power_w",
    "energy_source",
    "energy_scope",
    "energy_devices",
    "energy_window_s",
)
RAPL = ("rapl-package", "cpu-package", "cpu-package0")
NVML = ("nvml", "device", "gpu0")
NO_COUNTER = "no CPU energy counter: RAPL is not exposed here (/sys/class/powercap/intel-rapl is absent)"
ITEMS = 512

Key = tuple[str, str]  # (mode, precision)
Figure = float | Sequence[float] | None  # J/item; per-repeat figures; no figure


def write_energy(
    path: Path,
    figures: Mapping[Key, Figure],
    *,
    run_id: str | None = None,
    source: tuple[str, str, str] = RAPL,
    sources: Mapping[Key, tuple[str, str, str]] | None = None,
    why: str = NO_COUNTER,
    row_reason: str = "",
    sidecar: bool = True,
    edit: Callable[[dict[str, str]], None] | None = None,
) -> Path:
    """A results CSV of the ``figures`` rows (others dropped) and its sidecar; returns ``path``."""
    header, rows = read_rows(FIX / "base.csv")
    header = header + [c for c in ENERGY_COLUMNS if c not in header]
    run = run_id or path.stem
    out, records = [], []
    for row in rows:
        key = (row["mode"], row["precision"])
        if key not in figures:
            continue
        fig = figures[key]
        src = (sources or {}).get(key, source)
        row = {**row, "run_id": run}
        record: dict[str, Any] = {"run_id": run, "config_key": row["config_key"], "samples_ms": []}
        per_repeat = list(fig) if isinstance(fig, Sequence) else None
        value = statistics.median(per_repeat) if per_repeat else fig
        if per_repeat:
            median_ms = float(row["time_median_ms"])
            row.update(repeats=str(len(per_repeat)), ci_covers="between-process")
            record["repeats"] = [
                {
                    "repeat": k + 1,
                    "median_ms": median_ms * (1 + 0.01 * k),
                    "samples_ms": [median_ms] * 5,
                    "energy_j_per_step": e * ITEMS,
                    "energy_j_per_item": e,
                    "avg_power_w": 10.0,
                    "energy_window_s": 1.0,
                    "energy_reason": "",
                }
                for k, e in enumerate(per_repeat)
            ]
        if value is None:
            row.update({c: "" for c in ENERGY_COLUMNS})
            row["reason"] = row_reason
            status = "failed" if row_reason else "unavailable"
            record["energy"] = {"status": status, "reason": row_reason or why}
        else:
            row.update(
                energy_j_per_step=repr(value * ITEMS),
                energy_j_per_item=repr(float(value)),
                avg_power_w="10.0",
                energy_source=src[0],
                energy_scope=src[1],
                energy_devices=src[2],
                energy_window_s="1.0",
            )
            record["energy"] = {"status": "ok", "reason": "", "source": src[0], "scope": src[1]}
        if edit is not None:
            edit(row)
            record["config_key"] = row["config_key"]
        out.append(row)
        records.append(record)
    path.write_text(csv_text(header, out), encoding="utf-8")
    if sidecar:
        lines = "".join(json.dumps(r) + "\n" for r in records)
        path.with_suffix(".samples.jsonl").write_text(lines, encoding="utf-8")
    return path


def as_ddp(world_size: int) -> Callable[[dict[str, str]], None]:
    """An ``edit`` making the row a DDP job of ``world_size`` ranks (its own configuration)."""

    def edit(row: dict[str, str]) -> None:
        row.update(parallel="ddp", world_size=str(world_size))
        row["config_key"] += f"|par=ddp|ws={world_size}"

    return edit


__all__ = ["ENERGY_COLUMNS", "ITEMS", "NO_COUNTER", "NVML", "RAPL", "as_ddp", "write_energy"]
