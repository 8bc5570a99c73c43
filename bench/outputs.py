"""One way to write an output: the target checked before any work, the bytes written atomically.

Every command that writes a file a person asked for (``compare --out``, ``report -o``, ``gate --out``,
``baseline update``, ...) goes through here:

- ``check_output_path(path, flag=..., inputs=...)`` before any work: ``UsageError`` (exit 2), naming
  the flag and the path, for a target that is one of the inputs (the same file by inode, also through
  another path, a symlink or a hard link), a folder (unless ``allow_dir``), a symlink, not a regular
  file (a FIFO, a device), read-only, or in a folder that is missing or not writable;
- ``write_atomic(path, data)``: a temporary file in the same folder, ``fsync``, ``os.replace`` over
  the target, ``fsync`` of the folder. The target is replaced, never followed (a symlink there is
  refused); on any failure -- a full disk, an I/O error, Ctrl-C -- the previous file stays whole and
  the temporary is removed, and ``OutputWriteError`` (exit 1, printed without a traceback) says so.
  A temporary left by a process killed with SIGKILL (``.<name>.<pid>.<random>.tmp``) is removed by
  the next write of the same target once that pid is gone.
- ``sibling_temp_dir`` / ``swap_dir``: the same for a whole folder (``dlbench report``): build it
  beside the target, then exchange the two in one ``renameat2(RENAME_EXCHANGE)``.

Torch-free and presentation-free: the results, report and gate layers all use it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.errors import UsageError

TMP_SUFFIX = ".tmp"
_NAME_MAX_PART = 120  # the target's name as it appears in a temporary's name (NAME_MAX is 255)


class OutputWriteError(RuntimeError):
    """Writing an output failed (disk full, I/O error, permission); the previous file is unchanged.

    The message names the file and the cause; the CLI prints it on one line and exits 1.
    """

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_


def _lstat(path: Path, flag: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ENOTDIR (a parent is a file), ENAMETOOLONG, EACCES
        raise UsageError(f"{flag}: cannot use {path}: {exc.strerror or exc}") from None


def is_writable(path: Path, mode: int) -> bool:
    """``os.access`` for the effective user (the one that writes), where the platform can say so."""
    if os.access in os.supports_effective_ids:
        return os.access(path, mode, effective_ids=True)
    return os.access(path, mode)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_output_path(
    path: Path | str, *, flag: str, inputs: Sequence[Path | str] = (), allow_dir: bool = False
) -> Path:
    """``path`` as a ``Path`` if a command may write it; else ``UsageError`` naming ``flag`` and ``path``.

    Call it before any work. Refused: one of ``inputs`` (by inode, so also through another path or
    a link), a folder (unless ``allow_dir``), a symbolic link, anything but a regular file, a
    read-only file, a missing or unwritable parent folder.
    """
    text = str(path)
    if not text.strip():
        raise UsageError(f"{flag}: an empty path; give a file name")
    p = Path(text)
    st = _lstat(p, flag)
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise UsageError(
                f"{flag}: {p} is a symbolic link (to {os.readlink(p)}); dlbench never writes through a "
                "link: give the file's own path or another name"
            )
        if stat.S_ISDIR(st.st_mode) and not allow_dir:
            raise UsageError(f"{flag}: {p} is a folder; give a file name inside it, such as {p / 'out.json'}")
        if not stat.S_ISDIR(st.st_mode) and not stat.S_ISREG(st.st_mode):
            raise UsageError(
                f"{flag}: {p} is not a regular file (a FIFO, socket or device); give a file name"
            )
        for q in inputs:
            if Path(q).exists() and _same_file(p, Path(q)):
                same = "" if os.path.abspath(p) == os.path.abspath(q) else f" (the same file as {q})"
                raise UsageError(
                    f"{flag}: {p} is one of the inputs{same}; writing there would destroy it: "
                    "give another name"
                )
        if stat.S_ISREG(st.st_mode) and not is_writable(p, os.W_OK):
            raise UsageError(f"{flag}: {p} is read-only; give another name or make it writable")
    parent = p.parent
    pst = _lstat(parent, flag)
    if pst is None:
        raise UsageError(f"{flag}: the folder {parent} of {p} does not exist; create it first")
    if not stat.S_ISDIR(os.stat(parent).st_mode):
        raise UsageError(f"{flag}: {parent} is not a folder, so {p} cannot be written")
    if not is_writable(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag}: cannot write into {parent} (permission denied or a read-only file system)")
    return p


def _temp_prefix(target: Path) -> str:
    return f".{target.name[:_NAME_MAX_PART]}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(target: Path | str) -> list[Path]:
    """Remove the temporaries of ``target`` left by writers that were killed (their pid is gone).

    Only names of the exact form ``.<name>.<pid>.<random>.tmp`` beside ``target`` are touched (files,
    or folders for ``swap_dir``); returns what was removed.
    """
    t = Path(target)
    pattern = re.compile(
        re.escape(f".{t.name[:_NAME_MAX_PART]}.") + r"(\d+)\.[A-Za-z0-9_]{6,}" + re.escape(TMP_SUFFIX)
    )
    removed = []
    try:
        names = os.listdir(t.parent if str(t.parent) else ".")
    except OSError:
        return []
    for name in names:
        m = pattern.fullmatch(name)
        if not m or _pid_alive(int(m.group(1))):
            continue
        q = t.parent / name
        try:
            st = os.lstat(q)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(q)
            else:
                os.unlink(q)
            removed.append(q)
        except OSError:
            continue
    return removed


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename itself is atomic
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path | str, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` (text is UTF-8) atomically; ``OutputWriteError`` on any failure.

    A reader sees the old file or the new one, never a mix; a crash leaves the old file whole. A
    symlink or a folder at ``path`` is refused, never followed or replaced.
    """
    p = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    parent = p.parent
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputWriteError(f"cannot write {p}: {exc.strerror or exc}", exc.errno) from None
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise OutputWriteError(
            f"cannot write {p}: it is a symbolic link; dlbench never writes through a link"
        )
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise OutputWriteError(f"cannot write {p}: it is not a regular file")
    remove_stale_temporaries(p)
    mode = stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask()
    kept = "the previous file is unchanged" if st is not None else "nothing was written"
    fd = -1
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(p), suffix=TMP_SUFFIX, dir=parent)
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, p)
        tmp = ""
    except BaseException as exc:
        if fd >= 0:
            os.close(fd)
        if tmp:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(exc, OSError):
            raise OutputWriteError(f"cannot write {p}: {exc.strerror or exc}; {kept}", exc.errno) from None
        raise
    _fsync_dir(parent)


