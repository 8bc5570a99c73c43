"""The one number formatter of dlbench: the console, the markdown tables and the GPU summary use it.

Every function takes whatever a CSV cell or a row holds (None, NaN, a string, a number) and
returns display text; a missing value is "-" in the console helpers and "" in ``fmt``.
"""

from __future__ import annotations

import math
import sys
from typing import Any

MIB = 1024 * 1024


def num(v: Any) -> float | None:
    """``v`` as a float, or None when it is missing (None, NaN, a bool, text that is no number)."""
    if v is None or isinstance(v, bool) or _is_pandas_na(v):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _is_pandas_na(v: Any) -> bool:
    """True for ``pandas.NA`` / ``pandas.NaT`` (the empty cells of nullable Int64 / boolean columns).

    pandas is looked up in ``sys.modules``, never imported: a value can only be one of its
    missing-value singletons if pandas is already loaded, and this module stays import-light.
    """
    pd = sys.modules.get("pandas")
    return pd is not None and (v is getattr(pd, "NA", None) or v is getattr(pd, "NaT", None))


def is_missing(v: Any) -> bool:
    """True for None, NaN (float or numpy), ``pandas.NA`` / ``NaT`` and empty text (an empty CSV cell)."""
    if v is None or _is_pandas_na(v):
        return True
    if isinstance(v, str):
        return v == ""
    if isinstance(v, bool):
        return False
    try:
        return math.isnan(v)
    except (TypeError, ValueError, OverflowError):
        return False


def fmt(value: Any, spec: str = ".3g") -> str:
    """``format(value, spec)`` for numbers, "" for a missing value, ``str`` for anything else."""
    if is_missing(value):
        return ""
    try:
        return format(float(value), spec)
    except (TypeError, ValueError):
        return str(value)


def ratio(a: Any, b: Any) -> float:
    """``a / b``, NaN when either is missing or ``b`` is 0."""
    x, y = num(a), num(b)
    return x / y if x is not None and y else float("nan")


def _decimals(v: float) -> int:
    """Decimals that show about four significant digits without an exponent."""
    if v == 0 or not math.isfinite(v):
        return 0
    return max(0, min(6, 3 - math.floor(math.log10(abs(v)))))


def fmt_time(row: dict[str, Any], unit: bool = True) -> str:
    """``12.34 ± 0.21 ms``: the median and the larger side of its 95% CI, in the same decimals."""
    med, lo, hi = (num(row.get(k)) for k in ("time_median_ms", "time_ci_low_ms", "time_ci_high_ms"))
    if med is None:
        return "-"
    d = _decimals(med)
    suffix = " ms" if unit else ""
    if lo is None or hi is None:
        return f"{med:.{d}f}{suffix}"
    half = max(med - lo, hi - med)
    return f"{med:.{d}f} ± {half:.{d}f}{suffix}"


def fmt_si(value: Any, unit: str = "") -> str:
    """``1.23k tokens/s`` style numbers."""
    v = num(value)
    if v is None:
        return "-"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{prefix} {unit}".rstrip()
    return f"{v:.3g} {unit}".rstrip()


def fmt_bytes(value: Any) -> str:
    """``12.3 MiB``."""
    v = num(value)
    if v is None:
        return "-"
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if v >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{int(v)} B"


def fmt_pct(value: Any) -> str:
    v = num(value)
    return "-" if v is None else f"{v:.1%}"
