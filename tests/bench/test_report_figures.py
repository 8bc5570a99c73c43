"""``build_report``: the report folder (index.html, summary.md, figures) from the committed fixture CSVs.

The fixtures (tests/fixtures/report/) are real tiny CPU runs (attention, encoder checkpointing,
encoder batch sizes), the H200 encoder run of the GPU check, the batch-size run with every memory
column removed (encoder_nomem.csv, no sidecar), a run with rows that did not run
(attention_notrun.csv: ok, skipped amp-fp16 on CPU, a large-preset timeout) and a hand-made
parallel.csv: the fp32 batch-size-4 row as parallel=none, plus ddp / fsdp rows at world_size 2 as
results/README.md "Parallel" defines them: global batch 4, one rank's items (32 tokens) and
throughput, ``job_throughput`` = 64 tokens / 2.15 (2.55) ms and ``scaling_efficiency`` =
job_throughput / (2 x 17818.74 tokens/s) = 0.8353 (0.7043); the ddp rank's memory and FLOPs are the
batch-size-2 row's, the fsdp row has no memory figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread
from matplotlib.patches import Rectangle

from bench.report.build import ReportResult, build_report, load_report_rows
from bench.report.figures_common import Skipped
from bench.report.figures_compare import forest_figure
from bench.report.figures_efficiency import mfu_figure, scaling_figure
from bench.report.figures_memory import _bars, memory_figure
from bench.report.figures_perf import amp_figure, throughput_figure
from bench.report.format import fmt, is_missing, num
from bench.report.markdown import failures, table_for

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "report"
ALL = ["attention.csv", "encoder_batch.csv", "encoder_ckpt.csv", "encoder_h200.csv", "parallel.csv"]
ALL += ["attention_notrun.csv"]
FIGURE_NAMES = {"throughput", "amp", "checkpointing", "memory", "mfu", "scaling", "compare"}

COMPARE: dict[str, Any] = {
    "kind": "dlbench-compare",
    "metric": "time",
    "threshold": 0.05,
    "pairs": [
        {"label": "encoder train fp32", "ratio": 0.91, "ci_low": 0.88, "ci_high": 0.94, "verdict": "faster"},
        {
            "label": "encoder train amp-bf16",
            "ratio": 1.02,
            "ci_low": 0.99,
            "ci_high": 1.04,
            "verdict": "same",
        },
        {"label": "attention train", "ratio": 1.12, "ci_low": 1.07, "ci_high": 1.18, "verdict": "slower"},
        {
            "label": "attention forward",
            "ratio": 1.03,
            "ci_low": 0.93,
            "ci_high": None,
            "verdict": "inconclusive",
        },
        {"label": "resnet train fp32", "ratio": None, "ci_low": None, "ci_high": None, "verdict": "new"},
        {"label": "optimizer adamw", "ratio": None, "ci_low": None, "ci_high": None, "verdict": "failed"},
    ],
}
PROFILE = {
    "scenario": "encoder",
    "device": "cuda",
    "categories": {
        "matmul": 0.41,
        "attention": 0.18,
        "normalization": 0.06,
        "elementwise": 0.12,
        "memory_copy": 0.04,
        "optimizer": 0.08,
        "communication": 0.0,
        "other": 0.05,
        "idle": 0.06,
    },
    "top_ops": [{"name": "aten::mm", "self_time_us": 25123.5, "calls": 96, "share": 0.38}],
    "step_time_ms": 65.7,
}


def fixtures(*names: str) -> list[Path]:
    return [FIX / n for n in names]


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> ReportResult:
    """One report of every fixture, a compare JSON and three profile folders (good, malformed, empty)."""
    tmp = tmp_path_factory.mktemp("full")
    cmp_path = tmp / "compare.json"
    cmp_path.write_text(json.dumps(COMPARE))
    good, bad, empty = tmp / "prof_good", tmp / "prof_bad", tmp / "prof_empty"
    for d in (good, bad, empty):
        d.mkdir()
    (good / "summary.json").write_text(json.dumps(PROFILE))
    (bad / "summary.json").write_text('{"scenario": ')
    return build_report(
        fixtures(*ALL),
        tmp / "report",
        compare_json=[cmp_path],
        profile_dirs=[good, bad, empty],
        title="fixture report",
    )


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        for k, v in attrs:
            if k in ("src", "href") and v is not None:
                self.refs.append((tag, k, v))


def parse(path: Path) -> _Refs:
    p = _Refs()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def test_report_writes_every_figure_and_page(full: ReportResult) -> None:
    assert full.index_html.is_file() and full.summary_md.is_file()
    assert {f.name for f in full.figures} == FIGURE_NAMES
    # the fixtures were measured without an energy counter and without --compile: those figures
    # alone are left out, each with why (the compile figure: tests/bench/test_compile.py)
    assert [name for name, _ in full.skipped] == ["energy", "compile"]
    assert "energy_j_per_item" in full.skipped[0][1]
    assert "compile" in full.skipped[1][1]  # no compile column, or no compiled row
    for f in full.figures:
        assert f.png == full.out_dir / "figures" / f"{f.name}.png" and f.png.stat().st_size > 5000
        assert f.svg.read_text()[:200].lstrip().startswith("<?xml") and "<svg" in f.svg.read_text()[:2000]
    assert not any("could not be drawn" in n for n in full.notes), full.notes
    md = full.summary_md.read_text()
    assert md.startswith("# fixture report") and "## encoder_h200.csv" in md and "| attention |" in md
    assert "figures/memory.png" in md and "## Notes" in md


def test_every_png_opens_and_is_not_blank(full: ReportResult) -> None:
    blank = Figure(figsize=(4, 3))
    blank.suptitle("a title only")
    blank.savefig(full.out_dir / "blank.png")
    blank_var = imread(full.out_dir / "blank.png")[..., :3].mean(axis=2).var()
    (full.out_dir / "blank.png").unlink()
    for f in full.figures:
        img = imread(f.png)[..., :3]
        gray = img.mean(axis=2)
        assert img.shape[0] >= 200 and img.shape[1] >= 400, (f.name, img.shape)
        assert gray.var() > max(0.01, 5 * blank_var), (f.name, gray.var(), blank_var)
        assert (gray < 0.9).mean() > 0.02, f.name  # a good part of it is ink, not background


def test_index_html_is_self_contained_and_links_only_existing_files(full: ReportResult) -> None:
    page = parse(full.index_html)
    assert not any(t in ("script", "link", "iframe", "object") for t, _ in page.tags)
    imgs = [v for t, k, v in page.refs if t == "img" and k == "src"]
    assert len(imgs) == len(full.figures) and all(v.startswith("data:image/png;base64,") for v in imgs)
    files = [v for _, _, v in page.refs if not v.startswith(("data:", "#"))]
    assert files, "the page links the SVG/PNG files beside it"
    for v in files:
        assert "://" not in v and not v.startswith("/"), v
        assert (full.out_dir / v).is_file(), v
    anchors = {a.get("id") for _, a in page.tags}
    assert all(v[1:] in anchors for _, _, v in page.refs if v.startswith("#"))
    for _, attrs in page.tags:
        if "width" in attrs and (attrs.get("src") or "").startswith("data:"):
            assert int(attrs["width"] or 0) >= 400  # sized up front: the layout does not wait for decoding


def test_index_html_has_environment_rows_notes_and_profiles(full: ReportResult) -> None:
    text = full.index_html.read_text()
    for value in ("NVIDIA H200", "2.11.0+cu130", "580.159.04", "Intel(R) Xeon(R) Processor", "2.13.0+cpu"):
        assert value in text, value
    assert "threads" in text and "git_commit" in text
    assert "resnet train fp32 (new)" in text and "optimizer adamw (failed)" in text  # pairs not drawn
    assert "aten::mm" in text and "41.0%" in text  # profile table and bar
    assert "prof_bad: summary.json is not readable JSON" in text
    assert "prof_empty: no summary.json" in text
    assert "flagged noisy" in text  # the noisy ok rows are listed with their reasons


def test_report_without_memory_columns_leaves_the_memory_figure_out(tmp_path: Path) -> None:
    res = build_report(fixtures("encoder_nomem.csv"), tmp_path / "r")
    names = {f.name for f in res.figures}
    assert "memory" not in names and "checkpointing" not in names
    assert {"throughput", "amp"} <= names  # the time figures are still there
    reasons = dict(res.skipped)
    assert "no memory columns" in reasons["memory"] and "mem_params_bytes" in reasons["memory"]
    assert "peak_mem_bytes" in reasons["checkpointing"]
    assert not (tmp_path / "r" / "figures" / "memory.png").exists()
    for page in (res.index_html.read_text(), res.summary_md.read_text()):
        assert "memory" in page and "no memory columns in the results (missing: mem_params_bytes" in page
    assert any("only the speed-up is drawn" in n for n in res.notes)
    md = res.summary_md.read_text()
    # markdown.py's own table, without its memory columns (not the fallback table of build.py)
    assert "| encoder | train | fp32 | none | 2 | ok (noisy) | 3.665 [3.582, 3.747] |" in md
    assert "(summary table:" not in md and "peak MiB" not in md


def test_rows_that_did_not_run_are_listed_with_their_reasons(full: ReportResult, tmp_path: Path) -> None:
    text = full.index_html.read_text()
    section = text[text.index('id="not-run"') :]
    assert "amp-fp16 needs a CUDA device" in section and "status-skipped" in section
    assert "timed out after 2 s (child killed)" in section and "status-timeout" in section
    assert any("2 row(s) did not run" in n for n in full.notes)
    res = build_report(fixtures("attention_notrun.csv"), tmp_path / "r")  # one ok row: most figures left out
    reasons = dict(res.skipped)
    assert "amp" in reasons and "only one MFU value" in reasons["mfu"]
    assert [f.name for f in res.figures] == ["memory"]
    md = res.summary_md.read_text()
    assert "**skipped**" in md and "**timeout**" in md  # markdown.py's list of rows that did not run


def test_each_compare_file_gets_its_own_forest_plot(tmp_path: Path) -> None:
    a, b = tmp_path / "before.json", tmp_path / "after.json"
    a.write_text(json.dumps(COMPARE))
    b.write_text(json.dumps({**COMPARE, "pairs": COMPARE["pairs"][4:]}))  # only pairs without a ratio
    res = build_report(fixtures("attention.csv"), tmp_path / "r", compare_json=[a, b])
    assert "compare_before" in {f.name for f in res.figures}
    assert "no pair has a ratio" in dict(res.skipped)["compare_after"]
    assert any(n.startswith("compare_after: pairs without a ratio") for n in res.notes)


def test_rebuilding_into_the_same_folder_removes_stale_figures(tmp_path: Path) -> None:
    build_report(fixtures("encoder_ckpt.csv"), tmp_path / "r")
    assert (tmp_path / "r" / "figures" / "checkpointing.png").exists()
    res = build_report(fixtures("attention.csv"), tmp_path / "r")
    assert not (tmp_path / "r" / "figures" / "checkpointing.png").exists()
    assert sorted(p.stem for p in (tmp_path / "r" / "figures").glob("*.png")) == sorted(
        f.name for f in res.figures
    )


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _no_ok_csv(tmp: Path) -> Path:
    df = pd.read_csv(FIX / "attention.csv")
    df["status"] = "error"
    df.to_csv(tmp / "failed.csv", index=False)
    return tmp / "failed.csv"


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("no_csv", "results: no CSV given"),
        ("missing_csv", "no such file"),
        ("no_ok_rows", "has no ok rows (4 error)"),
        ("not_a_results_csv", "results:"),
        ("out_dir_is_file", "out_dir:"),
        ("missing_compare", "compare_json: no such file"),
        ("not_a_compare", "compare_json:"),
        ("missing_profile_dir", "profile_dirs:"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(case: str, named: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    results: list[Path] = fixtures("attention.csv")
    kwargs: dict[str, list[Path]] = {}
    if case == "no_csv":
        results = []
    elif case == "missing_csv":
        results = [tmp_path / "nope.csv"]
    elif case == "no_ok_rows":
        results = [_no_ok_csv(tmp_path)]
    elif case == "not_a_results_csv":
        results = [_write(tmp_path / "x.csv", "a,b\n1,2\n")]
    elif case == "out_dir_is_file":
        out = _write(tmp_path / "out", "a file")
    elif case == "missing_compare":
        kwargs["compare_json"] = [tmp_path / "nope.json"]
    elif case == "not_a_compare":
        kwargs["compare_json"] = [_write(tmp_path / "c.json", '{"kind": "other"}')]
    elif case == "missing_profile_dir":
        kwargs["profile_dirs"] = [tmp_path / "no_profile"]
    with pytest.raises(ValueError) as err:
        build_report(results, out, **kwargs)  # type: ignore[arg-type]
    message = str(err.value)
    assert named in message and "\n" not in message, message
    if case != "out_dir_is_file":
        assert not (out / "index.html").exists()


# --- the figures read what the rows say -------------------------------------------------------------


def bars(ax: Any) -> list[Rectangle]:
    """The bar rectangles of an axes, in drawing order."""
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def rows(*names: str) -> pd.DataFrame:
    return load_report_rows(fixtures(*names))


def test_amp_speedup_bars_are_fp32_time_over_amp_time() -> None:
    df = rows("encoder_h200.csv")
    fig = amp_figure(df)
    assert isinstance(fig, Figure)
    speed_ax, mem_ax = fig.axes[:2]
    t = df.set_index(["precision", "checkpointing"])["time_median_ms"]
    m = df.set_index(["precision", "checkpointing"])["peak_mem_bytes"].astype(float)
    widths = [p.get_width() for p in bars(speed_ax)]
    assert widths[0] == pytest.approx(t["fp32", "none"] / t["amp-bf16", "none"])  # x9.63
    assert widths[0] == pytest.approx(9.628, abs=1e-3)
    assert [p.get_width() for p in bars(mem_ax)][0] == pytest.approx(
        m["amp-bf16", "none"] / m["fp32", "none"]
    )


def test_scaling_efficiency_is_the_column_else_computed_from_the_none_row(tmp_path: Path) -> None:
    fig = scaling_figure(rows("parallel.csv"))
    assert isinstance(fig, Figure)
    assert [p.get_height() for p in bars(fig.axes[0])] == pytest.approx([83.53, 70.43], abs=0.01)
    df = pd.read_csv(FIX / "parallel.csv")
    none = df.loc[df["parallel"] == "none", "throughput"].iloc[0]
    expected = [
        100 * df.loc[df["parallel"] == m, "job_throughput"].iloc[0] / (2 * none) for m in ("ddp", "fsdp")
    ]
    for drop, said in (
        (["scaling_efficiency"], "computed as job_throughput"),
        (["scaling_efficiency", "job_throughput"], "throughput x world_size"),
    ):
        df.drop(columns=drop).to_csv(tmp_path / "parallel.csv", index=False)
        notes: list[str] = []
        fig = scaling_figure(load_report_rows([tmp_path / "parallel.csv"]), notes)
        assert isinstance(fig, Figure)
        assert [p.get_height() for p in bars(fig.axes[0])] == pytest.approx(expected)
        assert any(said in n for n in notes), notes
    lone = df[df["parallel"] != "none"].drop(columns=["scaling_efficiency"])
    lone.to_csv(tmp_path / "lone.csv", index=False)
    assert "no parallel=none row" in str(scaling_figure(load_report_rows([tmp_path / "lone.csv"])))


def test_memory_stacks_add_up_to_each_phase_peak() -> None:
    df = rows("encoder_h200.csv", "attention.csv", "parallel.csv")  # sidecar (CUDA, CPU) and CSV-only
    kinds = set()
    for _, r in df.iterrows():
        bars, inferred = _bars(r)
        kinds.add(inferred)
        peaks = {
            "fwd": r["mem_fwd_peak_bytes"],
            "bwd": r["mem_bwd_peak_bytes"],
            "opt": r["mem_opt_peak_bytes"],
        }
        for phase, split in bars:
            assert sum(split.values()) == pytest.approx(float(peaks[phase])), (r["config_key"], phase)
            assert all(v >= 0 for v in split.values())
            if not inferred and r["device"] == "cpu":
                assert split.get("untracked", 0) == 0  # on CPU the tracker is the measurement
    assert kinds == {True, False}
    h200 = df[(df["device"] == "cuda") & (df["precision"] == "fp32") & (df["checkpointing"] == "none")].iloc[
        0
    ]
    fwd = dict(_bars(h200)[0])["fwd"]
    assert fwd["activations"] == 12996051456 and fwd["parameters"] == 906608640  # the sidecar's at_peak
    assert fwd["untracked"] == 15993798656 - 15816589824  # CUDA allocator peak above the tracked bytes
    notes: list[str] = []
    assert isinstance(memory_figure(df, notes), Figure)
    assert any("inferred from the CSV" in n for n in notes)


def test_figures_are_left_out_with_a_reason_when_their_data_is_missing() -> None:
    att = rows("attention.csv")
    assert "batch_size" in str(throughput_figure(att))  # nothing varies in size
    assert isinstance(throughput_figure(rows("encoder_batch.csv")), Figure)
    fp32 = att[att["precision"] == "fp32"]
    assert isinstance(amp_figure(fp32), Skipped) and "fp32 row" in str(amp_figure(fp32))
    assert "parallel=none" in str(scaling_figure(att))
    one = att.iloc[:1].assign(mfu_datasheet=float("nan"))
    assert isinstance(mfu_figure(one), Skipped)
    assert "no ok row" in str(mfu_figure(att.assign(mfu=float("nan"))))
    none_drawn = {"kind": "dlbench-compare", "pairs": [{"label": "a", "ratio": None, "verdict": "missing"}]}
    notes: list[str] = []
    assert isinstance(forest_figure(none_drawn, notes), Skipped) and "a (missing)" in notes[0]


def test_report_layer_imports_neither_torch_rich_typer_nor_pyplot(tmp_path: Path) -> None:
    code = (
        "import sys, json, pathlib\n"
        "from bench.report.build import build_report\n"
        f"build_report([pathlib.Path({str(FIX / 'encoder_ckpt.csv')!r})], pathlib.Path({str(tmp_path)!r}))\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    mods = set(json.loads(out.stdout.strip().splitlines()[-1]))
    for pkg in ("torch", "rich", "typer", "matplotlib.pyplot"):
        assert not any(m == pkg or m.startswith(pkg + ".") for m in mods), pkg


def test_fixture_hand_made_rows_are_what_the_docstring_says() -> None:
    df = pd.read_csv(FIX / "parallel.csv")
    none = df[df["parallel"] == "none"].iloc[0]
    assert none["scaling_efficiency"] == 1 and none["job_throughput"] == pytest.approx(none["throughput"])
    for mode, t_ms, eff in (("ddp", 2.15, 0.8353), ("fsdp", 2.55, 0.7043)):
        r = df[df["parallel"] == mode].iloc[0]
        assert r["world_size"] == 2 and r["batch_size"] == none["batch_size"] and r["items_per_step"] == 32
        assert r["throughput"] == pytest.approx(32 / (t_ms / 1000))
        assert r["job_throughput"] == pytest.approx(64 / (t_ms / 1000))
        assert r["scaling_efficiency"] == pytest.approx(r["job_throughput"] / (2 * none["throughput"]))
        assert r["scaling_efficiency"] == pytest.approx(eff, abs=1e-4)
        assert r["config_key"] == f"{none['config_key']}|par={mode}|ws=2"
    nomem = pd.read_csv(FIX / "encoder_nomem.csv")
    assert not [c for c in nomem.columns if c.startswith("mem_") or c == "peak_mem_bytes"]
    assert np.allclose(nomem["time_median_ms"], pd.read_csv(FIX / "encoder_batch.csv")["time_median_ms"])


# --- the summary table (bench.report.markdown) -------------------------------------------------------


def _table_rows(table: str) -> list[list[str]]:
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in table.splitlines()]


def test_table_for_leaves_out_memory_columns_the_file_does_not_have() -> None:
    from bench.results import load_results

    df = load_results(FIX / "encoder_nomem.csv")  # used to raise KeyError: 'peak_mem_bytes'
    head, _, *body = _table_rows(table_for(df))
    assert "peak MiB" not in head and "params+grads+opt MiB" not in head
    assert head[-1] == "MFU" and len(body) == len(df)
    assert all(len(r) == len(head) for r in body)
    # one state column present (the others removed): the sum is over what is there
    one = load_results(FIX / "encoder_batch.csv").drop(columns=["mem_grads_bytes", "mem_optimizer_bytes"])
    head, _, first, *_ = _table_rows(table_for(one.drop(columns=["peak_mem_bytes"])))
    assert head[-1] == "params+grads+opt MiB" and "peak MiB" not in head
    assert first[-1] == fmt(one["mem_params_bytes"].iloc[0] / 2**20, ".1f")
    # no time or MFU columns either: empty cells, no KeyError
    bare = df.drop(columns=["mfu", "achieved_tflops", "time_ci_low_ms", "reason", "config_key"])
    assert all(len(r) == len(head) - 1 for r in _table_rows(table_for(bare)))
    assert failures(bare.assign(status="error")) == ["- `None`: **error**: "] * len(bare)


def test_pandas_na_is_missing_and_formats_as_empty() -> None:
    assert is_missing(pd.NA) and is_missing(pd.NaT) and is_missing(None) and is_missing("")
    assert is_missing(float("nan")) and is_missing(np.float32("nan")) and is_missing(np.float64("nan"))
    assert not is_missing(0) and not is_missing(False) and not is_missing("x") and not is_missing(np.int64(3))
    assert fmt(pd.NA) == "" and fmt(np.float32("nan")) == "" and num(pd.NA) is None
    assert fmt(np.int64(1536), ".4g") == "1536"


def test_table_for_reads_nullable_int_cells_of_ok_rows() -> None:
    from bench.results import load_results

    df = load_results(FIX / "attention_notrun.csv")
    assert str(df["mem_grads_bytes"].dtype) == "Int64"
    # an ok row whose gradient / optimizer / peak cells are empty (pandas.NA in an Int64 column)
    df.loc[0, ["mem_grads_bytes", "mem_optimizer_bytes", "peak_mem_bytes"]] = pd.NA
    df.loc[0, "noisy"] = pd.NA
    head, _, first, *_ = _table_rows(table_for(df))  # used to raise TypeError: float(pd.NA)
    row = dict(zip(head, first, strict=True))
    assert row["status"] == "ok" and row["peak MiB"] == ""
    assert row["params+grads+opt MiB"] == fmt(df["mem_params_bytes"].iloc[0] / 2**20, ".1f")
