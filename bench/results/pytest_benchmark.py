"""Reading pytest-benchmark JSON: what ``pytest --benchmark-json FILE`` (or ``--benchmark-save``) writes.

The file is ``{"machine_info": {...}, "commit_info": {...}, "benchmarks": [...], "datetime", "version"}``;
each benchmark has ``name``, ``fullname``, ``group``, ``params``, ``extra_info`` and ``stats``, whose
``data`` holds the raw per-round times in seconds, each already divided by the round's iterations
(``--benchmark-json`` always includes it; ``--benchmark-save`` only with ``--benchmark-save-data``).

Benchmarks written by dlbench's own plugin (``bench.pytest_plugin``) carry the configuration and the
environment fingerprint in ``extra_info["dlbench"]``, so ``dlbench compare`` matches them to CSV
rows or to each other by configuration; any other benchmark is matched by its ``fullname``.

Torch-free: ``dlbench compare`` reads these without paying for torch.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the key of the dlbench block inside a benchmark's ``extra_info`` (``bench.pytest_plugin`` writes it)
EXTRA_KEY = "dlbench"


class PytestBenchmarkError(ValueError):
    """A file that is not a readable pytest-benchmark JSON file; the message names it and why."""


@dataclass(frozen=True)
class BenchmarkRecord:
    """One benchmark of a pytest-benchmark file, times in milliseconds."""

    name: str
    fullname: str
    group: str | None
    params: dict[str, Any]
    extra_info: dict[str, Any]
    median_ms: float
    samples_ms: list[float] = field(default_factory=list)  # per-iteration times; empty without data
    rounds: int = 0
    iterations: int = 1

    @property
    def dlbench(self) -> dict[str, Any] | None:
        """The configuration block of dlbench's plugin (``config``, ``env``, ``items_per_step``, ...)."""
        block = self.extra_info.get(EXTRA_KEY)
        return block if isinstance(block, dict) else None


@dataclass(frozen=True)
class BenchmarkFile:
    """A whole pytest-benchmark file."""

    path: Path
    machine_info: dict[str, Any]
    commit_info: dict[str, Any]
    benchmarks: list[BenchmarkRecord]

    @property
    def cpu_model(self) -> str | None:
        """The CPU's brand string as pytest-benchmark recorded it (py-cpuinfo), if any."""
        cpu = self.machine_info.get("cpu")
        if isinstance(cpu, Mapping):
            brand = cpu.get("brand_raw") or cpu.get("brand")
            return str(brand) if brand else None
        return None


def looks_like_pytest_benchmark(data: Any) -> bool:
    """True for a decoded JSON document with pytest-benchmark's shape (a ``benchmarks`` list)."""
    return isinstance(data, Mapping) and isinstance(data.get("benchmarks"), list)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _record(path: Path, i: int, b: Any) -> BenchmarkRecord:
    where = f"{path}: benchmarks[{i}]"
    if not isinstance(b, Mapping):
        raise PytestBenchmarkError(f"{where} is not an object; not a pytest-benchmark JSON file")
    name = b.get("name")
    stats = b.get("stats")
    if not isinstance(name, str) or not isinstance(stats, Mapping):
        raise PytestBenchmarkError(f"{where} has no 'name' and 'stats'; not a pytest-benchmark JSON file")
    median = _number(stats.get("median"))
    if median is None or median <= 0:
        raise PytestBenchmarkError(f"{where} ({name}): stats.median is not a positive number")
    raw = stats.get("data")
    samples: list[float] = []
    if raw is not None:
        if not isinstance(raw, list) or any(_number(x) is None or x <= 0 for x in raw):
            raise PytestBenchmarkError(f"{where} ({name}): stats.data is not a list of positive times")
        samples = [float(x) * 1e3 for x in raw]
    params = b.get("params")
    extra = b.get("extra_info")
    return BenchmarkRecord(
        name=name,
        fullname=str(b.get("fullname") or name),
        group=str(b["group"]) if b.get("group") is not None else None,
        params=dict(params) if isinstance(params, Mapping) else {},
        extra_info=dict(extra) if isinstance(extra, Mapping) else {},
        median_ms=median * 1e3,
        samples_ms=samples,
        rounds=int(_number(stats.get("rounds")) or len(samples)),
        iterations=int(_number(stats.get("iterations")) or 1),
    )


def read_pytest_benchmark(path: Path | str) -> BenchmarkFile:
    """Parse a pytest-benchmark JSON file; ``PytestBenchmarkError`` (one line) for anything else."""
    p = Path(path)
    try:
        if not stat.S_ISREG(os.stat(p).st_mode):
            raise PytestBenchmarkError(f"{p}: not a regular file (a folder, a FIFO or a device)")
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PytestBenchmarkError(f"{p}: no such file") from None
    except UnicodeDecodeError as exc:
        raise PytestBenchmarkError(f"{p}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise PytestBenchmarkError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if not text.strip():
        raise PytestBenchmarkError(f"{p}: empty file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PytestBenchmarkError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise PytestBenchmarkError(f"{p}: nested too deeply to be a pytest-benchmark JSON file") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise PytestBenchmarkError(f"{p}: not valid JSON ({exc})") from None
    if not looks_like_pytest_benchmark(data):
        raise PytestBenchmarkError(
            f"{p}: not a pytest-benchmark JSON file (no 'benchmarks' list; write one with "
            "pytest --benchmark-json FILE)"
        )
    if not data["benchmarks"]:
        raise PytestBenchmarkError(f"{p}: a pytest-benchmark file with no benchmarks")
    machine = data.get("machine_info")
    commit = data.get("commit_info")
    return BenchmarkFile(
        path=p,
        machine_info=dict(machine) if isinstance(machine, Mapping) else {},
        commit_info=dict(commit) if isinstance(commit, Mapping) else {},
        benchmarks=[_record(p, i, b) for i, b in enumerate(data["benchmarks"])],
    )
