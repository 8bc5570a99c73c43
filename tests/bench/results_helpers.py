"""Helpers shared by the results, compare and report tests."""

from __future__ import annotations

from pathlib import Path

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "compare"


def another_run(name: str, folder: Path, run_id: str = "another-run") -> str:
    """A copy of a fixture (and its sidecar) as if measured by another run: a new run_id throughout."""
    src = FIX / name
    old_ids = {line.split(",")[1] for line in src.read_text().splitlines()[1:]}
    dst = folder / f"{run_id}-{name}"
    for a, b in ((src, dst), (src.with_suffix(".samples.jsonl"), dst.with_suffix(".samples.jsonl"))):
        if a.exists():
            text = a.read_text()
            for old in old_ids:
                text = text.replace(old, run_id)
            b.write_text(text)
    return str(dst)
