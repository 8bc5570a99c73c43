"""Where BASE and NEW come from: a git ref (exported into a folder dlbench owns), or a directory.

``resolve_tree(spec, flag=...)`` says what a ``--base`` / ``--new`` value names, before anything is
started (a ``UsageError`` naming the flag otherwise):

* ``None`` (not given) or ``"."``: the current directory (a dlbench source tree), used as is;
* an empty or blank value is refused: in CI it is what an empty ``$(git merge-base ...)`` gives, and
  reading it as "the working tree" would compare HEAD with itself;
* an existing directory holding ``bench/workload.py``: used as is (uncommitted changes included);
* anything else is looked up as a git ref in the repository of ``repo`` (the current directory):
  ``git rev-parse --verify REF^{commit}``. A directory wins over a ref of the same name.

``materialize(tree, owner=...)`` makes a tree a path for the duration of a block: a directory is
itself; a ref is exported with ``git archive COMMIT`` and unpacked (``tarfile``, streamed) into
``<owned entry>/tree-<commit>`` (``export_commit``). Nothing is written into the user's repository:
no worktree entry, no lock, no index, so a kill at any moment cannot leave a half-made worktree
there, and cleaning up never needs a repository-wide ``git worktree prune`` (which would also drop
the entry of a user's own worktree whose folder is briefly missing). The owned entry
(``bench.owned``) is removed on the way out, by a guardian if dlbench is killed, or by the next
dlbench command. ``git archive`` leaves out what ``.gitattributes`` marks ``export-ignore`` and
submodules' contents, as a fresh clone without submodules would.

Two sides are "the same tree" (``same_tree``) when both are the same commit or the same directory
(real path); the gate then needs differing parameters (``-p impl=dlcore`` vs ``impl=torch``).
Torch-free.
"""

from __future__ import annotations

import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import UsageError

MARKER = Path("bench") / "workload.py"  # what makes a directory a dlbench source tree


@dataclass(frozen=True)
class Tree:
    """A resolved source: ``kind`` "dir" (``path``) or "ref" (``commit`` in the repository ``repo``)."""

    spec: str  # as the user gave it ("." for the default)
    kind: str  # "dir" | "ref"
    path: Path | None = None  # kind "dir": the directory (resolved)
    commit: str | None = None  # kind "ref": the full commit hash
    repo: Path | None = None  # kind "ref": the repository's top level

    @property
    def identity(self) -> tuple[str, str]:
        """What makes two trees the same: the commit, or the directory's real path."""
        return ("ref", str(self.commit)) if self.kind == "ref" else ("dir", str(self.path))

    @property
    def label(self) -> str:
        """``origin/main (1a2b3c4)``, or the directory as given."""
        if self.kind == "ref":
            return f"{self.spec} ({str(self.commit)[:10]})"
        return self.spec

    def to_dict(self) -> dict[str, str | None]:
        return {
            "source": self.spec,
            "kind": self.kind,
            "path": str(self.path) if self.path is not None else None,
            "commit": self.commit,
        }


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=check, timeout=120
    )


def git_toplevel(path: Path) -> Path | None:
    """The top level of the git repository holding ``path``, or None (no repository, no git)."""
    try:
        res = _git(path, "rev-parse", "--show-toplevel", check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(res.stdout.strip()).resolve() if res.returncode == 0 and res.stdout.strip() else None


def is_source_tree(path: Path) -> bool:
    """True if ``path`` is a directory holding a dlbench source tree (``bench/workload.py``)."""
    return (path / MARKER).is_file()


def resolve_tree(spec: str | None, *, flag: str, repo: Path | None = None) -> Tree:
    """What ``spec`` names (see the module docstring); ``UsageError`` naming ``flag`` if nothing."""
    base = (repo or Path.cwd()).resolve()
    if spec is not None and not str(spec).strip():
        raise UsageError(
            f"{flag}: an empty value; give a git ref or a directory (an empty $(git merge-base ...) "
            f"in CI gives this; leave {flag} out to mean the current directory)"
        )
    text = "." if spec is None else str(spec).strip()
    candidate = (
        (base / text).expanduser() if not Path(text).expanduser().is_absolute() else Path(text).expanduser()
    )
    if candidate.is_dir():
        path = candidate.resolve()
        if not is_source_tree(path):
            raise UsageError(f"{flag}: directory {text!r} is not a dlbench source tree (no {MARKER})")
        return Tree(spec=text, kind="dir", path=path)
    top = git_toplevel(base)
    if top is None:
        raise UsageError(
            f"{flag}: {text!r} is not a directory, and {base} is not in a git repository "
            "to look it up as a ref"
        )
    res = _git(top, "rev-parse", "--verify", "--quiet", f"{text}^{{commit}}", check=False)
    if res.returncode != 0 or not res.stdout.strip():
        raise UsageError(f"{flag}: unknown git ref {text!r} (not a directory either) in {top}")
    return Tree(spec=text, kind="ref", commit=res.stdout.strip(), repo=top)


def same_tree(a: Tree, b: Tree) -> bool:
    """True when ``a`` and ``b`` are the same commit or the same directory."""
    return a.identity == b.identity


def export_commit(
    repo: Path, commit: str, dest: Path, *, env: Mapping[str, str] | None = None, timeout_s: float = 600.0
) -> Path:
    """``commit`` of ``repo`` as plain files in ``dest`` (created): ``git archive`` unpacked by ``tarfile``.

    Reads the repository only. ``git archive`` runs in a session of its own (with ``env``, which
    carries the owner's marker) and is killed if the unpacking fails or is interrupted; the caller
    owns ``dest`` and removes it. ``RuntimeError`` naming the commit if git fails.
    """
    dest.mkdir(parents=True, exist_ok=False)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            ["git", "-C", str(repo), "archive", "--format=tar", commit],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
        try:
            assert proc.stdout is not None
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                tar.extractall(dest, filter="tar")  # no absolute paths, nothing outside dest
            rc = proc.wait(timeout=timeout_s)
        except BaseException:
            _kill(proc)
            raise
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
        if rc != 0:
            err.seek(0)
            why = err.read().decode("utf-8", "replace").strip()
            raise RuntimeError(f"git archive {commit[:10]} failed (exit {rc}): {why}")
    return dest


def _kill(proc: subprocess.Popen[Any]) -> None:
    import os
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait()


@contextmanager
def materialize(tree: Tree, *, owner: Any = None) -> Iterator[Path]:
    """``tree`` as a directory for the duration of the block (a ref: an export in an owned folder).

    ``owner`` is the ``bench.owned.Owned`` entry the export goes into (removed with it); without one
    a fresh entry of kind ``tree`` is made and removed on the way out.
    """
    if tree.kind == "dir":
        assert tree.path is not None
        yield tree.path
        return
    assert tree.repo is not None and tree.commit is not None
    if owner is None:
        from bench.owned import owned

        with owned("tree") as mine, materialize(tree, owner=mine) as path:
            yield path
        return
    try:
        path = export_commit(
            tree.repo, tree.commit, owner.path / f"tree-{tree.commit[:12]}", env=owner.child_env()
        )
    except (OSError, RuntimeError, tarfile.TarError) as exc:
        raise RuntimeError(f"{tree.spec}: cannot check out {tree.commit[:10]}: {exc}") from None
    if not is_source_tree(path):
        raise UsageError(f"{tree.spec}: commit {tree.commit[:10]} holds no dlbench source tree (no {MARKER})")
    yield path
