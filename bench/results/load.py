"""Loading results: a CSV as a typed pandas DataFrame, a sidecar as a list of records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.results.schema import BOOL_COLUMNS, INT_COLUMNS
from bench.results.store import samples_path_for


def load_results(path: Path | str) -> Any:
    """A results CSV as a pandas DataFrame.

    Integer columns (bytes, FLOPs, counts) are nullable ``Int64`` so the empty cells of failed rows
    do not turn them into floats; ``noisy``, ``channels_last`` and ``allow_tf32`` are nullable booleans.
    """
    import pandas as pd

    df = pd.read_csv(path)
    for col in BOOL_COLUMNS:
        if col in df.columns and df[col].dtype == object:
            df[col] = df[col].map({"True": True, "False": False, True: True, False: False}).astype("boolean")
    for col in df.columns:
        if not (col in INT_COLUMNS or col.endswith("_bytes")) or df[col].dtype.kind not in "fiu":
            continue
        values = df[col].dropna()
        if (values == values.round()).all():
            df[col] = df[col].astype("Int64")
    return df


def load_samples(path: Path | str) -> list[dict[str, Any]]:
    """Records of a samples sidecar (``*.samples.jsonl``), or of the sidecar of a results CSV."""
    p = Path(path)
    if p.suffix == ".csv":
        p = samples_path_for(p)
    if not p.exists():
        return []
    out = []
    with p.open(encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a torn last line after a power loss
    return out
