"""The run summary prints reasons and labels as text: rich markup in them must not be interpreted."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from bench.api import RunSummary
from bench.console import print_summary


def test_reason_with_markup_like_text_prints_literally(tmp_path: Path) -> None:
    reason = "OSError: cannot open [/tmp/x] or [bold]y[/bold]"
    row = {"status": "error", "reason": reason, "mode": "train", "precision": "fp32", "config_key": "k"}
    summary = RunSummary(
        scenario="attention",
        csv_path=tmp_path / "r.csv",
        samples_path=tmp_path / "r.samples.jsonl",
        run_id="run1",
        rows=[row],
        configs=[],
    )
    con = Console(record=True, width=200, color_system=None)
    print_summary(summary, console=con)  # "[/tmp/x]" as markup would raise MarkupError
    text = con.export_text()
    assert reason in text
    assert "1 row(s) written (1 error)" in text
