"""``dlbench gate``: interleaving order, the worker protocol, trees, cleanup, bad input, a tiny real run.

No timed assertion anywhere: the machine is shared, so tests check the order of slices, the
protocol, the exit codes, that workers and worktrees are gone afterwards, and exact arithmetic
(planted slowdown on a fake clock, verdicts on fake workers).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.errors import UsageError
from bench.gate import interleave, trees, worker
from bench.gate.interleave import GateResult, parse_threshold, plan_gate, run_gate, slice_order
from bench.gate.worker import PLANT_ENV_VAR, WorkerClient, WorkerError, run_slice
from bench.owned import MARKER_ENV

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# ------------------------------------------------------------------------------------------------
# interleaving order and the driver's arithmetic, on fake workers (no processes)
# ------------------------------------------------------------------------------------------------
def test_slice_order_alternates_per_round_and_between_pairs() -> None:
    for pair in range(3):
        orders = [slice_order(r, pair) for r in range(8)]
        for a, b in zip(orders, orders[1:], strict=False):
            assert a != b  # every round flips the order of a pair
        assert sum(o[0] == "base" for o in orders) == 4  # each side first equally often
    for r in range(4):
        assert slice_order(r, 0) != slice_order(r, 1)  # in one round the two pairs go opposite ways
    assert slice_order(0, 0) == ("base", "new") and slice_order(-1, 0) == ("new", "base")


class FakeClient:
    """Stands in for ``WorkerClient``: no process; each slice returns the side's fixed step time."""

    log: list[tuple[str, int]] = []  # (worker name, slice number of that worker)
    envs: dict[str, Any] = {}
    closed: list[str] = []
    times = {"base": 10.0, "new": 10.0}

    def __init__(self, name: str, tree: Path, config: dict[str, Any], *, env: Any = None) -> None:
        self.name, self.tree, self.config = name, Path(tree), config
        self.side = name.split("[")[0].lower()
        self.pid = 1_000_000 + len(FakeClient.envs)
        FakeClient.envs[name] = dict(env or {})
        self.n = 0
        self.ready: dict[str, Any] = {}

    def wait_ready(self, timeout_s: float = 0) -> dict[str, Any]:
        self.ready = {
            "event": "ready",
            "pid": self.pid,
            "bench_file": str(self.tree / "bench" / "__init__.py"),
        }
        return self.ready

    def slice(self, seconds: float) -> list[float]:
        FakeClient.log.append((self.name, self.n))
        self.n += 1
        t = FakeClient.times[self.side]
        return [t, t * 1.01, t * 0.99]

    def close(self, *, hurry: bool = False) -> None:
        FakeClient.closed.append(self.name)


