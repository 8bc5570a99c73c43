"""Does ``dlbench compare`` 's 95 % CI tell the truth across separate runs? A/A coverage, measured here.

    python -m bench.micro.compare_coverage                       # 20 A/A pairs, --repeat 1 and 5
    python -m bench.micro.compare_coverage --pairs 2 --preset tiny --max-time 0.2   # smoke check
    python -m bench.micro.compare_coverage --scenario encoder --mode forward --repeats 1,3,5 --out cov.json

An A/A pair is two separate ``dlbench run`` s of the same configuration (same code, same machine,
one after the other, each in its own child processes), compared with ``dlbench compare``
(``bench.results.compare``). Nothing changed, so a 95 % CI of NEW / BASE should contain 1.0 in
about 95 % of pairs. With ``--repeat 1`` the CI is the bootstrap of one process's samples a side:
it covers the noise inside a run, not the drift between runs (46 % here), so its coverage is far
lower. With ``--repeat 5`` the CI comes from five processes a side (Welch t on log medians) and
should be near 95 %. For each R the output gives the coverage, the ratios and CIs, the verdicts,
and how long a pair took (two runs of R processes each). R values alternate pair by pair, so drift
in the machine's load hits every R alike.

Output: JSON on stdout (and in ``--out``). Running it at full size takes the machine's cores for a
while (20 pairs x (2 + 10) child processes); other work on the machine makes every figure worse.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "measure_coverage"]


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _one_pair(workdir: Path, tag: str, args: argparse.Namespace, repeat: int) -> dict[str, Any]:
    """Two separate runs of the configuration with ``repeat`` processes each, and their comparison."""
    import bench.api as api
    from bench.results.compare import compare

    t0 = time.perf_counter()
    paths = []
    for side in ("a", "b"):
        out = workdir / f"{tag}_{side}.csv"
        s = api.run(
            args.scenario,
            modes=args.mode,
            preset=args.preset,
            device="cpu",
            out=out,
            max_time_s=args.max_time,
            repeat=repeat,
            progress=False,
        )
        if s.exit_code != 0 or not s.rows or s.rows[0]["status"] != "ok":
            raise SystemExit(f"run failed: {s.rows[0].get('reason') if s.rows else 'no rows'}")
        paths.append(out)
    seconds = time.perf_counter() - t0
    pair = compare([paths[0]], [paths[1]], threshold=args.threshold).pairs[0].to_dict()
    lo = pair["ci_low"] if pair["ci_low"] is not None else 0.0
    hi = pair["ci_high"] if pair["ci_high"] is not None else math.inf
    return {
        "ratio": pair["ratio"],
        "ci_low": lo,
        "ci_high": hi if math.isfinite(hi) else None,
        "contains_1": bool(lo <= 1.0 <= hi),
        "verdict": pair["verdict"],
        "method": pair["method"],
        "ci_covers": pair["ci_covers"],
        "seconds": round(seconds, 2),
    }


def measure_coverage(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``args.pairs`` A/A pairs for every R in ``args.repeats`` (interleaved) and summarize."""
    repeats = [int(r) for r in str(args.repeats).split(",") if r.strip()]
    per: dict[int, list[dict[str, Any]]] = {r: [] for r in repeats}
    load_start = _loadavg()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dlbench-coverage-") as tmp:
        for i in range(args.pairs):
            order = repeats if i % 2 == 0 else repeats[::-1]
            for r in order:
                per[r].append(_one_pair(Path(tmp), f"r{r}_p{i}", args, r))
    summary: dict[str, Any] = {}
    for r, pairs in per.items():
        widths = [p["ci_high"] / p["ci_low"] for p in pairs if p["ci_high"] and p["ci_low"]]
        verdicts: dict[str, int] = {}
        for p in pairs:
            verdicts[p["verdict"]] = verdicts.get(p["verdict"], 0) + 1
        summary[str(r)] = {
            "repeat": r,
            "pairs": len(pairs),
            "coverage": sum(p["contains_1"] for p in pairs) / len(pairs) if pairs else None,
            "verdicts": verdicts,
            "ratio_min": min(p["ratio"] for p in pairs) if pairs else None,
            "ratio_max": max(p["ratio"] for p in pairs) if pairs else None,
            "median_ci_width_factor": statistics.median(widths) if widths else None,
            "seconds_per_pair": statistics.fmean(p["seconds"] for p in pairs) if pairs else None,
            "seconds_total": round(sum(p["seconds"] for p in pairs), 2),
            "per_pair": pairs,
        }
    return {
        "kind": "dlbench-compare-coverage",
        "scenario": args.scenario,
        "mode": args.mode,
        "preset": args.preset,
        "max_time_s": args.max_time,
        "threshold": args.threshold,
        "pairs": args.pairs,
        "cpu_count": os.cpu_count(),
        "threads_env": os.environ.get("OMP_NUM_THREADS"),
        "loadavg_start": load_start,
        "loadavg_end": _loadavg(),
        "seconds": round(time.perf_counter() - t0, 2),
        "by_repeat": summary,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=20, help="A/A pairs per --repeat value (default 20)")
    ap.add_argument("--scenario", default="attention")
    ap.add_argument("--mode", default="train", choices=("forward", "train"))
    ap.add_argument("--preset", default="default")
    ap.add_argument("--repeats", default="1,5", help="comma list of --repeat values (default 1,5)")
    ap.add_argument("--max-time", type=float, default=1.0, help="seconds of timed steps per process")
    ap.add_argument("--threshold", default="5%")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the child processes")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.pairs < 1:
        ap.error("--pairs must be >= 1")
    if args.threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    result = measure_coverage(args)
    text = json.dumps(result, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
