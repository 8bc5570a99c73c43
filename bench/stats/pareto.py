"""The Pareto front of points where one figure should be low (memory) and another high (throughput).

``pareto_front(points)`` takes ``(cost, value)`` pairs and returns the indices of the points that no
other point dominates: a point is dominated when another costs no more *and* gives no less, and is
strictly better in at least one. Ties (the same cost and value) are all kept. ``dlbench budget``
and its report figure use it over (peak memory, throughput at the max batch). Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """True when ``a`` = (cost, value) is at least as good as ``b`` in both and better in one."""
    return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated ``(cost, value)`` points, by increasing cost (then decreasing value).

    O(n^2), which is plenty for the handful of technique combinations a budget compares.
    """
    front = [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))
