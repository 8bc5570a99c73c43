"""Does ``dlbench report`` finish on a 50 MB results CSV? Wall time and peak memory, measured here.

    python -m bench.micro.report_scale                  # ~50 MB, ~50,000 rows; report in a subprocess
    python -m bench.micro.report_scale --mb 5           # a smaller file
    python -m bench.micro.report_scale --compare        # also `dlbench compare FILE --by precision`
    python -m bench.micro.report_scale --keep /tmp/rs   # keep the CSV and the report there

The CSV is synthetic but shaped like a long sweep: real column set (``columns_for`` of the
encoder scenario), one row per configuration of seq_len (hundreds of values) x batch size x
precision x checkpointing x mode, the whole grid measured by several runs (``run_id``), 2 % failed
rows, 10 % flagged noisy. Then ``python -m bench.cli report FILE -o OUT`` runs as a subprocess,
and the script prints its wall time and peak resident memory (``ru_maxrss`` of the children),
against the issue's limits (60 s, 1 GiB on 2 cores). Not a test: it takes up to a minute, and
other processes on the cores change what it measures (run it on a quiet machine).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from bench.results.schema import SCHEMA_VERSION, columns_for, format_cell

ROOT = Path(__file__).resolve().parents[2]
PARAMS = (
    "batch_size",
    "seq_len",
    "width",
    "depth",
    "heads",
    "ffn_mult",
    "norm_first",
    "activation",
    "dropout",
)


def _row(rng: random.Random, run: str, i: int, cfg: Mapping[str, object]) -> dict[str, object]:
    seq, bs = int(cfg["seq_len"]), int(cfg["batch_size"])  # type: ignore[call-overload]
    amp = cfg["precision"] != "fp32"
    ckpt = cfg["checkpointing"] == "full"
    train = cfg["mode"] == "train"
    median = 0.02 * seq * bs * (0.6 if amp else 1.0) * (1.3 if ckpt else 1.0) * (3.0 if train else 1.0)
    median *= rng.lognormvariate(0, 0.03)
    status = "error" if rng.random() < 0.02 else "ok"
    noisy = rng.random() < 0.1
    params = {"seq_len": seq, "width": 256, "depth": 4, "heads": 4, "ffn_mult": 4, "norm_first": True,
              "activation": "gelu", "dropout": 0.0}  # fmt: skip
    key = f"encoder|{cfg['mode']}|{cfg['precision']}|{cfg['checkpointing']}|cpu|cl=false|seed=0|" + ",".join(
        f"{k}={v}" for k, v in sorted({**params, "batch_size": bs}.items())
    )
    row: dict[str, object] = {
        "schema_version": SCHEMA_VERSION, "run_id": run,
        "timestamp": f"2026-12-01T00:{i // 60 % 60:02d}:00+00:00",
        "scenario": "encoder", "mode": cfg["mode"], "precision": cfg["precision"],
        "checkpointing": cfg["checkpointing"], "parallel": "none", "world_size": 1, "batch_size": bs,
        "device": "cpu", "device_name": "Intel(R) Xeon(R) Processor", "torch_version": "2.13.0+cpu",
        "git_commit": "0837e68478dcba936f0e2f86241f6f04c517b491", "status": status, "preset": "default",
        "seed": 0, "channels_last": False, "config_key": key, "python_version": "3.11.7", "os": "Linux",
        "hostname": "vm", "cpu_model": "Intel(R) Xeon(R) Processor", "cpu_count": 2, "threads": 2,
        "timeout_s": 600.0, "target_rel_ci": 0.02, "max_time_s": 2.0, "elapsed_s": round(median * 0.05, 3),
        "repeats": 1, "nnodes": 1, **{f"param_{k}": v for k, v in params.items()},
    }  # fmt: skip
    if status != "ok":
        row["reason"] = "RuntimeError: synthetic failure for the scale benchmark"
        return row
    items = bs * seq
    flops = 24.0 * items * 256 * 256 * 4 * (3 if train else 1)
    mem = int(4e6 + 5e3 * seq * bs * (0.5 if amp else 1.0) * (0.4 if ckpt else 1.0))
    row.update(
        n_samples=rng.randint(20, 200), time_median_ms=median, time_ci_low_ms=median * 0.98,
        time_ci_high_ms=median * 1.02, time_iqr_ms=median * 0.03, throughput=items / (median / 1e3),
        throughput_unit="tokens/s", flops_per_step=int(flops), achieved_tflops=flops / median / 1e9,
        peak_tflops_measured=1.2, mfu=flops / median / 1e9 / 1.2, peak_mem_bytes=mem,
        mem_fwd_peak_bytes=mem - 1000, mem_bwd_peak_bytes=mem, mem_opt_peak_bytes=mem - 5000,
        mem_params_bytes=3_000_000, mem_grads_bytes=3_000_000 if train else 0,
        mem_optimizer_bytes=6_000_000 if train else 0, mem_activations_bytes=mem // 3,
        mem_buffers_bytes=0, mem_inputs_bytes=4 * items, time_cv=0.05, noisy=noisy,
        reason="noisy: CI half-width 2.5% of the median exceeds target 2.00%" if noisy else "",
        stop_reason="ci_target", peak_rss_bytes=400_000_000, mem_method="mem_tracker", items_per_step=items,
        extra={"attn_impl": "sdpa", "norm_first": True}, ci_covers="within-process",
        noise_other_cpu_pct=rng.uniform(0, 5), noise_steal_pct=0.0, job_throughput=items / (median / 1e3),
        scaling_efficiency=1.0, max_rank_peak_mem_bytes=mem, comm_bytes_per_step=0,
    )  # fmt: skip
    return row


def write_csv(path: Path, target_mb: float, seed: int = 0) -> int:
    """A results CSV of about ``target_mb`` MB at ``path``; returns its number of rows."""
    rng = random.Random(seed)
    columns = columns_for(PARAMS)
    grid = [
        {"seq_len": s, "batch_size": b, "precision": p, "checkpointing": c, "mode": m}
        for s in range(16, 16 + 4 * 400, 4)
        for b in (1, 2, 4, 8)
        for p in ("fp32", "amp-bf16")
        for c in ("none", "full")
        for m in ("forward", "train")
    ]
    n = 0
    limit = int(target_mb * 1e6)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        run = 0
        while f.tell() < limit:
            run_id = f"20261201T0000{run:02d}-{rng.randrange(16**6):06x}"
            for cfg in grid:
                row = _row(rng, run_id, n, cfg)
                w.writerow([format_cell(row.get(c)) for c in columns])
                n += 1
                if f.tell() >= limit:
                    break
            run += 1
    return n


def _child(cmd: list[str]) -> tuple[float, int, float, str]:
    """(wall s, exit code, peak RSS of the children so far in MiB, stderr tail) of one subprocess."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return wall, proc.returncode, rss, (proc.stdout + proc.stderr)[-800:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=50.0, help="size of the CSV in MB (default 50)")
    ap.add_argument("--keep", type=Path, default=None, help="write the CSV and the report here and keep them")
    ap.add_argument("--compare", action="store_true", help="also time `dlbench compare FILE --by precision`")
    ap.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dlbench-report-scale-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        csv_path = folder / "scale.csv"
        t0 = time.perf_counter()
        rows = write_csv(csv_path, args.mb)
        size_mb = os.path.getsize(csv_path) / 1e6
        print(f"wrote {csv_path}: {size_mb:.1f} MB, {rows} rows ({time.perf_counter() - t0:.1f} s)")
        out = folder / "report"
        cmd = [sys.executable, "-m", "bench.cli", "report", str(csv_path), "-o", str(out), "--title", "scale"]
        wall, rc, rss, tail = _child(cmd)
        verdict = "within" if rc == 0 and wall < 60 and rss < 1024 else "OUTSIDE"
        print(
            f"dlbench report: exit {rc}, {wall:.1f} s wall, peak RSS {rss:.0f} MiB ({verdict} 60 s / 1 GiB)"
        )
        if rc != 0:
            print(tail)
        figures: dict[str, object] = {"csv_mb": size_mb, "rows": rows, "report_s": wall, "report_rc": rc,
                                      "report_peak_rss_mib": rss, "cpu_count": os.cpu_count()}  # fmt: skip
        if args.compare:
            cmd = [sys.executable, "-m", "bench.cli", "compare", str(csv_path), "--by", "precision"]
            cwall, crc, crss, ctail = _child(cmd)
            print(
                f"dlbench compare --by precision: exit {crc}, {cwall:.1f} s wall "
                f"(peak RSS so far {crss:.0f} MiB)"
            )
            print(ctail[-400:])
            figures.update(compare_s=cwall, compare_rc=crc)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
        return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
