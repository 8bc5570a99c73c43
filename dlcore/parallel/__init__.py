"""Parallelism applied from outside single-device model code (torchtitan's ``parallelize_*`` style).

One technique per module: ``dp`` (``nn.DataParallel``), ``ddp`` (``DistributedDataParallel``),
``fsdp`` (FSDP2 ``fully_shard``), ``pipeline`` (``torch.distributed.pipelining``: splitting and
GPipe / 1F1B schedules; ``traced``: any other model cut at its blocks by tracing), and ``comm`` (the
bytes each strategy communicates per step, in closed form). The models in ``dlcore.layers`` stay
single-device code; these functions wrap, shard or cut them. Imports are lazy so that
``import dlcore.parallel`` does not load ``torch.distributed``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "wrap_dp": "dlcore.parallel.dp",
    "wrap_ddp": "dlcore.parallel.ddp",
    "wrap_fsdp": "dlcore.parallel.fsdp",
    "DEFAULT_BLOCK_TYPES": "dlcore.parallel.fsdp",
    "fsdp_shard_numel": "dlcore.parallel.fsdp",
    "fsdp_padded_shard_numel": "dlcore.parallel.fsdp",
    "local_numel": "dlcore.parallel.fsdp",
    "local_nbytes": "dlcore.parallel.fsdp",
    "Pipeline": "dlcore.parallel.pipeline",
    "EncoderStage": "dlcore.parallel.pipeline",
    "ResNetStage": "dlcore.parallel.pipeline",
    "balanced_partition": "dlcore.parallel.pipeline",
    "bubble_fraction": "dlcore.parallel.pipeline",
    "build_pipeline": "dlcore.parallel.pipeline",
    "split_encoder": "dlcore.parallel.pipeline",
    "split_resnet": "dlcore.parallel.pipeline",
    "block_split_points": "dlcore.parallel.traced",
    "build_traced_pipeline": "dlcore.parallel.traced",
    "STRATEGIES": "dlcore.parallel.comm",
    "all_gather_bytes": "dlcore.parallel.comm",
    "all_reduce_bytes": "dlcore.parallel.comm",
    "reduce_scatter_bytes": "dlcore.parallel.comm",
    "comm_bytes_per_step": "dlcore.parallel.comm",
    "pipeline_comm_bytes_per_step": "dlcore.parallel.comm",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dlcore.parallel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from dlcore.parallel.comm import (  # noqa: F401
        STRATEGIES,
        all_gather_bytes,
        all_reduce_bytes,
        comm_bytes_per_step,
        pipeline_comm_bytes_per_step,
        reduce_scatter_bytes,
    )
    from dlcore.parallel.ddp import wrap_ddp  # noqa: F401
    from dlcore.parallel.dp import wrap_dp  # noqa: F401
    from dlcore.parallel.fsdp import (  # noqa: F401
        DEFAULT_BLOCK_TYPES,
        fsdp_padded_shard_numel,
        fsdp_shard_numel,
        local_nbytes,
        local_numel,
        wrap_fsdp,
    )
    from dlcore.parallel.pipeline import (  # noqa: F401
        EncoderStage,
        Pipeline,
        ResNetStage,
        balanced_partition,
        bubble_fraction,
        build_pipeline,
        split_encoder,
        split_resnet,
    )
    from dlcore.parallel.traced import block_split_points, build_traced_pipeline  # noqa: F401
