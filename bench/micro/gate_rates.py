"""How often does a comparison cry wolf, and how often does it catch a real 10 % slowdown? Measured here.

    python -m bench.micro.gate_rates                     # 20 trials of each, attention train fp32
    python -m bench.micro.gate_rates --runs 5 --scenario encoder --json rates.json

Two ways of comparing BASE with NEW, side by side, on this machine, N trials each:

* **gate** -- ``dlbench gate SCENARIO --aa`` (the same tree against itself, interleaved slices,
  threshold 5 %, the gate's default slices and pairs), as a subprocess, the way CI runs it:
  - A/A: a "slower" verdict is a false regression, and any exit 1 (also an inconclusive result
    whose median ratio is beyond the threshold: the gate fails closed) a false alarm;
  - A/B: the same with ``DLBENCH_PLANT_SLOWDOWN=0.10`` (NEW's workers busy-wait 10 % of each
    step's own time inside the timed step); "slower" is a detection, exit 1 a failed gate;
* **separate runs** -- two ``dlbench run SCENARIO --mode train`` processes made one after the
  other (BASE then NEW, default measuring options), compared with ``bench.stats``
  ``ratio_from_samples`` on their sidecar raw samples and the same ``verdict`` at the same
  threshold: A/A as measured; A/B with NEW's raw samples multiplied by 1.10 -- the same exact
  proportional slowdown the worker plants (``dlbench run`` has no planting hook).

Trials of the three kinds alternate (gate A/A, gate A/B, separate pair), so a change in how busy
the machine is affects each kind alike. It prints the rates, the ratios' spread and the wall time
of one comparison, and with ``--json FILE`` writes every trial. Not a test: it takes about
N x 1 minute on 2 cores, and other processes on the cores change what it measures (run it on a
quiet machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Trial:
    """One comparison: its kind, ratio (NEW/BASE), CI, verdict, and wall time."""

    kind: str  # "gate-aa", "gate-ab", "separate-aa", "separate-ab"
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    verdict: str
    wall_s: float
    error: str = ""
    exit_code: int | None = None  # the gate's (exit 1: "slower", or failed closed); None for separate runs


@dataclass
class Rates:
    """Every trial of a ``gate_rates`` run and the options it ran with."""

    scenario: str
    preset: str
    runs: int
    threshold: float
    plant: float
    trials: list[Trial] = field(default_factory=list)

    def of(self, kind: str) -> list[Trial]:
        return [t for t in self.trials if t.kind == kind]

    def summary(self) -> dict[str, Any]:
        """Per kind: how many trials said "slower", the ratios' median and range, the median wall time."""
        out: dict[str, Any] = {}
        for kind in ("gate-aa", "gate-ab", "separate-aa", "separate-ab"):
            ts = self.of(kind)
            ok = [t for t in ts if not t.error]
            ratios = [t.ratio for t in ok if t.ratio is not None]
            out[kind] = {
                "n": len(ok),
                "errors": len(ts) - len(ok),
                "slower": sum(t.verdict == "slower" for t in ok),
                "exit_1": sum(t.exit_code == 1 for t in ok),
                "verdicts": {
                    v: sum(t.verdict == v for t in ok) for v in ("slower", "same", "faster", "inconclusive")
                },
                "ratio_median": statistics.median(ratios) if ratios else None,
                "ratio_min": min(ratios) if ratios else None,
                "ratio_max": max(ratios) if ratios else None,
                "wall_s_median": statistics.median([t.wall_s for t in ok]) if ok else None,
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "dlbench-gate-rates",
            "scenario": self.scenario,
            "preset": self.preset,
            "runs": self.runs,
            "threshold": self.threshold,
            "plant": self.plant,
            "summary": self.summary(),
            "trials": [asdict(t) for t in self.trials],
        }


def _python() -> list[str]:
    return [sys.executable, "-m", "bench.cli"]


def gate_trial(scenario: str, preset: str, threshold: float, plant: float, extra: list[str]) -> Trial:
    """One ``dlbench gate --aa`` subprocess; ``plant > 0`` plants that slowdown in NEW."""
    env = {k: v for k, v in os.environ.items() if k != "DLBENCH_PLANT_SLOWDOWN"}
    if plant > 0:
        env["DLBENCH_PLANT_SLOWDOWN"] = repr(plant)
    cmd = [*_python(), "gate", scenario, "--aa", "--preset", preset, "--device", "cpu",
           "--threshold", repr(threshold), "--format", "json", *extra]  # fmt: skip
    kind = "gate-ab" if plant > 0 else "gate-aa"
    t0 = time.monotonic()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - t0
    try:
        d = json.loads(res.stdout)
    except json.JSONDecodeError:
        return Trial(kind, None, None, None, "error", wall, error=(res.stderr or res.stdout).strip()[-500:])
    return Trial(kind, d["ratio"], d["ci_low"], d["ci_high"], d["verdict"], wall, exit_code=res.returncode)


def _run_samples(scenario: str, preset: str, out: Path) -> list[float]:
    """Raw per-step samples (ms) of one ``dlbench run SCENARIO --mode train`` process."""
    from bench.results import load_samples

    cmd = [*_python(), "run", scenario, "--mode", "train", "--precision", "fp32", "--preset", preset,
           "--device", "cpu", "--out", str(out)]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    records = [r for r in load_samples(out) if r.get("status") == "ok" and r.get("samples_ms")]
    if res.returncode != 0 or not records:
        raise RuntimeError(
            f"dlbench run failed ({res.returncode}): {(res.stderr or res.stdout).strip()[-300:]}"
        )
    return [float(x) for x in records[-1]["samples_ms"]]


