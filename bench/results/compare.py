"""``dlbench compare``: NEW vs BASE per configuration, with an interval that says which noise it covers.

Inputs (``load_side``): results CSVs (with their ``.samples.jsonl`` sidecars), directories of them,
and pytest-benchmark JSON files (``bench.results.pytest_benchmark``), any mix, one or more per side.
Rows are matched by configuration (``MATCH_FIELDS`` and every ``param_*``), never by run identity
(run_id, timestamp, git_commit, elapsed). Every ok row on a side is one *process*: several files of
separate runs, or a ``--repeat R`` row (R processes in its sidecar), give several per side.

Per matched configuration the ratio NEW / BASE of the metric, with a 95 % CI (``bench.stats``):

- at least 2 processes on a side: ``ratio_from_repeats`` (Welch t on log per-process figures); the
  CI covers the drift between processes (``ci_covers = "between-process"``); one process on the
  other side then leaves the CI unbounded (its spread is unknown) -- never a fake tight one;
- one process a side with raw samples: ``ratio_from_samples`` (bootstrap of medians); the CI covers
  only the noise *within* each process (``"within-process"``). Separate runs here drifted 46 % apart
  while such a CI said +-2 %: a verdict across runs needs ``--repeat`` (or the gate);
- no raw samples (no sidecar): the ratio of medians with an unbounded CI.

Memory (``peak_mem_bytes``) and FLOPs are deterministic: compared exactly (``exact_ratio``), with the
byte difference. The verdict (``bench.stats.verdict``) is faster / slower / same / inconclusive;
a configuration on one side only is ``new`` or ``missing``; failed on a side, ``failed``.

Environments (``ENV_FIELDS``) that differ are refused (``EnvMismatchError`` lists the fields) unless
``allow_env_mismatch=True``, which labels the result; the device then leaves the match key.

``compare_by(side, axis, base_value)``: within ONE set of results, each value of ``axis``
(precision, checkpointing, parallel, mode, or a parameter such as ``seq_len``) against the base value,
for every configuration of the other fields.

Torch-free, rich-free (only the standard library, numpy and scipy through ``bench.stats``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.results.load import load_samples
from bench.results.pytest_benchmark import BenchmarkFile, PytestBenchmarkError, read_pytest_benchmark
from bench.results.schema import FAILED_STATUSES, PARAM_PREFIX, SCHEMA_VERSION
from bench.results.store import ResultsFileError, read_header, validate_file
from bench.stats.compare import (
    RatioEstimate,
    exact_ratio,
    ratio_from_repeats,
    ratio_from_samples,
    verdict,
)
from bench.stats.estimate import unbounded

#: configuration fields a match is made on (plus every ``param_*`` column); ``batch_size`` is a
#: scenario parameter that happens to be a core column
MATCH_FIELDS: tuple[str, ...] = (
    "scenario",
    "mode",
    "precision",
    "checkpointing",
    "parallel",
    "world_size",
    "device",
    "channels_last",
    "seed",
    "batch_size",
)
#: environment fields that must agree between BASE and NEW (or ``allow_env_mismatch``)
ENV_FIELDS: tuple[str, ...] = ("torch_version", "device", "device_name", "threads", "cpu_model")
#: columns without which a CSV is not a results file compare can read
REQUIRED_COLUMNS: tuple[str, ...] = (
    "schema_version",
    "scenario",
    "mode",
    "precision",
    "checkpointing",
    "device",
    "status",
    "time_median_ms",
    "config_key",
)
METRICS: tuple[str, ...] = ("time", "throughput", "memory", "mfu")
HIGHER_IS_BETTER: dict[str, bool] = {"time": False, "throughput": True, "memory": False, "mfu": True}
VERDICTS: tuple[str, ...] = ("faster", "slower", "same", "inconclusive", "new", "missing", "failed")
MEMORY_COLUMN = "peak_mem_bytes"
#: the usual base of an axis in ``compare_by`` (others: the first value in sorted order)
DEFAULT_BASE: dict[str, str] = {"precision": "fp32", "checkpointing": "none", "parallel": "none"}
DEFAULT_THRESHOLD = 0.05
CONFIDENCE = 0.95


class CompareInputError(ValueError):
    """Input ``dlbench compare`` cannot use; the message is one line naming the file and the problem."""


class EnvMismatchError(CompareInputError):
    """BASE and NEW come from different environments; ``fields`` lists what differs."""

    def __init__(self, message: str, fields: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.fields = fields


# --- values ---------------------------------------------------------------------------------------


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


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def parse_threshold(value: str | float | None) -> float:
    """``"5%"`` or ``0.05`` -> 0.05; a bare number must be a fraction in [0, 1) (``5`` is refused)."""
    if value is None:
        return DEFAULT_THRESHOLD
    text = str(value).strip()
    try:
        t = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        expected = "a percentage such as 5% or a fraction such as 0.05"
        raise CompareInputError(f"--threshold: expected {expected}, got {text!r}") from None
    if not text.endswith("%") and t >= 1.0:
        raise CompareInputError(
            f"--threshold: {text} is not a fraction; write {text}% (or {t / 100:g}) for {t:g} percent"
        )
    if not (math.isfinite(t) and 0.0 <= t < 1.0):
        raise CompareInputError(f"--threshold: must be between 0% and 100%, got {text!r}")
    return t


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise CompareInputError(f"--metric: unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    return metric


# --- what was measured ----------------------------------------------------------------------------


@dataclass
class Process:
    """One process's time figure: its median (ms) and, where known, its raw per-iteration samples."""

    median_ms: float
    samples_ms: list[float] | None = None


