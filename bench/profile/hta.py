"""Optional Holistic Trace Analysis (HTA) breakdown of GPU traces: never a hard dependency.

HTA (the optional extra ``pip install 'dlbench[hta]'``: HolisticTraceAnalysis, imported as ``hta``)
reads the ``*.pt.trace.json`` files of a TensorBoard logdir, one per rank, and splits each rank's
GPU time into computation, communication, memory and idle (temporal breakdown) and by kernel type
and kernel (kernel breakdown). It only has something to say about traces with GPU kernels, and it pulls ~100
packages (jupyterlab among them), so dlbench imports it lazily, here and only here, and a missing
or failing HTA is a reason in the result, not an error.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

__all__ = ["INSTALL_HINT", "hta_breakdown", "hta_unavailable_reason"]

INSTALL_HINT = "pip install 'dlbench[hta]' (the HolisticTraceAnalysis package)"


def hta_unavailable_reason() -> str | None:
    """None when HTA can be imported, else why not (with the install command)."""
    try:
        importlib.import_module("hta.trace_analysis")
    except ImportError as exc:  # ModuleNotFoundError, or a broken dependency of HTA
        return (
            f"HTA breakdown skipped: Holistic Trace Analysis is not installed or not importable "
            f"({type(exc).__name__}: {exc}); it is optional: {INSTALL_HINT}"
        )
    return None


def _records(df: Any) -> list[dict[str, Any]]:
    """A pandas DataFrame as JSON-ready records (HTA returns DataFrames)."""
    if df is None:
        return []
    return [
        {str(k): v for k, v in row.items()} for row in df.reset_index(drop=True).to_dict(orient="records")
    ]


def hta_breakdown(
    trace_dir: str | os.PathLike[str], *, notes: list[str] | None = None
) -> dict[str, Any] | None:
    """HTA's temporal and GPU kernel breakdown of the traces in ``trace_dir``, or None.

    Returns ``{"trace_dir": str, "temporal_breakdown": [...], "kernel_type_breakdown": [...],
    "kernel_breakdown": [...]}`` (DataFrame rows as dicts). None when HTA is not importable, when
    ``trace_dir`` holds no trace, or when HTA fails (a CPU-only trace has no kernels to break
    down); the reason is appended to ``notes`` when given.
    """

    def skip(reason: str) -> None:
        if notes is not None:
            notes.append(reason)

    reason = hta_unavailable_reason()
    if reason is not None:
        skip(reason)
        return None
    path = Path(trace_dir)
    if not any(path.glob("*.pt.trace.json*")):
        skip(f"HTA breakdown skipped: no *.pt.trace.json[.gz] in {path}")
        return None
    try:
        from hta.trace_analysis import TraceAnalysis

        analyzer = TraceAnalysis(trace_dir=str(path))
        temporal = analyzer.get_temporal_breakdown(visualize=False)
        kernel_types, kernels = analyzer.get_gpu_kernel_breakdown(visualize=False)
    except Exception as exc:  # HTA needs GPU kernels; its internals vary between versions
        skip(
            f"HTA breakdown failed on {path} (it needs GPU kernels in the trace): {type(exc).__name__}: {exc}"
        )
        return None
    return {
        "trace_dir": str(path),
        "temporal_breakdown": _records(temporal),
        "kernel_type_breakdown": _records(kernel_types),
        "kernel_breakdown": _records(kernels),
    }
