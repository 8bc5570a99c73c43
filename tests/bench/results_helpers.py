"""Helpers shared by the results, compare and report tests: variants of the committed fixtures."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping
from pathlib import Path

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "compare"
REPORT_FIX = Path(__file__).resolve().parents[1] / "fixtures" / "report"


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


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def csv_text(header: list[str], rows: list[Mapping[str, str]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def variant(
    src: Path,
    dst: Path,
    edit: Callable[[int, dict[str, str]], dict[str, str] | None] | None = None,
    *,
    extra_columns: Mapping[str, str] | None = None,
    sidecar: bool = True,
) -> Path:
    """``src`` rewritten to ``dst`` with ``edit(index, row)`` applied to each row (None: drop the row).

    ``extra_columns`` adds columns (name -> value of every row); the sidecar is copied beside it.
    """
    header, rows = read_rows(src)
    out = []
    for i, r in enumerate(rows):
        r = dict(r)
        if extra_columns:
            r.update(extra_columns)
        new = edit(i, r) if edit else r
        if new is not None:
            out.append(new)
    header = header + [c for c in (extra_columns or {}) if c not in header]
    dst.write_text(csv_text(header, out), encoding="utf-8")
    side = src.with_suffix(".samples.jsonl")
    if sidecar and side.exists():
        dst.with_suffix(".samples.jsonl").write_text(side.read_text())
    return dst
