"""The results schema and the crash-safe CSV it is written to.

One row per configuration. The column set of a file is fixed when its header is written:

    CORE_COLUMNS  (fixed, ordered; ``schema_version`` first)
    ENV_COLUMNS   (the ``bench.harness.env.env_fingerprint`` keys not already in the core)
    param_<name>  (the scenario's config fields, in dataclass order; ``batch_size`` is a core column)

A file therefore holds one scenario (or several scenarios with the same parameter names). Appending
a row whose columns differ from the file's header raises ``SchemaMismatchError`` instead of writing
a row that would shift every column after it.

Crash safety: every row is one line (``reason`` is flattened to one line), written with a single
``write()`` on an ``O_APPEND`` descriptor, then flushed and ``fsync``-ed, so a sweep killed with
SIGKILL leaves a CSV whose every line is a finished row. A partial last line (power loss) is cut off
the next time the file is opened for appending.

Raw samples go to a sidecar next to the CSV, ``<stem>.samples.jsonl``: one JSON object per row,
keyed by ``run_id`` and ``config_key``, appended (and fsync-ed) before the row itself.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
STATUSES: tuple[str, ...] = ("ok", "skipped", "oom", "error", "timeout")
FAILED_STATUSES: frozenset[str] = frozenset({"oom", "error", "timeout"})
PARAM_PREFIX = "param_"
DEFAULT_RESULTS_DIR = Path("results")
MAX_REASON_CHARS = 600

# The order of the first block is the documented contract (results/README.md); the rest follows it.
CORE_COLUMNS: tuple[str, ...] = (
    "schema_version",
    "run_id",
    "timestamp",
    "scenario",
    "mode",
    "precision",
    "checkpointing",
    "parallel",
    "world_size",
    "batch_size",
    "device",
    "device_name",
    "torch_version",
    "git_commit",
    "status",
    "reason",
    "n_samples",
    "time_median_ms",
    "time_ci_low_ms",
    "time_ci_high_ms",
    "time_iqr_ms",
    "throughput",
    "throughput_unit",
    "flops_per_step",
    "achieved_tflops",
    "peak_tflops_measured",
    "mfu",
    "peak_mem_bytes",
    "mem_fwd_peak_bytes",
    "mem_bwd_peak_bytes",
    "mem_opt_peak_bytes",
    "mem_params_bytes",
    "mem_grads_bytes",
    "mem_optimizer_bytes",
    "mem_activations_bytes",
    # --- beyond the minimum ---
    "mem_buffers_bytes",
    "mem_inputs_bytes",
    "time_cv",
    "noisy",
    "stop_reason",
    "preset",
    "peak_tflops_datasheet",
    "mfu_datasheet",
    "cuda_reserved_peak_bytes",
    "peak_rss_bytes",
    "mem_method",
    "items_per_step",
    "seed",
    "channels_last",
    "timeout_s",
    "target_rel_ci",
    "max_time_s",
    "elapsed_s",
    "config_key",
    "extra",
)

# env_fingerprint keys that are not core columns; unknown keys from a newer harness go into ``extra``.
ENV_COLUMNS: tuple[str, ...] = (
    "python_version",
    "os",
    "hostname",
    "cpu_model",
    "cpu_count",
    "threads",
    "cuda_version",
    "cudnn_version",
    "gpu_driver",
    "gpu_clock_sm_mhz",
    "gpu_clock_mem_mhz",
    "gpu_count",
    "allow_tf32",
)

# Columns filled only by a successful measurement; failed and skipped rows leave them empty.
MEASUREMENT_COLUMNS: tuple[str, ...] = tuple(
    c
    for c in CORE_COLUMNS
    if c.startswith(("time_", "mem_", "peak_", "mfu", "achieved_", "throughput", "flops_", "cuda_reserved"))
    or c in ("n_samples", "noisy", "stop_reason", "items_per_step")
)


class SchemaMismatchError(ValueError):
    """A row or a file does not match the column set it is being written with."""


def param_column(name: str) -> str:
    """CSV column of a scenario parameter: ``batch_size`` stays as is, the others get ``param_``."""
    return name if name == "batch_size" else f"{PARAM_PREFIX}{name}"


def columns_for(param_names: Iterable[str]) -> list[str]:
    """The full ordered column list of a file holding a scenario with these parameters."""
    cols = list(CORE_COLUMNS) + list(ENV_COLUMNS)
    for name in param_names:
        col = param_column(name)
        if col not in cols:
            cols.append(col)
    return cols


def _key_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    return str(value)


def config_key(
    *,
    scenario: str,
    mode: str,
    precision: str,
    checkpointing: str,
    device: str,
    params: Mapping[str, Any],
    channels_last: bool = False,
    seed: int = 0,
) -> str:
    """Identity of a configuration for ``--resume``: what was measured, not how long or when.

    Example: ``attention|train|amp-bf16|none|cpu|cl=false|seed=0|batch_size=4,causal=false,seq_len=256``.
    The seed is part of it (a run with another ``--seed`` builds other weights and data).
    """
    p = ",".join(f"{k}={_key_value(params[k])}" for k in sorted(params))
    cl = "true" if channels_last else "false"
    return f"{scenario}|{mode}|{precision}|{checkpointing}|{device}|cl={cl}|seed={int(seed)}|{p}"


def _with_seed(key: str, seed: Any) -> str:
    """A key written before the seed was part of it, with the row's ``seed`` column put in."""
    parts = key.split("|", 6)
    if len(parts) < 6 or not parts[5].startswith("cl=") or (len(parts) == 7 and parts[6].startswith("seed=")):
        return key
    try:
        s = int(seed) if str(seed).strip() else 0
    except ValueError:
        return key
    parts.insert(6, f"seed={s}")
    return "|".join(parts)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def default_out_path(
    scenario: str,
    device: str,
    *,
    torch_version: str | None = None,
    now: _dt.datetime | None = None,
    results_dir: Path | str = DEFAULT_RESULTS_DIR,
) -> Path:
    """``results/<scenario>_<device>_torch<version>_<UTC time>.csv``.

    Example: ``results/attention_cpu_torch2.13.0-cpu_20261127T142501.csv``.
    """
    if torch_version is None:
        import torch

        torch_version = torch.__version__
    now = now or _dt.datetime.now(_dt.UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S")
    return Path(results_dir) / f"{_slug(scenario)}_{_slug(device)}_torch{_slug(torch_version)}_{stamp}.csv"


def latest_out_path(
    scenario: str,
    device: str,
    *,
    torch_version: str | None = None,
    results_dir: Path | str = DEFAULT_RESULTS_DIR,
) -> Path | None:
    """Newest default-named file for this scenario, device and torch version (for ``--resume``)."""
    pattern = default_out_path(scenario, device, torch_version=torch_version, results_dir=results_dir).name
    prefix = pattern.rsplit("_", 1)[0] + "_"
    candidates = sorted(
        p
        for p in Path(results_dir).glob(f"{glob_escape(prefix)}*.csv")
        if p.name[len(prefix) :][:1].isdigit()
    )
    return candidates[-1] if candidates else None


def glob_escape(text: str) -> str:
    """Escape glob metacharacters in a literal file-name prefix."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def samples_path_for(csv_path: Path | str) -> Path:
    """The raw-samples sidecar of a results CSV: ``<stem>.samples.jsonl`` in the same folder."""
    p = Path(csv_path)
    return p.with_name(f"{p.stem}.samples.jsonl")


def read_header(path: Path | str) -> list[str] | None:
    """The header of an existing CSV, or None when the file is missing or empty."""
    p = Path(path)
    if not p.exists() or p.stat().st_size == 0:
        return None
    with p.open(newline="", encoding="utf-8") as f:
        first = f.readline()
    if not first.strip():
        return None
    return next(csv.reader([first]))


def check_compatible(path: Path | str, columns: Sequence[str]) -> None:
    """Raise ``SchemaMismatchError`` when ``path`` exists with a header other than ``columns``."""
    header = read_header(path)
    if header is None or list(header) == list(columns):
        return
    missing = [c for c in columns if c not in header]
    unexpected = [c for c in header if c not in columns]
    detail = []
    if missing:
        detail.append(f"columns this run writes but the file lacks: {missing[:8]}")
    if unexpected:
        detail.append(f"columns the file has but this run does not write: {unexpected[:8]}")
    if not detail:
        detail.append("same columns in a different order")
    raise SchemaMismatchError(
        f"{path} was written with a different column set (another scenario or schema version); "
        f"{'; '.join(detail)}. Write to another file with --out."
    )


def format_cell(value: Any) -> str:
    """One CSV cell: empty for None/NaN, JSON for containers, one line for text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    text = str(value)
    return " | ".join(line.strip() for line in text.splitlines() if line.strip()) if "\n" in text else text


def one_line(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """A reason fit for a CSV cell: one line, at most ``limit`` characters."""
    flat = format_cell(text)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _append_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _repair_partial_line(path: Path) -> None:
    """Cut a torn last line (no trailing newline) left by a power loss mid-write."""
    size = path.stat().st_size
    if size == 0:
        return
    with path.open("rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        cut = data.rfind(b"\n") + 1
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())


class ResultsWriter:
    """Append-only, crash-safe writer of one results CSV (and its samples sidecar).

    The header is written (and fsync-ed) when the writer is created, so a run that is killed
    before its first row still leaves a CSV that pandas loads (with zero rows).
    """

    def __init__(self, path: Path | str, columns: Sequence[str]) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        self.samples_path = samples_path_for(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        check_compatible(self.path, self.columns)
        if read_header(self.path) is None:
            _append_durably(self.path, self._line(dict(zip(self.columns, self.columns, strict=True))))
        else:
            _repair_partial_line(self.path)

    def _line(self, row: Mapping[str, Any]) -> bytes:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([format_cell(row.get(c)) for c in self.columns])
        return buf.getvalue().encode("utf-8")

    def done_keys(self) -> set[str]:
        """``config_key`` of every row already in the file."""
        return completed_keys(self.path)

    def append(self, row: Mapping[str, Any], samples: Mapping[str, Any] | None = None) -> None:
        """Write ``samples`` to the sidecar, then ``row`` to the CSV; each durable before returning."""
        unexpected = sorted(set(row) - set(self.columns))
        if unexpected:
            raise SchemaMismatchError(
                f"row has columns {unexpected} that {self.path} does not have; "
                "a file holds one column set (write other scenarios to another --out)"
            )
        if samples is not None:
            record = {"run_id": row.get("run_id"), "config_key": row.get("config_key"), **samples}
            line = json.dumps(record, sort_keys=True, default=str) + "\n"
            _append_durably(self.samples_path, line.encode("utf-8"))
        _append_durably(self.path, self._line(row))


def completed_keys(path: Path | str) -> set[str]:
    """``config_key`` values of the rows in a results CSV (empty when there is none).

    Keys of rows written before the seed was part of the key get it from the row's ``seed`` column.
    """
    p = Path(path)
    if read_header(p) is None:
        return set()
    with p.open(newline="", encoding="utf-8") as f:
        return {_with_seed(r["config_key"], r.get("seed")) for r in csv.DictReader(f) if r.get("config_key")}


INT_COLUMNS: tuple[str, ...] = (
    "schema_version", "world_size", "batch_size", "n_samples", "flops_per_step", "items_per_step", "seed",
    "cpu_count", "threads", "gpu_count",
)  # fmt: skip


def load_results(path: Path | str) -> Any:
    """A results CSV as a pandas DataFrame.

    Integer columns (bytes, FLOPs, counts) are nullable ``Int64`` so the empty cells of failed rows
    do not turn them into floats; ``noisy``, ``channels_last`` and ``allow_tf32`` are nullable booleans.
    """
    import pandas as pd

    df = pd.read_csv(path)
    for col in ("noisy", "channels_last", "allow_tf32"):
        if col in df.columns and df[col].dtype == object:
            df[col] = df[col].map({"True": True, "False": False, True: True, False: False}).astype("boolean")
    for col in df.columns:
        if not (col in INT_COLUMNS or col.endswith("_bytes")) or df[col].dtype.kind not in "fiu":
            continue
        values = df[col].dropna()
        if (values == values.round()).all():
            df[col] = df[col].astype("Int64")
    return df


def load_samples(path: Path | str) -> list[dict[str, Any]]:
    """Records of a samples sidecar (``*.samples.jsonl``), or of the sidecar of a results CSV."""
    p = Path(path)
    if p.suffix == ".csv":
        p = samples_path_for(p)
    if not p.exists():
        return []
    out = []
    with p.open(encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a torn last line after a power loss
    return out
