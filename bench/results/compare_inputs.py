"""Reading ``dlbench compare``'s inputs: results CSVs (through the one loader), pytest-benchmark JSON.

``load_side(paths)`` reads one side: files and folders of them, any mix. Every CSV goes through
``bench.results.loader`` (the checks every command shares: schema version, torn and repeated rows,
non-finite or negative figures, the same file twice); each ok row becomes a ``Result`` whose
``processes`` are what it was measured from: its sidecar's ``repeats`` (``--repeat R``), else one
process with its raw samples. A row flagged ``noisy`` stays one, so a verdict built on it says so.

Torch-free, rich-free.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.results.compare_spec import (
    COMPILE_TIME_COLUMN,
    CONFIG_FIELDS,
    ENV_FIELDS,
    FLOPS_COLUMN,
    METRIC_LIST,
)
from bench.results.loader import (
    ResultsInputError,
    ResultsTable,
    check_distinct,
    check_regular_file,
    read_results,
)
from bench.results.pytest_benchmark import BenchmarkFile, PytestBenchmarkError, read_pytest_benchmark
from bench.results.schema import PARAM_PREFIX

#: a file compare cannot use; the message is one line naming the file (and the line and column)
CompareInputError = ResultsInputError


def norm(value: Any) -> str:
    """A cell as a match-key string: empty for missing, ``true``/``false``, integral numbers as ints."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip()
    if text in ("", "nan", "NaN", "None"):
        return ""
    if text in ("True", "False", "true", "false"):
        return text.lower()
    try:
        f = float(text)
    except ValueError:
        return text
    if math.isfinite(f) and f.is_integer() and "e" not in text.lower():
        return str(int(f))
    return repr(f) if math.isfinite(f) else text


def num(value: Any) -> float | None:
    """A finite float, or None (missing, text, a bool, NaN or infinite)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def _positive(value: Any) -> float | None:
    f = num(value)
    return f if f is not None and f > 0 else None


@dataclass
class Process:
    """One process: its median step time (ms), its raw samples where known, and its own figures of
    the ``"row"`` metrics (energy per item) where its sidecar record has them."""

    median_ms: float
    samples_ms: list[float] | None = None
    figures: dict[str, float] = field(default_factory=dict)


@dataclass
class Result:
    """One row of a results CSV, or one pytest-benchmark benchmark, in the shape compare needs."""

    config: dict[str, str]  # MATCH_FIELDS + param_* (normalized); a generic benchmark: {"benchmark": name}
    status: str
    source: str  # file (and line) it came from
    reason: str = ""
    processes: list[Process] = field(default_factory=list)
    ci_covers: str = ""
    figures: dict[str, float] = field(default_factory=dict)  # the row's own figure of each metric column
    units: dict[str, str] = field(default_factory=dict)  # unit columns (throughput_unit)
    memory: dict[str, int] = field(default_factory=dict)  # *_bytes columns
    env: dict[str, str] = field(default_factory=dict)
    noisy: bool = False
    run_id: str = ""
    sources: dict[str, str] = field(default_factory=dict)  # where a figure came from (energy_source, ...)
    why_empty: dict[str, str] = field(default_factory=dict)  # a "row" metric's empty cell: why

    @property
    def median_ms(self) -> float | None:
        meds = sorted(p.median_ms for p in self.processes)
        if not meds:
            return None
        mid = len(meds) // 2
        return meds[mid] if len(meds) % 2 else 0.5 * (meds[mid - 1] + meds[mid])

    @property
    def throughput(self) -> float | None:
        return self.figures.get("throughput")

    @property
    def mfu(self) -> float | None:
        return self.figures.get("mfu")

    @property
    def flops(self) -> float | None:
        return self.figures.get(FLOPS_COLUMN)

    def key(self, drop: Iterable[str] = ()) -> tuple[tuple[str, str], ...]:
        dropped = set(drop)
        return tuple(sorted((k, v) for k, v in self.config.items() if k not in dropped))


@dataclass
class Side:
    """Every result read from one side's inputs (the paths as given and the files read)."""

    paths: list[str]
    files: list[str] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _samples(raw: Any) -> list[float] | None:
    """Positive finite samples of a sidecar list; None when there are none (or it is not a list)."""
    if not isinstance(raw, list):
        return None
    out = [float(x) for x in raw if _positive(x) is not None]
    return out or None


