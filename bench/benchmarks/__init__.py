"""dlbench's scenarios as pytest-benchmark benchmarks (``pytest bench/benchmarks --benchmark-json out.json``).

Not part of ``pytest`` 's default run (``testpaths`` is ``tests``); see ``bench.pytest_plugin``.
"""
