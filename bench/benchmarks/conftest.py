"""Makes the ``dlbench_step`` fixture of ``bench.pytest_plugin`` available to the benchmarks here."""

from bench.pytest_plugin import dlbench_step  # noqa: F401
