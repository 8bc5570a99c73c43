"""Bytes each rank communicates per training step, as they follow from the parallelism strategy.

Closed forms, deterministic, for reports and tests (what a strategy *must* move, whatever the
hardware). Collectives are counted as bandwidth-optimal ring algorithms (Patarasuk & Yuan,
"Bandwidth optimal all-reduce algorithms for clusters of workstations", JPDC 2009; the NCCL / gloo
ring): over W ranks, each rank **sends** (and receives as much)

- all-gather of a tensor of B bytes (each rank starts with B/W): ``(W-1)/W * B``;
- reduce-scatter of B bytes (each rank ends with B/W): ``(W-1)/W * B``;
- all-reduce of B bytes = reduce-scatter + all-gather: ``2 (W-1)/W * B``.

Per strategy, with P the bytes of all parameters (in the dtype they are communicated in: the AMP
``param_dtype`` under FSDP mixed precision) and G the bytes of all gradients (in the reduce dtype):

- ``"none"``, ``"dp"``: 0 across processes. (``nn.DataParallel`` does copy inside its one process:
  scatter inputs, broadcast parameters, gather outputs, reduce gradients over PCIe/NVLink; that is
  intra-process traffic and not counted here.)
- ``"ddp"``: one all-reduce of the gradients: ``2 (W-1)/W * G``. Parameters never move after the
  initial broadcast (not counted; neither are DDP's buffer broadcasts, zero with no buffers).
- ``"fsdp"``: all-gather of the parameters in forward, again in backward when
  ``reshard_after_forward=True`` (once per step when ``False``), and a reduce-scatter of the gradients:
  ``(2 or 1) * (W-1)/W * P + (W-1)/W * G``. FSDP2 pads each parameter's dim 0 to a multiple of W; the
  padding is ignored (pass padded byte counts for the exact figure).
- ``"pipeline"``: point-to-point activations: per micro-batch, stage s sends its output forward
  (unless it is the last stage) and the gradient of its input backward (unless it is the first),
  each as large as the activation at that boundary: :func:`pipeline_comm_bytes_per_step`. No
  collectives (one stage per rank, no data parallelism inside the pipeline).

All functions return the bytes one rank sends per optimizer step (one forward and backward of the
global batch); gradient accumulation over k micro-steps multiplies DDP/FSDP's figures by k unless
communication is skipped with ``no_sync`` / ``set_requires_gradient_sync(False)``.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "STRATEGIES",
    "all_gather_bytes",
    "all_reduce_bytes",
    "comm_bytes_per_step",
    "pipeline_comm_bytes_per_step",
    "reduce_scatter_bytes",
]

STRATEGIES = ("none", "dp", "ddp", "fsdp", "pipeline")


def _check(nbytes: float, world_size: int) -> None:
    if world_size < 1:
        raise ValueError(f"world_size: got {world_size}, expected a positive integer")
    if nbytes < 0:
        raise ValueError(f"bytes: got {nbytes}, expected a non-negative number")


def all_reduce_bytes(nbytes: float, world_size: int) -> float:
    """Bytes one rank sends in a ring all-reduce of ``nbytes``: ``2 (W-1)/W * nbytes``."""
    _check(nbytes, world_size)
    return 2 * (world_size - 1) * nbytes / world_size


def all_gather_bytes(nbytes: float, world_size: int) -> float:
    """Bytes one rank sends in a ring all-gather whose *output* is ``nbytes``: ``(W-1)/W * nbytes``."""
    _check(nbytes, world_size)
    return (world_size - 1) * nbytes / world_size


def reduce_scatter_bytes(nbytes: float, world_size: int) -> float:
    """Bytes one rank sends in a ring reduce-scatter whose *input* is ``nbytes``: ``(W-1)/W * nbytes``."""
    _check(nbytes, world_size)
    return (world_size - 1) * nbytes / world_size


def pipeline_comm_bytes_per_step(
    activation_bytes_per_microbatch: float | Sequence[float],
    *,
    microbatches: int,
    num_stages: int,
    stage_index: int,
) -> float:
    """Bytes stage ``stage_index`` sends per step: ``m * (A_out + A_in)``, where ``A_out`` is the activation
    it sends forward per micro-batch (0 on the last stage) and ``A_in`` the gradient of its input it sends
    backward (0 on the first stage), as large as the activation received.

    ``activation_bytes_per_microbatch``: one number (the same activation size at every stage boundary,
    e.g. ``micro_batch * seq_len * d_model * element_size`` in a Transformer), or one per boundary
    (``num_stages - 1`` numbers, boundary k between stages k and k+1).
    """
    if num_stages < 1 or microbatches < 1:
        raise ValueError(f"got num_stages={num_stages}, microbatches={microbatches}; expected both >= 1")
    if not 0 <= stage_index < num_stages:
        raise ValueError(f"stage_index: got {stage_index}, expected 0 <= stage_index < {num_stages}")
    if isinstance(activation_bytes_per_microbatch, int | float):
        boundaries = [float(activation_bytes_per_microbatch)] * (num_stages - 1)
    else:
        boundaries = [float(a) for a in activation_bytes_per_microbatch]
        if len(boundaries) != num_stages - 1:
            raise ValueError(
                f"activation_bytes_per_microbatch: got {len(boundaries)} boundaries, expected "
                f"num_stages - 1 = {num_stages - 1}"
            )
    if any(a < 0 for a in boundaries):
        raise ValueError(f"activation_bytes_per_microbatch: got {boundaries}, expected non-negative")
    sent_forward = boundaries[stage_index] if stage_index < num_stages - 1 else 0.0
    sent_backward = boundaries[stage_index - 1] if stage_index > 0 else 0.0
    return microbatches * (sent_forward + sent_backward)


def comm_bytes_per_step(
    strategy: str,
    *,
    param_bytes: float = 0,
    grad_bytes: float = 0,
    world_size: int = 1,
    reshard_after_forward: bool = True,
    activation_bytes_per_microbatch: float | Sequence[float] | None = None,
    microbatches: int = 1,
    stage_index: int = 0,
) -> float:
    """Bytes one rank sends per step under ``strategy`` (see the module docstring for the formulas).

    ``param_bytes`` / ``grad_bytes``: bytes of all (unsharded) parameters / gradients, in the dtypes they
    are communicated in. For ``"pipeline"``, ``world_size`` is the number of stages and
    ``activation_bytes_per_microbatch``, ``microbatches`` and ``stage_index`` are required as in
    :func:`pipeline_comm_bytes_per_step`.
    """
    _check(param_bytes, world_size)
    _check(grad_bytes, world_size)
    if strategy in ("none", "dp"):
        return 0.0
    if strategy == "ddp":
        return all_reduce_bytes(grad_bytes, world_size)
    if strategy == "fsdp":
        gathers = 2 if reshard_after_forward else 1
        return gathers * all_gather_bytes(param_bytes, world_size) + reduce_scatter_bytes(
            grad_bytes, world_size
        )
    if strategy == "pipeline":
        if activation_bytes_per_microbatch is None:
            raise ValueError("comm_bytes_per_step('pipeline'): pass activation_bytes_per_microbatch")
        return pipeline_comm_bytes_per_step(
            activation_bytes_per_microbatch,
            microbatches=microbatches,
            num_stages=world_size,
            stage_index=stage_index,
        )
    raise ValueError(f"comm_bytes_per_step: unknown strategy {strategy!r}; expected one of {STRATEGIES}")
