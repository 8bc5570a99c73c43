"""Running a scenario: the request, the grid, the plan, measuring, the child process, execution.

What flows through it: a ``RunRequest`` (request.py; from the CLI, a sweep file (sweep.py) or the
Python API) becomes a ``RunPlan`` (plan.py: validated grid of ``RunConfig`` s from grid.py and an
open results file); ``execute`` (execute.py) measures each configuration in a child process
(child.py, which calls ``measure`` in measure.py) and appends one row per configuration.

Layer rule: request, grid, sweep and plan import no torch at module level; measure and child
import the harness (torch) lazily, inside the functions that need it.
"""
