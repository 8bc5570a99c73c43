"""``bench.outputs``: a target checked before any work, replaced atomically, the old file whole on failure."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench import outputs
from bench.errors import UsageError
from bench.outputs import OutputWriteError, check_output_path, write_atomic

ROOT = Path(__file__).resolve().parents[2]


def test_check_output_path_accepts_a_new_or_plain_file(tmp_path: Path) -> None:
    assert check_output_path(tmp_path / "new.json", flag="--out") == tmp_path / "new.json"
    (tmp_path / "old.json").write_text("{}")
    assert check_output_path(tmp_path / "old.json", flag="--out") == tmp_path / "old.json"
    assert check_output_path(tmp_path, flag="-o", allow_dir=True) == tmp_path


@pytest.mark.parametrize("case", ["input", "input_via_symlink", "input_via_hardlink", "input_via_dotdot"])
def test_an_input_is_refused_under_any_path(case: str, tmp_path: Path) -> None:
    data = tmp_path / "results.csv"
    data.write_text("a,b\n1,2\n")
    target = {
        "input": data,
        "input_via_symlink": tmp_path / "link.csv",
        "input_via_hardlink": tmp_path / "hard.csv",
        "input_via_dotdot": tmp_path / "sub" / ".." / "results.csv",
    }[case]
    (tmp_path / "sub").mkdir()
    if case == "input_via_symlink":
        target.symlink_to(data)
    if case == "input_via_hardlink":
        os.link(data, target)
    with pytest.raises(UsageError, match="^--out: ") as exc:
        check_output_path(target, flag="--out", inputs=[data])
    assert str(target) in str(exc.value)
    assert data.read_bytes() == b"a,b\n1,2\n"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("folder", "is a folder"),
        ("symlink", "symbolic link"),
        ("fifo", "not a regular file"),
        ("missing_parent", "does not exist"),
        ("parent_is_a_file", "Not a directory"),
        ("empty", "empty path"),
    ],
)
def test_targets_that_are_not_a_writable_file_are_refused(case: str, message: str, tmp_path: Path) -> None:
    target: Path | str = tmp_path / "out.json"
    if case == "folder":
        Path(target).mkdir()
    elif case == "symlink":
        (tmp_path / "elsewhere.json").write_text("keep")
        Path(target).symlink_to(tmp_path / "elsewhere.json")
    elif case == "fifo":
        os.mkfifo(target)
    elif case == "missing_parent":
        target = tmp_path / "nope" / "out.json"
    elif case == "parent_is_a_file":
        (tmp_path / "file").write_text("x")
        target = tmp_path / "file" / "out.json"
    elif case == "empty":
        target = " "
    with pytest.raises(UsageError, match=message):
        check_output_path(target, flag="--out")
    if case == "symlink":
        assert (tmp_path / "elsewhere.json").read_text() == "keep"


def test_a_read_only_folder_or_file_is_refused(tmp_path: Path) -> None:
    # root writes anywhere: where the tests run as root, the check runs as an ordinary (effective) user
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="dlbench-ro-"))
    os.chmod(top, 0o755)
    (top / "ro").mkdir(mode=0o555)
    (top / "ro.json").write_text("{}")
    os.chmod(top / "ro.json", 0o444)
    root = os.geteuid() == 0
    try:
        if root:
            os.seteuid(65534)
        with pytest.raises(UsageError, match="cannot write into"):
            check_output_path(top / "ro" / "out.json", flag="--out")
        with pytest.raises(UsageError, match="is read-only"):
            check_output_path(top / "ro.json", flag="--out")
    finally:
        if root:
            os.seteuid(0)
        os.chmod(top / "ro", 0o755)
        (top / "ro").rmdir()
        (top / "ro.json").unlink()
        top.rmdir()


def test_write_atomic_replaces_keeps_the_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "cmp.json"
    write_atomic(target, "first")
    os.chmod(target, 0o640)
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert (target.stat().st_mode & 0o777) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp.json"]


def test_write_atomic_never_follows_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "out.txt").symlink_to(victim)
    with pytest.raises(OutputWriteError, match="symbolic link"):
        write_atomic(tmp_path / "out.txt", "overwrite")
    assert victim.read_text() == "precious" and (tmp_path / "out.txt").is_symlink()


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "cmp.json"
    target.write_text('{"good": true}\n')
    real_write = os.write
    calls = {"n": 0}

    def full_disk(fd: int, data: bytes | memoryview) -> int:
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, bytes(data)[:4096])

    monkeypatch.setattr(outputs.os, "write", full_disk)
    with pytest.raises(OutputWriteError, match="No space left on device; the previous file is unchanged"):
        write_atomic(target, "x" * 100_000)
    assert target.read_text() == '{"good": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp.json"]


def test_a_real_write_limit_in_a_subprocess_keeps_the_old_file(tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes the kernel refuse bytes beyond the limit (EFBIG): a real failed write
    target = tmp_path / "cmp.json"
    target.write_text('{"good": true}\n')

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))

    code = "import sys\nfrom bench.outputs import write_atomic\nwrite_atomic(sys.argv[1], 'y' * 50_000)\n"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(target)], cwd=ROOT, capture_output=True, text=True, timeout=60,
        preexec_fn=limit,
    )  # fmt: skip
    assert proc.returncode == 1 and "OutputWriteError: cannot write" in proc.stderr
    assert "the previous file is unchanged" in proc.stderr
    assert target.read_text() == '{"good": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp.json"]


def test_a_temporary_left_by_a_killed_writer_is_removed_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "perf.json"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".perf.json.{int(dead.stdout)}.abcd1234.tmp"
    stale.write_text("half a file")
    mine = tmp_path / f".perf.json.{os.getpid()}.live0000.tmp"  # a live writer's: never touched
    mine.write_text("in progress")
    user = tmp_path / ".perf.json.notes.tmp"  # not of the pattern: never touched
    user.write_text("mine")
    write_atomic(target, "{}")
    assert not stale.exists() and mine.exists() and user.exists()
    assert target.read_text() == "{}"
