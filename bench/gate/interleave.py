"""The gate's driver: BASE and NEW timed in alternating slices, in the same time windows, on this machine.

Why: separate runs drift up to 46 % here while each run's own CI says +-2 %, so a 10 % slowdown
is invisible when two runs made apart are compared. Timing both sides in alternating short slices
puts them in the same time windows; the drift is common to both and cancels in each slice's
ratio. The process is a unit of noise too (layout, allocator state), so there are several worker
processes per side.

How ``run_gate`` measures (``GateOptions``: W pairs, K slices of S seconds):

1. W worker pairs are started at once (``bench.gate.worker``), each worker building the
   configuration of its side once, as ``dlbench run`` builds it;
2. a warm-up round (one slice per worker, discarded) brings every worker to steady state;
3. K rounds; in each, pair ``w`` times one slice of BASE and one of NEW, back to back, in the order
   ``slice_order(round, w)``: BASE first when ``round + w`` is even, else NEW first, so each side
   goes first equally often and a drift within a round does not favour either side;
4. per slice pair, ``ratio = median(NEW step times) / median(BASE step times)``; the W x K ratios
   give ``bench.stats`` ``ratio_from_slices`` (median ratio, distribution-free CI of the median,
   exact sign test) and ``verdict(est, threshold)``: "slower" (a regression: the CI lies above 1
   and the ratio above 1 + threshold), "faster", "same" or "inconclusive".

Only one worker computes at any time (the others block on a pipe), so the sides never share the
cores with each other. Everything a gate starts or writes belongs to one owned entry
(``bench.owned``): the exported trees, and every worker (each in a process group of its own,
carrying the entry's marker). On every way out (error, timeout, SIGINT, SIGTERM) the workers'
groups and every marked process are killed and the entry removed, shielded from a second signal;
if the gate is killed outright, its guardian or the next dlbench command does it. A worker that
dies is a ``WorkerError`` naming it.

It fails closed. ``plan_gate`` checks every input before anything starts (``UsageError`` naming
the argument): threshold, scenario, preset, parameters, modes, precisions, the trees (an empty
``--base`` / ``--new`` is refused), that BASE and NEW differ in tree or parameters (unless ``aa``,
the A/A check of the gate's own noise), and that W x K slice ratios can give a bounded CI at all
(``check_slice_count``: at least 6 at 95 %; with fewer the CI is (0, inf) and a 2x slowdown would
pass as "inconclusive"). Once the workers are ready, the configurations they *built* (each tree
fills in its own defaults) must agree except where ``--base-param`` / ``--new-param`` asked them to
differ (``check_built``); otherwise a NEW tree that lowered a default would be reported faster.

``run_gate`` = materialize both trees + ``measure_trees``; ``measure_trees(plan, paths)`` measures
two trees already on disk and returns the ``GateResult`` (verdict, ratio, CI, slices), which is
what a bisection calls once per probe; its ``extend`` hook measures further rounds with the same
workers (a bisection's re-measurement of an inconclusive probe).

Library only (no rich, no typer); the CLI (``bench.cli.gate``) renders the result.
"""

from __future__ import annotations

import dataclasses
import math
import re
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.gate.trees import Tree, materialize, resolve_tree, same_tree
from bench.gate.worker import PLANT_ENV_VAR, WorkerClient, WorkerError, WorkerUsageError
from bench.signals import interrupted, shield

# run options a K=V may set per side (--new-param compile=default: what compiling buys, interleaved)
RUN_KEYS: tuple[str, ...] = ("mode", "precision", "checkpointing", "compile")
SIDES: tuple[str, ...] = ("base", "new")
DEFAULT_THRESHOLD = 0.05
KIND = "dlbench-gate"

Progress = Callable[[str, int, int], None]  # (stage, done, total): "start", "warmup", "measure"