@dataclass
class Result:
    """One row of a results CSV, or one pytest-benchmark benchmark, in the shape compare needs."""

    config: dict[str, str]  # MATCH_FIELDS + param_* (normalized); a generic benchmark: {"benchmark": name}
    status: str
    source: str  # file (and row) it came from
    reason: str = ""
    processes: list[Process] = field(default_factory=list)
    ci_covers: str = ""
    throughput: float | None = None
    throughput_unit: str = ""
    mfu: float | None = None
    memory: dict[str, int] = field(default_factory=dict)  # *_bytes columns
    flops: float | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def median_ms(self) -> float | None:
        meds = sorted(p.median_ms for p in self.processes)
        if not meds:
            return None
        mid = len(meds) // 2
        return meds[mid] if len(meds) % 2 else 0.5 * (meds[mid - 1] + meds[mid])

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


def _int_or_none(value: Any) -> int | None:
    f = _num(value)
    return int(f) if f is not None else None


def _records_by_row(csv_path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Sidecar records keyed by (run_id, config_key); the last one wins (a re-measured orphan)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for rec in load_samples(csv_path):
        if isinstance(rec, dict):
            out[(str(rec.get("run_id")), str(rec.get("config_key")))] = rec
    return out


def _processes_of(row: Mapping[str, str], rec: Mapping[str, Any] | None) -> tuple[list[Process], str]:
    """The processes behind an ok row: its sidecar's ``repeats``, else one process (samples if any)."""
    median = _num(row.get("time_median_ms"))
    covers = row.get("ci_covers") or ""
    if rec is not None and isinstance(rec.get("repeats"), list) and len(rec["repeats"]) >= 2:
        procs = []
        for r in rec["repeats"]:
            m = _num(r.get("median_ms")) if isinstance(r, Mapping) else None
            if m is None or m <= 0:
                continue
            rep_samples = [float(x) for x in r.get("samples_ms") or [] if _num(x) and float(x) > 0]
            procs.append(Process(m, rep_samples or None))
        if len(procs) >= 2:
            return procs, covers or "between-process"
    if median is None or median <= 0:
        return [], covers
    samples: list[float] | None = None
    if rec is not None:
        raw = rec.get("samples_ms") or []
        samples = [float(x) for x in raw if _num(x) and float(x) > 0] or None
    return [Process(median, samples)], covers or "within-process"


def read_csv(path: Path, *, in_directory: bool = False) -> list[Result]:
    """The rows of a results CSV as ``Result`` s; ``CompareInputError`` for a file that is not one."""
    try:
        header = read_header(path)
        if header is None:
            raise CompareInputError(f"{path}: empty file (no header, no rows)")
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise CompareInputError(
                f"{path}: not a dlbench results CSV: missing column(s) {', '.join(missing)}"
            )
        n_rows = validate_file(path)
    except ResultsFileError as exc:
        raise CompareInputError(str(exc)) from None
    except OSError as exc:
        raise CompareInputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if n_rows == 0:
        if in_directory:
            return []
        raise CompareInputError(f"{path}: no result rows (only a header)")
    records = _records_by_row(path)
    params = [c for c in header if c.startswith(PARAM_PREFIX)]
    out: list[Result] = []
    with path.open(newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.DictReader(f), start=2):
            version = norm(row.get("schema_version"))
            if version != str(SCHEMA_VERSION):
                raise CompareInputError(
                    f"{path}: line {lineno}: schema_version {version or '(empty)'} is not one this "
                    f"dlbench reads ({SCHEMA_VERSION}); compare it with the dlbench that wrote it"
                )
            config = {k: norm(row.get(k)) for k in MATCH_FIELDS}
            # single-process defaults of files written before these columns were filled
            config["parallel"] = config["parallel"] or "none"
            config["world_size"] = config["world_size"] or "1"
            config["channels_last"] = config["channels_last"] or "false"
            config["seed"] = config["seed"] or "0"
            config.update({c: norm(row.get(c)) for c in params})
            status = row.get("status") or ""
            res = Result(
                config=config,
                status=status,
                source=f"{path}:{lineno}",
                reason=row.get("reason") or "",
                throughput=_num(row.get("throughput")),
                throughput_unit=row.get("throughput_unit") or "",
                mfu=_num(row.get("mfu")),
                memory={
                    c: v
                    for c in header
                    if c.endswith("_bytes") and (v := _int_or_none(row.get(c))) is not None
                },
                flops=_num(row.get("flops_per_step")),
                env={k: norm(row.get(k)) for k in ENV_FIELDS if norm(row.get(k))},
            )
            if status == "ok":
                rec = records.get((str(row.get("run_id")), str(row.get("config_key"))))
                res.processes, res.ci_covers = _processes_of(row, rec)
                if not res.processes:
                    res.status, res.reason = "error", "ok row without a time_median_ms"
            out.append(res)
    return out


def results_of_benchmarks(bf: BenchmarkFile) -> list[Result]:
    """The benchmarks of a pytest-benchmark file as ``Result`` s (one process each)."""
    out = []
    for b in bf.benchmarks:
        block = b.dlbench
        env: dict[str, str] = {}
        if block is not None and isinstance(block.get("config"), Mapping):
            config = {str(k): norm(v) for k, v in block["config"].items()}
            env = {k: norm(v) for k, v in (block.get("env") or {}).items() if k in ENV_FIELDS and norm(v)}
        else:
            config = {"benchmark": b.fullname}
            if bf.cpu_model:
                env["cpu_model"] = bf.cpu_model
        items = _num(block.get("items_per_step")) if block else None
        unit = str(block.get("unit") or "") if block else ""
        out.append(
            Result(
                config=config,
                status="ok",
                source=f"{bf.path}: {b.fullname}",
                processes=[Process(b.median_ms, b.samples_ms or None)],
                ci_covers="within-process",
                throughput=items / (b.median_ms / 1e3) if items else None,
                throughput_unit=f"{unit}/s" if unit else "",
                env=env,
            )
        )
    return out


def _read_one(path: Path, *, in_directory: bool = False) -> list[Result]:
    if path.suffix.lower() == ".json":
        try:
            return results_of_benchmarks(read_pytest_benchmark(path))
        except PytestBenchmarkError as exc:
            raise CompareInputError(str(exc)) from None
    return read_csv(path, in_directory=in_directory)


def load_side(paths: Sequence[str | Path]) -> Side:
    """Read every input of one side: CSV files, pytest-benchmark JSON files, directories of them.

    A directory contributes its ``*.csv`` and ``*.json`` files (not recursive; header-only CSVs,
    left by a sweep killed before its first row, are skipped). ``CompareInputError`` for a path that
    does not exist, a file that is not a results CSV or a pytest-benchmark file, or no rows at all.
    """
    if not paths:
        raise CompareInputError("no input files given")
    side = Side(paths=[str(p) for p in paths])
    for given in paths:
        p = Path(given)
        if not p.exists():
            raise CompareInputError(f"{p}: no such file or directory")
        if p.is_dir():
            members = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in (".csv", ".json"))
            if not members:
                raise CompareInputError(f"{p}: a directory without .csv or .json results")
            for q in members:
                rows = _read_one(q, in_directory=True)
                if rows:
                    side.files.append(str(q))
                    side.results += rows
                else:
                    side.notes.append(f"{q}: no result rows, skipped")
        else:
            side.results += _read_one(p)
            side.files.append(str(p))
    if not side.results:
        raise CompareInputError(f"{', '.join(side.paths)}: no result rows")
    return side


