"""The figures of the GPU truth run, computed from the CSVs that ``bench/gpu_check.sh`` writes.

    dlbench gpu-summary results/gpu [--peaks results/gpu/peaks.json]

Each figure names the rows it comes from; a figure whose rows are missing or failed says so
instead of printing a number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report.format import num, ratio
from bench.report.markdown import extra_of
from bench.results import load_results


def _pick(df: Any, **where: Any) -> Any | None:
    """The single ok row matching ``where`` (column -> value), or None."""
    sel = df[df["status"] == "ok"]
    for col, value in where.items():
        if col not in sel.columns:
            return None
        sel = sel[sel[col].astype(str) == str(value)]
    return None if sel.empty else sel.iloc[0]


def _num(row: Any, col: str) -> float:
    v = None if row is None else num(row[col])
    return float("nan") if v is None else v


def _load(folder: Path, scenario: str) -> Any | None:
    files = sorted(folder.glob(f"{scenario}*.csv"))
    if not files:
        return None
    import pandas as pd

    return pd.concat([load_results(f) for f in files], ignore_index=True)


def summarize(folder: Path, peaks: dict[str, float] | None = None) -> list[str]:
    out: list[str] = []
    peaks = peaks or {}
    if peaks:
        out.append(
            f"measured peak: bf16 matmul {peaks.get('bf16_tflops', float('nan')):.0f} TFLOP/s, "
            f"fp32 matmul {peaks.get('fp32_tflops', float('nan')):.1f} TFLOP/s, "
            f"copy {peaks.get('copy_gbs', float('nan')):.0f} GB/s (read+write)"
        )

    att = _load(folder, "attention")
    if att is not None:
        for mode in ("train", "forward"):
            d = _pick(
                att,
                mode=mode,
                precision="amp-bf16",
                param_seq_len=4096,
                param_impl="dlcore",
                param_attn_impl="sdpa",
            )
            s = _pick(att, mode=mode, precision="amp-bf16", param_seq_len=4096, param_impl="sdpa")
            out.append(
                f"attention {mode} bf16 L=4096: dlcore {_num(d, 'achieved_tflops'):.0f} TFLOP/s, "
                f"direct F.scaled_dot_product_attention {_num(s, 'achieved_tflops'):.0f} TFLOP/s, "
                f"ratio {ratio(_num(d, 'achieved_tflops'), _num(s, 'achieved_tflops')):.3f} (goal >= 0.95)"
            )

    enc = _load(folder, "encoder")
    if enc is not None:
        bf = _pick(enc, mode="train", precision="amp-bf16", checkpointing="none")
        fp = _pick(enc, mode="train", precision="fp32", checkpointing="none")
        h = _pick(enc, mode="train", precision="amp-fp16", checkpointing="none")
        out.append(
            f"encoder train amp-bf16: MFU {_num(bf, 'mfu'):.1%} of measured peak "
            f"({_num(bf, 'achieved_tflops'):.0f} TFLOP/s; datasheet MFU {_num(bf, 'mfu_datasheet'):.1%}) "
            "(goal >= 40%)"
        )
        t_fp32 = _num(fp, "time_median_ms")
        out.append(
            f"encoder AMP speed-up over fp32: bf16 x{ratio(t_fp32, _num(bf, 'time_median_ms')):.2f}, "
            f"fp16 x{ratio(t_fp32, _num(h, 'time_median_ms')):.2f}"
        )
        for prec in ("fp32", "amp-bf16", "amp-fp16"):
            n = _pick(enc, mode="train", precision=prec, checkpointing="none")
            f = _pick(enc, mode="train", precision=prec, checkpointing="full")
            cols = ("peak_mem_bytes", "mem_activations_bytes", "time_median_ms", "flops_per_step")
            mem, act, t, fl = (ratio(_num(f, c), _num(n, c)) for c in cols)
            out.append(
                f"encoder {prec} checkpointing full vs none: peak memory x{mem:.3f}, activations x{act:.3f}, "
                f"step time x{t:.3f}, FLOPs x{fl:.3f}"
            )

    res = _load(folder, "resnet")
    if res is not None:
        d = _pick(res, mode="train", param_impl="dlcore")
        t_row = _pick(res, mode="train", param_impl="timm")
        d_ips, t_ips = _num(d, "throughput"), _num(t_row, "throughput")
        out.append(
            f"resnet50 train: dlcore {d_ips:.0f} images/s, timm {t_ips:.0f} images/s, "
            f"ratio {ratio(d_ips, t_ips):.3f} (goal >= 0.9); FLOPs/step dlcore "
            f"{_num(d, 'flops_per_step') / 1e12:.2f} T vs timm {_num(t_row, 'flops_per_step') / 1e12:.2f} T"
        )

    opt = _load(folder, "optimizer")
    if opt is not None:
        copy = peaks.get("copy_gbs", float("nan"))
        for kind in ("adamw_warmup", "adamw_fused", "adamw_foreach"):
            r = _pick(opt, mode="train", param_optimizer=kind)
            if r is None:
                continue
            nbytes = float(extra_of(r).get("bytes_per_step", float("nan")))
            gbs = nbytes / (float(r["time_median_ms"]) / 1e3) / 1e9
            out.append(
                f"optimizer {kind}: {float(r['time_median_ms']):.3f} ms/step, {gbs:.0f} GB/s = "
                f"{ratio(gbs, copy):.0%} of copy bandwidth (goal >= 70%)"
            )
        w = _pick(opt, mode="train", param_optimizer="adamw_warmup")
        f = _pick(opt, mode="train", param_optimizer="adamw_fused")
        out.append(
            f"optimizer AdamWWithWarmup / AdamW(fused) time ratio "
            f"{ratio(_num(w, 'time_median_ms'), _num(f, 'time_median_ms')):.3f} (goal <= 1.05)"
        )
    return out