def separate_trials(
    scenario: str, preset: str, threshold: float, plant: float, workdir: Path, i: int
) -> list[Trial]:
    """Two separate ``dlbench run`` processes, BASE then NEW: the A/A trial and the scaled A/B trial."""
    from bench.stats.compare import ratio_from_samples, verdict

    t0 = time.monotonic()
    try:
        base = _run_samples(scenario, preset, workdir / f"sep{i}_base.csv")
        new = _run_samples(scenario, preset, workdir / f"sep{i}_new.csv")
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        wall = time.monotonic() - t0
        return [
            Trial(k, None, None, None, "error", wall, error=str(exc)) for k in ("separate-aa", "separate-ab")
        ]
    wall = time.monotonic() - t0
    out = []
    for kind, factor in (("separate-aa", 1.0), ("separate-ab", 1.0 + plant)):
        est = ratio_from_samples(base, [x * factor for x in new])
        out.append(Trial(kind, est.ratio, est.ci_low, est.ci_high, verdict(est, threshold=threshold), wall))
    return out


def measure(
    scenario: str = "attention",
    *,
    preset: str = "default",
    runs: int = 20,
    threshold: float = 0.05,
    plant: float = 0.10,
    gate_args: list[str] | None = None,
    separate: bool = True,
    log: Any = None,
) -> Rates:
    """``runs`` trials of each kind, alternating (see the module docstring)."""
    rates = Rates(scenario, preset, runs, threshold, plant)
    with tempfile.TemporaryDirectory(prefix="dlbench-gate-rates-") as tmp:
        for i in range(runs):
            new = [gate_trial(scenario, preset, threshold, 0.0, gate_args or [])]
            new.append(gate_trial(scenario, preset, threshold, plant, gate_args or []))
            if separate:
                new += separate_trials(scenario, preset, threshold, plant, Path(tmp), i)
            rates.trials += new
            if log is not None:
                parts = [f"{t.kind} {t.verdict}" + (f" {t.ratio:.3f}" if t.ratio else "") for t in new]
                print(f"[{i + 1}/{runs}] " + ", ".join(parts), file=log, flush=True)
    return rates


def _fmt(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def render(rates: Rates) -> str:
    """The side-by-side table: false regressions (A/A), detections (A/B), spread, time per comparison."""
    s = rates.summary()

    def rate(kind: str) -> str:
        d = s[kind]
        if not d["n"]:
            return "-"
        err = f" ({d['errors']} err)" if d["errors"] else ""
        return f"{d['slower']}/{d['n']} ({d['slower'] / d['n']:.0%}){err}"

    def spread(kind: str) -> str:
        d = s[kind]
        return f"{_fmt(d['ratio_median'])} [{_fmt(d['ratio_min'])}, {_fmt(d['ratio_max'])}]"

    def exits(kind: str) -> str:
        d = s[kind]
        return f"{d['exit_1']}/{d['n']} ({d['exit_1'] / d['n']:.0%})" if d["n"] else "-"

    rows = [
        ("A/A false regressions", rate("gate-aa"), rate("separate-aa")),
        ("A/A exit 1 (incl. failing closed)", exits("gate-aa"), "-"),
        (f"A/B detections (+{rates.plant:.0%})", rate("gate-ab"), rate("separate-ab")),
        (f"A/B exit 1 (+{rates.plant:.0%})", exits("gate-ab"), "-"),
        ("A/A ratio median [min, max]", spread("gate-aa"), spread("separate-aa")),
        ("A/B ratio median [min, max]", spread("gate-ab"), spread("separate-ab")),
        ("time per comparison (s)", _fmt(s["gate-aa"]["wall_s_median"], ".1f"),
         _fmt(s["separate-aa"]["wall_s_median"], ".1f")),
    ]  # fmt: skip
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows + [("", "gate (interleaved)", "")])
    head = (
        f"{rates.scenario} ({rates.preset}, train fp32), threshold {rates.threshold:.0%}, "
        f"{rates.runs} trials each"
    )
    lines = [head, f"{'':<{w0}}  {'gate (interleaved)':<{w1}}  separate runs"]
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=20, help="trials of each kind (default 20)")
    p.add_argument("--scenario", default="attention")
    p.add_argument("--preset", default="default")
    p.add_argument("--threshold", type=float, default=0.05, help="as a fraction (default 0.05)")
    p.add_argument("--plant", type=float, default=0.10, help="planted slowdown for A/B (default 0.10)")
    p.add_argument("--no-separate", action="store_true", help="skip the separate-runs comparison")
    p.add_argument(
        "--gate-arg", action="append", default=[], help="extra argument for `dlbench gate` (repeatable)"
    )
    p.add_argument("--json", type=Path, default=None, help="write every trial and the summary to this file")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be >= 1")
    rates = measure(
        args.scenario,
        preset=args.preset,
        runs=args.runs,
        threshold=args.threshold,
        plant=args.plant,
        gate_args=args.gate_arg,
        separate=not args.no_separate,
        log=sys.stderr,
    )
    print(render(rates))
    if args.json is not None:
        args.json.write_text(json.dumps(rates.to_dict(), indent=2), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
