"""Peak compute and bandwidth: measured on the spot (cached per machine) and from datasheets (dense).

``measured_peak_tflops`` times a large square matmul in the run's precision (fp32 -> float32 matmul,
on CUDA as TF32 iff ``torch.backends.cuda.matmul.allow_tf32`` is on; amp-bf16 -> bfloat16; amp-fp16
-> float16) with warm-up and synchronization, and reports the best of several timed batches
(``2·n³`` FLOPs per matmul): a peak is what the hardware can reach, so the best batch, not the
median, is the estimate. ``measured_copy_bandwidth_gbs`` does the same for ``dst.copy_(src)``,
counting read + write bytes (``2·nbytes``).

Results are cached in a JSON file (``$DLBENCH_CACHE_DIR/peaks.json``, default
``~/.cache/dlbench/peaks.json``) keyed by device name, torch version, dtype, size, TF32 setting
and thread count, so every run on a machine compares against the same figure.

``datasheet_peak_tflops`` gives the vendor's dense (not 2:4-sparse) tensor-core peaks; MFU
against it says how far the run is from the marketing figure, MFU against the measured peak how
far it is from what this card, clock and driver really deliver.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.workload import PRECISION_DTYPES

CACHE_FILE = "peaks.json"
# the run precisions (bench.workload.PRECISION_DTYPES) plus the datasheet's own column names
_DTYPES: dict[str, torch.dtype] = {
    **PRECISION_DTYPES,
    "tf32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}

# Dense datasheet peaks in TFLOP/s: (substrings that must all appear in the lower-cased device
# name, substrings that must not), {precision: TFLOP/s}. First match wins, so specific before generic.
_H100_SXM = {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}
_DATASHEET: list[tuple[tuple[str, ...], tuple[str, ...], dict[str, float]]] = [
    (("h100", "pcie"), (), {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0}),
    (("h100", "sxm"), (), _H100_SXM),
    (("h100", "hbm3"), ("pcie", "nvl"), _H100_SXM),  # torch reports SXM as "NVIDIA H100 80GB HBM3"
    (("h200",), ("nvl",), _H100_SXM),  # H200 SXM: H100 SXM compute with more, faster memory
    (("a100",), (), {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}),
    (("l40s",), (), {"fp32": 91.6, "tf32": 183.0, "bf16": 362.05, "fp16": 362.05}),
    # "l4" is a substring of "l40" / "l40s": exclude them (L40 has no entry: None)
    (("l4",), ("l40",), {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0}),
    (("rtx 4090",), (), {"fp32": 82.6, "tf32": 82.6, "bf16": 165.2, "fp16": 165.2}),  # fp32 accumulate
]


def _precision_key(precision: str) -> str:
    key = {"amp-bf16": "bf16", "amp-fp16": "fp16"}.get(precision, precision)
    if key not in ("fp32", "tf32", "bf16", "fp16"):
        raise ValueError(
            f"precision: unknown precision {precision!r}; expected fp32, tf32, amp-bf16 or amp-fp16"
        )
    return key


def matmul_precision(precision: str, device: str) -> str:
    """Which datasheet column a run's matmuls hit: ``tf32`` for fp32 on CUDA with TF32 enabled."""
    key = _precision_key(precision)
    if key == "fp32" and device.startswith("cuda") and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return key


def datasheet_peak_tflops(device_name: str, precision: str) -> float | None:
    """Dense datasheet peak of a known GPU for ``precision`` (fp32, tf32, amp-bf16/bf16, amp-fp16/fp16).

    None for CPUs and unknown GPUs (including H100/H200 NVL variants, whose figures differ).
    """
    key = _precision_key(precision)
    name = device_name.lower()
    for needed, excluded, peaks in _DATASHEET:
        if all(s in name for s in needed) and not any(s in name for s in excluded):
            return peaks.get(key)
    return None


def _cache_path() -> Path:
    root = os.environ.get("DLBENCH_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "dlbench"
    return base / CACHE_FILE


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    from bench.harness.env import cpu_model

    return cpu_model()


DEFAULT_CACHE_TTL_S = 24 * 3600.0


def cache_ttl_s() -> float:
    """How long a cached peak is trusted: ``$DLBENCH_PEAK_TTL_S`` seconds (default a day; 0 = never).

    A peak measured while the machine was busy is too low and inflates every MFU computed from it,
    so no figure is trusted forever.
    """
    raw = os.environ.get("DLBENCH_PEAK_TTL_S", "").strip()
    if not raw:
        return DEFAULT_CACHE_TTL_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"DLBENCH_PEAK_TTL_S: expected seconds as a number >= 0, got {raw!r}")
    return value


