"""Profiling one configuration: torch.profiler traces TensorBoard opens, and a summary of them.

- ``trace``: ``profile_step`` runs ``torch.profiler`` over a step and writes the TensorBoard trace,
  a chrome/Perfetto copy, ``top_ops.csv`` / ``.md``, ``summary.json`` and a memory timeline (torch);
- ``scenario``: ``plan_profile`` / ``profile_scenario`` / ``plan_from_run_options`` check one
  configuration named with ``dlbench run``'s options, build it as ``dlbench run`` does and
  ``profile_step`` it (``dlbench profile`` calls these);
- ``summary``: operators into categories, shares of the step time, the ``summary.json`` contract
  (no torch: works on plain rows);
- ``hta``: an optional Holistic Trace Analysis breakdown of GPU traces (``hta`` imported lazily).

The names below are imported on first use, so ``import bench.profile.summary`` stays torch-free.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "CATEGORIES",
    "ProfileResult",
    "categorize",
    "hta_breakdown",
    "make_summary",
    "plan_from_run_options",
    "plan_profile",
    "profile_scenario",
    "profile_step",
    "summarize",
]

_WHERE = {
    "ProfileResult": "trace",
    "plan_from_run_options": "scenario",
    "plan_profile": "scenario",
    "profile_scenario": "scenario",
    "profile_step": "trace",
    "CATEGORIES": "summary",
    "categorize": "summary",
    "make_summary": "summary",
    "summarize": "summary",
    "hta_breakdown": "hta",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
