"""dlbench budget, the torch-free parts: the byte parser, the search and its probe bound, the Pareto
front, and the summary's baseline, front and recommendation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from bench.budget.search import find_max_batch, probe_bound
from bench.constraints import parse_bytes
from bench.errors import UsageError
from bench.report.budget import summarize
from bench.stats.pareto import pareto_front


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24GiB", 24 * 2**30),
        ("256MiB", 256 * 2**20),
        ("256mib", 256 * 2**20),
        ("1.5KiB", 1536),
        ("3TiB", 3 * 2**40),
        ("100B", 100),
        ("4096", 4096),
        (" 8GiB ", 8 * 2**30),
        (7, 7),
    ],
)
def test_parse_bytes_accepts_binary_units_and_plain_bytes(text: object, expected: int) -> None:
    assert parse_bytes("--memory", text) == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("0", "positive"),
        ("-1", "positive size"),
        ("abc", "positive size"),
        ("1e30", "positive size"),
        ("12 GB", "together, e.g. 12GiB"),
        ("12 GiB", "together, e.g. 12GiB"),
        ("12GB", "did you mean 12GiB"),
        ("1.5", "whole number"),
        ("0.1B", "positive"),
        ("", "positive size"),
        ("99999999999999999999999", "int64"),
        (True, "positive size"),
    ],
)
def test_parse_bytes_refuses_bad_sizes_naming_the_option(text: object, needle: str) -> None:
    with pytest.raises(UsageError, match="--memory") as exc:
        parse_bytes("--memory", text)
    assert needle in str(exc.value)


@dataclass
class _Verdict:
    batch: int
    fits: bool


def _search(true_max: int, max_batch: int, multiple: int = 1, tolerance: float = 0.0):
    calls: list[int] = []

    def probe(b: int) -> _Verdict:
        calls.append(b)
        return _Verdict(b, b <= true_max)

    return find_max_batch(probe, max_batch=max_batch, multiple=multiple, tolerance=tolerance), calls


@pytest.mark.parametrize("multiple", [1, 3])
def test_search_is_exact_and_within_the_probe_bound_for_every_threshold(multiple: int) -> None:
    worst = 0
    for max_batch in range(multiple, 140):
        bound = probe_bound(max_batch)
        assert bound <= 2 * math.log2(max_batch) + 2
        top = max_batch // multiple * multiple  # the largest candidate
        for true_max in range(0, max_batch + 3):
            res, calls = _search(true_max, max_batch, multiple)
            expected = min(true_max // multiple * multiple, top)
            assert res.max_batch == expected, (max_batch, true_max, res)
            assert res.n_probes == len(calls) <= bound, (max_batch, true_max, calls)
            worst = max(worst, res.n_probes - bound)
            assert all(b % multiple == 0 and 0 < b <= max_batch for b in calls)
            assert len(set(calls)) == len(calls)  # no batch probed twice
            if expected:  # the answer is a batch that was probed and fitted
                assert any(p.batch == expected and p.fits for p in res.probes)
            assert res.capped == (expected == top and true_max >= top)
            assert res.stopped_by == ("nothing-fits" if not expected else "cap" if res.capped else "exact")
    if multiple == 1:
        assert worst == 0  # the bound is reached somewhere: it is tight, not slack


def test_search_tolerance_stops_early_but_never_above_the_answer() -> None:
    for max_batch in (100, 1000, 4096):
        for true_max in range(1, max_batch + 1, 7):
            exact, n_exact = _search(true_max, max_batch)
            res, calls = _search(true_max, max_batch, tolerance=0.05)
            assert res.max_batch <= exact.max_batch
            assert exact.max_batch - res.max_batch <= 0.05 * res.max_batch
            assert len(calls) <= len(n_exact)


def test_search_refuses_a_cap_below_the_multiple() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        find_max_batch(lambda b: _Verdict(b, True), max_batch=2, multiple=4)


def test_pareto_front_keeps_the_non_dominated_points() -> None:
    #        0 lean+slow  1 dominated by 0  2 fast+big  3 ties 2  4 dominated by 2
    points = [(1.0, 10.0), (2.0, 9.0), (3.0, 30.0), (3.0, 30.0), (4.0, 20.0)]
    assert pareto_front(points) == [0, 2, 3]
    assert pareto_front([]) == []
    assert pareto_front([(5.0, 1.0)]) == [0]


def _row(
    precision: str, ckpt: str, *, batch: int | None, thr: float | None, peak: float | None, **kw: object
):
    med = 100.0
    row = {
        "scenario": "encoder", "mode": "train", "precision": precision, "checkpointing": ckpt,
        "parallel": "none", "world_size": 1, "device": "cpu", "status": kw.pop("status", "ok"),
        "reason": kw.pop("reason", ""), "budget_bytes": 256 * 2**20, "max_batch": batch, "probes": 9,
        "throughput": thr, "job_throughput": thr, "throughput_unit": "tokens/s", "peak_mem_bytes": peak,
        "time_median_ms": med, "time_ci_low_ms": med * (1 - kw.get("ci", 0.01)),
        "time_ci_high_ms": med * (1 + kw.get("ci", 0.01)), "seed": 0, "channels_last": False,
        "param_seq_len": 128, "extra": kw.get("extra"),
    }  # fmt: skip
    return row


def test_summary_relative_front_and_recommendation() -> None:
    rows = [
        _row("fp32", "none", batch=24, thr=6000.0, peak=250e6),
        _row("fp32", "full", batch=64, thr=5000.0, peak=240e6),
        _row("amp-bf16", "none", batch=40, thr=9000.0, peak=255e6),
        _row("amp-bf16", "full", batch=96, thr=8000.0, peak=200e6),
    ]
    rep = summarize(rows)
    e = {x.label: x for x in rep.entries}
    assert rep.rule == "cpu" and rep.budget_bytes == 256 * 2**20
    assert e["fp32 ckpt=none"].baseline and e["fp32 ckpt=none"].relative == 1.0
    assert e["amp-bf16 ckpt=none"].relative == pytest.approx(1.5)
    # front: amp-bf16 full (least memory, 8000) and amp-bf16 none (most throughput); fp32 rows are beaten
    assert [x.label for x in rep.front] == ["amp-bf16 ckpt=full", "amp-bf16 ckpt=none"]
    text = rep.recommendation
    assert text.startswith(
        "Use amp-bf16 ckpt=none at batch 40: 1.50x the throughput of the baseline fp32 ckpt=none"
    )
    assert "max batch 24" in text and "256 MiB" in text and "noise" not in text
    d = rep.to_dict()
    assert d["fit_rule"] == "cpu" and d["pareto"] == ["amp-bf16 ckpt=full", "amp-bf16 ckpt=none"]
    assert {c["combination"]: c["max_batch"] for c in d["combinations"]}["fp32 ckpt=full"] == 64
    md = rep.to_markdown()
    assert "| fp32 ckpt=full | 64 |" in md and "Pareto front" in md


def test_summary_says_when_the_lead_is_noise_and_when_nothing_fits() -> None:
    rows = [
        _row("fp32", "none", batch=8, thr=1000.0, peak=1e6, ci=0.2),
        _row("fp32", "full", batch=16, thr=1050.0, peak=1e6, ci=0.2),
    ]
    text = summarize(rows).recommendation
    assert (
        text.startswith("Use fp32 ckpt=full at batch 16: 1.05x") and "within the measurement's noise" in text
    )
    needs = {"budget_needs_bytes": 300 * 2**20, "budget_smallest_batch": 1}
    leaner = {**needs, "budget_needs_bytes": 280 * 2**20}
    rows = [
        _row("fp32", "none", batch=0, thr=None, peak=None, status="skipped", extra=needs),
        _row("fp32", "full", batch=0, thr=None, peak=None, status="skipped", extra=leaner),
    ]
    text = summarize(rows).recommendation
    assert (
        text
        == "Nothing fits in 256 MiB: even at batch 1, the leanest combination, fp32 ckpt=full, needs 280 MiB."
    )


def test_summary_without_a_fitting_baseline_compares_with_the_next_fastest() -> None:
    rows = [
        _row("fp32", "none", batch=0, thr=None, peak=None, status="skipped", extra={"budget_needs_bytes": 1}),
        _row("fp32", "full", batch=4, thr=100.0, peak=1e6),
        _row("amp-bf16", "full", batch=8, thr=300.0, peak=1e6),
    ]
    rep = summarize(rows)
    assert all(x.relative is None for x in rep.entries)
    assert rep.recommendation == (
        "Use amp-bf16 ckpt=full at batch 8: 300 tokens/s in 256 MiB, 3.00x the next fastest, fp32 "
        "ckpt=full (the baseline, fp32 without checkpointing, did not fit)."
    )


def test_fit_rules_judge_the_right_figure() -> None:
    from bench.budget.fit import judge, rule_for

    assert rule_for("cuda:1") == "cuda" and rule_for("cpu") == "cpu"
    figures = {"tracked_peak_bytes": 900, "reserved_peak_bytes": 1100, "rss_increase_bytes": 5000}
    # cpu: the tracked bytes decide; RSS is only recorded
    cpu = judge(4, rule="cpu", budget_bytes=1000, status="ok", figures=figures)
    assert cpu.fits and cpu.peak_bytes == 900 and cpu.rss_increase_bytes == 5000
    # cuda: the reserved peak decides (the allocator holds it even when tensors need less)
    cuda = judge(4, rule="cuda", budget_bytes=1000, status="ok", figures=figures)
    assert not cuda.fits and cuda.peak_bytes == 1100
    assert judge(4, rule="cuda", budget_bytes=1100, status="ok", figures=figures).fits  # at most: fits
    # a probe that ran out of memory under the cap, crashed or timed out never fits
    for status in ("oom", "error", "timeout", "skipped"):
        assert not judge(4, rule="cuda", budget_bytes=10**9, status=status, figures=figures).fits
    # an ok probe without the rule's figure is an error, not a fit
    bad = judge(4, rule="cuda", budget_bytes=10**9, status="ok", figures={"tracked_peak_bytes": 1})
    assert not bad.fits and bad.status == "error" and "reserved" in bad.reason
