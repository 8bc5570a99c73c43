"""dlcore: the layers, optimizers and training techniques that dlbench measures.

Every public name is importable from ``dlcore`` directly. Imports are lazy (PEP 562) so that
``import dlcore`` is cheap and one component's import cost is paid only when it is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # Transformer stack (layers/attention.py, positional.py, transformer.py)
    "MultiHeadAttention": "dlcore.layers.attention",
    "SinusoidalPositionalEncoding": "dlcore.layers.positional",
    "TransformerEncoderLayer": "dlcore.layers.transformer",
    "TransformerEncoder": "dlcore.layers.transformer",
    "TransformerDecoderLayer": "dlcore.layers.transformer",
    "TransformerDecoder": "dlcore.layers.transformer",
    "Transformer": "dlcore.layers.transformer",
    "generate_square_subsequent_mask": "dlcore.layers.transformer",
    # ResNet family (layers/squeeze_excite.py, drop.py, blurpool.py, resnet.py)
    "SqueezeExcite": "dlcore.layers.squeeze_excite",
    "drop_path": "dlcore.layers.drop",
    "DropPath": "dlcore.layers.drop",
    "BlurPool2d": "dlcore.layers.blurpool",
    "PreActBottleneck": "dlcore.layers.resnet",
    "ResNet": "dlcore.layers.resnet",
    "resnet_presets": "dlcore.layers.resnet",
    "create_resnet": "dlcore.layers.resnet",
    # optimizers and schedules (optim/adamw.py, optim/schedulers.py)
    "AdamWWithWarmup": "dlcore.optim.adamw",
    "warmup_cosine_lr": "dlcore.optim.adamw",
    "cosine_schedule": "dlcore.optim.schedulers",
    "polynomial_schedule": "dlcore.optim.schedulers",
    "exponential_schedule": "dlcore.optim.schedulers",
    "warmup_cosine_schedule": "dlcore.optim.schedulers",
    # training techniques (train/*.py, augment/mix.py)
    "MixedPrecisionTrainer": "dlcore.train.amp",
    "resolve_amp_dtype": "dlcore.train.amp",
    "apply_activation_checkpointing": "dlcore.train.checkpointing",
    "EarlyStopping": "dlcore.train.early_stopping",
    "fit": "dlcore.train.loop",
    "save_checkpoint": "dlcore.train.loop",
    "load_checkpoint": "dlcore.train.loop",
    "mixup_batch": "dlcore.augment.mix",
    "cutmix_batch": "dlcore.augment.mix",
    "MixUp": "dlcore.augment.mix",
    "CutMix": "dlcore.augment.mix",
    # parallelism applied from outside the model (parallel/dp.py, ddp.py, fsdp.py, pipeline.py, comm.py)
    "wrap_dp": "dlcore.parallel.dp",
    "wrap_ddp": "dlcore.parallel.ddp",
    "wrap_fsdp": "dlcore.parallel.fsdp",
    "split_encoder": "dlcore.parallel.pipeline",
    "split_resnet": "dlcore.parallel.pipeline",
    "build_pipeline": "dlcore.parallel.pipeline",
    "Pipeline": "dlcore.parallel.pipeline",
    "bubble_fraction": "dlcore.parallel.pipeline",
    "comm_bytes_per_step": "dlcore.parallel.comm",
    "pipeline_comm_bytes_per_step": "dlcore.parallel.comm",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dlcore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: next access skips __getattr__
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from dlcore.augment.mix import CutMix, MixUp, cutmix_batch, mixup_batch  # noqa: F401
    from dlcore.layers.attention import MultiHeadAttention  # noqa: F401
    from dlcore.layers.blurpool import BlurPool2d  # noqa: F401
    from dlcore.layers.drop import DropPath, drop_path  # noqa: F401
    from dlcore.layers.positional import SinusoidalPositionalEncoding  # noqa: F401
    from dlcore.layers.resnet import PreActBottleneck, ResNet, create_resnet, resnet_presets  # noqa: F401
    from dlcore.layers.squeeze_excite import SqueezeExcite  # noqa: F401
    from dlcore.layers.transformer import (  # noqa: F401
        Transformer,
        TransformerDecoder,
        TransformerDecoderLayer,
        TransformerEncoder,
        TransformerEncoderLayer,
        generate_square_subsequent_mask,
    )
    from dlcore.optim.adamw import AdamWWithWarmup, warmup_cosine_lr  # noqa: F401
    from dlcore.optim.schedulers import (  # noqa: F401
        cosine_schedule,
        exponential_schedule,
        polynomial_schedule,
        warmup_cosine_schedule,
    )
    from dlcore.train.amp import MixedPrecisionTrainer, resolve_amp_dtype  # noqa: F401
    from dlcore.train.checkpointing import apply_activation_checkpointing  # noqa: F401
    from dlcore.train.early_stopping import EarlyStopping  # noqa: F401
    from dlcore.train.loop import fit, load_checkpoint, save_checkpoint  # noqa: F401