# --- one comparison -------------------------------------------------------------------------------


@dataclass
class Group:
    """Everything one side has for one configuration."""

    config: dict[str, str]
    results: list[Result] = field(default_factory=list)

    @property
    def ok(self) -> list[Result]:
        return [r for r in self.results if r.status == "ok"]

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.status in FAILED_STATUSES]

    @property
    def processes(self) -> list[tuple[Result, Process]]:
        return [(r, p) for r in self.ok for p in r.processes]

    def first(self, get: Any) -> Any:
        for r in self.ok:
            v = get(r)
            if v is not None:
                return v
        return None


@dataclass
class Pair:
    """The comparison of one configuration: NEW / BASE of the metric, plus exact memory and FLOPs."""

    label: str
    key: str
    config: dict[str, str]
    verdict: str
    metric: str
    estimate: RatioEstimate | None = None
    ci_covers: str = ""
    base_value: float | None = None
    new_value: float | None = None
    unit: str = ""
    memory_base_bytes: int | None = None
    memory_new_bytes: int | None = None
    flops_base: float | None = None
    flops_new: float | None = None
    base_status: str = ""
    new_status: str = ""
    reason: str = ""
    note: str = ""

    @property
    def memory_ratio(self) -> float | None:
        if self.memory_base_bytes is None or self.memory_new_bytes is None:
            return None
        return exact_ratio(self.memory_base_bytes, self.memory_new_bytes).ratio

    @property
    def memory_delta_bytes(self) -> int | None:
        if self.memory_base_bytes is None or self.memory_new_bytes is None:
            return None
        return self.memory_new_bytes - self.memory_base_bytes

    @property
    def flops_ratio(self) -> float | None:
        if self.flops_base is None or self.flops_new is None:
            return None
        return exact_ratio(self.flops_base, self.flops_new).ratio

    @property
    def regression(self) -> bool:
        """A significant change for the worse beyond the threshold (verdict "slower")."""
        return self.verdict == "slower"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``bench.report.compare_format``); non-finite numbers become None."""
        est = self.estimate.to_dict() if self.estimate is not None else {}
        d: dict[str, Any] = {
            "label": self.label,
            "key": self.key,
            "verdict": self.verdict,
            "ratio": est.get("ratio"),
            "ci_low": est.get("ci_low"),
            "ci_high": est.get("ci_high"),
            "p_value": est.get("p_value"),
            "method": est.get("method"),
            "n_base": est.get("n_base"),
            "n_new": est.get("n_new"),
            "confidence": est.get("confidence"),
            "ci_covers": self.ci_covers or None,
            "significant": self.estimate.significant if self.estimate is not None else None,
            "regression": self.regression,
            "metric": self.metric,
            "base_value": self.base_value,
            "new_value": self.new_value,
            "unit": self.unit,
            "memory_ratio": self.memory_ratio,
            "memory_base_bytes": self.memory_base_bytes,
            "memory_new_bytes": self.memory_new_bytes,
            "memory_delta_bytes": self.memory_delta_bytes,
            "flops_ratio": self.flops_ratio,
            "flops_base": self.flops_base,
            "flops_new": self.flops_new,
            "base_status": self.base_status,
            "new_status": self.new_status,
            "reason": self.reason,
            "note": self.note or (self.estimate.note if self.estimate is not None else ""),
            "config": dict(self.config),
        }
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _figures(group: Group, metric: str) -> tuple[list[float], list[list[float] | None], str]:
    """Per-process figures of ``metric`` (time ms, throughput, MFU), their samples, and the unit.

    Throughput and MFU are ``k / time`` with a per-row constant ``k`` (items, or FLOPs over the
    peak), so their per-process figures and samples follow from the time ones exactly.
    """
    vals: list[float] = []
    samples: list[list[float] | None] = []
    unit = "ms"
    for r, p in group.processes:
        if metric == "time":
            k = None
        else:
            row_value = r.throughput if metric == "throughput" else r.mfu
            median = r.median_ms
            if row_value is None or median is None:
                continue
            k = row_value * median
            unit = r.throughput_unit if metric == "throughput" else "MFU"
        if k is None:
            vals.append(p.median_ms)
            samples.append(p.samples_ms)
        else:
            vals.append(k / p.median_ms)
            samples.append([k / x for x in p.samples_ms] if p.samples_ms else None)
    return vals, samples, unit


def _geomean(xs: Sequence[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


@dataclass
class PairEstimate:
    """What ``estimate_pair`` found: the estimate (None: no figure), what its CI covers, the points."""

    estimate: RatioEstimate | None
    ci_covers: str
    base_value: float | None
    new_value: float | None
    unit: str
    note: str


def estimate_pair(base: Group, new: Group, metric: str) -> PairEstimate:
    """NEW / BASE of ``metric`` for one configuration: the method follows from what each side has."""
    if metric == "memory":
        b = base.first(lambda r: r.memory.get(MEMORY_COLUMN))
        n = new.first(lambda r: r.memory.get(MEMORY_COLUMN))
        if b is None or n is None:
            return PairEstimate(None, "", b, n, "bytes", f"no {MEMORY_COLUMN} on a side")
        return PairEstimate(exact_ratio(b, n), "exact", float(b), float(n), "bytes", "deterministic figures")
    bv, bs, unit = _figures(base, metric)
    nv, ns, unit_new = _figures(new, metric)
    unit = unit if bv else unit_new
    if not bv or not nv:
        return PairEstimate(None, "", None, None, unit, f"no {metric} figure on a side")
    if len(bv) >= 2 or len(nv) >= 2:
        est = ratio_from_repeats(bv, nv, confidence=CONFIDENCE)
        covers = {r.ci_covers for g in (base, new) for r in g.ok}
        label = "between-run" if "between-run" in covers else "between-process"
        return PairEstimate(est, label, _geomean(bv), _geomean(nv), unit, est.note)
    b_samples, n_samples = bs[0], ns[0]
    if b_samples and n_samples:
        est = ratio_from_samples(b_samples, n_samples, confidence=CONFIDENCE, seed=0)
        note = (
            "one process a side: the CI covers within-process noise only; separate runs drift more "
            "(dlbench run --repeat 5 gives a between-process CI)"
        )
        return PairEstimate(est, "within-process", _median(b_samples), _median(n_samples), unit, note)
    note = "no raw samples (sidecar missing): the ratio of medians, no CI"
    est = unbounded(nv[0] / bv[0], "bootstrap-samples", 1, 1, CONFIDENCE, note)
    return PairEstimate(est, "none", bv[0], nv[0], unit, note)


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])


def make_pair(
    label: str, key: str, base: Group | None, new: Group | None, *, metric: str, threshold: float
) -> Pair:
    """The ``Pair`` of one configuration (either side may be absent)."""
    config = (base or new).config if (base or new) is not None else {}  # type: ignore[union-attr]
    pair = Pair(label=label, key=key, config=dict(config), verdict="inconclusive", metric=metric)
    pair.base_status = _status(base)
    pair.new_status = _status(new)
    if base is None or not base.ok:
        if base is not None and base.failed:
            pair.verdict, pair.reason = "failed", f"base: {base.failed[0].status}: {base.failed[0].reason}"
        elif new is not None and new.failed and not new.ok:
            pair.verdict, pair.reason = "failed", f"new: {new.failed[0].status}: {new.failed[0].reason}"
        else:
            pair.verdict = "new"
            pair.reason = _skip_reason(base) or "not in base"
        return pair
    if new is None or not new.ok:
        if new is not None and new.failed:
            pair.verdict, pair.reason = "failed", f"new: {new.failed[0].status}: {new.failed[0].reason}"
        else:
            pair.verdict = "missing"
            pair.reason = _skip_reason(new) or "not in new"
        return pair
    pe = estimate_pair(base, new, metric)
    est = pe.estimate
    pair.estimate, pair.ci_covers, pair.unit, pair.note = est, pe.ci_covers, pe.unit, pe.note
    pair.base_value, pair.new_value = pe.base_value, pe.new_value
    pair.memory_base_bytes = base.first(lambda r: r.memory.get(MEMORY_COLUMN))
    pair.memory_new_bytes = new.first(lambda r: r.memory.get(MEMORY_COLUMN))
    pair.flops_base = base.first(lambda r: r.flops)
    pair.flops_new = new.first(lambda r: r.flops)
    if est is None:
        pair.verdict = "inconclusive"
        pair.reason = pe.note
    else:
        pair.verdict = verdict(est, threshold=threshold, higher_is_better=HIGHER_IS_BETTER[metric])
    return pair


def _status(group: Group | None) -> str:
    if group is None:
        return "absent"
    if group.ok:
        return "ok"
    if group.failed:
        return group.failed[0].status
    return group.results[0].status if group.results else "absent"


def _skip_reason(group: Group | None) -> str:
    if group is None:
        return ""
    skipped = [r for r in group.results if r.status == "skipped"]
    return f"skipped: {skipped[0].reason}" if skipped else ""


# --- whole comparisons ----------------------------------------------------------------------------


@dataclass
class Comparison:
    """A whole ``dlbench compare``: every pair, the inputs, and what the environments differ in."""

    metric: str
    threshold: float
    base: list[str]
    new: list[str]
    pairs: list[Pair]
    env_mismatch: list[dict[str, Any]] = field(default_factory=list)
    allow_env_mismatch: bool = False
    by: dict[str, str] | None = None  # {"axis", "base_value"} for compare_by
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Pair]:
        return [p for p in self.pairs if p.regression]

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.pairs:
            out[p.verdict] = out.get(p.verdict, 0) + 1
        return out

    @property
    def env_label(self) -> str:
        """``"ENVIRONMENTS DIFFER: torch_version, threads"`` when allowed to differ, else ""."""
        if not self.env_mismatch:
            return ""
        return "ENVIRONMENTS DIFFER: " + ", ".join(m["field"] for m in self.env_mismatch)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "dlbench-compare",
            "version": 1,
            "metric": self.metric,
            "threshold": self.threshold,
            "confidence": CONFIDENCE,
            "base": list(self.base),
            "new": list(self.new),
            "by": dict(self.by) if self.by else None,
            "env_mismatch": [dict(m) for m in self.env_mismatch],
            "allow_env_mismatch": self.allow_env_mismatch,
            "env_label": self.env_label,
            "counts": self.counts,
            "notes": list(self.notes),
            "pairs": [p.to_dict() for p in self.pairs],
        }


def env_differences(base: Side, new: Side) -> list[dict[str, Any]]:
    """Each ``ENV_FIELDS`` field whose set of values differs between the sides (both known)."""
    out = []
    for f in ENV_FIELDS:
        b = sorted({r.env[f] for r in base.results if f in r.env})
        n = sorted({r.env[f] for r in new.results if f in r.env})
        if b and n and b != n:
            out.append({"field": f, "base": b, "new": n})
    return out


def _groups(results: Iterable[Result], drop: Iterable[str] = ()) -> dict[tuple[tuple[str, str], ...], Group]:
    out: dict[tuple[tuple[str, str], ...], Group] = {}
    drop = tuple(drop)
    for r in results:
        k = r.key(drop)
        g = out.setdefault(k, Group({a: b for a, b in k}))
        g.results.append(r)
    return out


def _key_text(key: tuple[tuple[str, str], ...]) -> str:
    return "|".join(f"{k}={v}" for k, v in key)


_LABEL_ORDER = ("scenario", "mode", "precision", "checkpointing", "parallel", "world_size", "device")
_ALWAYS = ("scenario", "mode", "precision", "benchmark")


def _short(field_name: str) -> str:
    return field_name.removeprefix(PARAM_PREFIX)


def labels_for(configs: Sequence[Mapping[str, str]], *, always: Sequence[str] = _ALWAYS) -> list[str]:
    """Short unique labels: the ``always`` fields, then every other field whose value varies."""
    names: list[str] = []
    for c in configs:
        for k in c:
            if k not in names:
                names.append(k)
    ordered = [n for n in _LABEL_ORDER if n in names] + sorted(n for n in names if n not in _LABEL_ORDER)
    varying = [n for n in ordered if len({c.get(n, "") for c in configs}) > 1]
    shown = [n for n in ordered if n in always or n in varying]
    out = []
    for c in configs:
        parts = []
        for n in shown:
            v = c.get(n, "")
            if n in ("scenario", "mode", "precision", "benchmark"):
                parts.append(v)
            elif n == "checkpointing":
                parts.append(f"ckpt={v}")
            else:
                parts.append(f"{_short(n)}={v}")
        out.append(" ".join(p for p in parts if p))
    return out


def compare(
    base: Sequence[str | Path] | Side,
    new: Sequence[str | Path] | Side,
    *,
    metric: str = "time",
    threshold: float | str = DEFAULT_THRESHOLD,
    allow_env_mismatch: bool = False,
) -> Comparison:
    """NEW vs BASE for every configuration on either side (see the module docstring).

    ``CompareInputError`` for unreadable input or two inputs with nothing in common;
    ``EnvMismatchError`` (a ``CompareInputError``) when the environments differ and
    ``allow_env_mismatch`` is False.
    """
    metric = check_metric(metric)
    t = parse_threshold(threshold)
    b_side = base if isinstance(base, Side) else load_side(base)
    n_side = new if isinstance(new, Side) else load_side(new)
    mismatch = env_differences(b_side, n_side)
    if mismatch and not allow_env_mismatch:
        detail = "; ".join(f"{m['field']}: {'/'.join(m['base'])} vs {'/'.join(m['new'])}" for m in mismatch)
        raise EnvMismatchError(
            f"base and new come from different environments ({detail}); "
            "pass --allow-env-mismatch to compare anyway (the output is labelled)",
            mismatch,
        )
    drop = ("device",) if any(m["field"] == "device" for m in mismatch) else ()
    bg, ng = _groups(b_side.results, drop), _groups(n_side.results, drop)
    common = [k for k in bg if k in ng]
    if not common:
        raise CompareInputError(
            f"nothing in common: base has {len(bg)} configuration(s) ({_what(b_side)}), new has {len(ng)} "
            f"({_what(n_side)}); none match on {', '.join(MATCH_FIELDS)} and the parameters"
        )
    keys = list(bg) + [k for k in ng if k not in bg]
    configs = [(bg.get(k) or ng[k]).config for k in keys]
    labels = labels_for(configs)
    pairs = [
        make_pair(lab, _key_text(k), bg.get(k), ng.get(k), metric=metric, threshold=t)
        for lab, k in zip(labels, keys, strict=True)
    ]
    return Comparison(
        metric=metric,
        threshold=t,
        base=b_side.paths,
        new=n_side.paths,
        pairs=pairs,
        env_mismatch=mismatch,
        allow_env_mismatch=allow_env_mismatch,
        notes=b_side.notes + n_side.notes,
    )


def _what(side: Side) -> str:
    scen = sorted({r.config.get("scenario") or r.config.get("benchmark", "?") for r in side.results})
    shown = ", ".join(scen[:3]) + (", ..." if len(scen) > 3 else "")
    return shown


def axis_field(axis: str, side: Side) -> str:
    """The config field of ``axis``: a core field, ``param_<axis>``, or ``CompareInputError``."""
    fields = {k for r in side.results for k in r.config}
    for cand in (axis, f"{PARAM_PREFIX}{axis}"):
        if cand in fields:
            return cand
    choices = sorted({_short(f) for f in fields})
    raise CompareInputError(f"--by: unknown axis {axis!r}; these results have {', '.join(choices)}")


def _sort_key(v: str) -> tuple[int, float, str]:
    f = _num(v)
    return (0, f, v) if f is not None else (1, 0.0, v)


def compare_by(
    results: Sequence[str | Path] | Side,
    axis: str,
    base_value: str | None = None,
    *,
    metric: str = "time",
    threshold: float | str = DEFAULT_THRESHOLD,
) -> Comparison:
    """Within one set of results: each value of ``axis`` vs ``base_value``, per configuration.

    ``base_value`` defaults to ``DEFAULT_BASE[axis]`` where the results have it (fp32, none), else
    the smallest value (numbers ascending). Pairs are labelled by the other varying fields and the
    axis value (``"train amp-bf16"``); configurations without a base-value row are ``new``.
    """
    metric = check_metric(metric)
    t = parse_threshold(threshold)
    side = results if isinstance(results, Side) else load_side(results)
    fname = axis_field(axis, side)
    values = sorted({r.config.get(fname, "") for r in side.results}, key=_sort_key)
    if len(values) < 2:
        raise CompareInputError(
            f"--by {axis}: every row has {_short(fname)}={values[0] if values else '?'}; nothing to compare"
        )
    if base_value is None:
        default = DEFAULT_BASE.get(fname)
        base = default if default in values else values[0]
    else:
        base = norm(base_value)
        if base not in values:
            raise CompareInputError(
                f"--base: {_short(fname)}={base_value} is not in these results; values: {', '.join(values)}"
            )
    groups = _groups(side.results, drop=(fname,))
    rows: list[tuple[dict[str, str], str, Group | None, Group]] = []
    for key in groups:
        per_value = _groups(groups[key].results)
        by_value = {g.config.get(fname, ""): g for g in per_value.values()}
        for v in values:
            if v == base or v not in by_value:
                continue
            ctx = dict(key)
            rows.append((ctx, v, by_value.get(base), by_value[v]))
    if not rows:
        raise CompareInputError(f"--by {axis}: no configuration has another value than {base}")
    ctx_labels = labels_for([c for c, *_ in rows])
    pairs = []
    for (ctx, v, b, n), ctx_label in zip(rows, ctx_labels, strict=True):
        shown = v if fname in ("precision", "mode", "device") else f"{_short(fname)}={v}"
        label = f"{ctx_label} {shown}".strip()
        key_text = _key_text(tuple(sorted({**ctx, fname: v}.items())))
        pairs.append(make_pair(label, key_text, b, n, metric=metric, threshold=t))
    return Comparison(
        metric=metric,
        threshold=t,
        base=side.paths,
        new=side.paths,
        pairs=pairs,
        by={"axis": _short(fname), "base_value": base},
        notes=side.notes,
    )
