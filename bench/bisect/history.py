"""The commits a bisection walks: GOOD and BAD resolved and checked, and the first-parent history between.

Everything here reads the repository and nothing else (``git rev-parse``, ``merge-base
--is-ancestor``, ``log``, ``cat-file``): no checkout, no worktree, no branch, no index refresh, so the
user's working tree, index and HEAD are never touched, and a dirty tree or a detached HEAD makes no
difference. Every check raises ``UsageError`` naming the flag, before any gate runs:

* ``--good`` / ``--bad`` empty, or not a commit of the repository (a tag, a branch, ``HEAD~3``, a
  hash: anything ``git rev-parse REF^{commit}`` accepts);
* GOOD and BAD the same commit;
* GOOD not an ancestor of BAD (BAD must descend from GOOD; swapped refs are named as such);
* GOOD or BAD without ``bench/workload.py`` (no dlbench source tree: nothing to measure).

``first_parent_history`` is ``git rev-list --first-parent GOOD..BAD``, oldest first: the commits
on BAD's own line of history (a merge counts as one commit, as with ``git bisect
--first-parent``). Torch-free.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.bisect.search import Commit
from bench.errors import UsageError
from bench.gate.trees import MARKER, git_toplevel

_FORMAT = "%H%x1f%h%x1f%aI%x1f%s"  # full hash, short hash, author date, subject


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _checked(repo: Path, *args: str) -> str:
    res = _git(repo, *args)
    if res.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {res.stderr.strip()}")
    return res.stdout


def repository(cwd: Path | None = None) -> Path:
    """The top level of the git repository holding ``cwd`` (default: the current directory)."""
    here = (cwd or Path.cwd()).resolve()
    top = git_toplevel(here)
    if top is None:
        raise UsageError(f"bisect: {here} is not in a git repository; run it inside the repository to bisect")
    return top


def resolve(repo: Path, spec: str | None, *, flag: str) -> str:
    """The full hash of the commit ``spec`` names; ``UsageError`` naming ``flag`` otherwise."""
    if spec is None or not str(spec).strip():
        raise UsageError(
            f"{flag}: an empty value; give a commit (a tag, a branch, HEAD~N, a hash). An empty "
            "$(git ...) in a script gives this"
        )
    text = str(spec).strip()
    if text.startswith("-"):
        raise UsageError(f"{flag}: {text!r} is not a git ref (it starts with '-')")
    res = _git(repo, "rev-parse", "--verify", "--quiet", f"{text}^{{commit}}")
    if res.returncode != 0 or not res.stdout.strip():
        raise UsageError(f"{flag}: unknown git ref {text!r}: no such commit in {repo}")
    return res.stdout.strip()


def describe(repo: Path, sha: str) -> Commit:
    """``sha`` as a ``Commit`` (short hash, subject, author date)."""
    out = _checked(repo, "show", "-s", f"--format={_FORMAT}", sha, "--")
    return _parse(out.strip("\n"))


def _parse(line: str) -> Commit:
    sha, short, date, subject = (line.split("\x1f") + ["", "", ""])[:4]
    return Commit(sha=sha, short=short, subject=subject, date=date)


def is_ancestor(repo: Path, a: str, b: str) -> bool:
    """True when ``a`` is an ancestor of ``b`` (or the same commit)."""
    res = _git(repo, "merge-base", "--is-ancestor", a, b)
    if res.returncode not in (0, 1):
        raise RuntimeError(f"git merge-base --is-ancestor failed in {repo}: {res.stderr.strip()}")
    return res.returncode == 0


def has_source_tree(repo: Path, sha: str) -> bool:
    """True when commit ``sha`` holds ``bench/workload.py`` (what the gate needs to build a step)."""
    return _git(repo, "cat-file", "-e", f"{sha}:{MARKER.as_posix()}").returncode == 0


def check_pair(repo: Path, good: str, bad: str, *, good_spec: str, bad_spec: str) -> None:
    """GOOD and BAD make a bisection: different commits, BAD descends from GOOD, both dlbench trees."""
    if good == bad:
        raise UsageError(
            f"--good/--bad: GOOD ({good_spec}) and BAD ({bad_spec}) are the same commit {good[:10]}; "
            "nothing lies between them to bisect"
        )
    if not is_ancestor(repo, good, bad):
        hint = (
            f"; BAD is an ancestor of GOOD: did you swap them? (--good {bad_spec} --bad {good_spec})"
            if is_ancestor(repo, bad, good)
            else " (they are on separate branches; give a GOOD that BAD's history contains, "
            "e.g. their merge base)"
        )
        raise UsageError(
            f"--good: {good_spec} ({good[:10]}) is not an ancestor of BAD {bad_spec} ({bad[:10]}); "
            f"BAD must descend from GOOD{hint}"
        )
    for flag, sha, spec in (("--good", good, good_spec), ("--bad", bad, bad_spec)):
        if not has_source_tree(repo, sha):
            raise UsageError(
                f"{flag}: commit {spec} ({sha[:10]}) holds no dlbench source tree (no {MARKER}), "
                "so it cannot build a scenario"
            )


def first_parent_history(repo: Path, good: str, bad: str) -> list[Commit]:
    """``git rev-list --first-parent GOOD..BAD``, oldest first (BAD last), as ``Commit`` s."""
    out = _checked(
        repo, "log", "--first-parent", "--reverse", "-z", f"--format={_FORMAT}", f"{good}..{bad}", "--"
    )
    commits = [_parse(rec.strip("\n")) for rec in out.split("\x00") if rec.strip()]
    if not commits or commits[-1].sha != bad:
        raise RuntimeError(f"git log {good[:10]}..{bad[:10]} did not end with BAD")
    return commits


def first_parent(repo: Path, sha: str) -> Commit | None:
    """The first parent of ``sha`` (None for a root commit)."""
    res = _git(repo, "rev-parse", "--verify", "--quiet", f"{sha}^1")
    return describe(repo, res.stdout.strip()) if res.returncode == 0 and res.stdout.strip() else None


__all__ = [
    "check_pair",
    "describe",
    "first_parent",
    "first_parent_history",
    "has_source_tree",
    "is_ancestor",
    "repository",
    "resolve",
]
