"""Scenario registry: a frozen config dataclass plus a builder, registered by name.

    @dataclass(frozen=True)
    class AttentionConfig:
        batch_size: int = 8
        seq_len: int = 512
        ...

    @register_scenario(
        "attention",
        config=AttentionConfig,
        presets={"tiny": {"batch_size": 2, "seq_len": 16}, "default": {}, "large": {...}},
        description="multi-head self-attention (dlcore.MultiHeadAttention)",
    )
    def build_attention(cfg: AttentionConfig, ctx: BuildContext) -> Workload: ...

No exec, no target strings: a scenario is found by name in ``SCENARIOS`` after
``bench.scenarios`` has been imported (``load_scenarios()`` does that). A name that is not there is
handed to ``bench.foreign.resolve`` by ``get_scenario``: a model of your own (``path/file.py:factory``,
``package.module:factory``, an entry point of the group ``dlbench.scenarios``) or ``timm:`` /
``hf:``, whose spec is generated from the factory's signature or the model's configuration (not
added to ``SCENARIOS``; cached there). So every consumer of a name accepts them.

The registry owns parameter parsing and validation. A config field declares its constraint with
``size(8)``, ``size0(0)``, ``positive(1e-3)``, ``probability(0.0)`` or ``choice("gelu", (...))``
(dataclass field metadata); ``ScenarioSpec.coerce`` parses a value from any source to the field's
type (``bench.constraints``), and ``make_config`` checks every field's constraint and then runs the
config's own ``__post_init__`` (cross-field rules, optional packages). Every value a builder would
reject is therefore rejected in the parent, before any child starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import pkgutil
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.constraints import PARSERS, Check, parse

MODES: tuple[str, ...] = ("forward", "train")
PRESETS: tuple[str, ...] = ("tiny", "default", "large")
PRECISIONS: tuple[str, ...] = ("fp32", "amp-bf16", "amp-fp16")
CHECKPOINTING: tuple[str, ...] = ("none", "full")
# torch.compile's modes (``torch.compile(mode=...)``), "none" for eager (bench.compiling)
COMPILE_MODES: tuple[str, ...] = (
    "none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs",
)  # fmt: skip


CHECK_KEY = "dlbench_check"
# set in the environment of every measuring child process (test scenarios that crash check it)
CHILD_ENV_VAR = "DLBENCH_CHILD"


def _constrained(default: Any, check: Check) -> Any:
    return field(default=default, metadata={CHECK_KEY: check})


def size(default: int) -> Any:
    """A config field that must be a positive integer."""
    return _constrained(default, Check("size"))


def size0(default: int) -> Any:
    """A config field that must be a positive integer, or 0 where 0 means "as defined elsewhere"."""
    return _constrained(default, Check("size0"))


def positive(default: float) -> Any:
    """A config field that must be a number > 0."""
    return _constrained(default, Check("positive"))


def nonneg(default: float) -> Any:
    """A config field that must be a number >= 0."""
    return _constrained(default, Check("nonneg"))


def probability(default: float) -> Any:
    """A config field that must be in [0, 1) (a dropout rate, say)."""
    return _constrained(default, Check("probability"))


def choice(default: str, choices: tuple[str, ...]) -> Any:
    """A config field that must be one of ``choices``."""
    return _constrained(default, Check("choice", tuple(choices)))


@dataclass(frozen=True)
class BuildContext:
    """What a builder needs besides its config: where to put tensors and a seed."""

    device: str = "cpu"  # "cpu", "cuda", "cuda:1", ...
    mode: str = "train"  # one of MODES
    seed: int = 0
    channels_last: bool = False


@dataclass(frozen=True)
class ScenarioSpec:
    name: str
    config_cls: type
    build: Callable[[Any, BuildContext], Any]  # (config, ctx) -> bench.workload.Workload
    presets: Mapping[str, Mapping[str, Any]]
    description: str = ""
    modes: tuple[str, ...] = MODES
    # modes listed here are reported as `skipped` rows with this reason instead of being run
    unsupported_modes: Mapping[str, str] = field(default_factory=dict)
    test_only: bool = False  # hidden from `dlbench list` unless asked
    # other names of parameters (a Hugging Face configuration's attribute_map: num_hidden_layers -> n_layer)
    aliases: Mapping[str, str] = field(default_factory=dict)

    def canonical(self, name: str) -> str:
        """The parameter ``name`` stands for (itself unless it is an alias)."""
        return self.aliases.get(name, name)

    def parameters(self) -> dict[str, Any]:
        """Config field name -> default value."""
        return {f.name: f.default for f in dataclasses.fields(self.config_cls)}

    def field_type(self, name: str) -> type:
        """bool, int, float or str: the declared type of config field ``name``."""
        hints = typing.get_type_hints(self.config_cls)
        hint = hints.get(name)
        if hint in PARSERS:
            return hint
        default = self.parameters()[name]
        return type(default) if type(default) in PARSERS else str

    def field_check(self, name: str) -> Check | None:
        for f in dataclasses.fields(self.config_cls):
            if f.name == name:
                return f.metadata.get(CHECK_KEY)
        return None

    def describe_parameter(self, name: str) -> str:
        """``int, a positive integer`` style text for ``dlbench list`` and error messages."""
        check = self.field_check(name)
        return self.field_type(name).__name__ + (f", {check.describe()}" if check else "")

    def coerce(self, name: str, value: Any) -> Any:
        """``value`` (a CLI string, a TOML or Python value) parsed to config field ``name``'s type.

        ``ValueError`` (a ``bench.errors.UsageError``) names the parameter, the value and what is
        expected. Range constraints are checked by ``make_config``.
        """
        params = self.parameters()
        name = self.canonical(name)
        if name not in params:
            raise ValueError(
                f"scenario {self.name!r} has no parameter {name!r}; its parameters are {sorted(params)}"
            )
        return parse(self.field_type(name), name, value)

    def make_config(self, preset: str = "default", **overrides: Any) -> Any:
        """Config for a preset with overrides applied; ValueError names what is wrong."""
        if preset not in self.presets:
            raise ValueError(
                f"preset: unknown preset {preset!r} for scenario {self.name!r}; "
                f"expected one of {sorted(self.presets)}"
            )
        params = self.parameters()
        if self.aliases:
            overrides = self._unalias(overrides)
        unknown = sorted(set(overrides) - set(params))
        if unknown:
            raise ValueError(
                f"scenario {self.name!r} has no parameter(s) {unknown}; its parameters are {sorted(params)}"
            )
        values = {**self.presets[preset], **overrides}
        for name, value in values.items():
            check = self.field_check(name)
            if check is not None:
                check(name, value)
        return self.config_cls(**values)

    def _unalias(self, values: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in values.items():
            key = self.canonical(name)
            if key in out:
                raise ValueError(f"{key}: given twice (as {key!r} and as its alias {name!r}); give one")
            out[key] = value
        return out


SCENARIOS: dict[str, ScenarioSpec] = {}


def register_scenario(
    name: str,
    *,
    config: type,
    presets: Mapping[str, Mapping[str, Any]],
    description: str = "",
    modes: tuple[str, ...] = MODES,
    unsupported_modes: Mapping[str, str] | None = None,
    test_only: bool = False,
) -> Callable[[Callable[[Any, BuildContext], Any]], Callable[[Any, BuildContext], Any]]:
    """Class-free decorator registering ``builder(config, ctx) -> Workload`` under ``name``."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"config for scenario {name!r} must be a dataclass, got {config!r}")
    for p in ("tiny", "default"):
        if p not in presets:
            raise ValueError(f"scenario {name!r} must define a {p!r} preset")

    def deco(builder: Callable[[Any, BuildContext], Any]) -> Callable[[Any, BuildContext], Any]:
        if name in SCENARIOS:
            raise ValueError(f"scenario {name!r} registered twice")
        spec = ScenarioSpec(
            name=name,
            config_cls=config,
            build=builder,
            presets=dict(presets),
            description=description or ((builder.__doc__ or "").strip().splitlines() or [""])[0],
            modes=modes,
            unsupported_modes=dict(unsupported_modes or {}),
            test_only=test_only,
        )
        for preset_name in spec.presets:
            spec.make_config(preset_name)  # fails at import if a preset names an unknown field
        SCENARIOS[name] = spec
        return builder

    return deco


