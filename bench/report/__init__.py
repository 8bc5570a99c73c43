"""Reports from result CSVs: torch-free and rich-free (tests/test_layers.py checks it).

- ``build``: ``build_report`` writes a report folder (index.html, summary.md, figures/) from result
  CSVs, compare JSONs and profile folders; ``dlbench report`` calls it;
- ``figures_common``, ``figures_perf``, ``figures_memory``, ``figures_efficiency``,
  ``figures_compare``: one matplotlib figure each (Agg, no pyplot), or a reason it is left out;
- ``plots``: draws every figure the data holds and saves PNG and SVG;
- ``html``: the self-contained index.html (figures embedded, profile summaries);
- ``format``: the one number formatter (times with CIs, SI units, bytes, percentages) that the
  console, the markdown tables and the GPU summary all use;
- ``markdown``: one table per results file, failures with reasons (summary.md's tables);
- ``compare_format``: the tables of ``dlbench compare``;
- ``gpu_summary``: the figures of the GPU truth run, from the CSVs ``bench/gpu_check.sh`` writes.

The CLI commands ``dlbench report`` and ``dlbench gpu-summary`` call these functions.
"""
