"""``dlbench report`` and ``dlbench profile`` on the command line (CliRunner, in-process).

The report runs on the committed fixture CSVs (tests/fixtures/report/, see test_report_figures.py);
the profile is one tiny ``attention --amp`` configuration (seq_len 16, one recorded step), shared by
the tests of this module, then handed to ``dlbench report --profile``.
"""

from __future__ import annotations

import csv
import html
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from bench.cli import app

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "report"
runner = CliRunner()

COMPARE: dict[str, Any] = {
    "kind": "dlbench-compare",
    "metric": "time",
    "threshold": 0.05,
    "pairs": [
        {"label": "encoder train fp32", "ratio": 0.91, "ci_low": 0.88, "ci_high": 0.94, "verdict": "faster"},
        {"label": "attention train", "ratio": 1.12, "ci_low": 1.07, "ci_high": 1.18, "verdict": "slower"},
    ],
}
# small enough to take seconds on two CPU cores: seq_len 16, no step before recording, one kept
PROFILE_ARGS = ["attention", "--amp", "--preset", "tiny", "-p", "seq_len=16"]
PROFILE_ARGS += ["--wait", "0", "--warmup", "1", "--active", "1"]


def fx(*names: str) -> list[str]:
    return [str(FIX / n) for n in names]


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


