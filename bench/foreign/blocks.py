"""The repeated blocks of a model: detected, or named by class, and where they sit.

Activation checkpointing wraps each block, FSDP shards each before the root, and a pipeline is cut
between them; a model's author rarely says which they are, so they are detected:

**Detection** (``detect_blocks``): among the model's ``nn.ModuleList`` and ``nn.Sequential``
containers whose children all have one type, the one with the most children wins (ties: the one
holding the most parameters, then the first in module order); its children's type is the block
type. Children without parameters (activations, dropout) and containers of containers are not
blocks. A GPT's ``ModuleList`` of decoder layers, a ViT's ``Sequential`` of ``Block`` s, a ResNet's
stages of ``BasicBlock`` s are found this way; Hugging Face names the same class in
``_no_split_modules`` (the tests check the two agree).

**By name** (``blocks_by_name``): ``-p checkpoint_blocks=GPT2Block`` (several: ``A+B``) names the
classes, by ``__name__`` or by ``module.QualName``; a name no submodule has is refused with the
model's candidate classes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import nn

CONTAINERS: tuple[type[nn.Module], ...] = (nn.ModuleList, nn.Sequential)
_NOT_BLOCKS: tuple[type[nn.Module], ...] = (nn.ModuleList, nn.Sequential, nn.ModuleDict)


def _n_params(modules: Iterable[nn.Module]) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def detect_blocks(model: nn.Module) -> tuple[type[nn.Module], ...]:
    """The element type of the largest same-type ``ModuleList`` / ``Sequential`` (see the module doc),
    as a 1-tuple; ``()`` when the model has none."""
    best: tuple[tuple[int, int], type[nn.Module]] | None = None
    for container in model.modules():
        if not isinstance(container, CONTAINERS):
            continue
        children = list(container.children())
        if not children:
            continue
        kind = type(children[0])
        if issubclass(kind, _NOT_BLOCKS) or kind is type(model) or any(type(c) is not kind for c in children):
            continue
        n = _n_params(children)
        if n == 0:
            continue
        rank = (len(children), n)
        if best is None or rank > best[0]:
            best = (rank, kind)
    return (best[1],) if best is not None else ()


def _names(kind: type) -> set[str]:
    return {kind.__name__, f"{kind.__module__}.{kind.__qualname__}"}


def candidate_classes(model: nn.Module) -> list[str]:
    """Class names of the model's submodules that hold parameters, first occurrence first."""
    out: dict[str, None] = {}
    for m in model.modules():
        if m is not model and not isinstance(m, _NOT_BLOCKS) and any(True for _ in m.parameters()):
            out.setdefault(type(m).__name__, None)
    return list(out)


def blocks_by_name(model: nn.Module, spec: str) -> tuple[type[nn.Module], ...]:
    """The classes named in ``spec`` (``A`` or ``A+B``) among the model's submodules; ``ValueError``
    naming the unknown one and listing the model's candidates."""
    wanted = [w.strip() for w in spec.split("+") if w.strip()]
    if not wanted:
        raise ValueError(f"checkpoint_blocks: expected a class name (A or A+B), got {spec!r}")
    found: list[type[nn.Module]] = []
    for name in wanted:
        match = next((type(m) for m in model.modules() if m is not model and name in _names(type(m))), None)
        if match is None:
            shown = candidate_classes(model)
            more = f" (and {len(shown) - 20} more)" if len(shown) > 20 else ""
            raise ValueError(
                f"checkpoint_blocks: {type(model).__name__} has no submodule of class {name!r}; its classes "
                f"with parameters are {shown[:20]}{more}"
            )
        if match not in found:
            found.append(match)
    return tuple(found)


def block_paths(model: nn.Module, kinds: Sequence[type[nn.Module]]) -> list[str]:
    """Qualified names of the blocks of ``kinds`` in module order, outermost only (a block inside
    another block is part of it): the boundaries a pipeline may be cut at."""
    kinds = tuple(kinds)
    out: list[str] = []
    for name, m in model.named_modules():
        if not name or not isinstance(m, kinds):
            continue
        if any(name.startswith(prefix + ".") for prefix in out):
            continue
        out.append(name)
    return out


def describe(kinds: Sequence[type[nn.Module]]) -> str:
    """``GPT2Block`` or ``EncoderLayer+DecoderLayer``: how rows name the blocks."""
    return "+".join(k.__name__ for k in kinds)
