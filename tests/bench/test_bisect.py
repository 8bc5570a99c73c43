"""``dlbench bisect``: the search on a fake gate, the inputs refused before any gate, the real gate's
error mapping and exports, the output formats.

No timing here: every rule of the search (confirm, slower left / same or faster right, skips,
re-measurement with twice the slices up to a cap, the culprit's own step, several small steps,
ranges of skipped commits, the number of gates) is proven with a fake gate whose verdicts come from
the real ``bench.stats`` verdict of a ratio the test chooses. The synthetic history measured for
real is ``test_bisect_history.py``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from bench.bisect import history, probe, render
from bench.bisect.plan import plan_bisect
from bench.bisect.search import (
    SKIPPED,
    CannotBisect,
    Commit,
    GateStart,
    Measurement,
    MoreSlices,
    Probe,
    Unmeasurable,
    bisect,
    next_candidate,
)
from bench.cli import app
from bench.errors import UsageError
from bench.gate.interleave import ConfigMismatch
from bench.gate.worker import WorkerError
from bench.stats.estimate import RatioEstimate
from bench.stats.verdict import verdict

runner = CliRunner()
THRESHOLD = 0.05


# ------------------------------------------------------------------------------------------------
# the search, on a fake gate
# ------------------------------------------------------------------------------------------------
def chain(n: int) -> tuple[Commit, list[Commit]]:
    good = Commit("g" * 40, "good", "GOOD", "2024-01-01T00:00:00+00:00")
    return good, [Commit(f"{i:040d}", f"c{i}", f"commit {i}", f"2024-01-{i + 2:02d}") for i in range(n)]


class FakeGate:
    """Step times per commit (``level``); the verdict of ``new/base`` at ``threshold`` by ``bench.stats``.

    ``broken``: commits that cannot be measured (their reason); ``noisy``: commit -> the slice count
    from which its gates are decisive (before that the CI is wide: inconclusive). Records every call.
    """

    def __init__(
        self,
        level: dict[str, float],
        *,
        broken: dict[str, str] | None = None,
        noisy: dict[str, int] | None = None,
        threshold: float = THRESHOLD,
    ) -> None:
        self.level, self.broken, self.noisy = level, broken or {}, noisy or {}
        self.threshold = threshold
        self.calls: list[tuple[str, str, list[int]]] = []  # (base, new, every slice count measured)

    def measure(self, base: Commit, new: Commit, k: int) -> Measurement:
        r = self.level[new.sha] / self.level[base.sha]
        wide = k < self.noisy.get(new.sha, 0) or k < self.noisy.get(base.sha, 0)
        lo, hi = (r * 0.8, r * 1.5) if wide else (r * 0.99, r * 1.01)
        est = RatioEstimate(r, lo, hi, None, "slices", k, k, 0.95)
        return Measurement(verdict(est, threshold=self.threshold), r, lo, hi, k)

    def __call__(self, base: Commit, new: Commit, slices: int, extend: Any) -> Measurement:
        ks = [slices]
        self.calls.append((base.short, new.short, ks))
        for c in (base, new):
            if c.sha in self.broken:
                raise Unmeasurable(self.broken[c.sha])
        while True:
            m = self.measure(base, new, ks[-1])
            more = extend(m)
            if more is None:
                return m
            assert more > ks[-1]
            ks.append(more)


def levels(good: Commit, commits: list[Commit], culprit: int, factor: float = 1.3) -> dict[str, float]:
    """Step time 1 up to ``culprit`` (an index), ``factor`` from it on."""
    out = {good.sha: 1.0}
    out.update({c.sha: (factor if i >= culprit else 1.0) for i, c in enumerate(commits)})
    return out


def run(good: Commit, commits: list[Commit], gate: FakeGate, **kw: Any) -> Any:
    kw.setdefault("slices", 6)
    kw.setdefault("max_slices", 24)
    return bisect(good, commits[-1], commits, gate, **kw)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 12, 33])
def test_finds_the_culprit_at_every_position_in_log2_gates(n: int) -> None:
    good, commits = chain(n)
    for culprit in range(n):
        gate = FakeGate(levels(good, commits, culprit))
        res = run(good, commits, gate)
        assert res.outcome == "culprit" and res.culprit == commits[culprit] and res.exit_code == 1
        # confirm + a binary search over the n - 1 commits before BAD + the culprit's own step
        assert res.gates <= math.ceil(math.log2(n)) + 2, (culprit, [c[:2] for c in gate.calls])
        assert res.probes[0].role == "confirm" and res.probes[0].commit == commits[-1]
        assert all(p.base == good for p in res.probes if p.role in ("confirm", "probe"))  # GOOD vs candidate
        parent = commits[culprit - 1] if culprit else good
        assert res.step is not None and res.step.base == parent and res.step.commit == commits[culprit]
        assert res.step.verdict == "slower" and res.step.ratio == pytest.approx(1.3)
        assert res.gates == len(gate.calls)  # every gate is in the log, none repeated


def test_slower_moves_left_same_or_faster_moves_right() -> None:
    good, commits = chain(12)
    lv = levels(good, commits, 7)
    lv[commits[5].sha] = 0.8  # c5 is faster than GOOD: the slowdown still lies to its right
    gate = FakeGate(lv)
    res = run(good, commits, gate)
    # the middle of (GOOD, BAD) is c5 (faster: right); of (c5, c11) c8 (slower: left); of (c5, c8)
    # c6 (same: right); c7 (slower): the culprit, then its own step against c6
    assert [(c[0], c[1]) for c in gate.calls] == [
        ("good", "c11"), ("good", "c5"), ("good", "c8"), ("good", "c6"), ("good", "c7"), ("c6", "c7")
    ]  # fmt: skip
    assert [p.verdict for p in res.probes] == ["slower", "faster", "slower", "same", "slower", "slower"]
    assert [p.role for p in res.probes] == ["confirm", "probe", "probe", "probe", "probe", "step"]
    assert [p.n for p in res.probes] == [1, 2, 3, 4, 5, 6]
    assert res.culprit == commits[7] and res.step is res.probes[-1]


@pytest.mark.parametrize("bad_level", [1.0, 0.7, 1.03])
def test_nothing_to_find_when_bad_is_not_slower_beyond_the_threshold(bad_level: float) -> None:
    good, commits = chain(12)
    lv = {good.sha: 1.0, **{c.sha: 1.0 for c in commits}}
    lv[commits[-1].sha] = bad_level  # same, faster, 3 % slower (real but within 5 %: "same")
    gate = FakeGate(lv)
    res = run(good, commits, gate)
    assert res.outcome == "nothing" and res.exit_code == 0 and res.gates == 1
    assert res.culprit is None and res.step is None
    assert res.confirm.verdict == ("faster" if bad_level < 1 else "same")


def test_an_inconclusive_gate_goes_on_with_twice_the_slices_up_to_the_cap() -> None:
    good, commits = chain(12)
    # c5 (the first probe) is decisive only from 24 slices on
    gate = FakeGate(levels(good, commits, 7), noisy={commits[5].sha: 24})
    res = run(good, commits, gate, slices=6, max_slices=24)
    first = res.probes[1]
    assert first.commit == commits[5] and first.verdict == "same" and first.slices == 24
    assert [m.slices for m in first.looks] == [6, 12] and all(
        m.verdict == "inconclusive" for m in first.looks
    )
    assert gate.calls[1][2] == [6, 12, 24]  # one gate, measured on: not three gates
    assert res.culprit == commits[7] and res.gates == 6 and not res.skipped
    # a cap below what it needs: inconclusive at the cap, the commit skipped like `git bisect skip`
    gate = FakeGate(levels(good, commits, 7), noisy={commits[5].sha: 24})
    res = run(good, commits, gate, slices=6, max_slices=12)
    assert gate.calls[1][2] == [6, 12] and res.probes[1].verdict == "inconclusive"
    assert res.skipped == {commits[5].sha: "inconclusive up to 12 slices (ratio 1.000)"}
    assert gate.calls[2][1] == "c4"  # the next candidate: the unskipped one nearest the middle
    assert res.outcome == "culprit" and res.culprit == commits[7]
    # a cap equal to --slices: never measured on
    gate = FakeGate(levels(good, commits, 7), noisy={commits[5].sha: 24})
    res = run(good, commits, gate, slices=6, max_slices=6)
    assert gate.calls[1][2] == [6] and commits[5].sha in res.skipped


def test_commits_that_cannot_be_measured_are_skipped_with_their_reason() -> None:
    good, commits = chain(12)
    why = "NEW[0] (c5): ModuleNotFoundError: No module named 'nope'"
    gate = FakeGate(levels(good, commits, 7), broken={commits[5].sha: why})
    res = run(good, commits, gate)
    assert res.probes[1].commit == commits[5] and res.probes[1].verdict == SKIPPED
    assert res.probes[1].reason == why and res.probes[1].ratio is None
    assert res.skipped == {commits[5].sha: why}
    assert (
        res.outcome == "culprit" and res.culprit == commits[7] and res.gates <= math.ceil(math.log2(12)) + 3
    )
    assert json.loads(json.dumps([p.to_dict() for p in res.probes]))[1]["reason"] == why


def test_one_unmeasurable_commit_anywhere_costs_at_most_one_gate_more() -> None:
    """ceil(log2 12) + 3 gates: the bound the synthetic history is held to, at every placement."""
    good, commits = chain(12)
    for culprit in range(12):
        for broken in range(11):  # BAD itself is measured by the confirmation
            gate = FakeGate(levels(good, commits, culprit), broken={commits[broken].sha: "broken"})
            res = run(good, commits, gate)
            assert res.gates <= math.ceil(math.log2(12)) + 3, (culprit, broken)
            if broken in (culprit - 1, culprit):  # the first slower is the broken one or the next
                assert res.outcome == "range" and res.range == commits[broken : broken + 2], (culprit, broken)
            else:
                assert res.outcome == "culprit" and res.culprit == commits[culprit], (culprit, broken)


def test_a_range_of_skipped_commits_is_reported_with_the_step_across_it() -> None:
    good, commits = chain(12)
    broken = {commits[i].sha: f"no bench/workload.py in c{i}" for i in (5, 6)}
    gate = FakeGate(levels(good, commits, 6), broken=broken)  # c6, the culprit, cannot be measured
    res = run(good, commits, gate)
    assert res.outcome == "range" and res.exit_code == 1
    assert res.range == commits[5:8] and res.culprit == commits[7]  # c7: the first slower one measured
    assert res.skipped == {c.sha: f"no bench/workload.py in {c.short}" for c in commits[5:7]}
    assert res.step is not None and res.step.base == commits[4] and res.step.verdict == "slower"
    d = render.headline(_doc(res))
    assert "one of c5, c6, c7" in d[0] and "across them: 1.300" in d[1]


def test_several_small_steps_are_said_and_the_rises_listed() -> None:
    good, commits = chain(12)
    lv = {good.sha: 1.0, **{c.sha: 1.02 ** (i + 1) for i, c in enumerate(commits)}}  # +2 % per commit
    gate = FakeGate(lv)
    res = run(good, commits, gate)
    assert res.outcome == "steps" and res.exit_code == 1
    # the first commit beyond 5 % with a CI above 1 is c2 (1.02^3 = 1.061); its own step is 2 %: "same"
    assert res.culprit == commits[2] and res.step is not None and res.step.verdict == "same"
    assert res.step.ratio == pytest.approx(1.02)
    assert res.rises and all(r.ratio_after > r.ratio_before for r in res.rises)
    assert res.rises[0].before == good and res.rises[-1].after == commits[-1]
    text = render.headline(_doc(res))
    assert "no single commit is slower than its parent beyond 5%" in text[0]
    assert "several steps" in text[0] and "rose" in text[2]


def test_the_step_reuses_the_probe_when_the_parent_is_good() -> None:
    good, commits = chain(12)
    gate = FakeGate(levels(good, commits, 0))
    res = run(good, commits, gate)
    assert res.culprit == commits[0] and res.step is not None and res.step.role == "probe"
    assert ("good", "c0") in [(c[0], c[1]) for c in gate.calls] and len(gate.calls) == res.gates
    # GOOD off the first-parent line: the first commit's own step is against its real first parent
    parent = Commit("p" * 40, "parent")
    gate = FakeGate({**levels(good, commits, 0), parent.sha: 1.0})
    res = run(good, commits, gate, first_parent=parent)
    assert res.step is not None and res.step.base == parent and res.step.role == "step"


def test_good_or_bad_that_cannot_be_measured_cannot_be_bisected() -> None:
    good, commits = chain(4)
    gate = FakeGate(levels(good, commits, 2), broken={commits[-1].sha: "NEW[0]: SyntaxError"})
    with pytest.raises(
        CannotBisect, match=r"GOOD good against BAD c3 could not be measured: NEW\[0\]"
    ) as info:
        run(good, commits, gate)
    assert len(info.value.probes) == 1


def test_events_tell_each_gate_its_extension_and_its_result() -> None:
    good, commits = chain(5)
    events: list[Any] = []
    gate = FakeGate(levels(good, commits, 3), noisy={commits[1].sha: 12})
    res = run(good, commits, gate, on_event=events.append)
    kinds = [type(e).__name__ for e in events]
    assert kinds.count("GateStart") == kinds.count("Probe") == res.gates
    assert kinds.count("MoreSlices") == 1
    more = next(e for e in events if isinstance(e, MoreSlices))
    assert more.looked.slices == 6 and more.slices == 12 and more.looked.verdict == "inconclusive"
    starts = [e for e in events if isinstance(e, GateStart)]
    assert starts[0].role == "confirm" and starts[0].left == 4  # ceil(log2 5) probes + the step
    assert [e.n for e in events if isinstance(e, Probe)] == list(range(1, res.gates + 1))


def test_next_candidate_is_nearest_the_middle_around_skips() -> None:
    assert next_candidate(-1, 11, set()) == 5
    assert next_candidate(-1, 11, {5}) == 4  # a tie goes to the older commit
    assert next_candidate(-1, 11, {4, 5}) == 6
    assert next_candidate(3, 5, {4}) is None and next_candidate(3, 4, set()) is None


def test_bad_arguments_of_the_search_are_programming_errors() -> None:
    good, commits = chain(3)
    with pytest.raises(ValueError, match="ending with BAD"):
        bisect(good, commits[0], commits, FakeGate({}), slices=6, max_slices=24)
    with pytest.raises(ValueError, match="slices <= max_slices"):
        bisect(good, commits[-1], commits, FakeGate({}), slices=12, max_slices=6)


# ------------------------------------------------------------------------------------------------
# outputs
# ------------------------------------------------------------------------------------------------
def _doc(res: Any) -> dict[str, Any]:
    """``render.to_dict`` of a search result, with a stand-in plan."""

    class _Plan:
        good_spec, bad_spec, threshold = "v1", "HEAD", THRESHOLD

        class gate:  # noqa: N801
            scenario = "_busy"

        @staticmethod
        def config_dict() -> dict[str, Any]:
            run = {"preset": "tiny", "mode": "train", "precision": "fp32", "checkpointing": "none"}
            return {**run, "device": "cpu", "pairs": 1, "slices": 6, "slice_time_s": 0.1, "max_slices": 24}

    return render.to_dict(res, _Plan())  # type: ignore[arg-type]


def test_json_is_strict_and_the_markdown_makes_repository_text_inert() -> None:
    good, commits = chain(12)
    evil = Commit(commits[7].sha, commits[7].short, "<script>alert(1)</script> | [x](http://e) *b*", "2024")
    commits[7] = evil
    gate = FakeGate(levels(good, commits, 7), broken={commits[5].sha: "boom | <b>\nsecond line"})
    res = run(good, commits, gate)
    d = _doc(res)
    text = json.dumps(d, allow_nan=False)  # strict JSON: no NaN or inf anywhere
    assert json.loads(text)["culprit"]["subject"] == evil.subject
    assert d["kind"] == "dlbench-bisect" and d["outcome"] == "culprit" and d["exit_code"] == 1
    assert d["gates"] == len(d["probes"]) == res.gates and d["commits"] == 12
    assert d["culprit"]["step"]["parent"] == commits[6].sha and d["culprit"]["step"]["verdict"] == "slower"
    for key in ("commit", "short", "ratio", "ci_low", "ci_high", "verdict", "slices", "seconds", "base"):
        assert all(key in p for p in d["probes"]), key
    md = render.render_markdown(d)
    assert "<script>" not in md and "&lt;script&gt;" in md and "](http" not in md
    assert "boom \\| &lt;b&gt; second line" in md  # one cell: the pipe escaped, the newline folded
    assert md.count("\n| ") == 1 + res.gates  # the header and one row per gate


def test_a_probe_with_an_unbounded_ci_shows_inf() -> None:
    assert render.ratio_ci({"ratio": 1.2, "ci_low": None, "ci_high": None}) == "1.200 [0, inf]"
    assert render.ratio_ci({"ratio": None}) == "-"


# ------------------------------------------------------------------------------------------------
# inputs: refused before any gate, exit 2, naming the problem
# ------------------------------------------------------------------------------------------------
def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """main: one (a dlbench tree: bench/workload.py) -> two -> three (v1 tagged at one); a side
    branch off one; a commit without bench/workload.py (``bare``) off three."""
    r = tmp_path_factory.mktemp("bisect") / "repo"
    (r / "bench").mkdir(parents=True)
    (r / "README").write_text("a repository\n")
    git(r, "init", "-q", "-b", "main")
    for i, name in enumerate(("one", "two", "three")):
        (r / "bench" / "workload.py").write_text(f"VERSION = {i}\n")
        git(r, "add", "-A")
        git(r, "commit", "-qm", name)
        if name == "one":
            git(r, "tag", "v1")
    git(r, "checkout", "-q", "-b", "side", "v1")
    (r / "side.txt").write_text("side\n")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "side")
    git(r, "checkout", "-q", "-b", "bare", "main")
    git(r, "rm", "-q", "bench/workload.py")
    git(r, "commit", "-qm", "no tree")
    git(r, "checkout", "-q", "main")
    return r


OK = {"good": "v1", "bad": "main"}


def _plan(repo: Path, **kw: Any) -> Any:
    args = {**OK, "device": "cpu", "repo": repo, **kw}
    return plan_bisect("_busy", **args)


def test_a_valid_plan_names_the_commits_first_parent_oldest_first(repo: Path) -> None:
    p = _plan(repo, bad="HEAD", good="HEAD~2", threshold="10%", slices=3, pairs=2)
    assert [c.subject for c in p.commits] == ["two", "three"] and p.bad.subject == "three"
    assert p.good.subject == "one" and p.first_parent == p.good and p.good_spec == "HEAD~2"
    assert p.max_slices == 12 and p.threshold == pytest.approx(0.10)
    assert p.gate.base.tree.commit == p.good.sha and p.gate.new.tree.commit == p.bad.sha
    assert p.config_dict()["max_slices"] == 12 and "aa" not in p.config_dict()


BAD_INPUT = [
    ({"good": "nope"}, r"--good: unknown git ref 'nope'"),
    ({"bad": "nope"}, r"--bad: unknown git ref 'nope'"),
    ({"good": ""}, r"--good: an empty value"),
    ({"bad": " "}, r"--bad: an empty value"),
    ({"good": "--all"}, r"--good: '--all' is not a git ref"),
    ({"good": "main", "bad": "main"}, r"--good/--bad: GOOD \(main\) and BAD \(main\) are the same commit"),
    ({"good": "v1", "bad": "v1^{commit}"}, r"are the same commit"),
    ({"good": "main", "bad": "v1"}, r"--good: main .* is not an ancestor of BAD v1 .*did you swap them"),
    ({"good": "side", "bad": "main"}, r"--good: side .* is not an ancestor .*separate branches"),
    ({"good": "main", "bad": "bare"}, r"--bad: commit bare .* holds no dlbench source tree"),
    ({"threshold": "-5%"}, r"--threshold: expected a percentage such as 5% .*got '-5%'"),
    ({"threshold": "abc"}, r"--threshold: expected a percentage .*got 'abc'"),
    ({"slices": 2, "pairs": 2}, r"--slices: --slices 2 x --pairs 2 = 4 slice ratio\(s\), too few"),
    ({"slices": 6, "pairs": 1, "max_slices": 3}, r"--max-slices: expected an integer from --slices \(6\)"),
    ({"preset": "huge"}, r"--preset: unknown preset 'huge'"),
]


@pytest.mark.parametrize(("kw", "message"), BAD_INPUT, ids=[str(k) for k, _ in BAD_INPUT])
def test_bad_input_is_refused_naming_the_problem(repo: Path, kw: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        _plan(repo, **kw)


def test_outside_a_repository_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is not in a git repository"):
        _plan(tmp_path)


CLI_BAD = [
    (["--good", "nope"], "--good: unknown git ref 'nope'"),
    (["--good", "v1", "--bad", "nope"], "--bad: unknown git ref 'nope'"),
    (["--good", "main", "--bad", "main"], "are the same commit"),
    (["--good", "main", "--bad", "v1"], "is not an ancestor of BAD v1"),
    (["--good", "v1", "--threshold", "-5%"], "--threshold: expected a percentage"),
    (["--good", "v1", "--threshold", "abc"], "--threshold: expected a percentage"),
    (["--good", "v1", "--format", "html"], "--format: unknown format 'html'"),
    (["--good", "v1", "--out", "/nonexistent-dir/x.json"], "--out"),
    (["--bad", "HEAD"], "Missing option '--good'"),
]


@pytest.mark.parametrize(("args", "message"), CLI_BAD, ids=[m for _, m in CLI_BAD])
def test_the_cli_exits_2_before_any_gate(
    repo: Path, args: list[str], message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_gate(*a: Any, **k: Any) -> Any:
        raise AssertionError("a gate ran")

    monkeypatch.setattr(probe, "measure_trees", no_gate)
    monkeypatch.setenv("DLBENCH_SCRATCH", str(tmp_path / "scratch"))
    monkeypatch.chdir(repo)
    r = runner.invoke(app, ["bisect", "_busy", "--device", "cpu", *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "scratch").exists() or not os.listdir(tmp_path / "scratch")


def test_the_cli_refuses_an_unknown_scenario(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo)
    r = runner.invoke(app, ["bisect", "nosuchscenario", "--good", "v1"])
    assert r.exit_code == 2 and "unknown scenario 'nosuchscenario'" in r.output


# ------------------------------------------------------------------------------------------------
# the real gate's plumbing: exports, error mapping (measure_trees replaced)
# ------------------------------------------------------------------------------------------------
class _Owner:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.env = {"DLBENCH_OWNER": "bisect-test"}

    def child_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}


def test_the_gate_exports_commits_keeps_good_and_maps_failures_to_skips(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = _plan(repo, slices=6, pairs=1)
    own = _Owner(tmp_path / "owned")
    own.path.mkdir()
    gp = probe.GateProbe(plan.gate, plan.repo, own, keep={plan.good.sha})
    seen: dict[str, Any] = {}
    raising: list[BaseException] = []

    def fake_measure(gplan: Any, paths: Any, **kw: Any) -> Any:
        seen.update(plan=gplan, paths=dict(paths), **kw)
        assert (paths["base"] / "bench" / "workload.py").read_text() == "VERSION = 0\n"
        raise raising[0]

    monkeypatch.setattr(probe, "measure_trees", fake_measure)
    for exc, want in [
        (
            ConfigMismatch(
                "BASE and NEW built different configurations: kib: BASE 1, NEW 2. Pin them for both sides "
                "with -p KEY=VALUE, or compare them on purpose with --base-param/--new-param"
            ),
            "cannot compare: BASE and NEW built different configurations: kib: BASE 1, NEW 2. Pin them "
            "for both sides with -p KEY=VALUE",
        ),
        (UsageError("NEW[0]: unknown parameter 'x'"), "the tree rejects the configuration: NEW[0]: unknown"),
        (WorkerError(f"NEW[0] ({own.path}/tree-{plan.bad.sha[:12]}): ModuleNotFoundError: x"), "NEW[0] ("),
    ]:
        raising[:] = [exc]
        with pytest.raises(Unmeasurable) as info:
            gp(plan.good, plan.bad, 6, lambda m: None)
        assert info.value.reason.startswith(want), info.value.reason
        assert "--base-param" not in info.value.reason  # bisect has no such flag
        assert str(own.path) not in info.value.reason  # the export is named by its commit
        # GOOD's export stays for the next probe; the candidate's is gone
        assert sorted(os.listdir(own.path)) == [f"tree-{plan.good.sha[:12]}"]
    g = seen["plan"]
    assert g.base.tree.commit == plan.good.sha and g.new.tree.commit == plan.bad.sha
    assert g.options.slices == 6 and seen["owner"] is own
    assert seen["new_env"] == {"DLBENCH_PLANT_SLOWDOWN": None}  # the knob never reaches a candidate
    bare = history.describe(repo, git(repo, "rev-parse", "bare"))
    with pytest.raises(Unmeasurable, match=r"no bench/workload.py in .*not a dlbench source tree"):
        gp(plan.good, bare, 6, lambda m: None)
    assert sorted(os.listdir(own.path)) == [f"tree-{plan.good.sha[:12]}"]


def test_the_gate_goes_on_with_the_same_workers_when_asked(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``extend`` reaches ``measure_trees``: the search's answer to each result is its slice count."""
    plan = _plan(repo, slices=6, pairs=1)
    own = _Owner(tmp_path / "owned")
    own.path.mkdir()
    asked: list[int] = []

    def result(k: int) -> Any:  # what ``measurement`` reads of a GateResult
        est = RatioEstimate(1.0, 0.5, 2.0, None, "slices", k, k, 0.95)
        word = "inconclusive" if k < 24 else "same"
        return SimpleNamespace(
            verdict=word, estimate=est, plan=SimpleNamespace(options=SimpleNamespace(slices=k))
        )

    def fake_measure(gplan: Any, paths: Any, *, extend: Any, **kw: Any) -> Any:
        k = gplan.options.slices
        while True:
            res = result(k)
            more = extend(res)
            asked.append(k)
            if more is None:
                return res
            k = more

    monkeypatch.setattr(probe, "measure_trees", fake_measure)
    m = probe.GateProbe(plan.gate, plan.repo, own)(
        plan.good, plan.bad, 6, lambda m: 2 * m.slices if m.verdict == "inconclusive" else None
    )
    assert asked == [6, 12, 24] and m.verdict == "same" and m.slices == 24
    assert m.ci_low == 0.5 and m.ci_high == 2.0
