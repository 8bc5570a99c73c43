"""The report folder: ``dlbench report -o DIR`` owns what it writes there and nothing else.

- **Before any work** (``check_report_dir``): ``DIR`` must be new, empty, or a report this tool
  wrote -- a folder holding its manifest (``MANIFEST``, the list of files it wrote) and nothing
  beyond the files listed there. A folder of the user's (no manifest, or files the manifest does
  not list, a symlink anywhere) is refused with exit 2, byte for byte untouched; so are ``/``, the
  home folder, the current folder and any folder above it, a symlink, a file, and a folder that
  holds one of the report's inputs.
- **Building** (``ReportFolder``): the new report is written into a private folder beside ``DIR``
  (``.DIR.<pid>.<random>.tmp``, same file system), its manifest last; then the two are exchanged
  in one ``renameat2(RENAME_EXCHANGE)`` (``bench.outputs.swap_dir``) and only the files the old
  manifest lists are deleted from the old report. A report interrupted at any moment -- an
  exception, Ctrl-C, SIGKILL -- leaves the previous report whole at ``DIR``; what a killed build
  leaves beside it is removed by the next build once its pid is gone.

Torch-free, rich-free.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.outputs import OutputWriteError, is_writable, remove_stale_temporaries, sibling_temp_dir, swap_dir

MANIFEST = ".dlbench-report.json"
KIND = "dlbench-report"
VERSION = 1


def read_manifest(folder: Path) -> list[str] | None:
    """The files a report folder's manifest lists (relative paths), or None when it is not a report."""
    path = folder / MANIFEST
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("kind") != KIND or not isinstance(data.get("files"), list):
        return None
    files = [f for f in data["files"] if isinstance(f, str)]
    safe = [f for f in files if f and not os.path.isabs(f) and ".." not in Path(f).parts]
    return safe if len(safe) == len(files) else None


def _contents(folder: Path) -> tuple[list[str], list[str], list[str]]:
    """(files, folders, other entries: symlinks, FIFOs) under ``folder``, relative, never following links."""
    files: list[str] = []
    dirs: list[str] = []
    other: list[str] = []
    for root, dnames, fnames in os.walk(folder, followlinks=False):
        base = Path(root)
        for name in list(dnames):
            rel = str((base / name).relative_to(folder))
            if os.path.islink(base / name):
                other.append(rel)
                dnames.remove(name)
            else:
                dirs.append(rel)
        for name in fnames:
            rel = str((base / name).relative_to(folder))
            mode = os.lstat(base / name).st_mode
            (files if stat.S_ISREG(mode) else other).append(rel)
    return files, dirs, other


def _foreign(folder: Path) -> list[str] | None:
    """What in ``folder`` this tool did not write (None: not a report at all; []: nothing foreign)."""
    listed = read_manifest(folder)
    if listed is None:
        return None
    files, dirs, other = _contents(folder)
    allowed = set(listed) | {MANIFEST}
    allowed_dirs = {str(parent) for f in listed for parent in Path(f).parents if str(parent) != "."}
    return sorted([f for f in files if f not in allowed] + [d for d in dirs if d not in allowed_dirs] + other)


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_report_dir(out_dir: Path | str, *, inputs: Sequence[Path | str] = (), flag: str = "--out") -> Path:
    """``out_dir`` if the report may be written there (see the module docstring); else ``UsageError``."""
    text = str(out_dir)
    if not text.strip():
        raise UsageError(f"{flag}: an empty path; give a folder for the report, such as reports/NAME")
    p = Path(text)
    where = p.resolve()
    home = Path.home().resolve()
    cwd = Path.cwd().resolve()
    if where == Path(where.anchor):
        raise UsageError(
            f"{flag}: {p} is the root folder; give a folder for the report, such as reports/NAME"
        )
    if where == home or _is_within(home, where):
        raise UsageError(f"{flag}: {p} is your home folder or above it; give a folder such as reports/NAME")
    if _is_within(cwd, where):
        what = "the current folder" if where == cwd else "a folder above the current one"
        raise UsageError(f"{flag}: {p} is {what}; give a folder of its own, such as reports/NAME")
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise UsageError(f"{flag}: cannot use {p}: {exc.strerror or exc}") from None
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise UsageError(f"{flag}: {p} is a symbolic link; give the report a real folder")
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{flag}: {p} is a file; give a folder for the report")
    for q in inputs:
        if _is_within(Path(q).resolve(), where):
            raise UsageError(f"{flag}: {p} holds the input {q}; give the report a folder of its own")
    if st is not None and os.listdir(p):
        foreign = _foreign(p)
        if foreign is None:
            raise UsageError(
                f"{flag}: {p} is not empty and is not a report written by dlbench (no {MANIFEST}); "
                "dlbench report writes only into a new or empty folder or over its own report: give "
                "another folder"
            )
        if foreign:
            shown = ", ".join(foreign[:5]) + (f", ... ({len(foreign)} in all)" if len(foreign) > 5 else "")
            raise UsageError(
                f"{flag}: {p} holds files the report did not write ({shown}); move them out or give "
                "another folder"
            )
    existing = next((a for a in [p, *p.parents] if os.path.lexists(a)), Path("."))
    if not existing.is_dir():
        raise UsageError(f"{flag}: {existing} is a file, so {p} cannot be a folder")
    writable_in = existing if existing != p else p.parent
    if not is_writable(writable_in, os.W_OK | os.X_OK):
        raise UsageError(
            f"{flag}: cannot write into {writable_in} (permission denied or a read-only file system)"
        )
    return p


