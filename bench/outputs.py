"""One way to write an output: the target checked before any work, the bytes written atomically.

- ``check_output_path(path, flag=..., inputs=...)`` before any work: ``UsageError`` (exit 2),
  naming the flag and the path, for a target that is one of the inputs, a folder (unless
  ``allow_dir``), a symlink, not a regular file (a FIFO, a device), or not writable (its folder
  missing or not writable);
- ``write_atomic(path, data)``: a temporary file in the same folder, ``fsync``, ``os.replace`` over
  the target, ``fsync`` of the folder. A symlink at the target is never followed; on failure the
  previous file stays whole and the temporary is removed.

Torch-free and presentation-free.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.errors import UsageError


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_output_path(
    path: Path | str, *, flag: str, inputs: Sequence[Path] = (), allow_dir: bool = False
) -> Path:
    """``path`` as a ``Path`` if a command may write it there; else ``UsageError`` naming ``flag``."""
    text = str(path)
    if not text.strip():
        raise UsageError(f"{flag}: an empty path; give a file name")
    p = Path(text)
    try:
        st: os.stat_result | None = os.lstat(p)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise UsageError(f"{flag}: cannot use {p}: {exc.strerror or exc}") from None
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise UsageError(f"{flag}: {p} is a symbolic link; dlbench never writes through a link")
        if stat.S_ISDIR(st.st_mode) and not allow_dir:
            raise UsageError(f"{flag}: {p} is a folder; give a file name")
        if not stat.S_ISDIR(st.st_mode) and not stat.S_ISREG(st.st_mode):
            raise UsageError(
                f"{flag}: {p} is not a regular file (a FIFO, socket or device); give a file name"
            )
        for q in inputs:
            if Path(q).exists() and _same_file(p, Path(q)):
                raise UsageError(f"{flag}: {p} is one of the inputs; writing there would destroy it")
        if not os.access(p, os.W_OK):
            raise UsageError(f"{flag}: {p} is not writable")
    parent = p.parent
    if not parent.is_dir():
        raise UsageError(f"{flag}: the folder {parent} of {p} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag}: cannot write into {parent} (permission denied or read-only)")
    return p


def write_atomic(path: Path | str, data: str | bytes) -> None:
    """Replace ``path`` by ``data`` (text as UTF-8): a reader sees the old file or the new one."""
    p = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    try:
        st: os.stat_result | None = os.lstat(p)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OSError(f"{p} is not a regular file (a symbolic link or a folder); not written")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        if st is not None:
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(p.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


__all__ = ["check_output_path", "write_atomic"]
