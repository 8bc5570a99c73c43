"""The crash-safe results CSV and its raw-samples sidecar.

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
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.results.schema import SchemaMismatchError, _with_seed, format_cell

DEFAULT_RESULTS_DIR = Path("results")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def default_out_path(
    scenario: str,
    device: str,
    *,
    torch_version: str,
    now: _dt.datetime | None = None,
    results_dir: Path | str = DEFAULT_RESULTS_DIR,
) -> Path:
    """``results/<scenario>_<device>_torch<version>_<UTC time>.csv``.

    Example: ``results/attention_cpu_torch2.13.0-cpu_20261127T142501.csv``.
    """
    now = now or _dt.datetime.now(_dt.UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S")
    return Path(results_dir) / f"{_slug(scenario)}_{_slug(device)}_torch{_slug(torch_version)}_{stamp}.csv"


def latest_out_path(
    scenario: str,
    device: str,
    *,
    torch_version: str,
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