class ReportFolder:
    """A report being built beside ``target`` and put in place as a whole (see the module docstring).

    ::

        with ReportFolder(out_dir) as folder:
            folder.write_text("index.html", page)      # into the private folder
            folder.path / "figures"                    # write there directly; then folder.add(...)
            folder.commit()                            # manifest, swap, old report removed
    """

    def __init__(self, target: Path | str) -> None:
        self.target = Path(target)
        self.files: list[str] = []
        self._created: list[Path] = []
        self.path: Path | None = None
        self.notes: list[str] = []

    def __enter__(self) -> ReportFolder:
        missing = [a for a in [self.target.parent, *self.target.parent.parents] if not os.path.lexists(a)]
        for d in reversed(missing):
            try:
                d.mkdir()
            except OSError as exc:
                self._remove_created()
                raise OutputWriteError(f"cannot create {d}: {exc.strerror or exc}", exc.errno) from None
            self._created.append(d)
        try:
            self.path = sibling_temp_dir(self.target)
        except OutputWriteError:
            self._remove_created()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.path is not None and self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)
        if exc_type is not None:
            self._remove_created()

    def _remove_created(self) -> None:
        for d in reversed(self._created):
            try:
                d.rmdir()
            except OSError:
                pass

    def add(self, relative: str | Path) -> Path:
        """Record a file written under ``path``; returns its final path under ``target``."""
        rel = str(relative)
        if rel not in self.files:
            self.files.append(rel)
        return self.target / rel

    def write_bytes(self, relative: str, data: bytes) -> Path:
        """Write one file into the folder being built (fsync-ed); returns its final path."""
        assert self.path is not None
        dest = self.path / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(dest, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise OutputWriteError(
                f"cannot write the report ({relative}): {exc.strerror or exc}; "
                "the previous report is unchanged",
                exc.errno,
            ) from None
        return self.add(relative)

    def write_text(self, relative: str, text: str) -> Path:
        return self.write_bytes(relative, text.encode("utf-8"))

    def sync(self, names: Iterable[str]) -> None:
        """fsync files written by someone else (matplotlib) into the folder being built."""
        assert self.path is not None
        for rel in names:
            try:
                fd = os.open(self.path / rel, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def commit(self) -> None:
        """Write the manifest, put the new report at ``target``, delete the old report's files."""
        assert self.path is not None
        manifest = {"kind": KIND, "version": VERSION, "files": sorted(self.files)}
        self.write_text(MANIFEST, json.dumps(manifest, indent=1) + "\n")
        self.files.remove(MANIFEST)
        check_again = _foreign(self.target) if os.path.isdir(self.target) and os.listdir(self.target) else []
        if check_again is None or check_again:
            raise OutputWriteError(
                f"{self.target} changed while the report was being built (files the report did not "
                "write appeared); nothing was replaced"
            )
        old = swap_dir(self.path, self.target)
        self.path = None
        remove_stale_temporaries(self.target)
        if old is not None:
            self._remove_old(old)

    def _remove_old(self, old: Path) -> None:
        """Delete the files the old report's manifest lists, then its folders if they are empty."""
        listed = read_manifest(old) or []
        for rel in [*listed, MANIFEST]:
            q = old / rel
            try:
                if stat.S_ISREG(os.lstat(q).st_mode):
                    q.unlink()
            except OSError:
                continue
        for root, _dirs, _files in sorted(os.walk(old, topdown=False), key=lambda t: -len(t[0])):
            try:
                os.rmdir(root)
            except OSError:
                pass
        if os.path.lexists(old):  # files appeared there during the build: keep them, under a plain name
            kept = self.target.with_name(f"{self.target.name}.kept-{os.getpid()}")
            try:
                os.rename(old, kept)
            except OSError:
                kept = old
            self.notes.append(f"the previous report's folder held files it did not write; kept in {kept}")


__all__ = ["MANIFEST", "ReportFolder", "check_report_dir", "read_manifest"]
