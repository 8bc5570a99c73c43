"""Where a profiled step's time went: operators put into categories, as shares of the step time.

Torch-free on purpose (like ``bench.results`` and ``bench.report``): it works on plain rows, one per
operator name, that ``bench.profile.trace`` extracts from torch's own ``prof.key_averages()``, so
the report, a notebook or a test can summarise rows without importing torch.

Counting rules, so that nothing is counted twice:

- only *self* (exclusive) times are summed. An ``aten::linear`` row counts the time spent in
  ``linear`` itself, not in the ``aten::addmm`` it calls, which is its own row;
- only operator rows (``kind="op"``) are categorised. Profiler step ranges, ``record_function``
  labels (``forward``, ``Optimizer.step#...``), Python frames (``with_stack``) and GPU kernel rows
  (whose time is already in their launching operator's self device time) are not;
- the step time is the wall time of the active (recorded) steps. What no operator covers is
  ``idle``: on CPU the time outside every operator (Python, the framework between ops); on GPU the
  time no kernel ran (the caller passes the union of kernel intervals as ``busy_us``).
- When the operators' self times add up to more than the busy time (overlapping CUDA streams,
  operators on several threads), they are scaled down to it; with ``busy_us`` given and less
  attributed than busy, the rest is ``other``. So the nine shares always sum to 1.

The JSON written as ``summary.json`` (``make_summary``) is a contract read by the HTML report::

    {"scenario": str, "device": str, "categories": {<CATEGORIES>: share},
     "top_ops": [{"name": str, "self_time_us": float, "calls": int, "share": float}],
     "step_time_ms": float, "active_steps": int}

``step_time_ms`` is the mean wall time of one active step; shares are of all active steps.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.outputs import write_atomic

__all__ = [
    "CATEGORIES",
    "CSV_COLUMNS",
    "SUMMARY_KEYS",
    "OpRow",
    "categorize",
    "interval_union_us",
    "make_summary",
    "summarize",
    "top_ops_markdown",
    "write_top_ops_csv",
]

CATEGORIES: tuple[str, ...] = (
    "matmul",
    "attention",
    "normalization",
    "elementwise",
    "memory_copy",
    "optimizer",
    "communication",
    "other",
    "idle",
)
SUMMARY_KEYS: tuple[str, ...] = (
    "scenario",
    "device",
    "categories",
    "top_ops",
    "step_time_ms",
    "active_steps",
)
ROW_KINDS: tuple[str, ...] = ("op", "annotation", "python", "kernel")


@dataclass(frozen=True)
class OpRow:
    """One ``key_averages()`` entry, reduced to plain numbers (times in microseconds).

    ``self_time_us`` is the time that is summarised: self CPU time on CPU, self device time (the
    kernels the operator launched itself) on CUDA. The other times are kept for the CSV.
    """

    name: str
    self_time_us: float
    calls: int = 1
    kind: str = "op"  # one of ROW_KINDS; only "op" rows are categorised
    self_cpu_time_us: float = 0.0
    cpu_time_total_us: float = 0.0
    self_device_time_us: float = 0.0
    device_time_total_us: float = 0.0
    self_cpu_memory_bytes: int = 0
    self_device_memory_bytes: int = 0

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> OpRow:
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in row.items() if k in fields})


# --- categorize ----------------------------------------------------------------------------------

_COMM = (
    "nccl",
    "gloo",
    "c10d",
    "record_param_comms",
    "all_reduce",
    "allreduce",
    "all_gather",
    "allgather",
    "reduce_scatter",
    "reducescatter",
    "all_to_all",
    "alltoall",
    "processgroup",
)
_OPTIMIZER = (
    "_fused_adam",
    "_fused_sgd",
    "_fused_adagrad",
    "_foreach_",
    "optimizer.",
    "adam",
    "_amp_foreach",
)
_ATTENTION = (
    "scaled_dot_product",
    "flash_attention",
    "flash_attn",
    "_flash",
    "efficient_attention",
    "cudnn_attention",
    "multi_head_attention",
    "fmha",
)
_NORM = re.compile(r"(layer|batch|group|rms|instance)_?norm")
_MATMUL = frozenset(
    {
        "mm",
        "addmm",
        "bmm",
        "baddbmm",
        "addbmm",
        "matmul",
        "linear",
        "mv",
        "addmv",
        "dot",
        "vdot",
        "einsum",
        "tensordot",
        "_scaled_mm",
        "_int_mm",
        "_addmm_activation",
        "_mm_plus_mm",
    }
)
# conv2d, _convolution, cudnn_convolution, mkldnn_convolution, slow_conv2d_forward, conv_transpose2d,
# _conv_depthwise2d, convolution_backward; not convert_*
_CONV = re.compile(r"convolution|^(?:\w*_)?conv(?:\d|_transpose|_tbc|_depthwise|_backward|$)")
_MATMUL_KERNELS = ("gemm", "cublas", "nvjet", "xmma", "cutlass")
_MEMORY = frozenset(
    {
        "copy_",
        "copy",
        "to",
        "_to_copy",
        "contiguous",
        "clone",
        "cat",
        "_cat",
        "concat",
        "concatenate",
        "stack",
        "_copy_from",
        "_copy_from_and_resize",
        "pin_memory",
        "_pin_memory",
        "lift_fresh_copy",
    }
)
_MEMORY_KERNELS = ("memcpy", "memset", "cudamemcpy", "cudamemset")
_ELEMENTWISE = frozenset(
    {
        # arithmetic
        "add", "sub", "rsub", "mul", "div", "neg", "abs", "reciprocal", "pow", "square", "sqrt", "rsqrt",
        "exp", "exp2", "expm1", "log", "log2", "log1p", "sin", "cos", "erf", "sign", "floor", "ceil", "round",
        "trunc", "frac", "lerp", "addcmul", "addcdiv", "fmod", "remainder", "clamp", "clamp_min",
        "clamp_max", "clip", "minimum", "maximum", "where", "masked_fill", "fill", "zero", "nan_to_num",
        # comparisons and predicates
        "eq", "ne", "lt", "le", "gt", "ge", "isnan", "isinf", "isfinite", "logical_and", "logical_or",
        "logical_not", "bitwise_and", "bitwise_or", "bitwise_not",
        # activations
        "relu", "relu6", "leaky_relu", "gelu", "silu", "mish", "elu", "selu", "celu", "softplus", "sigmoid",
        "tanh", "hardswish", "hardsigmoid", "hardtanh", "threshold", "glu", "prelu",
        # softmax and dropout
        "softmax", "_softmax", "log_softmax", "_log_softmax", "_softmax_backward_data",
        "_log_softmax_backward_data", "dropout", "feature_dropout", "alpha_dropout", "bernoulli",
        "_masked_scale", "_fused_dropout",
        # reductions and losses (memory-bound, one pass over the data, like pointwise ops)
        "sum", "mean", "amax", "amin", "max", "min", "prod", "var", "std", "var_mean", "std_mean",
        "argmax", "argmin", "norm", "linalg_vector_norm", "logsumexp", "cumsum", "mse_loss", "l1_loss",
        "nll_loss", "nll_loss_forward", "nll_loss2d_forward", "cross_entropy_loss", "binary_cross_entropy",
        "binary_cross_entropy_with_logits", "smooth_l1_loss", "huber_loss",
    }
)  # fmt: skip
_ELEMENTWISE_KERNELS = ("elementwise", "reduce_kernel", "softmax", "dropout")
_AUTOGRAD_NODE = re.compile(r"^[A-Za-z0-9]+Backward\d*$")


def _base(op_name: str) -> str:
    """``aten::native_dropout_backward`` -> ``native_dropout_backward`` (lower case, no namespace)."""
    n = op_name.strip().lower()
    return n.rsplit("::", 1)[-1].strip()


def _pointwise_root(base: str) -> str:
    """``native_dropout_backward`` -> ``dropout``, ``add_`` -> ``add``, ``gelu_backward`` -> ``gelu``."""
    n = base
    for suffix in ("_backward_data", "_backward", "_forward", "_out"):
        if n.endswith(suffix) and n != suffix:
            n = n[: -len(suffix)]
            break
    if n.endswith("_") and len(n) > 1:
        n = n[:-1]
    if n.startswith("native_"):
        n = n[len("native_") :]
    return n


def categorize(op_name: str) -> str:
    """The category of one operator (or GPU kernel) name: one of ``CATEGORIES`` except ``idle``.

    Rules, first match wins (lower-cased, namespace such as ``aten::`` dropped where it matters):

    - communication: c10d / nccl / gloo / record_param_comms and collective names (all_reduce, ...);
    - other: autograd engine bookkeeping (``autograd::engine::evaluate_function: XBackward0``, the
      ``XBackward0`` node itself, ``AccumulateGrad``): its self time is the engine's, the math is in
      the aten ops it calls;
    - optimizer: ``_fused_adam(w)``, ``_fused_sgd``, ``_foreach_*`` (the multi-tensor kernels
      optimizers and grad clipping use), ``adam*``, ``Optimizer.step#...``;
    - attention: ``scaled_dot_product_*``, ``_flash_*``, ``_efficient_attention*``, cuDNN attention;
    - normalization: layer / batch / group / RMS / instance norm, forward and backward;
    - matmul: ``mm``, ``addmm``, ``bmm``, ``matmul``, ``linear``, ... and every convolution
      (``conv2d``, ``cudnn_convolution``, ``convolution_backward``): convolutions run as GEMMs
      (im2col / implicit GEMM), so they count as the matmul family; GEMM kernel names too;
    - memory_copy: ``copy_``, ``to``, ``_to_copy``, ``contiguous``, ``clone``, ``cat``, ``stack``,
      memcpy / memset;
    - elementwise: pointwise math, activations, softmax, dropout, and single-pass reductions and
      losses (``sum``, ``mean``, ``mse_loss``), in place (``add_``) or backward (``gelu_backward``);
    - other: everything else, including views (``view``, ``transpose``, ``t``: no data moves, their
      self time is dispatch) and allocations (``empty``, ``zeros``).
    """
    full = op_name.strip().lower()
    if any(s in full for s in _COMM):
        return "communication"
    raw = op_name.strip()
    if (
        full.startswith(("autograd::", "torch::autograd::"))
        or _AUTOGRAD_NODE.match(raw)
        or full == "accumulategrad"
    ):
        return "other"
    base = _base(op_name)
    if any(s in full for s in _OPTIMIZER):
        return "optimizer"
    if any(s in full for s in _ATTENTION):
        return "attention"
    if _NORM.search(base):
        return "normalization"
    if base in _MATMUL or _CONV.search(base) or any(s in full for s in _MATMUL_KERNELS):
        return "matmul"
    if base in _MEMORY or any(s in full for s in _MEMORY_KERNELS):
        return "memory_copy"
    if base in _ELEMENTWISE or _pointwise_root(base) in _ELEMENTWISE:
        return "elementwise"
    if any(s in full for s in _ELEMENTWISE_KERNELS):
        return "elementwise"
    return "other"


# --- summarize -----------------------------------------------------------------------------------


def _rows(rows: Iterable[OpRow | Mapping[str, Any]]) -> list[OpRow]:
    return [r if isinstance(r, OpRow) else OpRow.from_mapping(r) for r in rows]


def _share(r: OpRow, denominator_us: float, scale: float) -> float:
    return r.self_time_us * scale / denominator_us if denominator_us > 0 else 0.0


def summarize(
    rows: Iterable[OpRow | Mapping[str, Any]],
    step_time_us: float,
    *,
    busy_us: float | None = None,
    top_n: int = 15,
) -> dict[str, Any]:
    """Category shares and top operators of ``step_time_us`` (all active steps together).

    ``rows`` are ``OpRow`` or mappings with ``name``, ``self_time_us``, ``calls`` and optionally
    ``kind``; only ``kind == "op"`` rows count. ``busy_us`` is the time the device was busy (the
    union of kernel intervals on GPU); by default the sum of the operators' self times.

    Returns ``{"categories": {category: share}, "top_ops": [...], "op_time_us": float,
    "busy_us": float, "denominator_us": float, "scale": float}``; an operator's share is
    ``self_time_us * scale / denominator_us``. The nine shares sum to 1 (all ``idle`` when nothing
    ran).
    """
    ops = [r for r in _rows(rows) if r.kind == "op" and r.self_time_us > 0]
    op_time = float(sum(r.self_time_us for r in ops))
    busy = op_time if busy_us is None else max(0.0, float(busy_us))
    # operators attributed more than was busy (overlap): scale them down to the busy time
    scale = busy / op_time if op_time > busy and op_time > 0 else 1.0
    denominator = max(float(step_time_us), busy)

    times = dict.fromkeys(CATEGORIES, 0.0)
    for r in ops:
        times[categorize(r.name)] += r.self_time_us * scale
    times["other"] += max(0.0, busy - op_time * scale)  # busy but attributed to no operator
    times["idle"] = max(0.0, denominator - busy)

    if denominator <= 0:
        categories = {c: (1.0 if c == "idle" else 0.0) for c in CATEGORIES}
    else:
        categories = {c: times[c] / denominator for c in CATEGORIES}

    ranked = sorted(ops, key=lambda r: (-r.self_time_us, r.name))[: max(0, top_n)]
    top_ops = [
        {
            "name": r.name,
            "self_time_us": float(r.self_time_us),
            "calls": int(r.calls),
            "share": _share(r, denominator, scale),
        }
        for r in ranked
    ]
    return {
        "categories": categories,
        "top_ops": top_ops,
        "op_time_us": op_time,
        "busy_us": busy,
        "denominator_us": denominator,
        "scale": scale,
    }


def interval_union_us(
    intervals: Iterable[tuple[float, float]], windows: Iterable[tuple[float, float]]
) -> float:
    """Total length of the union of ``intervals`` clipped to each of ``windows`` (microseconds).

    The GPU's busy time: kernels on several streams overlap, so their durations cannot be summed.
    """
    ordered = sorted(intervals)
    busy = 0.0
    for w0, w1 in windows:
        cur_start: float | None = None
        cur_end = 0.0
        for s, t in ordered:
            s, t = max(s, w0), min(t, w1)
            if t <= s:
                continue
            if cur_start is None or s > cur_end:
                if cur_start is not None:
                    busy += cur_end - cur_start
                cur_start, cur_end = s, t
            else:
                cur_end = max(cur_end, t)
        if cur_start is not None:
            busy += cur_end - cur_start
    return busy


def make_summary(
    *,
    scenario: str,
    device: str,
    rows: Iterable[OpRow | Mapping[str, Any]],
    step_time_us: float,
    active_steps: int,
    busy_us: float | None = None,
    top_n: int = 15,
) -> dict[str, Any]:
    """The ``summary.json`` contract (exactly ``SUMMARY_KEYS``), from rows and the active steps' time."""
    s = summarize(rows, step_time_us, busy_us=busy_us, top_n=top_n)
    steps = max(1, int(active_steps))
    return {
        "scenario": str(scenario),
        "device": str(device),
        "categories": s["categories"],
        "top_ops": s["top_ops"],
        "step_time_ms": float(step_time_us) / steps / 1e3,
        "active_steps": int(active_steps),
    }


