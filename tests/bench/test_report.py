"""Markdown reports and the GPU-run summary read what the CSV rows say."""

from pathlib import Path

import pytest

from bench import api
from bench.report.gpu_summary import summarize
from bench.report.markdown import markdown_report, write_report


@pytest.fixture(scope="module")
def attention_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rep") / "attention.csv"
    summary = api.run(
        "attention", preset="tiny", modes=["forward", "train"], params={"impl": ["dlcore", "sdpa"]},
        device="cpu", out=out, isolation=False, max_time_s=0.05, progress=False,
    )  # fmt: skip
    assert summary.exit_code == 0
    return out


def test_markdown_report_has_a_row_per_configuration(attention_csv: Path, tmp_path: Path) -> None:
    text = markdown_report([attention_csv], title="T")
    table = [ln for ln in text.splitlines() if ln.startswith("| attention")]
    assert len(table) == 4
    assert all("ok" in ln and "tokens/s" in ln for ln in table)
    assert "| impl |" in text  # the varying parameter gets its own column
    out = write_report([attention_csv], tmp_path / "report.md")
    assert out.read_text().startswith("# dlbench report")


def test_gpu_summary_ratio_comes_from_rows(attention_csv: Path, tmp_path: Path) -> None:
    import pandas as pd

    # the summary looks for L=4096 rows; rename the tiny run's length so the figure is computed
    df = pd.read_csv(attention_csv)
    df["param_seq_len"] = 4096
    df.to_csv(tmp_path / "attention.csv", index=False)
    lines = summarize(tmp_path, {"bf16_tflops": 1.0, "fp32_tflops": 1.0, "copy_gbs": 1.0})
    fwd = next(ln for ln in lines if ln.startswith("attention forward"))
    assert "nan" in fwd  # fp32 rows only: the bf16 figure is missing, and says so instead of guessing
    df["precision"] = "amp-bf16"
    df.to_csv(tmp_path / "attention.csv", index=False)
    lines = summarize(tmp_path, {})
    d = df[(df["mode"] == "train") & (df["param_impl"] == "dlcore")]["achieved_tflops"].iloc[0]
    s = df[(df["mode"] == "train") & (df["param_impl"] == "sdpa")]["achieved_tflops"].iloc[0]
    train = next(ln for ln in lines if ln.startswith("attention train"))
    assert f"ratio {d / s:.3f}" in train
