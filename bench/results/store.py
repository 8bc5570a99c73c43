"""The durable results CSV and its raw-samples sidecar: every complete row survives every operation.

- **One line per row**, written with one ``write()`` on an ``O_APPEND`` descriptor and ``fsync``-ed,
  so a sweep killed with SIGKILL leaves a CSV whose every line is a finished row.
- **Order: sidecar record first, then the CSV row; both durable before ``append`` returns.** The
  row is what ``--resume`` trusts, so it is written last: a crash between the two leaves at most a
  sidecar record without a row (the configuration is measured again; the orphan record is
  harmless), never a row without its samples. When the CSV write fails (disk full), the sidecar is
  truncated back to its previous length and the CSV too, so nothing torn is left behind, and
  ``ResultsWriteError`` names the file.
- **Repair only what is provably torn**: when a file is opened for appending and its last line has
  no trailing newline, that line is kept (a newline is added) if it parses as a complete row (the
  header's number of fields; for the sidecar, a JSON object), else it is cut. A file saved by an
  editor without a final newline loses nothing.
- **Exclusive creation**: a new file is written under a temporary name with its header, then
  ``os.link``-ed into place, which fails if the name exists; concurrent creators never write two
  headers. Default names carry the run id, so two runs started in the same second differ.
- **One writer at a time**: ``lock()`` takes an advisory ``fcntl.flock`` on ``<csv>.lock`` for the
  whole sweep and writes the holder's pid there; a second run on the same file is refused
  (``ResultsLockedError`` names the holder's pid) instead of measuring the same configurations twice
  while competing for the cores. A lock file that cannot be written (a full disk) is
  ``ResultsLockError``, one of them, so the run stops with one line before measuring anything.
- Files are read as UTF-8 and must parse as CSV with the header's number of fields per row;
  anything else is ``ResultsFileError`` naming the file and the line, before any work.
"""

from __future__ import annotations

import csv
import datetime as _dt
import errno
import fcntl
import io
import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.outputs import TMP_SUFFIX, remove_stale_temporaries
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
    run_tag: str | None = None,
) -> Path:
    """``results/<scenario>_<device>_torch<version>_<UTC time>[-<run tag>].csv``.

    Example: ``results/attention_cpu_torch2.13.0-cpu_20261127T142501-3fa9c1.csv``; the runner passes
    the run id's random part as ``run_tag`` so that two runs started in the same second differ.
    """
    now = now or _dt.datetime.now(_dt.UTC)
    stamp = now.strftime("%Y%m%dT%H%M%S")
    tag = f"-{_slug(run_tag)}" if run_tag else ""
    name = f"{_slug(scenario)}_{_slug(device)}_torch{_slug(torch_version)}_{stamp}{tag}.csv"
    return Path(results_dir) / name


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


class ResultsFileError(ValueError):
    """An existing results file that cannot be read as a results CSV (bad bytes, bad rows)."""


class ResultsWriteError(OSError):
    """Writing a row failed (disk full, I/O error); the message names the file. Nothing torn is left."""


class ResultsLockedError(RuntimeError):
    """Another process holds the results file's lock."""


class ResultsLockError(ResultsLockedError):
    """The lock file cannot be created or written (disk full, read-only folder); nothing was measured."""