@pytest.fixture
def fake_workers(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    FakeClient.log, FakeClient.envs, FakeClient.closed = [], {}, []
    FakeClient.times = {"base": 10.0, "new": 10.0}
    monkeypatch.setattr(interleave, "WorkerClient", FakeClient)
    return FakeClient


def _plan(**kw: Any) -> interleave.GatePlan:
    kw.setdefault("device", "cpu")
    return plan_gate("_linear", **kw)


def test_driver_interleaves_discards_warmup_and_closes_everyone(fake_workers: type[FakeClient]) -> None:
    res = run_gate(_plan(aa=True, slices=3, pairs=2))
    names = [n for n, _ in fake_workers.log]
    # warm-up round (r = -1) then 3 rounds; per round pair 0 then pair 1, each in its alternating order
    expected: list[str] = []
    for r in range(-1, 3):
        for w in range(2):
            expected += [f"{side.upper()}[{w}]" for side in slice_order(r, w)]
    assert names == expected
    assert len(res.slices) == 3 * 2  # the warm-up slices are not among the ratios
    assert [(s.round, s.pair) for s in res.slices] == [(r, w) for r in range(3) for w in range(2)]
    assert all(s.order == "-".join(slice_order(s.round, s.pair)) for s in res.slices)
    assert sorted(fake_workers.closed) == sorted(["BASE[0]", "NEW[0]", "BASE[1]", "NEW[1]"])
    # the planted slowdown never reaches BASE: its environment removes the variable; every worker
    # carries the gate's owner marker (bench.owned), the same on both sides
    marks = {env.get(MARKER_ENV) for env in fake_workers.envs.values()}
    assert len(marks) == 1 and str(marks.pop()).startswith("gate-")
    assert all(env[PLANT_ENV_VAR] is None for n, env in fake_workers.envs.items() if n.startswith("BASE"))
    assert all(PLANT_ENV_VAR not in env for n, env in fake_workers.envs.items() if n.startswith("NEW"))


def test_verdicts_and_exit_codes_from_slice_ratios(fake_workers: type[FakeClient]) -> None:
    fake_workers.times = {"base": 10.0, "new": 12.0}
    res = run_gate(_plan(aa=True, slices=6))
    assert math.isclose(res.estimate.ratio, 1.2) and res.verdict == "slower" and res.exit_code == 1
    fake_workers.times = {"base": 10.0, "new": 10.0}
    res = run_gate(_plan(aa=True, slices=6))
    assert res.verdict == "same" and res.exit_code == 0
    fake_workers.times = {"base": 10.0, "new": 8.0}
    res = run_gate(_plan(aa=True, slices=6))
    assert res.verdict == "faster" and res.exit_code == 0
    # too few slices for a CI (unbounded: it could never say slower) is refused before anything starts
    with pytest.raises(UsageError, match=r"--slices 1 x --pairs 2 = 2 slice ratio\(s\).*at least 6"):
        _plan(aa=True, slices=1, pairs=2)
    # the fewest accepted: 6 ratios, whose CI is (min, max); a noisy slice makes it inconclusive
    fake_workers.times = {"base": 10.0, "new": 12.0}
    res = run_gate(_plan(aa=True, slices=3, pairs=2))
    assert res.verdict == "slower" and len(res.slices) == 6 and res.estimate.ci_low == pytest.approx(1.2)


def test_a_worker_error_closes_every_worker(
    fake_workers: type[FakeClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(self: FakeClient, seconds: float) -> list[float]:
        if self.name == "NEW[1]":
            raise WorkerError("NEW[1] worker (pid 1) died on 'slice' (signal SIGKILL)")
        return [1.0]

    monkeypatch.setattr(FakeClient, "slice", boom)
    with pytest.raises(WorkerError, match=r"NEW\[1\]"):
        run_gate(_plan(aa=True, slices=3))
    assert len(fake_workers.closed) == 4


# ------------------------------------------------------------------------------------------------
# input checks (nothing starts)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [("5%", 0.05), ("0.05", 0.05), (0.1, 0.1), ("12.5%", 0.125), ("0%", 0.0), (None, 0.05)],
)
def test_parse_threshold(value: Any, expected: float) -> None:
    assert math.isclose(parse_threshold(value), expected)


@pytest.mark.parametrize("value", ["5", "abc", "-5%", "nan", "inf", "2000%", ""])
def test_bad_threshold(value: str) -> None:
    with pytest.raises(UsageError, match="--threshold"):
        parse_threshold(value)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["gate", "nosuch"], "unknown scenario 'nosuch'"),
        (["gate", "_linear", "--aa", "--threshold", "abc"], "--threshold"),
        (["gate", "_linear", "--aa", "--threshold", "5"], "--threshold"),
        (["gate", "_linear"], "BASE and NEW are the same tree"),
        (
            ["gate", "_linear", "--base", str(ROOT), "--new", str(ROOT / "bench" / "..")],
            "BASE and NEW are the same",
        ),
        (["gate", "_linear", "--base", "no-such-ref-xyz"], "--base: unknown git ref 'no-such-ref-xyz'"),
        (["gate", "_linear", "--new", "/"], "--new: directory '/' is not a dlbench source tree"),
        (["gate", "_linear", "--aa", "-p", "batch_size=1,2"], "give one value"),
        (["gate", "_linear", "--aa", "-p", "colour=red"], "no parameter 'colour'"),
        (["gate", "_linear", "--new-param", "batch_size=0"], "--new-param"),
        (["gate", "_linear", "--new-param", "in_features"], "--new-param: expected KEY=VALUE"),
        (["gate", "_linear", "--aa", "--preset", "huge"], "--preset: unknown preset 'huge'"),
        (["gate", "_linear", "--aa", "--mode", "infer"], "--mode: unknown value 'infer'"),
        (["gate", "_linear", "--new-param", "precision=fp8"], "--new-param precision: unknown value 'fp8'"),
        (["gate", "_linear", "--aa", "--mode", "forward", "--checkpointing", "full"], "checkpointing"),
        (["gate", "_linear", "--aa", "--slices", "0"], "--slices"),
        (["gate", "_linear", "--aa", "--pairs", "0"], "--pairs"),
        (["gate", "_linear", "--aa", "--slice-time", "0"], "--slice-time"),
        (["gate", "_linear", "--aa", "--format", "xml"], "--format"),
        (["gate", "_linear", "--aa", "--device", "tpu"], "--device"),
    ],
)
def test_bad_input_exits_2_naming_the_argument(
    args: list[str], needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_workers(*a: Any, **k: Any) -> None:
        raise AssertionError("a worker was started despite bad input")

    monkeypatch.setattr(interleave, "WorkerClient", no_workers)
    monkeypatch.chdir(ROOT)
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert needle in r.output
    assert len(r.output.strip().splitlines()) == 1  # one line


def test_same_tree_with_differing_params_is_fine() -> None:
    plan = plan_gate("attention", base_params=["impl=torch"], new_params=["impl=dlcore"], device="cpu")
    assert plan.base.overrides == {"impl": "torch"} and plan.new.overrides == {"impl": "dlcore"}
    plan = plan_gate("encoder", new_params=["checkpointing=full"], device="cpu")
    assert plan.base.checkpointing == "none" and plan.new.checkpointing == "full"
    assert "checkpointing=full" in plan.new.label
    with pytest.raises(UsageError, match="same tree"):  # an explicit default is no difference
        plan_gate("attention", new_params=["impl=dlcore"], device="cpu")


# ------------------------------------------------------------------------------------------------
# the worker: planted slowdown, protocol, crashes
# ------------------------------------------------------------------------------------------------
def test_worker_config_passes_run_options_apart_from_scenario_parameters() -> None:
    # `--new-param checkpointing=full` is a run option: the worker must not see it as a scenario parameter
    plan = plan_gate("encoder", new_params=["checkpointing=full", "seq_len=32"], device="cpu")
    cfg = plan.worker_config(plan.new)
    assert cfg["params"] == {"seq_len": 32} and cfg["checkpointing"] == "full"
    assert (
        plan.worker_config(plan.base)["params"] == {}
        and plan.worker_config(plan.base)["checkpointing"] == "none"
    )


def test_planted_slowdown_is_exactly_proportional_on_a_fake_clock() -> None:
    now = [0]

    def clock() -> int:
        now[0] += 1  # reading the clock costs 1 ns
        return now[0]

    def step() -> None:
        now[0] += 1000

    plain = run_slice(step, 1e-5, clock=clock)
    planted = run_slice(step, 1e-5, plant=0.5, clock=clock)
    assert plain and planted
    assert all(math.isclose(t, 1001e-6) for t in plain)  # ms: the step plus one clock read
    # the busy-wait is half the sample's own time, inside the timed interval (+ the clock reads)
    assert all(1.5 * 1001e-6 <= t <= 1.5 * 1001e-6 + 3e-6 for t in planted)
    blocked = run_slice(step, 1e-5, calls_per_sample=4, clock=clock)
    assert all(math.isclose(t, 4001e-6 / 4) for t in blocked)  # per call


def test_plant_fraction_parsing() -> None:
    assert worker.plant_fraction({}) == 0.0
    assert worker.plant_fraction({PLANT_ENV_VAR: "0.10"}) == 0.10
    for bad in ("-1", "x", "nan"):
        with pytest.raises(ValueError, match=PLANT_ENV_VAR):
            worker.plant_fraction({PLANT_ENV_VAR: bad})


def test_calls_per_sample_rule() -> None:
    assert worker.calls_per_sample_for(1e-3) == 1
    assert worker.calls_per_sample_for(10e-6) == 20
    assert worker.calls_per_sample_for(1e-9) == worker.MAX_CALLS_PER_SAMPLE


LINEAR = {"scenario": "_linear", "preset": "tiny", "mode": "train", "precision": "fp32", "device": "cpu"}


def test_worker_protocol_round_trip() -> None:
    with WorkerClient("NEW[0]", ROOT, LINEAR, env={PLANT_ENV_VAR: "0.25"}) as c:
        ready = c.wait_ready(120)
        assert ready["event"] == "ready" and ready["protocol"] == worker.PROTOCOL
        assert ready["pid"] == c.pid and Path(ready["bench_file"]).is_relative_to(ROOT)
        assert ready["plant_slowdown"] == 0.25 and ready["calls_per_sample"] >= 1
        assert c.request({"cmd": "ping"}, 30) == {"ok": True, "pong": True}
        times = c.slice(0.02)
        assert times and all(t > 0 for t in times)
        with pytest.raises(WorkerError, match="unknown command"):
            c.request({"cmd": "dance"}, 30)
        assert c.slice(0.01)  # still serving after an error reply
        pid = c.pid
    assert not _alive(pid)


def test_worker_usage_error_is_reported_as_usage() -> None:
    with WorkerClient("BASE[0]", ROOT, {**LINEAR, "params": {"colour": "red"}}) as c:
        with pytest.raises(worker.WorkerUsageError, match="colour"):
            c.wait_ready(120)


def test_worker_that_crashes_while_building_is_a_clean_error_with_no_orphan() -> None:
    pids: list[int] = []
    plan = plan_gate(
        "_crash", base_params=["where=never"], new_params=["where=step"], device="cpu", slices=6, pairs=1
    )
    with pytest.raises(WorkerError) as info:
        run_gate(plan, on_workers=pids.extend)
    msg = str(info.value)
    assert "NEW[0] worker" in msg and "died while building its step" in msg and "SIGABRT" in msg
    assert "its stderr ends with" in msg
    assert len(pids) == 2 and not any(_alive(p) for p in pids)


def test_worker_killed_mid_run_is_a_clean_error_with_no_orphan() -> None:
    pids: list[int] = []

    def kill_new_after_warmup(stage: str, done: int, total: int) -> None:
        if stage == "measure" and done == 3:  # BASE[0]'s first measured slice; NEW[0]'s comes next
            os.kill(pids[1], signal.SIGKILL)  # pids: BASE[0], NEW[0]

    plan = plan_gate("_linear", aa=True, device="cpu", slices=6, slice_time_s=0.02, pairs=1)
    with pytest.raises(WorkerError, match=r"NEW\[0\] worker \(pid \d+\) died on 'slice' \(signal SIGKILL\)"):
        run_gate(plan, on_workers=pids.extend, progress=kill_new_after_warmup)
    assert not any(_alive(p) for p in pids)


def test_ctrl_c_kills_the_workers() -> None:
    pids: list[int] = []

    def interrupt(stage: str, done: int, total: int) -> None:
        if stage == "measure":
            raise KeyboardInterrupt

    plan = plan_gate("_linear", aa=True, device="cpu", slices=6, slice_time_s=0.02, pairs=1)
    with pytest.raises(KeyboardInterrupt):
        run_gate(plan, on_workers=pids.extend, progress=interrupt)
    assert len(pids) == 2 and not any(_alive(p) for p in pids)


# ------------------------------------------------------------------------------------------------
# trees
# ------------------------------------------------------------------------------------------------
def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    (r / "bench").mkdir(parents=True)
    _git(r, "init", "-q")
    (r / "bench" / "workload.py").write_text("VERSION = 1\n")
    _git(r, "add", "-A")
    _git(r, "commit", "-qm", "one")
    (r / "bench" / "workload.py").write_text("VERSION = 2\n")
    _git(r, "commit", "-qam", "two")
    return r


def _worktrees(repo: Path) -> list[str]:
    return [
        ln for ln in _git(repo, "worktree", "list", "--porcelain").splitlines() if ln.startswith("worktree ")
    ]


def _entries(root: Path) -> list[str]:
    return sorted(os.listdir(root)) if root.exists() else []


def test_git_ref_is_exported_into_an_owned_folder_and_removed(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DLBENCH_SCRATCH", str(tmp_path / "scratch"))
    tree = trees.resolve_tree("HEAD~1", flag="--base", repo=repo)
    assert tree.kind == "ref" and tree.commit == _git(repo, "rev-parse", "HEAD~1").strip()
    before = sorted(p.name for p in (repo / ".git").iterdir())
    with trees.materialize(tree) as path:
        assert (path / "bench" / "workload.py").read_text() == "VERSION = 1\n"
        assert path.is_relative_to(tmp_path / "scratch") and not (path / ".git").exists()
        seen = path
    assert not seen.exists() and _entries(tmp_path / "scratch") == []
    # the user's repository was only read: no worktree entry, no lock, nothing new in .git
    assert len(_worktrees(repo)) == 1 and not (repo / ".git" / "worktrees").exists()
    assert sorted(p.name for p in (repo / ".git").iterdir()) == before
    assert (repo / "bench" / "workload.py").read_text() == "VERSION = 2\n"  # the checkout is untouched


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_the_export_is_removed_on_error_and_ctrl_c(
    repo: Path, exc: type[BaseException], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DLBENCH_SCRATCH", str(tmp_path / "scratch"))
    tree = trees.resolve_tree("HEAD", flag="--base", repo=repo)
    seen: list[Path] = []
    with pytest.raises(exc), trees.materialize(tree) as path:
        seen.append(path)
        raise exc()
    assert not seen[0].exists() and _entries(tmp_path / "scratch") == []


def test_an_empty_base_or_new_is_refused(repo: Path) -> None:
    for flag in ("--base", "--new"):
        for empty in ("", "  "):
            with pytest.raises(UsageError, match=rf"{flag}: an empty value.*merge-base"):
                trees.resolve_tree(empty, flag=flag, repo=repo)
    r = runner.invoke(app, ["gate", "_linear", "--base", "", "--new", "HEAD"])
    assert r.exit_code == 2 and "--base: an empty value" in r.output


def test_a_users_worktree_whose_folder_is_moved_away_stays_intact(
    repo: Path, tmp_path: Path, fake_workers: type[FakeClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate never prunes: a user's worktree with staged work, its folder briefly elsewhere."""
    monkeypatch.setenv("DLBENCH_SCRATCH", str(tmp_path / "scratch"))
    wt, away = tmp_path / "wt2", tmp_path / "wt2-away"
    _git(repo, "worktree", "add", "-q", str(wt), "HEAD~1")
    (wt / "staged.txt").write_text("work in progress\n")
    _git(wt, "add", "staged.txt")
    wt.rename(away)  # e.g. on a disk that is not mounted right now
    entry = repo / ".git" / "worktrees" / "wt2"
    assert entry.is_dir() and "prunable" in _git(repo, "worktree", "list", "--porcelain")
    plan = plan_gate(
        "_linear", base="HEAD~1", new=str(repo), device="cpu", aa=True, slices=6, pairs=1, repo=repo
    )
    res = run_gate(plan)
    assert res.verdict == "same" and not _entries(tmp_path / "scratch")
    assert entry.is_dir() and f"worktree {wt}" in _git(repo, "worktree", "list", "--porcelain")
    away.rename(wt)
    assert _git(wt, "diff", "--cached", "--name-only").split() == ["staged.txt"]  # its staged state


def test_directories_and_identity(repo: Path, tmp_path: Path) -> None:
    here = trees.resolve_tree(None, flag="--new", repo=repo)
    assert here.kind == "dir" and here.path == repo.resolve() and here.spec == "."
    again = trees.resolve_tree(str(repo), flag="--base", repo=tmp_path)
    assert trees.same_tree(here, again)
    head = trees.resolve_tree("HEAD", flag="--base", repo=repo)
    assert not trees.same_tree(here, head)  # a directory may hold uncommitted changes
    with pytest.raises(UsageError, match="--base: unknown git ref 'nope'"):
        trees.resolve_tree("nope", flag="--base", repo=repo)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="--new: directory .* is not a dlbench source tree"):
        trees.resolve_tree(str(tmp_path / "empty"), flag="--new", repo=repo)
    with pytest.raises(UsageError, match="not in a git repository"):
        trees.resolve_tree("HEAD", flag="--base", repo=tmp_path / "empty")


# ------------------------------------------------------------------------------------------------
# a tiny real gate run, A/A (the verdict's value is not asserted: the machine is shared)
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_real_aa_gate_returns_a_verdict_and_json(tmp_path: Path) -> None:
    out = tmp_path / "gate.json"
    args = ["gate", "attention", "--preset", "tiny", "--aa", "--device", "cpu", "--slices", "4",
            "--slice-time", "0.1", "--format", "json", "--out", str(out)]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code in (0, 1), r.output
    d = json.loads(r.stdout)
    assert d == json.loads(out.read_text())
    for key in ("kind", "scenario", "config", "threshold", "ratio", "ci_low", "ci_high", "p_value", "verdict",
                "slices", "base", "new", "elapsed_s"):  # fmt: skip
        assert key in d, key
    assert d["kind"] == "dlbench-gate" and d["scenario"] == "attention" and d["threshold"] == 0.05
    assert d["verdict"] in ("faster", "slower", "same", "inconclusive")
    assert r.exit_code == (1 if d["verdict"] == "slower" or d["fail_closed"] else 0)
    assert len(d["slices"]) == 4 * 2 and d["n_slices"] == 8  # 2 pairs x 4 slices
    assert d["config"]["preset"] == "tiny" and d["config"]["mode"] == "train"
    assert d["base"]["kind"] == "dir" and len(d["base"]["workers"]) == 2
    assert all(s["ratio"] > 0 and s["base_n"] >= 1 for s in d["slices"])
    md = interleave.render_markdown(d)
    assert "NEW/BASE" in md and d["verdict"] in md


def test_gate_result_json_is_strict(fake_workers: type[FakeClient]) -> None:
    res: GateResult = run_gate(_plan(aa=True, slices=4))
    d = res.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d


# ------------------------------------------------------------------------------------------------
# fail closed: one test per rule
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["--slices", "4", "--pairs", "1"],
            "--slices 4 x --pairs 1 = 4 slice ratio(s), too few for a 95% CI",
        ),
        (["--slices", "2"], "--slices 2 x --pairs 2 = 4 slice ratio(s)"),
        (["--slices", "5", "--pairs", "1"], "use --slices 6 or more"),
    ],
)
def test_a_slice_count_that_cannot_bound_the_ci_is_refused(
    args: list[str], needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_workers(*a: Any, **k: Any) -> None:
        raise AssertionError("a worker was started despite bad input")

    monkeypatch.setattr(interleave, "WorkerClient", no_workers)
    monkeypatch.chdir(ROOT)
    r = runner.invoke(app, ["gate", "_linear", "--aa", *args])
    assert r.exit_code == 2 and needle in r.output, r.output


def test_a_planted_2x_slowdown_never_exits_0_at_any_accepted_setting(fake_workers: type[FakeClient]) -> None:
    """Every slices x pairs the gate accepts says "slower" (exit 1) for a 2x NEW; the rest are refused."""
    fake_workers.times = {"base": 10.0, "new": 20.0}
    accepted = 0
    for pairs in (1, 2, 3, 4):
        for slices in range(1, 9):
            try:
                plan = _plan(aa=True, slices=slices, pairs=pairs)
            except UsageError as exc:
                assert slices * pairs < interleave.min_slices() and "--slices" in str(exc)
                continue
            accepted += 1
            res = run_gate(plan)
            assert res.verdict == "slower" and res.exit_code == 1, (slices, pairs, res.verdict)
    assert accepted == 4 * 8 - 5 - 2 - 1 - 1  # refused: pairs 1 x 1-5 slices, 2 x 1-2, 3 x 1, 4 x 1


def test_the_sides_must_build_the_same_configuration_unless_asked() -> None:
    """A tree that changed a default is refused (exit 2) instead of being reported faster."""
    built = {
        "base": {"preset": "tiny", "mode": "train", "precision": "fp32", "checkpointing": "none",
                 "device": "cpu", "params": {"batch_size": 4, "in_features": 64}},
        "new": {"preset": "tiny", "mode": "train", "precision": "fp32", "checkpointing": "none",
                "device": "cpu", "params": {"batch_size": 4, "in_features": 32, "bias": True}},
    }  # fmt: skip
    plan = _plan(aa=True, slices=6)
    with pytest.raises(interleave.ConfigMismatch, match=r"in_features: BASE 64, NEW 32.*-p KEY=VALUE"):
        interleave.check_built(plan, built)
    asked = _plan(new_params=["in_features=32"], slices=6)  # compared on purpose: fine
    assert interleave.check_built(asked, built) == ["only NEW has parameter bias=True"]
    other = {**built, "new": {**built["new"], "precision": "amp-bf16", "params": built["base"]["params"]}}
    with pytest.raises(interleave.ConfigMismatch, match="precision: BASE 'fp32', NEW 'amp-bf16'"):
        interleave.check_built(plan, other)


@pytest.mark.slow
def test_real_workers_report_what_they_built_and_a_planted_2x_fails_at_the_fewest_slices(
    tmp_path: Path,
) -> None:
    """The fewest accepted ratios (6), real workers, NEW 2x slower: exit 1, both builds shown."""
    out = tmp_path / "g.json"
    args = ["gate", "_linear", "--aa", "--device", "cpu", "--pairs", "1", "--slices", "6",
            "--slice-time", "0.02", "--format", "json", "--out", str(out)]  # fmt: skip
    r = runner.invoke(app, args, env={PLANT_ENV_VAR: "1.0"})
    assert r.exit_code == 1, r.output
    d = json.loads(out.read_text())
    # "slower", or -- when one noisy slice widens the CI of 6 ratios past 1 -- inconclusive with the
    # median beyond the threshold, which fails closed: exit 1 either way
    assert d["n_slices"] == 6 and d["exit_code"] == 1 and d["ratio"] > 1.05
    assert d["verdict"] == "slower" or (d["verdict"] == "inconclusive" and d["fail_closed"])
    for side in ("base", "new"):
        assert d[side]["built"]["params"] == {"batch_size": 4, "in_features": 64, "out_features": 32}
        assert d[side]["built"]["mode"] == "train" and d[side]["built"]["preset"] == "default"
    assert "preset=default train fp32" in interleave.render_markdown(d)


def test_an_unwritable_out_is_refused_before_any_worker_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_workers(*a: Any, **k: Any) -> None:
        raise AssertionError("a worker was started despite bad input")

    monkeypatch.setattr(interleave, "WorkerClient", no_workers)
    monkeypatch.chdir(ROOT)
    (tmp_path / "d").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "x.json")
    for out, needle in (
        (tmp_path / "nope" / "g.json", "does not exist"),
        (tmp_path / "d", "is a folder"),
        (tmp_path / "link", "symbolic link"),
    ):
        r = runner.invoke(app, ["gate", "_linear", "--aa", "--out", str(out)])
        assert r.exit_code == 2 and "--out" in r.output and needle in r.output, r.output
