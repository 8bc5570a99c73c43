"""What ``dlbench compare`` matches on and what it can compare: two tables, one entry per thing.

- ``CONFIG_FIELDS``: the configuration columns a match is made on (plus every ``param_*``), with
  the value an empty cell stands for, the usual base of ``--by`` on that axis, and how labels show
  it. A new configuration column (``compile``, say) is one entry here.
- ``METRICS``: ``--metric`` choices. Each names the CSV column of the row's own figure, whether
  higher is better, and how it is estimated (``kind``):

  * ``"time"``: per-process medians and raw samples (``ratio_from_samples`` / ``ratio_from_repeats``);
  * ``"rate"``: ``k / time`` with a per-row constant ``k`` (throughput, MFU), so its per-process
    figures and samples follow from the time ones exactly;
  * ``"exact"``: a deterministic figure (bytes), compared exactly;
  * ``"row"``: one figure per process and no samples (energy: a counter read at the window's two
    ends has no within-process spread). A ``--repeat R`` row gives R figures (its sidecar's
    ``repeats``), any other row one; two or more a side give a between-process CI (Welch t on
    logs), one a side the ratio without a CI. A row whose cell is empty is left out, with the
    reason its sidecar's ``sidecar_key`` record gives (never compared as 0). ``source_columns``
    say where a figure came from: two sides whose sources differ get no ratio.

  A new metric is one entry here.

Torch-free and rich-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.results.schema import ENV_MATCH_COLUMNS


@dataclass(frozen=True)
class ConfigField:
    """A configuration column compare matches rows on."""

    name: str
    empty: str = ""  # what an empty cell means (files written before the column was filled)
    by_base: str | None = None  # the usual base value of ``--by`` on this axis
    bare: bool = False  # labels show the value alone ("train", "amp-bf16"), not "name=value"


CONFIG_FIELDS: tuple[ConfigField, ...] = (
    ConfigField("scenario", bare=True),
    ConfigField("mode", bare=True),
    ConfigField("precision", by_base="fp32", bare=True),
    ConfigField("checkpointing", by_base="none"),
    ConfigField("compile", empty="none", by_base="none"),
    ConfigField("parallel", empty="none", by_base="none"),
    ConfigField("world_size", empty="1"),
    ConfigField("device", bare=True),
    ConfigField("channels_last", empty="false"),
    ConfigField("seed", empty="0"),
    ConfigField("batch_size"),
)
MATCH_FIELDS: tuple[str, ...] = tuple(f.name for f in CONFIG_FIELDS)
DEFAULT_BASE: dict[str, str] = {f.name: f.by_base for f in CONFIG_FIELDS if f.by_base is not None}
BARE_FIELDS: frozenset[str] = frozenset({f.name for f in CONFIG_FIELDS if f.bare} | {"benchmark"})
#: environment fields that must agree between the two sides of every pair (or ``--allow-env-mismatch``)
ENV_FIELDS: tuple[str, ...] = ENV_MATCH_COLUMNS


@dataclass(frozen=True)
class Metric:
    """A ``--metric``: where its figure is, which way is better, how its ratio is estimated."""

    name: str
    column: str  # the CSV column of the row's own figure
    higher_is_better: bool
    kind: str  # "time", "rate", "exact" or "row" (see the module docstring)
    unit: str  # the display unit ("ms", "bytes", "MFU"); a rate may take it from ``unit_column``
    words: str  # what the header line says: "step time (lower is better)"
    axis: str  # the forest plot's axis label
    unit_column: str | None = None
    better: str = "faster"  # how a change phrase says the better direction ("1.3x faster")
    worse: str = "slower"
    # "row" metrics: the columns naming where a figure came from (two sides must agree), and the
    # sidecar record whose ``reason`` says why a row's cell is empty
    source_columns: tuple[str, ...] = ()
    sidecar_key: str | None = None


METRIC_LIST: tuple[Metric, ...] = (
    Metric(
        "time",
        "time_median_ms",
        False,
        "time",
        "ms",
        "step time (lower is better)",
        "NEW / BASE median step time (×; < 1: NEW is faster)",
    ),
    Metric(
        "throughput",
        "throughput",
        True,
        "rate",
        "items/s",
        "throughput (higher is better)",
        "NEW / BASE throughput (×; > 1: NEW is faster)",
        unit_column="throughput_unit",
    ),
    Metric(
        "memory",
        "peak_mem_bytes",
        False,
        "exact",
        "bytes",
        "peak memory, exact (lower is better)",
        "NEW / BASE peak memory (×; < 1: NEW uses less)",
    ),
    Metric(
        "mfu", "mfu", True, "rate", "MFU", "MFU (higher is better)", "NEW / BASE MFU (×; > 1: NEW is better)"
    ),
    # Per item, not per step: the two give the same ratio when items per step match, and per item
    # stays the energy of the same work when they do not (--by batch_size, a parallel job's global
    # batch against one process's batch).
    Metric(
        "energy",
        "energy_j_per_item",
        False,
        "row",
        "J/item",
        "energy per item (lower is better)",
        "NEW / BASE energy per item (×; < 1: NEW uses less)",
        better="less energy",
        worse="more energy",
        source_columns=("energy_source", "energy_scope", "energy_devices"),
        sidecar_key="energy",
    ),
)
METRICS_BY_NAME: dict[str, Metric] = {m.name: m for m in METRIC_LIST}
METRICS: tuple[str, ...] = tuple(METRICS_BY_NAME)
HIGHER_IS_BETTER: dict[str, bool] = {m.name: m.higher_is_better for m in METRIC_LIST}
MEMORY_COLUMN = METRICS_BY_NAME["memory"].column
FLOPS_COLUMN = "flops_per_step"
COMPILE_TIME_COLUMN = "compile_time_s"  # torch.compile's cold start: a compiled pair's break-even
VERDICTS: tuple[str, ...] = ("faster", "slower", "same", "inconclusive", "new", "missing", "failed")

__all__ = [
    "BARE_FIELDS",
    "COMPILE_TIME_COLUMN",
    "CONFIG_FIELDS",
    "DEFAULT_BASE",
    "ENV_FIELDS",
    "FLOPS_COLUMN",
    "HIGHER_IS_BETTER",
    "MATCH_FIELDS",
    "MEMORY_COLUMN",
    "METRICS",
    "METRICS_BY_NAME",
    "METRIC_LIST",
    "Metric",
    "VERDICTS",
    "ConfigField",
]
