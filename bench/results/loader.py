"""The one loader of results CSVs: compare, report, the API and the gate read every file through it.

``read_results(path)`` returns a ``ResultsTable`` (the header, every cell as text, column by column,
the line each row came from, notes) or raises ``ResultsInputError`` (a ``UsageError``: exit 2) whose
message names the file, the line and the column. It owns, once for every reader:

- **the file**: a regular file (a FIFO or a device is refused before it is opened, so nothing
  blocks), UTF-8 with or without a byte-order mark, LF or CRLF line endings;
- **the header**: the columns compare and the report cannot do without (``REQUIRED_COLUMNS``), no
  column twice; columns it does not know (added by a newer dlbench within the same schema version,
  or by hand) are kept and not checked;
- **``schema_version``**: every row must be ``SCHEMA_VERSION``;
- **rows**: the header's number of fields; a *last* row cut short (a writer killed mid-line leaves
  no trailing newline) is dropped with a note, a short row anywhere else is an error;
- **cells**: ``status`` one of ``STATUSES``; numeric columns (``COLUMN_TYPES`` int/float) finite and
  not negative (``SIGNED_COLUMNS`` may be), integers integral; booleans ``True``/``False``; ``extra``
  a JSON object; an ``ok`` row has a positive ``time_median_ms``;
- **duplicates**: a row with the same ``run_id`` and ``config_key`` as an earlier one (in this file,
  or in an earlier file of the same ``read_results_files`` call) is one process, never two: it is
  dropped with a note naming both lines. Without a ``run_id``, only an identical row is a duplicate;
- **the same file twice** (also under another path, through a link): ``read_results_files`` refuses it.

Rows are kept as text (low-cardinality columns share their strings), so a 50 MB file stays small;
``ResultsTable.to_frame()`` makes the typed pandas DataFrame of ``load_results``. Torch-free and
pandas-free until ``to_frame`` is called.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.results.schema import (
    COLUMN_TYPES,
    REQUIRED_COLUMNS,
    SCHEMA_VERSION,
    SIGNED_COLUMNS,
    STATUSES,
)

_INTERN_LIMIT = 4096  # distinct values per column that share one string object
_TRUE, _FALSE = frozenset({"True", "true"}), frozenset({"False", "false"})


class ResultsInputError(UsageError):
    """A results file (or a set of them) that cannot be read; the message names the file, line, column."""


def check_regular_file(path: Path, what: str = "") -> os.stat_result:
    """``os.stat`` of ``path`` when it is a regular file; ``ResultsInputError`` otherwise (never opens it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ResultsInputError(f"{path}: no such file{what}") from None
    except OSError as exc:
        raise ResultsInputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ResultsInputError(f"{path}: a folder, not a file{what}")
    if not stat.S_ISREG(st.st_mode):
        raise ResultsInputError(f"{path}: not a regular file (a FIFO, socket or device){what}")
    return st


def read_text(path: Path) -> str:
    """The whole file as text: UTF-8, a byte-order mark dropped; ``ResultsInputError`` otherwise."""
    check_regular_file(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ResultsInputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ResultsInputError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None


@dataclass
class ResultsTable:
    """One results CSV, checked: its header, its rows column by column (text), and notes.

    ``columns[c][i]`` is row ``i``'s cell of column ``c`` ("" when empty); ``lines[i]`` the line of
    the file it came from; ``notes`` what was dropped (a torn last row, duplicates) and why.
    """

    path: Path
    header: list[str]
    columns: dict[str, list[str]]
    lines: list[int]
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.lines)

    def cell(self, i: int, col: str) -> str:
        values = self.columns.get(col)
        return values[i] if values is not None else ""

    def row(self, i: int) -> dict[str, str]:
        return {c: self.columns[c][i] for c in self.header}

    def rows(self) -> Iterator[tuple[int, dict[str, str]]]:
        """``(line, row)`` for every row, in file order."""
        for i, line in enumerate(self.lines):
            yield line, self.row(i)

    def samples(self, wanted: set[tuple[str, str]] | None = None) -> dict[tuple[str, str], dict[str, Any]]:
        """Sidecar records keyed by ``(run_id, config_key)`` (the last one wins; ``wanted``: only those)."""
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for rec in load_samples(self.path):
            key = (str(rec.get("run_id") or ""), str(rec.get("config_key") or ""))
            if wanted is None or key in wanted:
                out[key] = rec
        return out

    def to_frame(self) -> Any:
        """A typed pandas DataFrame (see ``load_results``)."""
        return _frame(self)


def _message(path: Path, line: int, col: str | None, problem: str) -> ResultsInputError:
    where = f"line {line}" + (f", column {col}" if col else "")
    return ResultsInputError(f"{path}: {where}: {problem}")


def _check_header(path: Path, header: list[str]) -> None:
    if not header or not any(h.strip() for h in header):
        raise ResultsInputError(f"{path}: empty file (no header, no rows)")
    seen: set[str] = set()
    for h in header:
        if h in seen:
            raise _message(path, 1, h, "the column appears twice in the header")
        seen.add(h)
    missing = [c for c in REQUIRED_COLUMNS if c not in seen]
    if missing:
        raise ResultsInputError(f"{path}: not a dlbench results CSV: missing column(s) {', '.join(missing)}")


def _complete(tail: str, n_fields: int) -> bool:
    """A last line without its newline is a whole row: the header's fields and balanced quotes."""
    if tail.count('"') % 2:
        return False
    try:
        rows = list(csv.reader([tail], strict=True))
    except csv.Error:
        return False
    return len(rows) == 1 and len(rows[0]) == n_fields


def _cell_checks(header: Sequence[str]) -> list[tuple[int, str, str]]:
    """``(index, column, kind)`` of the cells to check: number, integer, signed, bool, status, json."""
    out = []
    for i, col in enumerate(header):
        t = COLUMN_TYPES.get(col)
        if col == "status":
            out.append((i, col, "status"))
        elif col == "schema_version":
            out.append((i, col, "schema"))
        elif t in ("int", "float"):
            kind = t + ("-signed" if col in SIGNED_COLUMNS else "")
            out.append((i, col, kind))
        elif t == "bool":
            out.append((i, col, "bool"))
        elif t == "json":
            out.append((i, col, "json"))
    return out


def _check_cell(kind: str, text: str) -> str | None:
    """What is wrong with a non-empty cell of ``kind`` (None: nothing)."""
    if kind == "status":
        return None if text in STATUSES else f"status {text!r} is not one of {', '.join(STATUSES)}"
    if kind == "schema":
        if text.strip() in (str(SCHEMA_VERSION), f"{SCHEMA_VERSION}.0"):
            return None
        return (
            f"schema_version {text} is not one this dlbench reads ({SCHEMA_VERSION}); "
            "read it with the dlbench that wrote it"
        )
    if kind == "bool":
        return None if text in _TRUE or text in _FALSE else f"{text!r} is not True or False"
    if kind == "json":
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return "not a JSON object"
        return None if isinstance(value, dict) else "not a JSON object"
    try:
        f = float(text)
    except ValueError:
        return f"{text!r} is not a number"
    if not math.isfinite(f):
        return f"{text} is not a finite number"
    if f < 0 and not kind.endswith("-signed"):
        return f"{text} is negative; this figure is never below 0"
    if kind.startswith("int") and not f.is_integer():
        return f"{text} is not a whole number"
    return None


def _row_key(row: Sequence[str], i_run: int | None, i_key: int | None) -> tuple[str, ...]:
    if i_run is not None and i_key is not None and row[i_run] and row[i_key]:
        return ("id", row[i_run], row[i_key])
    return ("row", *row)


def read_results(path: Path | str, *, seen: dict[tuple[str, ...], str] | None = None) -> ResultsTable:
    """Read and check one results CSV (see the module docstring); ``ResultsInputError`` if it is not one.

    ``seen`` (shared by the files of one side) maps each row's identity to where it was first read,
    so a row repeated across files is dropped like one repeated within a file.
    """
    p = Path(path)
    text = read_text(p)
    if not text.strip():
        raise ResultsInputError(f"{p}: empty file (no header, no rows)")
    notes: list[str] = []
    cut = max(text.rfind("\n"), text.rfind("\r"))
    body, tail = (text[: cut + 1], text[cut + 1 :]) if cut >= 0 else ("", text)
    reader = csv.reader(io.StringIO(body if cut >= 0 else tail, newline=""), strict=True)
    try:
        header = next(reader, [])
    except csv.Error as exc:
        raise ResultsInputError(f"{p}: line 1: cannot be parsed as CSV: {exc}") from None
    _check_header(p, header)
    n = len(header)
    if cut >= 0 and tail:
        if _complete(tail, n):  # saved without a final newline: a whole row
            body += tail + "\n"
            reader = csv.reader(io.StringIO(body, newline=""), strict=True)
            next(reader)
        else:
            line_no = body.count("\n") + 1 if "\n" in body else body.count("\r") + 1
            notes.append(
                f"{p}: line {line_no}: the last row is cut short (a run killed while writing it?); ignored"
            )
    checks = _cell_checks(header)
    i_status = header.index("status")
    i_time = header.index("time_median_ms")
    i_run = header.index("run_id") if "run_id" in header else None
    i_key = header.index("config_key")
    seen = {} if seen is None else seen
    caches: list[dict[str, str]] = [{} for _ in header]
    cols: list[list[str]] = [[] for _ in header]
    lines: list[int] = []
    dup_lines: list[str] = []
    last = reader.line_num
    try:
        for row in reader:
            line, last = last + 1, reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != n:
                raise _message(
                    p,
                    line,
                    None,
                    f"{len(row)} fields, the header has {n}; not a row dlbench wrote "
                    "(edited by hand, or two files joined)",
                )
            for i, col, kind in checks:
                v = row[i]
                if v == "":
                    if kind == "schema":
                        raise _message(p, line, col, "empty; every row carries its schema_version")
                    if kind == "status":
                        raise _message(p, line, col, "empty; every row has a status")
                    continue
                problem = _check_cell(kind, v)
                if problem is not None:
                    raise _message(p, line, col, problem)
            if row[i_status] == "ok" and not (row[i_time] and float(row[i_time]) > 0):
                raise _message(p, line, "time_median_ms", "an ok row needs a positive median step time")
            key = _row_key(row, i_run, i_key)
            first = seen.get(key)
            if first is not None:
                dup_lines.append(f"line {line} (= {first})")
                continue
            seen[key] = f"{p.name} line {line}"
            for i, v in enumerate(row):
                cache = caches[i]
                shared = cache.get(v)
                if shared is None:
                    if len(cache) < _INTERN_LIMIT:
                        cache[v] = v
                    shared = v
                cols[i].append(shared)
            lines.append(line)
    except csv.Error as exc:
        raise ResultsInputError(f"{p}: line {reader.line_num}: cannot be parsed as CSV: {exc}") from None
    if dup_lines:
        shown = ", ".join(dup_lines[:5]) + (f", ... ({len(dup_lines)} in all)" if len(dup_lines) > 5 else "")
        notes.append(
            f"{p}: {len(dup_lines)} row(s) repeat an earlier row (same run_id and config_key): each "
            f"counted once: {shown}"
        )
    return ResultsTable(p, header, dict(zip(header, cols, strict=True)), lines, notes)


def check_distinct(paths: Sequence[Path | str], what: str = "input") -> None:
    """``ResultsInputError`` when two of ``paths`` are the same file (also through another path or a link)."""
    ids: dict[tuple[int, int], str] = {}
    for q in paths:
        try:
            st = os.stat(q)
        except OSError:
            continue  # a missing file is reported by whoever reads it
        key = (st.st_dev, st.st_ino)
        if key in ids:
            other = ids[key]
            how = "twice" if os.path.abspath(other) == os.path.abspath(q) else f"twice ({other} and {q})"
            raise ResultsInputError(
                f"{q}: the same {what} is given {how}; each file counts once: give it once"
            )
        ids[key] = str(q)


def read_results_files(paths: Sequence[Path | str]) -> list[ResultsTable]:
    """Read several CSVs as one set: the same file twice is refused, rows repeated across files dropped."""
    check_distinct(paths)
    seen: dict[tuple[str, ...], str] = {}
    return [read_results(p, seen=seen) for p in paths]


# --- pandas ----------------------------------------------------------------------------------------


def _infer(values: list[str]) -> Any:
    """A pandas Series of an undeclared column (a parameter): bool, integer, float or text."""
    import pandas as pd

    present = [v for v in values if v != ""]
    if present and all(v in _TRUE or v in _FALSE for v in present):
        if len(present) == len(values):
            return pd.Series([v in _TRUE for v in values], dtype=bool)
        return pd.Series([None if v == "" else v in _TRUE for v in values], dtype="boolean")
    s = pd.Series(values, dtype=object).replace("", None)
    num = pd.to_numeric(s, errors="coerce")
    if present and int(num.notna().sum()) == len(present):
        if len(present) == len(values) and (num == num.round()).all() and all("." not in v for v in present):
            return num.astype("int64")
        return num.astype("float64")
    return s.where(s.notna(), float("nan"))


def _frame(table: ResultsTable) -> Any:
    import pandas as pd

    data: dict[str, Any] = {}
    for col in table.header:
        values = table.columns[col]
        t = COLUMN_TYPES.get(col)
        if t in ("int", "float"):
            s = pd.to_numeric(pd.Series(values, dtype=object).replace("", None), errors="coerce")
            data[col] = s.astype("Int64") if t == "int" else s.astype("float64")
        elif t == "bool":
            data[col] = pd.Series([None if v == "" else v in _TRUE for v in values], dtype="boolean")
        elif t in ("str", "json"):
            s = pd.Series(values, dtype=object)
            data[col] = s.where(s != "", float("nan"))
        else:
            data[col] = _infer(values)
    return pd.DataFrame(data, columns=table.header)


def load_results(path: Path | str) -> Any:
    """A results CSV as a pandas DataFrame, after ``read_results``'s checks.

    Integer columns (bytes, FLOPs, counts) are nullable ``Int64`` so the empty cells of failed rows
    do not turn them into floats; ``noisy``, ``channels_last`` and ``allow_tf32`` are nullable
    booleans; text columns hold NaN for empty cells; parameter columns are inferred (bool, int,
    float, text).
    """
    return read_results(path).to_frame()


def load_samples(path: Path | str) -> list[dict[str, Any]]:
    """Records of a samples sidecar (``*.samples.jsonl``), or of the sidecar of a results CSV.

    Lines that are not a JSON object (a torn last line after a power loss, a line of another tool)
    are skipped; a sidecar that is missing or not a regular file gives no records.
    """
    from bench.results.store import samples_path_for

    p = Path(path)
    if p.suffix == ".csv":
        p = samples_path_for(p)
    try:
        if not stat.S_ISREG(os.stat(p).st_mode):
            return []
    except OSError:
        return []
    out = []
    with p.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(rec, Mapping):
                out.append(dict(rec))
    return out


__all__ = [
    "ResultsInputError",
    "ResultsTable",
    "check_distinct",
    "check_regular_file",
    "load_results",
    "load_samples",
    "read_results",
    "read_results_files",
    "read_text",
]