def read_header(path: Path | str) -> list[str] | None:
    """The header of an existing CSV, or None when the file is missing or empty."""
    p = Path(path)
    if not p.exists() or p.stat().st_size == 0:
        return None
    try:
        with p.open(newline="", encoding="utf-8") as f:
            first = f.readline()
    except UnicodeDecodeError as exc:
        raise ResultsFileError(f"{p}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    if not first.strip():
        return None
    return next(csv.reader([first]))


def validate_file(path: Path | str) -> int:
    """Number of complete rows of an existing CSV; ``ResultsFileError`` for a file that is not one.

    Every line must be UTF-8 and parse to the header's number of fields. A last line without a
    trailing newline is accepted here (``ResultsWriter`` repairs it when appending).
    """
    p = Path(path)
    header = read_header(p)
    if header is None:
        return 0
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ResultsFileError(f"{p}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    n = 0
    try:
        for lineno, fields in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
            if lineno == 1 or not fields:
                continue
            if len(fields) != len(header):
                raise ResultsFileError(
                    f"{p}: line {lineno} has {len(fields)} fields, the header has {len(header)}; "
                    "not a results file written by dlbench (or edited by hand); write to another --out"
                )
            n += 1
    except csv.Error as exc:
        raise ResultsFileError(f"{p}: cannot be parsed as CSV: {exc}") from None
    return n


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
    """Append ``data`` and fsync; on failure, truncate back to the previous length and re-raise."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        before = os.fstat(fd).st_size
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, before)
                os.fsync(fd)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)


def _create_exclusively(path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` atomically; False when it already exists (someone else won)."""
    remove_stale_temporaries(path)  # left by a creator killed between mkstemp and link
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        _write_all(fd, data)
        os.fsync(fd)
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _line_is_complete(line: bytes, kind: str, n_fields: int) -> bool:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if kind == "jsonl":
        try:
            return isinstance(json.loads(text), dict)
        except ValueError:
            return False
    try:
        rows = list(csv.reader([text]))
    except csv.Error:
        return False
    # an unbalanced quote makes csv swallow the rest: a torn quoted cell never parses as one row
    return len(rows) == 1 and len(rows[0]) == n_fields and text.count('"') % 2 == 0


def repair_last_line(path: Path, *, kind: str = "csv", n_fields: int = 0) -> str | None:
    """Fix a last line without a trailing newline: keep it if complete, cut it if torn.

    Returns "kept", "cut" or None (nothing to do). ``kind`` is "csv" (complete = ``n_fields``
    fields) or "jsonl" (complete = a JSON object).
    """
    if not path.exists() or path.stat().st_size == 0:
        return None
    with path.open("rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return None
        f.seek(0)
        data = f.read()
        start = data.rfind(b"\n") + 1
        if _line_is_complete(data[start:], kind, n_fields):
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
            outcome = "kept"
        else:
            f.truncate(start)
            outcome = "cut"
        f.flush()
        os.fsync(f.fileno())
    return outcome


class ResultsWriter:
    """Append-only, durable writer of one results CSV (and its samples sidecar); see the module doc.

    The header is written (and fsync-ed) when the writer is created, so a run that is killed
    before its first row still leaves a CSV that pandas loads (with zero rows). Both files are
    checked for writability here, before any measurement.
    """

    def __init__(self, path: Path | str, columns: Sequence[str]) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        self.samples_path = samples_path_for(self.path)
        self._lock_fd: int | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.samples_path.is_dir():
            raise IsADirectoryError(
                errno.EISDIR, "the samples sidecar path is a directory", str(self.samples_path)
            )
        header_line = self._line(dict(zip(self.columns, self.columns, strict=True)))
        if read_header(self.path) is None:
            if self.path.exists() and self.path.stat().st_size == 0:
                self.path.unlink()  # an empty file is no results file yet: create it properly
            # False: another process created it first; its header is checked below
            _create_exclusively(self.path, header_line)
        check_compatible(self.path, self.columns)
        repair_last_line(self.path, kind="csv", n_fields=len(self.columns))
        validate_file(self.path)
        # the sidecar must be appendable too (a read-only file fails here, not after a measurement)
        with self.samples_path.open("ab"):
            pass
        repair_last_line(self.samples_path, kind="jsonl")

    def _line(self, row: Mapping[str, Any]) -> bytes:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([format_cell(row.get(c)) for c in self.columns])
        return buf.getvalue().encode("utf-8")

    # -- locking -------------------------------------------------------------------------
    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    # locks held by this process: real path -> [fd, holders]; a process never locks itself out
    _held: dict[str, list[int]] = {}

    def lock(self) -> None:
        """Take the file's advisory lock for this process; ``ResultsLockedError`` if another holds it."""
        if self._lock_fd is not None:
            return
        key = os.path.realpath(self.lock_path)
        if key in ResultsWriter._held:
            ResultsWriter._held[key][1] += 1
            self._lock_fd = ResultsWriter._held[key][0]
            return
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ResultsLockError(
                f"cannot create the lock file {self.lock_path}: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise ResultsLockedError(
                f"{self.path} is being written by another dlbench run (pid {holder}); wait for it to "
                "finish or write to another --out"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:  # a full disk: no run can write its rows either; stop before measuring
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise ResultsLockError(
                f"cannot write the lock file {self.lock_path}: {exc.strerror or exc}; nothing was measured"
            ) from None
        ResultsWriter._held[key] = [fd, 1]
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release this writer's hold on the lock (the lock itself when no writer here holds it)."""
        if self._lock_fd is None:
            return
        key = os.path.realpath(self.lock_path)
        self._lock_fd = None
        entry = ResultsWriter._held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del ResultsWriter._held[key]
        try:
            os.ftruncate(entry[0], 0)
            fcntl.flock(entry[0], fcntl.LOCK_UN)
        finally:
            os.close(entry[0])

    def __del__(self) -> None:
        try:
            self.unlock()
        except Exception:
            pass

    # -- rows ----------------------------------------------------------------------------
    def done_keys(self) -> set[str]:
        """``config_key`` of every row already in the file."""
        return completed_keys(self.path)

    def append(self, row: Mapping[str, Any], samples: Mapping[str, Any] | None = None) -> None:
        """Write ``samples`` to the sidecar, then ``row`` to the CSV; both durable before returning.

        A failed write leaves neither file torn (each is truncated back) and raises
        ``ResultsWriteError`` naming the file.
        """
        unexpected = sorted(set(row) - set(self.columns))
        if unexpected:
            raise SchemaMismatchError(
                f"row has columns {unexpected} that {self.path} does not have; "
                "a file holds one column set (write other scenarios to another --out)"
            )
        sidecar_before: int | None = None
        if samples is not None:
            record = {"run_id": row.get("run_id"), "config_key": row.get("config_key"), **samples}
            line = json.dumps(record, sort_keys=True, default=str) + "\n"
            sidecar_before = self.samples_path.stat().st_size if self.samples_path.exists() else 0
            try:
                _append_durably(self.samples_path, line.encode("utf-8"))
            except OSError as exc:
                raise ResultsWriteError(
                    exc.errno, f"cannot write {self.samples_path}: {exc.strerror}"
                ) from exc
        try:
            _append_durably(self.path, self._line(row))
        except OSError as exc:
            if sidecar_before is not None:
                try:
                    os.truncate(self.samples_path, sidecar_before)
                except OSError:
                    pass
            raise ResultsWriteError(exc.errno, f"cannot write {self.path}: {exc.strerror}") from exc


def completed_keys(path: Path | str) -> set[str]:
    """``config_key`` values of the rows in a results CSV (empty when there is none).

    Keys of rows written before the seed was part of the key get it from the row's ``seed`` column.
    """
    p = Path(path)
    if read_header(p) is None:
        return set()
    with p.open(newline="", encoding="utf-8") as f:
        return {_with_seed(r["config_key"], r.get("seed")) for r in csv.DictReader(f) if r.get("config_key")}
