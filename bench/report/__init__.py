"""Reports from result CSVs: torch-free and rich-free (tests/test_layers.py checks it).

- ``format``: the one number formatter (times with CIs, SI units, bytes, percentages) that the
  console, the markdown tables and the GPU summary all use;
- ``markdown``: one table per results file, failures with reasons;
- ``gpu_summary``: the figures of the GPU truth run, from the CSVs ``bench/gpu_check.sh`` writes.

The CLI commands ``dlbench report`` and ``dlbench gpu-summary`` call these functions.
"""
