"""A bisection's inputs, every one checked before any gate runs (``UsageError`` naming the flag: exit 2).

``plan_bisect(scenario, good=..., bad=..., **gate_options)`` checks, in this order, each with a
message that names the flag, what was given and what is expected:

1. the measuring options the gate checks first: ``--threshold`` (``5%`` or ``0.05``; ``-5%`` and
   ``abc`` are refused), ``--slices`` x ``--pairs`` (enough ratios to bound a CI), ``--max-slices``
   (from ``--slices`` on);
2. the refs (``bench.bisect.history``): known commits, not the same one, GOOD an ancestor of BAD,
   both dlbench source trees;
3. everything else the gate checks (``bench.gate.plan_gate``: scenario, preset, parameters, run
   options, device), with GOOD as BASE and BAD as NEW.

Every other option of ``dlbench gate`` that measures one configuration comes through
``gate_options`` unchanged (``params``, ``preset``, ``mode``, ``precision``, ``checkpointing``,
``device``, ``slices``, ``slice_time_s``, ``pairs``, ``threshold``, and whatever ``plan_gate`` takes
later). Torch-free until ``plan_gate`` resolves the scenario.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.bisect import history
from bench.bisect.search import Commit
from bench.errors import UsageError
from bench.gate.interleave import GateOptions, GatePlan, check_slice_count, parse_threshold, plan_gate

MAX_SLICES_FACTOR = 4  # --max-slices default: two doublings of --slices
_NOT_FOR_BISECT = ("base", "new", "base_params", "new_params", "aa", "repo")


@dataclass(frozen=True)
class BisectPlan:
    """A checked bisection: the gate plan (GOOD as BASE, BAD as NEW), the commits, the cap. Nothing run."""

    gate: GatePlan
    repo: Path
    good: Commit
    bad: Commit
    good_spec: str
    bad_spec: str
    commits: tuple[Commit, ...]  # git rev-list --first-parent GOOD..BAD, oldest first (BAD last)
    first_parent: Commit  # the first parent of commits[0] (GOOD, unless GOOD is off BAD's first-parent line)
    max_slices: int

    @property
    def threshold(self) -> float:
        return self.gate.options.threshold

    def config_dict(self) -> dict[str, Any]:
        """What every gate measured and how (the JSON's ``config``)."""
        cfg = {k: v for k, v in self.gate.config_dict().items() if k != "aa"}
        return {**cfg, "params": dict(self.gate.base.given), "max_slices": self.max_slices}


def _count(flag: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise UsageError(f"{flag}: expected an integer from {lo} to {hi}, got {value!r}")
    return value


def plan_bisect(
    scenario: str,
    *,
    good: str | None,
    bad: str | None = "HEAD",
    max_slices: int | None = None,
    repo: Path | None = None,
    **gate_options: Any,
) -> BisectPlan:
    """Check every input of a bisection (see the module docstring); ``UsageError`` naming the flag."""
    wrong = sorted(set(gate_options) & set(_NOT_FOR_BISECT))
    if wrong:
        raise TypeError(f"plan_bisect: {wrong} are not options of a bisection (GOOD and BAD are the sides)")
    parse_threshold(gate_options.get("threshold"))
    slices = _count("--slices", gate_options.get("slices", GateOptions.slices), 1, 10_000)
    pairs = _count("--pairs", gate_options.get("pairs", GateOptions.pairs), 1, 16)
    check_slice_count(slices, pairs)
    cap = MAX_SLICES_FACTOR * slices if max_slices is None else max_slices
    if isinstance(cap, bool) or not isinstance(cap, int) or not slices <= cap <= 100_000:
        raise UsageError(
            f"--max-slices: expected an integer from --slices ({slices}) to 100000, got {max_slices!r}"
        )

    top = history.repository(repo)
    good_sha = history.resolve(top, good, flag="--good")
    bad_sha = history.resolve(top, bad, flag="--bad")
    good_spec, bad_spec = str(good).strip(), str(bad).strip()
    history.check_pair(top, good_sha, bad_sha, good_spec=good_spec, bad_spec=bad_spec)

    gate = plan_gate(scenario, base=good_sha, new=bad_sha, repo=top, **gate_options)
    commits = history.first_parent_history(top, good_sha, bad_sha)
    good_c = history.describe(top, good_sha)
    parent = history.first_parent(top, commits[0].sha) or good_c
    return BisectPlan(
        gate=gate,
        repo=top,
        good=good_c,
        bad=commits[-1],
        good_spec=good_spec,
        bad_spec=bad_spec,
        commits=tuple(commits),
        first_parent=parent,
        max_slices=cap,
    )


__all__ = ["MAX_SLICES_FACTOR", "BisectPlan", "plan_bisect"]