@dataclass(frozen=True)
class GateOptions:
    """How the gate measures: W pairs, K measured slices per pair of S seconds each side."""

    slices: int = 12
    slice_time_s: float = 0.25
    pairs: int = 2
    threshold: float = DEFAULT_THRESHOLD
    confidence: float = 0.95
    startup_timeout_s: float = 600.0  # per worker: import, build and the first steps


@dataclass(frozen=True)
class Side:
    """One side of the comparison: a tree and what to build from it."""

    name: str  # "base" | "new"
    tree: Tree
    overrides: Mapping[str, Any]  # scenario parameters given for this side (parsed)
    given: Mapping[str, Any]  # every K=V given for this side (scenario parameters and run options)
    params: tuple[tuple[str, Any], ...]  # every parameter as this tree's registry resolves them
    mode: str
    precision: str
    checkpointing: str
    compile: str = "none"

    @property
    def label(self) -> str:
        """``origin/main (1a2b3c4) impl=torch ckpt=full``: the tree and what differs from the defaults."""
        parts = [self.tree.label]
        parts += [f"{k}={v}" for k, v in self.given.items()]
        return " ".join(parts)

    def run_options(self) -> dict[str, str]:
        """The run options the worker builds with (``compile`` only when compiled, so that a tree
        older than ``--compile`` can still be the eager side)."""
        opts = {"mode": self.mode, "precision": self.precision, "checkpointing": self.checkpointing}
        return {**opts, "compile": self.compile} if self.compile != "none" else opts


@dataclass(frozen=True)
class GatePlan:
    """A validated gate: both sides, the shared configuration, how to measure. Nothing started yet."""

    scenario: str
    preset: str
    device: str
    base: Side
    new: Side
    options: GateOptions
    seed: int = 0
    aa: bool = False

    def worker_config(self, side: Side) -> dict[str, Any]:
        """What a worker of ``side`` builds: the scenario parameters given (each tree keeps its
        defaults for the rest) and the run options, which are not scenario parameters."""
        return {
            "scenario": self.scenario,
            "preset": self.preset,
            "device": self.device,
            "seed": self.seed,
            "params": dict(side.overrides),
            **side.run_options(),
        }

    def config_dict(self) -> dict[str, Any]:
        """The shared configuration and measuring options (the JSON's ``config``)."""
        shared = {k: v for k, v in self.base.run_options().items() if self.new.run_options().get(k) == v}
        return {
            "scenario": self.scenario,
            "preset": self.preset,
            "device": self.device,
            "seed": self.seed,
            **shared,
            "slices": self.options.slices,
            "slice_time_s": self.options.slice_time_s,
            "pairs": self.options.pairs,
            "confidence": self.options.confidence,
            "aa": self.aa,
        }


# ------------------------------------------------------------------------------------------------
# input checks
# ------------------------------------------------------------------------------------------------
def parse_threshold(value: str | float | None) -> float:
    """``"5%"`` or ``0.05`` -> 0.05; ``UsageError`` naming ``--threshold`` for anything else."""
    if value is None:
        return DEFAULT_THRESHOLD
    if isinstance(value, bool):
        raise UsageError(
            f"--threshold: expected a percentage such as 5% or a fraction such as 0.05, got {value!r}"
        )
    text = str(value).strip()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*%", text)
    try:
        t = float(m.group(1)) / 100.0 if m else float(text)
    except ValueError:
        t = math.nan
    if not m and math.isfinite(t) and t >= 1.0:
        raise UsageError(
            f"--threshold: {text!r} reads as {t:.0%}; write a percentage (5%) or a fraction (0.05)"
        )
    if not (math.isfinite(t) and 0.0 <= t <= 10.0):
        raise UsageError(
            f"--threshold: expected a percentage such as 5% or a fraction such as 0.05, got {text!r}"
        )
    return t