def read_cache(path: Path | None = None) -> dict[str, Any]:
    """The peak cache's valid entries; a corrupt cache is advisory: ignored with one warning.

    Corrupt means: not JSON, JSON that is not an object, or entries without a finite positive
    ``value`` and a numeric ``measured_at_unix``. Such entries are dropped (and the file is
    rewritten without them the next time a peak is measured), so they never empty an MFU.
    """
    path = path or _cache_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        _warn_once(
            f"peak cache {path} is unreadable ({type(exc).__name__}); ignoring it, it will be rewritten"
        )
        return {}
    if not isinstance(data, dict):
        _warn_once(f"peak cache {path} holds {type(data).__name__}, not an object; ignoring it")
        return {}
    good: dict[str, Any] = {}
    for key, entry in data.items():
        try:
            value, at = float(entry["value"]), float(entry["measured_at_unix"])
        except (TypeError, KeyError, ValueError):
            continue
        if math.isfinite(value) and value > 0 and math.isfinite(at):
            good[key] = entry
    if len(good) != len(data):
        _warn_once(f"peak cache {path}: {len(data) - len(good)} malformed entr(y/ies) ignored")
    return good


def repair_cache(path: Path | None = None) -> bool:
    """Rewrite a corrupt peak cache with only its valid entries (one warning); True if it was rewritten."""
    path = path or _cache_path()
    if not path.exists():
        return False
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raw = None
    good = read_cache(path)
    if raw == good:
        return False
    _write_cache(path, good)
    return True


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)  # atomic: concurrent runs never read a half-written file


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _cached(key: str, cache: bool, measure: Callable[[], float]) -> float:
    path = _cache_path()
    data: dict[str, Any] = {}
    if cache:
        data = read_cache(path)
        entry = data.get(key)
        if entry is not None:
            age_s = time.time() - float(entry["measured_at_unix"])
            if age_s < cache_ttl_s():
                return float(entry["value"])
    value = measure()
    if cache:
        data[key] = {
            "value": value,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "measured_at_unix": time.time(),
        }
        _write_cache(path, data)
    return value


def _best_seconds_per_call(
    fn: Callable[[], Any], device: str, *, batches: int = 5, min_batch_s: float = 0.05
) -> float:
    """Best (lowest) per-call time over ``batches`` timed batches, after warm-up; synchronized."""
    is_cuda = device.startswith("cuda")

    def sync() -> None:
        if is_cuda:
            torch.cuda.synchronize(device)

    fn()
    fn()  # warm-up: kernels selected, caches and clocks up
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    per_call = max(time.perf_counter() - t0, 1e-7)
    calls = max(1, min(1000, int(min_batch_s / per_call)))
    best = float("inf")
    for _ in range(batches):
        sync()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def measured_peak_tflops(
    device: str, precision: str, *, cache: bool = True, size: int | None = None
) -> float:
    """TFLOP/s of a ``size``² matmul in the run's precision, best of 5 batches; cached per machine.

    Default size: 8192 on CUDA, 1024 on CPU (a fraction of a second there).
    """
    dtype = _DTYPES.get(precision)
    if dtype is None:
        raise ValueError(f"precision: unknown precision {precision!r}; expected one of {sorted(_DTYPES)}")
    n = size or (8192 if device.startswith("cuda") else 1024)
    tf32 = device.startswith("cuda") and dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32
    key = "|".join(
        [
            "matmul",
            _device_name(device),
            f"torch={torch.__version__}",
            str(dtype),
            f"n={n}",
            f"tf32={tf32}",
            f"threads={torch.get_num_threads()}",
        ]
    )

    def measure() -> float:
        g = torch.Generator(device=device).manual_seed(0)
        a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
        b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
        c = torch.empty(n, n, device=device, dtype=dtype)
        s = _best_seconds_per_call(lambda: torch.mm(a, b, out=c), device)
        return 2.0 * n**3 / s / 1e12

    return _cached(key, cache, measure)


def measured_copy_bandwidth_gbs(device: str, *, nbytes: int | None = None, cache: bool = True) -> float:
    """GB/s (1e9 B/s) of ``dst.copy_(src)`` on ``device``, counting read + write (``2·nbytes``); cached.

    Default size: 1 GiB on CUDA, 128 MiB on CPU (well beyond last-level caches).
    """
    nb = nbytes or ((1 << 30) if device.startswith("cuda") else (128 << 20))
    key = "|".join(
        [
            "copy",
            _device_name(device),
            f"torch={torch.__version__}",
            f"nbytes={nb}",
            f"threads={torch.get_num_threads()}",
        ]
    )

    def measure() -> float:
        src = torch.ones(nb // 4, device=device, dtype=torch.float32)
        dst = torch.empty_like(src)
        s = _best_seconds_per_call(lambda: dst.copy_(src), device)
        return 2.0 * src.numel() * 4 / s / 1e9

    return _cached(key, cache, measure)