# --- top_ops.csv / top_ops.md --------------------------------------------------------------------

CSV_COLUMNS: tuple[str, ...] = (
    "rank",
    "name",
    "category",
    "calls",
    "self_time_us",
    "share",
    "self_cpu_time_us",
    "cpu_time_total_us",
    "self_device_time_us",
    "device_time_total_us",
    "self_cpu_memory_bytes",
    "self_device_memory_bytes",
)


def _ranked_ops(rows: Iterable[OpRow | Mapping[str, Any]]) -> list[OpRow]:
    ops = [r for r in _rows(rows) if r.kind == "op"]
    return sorted(ops, key=lambda r: (-r.self_time_us, r.name))


def write_top_ops_csv(
    rows: Iterable[OpRow | Mapping[str, Any]],
    path: str | Path,
    *,
    denominator_us: float,
    scale: float = 1.0,
) -> Path:
    """Every operator row, by self time (largest first), with its category and share of the steps.

    ``denominator_us`` and ``scale`` come from ``summarize``, so the shares match ``summary.json``.
    """
    path = Path(path)
    f = io.StringIO(newline="")
    writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
    writer.writeheader()
    for i, r in enumerate(_ranked_ops(rows), 1):
        d = asdict(r)
        d.pop("kind")
        share = _share(r, denominator_us, scale)
        writer.writerow({"rank": i, "category": categorize(r.name), "share": f"{share:.6f}", **d})
    write_atomic(path, f.getvalue())  # a killed profile leaves the old file or the new one, never half
    return path


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def top_ops_markdown(
    summary: Mapping[str, Any],
    rows: Iterable[OpRow | Mapping[str, Any]],
    *,
    denominator_us: float,
    scale: float = 1.0,
    n: int = 20,
) -> str:
    """A Markdown page: the category shares, then the top ``n`` operators by self time."""
    lines = [
        f"# Profile: {summary['scenario']} on {summary['device']}",
        "",
        f"{summary['active_steps']} active step(s), {summary['step_time_ms']:.3f} ms per step (profiled).",
        "",
        "| category | share |",
        "|---|---:|",
    ]
    for cat, share in sorted(summary["categories"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {cat} | {share * 100:.1f}% |")
    lines += [
        "",
        "| # | operator | category | calls | self time (us) | share |",
        "|---:|---|---|---:|---:|---:|",
    ]
    for i, r in enumerate(_ranked_ops(rows)[:n], 1):
        share = _share(r, denominator_us, scale)
        lines.append(
            f"| {i} | `{_md_cell(r.name)}` | {categorize(r.name)} | {r.calls} | "
            f"{r.self_time_us:.1f} | {share * 100:.1f}% |"
        )
    return "\n".join(lines) + "\n"
