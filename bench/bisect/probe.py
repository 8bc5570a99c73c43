"""The real gate of a bisection: two commits exported into the bisection's owned folder, timed interleaved.

``GateProbe`` is the ``GateFn`` that ``bench.bisect.search.bisect`` calls for every gate. Given two
commits, a slice count and the search's ``extend`` it

1. exports each commit with ``git archive`` into ``<owned entry>/tree-<hash>``
   (``bench.gate.trees.export_commit``): nothing is written into the user's repository, and the
   user's working tree, index and HEAD are never read or touched. GOOD's export is kept for the
   whole bisection (it is BASE of every probe); every other export is removed after its gate;
2. runs ``bench.gate.measure_trees`` on them with the bisection's gate plan (the sides' trees and
   the slice count replaced), every worker carrying the owner's marker; ``extend`` decides, after
   each result, whether the same workers measure on (an inconclusive result, with twice the slices);
3. turns what stops a tree from being measured into ``Unmeasurable`` with the reason, so the search
   skips the commit: no ``bench/workload.py``; a worker that fails to import or build (an import
   error, a build error), dies or times out; a tree that rejects the configuration; and a tree that
   *built* a configuration other than BASE's (it changed a scenario default: "cannot compare",
   since comparing would report the default's change as the commit's speed; pin the parameter with
   ``-p`` to bisect across such a commit).

``DLBENCH_PLANT_SLOWDOWN`` is removed from every worker's environment: a bisection measures code,
and the knob would slow every candidate alike.

``run_bisect(plan)`` is the whole bisection: one owned entry (``bench.owned.owned("bisect",
guard=True)``) for all its gates, so on any way out -- the end, an error, SIGINT, SIGTERM, a second
signal during the cleanup, or SIGKILL (then the guardian, or the next dlbench command) -- every
worker, whatever the code under test started, and every export are gone. Library only.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.bisect.plan import BisectPlan
from bench.bisect.search import BisectResult, Commit, Event, Extend, Measurement, Unmeasurable, bisect
from bench.errors import UsageError
from bench.gate.interleave import ConfigMismatch, GatePlan, GateResult, Progress, measure_trees
from bench.gate.trees import MARKER, Tree, export_commit, is_source_tree
from bench.gate.worker import PLANT_ENV_VAR, WorkerError


def _bound(x: float | None) -> float | None:
    """A CI end for JSON and text: None when unbounded."""
    return None if x is None or not math.isfinite(x) or x <= 0.0 else float(x)


def measurement(res: GateResult) -> Measurement:
    """A gate's result as the search sees it: verdict, ratio, CI, the slices it covers."""
    est = res.estimate
    return Measurement(
        res.verdict, float(est.ratio), _bound(est.ci_low), _bound(est.ci_high), res.plan.options.slices
    )


class GateProbe:
    """``(base, new, slices) -> Measurement`` with the real gate, in ``owner``'s folder."""

    def __init__(
        self,
        plan: GatePlan,
        repo: Path,
        owner: Any,
        *,
        keep: Iterable[str] = (),
        progress: Progress | None = None,
    ) -> None:
        self.plan, self.repo, self.owner, self.progress = plan, repo, owner, progress
        self.keep = set(keep)  # commits whose export lives as long as the bisection (GOOD)
        self._trees: dict[str, Path] = {}

    def tree(self, commit: Commit) -> Path:
        """``commit`` exported into the owned folder (once; ``Unmeasurable`` if it cannot be)."""
        path = self._trees.get(commit.sha)
        if path is not None:
            return path
        dest = Path(self.owner.path) / f"tree-{commit.sha[:12]}"
        try:
            export_commit(self.repo, commit.sha, dest, env=self.owner.child_env())
        except (OSError, RuntimeError, tarfile.TarError) as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise Unmeasurable(f"cannot export {commit.short}: {exc}") from None
        if not is_source_tree(dest):
            shutil.rmtree(dest, ignore_errors=True)
            raise Unmeasurable(f"no {MARKER.as_posix()} in {commit.short}: not a dlbench source tree")
        self._trees[commit.sha] = dest
        return dest

    def release(self) -> None:
        """Remove every export but the kept ones."""
        for sha in [s for s in self._trees if s not in self.keep]:
            shutil.rmtree(self._trees.pop(sha), ignore_errors=True)

    def gate_plan(self, base: Commit, new: Commit, slices: int) -> GatePlan:
        """The bisection's gate plan with ``base`` and ``new`` as the trees and ``slices`` slices."""

        def side(s: Any, c: Commit) -> Any:
            return dataclasses.replace(s, tree=Tree(spec=c.short, kind="ref", commit=c.sha, repo=self.repo))

        return dataclasses.replace(
            self.plan,
            base=side(self.plan.base, base),
            new=side(self.plan.new, new),
            options=dataclasses.replace(self.plan.options, slices=slices),
        )

    def __call__(self, base: Commit, new: Commit, slices: int, extend: Extend | None = None) -> Measurement:
        def more(res: GateResult) -> int | None:
            return extend(measurement(res)) if extend is not None else None

        try:
            paths = {"base": self.tree(base), "new": self.tree(new)}
            res = measure_trees(
                self.gate_plan(base, new, slices),
                paths,
                progress=self.progress,
                new_env={PLANT_ENV_VAR: None},
                owner=self.owner,
                extend=more,
            )
        except ConfigMismatch as exc:  # its advice on --base-param/--new-param is the gate's, not ours
            why = self._short(exc).replace(", or compare them on purpose with --base-param/--new-param", "")
            raise Unmeasurable(f"cannot compare: {why}") from None
        except UsageError as exc:  # the tree rejected the configuration (unknown parameter, bad value)
            raise Unmeasurable(f"the tree rejects the configuration: {self._short(exc)}") from None
        except WorkerError as exc:  # an import or build error, a worker that died or timed out
            raise Unmeasurable(self._short(exc)) from None
        finally:
            self.release()
        return measurement(res)

    def _short(self, exc: BaseException) -> str:
        """The error with each export folder named by its commit."""
        text = str(exc)
        for sha, path in self._trees.items():
            text = text.replace(str(path), sha[:10])
        return text


def run_bisect(
    plan: BisectPlan,
    *,
    progress: Progress | None = None,
    on_event: Callable[[Event], None] | None = None,
    owner: Any = None,
) -> BisectResult:
    """The whole bisection of ``plan`` with real gates; everything it made is gone when it returns.

    Raises ``bench.bisect.search.CannotBisect`` when GOOD against BAD cannot be measured, and
    ``KeyboardInterrupt`` (``bench.signals.Interrupted``) when interrupted, after the cleanup.
    """
    if owner is None:
        from bench.owned import owned

        with owned("bisect", guard=True) as mine:
            return run_bisect(plan, progress=progress, on_event=on_event, owner=mine)
    probe = GateProbe(plan.gate, plan.repo, owner, keep={plan.good.sha}, progress=progress)
    return bisect(
        plan.good,
        plan.bad,
        plan.commits,
        probe,
        slices=plan.gate.options.slices,
        max_slices=plan.max_slices,
        first_parent=plan.first_parent,
        on_event=on_event,
    )


__all__ = ["GateProbe", "run_bisect"]