def parse_assignments(items: Sequence[str] | Mapping[str, Any] | None, flag: str) -> dict[str, Any]:
    """``["impl=torch", "seq_len=64"]`` -> ``{"impl": "torch", "seq_len": "64"}``: one value each."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return {str(k): v for k, v in items.items()}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise UsageError(f"{flag}: expected KEY=VALUE, got {item!r}")
        if "," in value:
            raise UsageError(
                f"{flag}: the gate measures one configuration; give one value for {key!r}, got {value!r}"
            )
        out[key] = value
    return out


def min_slices(confidence: float = 0.95) -> int:
    """The fewest slice ratios whose order-statistic CI of the median is bounded (6 at 95 %)."""
    from bench.stats import order_stat_ranks

    n = 1
    while order_stat_ranks(n, confidence) is None:
        n += 1
    return n


def check_slice_count(
    slices: int,
    pairs: int = 1,
    *,
    confidence: float = 0.95,
    flag: str = "--slices",
    pairs_flag: str = "--pairs",
) -> None:
    """``UsageError`` when ``pairs x slices`` ratios cannot bound the CI, so no slowdown could fail.

    With fewer than ``min_slices`` ratios the distribution-free CI of the median is (0, inf): the
    verdict can never be "slower" (a gate) nor a CI above a limit (a perf check), and a planted 2x
    slowdown would exit 0. Shared by ``plan_gate`` and ``bench.gate.perf``.
    """
    need = min_slices(confidence)
    if slices * pairs >= need:
        return
    per = -(-need // pairs)  # ceil: slices per pair that reach ``need``
    shape = f"{flag} {slices} x {pairs_flag} {pairs}" if pairs_flag else f"{flag} {slices} x {pairs} pair(s)"
    raise UsageError(
        f"{flag}: {shape} = {slices * pairs} slice ratio(s), too few for a {confidence:.0%} CI "
        f"(at least {need}): the gate could never report a slowdown; use {flag} {per} or more"
    )


def _check_count(flag: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise UsageError(f"{flag}: expected an integer from {lo} to {hi}, got {value!r}")
    return value


def _check_choice(flag: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise UsageError(f"{flag}: unknown value {value!r}; expected one of {list(choices)}")
    return value


def plan_gate(
    scenario: str,
    *,
    base: str | None = None,
    new: str | None = None,
    params: Sequence[str] | Mapping[str, Any] | None = None,
    base_params: Sequence[str] | Mapping[str, Any] | None = None,
    new_params: Sequence[str] | Mapping[str, Any] | None = None,
    preset: str | None = None,
    mode: str | None = None,
    precision: str | None = None,
    checkpointing: str | None = None,
    compile: str | None = None,
    device: str | None = None,
    threshold: str | float | None = None,
    slices: int = GateOptions.slices,
    slice_time_s: float = GateOptions.slice_time_s,
    pairs: int = GateOptions.pairs,
    seed: int = 0,
    aa: bool = False,
    repo: Path | None = None,
) -> GatePlan:
    """Check every input of a gate (``UsageError`` naming the argument) and resolve the trees.

    ``params`` apply to both sides, ``base_params`` / ``new_params`` to one (they win); a key may
    be a scenario parameter or one of ``mode``, ``precision``, ``checkpointing``, ``compile`` (so
    ``--new-param checkpointing=full`` measures checkpointing's overhead, ``--new-param
    compile=default`` what compiling buys: each worker compiles while it builds, before any slice).
    Defaults: mode train, precision fp32, checkpointing none, compile none, preset default, device as
    ``dlbench run``'s.
    """
    from bench.registry import CHECKPOINTING, COMPILE_MODES, MODES, PRECISIONS, get_scenario
    from bench.run.grid import config_skip_reason
    from bench.run.plan import check_device, default_device

    t = parse_threshold(threshold)
    k = _check_count("--slices", slices, 1, 10_000)
    w = _check_count("--pairs", pairs, 1, 16)
    check_slice_count(k, w)
    try:
        s = float(slice_time_s)
    except (TypeError, ValueError):
        s = math.nan
    if not (math.isfinite(s) and 0.001 <= s <= 60.0):
        raise UsageError(f"--slice-time: expected seconds from 0.001 to 60, got {slice_time_s!r}")
    if not isinstance(scenario, str) or not scenario.strip():
        raise UsageError("scenario: give a scenario name (see `dlbench list`)")
    try:
        spec = get_scenario(scenario.strip())
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    preset = preset or "default"
    if preset not in spec.presets:
        raise UsageError(f"--preset: unknown preset {preset!r}; {spec.name!r} has {sorted(spec.presets)}")
    shared_run = {
        "mode": _check_choice("--mode", mode or "train", MODES),
        "precision": _check_choice("--precision", precision or "fp32", PRECISIONS),
        "checkpointing": _check_choice("--checkpointing", checkpointing or "none", CHECKPOINTING),
        "compile": _check_choice("--compile", compile or "none", COMPILE_MODES),
    }
    common = parse_assignments(params, "--param")
    per_side = {
        "base": parse_assignments(base_params, "--base-param"),
        "new": parse_assignments(new_params, "--new-param"),
    }
    dev = check_device(device if device is not None else default_device())
    trees = {
        "base": resolve_tree(base, flag="--base", repo=repo),
        "new": resolve_tree(new, flag="--new", repo=repo),
    }

    sides: dict[str, Side] = {}
    choices = dict(zip(RUN_KEYS, (MODES, PRECISIONS, CHECKPOINTING, COMPILE_MODES), strict=True))
    for name in SIDES:
        flag = f"--{name}-param"
        merged = {**common, **per_side[name]}
        run_opts = dict(shared_run)
        overrides: dict[str, Any] = {}
        for key, value in merged.items():
            label = flag if key in per_side[name] else "--param"
            if key in RUN_KEYS:
                run_opts[key] = _check_choice(f"{label} {key}", str(value), choices[key])
                continue
            try:
                overrides[key] = spec.coerce(key, value)
            except ValueError as exc:
                raise UsageError(f"{label}: {exc}") from None
        try:
            cfg = spec.make_config(preset, **overrides)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{flag}: {spec.name}: invalid configuration: {exc}") from None
        from bench.run.grid import RunConfig

        resolved = tuple((f, getattr(cfg, f)) for f in spec.parameters())
        probe = RunConfig(
            spec.name,
            run_opts["mode"],
            run_opts["precision"],
            run_opts["checkpointing"],
            dev,
            resolved,
            compile=run_opts["compile"],
        )
        why = config_skip_reason(spec, probe)
        if why is not None:
            raise UsageError(f"{name.upper()} cannot run here: {why}")
        given = {**overrides, **{k: run_opts[k] for k in RUN_KEYS if k in merged}}
        sides[name] = Side(name, trees[name], overrides, given, resolved, **run_opts)

    b, n = sides["base"], sides["new"]
    if not aa and same_tree(b.tree, n.tree) and b.params == n.params and b.run_options() == n.run_options():
        raise UsageError(
            f"--base/--new: BASE and NEW are the same tree ({b.tree.label}) with the same parameters; "
            "give --base REF|DIR, or --base-param/--new-param that differ (--aa for an A/A check)"
        )
    options = GateOptions(slices=k, slice_time_s=s, pairs=w, threshold=t)
    return GatePlan(spec.name, preset, dev, b, n, options, seed=seed, aa=aa)


# ------------------------------------------------------------------------------------------------
# measuring
# ------------------------------------------------------------------------------------------------
def slice_order(round_index: int, pair: int) -> tuple[str, str]:
    """Which side pair ``pair`` times first in round ``round_index``: BASE when ``round + pair`` is even."""
    return ("base", "new") if (round_index + pair) % 2 == 0 else ("new", "base")


@dataclass(frozen=True)
class SliceRecord:
    """One measured slice pair: both medians (ms), their sample counts, NEW/BASE."""

    round: int
    pair: int
    order: str  # "base-new" or "new-base"
    base_median_ms: float
    new_median_ms: float
    base_n: int
    new_n: int

    @property
    def ratio(self) -> float:
        return self.new_median_ms / self.base_median_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "pair": self.pair,
            "order": self.order,
            "ratio": self.ratio,
            "base_median_ms": self.base_median_ms,
            "new_median_ms": self.new_median_ms,
            "base_n": self.base_n,
            "new_n": self.new_n,
        }


def _finite(x: float | None) -> float | None:
    """JSON-safe: None for an unbounded end (inf) so the output is strict JSON."""
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass
class GateResult:
    """What a gate run found: the estimate, the verdict, every slice, the workers."""

    plan: GatePlan
    estimate: Any  # bench.stats RatioEstimate
    verdict: str
    slices: list[SliceRecord]
    workers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    elapsed_s: float = 0.0
    built: dict[str, dict[str, Any]] = field(default_factory=dict)  # what each side's workers built
    notes: list[str] = field(default_factory=list)

    @property
    def fail_closed(self) -> bool:
        """Inconclusive, and the median ratio itself lies beyond the threshold: the gate fails closed.

        The CI is too wide to call it "slower", but the data lean that way; passing it would let a
        2x slowdown through whenever one noisy slice widens the CI (at 6 slice ratios the CI is their
        (min, max)). More slices decide either way.
        """
        return (
            self.verdict == "inconclusive" and float(self.estimate.ratio) > 1.0 + self.plan.options.threshold
        )

    @property
    def exit_code(self) -> int:
        """1 on a significant regression beyond the threshold ("slower") or ``fail_closed``, else 0."""
        return 1 if self.verdict == "slower" or self.fail_closed else 0

    def side_dict(self, side: Side) -> dict[str, Any]:
        key = f"{side.name}_median_ms"
        medians = [getattr(s, key) for s in self.slices]
        return {
            **side.tree.to_dict(),
            "label": side.label,
            "params": dict(side.given),
            **side.run_options(),
            "median_ms": statistics.median(medians) if medians else None,
            "built": self.built.get(side.name, {}),
            "workers": self.workers.get(side.name, []),
        }

    def per_pair(self) -> list[dict[str, Any]]:
        """Median ratio of each worker pair (pairs that disagree show process-level noise)."""
        out = []
        for w in range(self.plan.options.pairs):
            rs = [s.ratio for s in self.slices if s.pair == w]
            if rs:
                out.append({"pair": w, "ratio": statistics.median(rs), "n": len(rs)})
        return out

    def to_dict(self) -> dict[str, Any]:
        """The ``--format json`` document (strict JSON: an unbounded CI end is null)."""
        est = self.estimate
        return {
            "kind": KIND,
            "version": 1,
            "scenario": self.plan.scenario,
            "config": self.plan.config_dict(),
            "threshold": self.plan.options.threshold,
            "ratio": float(est.ratio),
            "ci_low": _finite(est.ci_low),
            "ci_high": _finite(est.ci_high),
            "p_value": _finite(est.p_value),
            "confidence": float(est.confidence),
            "method": est.method,
            "n_slices": len(self.slices),
            "verdict": self.verdict,
            "fail_closed": self.fail_closed,
            "exit_code": self.exit_code,
            "note": getattr(est, "note", ""),
            "notes": list(self.notes),
            "per_pair": self.per_pair(),
            "slices": [s.to_dict() for s in self.slices],
            "base": self.side_dict(self.plan.base),
            "new": self.side_dict(self.plan.new),
            "elapsed_s": self.elapsed_s,
        }


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def _check_ready(client: WorkerClient, msg: Mapping[str, Any], tree_path: Path) -> dict[str, Any]:
    """The worker's ready message, checked: it imported ``bench`` from the tree it was given."""
    bench_file = Path(str(msg.get("bench_file", "")))
    if tree_path.resolve() not in bench_file.parents:
        raise WorkerError(
            f"{client.name} worker imported bench from {bench_file}, not from the tree {tree_path}"
        )
    keep = (
        "pid",
        "bench_file",
        "torch_version",
        "threads",
        "calls_per_sample",
        "est_step_ms",
        "plant_slowdown",
    )
    return {k: msg.get(k) for k in keep}