def one_line_error(result: Any) -> str:
    """The message of an exit-2 result: one ``Error: ...`` line on stderr, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def linked_files(index: Path) -> list[str]:
    p = _Refs()
    p.feed(index.read_text(encoding="utf-8"))
    return [v for v in p.refs if not v.startswith(("data:", "#"))]


# --- dlbench report ---------------------------------------------------------------------------------


def test_report_writes_index_summary_and_figures(tmp_path: Path) -> None:
    cmp = tmp_path / "compare.json"
    cmp.write_text(json.dumps(COMPARE))
    out = tmp_path / "reports" / "fixtures"
    args = [*fx("attention.csv", "encoder_batch.csv", "encoder_ckpt.csv"), "-o", str(out)]
    r = invoke("report", *args, "--compare", str(cmp), "--title", "CLI report")
    assert r.exit_code == 0, r.output
    index, summary = out / "index.html", out / "summary.md"
    assert index.is_file() and summary.is_file()
    assert f"wrote {index}" in r.stdout and f"wrote {summary}" in r.stdout
    pngs = sorted(p.stem for p in (out / "figures").glob("*.png"))
    svgs = sorted(p.stem for p in (out / "figures").glob("*.svg"))
    assert pngs == svgs and {"throughput", "amp", "checkpointing", "memory", "compare"} <= set(pngs)
    assert all(name in r.stdout for name in pngs)  # the figure list names them
    # figures left out are notes, with their reason (no parallel rows in these files)
    assert "note: scaling figure left out: every ok row ran with parallel=none" in r.stdout
    assert summary.read_text().startswith("# CLI report")
    assert "CLI report" in index.read_text()
    files = linked_files(index)
    assert files and all((out / v).is_file() for v in files), files


def test_report_without_memory_columns_says_why_the_memory_figure_is_out(tmp_path: Path) -> None:
    r = invoke("report", *fx("encoder_nomem.csv"), "-o", str(tmp_path / "r"))
    assert r.exit_code == 0, r.output
    assert "note: memory figure left out: no memory columns" in r.stdout
    assert not (tmp_path / "r" / "figures" / "memory.png").exists()
    assert "| encoder | train | fp32 | none | 2 |" in (tmp_path / "r" / "summary.md").read_text()


def _no_ok_rows(tmp: Path) -> Path:
    df = pd.read_csv(FIX / "attention.csv")
    df["status"] = "error"
    df.to_csv(tmp / "failed.csv", index=False)
    return tmp / "failed.csv"


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("no_csv", "Error: RESULTS: no CSV given"),
        ("missing_csv", "Error: RESULTS: "),
        ("no_ok_rows", "has no ok rows (4 error)"),
        ("out_is_a_file", "Error: --out:"),
        ("out_under_a_file", "Error: --out:"),
        ("missing_compare", "Error: --compare: no such file"),
        ("missing_profile_dir", "Error: --profile:"),
    ],
)
def test_report_bad_input_exits_2_with_one_line(case: str, named: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args: list[str] = fx("attention.csv")
    if case == "no_csv":
        args = []
    elif case == "missing_csv":
        args = [str(tmp_path / "nope.csv")]
    elif case == "no_ok_rows":
        args = [str(_no_ok_rows(tmp_path))]
    elif case in ("out_is_a_file", "out_under_a_file"):
        (tmp_path / "file").write_text("a file")
        out = tmp_path / "file" if case == "out_is_a_file" else tmp_path / "file" / "sub"
    elif case == "missing_compare":
        args += ["--compare", str(tmp_path / "nope.json")]
    elif case == "missing_profile_dir":
        args += ["--profile", str(tmp_path / "no_profile")]
    message = one_line_error(invoke("report", *args, "-o", str(out)))
    assert named in message, message
    assert not (out / "index.html").exists() and not (out / "figures").exists()


def test_gpu_summary_still_answers(tmp_path: Path) -> None:
    r = invoke("gpu-summary", str(tmp_path / "nope"))
    assert "is not a folder" in one_line_error(r)
    assert invoke("gpu-summary", "--help").exit_code == 0


# --- dlbench profile --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("prof") / "attention"
    r = invoke("profile", *PROFILE_ARGS, "-o", str(out))
    assert r.exit_code == 0, r.output
    return out, r


def test_profile_writes_trace_top_ops_and_summary(profiled: tuple[Path, Any]) -> None:
    out, r = profiled
    traces = list(out.glob("*.pt.trace.json"))
    assert len(traces) == 1  # tensorboard_trace_handler's file: `tensorboard --logdir out` loads it
    trace = json.loads((out / "trace.json").read_text())  # the chrome / Perfetto copy
    assert {e.get("name") for e in trace["traceEvents"]} >= {"forward", "backward", "optimizer"}
    with (out / "top_ops.csv").open(newline="") as f:
        names = [row["name"] for row in csv.DictReader(f)]
    assert any(n in ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear") for n in names), names
    assert "`aten::" in (out / "top_ops.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scenario"] == "attention" and summary["device"] == "cpu"
    assert summary["active_steps"] == 1 and summary["step_time_ms"] > 0
    assert 0.99 <= sum(summary["categories"].values()) <= 1.01
    # --with-stack is the default: torch's memory timeline is written
    assert (out / "memory_timeline.html").is_file() and (out / "memory_timeline.json").is_file()
    for path in (traces[0], out / "trace.json", out / "top_ops.csv", out / "summary.json"):
        assert str(path) in r.stdout
    assert f"tensorboard --logdir {out}" in r.stdout
    assert "profiling attention train amp-bf16" in r.stderr  # --amp is bf16 on CPU


def test_profile_without_stacks_says_why_there_is_no_memory_timeline(tmp_path: Path) -> None:
    r = invoke("profile", *PROFILE_ARGS, "--no-with-stack", "--mode", "forward", "-o", str(tmp_path / "p"))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p" / "summary.json").is_file()
    assert not (tmp_path / "p" / "memory_timeline.html").exists()
    assert "no memory timeline" in r.stdout and "with_stack" in r.stdout


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["attention", "--parallel", "ddp,fsdp"], "--parallel: dlbench profile traces one configuration"),
        (["attention", "--mode", "forward,train"], "--mode: dlbench profile traces one configuration"),
        (["attention", "--precision", "fp32", "--amp"], "--precision/--amp:"),
        (["attention", "--seq-len", "16,32"], "seq_len: dlbench profile traces one configuration"),
        (["attention", "--active", "0"], "--active: expected an integer from 1 to 100"),
        (["attention", "--warmup", "-1"], "--warmup: expected an integer from 0 to 100"),
        (["attention", "-p", "nope=1"], "no parameter 'nope'"),
        (["attention", "--preset", "huge"], "--preset: unknown preset 'huge'"),
        (
            ["attention", "--mode", "forward", "--checkpointing", "full"],
            "checkpointing only changes training",
        ),
        (["attention", "--device", "cuda:99"], "--device cuda:99"),
        (["attnetion"], "scenario: unknown scenario 'attnetion'"),
        ([], "scenario: give a scenario name"),
        (["attention", "OUT_IS_A_FILE"], "--out:"),
    ],
)
def test_profile_bad_input_exits_2_before_any_work(args: list[str], named: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    if "OUT_IS_A_FILE" in args:
        args = [a for a in args if a != "OUT_IS_A_FILE"]
        out.write_text("a file")
    message = one_line_error(invoke("profile", *args, "-o", str(out)))
    assert named in message, message
    assert not out.is_dir()  # nothing built, nothing written


def test_report_includes_the_profile_summary(profiled: tuple[Path, Any], tmp_path: Path) -> None:
    prof_dir, _ = profiled
    summary = json.loads((prof_dir / "summary.json").read_text())
    out = tmp_path / "r"
    r = invoke("report", *fx("attention.csv"), "--profile", str(prof_dir), "-o", str(out))
    assert r.exit_code == 0, r.output
    page = (out / "index.html").read_text()
    section = page[page.index('id="profiles"') :]
    assert "attention on cpu" in section and str(prof_dir) in section
    assert html.escape(summary["top_ops"][0]["name"]) in section  # the top operators table
    top = max(summary["categories"], key=summary["categories"].get)
    assert f"{top} {summary['categories'][top]:.1%}" in section  # the category bar's legend
    md = (out / "summary.md").read_text()
    assert "## Profiles" in md and f"`{prof_dir}`" in md
