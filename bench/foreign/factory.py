"""A factory function as a scenario: its keyword parameters become a generated frozen config dataclass.

    from bench.api import Workload, scenario

    @scenario(presets={"tiny": {"width": 64, "batch_size": 2}}, checks={"dropout": "probability"})
    def build(width: int = 512, depth: int = 4, dropout: float = 0.0, batch_size: int = 8) -> Workload:
        ...

**Parameters.** Every parameter of the factory needs a default and a type hint: ``bool``, ``int``,
``float``, ``str`` or ``Literal[...]`` (a choice). A parameter without one is refused up front,
naming it, as is a default of another type. They become the fields of a frozen dataclass, so the
registry parses and checks them like any built-in's fields: ``-p width=1024,2048`` is a grid axis,
``--batch-size`` sets ``batch_size`` (declare it: the parallel strategies split it over ranks and
micro-batches), and a bad value exits 2 before anything runs. Constraints: a ``Literal`` is a
choice; an ``int`` whose default is positive must stay positive (a size, a count; give the default
0 to allow 0); ``checks`` in ``@scenario`` names any other (``size``, ``size0``, ``positive``,
``nonneg``, ``probability``, ``fraction``). ``*args`` and ``**kwargs`` are not parameters.

dlbench adds one parameter of its own to every such scenario, ``checkpoint_blocks`` (default
empty): the class name(s) of the repeated blocks, ``+``-separated, overriding what the factory
declares or what is detected (``bench.foreign.blocks``).

**The call.** dlbench calls ``factory(**params)`` under ``torch.device(device)``, so tensors the
factory creates without an explicit device (the model's weights, the batch, labels a loss closes
over) are created on the run's device; a fixed seed precedes the call. What it returns must be a
``Workload``; dlbench finishes it (``bench.foreign.prepare``).

**The check up front** (``preflight``): a generated config's ``__post_init__`` builds the workload
once on the ``meta`` device (no memory is allocated, no weights computed), in the process that plans
the run, so that a factory that raises, returns something other than a ``Workload``, or names a
``checkpoint_blocks`` class its model does not have, stops the run with exit 2 before any child
starts. A factory that cannot run on ``meta`` (it reads a tensor's values while building) is built
for real on the CPU instead. Processes dlbench starts skip the check (they build right away, and a
failure there is an ``error`` row). Each configuration is checked once per process.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bench.constraints import Check, parse
from bench.errors import UsageError
from bench.registry import CHECK_KEY, CHILD_ENV_VAR, MODES, BuildContext, ScenarioSpec

SCENARIO_ATTR = "__dlbench_scenario__"
BLOCKS_PARAM = "checkpoint_blocks"
CHECK_KINDS: tuple[str, ...] = ("size", "size0", "positive", "nonneg", "probability", "fraction")


@dataclass(frozen=True)
class ScenarioInfo:
    """What ``@scenario`` attaches to a factory: presets, description, constraints, modes."""

    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    description: str = ""
    checks: Mapping[str, str] = field(default_factory=dict)  # parameter -> a Check kind
    modes: tuple[str, ...] = MODES


def scenario(
    fn: Callable[..., Any] | None = None,
    *,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    description: str = "",
    checks: Mapping[str, str] | None = None,
    modes: tuple[str, ...] = MODES,
) -> Any:
    """Declare a factory as a dlbench scenario (optional: a plain function works too).

    ``presets`` maps preset names to parameter values (``default`` is always the factory's own
    defaults; ``tiny`` is the defaults unless given). ``description`` shows in ``dlbench list``
    (default: the first line of the docstring). ``checks`` constrains parameters beyond their type
    (``{"dropout": "probability"}``). ``modes``: the modes the model supports (forward, train).
    Used as ``@scenario`` or ``@scenario(...)``; returns the factory itself.
    """
    info = ScenarioInfo(dict(presets or {}), description, dict(checks or {}), tuple(modes))

    def mark(f: Callable[..., Any]) -> Callable[..., Any]:
        setattr(f, SCENARIO_ATTR, info)
        return f

    return mark(fn) if fn is not None else mark


@dataclass(frozen=True)
class Param:
    """One scenario parameter: name, type (bool/int/float/str), default and constraint."""

    name: str
    type: type
    default: Any
    check: Check | None = None


def _hint_kind(hint: Any) -> tuple[type, tuple[Any, ...]] | None:
    """``(type, choices)`` of a supported hint: bool/int/float/str, or ``Literal[...]`` of one type."""
    if hint in (bool, int, float, str):
        return hint, ()
    if typing.get_origin(hint) is Literal:
        values = typing.get_args(hint)
        kinds = {type(v) for v in values}
        if len(kinds) == 1 and next(iter(kinds)) in (bool, int, float, str):
            return next(iter(kinds)), tuple(values)
    return None


def factory_params(
    fn: Callable[..., Any], label: str, checks: Mapping[str, str] | None = None
) -> list[Param]:
    """The scenario parameters of ``fn``'s signature; ``UsageError`` naming the first bad one."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{label}: cannot read the factory's signature: {exc}") from None
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # a hint naming something the module does not define
        raise UsageError(
            f"{label}: cannot resolve the factory's type hints: {type(exc).__name__}: {exc}"
        ) from None
    checks = dict(checks or {})
    out: list[Param] = []
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        where = f"{label}: parameter {p.name!r}"
        if p.kind is p.POSITIONAL_ONLY:
            raise UsageError(f"{where} is positional-only; dlbench passes parameters by name")
        if p.name == BLOCKS_PARAM:
            raise UsageError(f"{where} is reserved: dlbench sets {BLOCKS_PARAM} itself (the repeated blocks)")
        if p.default is inspect.Parameter.empty:
            raise UsageError(
                f"{where} has no default; every factory parameter needs one (the value used when "
                "no -p sets it)"
            )
        if p.name not in hints:
            raise UsageError(f"{where} has no type hint; give it bool, int, float, str or Literal[...]")
        kind = _hint_kind(hints[p.name])
        if kind is None:
            raise UsageError(
                f"{where}: type {hints[p.name]!r} is not supported; expected bool, int, float, str or "
                "Literal[...] of one of them"
            )
        typ, choices = kind
        try:
            default = parse(typ, p.name, p.default)
        except UsageError:
            raise UsageError(f"{where}: default {p.default!r} is not a {typ.__name__}") from None
        check: Check | None = None
        declared = checks.pop(p.name, None)
        if choices:
            check = Check("choice", choices)
        elif declared is not None:
            check = Check(declared)
        elif typ is int and default > 0:
            check = Check("size")
        if check is not None and not check.ok(default):
            raise UsageError(f"{where}: default {default!r} is not {check.describe()}")
        out.append(Param(p.name, typ, default, check))
    for name in checks:
        if not any(q.name == name for q in out):
            raise UsageError(f"{label}: checks names {name!r}, which is not a parameter of the factory")
    return out