class ConfigMismatch(UsageError):
    """BASE and NEW built configurations that differ where nobody asked them to (exit 2)."""


def check_built(plan: GatePlan, built: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Compare what each side's workers built; ``ConfigMismatch`` on a difference nobody asked for.

    A key given with ``--base-param`` / ``--new-param`` may differ (that is the comparison). Any
    other scenario parameter or run option present on both sides must be equal: each tree fills in
    its own defaults, and a NEW tree that lowered one would otherwise be reported faster with the
    same parameters shown for both sides. A parameter only one tree has (NEW added it) is allowed
    and returned as a note.
    """
    asked = set(plan.base.given) | set(plan.new.given)
    b, n = built.get("base") or {}, built.get("new") or {}
    if not b or not n:
        return []
    bp, np_ = dict(b.get("params") or {}), dict(n.get("params") or {})
    diffs = [
        f"{k}: BASE {bp[k]!r}, NEW {np_[k]!r}" for k in bp if k in np_ and bp[k] != np_[k] and k not in asked
    ]
    diffs += [
        f"{k}: BASE {b.get(k)!r}, NEW {n.get(k)!r}"
        for k in ("preset", *RUN_KEYS, "device")
        if b.get(k) != n.get(k) and k not in asked
    ]
    if diffs:
        raise ConfigMismatch(
            "BASE and NEW built different configurations (each tree fills in its own defaults): "
            + "; ".join(diffs)
            + ". Pin them for both sides with -p KEY=VALUE, or compare them on purpose with "
            "--base-param/--new-param"
        )
    notes = [f"only BASE has parameter {k}={bp[k]!r}" for k in bp if k not in np_]
    notes += [f"only NEW has parameter {k}={np_[k]!r}" for k in np_ if k not in bp]
    return notes


def run_gate(
    plan: GatePlan,
    *,
    progress: Progress | None = None,
    on_workers: Callable[[list[int]], None] | None = None,
    new_env: Mapping[str, str | None] | None = None,
    owner: Any = None,
) -> GateResult:
    """Materialize both trees, then ``measure_trees``; everything it made is gone when it returns.

    ``owner``: the ``bench.owned.Owned`` entry to work in (a bisection keeps one for all its
    probes); by default a fresh one, with a guardian, removed on the way out.
    """
    if owner is None:
        from bench.owned import owned

        with owned("gate", guard=True) as mine:
            return run_gate(plan, progress=progress, on_workers=on_workers, new_env=new_env, owner=mine)
    with ExitStack() as stack:
        paths: dict[str, Path] = {"base": stack.enter_context(materialize(plan.base.tree, owner=owner))}
        if same_tree(plan.base.tree, plan.new.tree):
            paths["new"] = paths["base"]
        else:
            paths["new"] = stack.enter_context(materialize(plan.new.tree, owner=owner))
        return measure_trees(
            plan, paths, progress=progress, on_workers=on_workers, new_env=new_env, owner=owner
        )


def measure_trees(
    plan: GatePlan,
    paths: Mapping[str, Path],
    *,
    progress: Progress | None = None,
    on_workers: Callable[[list[int]], None] | None = None,
    new_env: Mapping[str, str | None] | None = None,
    owner: Any = None,
    extend: Callable[[GateResult], int | None] | None = None,
) -> GateResult:
    """Measure ``plan`` with BASE's code from ``paths["base"]`` and NEW's from ``paths["new"]``.

    Returns the ``GateResult`` (verdict, ratio and CI, every slice). ``new_env`` adds environment
    entries for NEW's workers. ``DLBENCH_PLANT_SLOWDOWN`` from this process's environment reaches
    NEW's workers only (BASE's never see it), so a planted slowdown is always in NEW. ``owner``
    (``bench.owned.Owned``) marks every worker, so none can outlive it. ``on_workers`` receives the
    worker pids once they are started (tests check that none outlives the gate). Raises
    ``WorkerError`` when a worker dies, times out or fails, ``UsageError`` when a tree rejects the
    configuration, ``ConfigMismatch`` when the sides built different configurations, after
    killing every worker (shielded from a second signal).

    ``extend(result)`` is called with each result while the workers still run: a slice count larger
    than the rounds measured so far measures further rounds with the same workers (no new start, no
    new warm-up), and the result then covers every round (its plan's ``options.slices`` says how
    many); None stops. A bisection re-measures an inconclusive probe with twice the slices this way.
    """
    from bench.stats.compare import ratio_from_slices, verdict

    opts = plan.options
    t_start = time.monotonic()
    marker: dict[str, str] = dict(owner.env) if owner is not None else {}
    envs: dict[str, Mapping[str, str | None]] = {
        "base": {**marker, PLANT_ENV_VAR: None},
        "new": {**marker, **dict(new_env or {})},
    }
    with ExitStack() as stack:
        sides = {"base": plan.base, "new": plan.new}
        workers: dict[str, list[WorkerClient]] = {"base": [], "new": []}

        def close(client: WorkerClient) -> None:
            client.close(hurry=interrupted() is not None)

        for w in range(opts.pairs):
            for name in SIDES:
                client = WorkerClient(
                    f"{name.upper()}[{w}]", paths[name], plan.worker_config(sides[name]), env=envs[name]
                )
                stack.callback(shield(close), client)
                workers[name].append(client)
        everyone = [c for name in SIDES for c in workers[name]]
        if on_workers is not None:
            on_workers([c.pid for c in everyone])
        info: dict[str, list[dict[str, Any]]] = {"base": [], "new": []}
        built: dict[str, dict[str, Any]] = {}
        for i, (name, client) in enumerate((side, c) for side in SIDES for c in workers[side]):
            if progress is not None:
                progress("start", i, len(everyone))
            try:
                msg = client.wait_ready(opts.startup_timeout_s)
            except WorkerUsageError as exc:
                raise UsageError(str(exc)) from None
            info[name].append(_check_ready(client, msg, paths[name]))
            built.setdefault(name, dict(msg.get("built") or {}))
        notes = check_built(plan, built)

        done = 0
        records: list[SliceRecord] = []

        def measure_rounds(first: int, stop: int) -> None:
            """Rounds ``first`` .. ``stop - 1`` of every pair (round -1: the warm-up, discarded)."""
            nonlocal done
            total = (stop + 1) * opts.pairs * 2
            for r in range(first, stop):
                for w in range(opts.pairs):
                    order = slice_order(r, w)
                    medians: dict[str, tuple[float, int]] = {}
                    for name in order:
                        times = workers[name][w].slice(opts.slice_time_s)
                        medians[name] = (_median(times), len(times))
                        done += 1
                        if progress is not None:
                            progress("warmup" if r < 0 else "measure", done, total)
                    if r >= 0:
                        records.append(
                            SliceRecord(
                                round=r,
                                pair=w,
                                order="-".join(order),
                                base_median_ms=medians["base"][0],
                                new_median_ms=medians["new"][0],
                                base_n=medians["base"][1],
                                new_n=medians["new"][1],
                            )
                        )

        def result(rounds: int) -> GateResult:
            est = ratio_from_slices([s.ratio for s in records], confidence=opts.confidence)
            word = verdict(est, threshold=opts.threshold)
            measured = plan
            if rounds != opts.slices:
                measured = dataclasses.replace(plan, options=dataclasses.replace(opts, slices=rounds))
            elapsed = time.monotonic() - t_start
            return GateResult(
                measured, est, word, list(records), info, elapsed_s=elapsed, built=built, notes=notes
            )

        rounds = opts.slices
        measure_rounds(-1, rounds)
        res = result(rounds)
        while extend is not None:
            more = extend(res)
            if more is None or more <= rounds:
                break
            measure_rounds(rounds, more)
            rounds = more
            res = result(rounds)
    return res


# ------------------------------------------------------------------------------------------------
# rendering (no rich: the CLI draws the table)
# ------------------------------------------------------------------------------------------------
def fmt_ratio_ci(d: Mapping[str, Any]) -> str:
    """``1.032 [0.998, 1.061]`` from a result dict (``inf`` for an unbounded end)."""
    lo = d.get("ci_low")
    hi = d.get("ci_high")
    lo_s = f"{lo:.3f}" if lo is not None else "0"
    hi_s = f"{hi:.3f}" if hi is not None else "inf"
    return f"{d['ratio']:.3f} [{lo_s}, {hi_s}]"


def built_text(side: Mapping[str, Any]) -> str:
    """``preset=tiny train fp32 ckpt=none | batch_size=2 seq_len=64``: what a side's workers built."""
    b = side.get("built") or {}
    if not b:
        return "-"
    head = f"preset={b.get('preset')} {b.get('mode')} {b.get('precision')} ckpt={b.get('checkpointing')}"
    if b.get("compile", "none") != "none":
        head += f" compile={b['compile']}"
    params = " ".join(f"{k}={v}" for k, v in (b.get("params") or {}).items())
    return f"{head} | {params}" if params else head


