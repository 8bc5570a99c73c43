"""Every scenario x mode (fp32, tiny preset by default) as a pytest-benchmark benchmark.

    pytest bench/benchmarks --benchmark-json out.json            # all of them
    pytest bench/benchmarks -k attention --benchmark-json a.json  # one scenario
    dlbench compare a.json b.json                                  # NEW vs BASE

``DLBENCH_BENCH_SCENARIOS``, ``_MODES``, ``_PRECISIONS``, ``_PRESET`` and ``_DEVICE`` choose the
cases (``bench.pytest_plugin.default_cases``).
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.pytest_plugin import BenchCase, DlbenchStep, default_cases


@pytest.mark.parametrize("dlbench_step", default_cases(), indirect=True, ids=lambda c: c.id)
def test_scenario(benchmark: Any, dlbench_step: DlbenchStep) -> None:
    """Time one scenario's full step (forward, or forward + backward + optimizer) with pytest-benchmark."""
    dlbench_step.run(benchmark)


__all__ = ["BenchCase"]