def load_scenarios() -> dict[str, ScenarioSpec]:
    """Import every module of ``bench.scenarios`` so their decorators run."""
    import bench.scenarios as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{mod.name}")
    return SCENARIOS


def get_scenario(name: str) -> ScenarioSpec:
    """Scenario by name; ValueError suggests the closest names when it is unknown.

    A name that is not a built-in is resolved by ``bench.foreign.resolve`` (imported only then): a
    factory (``path/to/file.py:build``, ``package.module:build``), ``timm:<model>``,
    ``hf:<model type>`` or an installed entry point. Its errors (a missing file or attribute, a bad
    factory signature, an unknown timm or HF name) are ``UsageError`` s naming what is wrong.
    """
    load_scenarios()
    if name in SCENARIOS:
        return SCENARIOS[name]
    from bench.foreign.resolve import entry_point_names, resolve

    spec = resolve(name)
    if spec is not None:
        return spec
    public = sorted(n for n, s in SCENARIOS.items() if not s.test_only) + entry_point_names()
    # test-only scenarios ("_crash", ...) are listed nowhere, but a name that starts like one gets them
    pool = list(SCENARIOS) if name.startswith("_") else public
    close = difflib.get_close_matches(name, pool, n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"scenario: unknown scenario {name!r}; known: {public}, or a model of your own "
        f"(path/to/file.py:factory, package.module:factory, timm:<model>, hf:<model type>).{hint}"
    )