def _processes_of(row: Mapping[str, str], rec: Mapping[str, Any] | None) -> tuple[list[Process], str]:
    """The processes behind an ok row: its sidecar's ``repeats``, else one process (samples if any)."""
    median = _positive(row.get("time_median_ms"))
    covers = row.get("ci_covers") or ""
    repeats = rec.get("repeats") if rec is not None else None
    if isinstance(repeats, list) and len(repeats) >= 2:
        procs = []
        for r in repeats:
            m = _positive(r.get("median_ms")) if isinstance(r, Mapping) else None
            if m is not None:
                figures = {c: f for c in _ROW_COLUMNS if (f := _positive(r.get(c))) is not None}
                procs.append(Process(m, _samples(r.get("samples_ms")), figures))
        if len(procs) >= 2:
            return procs, covers or "between-process"
    if median is None:
        return [], covers
    return [Process(median, _samples(rec.get("samples_ms")) if rec is not None else None)], covers or (
        "within-process"
    )


# the figures a Result keeps: each metric's, the FLOPs, and torch.compile's cold start (the break-even)
_FIGURE_COLUMNS = tuple(dict.fromkeys([*(m.column for m in METRIC_LIST), FLOPS_COLUMN, COMPILE_TIME_COLUMN]))
_UNIT_COLUMNS = tuple(m.unit_column for m in METRIC_LIST if m.unit_column)
_ROW_METRICS = tuple(m for m in METRIC_LIST if m.kind == "row")
_ROW_COLUMNS = tuple(m.column for m in _ROW_METRICS)
_SOURCE_COLUMNS = tuple(dict.fromkeys(c for m in METRIC_LIST for c in m.source_columns))


def _why_empty(row: Mapping[str, str], rec: Mapping[str, Any] | None) -> dict[str, str]:
    """Why each ``"row"`` metric's cell of an ok row is empty: its sidecar record's reason, else a
    reason the row itself gives (one naming the metric's sidecar key), else that none was found."""
    out: dict[str, str] = {}
    for m in _ROW_METRICS:
        if num(row.get(m.column)) is not None:
            continue
        block = rec.get(m.sidecar_key) if rec is not None and m.sidecar_key else None
        why = str(block.get("reason") or "") if isinstance(block, Mapping) else ""
        if not why and m.sidecar_key:
            parts = [p.strip() for p in (row.get("reason") or "").split(";")]
            why = next((p for p in parts if p.startswith(f"{m.sidecar_key}:")), "")
        out[m.column] = why or f"{m.column} is empty and its sidecar record gives no reason"
    return out


def results_of_table(table: ResultsTable) -> list[Result]:
    """The rows of a checked results CSV as ``Result`` s (ok rows with their processes)."""
    params = [c for c in table.header if c.startswith(PARAM_PREFIX)]
    byte_cols = [c for c in table.header if c.endswith("_bytes")]
    ok_keys = {
        (table.cell(i, "run_id"), table.cell(i, "config_key"))
        for i in range(len(table))
        if table.cell(i, "status") == "ok"
    }
    records = table.samples(ok_keys) if ok_keys else {}
    out: list[Result] = []
    for line, row in table.rows():
        config = {f.name: norm(row.get(f.name)) or f.empty for f in CONFIG_FIELDS}
        config.update({c: norm(row.get(c)) for c in params})
        figures = {c: f for c in _FIGURE_COLUMNS if (f := num(row.get(c))) is not None}
        # a parallel job's throughput is the job's (global batch / slowest rank), not one rank's:
        # what a job of W ranks is compared on against one process (single-process rows: the same)
        if (job := num(row.get("job_throughput"))) is not None and job > 0:
            figures["throughput"] = job
        res = Result(
            config=config,
            status=row.get("status") or "",
            source=f"{table.path}:{line}",
            reason=row.get("reason") or "",
            figures=figures,
            units={c: row[c] for c in _UNIT_COLUMNS if row.get(c)},
            memory={c: int(b) for c in byte_cols if (b := num(row.get(c))) is not None},
            env={k: e for k in ENV_FIELDS if (e := norm(row.get(k)))},
            noisy=row.get("noisy") in ("True", "true"),
            run_id=row.get("run_id") or "",
            sources={c: row[c] for c in _SOURCE_COLUMNS if row.get(c)},
        )
        if res.status == "ok":
            rec = records.get((row.get("run_id") or "", row.get("config_key") or ""))
            res.processes, res.ci_covers = _processes_of(row, rec)
            res.why_empty = _why_empty(row, rec)
        out.append(res)
    return out


