"""``dlbench compare --metric energy`` on results with known joules (``energy_helpers.write_energy``).

The ratio is of ``energy_j_per_item``; one reading a side gives it without a CI, per-repeat
energies give Welch t on their logs (checked against a float64 computation here); empty cells are
left out with their reason; figures from different counters are never divided.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
from scipy import stats as sps
from typer.testing import CliRunner

from bench.cli import app
from bench.report.compare_format import pair_summary, to_markdown
from bench.results.compare import compare, compare_by
from tests.bench.energy_helpers import ITEMS, NO_COUNTER, NVML, RAPL, as_ddp, write_energy

TRAIN, FWD = ("train", "fp32"), ("forward", "fp32")
TRAIN_AMP, FWD_AMP = ("train", "amp-bf16"), ("forward", "amp-bf16")


def pairs_of(comparison):
    return {p.label: p for p in comparison.pairs}


def test_one_reading_a_side_gives_the_exact_ratio_and_no_ci(tmp_path: Path) -> None:
    base = write_energy(tmp_path / "base.csv", {TRAIN: 2.0, FWD: 0.8})
    new = write_energy(tmp_path / "new.csv", {TRAIN: 1.5, FWD: 1.0})
    c = compare([base], [new], metric="energy")
    train, fwd = pairs_of(c)["attention train fp32"], pairs_of(c)["attention forward fp32"]
    assert train.estimate.ratio == 0.75 and fwd.estimate.ratio == 1.0 / 0.8
    assert train.base_value == 2.0 and train.new_value == 1.5 and train.unit == "J/item"
    for p in (train, fwd):
        # no within-process spread to build an interval from: the CI is unbounded, never zero-width
        assert p.estimate.ci_low == 0.0 and p.estimate.ci_high == math.inf and p.estimate.p_value is None
        assert p.verdict == "inconclusive" and p.ci_covers == "one-reading"
        assert "no within-process spread" in p.note
        d = p.to_dict()
        assert d["ci_high"] is None and d["ratio"] == p.estimate.ratio
    assert pair_summary(train.to_dict(), "energy").startswith("1.33x less energy [CI unbounded],")
    assert pair_summary(fwd.to_dict(), "energy").startswith("1.25x more energy [CI unbounded],")
    md = to_markdown(c)
    assert "energy per item (lower is better)" in md and "one-reading" in md
    assert any("energy_source=rapl-package, energy_scope=cpu-package" in n for n in c.notes)
    assert any("whole CPU package" in n for n in c.notes)  # RAPL's caveat, said once


def test_by_precision_and_per_item_not_per_step(tmp_path: Path) -> None:
    rows = write_energy(tmp_path / "r.csv", {TRAIN: 2.0, TRAIN_AMP: 1.0, FWD: 0.8, FWD_AMP: 0.6})
    c = compare_by([rows], "precision", metric="energy")
    got = {p.label: p.estimate.ratio for p in c.pairs}
    assert got == {"attention train amp-bf16": 0.5, "attention forward amp-bf16": 0.6 / 0.8}

    # twice the batch: twice the joules per step, the same joules per item -> the ratio is 1
    def bs8(row: dict[str, str]) -> None:
        row.update(batch_size="8", items_per_step=str(2 * ITEMS), config_key=row["config_key"] + "|bs8")
        row["energy_j_per_step"] = repr(2.0 * ITEMS * 2)

    big = write_energy(tmp_path / "bs8.csv", {TRAIN: 2.0}, edit=bs8)
    small = write_energy(tmp_path / "bs4.csv", {TRAIN: 2.0})
    (p,) = compare_by([small, big], "batch_size", metric="energy").pairs
    assert p.estimate.ratio == 1.0 and p.base_value == p.new_value == 2.0


def test_repeats_give_the_welch_ci_of_a_float64_hand_computation(tmp_path: Path) -> None:
    b_rep, n_rep = [2.0, 2.2, 1.9, 2.1], [1.5, 1.62, 1.45]
    base = write_energy(tmp_path / "base.csv", {TRAIN: b_rep, FWD: 0.8})
    new = write_energy(tmp_path / "new.csv", {TRAIN: n_rep, FWD: [0.7, 0.72, 0.71]})
    c = compare([base], [new], metric="energy")
    p = pairs_of(c)["attention train fp32"]
    # by hand: Welch t on the logs of the per-repeat energies
    x, y = [math.log(v) for v in b_rep], [math.log(v) for v in n_rep]
    d = statistics.fmean(y) - statistics.fmean(x)
    vb, vn = statistics.variance(x) / len(x), statistics.variance(y) / len(y)
    se = math.sqrt(vb + vn)
    df = (vb + vn) ** 2 / (vb**2 / (len(x) - 1) + vn**2 / (len(y) - 1))
    half = sps.t.ppf(0.975, df) * se
    assert p.estimate.ratio == pytest.approx(math.exp(d), rel=1e-12)
    assert p.estimate.ci_low == pytest.approx(math.exp(d - half), rel=1e-12)
    assert p.estimate.ci_high == pytest.approx(math.exp(d + half), rel=1e-12)
    assert p.estimate.p_value == pytest.approx(2 * sps.t.sf(abs(d) / se, df), rel=1e-9)
    assert (p.estimate.n_base, p.estimate.n_new) == (4, 3) and p.ci_covers == "between-process"
    # the ratio is of geometric means of the repeats; the CSV's own figure (their median) beside it
    assert p.base_value == pytest.approx(math.exp(statistics.fmean(x)), rel=1e-12)
    assert p.base_row_value == statistics.median(b_rep) and p.new_row_value == statistics.median(n_rep)
    assert p.verdict == "faster"  # less energy, the CI clear of the 5% band
    assert pair_summary(p.to_dict(), "energy").startswith(f"{1 / math.exp(d):.2f}x less energy [")
    # repeats on one side only: the other side's spread is unknown, the ratio unbounded
    fwd = pairs_of(c)["attention forward fp32"]
    assert fwd.estimate.ci_high == math.inf and fwd.verdict == "inconclusive"
    assert fwd.estimate.ratio == pytest.approx(
        math.exp(statistics.fmean(map(math.log, [0.7, 0.72, 0.71]))) / 0.8
    )


def test_empty_energy_cells_are_left_out_with_the_reason_never_compared_as_zero(tmp_path: Path) -> None:
    base = write_energy(tmp_path / "base.csv", {TRAIN: None, FWD: 0.8})
    new = write_energy(tmp_path / "new.csv", {TRAIN: 1.5, FWD: 1.0})
    c = compare([base], [new], metric="energy")
    p = pairs_of(c)["attention train fp32"]
    assert p.estimate is None and p.verdict == "inconclusive" and p.to_dict()["ratio"] is None
    assert "no energy_j_per_item on the base side" in p.reason and NO_COUNTER in p.reason
    assert p.left_out == [f"base {base}:3: {NO_COUNTER}"]
    assert any("1 ok row(s) without energy_j_per_item left out" in n and NO_COUNTER in n for n in c.notes)
    assert pairs_of(c)["attention forward fp32"].estimate.ratio == 1.0 / 0.8

    # a side of two runs, one without a figure (a window too short, said in the row's reason), one
    # with a hand-edited 0, one with 1.5: only the 1.5 is compared
    short = "energy: the timed window lasted 0.05 s, shorter than the 0.1 s the rapl-package counter needs"
    empty = write_energy(tmp_path / "short.csv", {TRAIN: None}, row_reason=short, sidecar=False)
    zero = write_energy(tmp_path / "zero.csv", {TRAIN: 0.0})
    one = write_energy(tmp_path / "one.csv", {TRAIN: 1.5})
    base2 = write_energy(tmp_path / "base2.csv", {TRAIN: 2.0})
    (p,) = compare([base2], [empty, zero, one], metric="energy").pairs
    assert p.estimate.ratio == 0.75 and p.new_value == 1.5
    assert [x.split(": ", 1)[1] for x in p.left_out] == [short, "no energy_j_per_item"]

    # --by: two pairs share the base row without a figure; the note counts it once
    def fp16(row: dict[str, str]) -> None:
        row.update(precision="amp-fp16", config_key=row["config_key"].replace("amp-bf16", "amp-fp16"))

    by = compare_by(
        [
            write_energy(tmp_path / "by.csv", {TRAIN: None, TRAIN_AMP: 1.0}),
            write_energy(tmp_path / "fp16.csv", {TRAIN_AMP: 0.9}, edit=fp16),
        ],
        "precision",
        metric="energy",
    )
    assert [p.verdict for p in by.pairs] == ["inconclusive", "inconclusive"]
    assert all(p.estimate is None and NO_COUNTER in p.reason for p in by.pairs)
    assert any(n.startswith("1 ok row(s) without energy_j_per_item") for n in by.notes), by.notes
    # a side with no figure at all and no sidecar to say why
    bare = write_energy(tmp_path / "bare.csv", {TRAIN: None}, sidecar=False)
    (p,) = compare([base2], [bare], metric="energy").pairs
    assert p.estimate is None and "its sidecar record gives no reason" in p.reason


def test_mixed_sources_are_not_compared_and_both_are_named(tmp_path: Path) -> None:
    rapl = write_energy(tmp_path / "rapl.csv", {TRAIN: 2.0})
    nvml = write_energy(tmp_path / "nvml.csv", {TRAIN: 1.0}, source=NVML)
    (p,) = compare([rapl], [nvml], metric="energy").pairs
    assert p.estimate is None and p.verdict == "inconclusive"
    assert "energy_source=rapl-package, energy_scope=cpu-package, energy_devices=cpu-package0" in p.reason
    assert "energy_source=nvml, energy_scope=device, energy_devices=gpu0" in p.reason
    assert "not comparable" in p.reason and p.to_dict()["ratio"] is None
    # the same counter over other devices (two packages against one)
    two = write_energy(tmp_path / "two.csv", {TRAIN: 2.5}, source=(*RAPL[:2], "cpu-package0,cpu-package1"))
    (p,) = compare([rapl], [two], metric="energy").pairs
    assert p.estimate is None and "energy_devices=cpu-package0,cpu-package1" in p.reason
    # one side pooling two sources
    other = write_energy(tmp_path / "rapl2.csv", {TRAIN: 1.9})
    (p,) = compare([rapl, nvml], [other], metric="energy").pairs
    assert p.estimate is None and "the base rows come from different sources" in p.reason
    # --by precision in one file whose rows came from different counters
    mixed = write_energy(tmp_path / "mixed.csv", {TRAIN: 2.0, TRAIN_AMP: 1.0}, sources={TRAIN_AMP: NVML})
    (p,) = compare_by([mixed], "precision", metric="energy").pairs
    assert (
        p.estimate is None and "energy_source=nvml" in p.reason and "energy_source=rapl-package" in p.reason
    )


def test_jobs_of_other_shapes_sum_their_own_devices_and_are_compared(tmp_path: Path) -> None:
    two = write_energy(tmp_path / "ws2.csv", {TRAIN: 2.0}, source=(*NVML[:2], "gpu0,gpu1"), edit=as_ddp(2))
    four = write_energy(
        tmp_path / "ws4.csv", {TRAIN: 2.4}, source=(*NVML[:2], "gpu0,gpu1,gpu2,gpu3"), edit=as_ddp(4)
    )
    (p,) = compare_by([two, four], "world_size", metric="energy").pairs
    assert p.label.endswith("world_size=4") and p.estimate.ratio == 2.4 / 2.0
    assert p.sources == {
        "base": ["energy_source=nvml, energy_scope=device, energy_devices=gpu0,gpu1"],
        "new": ["energy_source=nvml, energy_scope=device, energy_devices=gpu0,gpu1,gpu2,gpu3"],
    }
    # the counter must still agree: an RAPL job against an NVML one is refused whatever the shape
    rapl4 = write_energy(tmp_path / "rapl4.csv", {TRAIN: 2.4}, edit=as_ddp(4))
    (p,) = compare_by([two, rapl4], "world_size", metric="energy").pairs
    assert p.estimate is None and "energy_source=rapl-package" in p.reason


def test_cli_compares_energy_and_its_help_says_what(tmp_path: Path) -> None:
    base = write_energy(tmp_path / "base.csv", {TRAIN: [2.0, 2.2, 1.9], TRAIN_AMP: 1.0})
    new = write_energy(tmp_path / "new.csv", {TRAIN: [1.5, 1.6, 1.4], TRAIN_AMP: None})
    runner = CliRunner()
    res = runner.invoke(app, ["compare", str(base), str(new), "--metric", "energy", "--format", "json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    got = {p["label"]: p for p in d["pairs"]}
    assert d["metric"] == "energy" and got["attention train fp32"]["ci_covers"] == "between-process"
    assert got["attention train fp32"]["verdict"] == "faster" and got["attention train fp32"]["ci_high"] < 1
    assert (
        got["attention train amp-bf16"]["ratio"] is None
        and NO_COUNTER in got["attention train amp-bf16"]["reason"]
    )
    table = runner.invoke(app, ["compare", str(base), str(new), "--metric", "energy"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "less energy" in table.output and NO_COUNTER[:40] in table.output
    by = runner.invoke(
        app, ["compare", str(base), "--by", "precision", "--metric", "energy", "--format", "json"]
    )
    assert by.exit_code == 0 and json.loads(by.output)["pairs"][0]["metric"] == "energy"
    help_text = " ".join(runner.invoke(app, ["compare", "--help"], env={"COLUMNS": "400"}).output.split())
    assert "energy: energy_j_per_item, the joules per item" in help_text