FAIL_CLOSED_TEXT = "the median ratio is beyond the threshold, so the gate fails closed (exit 1)"

VERDICT_TEXT = {
    "slower": "REGRESSION: NEW is slower beyond the threshold",
    "faster": "NEW is faster beyond the threshold",
    "same": "no material change",
    "inconclusive": "the CI is wider than the threshold band (add --slices)",
}


def render_markdown(d: Mapping[str, Any]) -> str:
    """The ``--format markdown`` text of a result dict (``GateResult.to_dict()``), e.g. for a PR comment."""
    from bench.report.format import fmt

    cfg = d["config"]
    run = " ".join(str(cfg[k]) for k in RUN_KEYS if k in cfg)
    lines = [
        f"### dlbench gate: `{d['scenario']}` ({cfg['preset']}, {run}, {cfg['device']})".replace(" , ", " "),
        "",
        f"**{d['verdict']}** — {VERDICT_TEXT.get(d['verdict'], '')}"
        + (f"; {FAIL_CLOSED_TEXT}" if d.get("fail_closed") else ""),
        "",
        "| | source | built | median step (ms) |",
        "|---|---|---|---|",
    ]
    for name in SIDES:
        side = d[name]
        lines.append(
            f"| {name.upper()} | `{side['label']}` | `{built_text(side)}` | {fmt(side['median_ms'], '.4g')} |"
        )
    p = d.get("p_value")
    lines += [
        "",
        f"NEW/BASE = **{fmt_ratio_ci(d)}** "
        f"({d['confidence']:.0%} CI over {d['n_slices']} interleaved slices, "
        f"sign-test p = {fmt(p, '.3g') if p is not None else '-'}), threshold {d['threshold']:.1%}; "
        f"{cfg['pairs']} worker pairs x {cfg['slices']} slices of {cfg['slice_time_s']:g} s; "
        f"{d['elapsed_s']:.1f} s.",
    ]
    if len(d.get("per_pair", [])) > 1:
        lines.append("Per pair: " + ", ".join(f"{p_['ratio']:.3f}" for p_ in d["per_pair"]) + ".")
    lines += [f"Note: {n}" for n in d.get("notes", [])]
    return "\n".join(lines) + "\n"
