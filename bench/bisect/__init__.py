"""``dlbench bisect``: which commit made a scenario slower, found by the interleaved gate.

A bisection over ``git rev-list --first-parent GOOD..BAD`` whose every probe is one
``dlbench gate`` of GOOD against the candidate, both timed in the same time windows (so the
machine's drift between runs cannot move the search, as it would an asv-style bisection of
separate runs). One role per module:

* ``search``: the rules (confirm, binary search, skips, re-measurement, the culprit's own step) on
  an abstract gate function -- no git, no process, no torch;
* ``history``: GOOD and BAD resolved and checked, the first-parent history between (reads the
  repository only);
* ``plan``: every input checked before any gate runs (``plan_bisect`` -> ``BisectPlan``);
* ``probe``: the real gate (``git archive`` exports in an owned folder + ``measure_trees``) and
  ``run_bisect``;
* ``render``: the JSON document and the markdown.

Library only (no rich, no typer); ``bench.cli.bisect`` is the command line.
"""

from bench.bisect.plan import BisectPlan, plan_bisect
from bench.bisect.probe import GateProbe, run_bisect
from bench.bisect.render import render_markdown, to_dict
from bench.bisect.search import (
    BisectResult,
    CannotBisect,
    Commit,
    GateStart,
    Measurement,
    Probe,
    Unmeasurable,
    bisect,
)

__all__ = [
    "BisectPlan",
    "BisectResult",
    "CannotBisect",
    "Commit",
    "GateProbe",
    "GateStart",
    "Measurement",
    "Probe",
    "Unmeasurable",
    "bisect",
    "plan_bisect",
    "render_markdown",
    "run_bisect",
    "to_dict",
]