# --- whole folders ---------------------------------------------------------------------------------


def sibling_temp_dir(target: Path | str) -> Path:
    """A new private folder beside ``target`` (same file system), named ``.<name>.<pid>.<random>.tmp``."""
    t = Path(target)
    remove_stale_temporaries(t)
    try:
        path = Path(tempfile.mkdtemp(prefix=_temp_prefix(t), suffix=TMP_SUFFIX, dir=t.parent))
        os.chmod(path, 0o777 & ~_umask())  # the mode of a folder made by mkdir, not mkdtemp's 0700
        return path
    except OSError as exc:
        raise OutputWriteError(
            f"cannot create a folder beside {t}: {exc.strerror or exc}", exc.errno
        ) from None


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` in one step (Linux ``renameat2``); False where that is unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_dir(new: Path | str, target: Path | str) -> Path | None:
    """Put the folder ``new`` at ``target``; returns where the previous folder now is (None: there was none).

    Where ``target`` exists it is exchanged with ``new`` atomically (so a kill at any moment leaves one
    whole folder at ``target``); the caller removes the returned folder. Without ``renameat2`` the
    old folder is first renamed aside (a short window with no folder at ``target``).
    """
    n, t = Path(new), Path(target)
    try:
        if not os.path.lexists(t):
            os.rename(n, t)
            return None
        if _exchange(n, t):
            return n
        aside = Path(tempfile.mkdtemp(prefix=_temp_prefix(t), suffix=TMP_SUFFIX, dir=t.parent))
        os.rmdir(aside)
        os.rename(t, aside)
        os.rename(n, t)
        return aside
    except OSError as exc:
        raise OutputWriteError(f"cannot put the new {t} in place: {exc.strerror or exc}", exc.errno) from None


__all__ = [
    "OutputWriteError",
    "TMP_SUFFIX",
    "check_output_path",
    "is_writable",
    "remove_stale_temporaries",
    "sibling_temp_dir",
    "swap_dir",
    "write_atomic",
]
