"""``hf:<model type>``: a Hugging Face model built from its configuration, random weights, offline.

``AutoConfig.for_model(model_type, **fields)`` then the ``AutoModelFor*`` class of the task,
``from_config`` (``dlbench[hf]``; ``HF_HUB_OFFLINE=1`` is set, nothing is fetched). Parameters:

- every field of the model's configuration class with a plain default (a ``bool``, ``int``,
  ``float`` or ``str``; fields defaulting to ``None``, lists and dicts are left as the model sets
  them): ``hf:gpt2 -p n_layer=2`` or its alias ``-p num_hidden_layers=2`` (the configuration's
  ``attribute_map``), checked by the configuration and the model themselves, once, up front;
  ``use_cache`` defaults to false here (a training or forward step builds no KV cache);
- ``batch_size`` (4) and ``seq_len`` (128, at most the model's ``max_position_embeddings``);
- ``task``: the head, by default the first of ``causal-lm`` (decoders: gpt2, llama),
  ``masked-lm`` (encoders: bert), ``seq2seq-lm`` (t5, bart), ``sequence-classification`` that the
  model type has: seq2seq first, then masked-lm, then causal-lm;
- ``attn_implementation``: ``sdpa`` (default) or ``eager``.

The batch: ``input_ids`` uniform over the vocabulary, shape (batch_size, seq_len), and ``labels``
for the model's own loss (the ids themselves for causal-lm, which HF shifts; random ids for
masked-lm and seq2seq-lm; random classes for classification), passed as keywords in train mode, so
the loss is the model's (``output.loss``); forward mode passes no labels, so computes no loss. A
seq2seq model also gets its decoder input ids (the label ids: teacher forcing, unshifted).
Throughput counts input tokens. The blocks are the classes of the model's ``_no_split_modules``
that sit in a ``ModuleList`` (``GPT2Block``; BART's encoder and decoder layers both), else detected.
Preset ``tiny`` shrinks the standard fields the configuration has (2 layers, hidden 64, 2 heads,
intermediate 128, vocabulary 1024) and the batch.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from typing import Any

from bench.constraints import Check
from bench.errors import UsageError
from bench.foreign.factory import Param, make_spec
from bench.registry import BuildContext, ScenarioSpec

# task -> the auto-model mapping (of transformers.models.auto.modeling_auto) and class
TASKS: dict[str, tuple[str, str]] = {
    "seq2seq-lm": ("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", "AutoModelForSeq2SeqLM"),
    "masked-lm": ("MODEL_FOR_MASKED_LM_MAPPING_NAMES", "AutoModelForMaskedLM"),
    "causal-lm": ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "AutoModelForCausalLM"),
    "sequence-classification": (
        "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
        "AutoModelForSequenceClassification",
    ),
}
ATTN_IMPLEMENTATIONS: tuple[str, ...] = ("sdpa", "eager")
OWN_PARAMS: tuple[str, ...] = ("batch_size", "seq_len", "task", "attn_implementation")
# the standard configuration names (through attribute_map where a model spells them otherwise)
TINY: dict[str, int] = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 1024,
}


def import_transformers(what: str) -> Any:
    """The transformers module, offline; ``UsageError`` naming the extra when it is not installed."""
    from bench.foreign.compat import ensure_importable

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights from a configuration: nothing to fetch
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        ensure_importable()
        import transformers
    except ImportError:
        raise UsageError(
            f"{what} needs transformers, which is not installed: pip install 'dlbench[hf]'"
        ) from None
    transformers.logging.set_verbosity_error()  # a random-weight model warns about its config (tokens)
    return transformers


def _field_type(hint: Any, default: Any) -> type | None:
    """bool/int/float/str of a configuration field with a plain default, else None."""
    if isinstance(default, bool):
        return bool
    if isinstance(default, str):
        return str
    if isinstance(default, int | float):
        args = typing.get_args(hint) or (hint,)
        return float if float in args or isinstance(default, float) else int
    return None


def config_params(config_cls: type) -> list[Param]:
    """The model-specific fields of a (dataclass) configuration class with plain defaults."""
    from transformers import PretrainedConfig

    base = {f.name for f in dataclasses.fields(PretrainedConfig)}
    try:
        hints = typing.get_type_hints(config_cls)
    except Exception:  # an annotation transformers does not resolve in this environment
        hints = {}
    out: list[Param] = []
    for f in dataclasses.fields(config_cls):
        if f.name in base or f.name in OWN_PARAMS or f.name.startswith("_"):
            continue
        default = f.default
        if default is dataclasses.MISSING:
            continue
        typ = _field_type(hints.get(f.name), default)
        if typ is None:
            continue
        if f.name == "use_cache":
            default = False
        out.append(Param(f.name, typ, typ(default)))
    return out


def tasks_for(model_type: str) -> list[str]:
    """The tasks (heads) transformers has for ``model_type``, in the default order."""
    from transformers.models.auto import modeling_auto

    return [t for t, (mapping, _) in TASKS.items() if model_type in getattr(modeling_auto, mapping, {})]


def hf_spec(model_type: str) -> ScenarioSpec:
    """The scenario ``hf:<model_type>``; ``UsageError`` for a type transformers does not know."""
    name = f"hf:{model_type}"
    transformers = import_transformers(name)
    from transformers import CONFIG_MAPPING

    known = list(CONFIG_MAPPING.keys())
    if model_type not in known:
        close = difflib.get_close_matches(model_type, known, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UsageError(
            f"scenario {name!r}: transformers has no model type {model_type!r} (its CONFIG_MAPPING).{hint}"
        )
    tasks = tasks_for(model_type)
    if not tasks:
        raise UsageError(f"scenario {name!r}: transformers has no {', '.join(TASKS)} head for {model_type!r}")
    config_cls = CONFIG_MAPPING[model_type]
    fields = config_params(config_cls)
    field_names = {p.name for p in fields}
    aliases = {
        a: c for a, c in dict(getattr(config_cls, "attribute_map", {}) or {}).items() if c in field_names
    }
    params = [
        Param("batch_size", int, 4, Check("size")),
        Param("seq_len", int, 128, Check("size")),
        Param("task", str, tasks[0], Check("choice", tuple(tasks))),
        Param("attn_implementation", str, "sdpa", Check("choice", ATTN_IMPLEMENTATIONS)),
        *fields,
    ]
    tiny: dict[str, Any] = {"batch_size": 2, "seq_len": 16}
    for std, value in TINY.items():
        key = aliases.get(std, std)
        if key in field_names:
            tiny[key] = value

    def build(cfg: Any, ctx: BuildContext) -> Any:
        return _build(transformers, model_type, fields, cfg, ctx)

    return make_spec(
        name,
        params,
        build,
        presets={"tiny": tiny},
        description=f"Hugging Face {model_type} from its configuration (random weights) on random token ids; "
        "the model's own loss; items = tokens",
        aliases=aliases,
    )


def repeated_no_split(model: Any) -> list[str]:
    """The classes of the model's ``_no_split_modules`` that are elements of a ``ModuleList`` or
    ``Sequential``: its repeated blocks (the list also names one-off modules, BERT's embeddings)."""
    from bench.foreign.blocks import CONTAINERS

    listed = {type(c).__name__ for m in model.modules() if isinstance(m, CONTAINERS) for c in m.children()}
    return [n for n in sorted(getattr(model, "_no_split_modules", None) or ()) if n in listed]


def _build(transformers: Any, model_type: str, fields: list[Param], cfg: Any, ctx: BuildContext) -> Any:
    import torch

    from bench.foreign.prepare import finish
    from bench.workload import Workload

    config = transformers.AutoConfig.for_model(model_type, **{p.name: getattr(cfg, p.name) for p in fields})
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and cfg.seq_len > limit:
        raise UsageError(
            f"seq_len: {cfg.seq_len} is longer than hf:{model_type}'s max_position_embeddings ({limit}); "
            "lower seq_len or raise that field"
        )
    vocab = int(config.vocab_size)
    if cfg.task == "sequence-classification" and getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = vocab - 1  # batches of more than one sequence need one; ids never use it
    auto = getattr(transformers, TASKS[cfg.task][1])
    with torch.device(ctx.device):
        model = auto.from_config(config, attn_implementation=cfg.attn_implementation)
        shape = (cfg.batch_size, cfg.seq_len)
        ids = torch.randint(0, vocab - 1, shape)  # (B, L); vocab - 1 is left for a padding token
        if cfg.task == "causal-lm":
            labels = ids  # the model shifts them: next-token prediction
        elif cfg.task == "sequence-classification":
            labels = torch.randint(0, int(config.num_labels), (cfg.batch_size,))
        else:
            labels = torch.randint(0, vocab - 1, shape)
    batch: dict[str, Any] = {"input_ids": ids}
    if cfg.task == "seq2seq-lm":  # the decoder's input, given (not derived from labels: T5 cannot here)
        batch["decoder_input_ids"] = labels
    if ctx.mode == "train":  # inference takes no labels, so computes no loss
        batch["labels"] = labels
    out = Workload(
        model=model,
        kwargs=batch,
        items_per_step=cfg.batch_size * cfg.seq_len,
        unit="tokens",
    )
    declared = repeated_no_split(model)
    if declared and not cfg.checkpoint_blocks:
        from bench.foreign.blocks import blocks_by_name

        out.blocks = blocks_by_name(model, "+".join(declared))
    out.extra.update(model_class=type(model).__name__, task=cfg.task)
    return finish(out, cfg, ctx, origin=f"{auto.__name__}.from_config", declared_from="_no_split_modules")