def _validated_checks(label: str, checks: Mapping[str, str]) -> dict[str, str]:
    bad = {k: v for k, v in checks.items() if v not in CHECK_KINDS}
    if bad:
        raise UsageError(f"{label}: unknown check(s) {bad}; expected one of {list(CHECK_KINDS)}")
    return dict(checks)


# --- the generated config and its check up front ---------------------------------------------------

_CHECKED: dict[tuple[str, Any], str | None] = {}  # (scenario, config) -> None (ok) or the error message


def _in_child() -> bool:
    import os

    return os.environ.get(CHILD_ENV_VAR) == "1"


def preflight(name: str, build: Callable[[Any, BuildContext], Any], cfg: Any) -> None:
    """Build ``cfg`` once on the meta device (else for real on the CPU); ``ValueError`` if it fails."""
    if _in_child():
        return
    key = (name, cfg)
    if key not in _CHECKED:
        _CHECKED[key] = _try_build(build, cfg)
    error = _CHECKED[key]
    if error is not None:
        raise ValueError(error)


def _try_build(build: Callable[[Any, BuildContext], Any], cfg: Any) -> str | None:
    """None when ``cfg`` builds on meta (or, failing that inside the factory, on the CPU), else why not."""
    import torch

    for device in ("meta", "cpu"):
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                build(cfg, BuildContext(device=device, mode="forward"))
            return None
        except Exception as exc:
            note = factory_note(exc)
            if note is None or device == "cpu" or isinstance(exc, UsageError):
                return f"{note} raised {type(exc).__name__}: {exc}" if note else str(exc)
            # raised inside the factory on meta: perhaps only meta is what it cannot run on
    return None  # pragma: no cover - the loop always returns


_NOTE_PREFIX = "dlbench: in "


def call_factory(fn: Callable[..., Any], kwargs: Mapping[str, Any], device: str, qual: str) -> Any:
    """``fn(**kwargs)`` under ``torch.device(device)``; an exception it raises keeps its type (an OOM
    stays an OOM) and gets a note naming the call (``factory_note``)."""
    import torch

    try:
        with torch.device(device):
            return fn(**kwargs)
    except Exception as exc:
        exc.add_note(f"{_NOTE_PREFIX}factory {qual}({_call_args(kwargs)})")
        raise


def factory_note(exc: BaseException) -> str | None:
    """``factory name(args)`` when ``exc`` was raised inside a factory call (``call_factory``)."""
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, str) and note.startswith(_NOTE_PREFIX):
            return note[len(_NOTE_PREFIX) :]
    return None


