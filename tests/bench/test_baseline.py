"""``dlbench baseline check``: exact FLOPs and tracked bytes pass on this tree, and fail naming the figure."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.errors import UsageError
from bench.gate import baseline

runner = CliRunner()
ATTN = "attention/tiny/train/fp32"


@pytest.fixture(scope="module")
def current() -> dict[str, Any]:
    """The figures of this tree, computed once for the module."""
    return baseline.compute_baseline()


def _write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    p = tmp_path / "baseline.json"
    p.write_text(json.dumps(doc))
    return p


def test_committed_baseline_matches_this_tree() -> None:
    r = runner.invoke(app, ["baseline", "check"])
    assert r.exit_code == 0, r.output
    assert "baseline check passed" in r.output
    for case in baseline.CASES:
        assert f"ok   {case.name}" in r.output


def test_figures_are_what_the_closed_forms_and_the_cases_say(current: dict[str, Any]) -> None:
    cases = current["cases"]
    assert set(cases) == {c.name for c in baseline.CASES}
    figs = cases[ATTN]["figures"]
    assert figs["flops.total"] == figs["flops.forward"] + figs["flops.backward"] + figs["flops.optimizer"]
    assert figs["mem.grads_bytes"] == figs["mem.params_bytes"]  # fp32 grads, one per parameter
    # checkpointing recomputes the forward in backward: more FLOPs, the same parameters
    plain, ckpt = (
        cases["encoder/tiny/train/fp32"]["figures"],
        cases["encoder/tiny/train/fp32/ckpt=full"]["figures"],
    )
    assert (
        ckpt["flops.backward"] > plain["flops.backward"] and ckpt["flops.forward"] == plain["flops.forward"]
    )
    assert ckpt["mem.params_bytes"] == plain["mem.params_bytes"]
    assert all(isinstance(v, int) for c in cases.values() for v in c["figures"].values())


@pytest.mark.parametrize("figure", ["flops.forward", "mem.backward.peak_bytes", "mem.optimizer_bytes"])
def test_a_changed_figure_fails_and_is_named(
    figure: str, current: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    planted = copy.deepcopy(current)
    planted["cases"][ATTN]["figures"][figure] += 4096
    path = _write(tmp_path, planted)
    monkeypatch.setattr(baseline, "compute_baseline", lambda cases=baseline.CASES: current)
    r = runner.invoke(app, ["baseline", "check", "--baseline", str(path)])
    assert r.exit_code == 1, r.output
    assert f"FAIL {ATTN}" in r.output and figure in r.output
    assert "baseline check FAILED: 1 figure(s) differ" in r.output
    d = json.loads(runner.invoke(app, ["baseline", "check", "--baseline", str(path), "--json"]).output)
    assert d["ok"] is False and [(x["case"], x["figure"]) for x in d["differences"]] == [(ATTN, figure)]


def test_a_real_change_in_the_code_under_test_fails(
    current: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the same case name, one more token per sequence: FLOPs and activation bytes must move
    path = _write(tmp_path, {**current, "cases": {ATTN: current["cases"][ATTN]}})
    case = dataclasses.replace(baseline.CASES[0], params={"seq_len": 17})
    assert case.name == ATTN
    report = baseline.check_baseline(path, cases=[case])
    assert not report.ok
    changed = {d.figure for d in report.differences}
    assert {"flops.forward", "flops.backward", "mem.activations_bytes"} <= changed
    assert "mem.params_bytes" not in changed  # the weights do not depend on the sequence length
    text = "\n".join(report.lines())
    assert "flops.forward" in text and "baseline" in text


def test_cases_added_or_dropped_are_differences(current: dict[str, Any]) -> None:
    fewer = {**current, "cases": {k: v for k, v in current["cases"].items() if k != ATTN}}
    diffs, _ = baseline.compare(fewer, current)
    assert diffs and all(d.case == ATTN and d.baseline is None for d in diffs)
    diffs, _ = baseline.compare(current, fewer)
    assert diffs and all(d.case == ATTN and d.current is None for d in diffs)
    assert "no longer computed" in diffs[0].describe()


def test_missing_or_foreign_baseline_exits_2(tmp_path: Path) -> None:
    r = runner.invoke(app, ["baseline", "check", "--baseline", str(tmp_path / "none.json")])
    assert r.exit_code == 2 and "dlbench baseline update" in r.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "something-else"}))
    with pytest.raises(UsageError, match="not a dlbench baseline"):
        baseline.load_baseline(bad)


def test_update_writes_a_file_that_then_checks(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    cases = [baseline.CASES[0]]
    written, data = baseline.update_baseline(path, cases=cases)
    assert written == path and data["kind"] == baseline.KIND and list(data["cases"]) == [ATTN]
    assert baseline.check_baseline(path, cases=cases).ok
