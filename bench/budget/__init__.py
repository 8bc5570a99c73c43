"""``dlbench budget``: for a memory budget, the largest batch each technique combination fits, its
throughput there, the Pareto front, and what to use.

- ``plan``: the options checked, the combinations (the grid of ``dlbench run`` without the batch),
  the CSV opened (``plan_budget``), before any child starts;
- ``search``: doubling then bisection for the largest fitting batch, within ``2 log2(max) + 2``
  probes (torch-free);
- ``fit``: the two fit rules (CUDA: under a per-process memory fraction, peak reserved; CPU: tracked
  bytes) and one probe's verdict (torch-free);
- ``probe``: one probe, inside an isolated child or torchrun rank: build, one step, its memory;
- ``engine``: per combination, search then measure at the max batch as ``dlbench run`` does, one
  row each with ``budget_bytes``, ``max_batch``, ``probes``;
- the table, the Pareto front and the recommendation, made from the rows, are in the report layer
  (``bench.report.budget``), where ``dlbench report`` draws them too (``figures_budget``).

The command is ``bench.cli.budget``; the API ``bench.api.budget`` / ``plan_budget``.
"""