def results_of_benchmarks(bf: BenchmarkFile) -> list[Result]:
    """The benchmarks of a pytest-benchmark file as ``Result`` s (one process each)."""
    out = []
    for b in bf.benchmarks:
        block = b.dlbench
        env: dict[str, str] = {}
        if block is not None and isinstance(block.get("config"), Mapping):
            # a field the block does not name (written before it existed) reads as its empty value,
            # as in a CSV: compile none, parallel none, ...
            config = {f.name: f.empty for f in CONFIG_FIELDS if f.empty}
            config.update({str(k): norm(v) for k, v in block["config"].items()})
            raw_env = block.get("env")
            if isinstance(raw_env, Mapping):
                env = {k: norm(v) for k, v in raw_env.items() if k in ENV_FIELDS and norm(v)}
        else:
            config = {"benchmark": b.fullname}
            if bf.cpu_model:
                env["cpu_model"] = bf.cpu_model
        items = _positive(block.get("items_per_step")) if block else None
        unit = str(block.get("unit") or "") if block else ""
        figures = {"time_median_ms": b.median_ms}
        if items:
            figures["throughput"] = items / (b.median_ms / 1e3)
        out.append(
            Result(
                config=config,
                status="ok",
                source=f"{bf.path}: {b.fullname}",
                processes=[Process(b.median_ms, b.samples_ms or None)],
                ci_covers="within-process",
                figures=figures,
                units={"throughput_unit": f"{unit}/s"} if unit else {},
                env=env,
            )
        )
    return out


def _is_json(path: Path) -> bool:
    return path.suffix.lower() == ".json"


def _read_one(
    path: Path, seen: dict[tuple[str, ...], str], *, in_directory: bool = False
) -> tuple[list[Result], list[str]]:
    """The results of one file and the notes its loading left (``seen``: rows already read on this side)."""
    if _is_json(path):
        check_regular_file(path)
        try:
            return results_of_benchmarks(read_pytest_benchmark(path)), []
        except PytestBenchmarkError as exc:
            if in_directory:  # a folder also holds other JSON (a compare --out, a profile summary)
                return [], [f"{path}: not a pytest-benchmark file, skipped"]
            raise CompareInputError(str(exc)) from None
    table = read_results(path, seen=seen)
    if not len(table):
        if in_directory:
            return [], [f"{path}: no result rows, skipped", *table.notes]
        if table.notes:
            raise CompareInputError(
                f"{path}: every row repeats a row already read from another input (the same run given "
                "twice under another name); give it once"
            )
        raise CompareInputError(f"{path}: no result rows (only a header)")
    return results_of_table(table), table.notes


def _members(folder: Path) -> list[Path]:
    """The ``*.csv`` and ``*.json`` regular files of a folder (not recursive)."""
    out = []
    for q in sorted(folder.iterdir()):
        try:
            st = os.stat(q)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and q.suffix.lower() in (".csv", ".json"):
            out.append(q)
    return out


def expand_inputs(paths: Sequence[str | Path]) -> list[tuple[Path, bool]]:
    """Every file an input list names: ``(file, came from a folder)``; ``CompareInputError`` if absent."""
    out: list[tuple[Path, bool]] = []
    for given in paths:
        p = Path(given)
        if not os.path.lexists(p) or not p.exists():
            raise CompareInputError(f"{p}: no such file or directory")
        if p.is_dir():
            members = _members(p)
            if not members:
                raise CompareInputError(f"{p}: a directory without .csv or .json results")
            out += [(q, True) for q in members]
        else:
            out.append((p, False))
    return out


def load_side(paths: Sequence[str | Path]) -> Side:
    """Read every input of one side: CSV files, pytest-benchmark JSON files, directories of them.

    A directory contributes its ``*.csv`` and ``*.json`` files (not recursive; header-only CSVs,
    left by a sweep killed before its first row, and JSON files that are not pytest-benchmark's,
    such as an earlier ``compare --out``, are skipped with a note). ``CompareInputError`` for
    a path that does not exist, a file that is not a results CSV or a pytest-benchmark file, no rows
    at all, or a file given twice (also through a folder or a link). Rows repeated within or
    across the side's files count once (a note says so).
    """
    if not paths:
        raise CompareInputError("no input files given")
    side = Side(paths=[str(p) for p in paths])
    files = expand_inputs(paths)
    check_distinct([f for f, _ in files])
    seen: dict[tuple[str, ...], str] = {}
    for path, in_dir in files:
        rows, notes = _read_one(path, seen, in_directory=in_dir)
        side.notes += notes
        if rows:
            side.files.append(str(path))
            side.results += rows
    if not side.results:
        raise CompareInputError(f"{', '.join(side.paths)}: no result rows")
    return side


__all__ = [
    "CompareInputError",
    "Process",
    "Result",
    "Side",
    "expand_inputs",
    "load_side",
    "norm",
    "num",
    "results_of_benchmarks",
    "results_of_table",
]
