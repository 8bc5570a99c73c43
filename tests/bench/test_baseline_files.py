"""``dlbench baseline``'s files: this checkout's, checked before any work, refused when measured elsewhere.

No figure is computed and no gate is run here: every refusal happens before that work (the tests
make the work fail loudly if it starts).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.errors import UsageError
from bench.gate import baseline, perf

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "results" / "baseline"
runner = CliRunner()


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Computing figures or measuring a ratio fails the test: refusals must come first."""

    def boom(*a: Any, **k: Any) -> Any:
        raise AssertionError("the work started before the input was checked")

    monkeypatch.setattr(baseline, "compute_baseline", boom)
    monkeypatch.setattr(perf, "run_gate", boom)
    monkeypatch.setattr(perf, "measure_reference", boom)


def _doc(name: str = "baseline.json") -> dict[str, Any]:
    return json.loads((COMMITTED / name).read_text())


def _write(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def test_the_default_files_are_the_current_checkouts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clone = tmp_path / "clone"
    (clone / ".git").mkdir(parents=True)
    (clone / "src" / "deep").mkdir(parents=True)
    monkeypatch.chdir(clone / "src" / "deep")
    assert baseline.default_baseline_path() == clone / "results" / "baseline" / "baseline.json"
    assert baseline.default_perf_path() == clone / "results" / "baseline" / "perf.json"
    r = runner.invoke(app, ["baseline", "check"])
    assert r.exit_code == 2 and str(clone / "results" / "baseline" / "baseline.json") in r.stderr
    # update from this clone can never touch another checkout's (or the installed package's) file
    before = (COMMITTED / "baseline.json").read_bytes()
    r = runner.invoke(app, ["baseline", "update"])
    assert r.exit_code == 2 and "does not exist" in r.stderr and str(clone) in r.stderr
    assert (COMMITTED / "baseline.json").read_bytes() == before
    monkeypatch.chdir(tmp_path)  # no .git above: the working directory itself
    assert baseline.default_baseline_path() == tmp_path / "results" / "baseline" / "baseline.json"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(version=2), "version 2; this dlbench reads version 1"),
        (lambda d: d["cases"].update(x=[1, 2]), "case 'x' must be an object"),
        (
            lambda d: d["cases"]["attention/tiny/train/fp32"]["figures"].update({"flops.total": "12"}),
            "'flops.total' must be an integer",
        ),
        (
            lambda d: d["cases"]["attention/tiny/train/fp32"]["figures"].update({"flops.total": True}),
            "must be an integer",
        ),
        (
            lambda d: d["cases"]["attention/tiny/train/fp32"]["figures"].update({"flops.total": 1.5}),
            "must be an integer",
        ),
        (lambda d: d["cases"]["attention/tiny/train/fp32"].update(scenario=None), "'scenario' must be text"),
        (lambda d: d.update(torch_version=3), "'torch_version' must be text"),
    ],
)
def test_a_bad_baseline_is_refused_before_any_figure_is_computed(
    change: Any, message: str, tmp_path: Path, no_work: None
) -> None:
    doc = copy.deepcopy(_doc())
    change(doc)
    path = _write(tmp_path / "baseline.json", doc)
    r = runner.invoke(app, ["baseline", "check", "--path", str(path)])
    assert r.exit_code == 2 and message in r.stderr and "Traceback" not in r.output, r.output


@pytest.mark.parametrize("content", ["", "[" * 100_000, "\xff\xfe", "not json"])
def test_an_unreadable_baseline_is_one_line(content: str, tmp_path: Path, no_work: None) -> None:
    path = tmp_path / "baseline.json"
    path.write_bytes(content.encode("latin-1"))
    r = runner.invoke(app, ["baseline", "check", "--baseline", str(path)])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and str(path) in r.stderr, r.output


