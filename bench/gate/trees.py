"""Where BASE and NEW come from: a git ref (checked out into a temporary worktree), or a directory.

``resolve_tree(spec, flag=...)`` says what a ``--base`` / ``--new`` value names, before anything is
started (a ``UsageError`` naming the flag otherwise):

* ``None`` or ``"."``: the current directory (a dlbench source tree), used as is;
* an existing directory holding ``bench/workload.py``: used as is (uncommitted changes included);
* anything else is looked up as a git ref in the repository of ``repo`` (the current directory):
  ``git rev-parse --verify REF^{commit}``. A directory wins over a ref of the same name.

``materialize(tree)`` is the context manager that makes a tree a path: a directory is itself; a
ref gets ``git worktree add --detach`` into a fresh temporary directory, removed again on the way
out whatever happens (exception, Ctrl-C; ``git worktree remove --force``, the directory deleted,
``git worktree prune``), so an interrupted gate leaves neither a checkout nor a worktree entry.

Two sides are "the same tree" (``same_tree``) when both are the same commit or the same directory
(real path); the gate then needs differing parameters (``-p impl=dlcore`` vs ``impl=torch``).
Torch-free.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
    text = "." if spec is None or not str(spec).strip() else str(spec).strip()
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


@contextmanager
def worktree(repo: Path, commit: str, *, prefix: str = "dlbench-gate-") -> Iterator[Path]:
    """``commit`` checked out (detached) in a temporary worktree of ``repo``; removed after, always."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    path = tmp / "tree"
    try:
        res = _git(repo, "worktree", "add", "--detach", "--quiet", str(path), commit, check=False)
        if res.returncode != 0:
            raise RuntimeError(
                f"git worktree add {commit[:10]} failed: {res.stderr.strip() or res.stdout.strip()}"
            )
        yield path
    finally:
        remove_worktree(repo, path)
        shutil.rmtree(tmp, ignore_errors=True)


def remove_worktree(repo: Path, path: Path) -> None:
    """``git worktree remove --force path`` then ``prune``; errors are ignored (best effort cleanup)."""
    for args in (("worktree", "remove", "--force", str(path)), ("worktree", "prune")):
        try:
            _git(repo, *args, check=False)
        except (OSError, subprocess.SubprocessError):
            pass


@contextmanager
def materialize(tree: Tree) -> Iterator[Path]:
    """``tree`` as a directory for the duration of the block (a temporary worktree for a ref)."""
    if tree.kind == "dir":
        assert tree.path is not None
        yield tree.path
        return
    assert tree.repo is not None and tree.commit is not None
    with worktree(tree.repo, tree.commit) as path:
        if not is_source_tree(path):
            raise UsageError(
                f"{tree.spec}: commit {tree.commit[:10]} holds no dlbench source tree (no {MARKER})"
            )
        yield path
