"""Torch-free statistics: the CI of the median here; comparison statistics beside it.

Nothing under ``bench.stats`` imports torch or rich (tests/test_layers.py checks it), so compare and
the regression gate load in a fraction of a second.
"""

from bench.stats.compare import (
    LocationCI,
    RatioEstimate,
    exact_ratio,
    hierarchical_summary,
    is_regression,
    ratio_from_repeats,
    ratio_from_samples,
    ratio_from_slices,
    verdict,
)
from bench.stats.median import median_ci, order_stat_ranks

__all__ = [
    "LocationCI",
    "RatioEstimate",
    "exact_ratio",
    "hierarchical_summary",
    "is_regression",
    "median_ci",
    "order_stat_ranks",
    "ratio_from_repeats",
    "ratio_from_samples",
    "ratio_from_slices",
    "verdict",
]