def test_a_baseline_of_another_torch_build_is_refused_unless_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = {**_doc(), "torch_version": "1.0.0+other"}
    path = _write(tmp_path / "baseline.json", doc)
    called: list[int] = []
    monkeypatch.setattr(baseline, "compute_baseline", lambda cases=baseline.CASES: called.append(1) or _doc())
    r = runner.invoke(app, ["baseline", "check", "--baseline", str(path)])
    assert r.exit_code == 2 and "torch build '1.0.0+other' there" in r.stderr and "--force" in r.stderr
    assert called == []
    r = runner.invoke(app, ["baseline", "check", "--baseline", str(path), "--force"])
    assert r.exit_code == 0 and called == [1] and "note: " in r.stdout and "1.0.0+other" in r.stdout


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["checks"]["attention"].update(reference=1e308),
            "'reference' must be a NEW/BASE ratio from 0.01 to 100",
        ),
        (lambda d: d["checks"]["attention"].update(reference=0.0001), "from 0.01 to 100"),
        (lambda d: d["checks"]["attention"].update(tolerance=5), "'tolerance' must be a fraction"),
        (lambda d: d.update(version="1"), "version '1', expected 1"),
        (lambda d: d.update(threads="2"), "'threads' must be a positive integer"),
        (lambda d: d.update(threads=64), "thread count 64 there"),
        (lambda d: d.update(machine="riscv64"), "machine kind 'riscv64' there"),
        (lambda d: d.update(torch_version="2.0.0+cu118"), "torch build '2.0.0+cu118' there"),
    ],
)
def test_perf_references_are_checked_and_their_machine_matched_before_any_gate_runs(
    change: Any, message: str, tmp_path: Path, no_work: None
) -> None:
    doc = copy.deepcopy(_doc("perf.json"))
    change(doc)
    path = _write(tmp_path / "perf.json", doc)
    r = runner.invoke(app, ["baseline", "ratios", "--perf", str(path)])
    assert r.exit_code == 2 and message in r.stderr and "Traceback" not in r.output, r.output


def test_forcing_a_foreign_reference_file_notes_every_difference(tmp_path: Path) -> None:
    doc = {**_doc("perf.json"), "threads": 64, "machine": "riscv64"}
    here = {"torch_version": doc["torch_version"], "threads": 2, "machine": "x86_64", "cpu_model": "x"}
    notes = baseline.check_measured_with(doc, here, path=tmp_path / "perf.json", flag="--perf", force=True)
    assert len(notes) == 2 and "thread count 64 there, 2 here" in notes[0] and "riscv64" in notes[1]
    with pytest.raises(UsageError, match="thread count 64 there, 2 here; machine kind"):
        baseline.check_measured_with(doc, here, path=tmp_path / "perf.json", flag="--perf")


def test_update_checks_its_target_first_and_writes_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_work: None
) -> None:
    (tmp_path / "folder.json").mkdir()
    r = runner.invoke(app, ["baseline", "update", "--path", str(tmp_path / "folder.json")])
    assert r.exit_code == 2 and "is a folder" in r.stderr  # refused before computing anything
    r = runner.invoke(app, ["baseline", "update", "--ratios", "--path", str(tmp_path / "folder.json")])
    assert r.exit_code == 2 and "is a folder" in r.stderr  # refused before measuring anything
    target = _write(tmp_path / "baseline.json", _doc())
    before = target.read_bytes()
    monkeypatch.setattr(baseline, "compute_baseline", lambda cases=baseline.CASES: _doc())

    def full(fd: int, data: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    r = runner.invoke(app, ["baseline", "update", "--path", str(target)])
    monkeypatch.undo()
    assert r.exit_code == 1 and "No space left on device" in r.stderr and "Traceback" not in r.output
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline.json", "folder.json"]  # no .tmp left


def test_another_cpu_model_is_a_note_never_a_refusal(tmp_path: Path) -> None:
    # CI machines of one kind and thread count come with different CPU models from job to job
    doc = {**_doc("perf.json"), "threads": 2, "machine": "x86_64", "cpu_model": "Intel Xeon"}
    here = {"torch_version": doc["torch_version"], "threads": 2, "machine": "x86_64", "cpu_model": "AMD EPYC"}
    notes = baseline.check_measured_with(doc, here, path=tmp_path / "perf.json", flag="--perf")
    assert len(notes) == 1 and "another CPU model ('Intel Xeon' there, 'AMD EPYC' here)" in notes[0]
    with pytest.raises(UsageError, match="thread count 2 there, 4 here"):  # the rest still refuses
        baseline.check_measured_with(
            doc, {**here, "threads": 4}, path=tmp_path / "perf.json", flag="--perf"
        )
