"""``dlbench compare``: NEW vs BASE per configuration, with an interval that says which noise it covers.

The roles are split by module:

- ``compare_spec``: what is matched on (``CONFIG_FIELDS``) and compared (``METRICS``), one table each;
- ``compare_inputs``: reading the inputs (``load_side``: results CSVs through the one loader,
  pytest-benchmark JSON, folders of them) into ``Result`` s, one per row;
- ``compare_pairs``: one configuration's ratio, CI and verdict (``make_pair``);
- here: whole comparisons -- ``compare(base, new)`` and ``compare_by(results, axis)`` -- and the
  checks across pairs (the environment, pair by pair).

Rows are matched by configuration (``MATCH_FIELDS`` and every ``param_*``), never by run identity
(run_id, timestamp, git_commit, elapsed). Every ok row on a side is one *process*: several files of
separate runs, or a ``--repeat R`` row (R processes in its sidecar), give several per side; the
same row twice (a file given twice, a row repeated) is still one.

Environments (``ENV_FIELDS``) are compared pair by pair: a pair whose BASE and NEW rows come from
different environments (a CPU-A row against a CPU-B row) is refused (``EnvMismatchError`` lists
the fields) unless ``allow_env_mismatch=True``, which labels the result and each such pair; where
the devices differ the device then leaves the match key.

``compare_by(side, axis, base_value)``: within ONE set of results, each value of ``axis``
(precision, checkpointing, parallel, mode, or a parameter such as ``seq_len``) against the base value,
for every configuration of the other fields; its pairs are checked for the environment the same way.

Torch-free, rich-free (only the standard library, numpy and scipy through ``bench.stats``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.results.compare_inputs import (
    CompareInputError,
    Process,
    Result,
    Side,
    load_side,
    norm,
    num,
    results_of_benchmarks,
    results_of_table,
)
from bench.results.compare_pairs import CONFIDENCE, Group, Pair, compare_notes, estimate_pair, make_pair
from bench.results.compare_spec import (
    BARE_FIELDS,
    DEFAULT_BASE,
    ENV_FIELDS,
    HIGHER_IS_BETTER,
    MATCH_FIELDS,
    MEMORY_COLUMN,
    METRICS,
    VERDICTS,
)
from bench.results.loader import check_distinct
from bench.results.schema import PARAM_PREFIX, REQUIRED_COLUMNS

DEFAULT_THRESHOLD = 0.05


class EnvMismatchError(CompareInputError):
    """BASE and NEW come from different environments; ``fields`` lists what differs."""

    def __init__(self, message: str, fields: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.fields = fields


def parse_threshold(value: str | float | None) -> float:
    """``"5%"`` or ``0.05`` -> 0.05; a bare number must be a fraction in [0, 1) (``5`` is refused)."""
    if value is None:
        return DEFAULT_THRESHOLD
    text = str(value).strip()
    try:
        t = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        expected = "a percentage such as 5% or a fraction such as 0.05"
        raise CompareInputError(f"--threshold: expected {expected}, got {text!r}") from None
    if not text.endswith("%") and t >= 1.0:
        raise CompareInputError(
            f"--threshold: {text} is not a fraction; write {text}% (or {t / 100:g}) for {t:g} percent"
        )
    if not (math.isfinite(t) and 0.0 <= t < 1.0):
        raise CompareInputError(f"--threshold: must be between 0% and 100%, got {text!r}")
    return t


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise CompareInputError(f"--metric: unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    return metric


@dataclass
class Comparison:
    """A whole ``dlbench compare``: every pair, the inputs, and what the environments differ in."""

    metric: str
    threshold: float
    base: list[str]
    new: list[str]
    pairs: list[Pair]
    env_mismatch: list[dict[str, Any]] = field(default_factory=list)
    allow_env_mismatch: bool = False
    by: dict[str, str] | None = None  # {"axis", "base_value"} for compare_by
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Pair]:
        return [p for p in self.pairs if p.regression]

    @property
    def noisy_regressions(self) -> list[Pair]:
        """Pairs that would be "slower" but rest on a row flagged noisy (their verdict is inconclusive)."""
        return [p for p in self.pairs if p.noisy and p.verdict_clean == "slower"]

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.pairs:
            out[p.verdict] = out.get(p.verdict, 0) + 1
        return out

    @property
    def env_label(self) -> str:
        """``"ENVIRONMENTS DIFFER: torch_version, threads"`` when allowed to differ, else ""."""
        if not self.env_mismatch:
            return ""
        return "ENVIRONMENTS DIFFER: " + ", ".join(m["field"] for m in self.env_mismatch)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "dlbench-compare",
            "version": 1,
            "metric": self.metric,
            "threshold": self.threshold,
            "confidence": CONFIDENCE,
            "base": list(self.base),
            "new": list(self.new),
            "by": dict(self.by) if self.by else None,
            "env_mismatch": [dict(m) for m in self.env_mismatch],
            "allow_env_mismatch": self.allow_env_mismatch,
            "env_label": self.env_label,
            "counts": self.counts,
            "notes": list(self.notes),
            "pairs": [p.to_dict() for p in self.pairs],
        }


def env_differences(
    pairs: Sequence[Pair], base: Side | None = None, new: Side | None = None
) -> list[dict[str, Any]]:
    """Each ``ENV_FIELDS`` field that differs within some pair: the values on each side, how many pairs.

    Checked pair by pair (a CPU-A row against a CPU-B row differs even when both sides hold both
    CPUs). ``base``/``new``: also the devices of whole sides (their rows never pair when they differ).
    """
    found: dict[str, dict[str, Any]] = {}
    for p in pairs:
        for d in p.env_diff:
            m = found.setdefault(d["field"], {"field": d["field"], "base": set(), "new": set(), "pairs": 0})
            m["base"].update(d["base"])
            m["new"].update(d["new"])
            m["pairs"] += 1
    if base is not None and new is not None and "device" not in found:
        b = {r.env["device"] for r in base.results if "device" in r.env}
        n = {r.env["device"] for r in new.results if "device" in r.env}
        if b and n and not (b & n):
            found["device"] = {"field": "device", "base": b, "new": n, "pairs": 0}
    order = {f: i for i, f in enumerate(ENV_FIELDS)}
    return [
        {**m, "base": sorted(m["base"]), "new": sorted(m["new"])}
        for m in sorted(found.values(), key=lambda m: order.get(m["field"], 99))
    ]


def _refuse_env(mismatch: list[dict[str, Any]], what: str) -> EnvMismatchError:
    detail = "; ".join(
        f"{m['field']}: {'/'.join(m['base'])} vs {'/'.join(m['new'])}"
        + (f" ({m['pairs']} pair(s))" if m.get("pairs") else "")
        for m in mismatch
    )
    return EnvMismatchError(
        f"{what} come from different environments ({detail}); "
        "pass --allow-env-mismatch to compare anyway (the output is labelled)",
        mismatch,
    )


def _groups(results: Iterable[Result], drop: Iterable[str] = ()) -> dict[tuple[tuple[str, str], ...], Group]:
    out: dict[tuple[tuple[str, str], ...], Group] = {}
    drop = tuple(drop)
    for r in results:
        k = r.key(drop)
        g = out.setdefault(k, Group({a: b for a, b in k}))
        g.results.append(r)
    return out


def _key_text(key: tuple[tuple[str, str], ...]) -> str:
    return "|".join(f"{k}={v}" for k, v in key)


_LABEL_ORDER = (
    "scenario", "mode", "precision", "checkpointing", "compile", "parallel", "world_size", "device",
)  # fmt: skip
_ALWAYS = ("scenario", "mode", "precision", "benchmark")


def _short(field_name: str) -> str:
    return field_name.removeprefix(PARAM_PREFIX)


def labels_for(configs: Sequence[Mapping[str, str]], *, always: Sequence[str] = _ALWAYS) -> list[str]:
    """Short unique labels: the ``always`` fields, then every other field whose value varies."""
    names: list[str] = []
    for c in configs:
        for k in c:
            if k not in names:
                names.append(k)
    ordered = [n for n in _LABEL_ORDER if n in names] + sorted(n for n in names if n not in _LABEL_ORDER)
    varying = [n for n in ordered if len({c.get(n, "") for c in configs}) > 1]
    shown = [n for n in ordered if n in always or n in varying]
    out = []
    for c in configs:
        parts = []
        for n in shown:
            v = c.get(n, "")
            if n in ("scenario", "mode", "precision", "benchmark"):
                parts.append(v)
            elif n == "checkpointing":
                parts.append(f"ckpt={v}")
            else:
                parts.append(f"{_short(n)}={v}")
        out.append(" ".join(p for p in parts if p))
    return out


def _shared_runs(base: Side, new: Side) -> list[str]:
    """A note when NEW repeats rows of BASE (the same run_id): a run compared with itself."""
    b = {r.run_id for r in base.results if r.run_id}
    shared = sorted(b & {r.run_id for r in new.results if r.run_id})
    if not shared:
        return []
    return [
        f"base and new share {len(shared)} run(s) ({', '.join(shared[:3])}): those rows are compared with "
        "themselves"
    ]


def compare(
    base: Sequence[str | Path] | Side,
    new: Sequence[str | Path] | Side,
    *,
    metric: str = "time",
    threshold: float | str = DEFAULT_THRESHOLD,
    allow_env_mismatch: bool = False,
) -> Comparison:
    """NEW vs BASE for every configuration on either side (see the module docstring).

    ``CompareInputError`` for unreadable input, a file given on both sides, or two inputs with
    nothing in common; ``EnvMismatchError`` (a ``CompareInputError``) when a pair's environments
    differ and ``allow_env_mismatch`` is False.
    """
    metric = check_metric(metric)
    t = parse_threshold(threshold)
    b_side = base if isinstance(base, Side) else load_side(base)
    n_side = new if isinstance(new, Side) else load_side(new)
    check_distinct([*b_side.files, *n_side.files], "file (on both sides)")
    b_dev = {r.config.get("device") for r in b_side.results}
    n_dev = {r.config.get("device") for r in n_side.results}
    devices_differ = bool(b_dev) and bool(n_dev) and not (b_dev & n_dev)
    if devices_differ and not allow_env_mismatch:
        raise _refuse_env(env_differences([], b_side, n_side), "base and new")
    drop = ("device",) if devices_differ else ()
    bg, ng = _groups(b_side.results, drop), _groups(n_side.results, drop)
    common = [k for k in bg if k in ng]
    if not common:
        raise CompareInputError(
            f"nothing in common: base has {len(bg)} configuration(s) ({_what(b_side)}), new has {len(ng)} "
            f"({_what(n_side)}); none match on {', '.join(MATCH_FIELDS)} and the parameters"
        )
    keys = list(bg) + [k for k in ng if k not in bg]
    configs = [(bg.get(k) or ng[k]).config for k in keys]
    labels = labels_for(configs)
    pairs = [
        make_pair(lab, _key_text(k), bg.get(k), ng.get(k), metric=metric, threshold=t)
        for lab, k in zip(labels, keys, strict=True)
    ]
    mismatch = env_differences(pairs, b_side, n_side)
    if mismatch and not allow_env_mismatch:
        raise _refuse_env(mismatch, "base and new")
    return Comparison(
        metric=metric,
        threshold=t,
        base=b_side.paths,
        new=n_side.paths,
        pairs=pairs,
        env_mismatch=mismatch,
        allow_env_mismatch=allow_env_mismatch,
        notes=b_side.notes + n_side.notes + _shared_runs(b_side, n_side) + compare_notes(pairs),
    )


def _what(side: Side) -> str:
    scen = sorted({r.config.get("scenario") or r.config.get("benchmark", "?") for r in side.results})
    shown = ", ".join(scen[:3]) + (", ..." if len(scen) > 3 else "")
    return shown


def axis_field(axis: str, side: Side) -> str:
    """The config field of ``axis``: a core field, ``param_<axis>``, or ``CompareInputError``."""
    fields = {k for r in side.results for k in r.config}
    for cand in (axis, f"{PARAM_PREFIX}{axis}"):
        if cand in fields:
            return cand
    choices = sorted({_short(f) for f in fields})
    raise CompareInputError(f"--by: unknown axis {axis!r}; these results have {', '.join(choices)}")


#: fields that change together with a ``--by`` axis: one process against a parallel job is a
#: comparison across world sizes too, so ``--by parallel`` pairs each strategy's rows (at their world
#: size, which the label shows) with the ``parallel=none`` row of the same configuration
BY_COMPANIONS: dict[str, tuple[str, ...]] = {"parallel": ("world_size",)}


def _sort_key(v: str) -> tuple[int, float, str]:
    f = num(v)
    return (0, f, v) if f is not None else (1, 0.0, v)


def compare_by(
    results: Sequence[str | Path] | Side,
    axis: str,
    base_value: str | None = None,
    *,
    metric: str = "time",
    threshold: float | str = DEFAULT_THRESHOLD,
    allow_env_mismatch: bool = False,
) -> Comparison:
    """Within one set of results: each value of ``axis`` vs ``base_value``, per configuration.

    ``base_value`` defaults to ``DEFAULT_BASE[axis]`` where the results have it (fp32, none), else
    the smallest value (numbers ascending). Pairs are labelled by the other varying fields and the
    axis value (``"train amp-bf16"``); configurations without a base-value row are ``new``. A pair
    whose two rows come from different environments is refused unless ``allow_env_mismatch``.
    """
    metric = check_metric(metric)
    t = parse_threshold(threshold)
    side = results if isinstance(results, Side) else load_side(results)
    fname = axis_field(axis, side)
    values = sorted({r.config.get(fname, "") for r in side.results}, key=_sort_key)
    if len(values) < 2:
        raise CompareInputError(
            f"--by {axis}: every row has {_short(fname)}={values[0] if values else '?'}; nothing to compare"
        )
    if base_value is None:
        default = DEFAULT_BASE.get(fname)
        base = default if default in values else values[0]
    else:
        base = norm(base_value)
        if base not in values:
            raise CompareInputError(
                f"--base: {_short(fname)}={base_value} is not in these results; values: {', '.join(values)}"
            )
    companions = BY_COMPANIONS.get(fname, ())
    groups = _groups(side.results, drop=(fname, *companions))
    rows: list[tuple[dict[str, str], str, Group | None, Group]] = []
    for key in groups:
        by_value: dict[str, list[Group]] = {}
        for g in _groups(groups[key].results).values():
            by_value.setdefault(g.config.get(fname, ""), []).append(g)
        base_groups = by_value.get(base, [])
        b = base_groups[0] if len(base_groups) == 1 else None
        for v in values:
            if v == base:
                continue
            for n in by_value.get(v, []):
                rows.append((dict(key), v, b, n))
    if not rows:
        raise CompareInputError(f"--by {axis}: no configuration has another value than {base}")
    ctx_labels = labels_for([c for c, *_ in rows])
    pairs = []
    for (ctx, v, b, n), ctx_label in zip(rows, ctx_labels, strict=True):
        shown = v if fname in BARE_FIELDS else f"{_short(fname)}={v}"
        # a companion's value (ddp's world size) is part of what NEW is: the label says it
        comp = {c: n.config.get(c, "") for c in companions}
        shown = " ".join([shown, *(f"{_short(c)}={x}" for c, x in comp.items())])
        label = f"{ctx_label} {shown}".strip()
        key_text = _key_text(tuple(sorted({**ctx, **comp, fname: v}.items())))
        pairs.append(make_pair(label, key_text, b, n, metric=metric, threshold=t))
    mismatch = env_differences(pairs)
    if mismatch and not allow_env_mismatch:
        raise _refuse_env(mismatch, f"rows compared along {_short(fname)}")
    return Comparison(
        metric=metric,
        threshold=t,
        base=side.paths,
        new=side.paths,
        pairs=pairs,
        env_mismatch=mismatch,
        allow_env_mismatch=allow_env_mismatch,
        by={"axis": _short(fname), "base_value": base},
        notes=side.notes + compare_notes(pairs),
    )


__all__ = [
    "CONFIDENCE",
    "DEFAULT_BASE",
    "DEFAULT_THRESHOLD",
    "ENV_FIELDS",
    "HIGHER_IS_BETTER",
    "MATCH_FIELDS",
    "MEMORY_COLUMN",
    "METRICS",
    "REQUIRED_COLUMNS",
    "VERDICTS",
    "CompareInputError",
    "Comparison",
    "EnvMismatchError",
    "Group",
    "Pair",
    "Process",
    "Result",
    "Side",
    "axis_field",
    "check_metric",
    "compare",
    "compare_by",
    "env_differences",
    "estimate_pair",
    "labels_for",
    "load_side",
    "make_pair",
    "norm",
    "parse_threshold",
    "results_of_benchmarks",
    "results_of_table",
]