def make_config_class(
    cls_name: str, params: list[Param], *, scenario_name: str, build: Callable[[Any, BuildContext], Any]
) -> type:
    """A frozen dataclass with one field per parameter (constraints in the registry's metadata) plus
    ``checkpoint_blocks``; its ``__post_init__`` runs ``preflight``."""
    fields: list[tuple[str, type, Any]] = []
    for p in params:
        meta = {CHECK_KEY: p.check} if p.check is not None else {}
        fields.append((p.name, p.type, field(default=p.default, metadata=meta)))
    fields.append((BLOCKS_PARAM, str, field(default="")))

    def __post_init__(self: Any) -> None:
        preflight(scenario_name, build, self)

    doc = f"Parameters of {scenario_name} (generated from its signature; built once on meta to check it)."
    return dataclasses.make_dataclass(
        cls_name, fields, frozen=True, namespace={"__post_init__": __post_init__, "__doc__": doc}
    )


def make_spec(
    name: str,
    params: list[Param],
    build: Callable[[Any, BuildContext], Any],
    *,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    description: str = "",
    modes: tuple[str, ...] = MODES,
    aliases: Mapping[str, str] | None = None,
    label: str | None = None,
) -> ScenarioSpec:
    """The ``ScenarioSpec`` of a foreign scenario; presets are checked against the parameters here
    (an unknown name or a bad value is a ``UsageError``), without building anything."""
    label = label or name
    cls = make_config_class(_class_name(name), params, scenario_name=name, build=build)
    names = {p.name: p for p in params}
    all_presets: dict[str, dict[str, Any]] = {"tiny": {}, "default": {}}
    for preset, values in (presets or {}).items():
        if preset == "default" and values:
            raise UsageError(f"{label}: preset 'default' is the factory's own defaults; name yours otherwise")
        checked: dict[str, Any] = {}
        for key, value in values.items():
            key = (aliases or {}).get(key, key)
            if key == BLOCKS_PARAM:
                checked[key] = parse(str, f"preset {preset}: {key}", value)
                continue
            if key not in names:
                raise UsageError(
                    f"{label}: preset {preset!r} sets {key!r}, which is not a parameter; its parameters are "
                    f"{sorted(names)}"
                )
            p = names[key]
            checked[key] = parse(p.type, f"{label}: preset {preset}: {key}", value, p.check)
        all_presets[preset] = checked
    bad_modes = [m for m in modes if m not in MODES]
    if bad_modes or not modes:
        raise UsageError(f"{label}: modes must be some of {list(MODES)}, got {list(modes)}")
    return ScenarioSpec(
        name=name,
        config_cls=cls,
        build=build,
        presets=all_presets,
        description=description,
        modes=tuple(modes),
        aliases=dict(aliases or {}),
    )


def _class_name(name: str) -> str:
    import re

    return "".join(w.capitalize() for w in re.split(r"[^A-Za-z0-9]+", name) if w) + "Config"


# --- a user factory ----------------------------------------------------------------------------------


def spec_from_factory(fn: Any, name: str, origin: str) -> ScenarioSpec:
    """The scenario of factory ``fn`` (found at ``origin``, e.g. ``models/gpt.py:build``)."""
    label = f"scenario {name!r}"
    if not callable(fn) or isinstance(fn, type):
        what = "a class" if isinstance(fn, type) else type(fn).__name__
        raise UsageError(
            f"{label}: {origin} is {what}, not a factory function returning a bench.api.Workload"
        )
    info = getattr(fn, SCENARIO_ATTR, None) or ScenarioInfo()
    if not isinstance(info, ScenarioInfo):
        raise UsageError(f"{label}: {origin} carries a foreign {SCENARIO_ATTR} attribute")
    checks = _validated_checks(label, info.checks)
    params = factory_params(fn, label, checks)
    qual = getattr(fn, "__qualname__", origin)

    def build(cfg: Any, ctx: BuildContext) -> Any:
        from bench.foreign.prepare import finish

        kwargs = {p.name: getattr(cfg, p.name) for p in params}
        return finish(call_factory(fn, kwargs, ctx.device, qual), cfg, ctx, origin=f"factory {qual}")

    description = info.description or _first_line(getattr(fn, "__doc__", None)) or f"factory {origin}"
    return make_spec(
        name, params, build, presets=info.presets, description=description, modes=info.modes, label=label
    )


def _call_args(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0].strip() if lines else ""


__all__ = [
    "BLOCKS_PARAM",
    "Param",
    "ScenarioInfo",
    "factory_params",
    "make_spec",
    "preflight",
    "scenario",
    "spec_from_factory",
]
