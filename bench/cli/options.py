"""The technique options, defined once for every command that builds a step: ``run``, ``profile``,
``gate``, ``budget``.

Each option (``--mode``, ``--precision``, ``--amp``, ``--checkpointing``, ``--compile``, the named
parameters ``--batch-size`` ... ``--depth`` and ``-p KEY=VALUE``, ``--preset``, ``--device``,
``--seed``, ``--channels-last``, ``--parallel``, ``--nproc``, ``--microbatches``,
``--pipeline-schedule``) has one definition here: its flag, its help, how it is read. A command takes
the ones it needs with ``technique_options``, and receives them as one ``Techniques`` value:

    from bench.cli.options import Techniques, technique_options

    @app.command("budget")
    @technique_options("mode", "precision", "checkpointing", "compile", "params", "preset", "device",
                       grid=True, shown_defaults={"mode": "train"})
    def budget_cmd(scenario: Annotated[str, typer.Argument(help="...")], techniques: Techniques) -> None:
        summary = api.budget(scenario, **techniques.request_kwargs())   # RunRequest keywords

The decorator adds the options to the command's signature (Typer reads it; they come right after the
command's arguments in ``--help``) and gives the command ``techniques`` instead. ``grid=True`` says
each list-valued option is a grid axis (a comma list); ``grid=False`` that the command measures one
configuration. ``shown_defaults`` overrides the default ``--help`` shows where the command's differs.
Values are checked downstream by ``bench.run.request.RunRequest`` (choices, ranges; errors name the
flag), except what only the command line can get wrong, checked here: a value option given twice
(Typer would keep only the last, silently) and a named parameter also given with ``-p``. Both exit 2
naming the flag. Adding a technique option: a field of ``RunRequest`` and one ``_Def`` below.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import typer

from bench.errors import UsageError

F = TypeVar("F", bound=Callable[..., Any])

_AXIS = "A comma list is a grid axis."
NAMED_PARAMS: tuple[str, ...] = ("batch_size", "seq_len", "image_size", "width", "depth")


@dataclass(frozen=True)
class _Def:
    """One technique option: its flags, its help (``{axis}`` says grid or one value), its kind."""

    name: str  # the keyword the command's Techniques holds
    flags: tuple[str, ...]
    help: str
    kind: str = "value"  # value (a string, once) | int (once) | flag (a bool) | params (-p, repeatable)
    default: str = ""  # what --help shows as the default ("" shows none)


_DEFS: dict[str, _Def] = {
    d.name: d
    for d in (
        _Def("mode", ("--mode",), "forward, train.{axis}", default="forward,train"),
        _Def("precision", ("--precision",), "fp32, amp-bf16, amp-fp16.{axis}", default="fp32"),
        _Def(
            "amp",
            ("--amp",),
            "The device's preferred AMP (bf16 on CPU and Ampere+), added to --precision.",
            kind="flag",
        ),
        _Def(
            "checkpointing",
            ("--checkpointing",),
            "none, full (activation checkpointing of each repeated block).{axis}",
            default="none",
        ),
        _Def(
            "compile",
            ("--compile",),
            "torch.compile mode: none (eager), default, reduce-overhead (CUDA graphs: CUDA only), "
            "max-autotune, max-autotune-no-cudagraphs.{axis} Each repeated block is compiled in place "
            "(one graph shared by every instance; a model without blocks is compiled whole) and the "
            "loss; the optimizer step stays eager.",
            default="none",
        ),
        *(_Def(n, ("--" + n.replace("_", "-"),), f"{n} parameter.{{axis}}") for n in NAMED_PARAMS),
        _Def(
            "params",
            ("--param", "-p"),
            "KEY=VALUE for any parameter (repeatable).{axis}",
            kind="params",
        ),
        _Def("preset", ("--preset",), "tiny, default, large.", default="default"),
        _Def("device", ("--device",), "cpu, cuda, cuda:N.", default="cuda if available"),
        _Def("seed", ("--seed",), "Seed for building workloads.", kind="int", default="0"),
        _Def("channels_last", ("--channels-last",), "channels_last model and 4-D inputs.", kind="flag"),
        _Def(
            "parallel",
            ("--parallel",),
            "none, dp, ddp, fsdp, pipeline.{axis} Each strategy other than none is one torchrun job "
            "of --nproc processes per node (dp: one process driving --nproc GPUs). --batch-size is the "
            "GLOBAL batch of a step: ddp/fsdp ranks each take batch_size/world_size, dp scatters it, a "
            "pipeline cuts it into --microbatches; time is the slowest rank's, memory the most loaded "
            "rank's.",
            default="none",
        ),
        _Def(
            "nproc",
            ("--nproc",),
            "Processes (ranks) per node for ddp/fsdp/pipeline (torchrun --nproc-per-node; on CUDA one "
            "GPU each), GPUs for dp. none always runs one process.",
            kind="int",
            default="2",
        ),
        _Def(
            "microbatches",
            ("--microbatches",),
            "Pipeline micro-batches per step (must divide the global batch; 1f1b needs >= stages). "
            "0: the largest divisor of the batch that is <= max(4, stages).",
            kind="int",
            default="0",
        ),
        _Def("pipeline_schedule", ("--pipeline-schedule",), "gpipe, 1f1b.{axis}", default="gpipe"),
    )
}
TECHNIQUE_OPTIONS: tuple[str, ...] = tuple(_DEFS)


@dataclass(frozen=True)
class Techniques:
    """The technique options one command was given (None: not given; the library's default applies)."""

    values: Mapping[str, Any] = field(default_factory=dict)  # option name -> value, None if not given
    param_items: tuple[str, ...] = ()  # -p KEY=VALUE as given

    def get(self, name: str) -> Any:
        return self.values.get(name)

    def params(self) -> dict[str, Any]:
        """``-p`` merged with the named parameter flags; a parameter given both ways is a ``UsageError``."""
        from bench.api import parse_assignments

        params: dict[str, Any] = dict(parse_assignments(self.param_items))
        for name in NAMED_PARAMS:
            value = self.values.get(name)
            if value is None:
                continue
            if name in params:
                flag = "--" + name.replace("_", "-")
                raise UsageError(
                    f"{name}: given twice ({flag} {value} and -p {name}={','.join(map(str, params[name]))}); "
                    "give one of them"
                )
            params[name] = value  # a comma list, split by the library
        return params

    def assignments(self) -> list[str]:
        """``-p`` and the named parameter flags as ``KEY=VALUE`` strings, for a command that takes them
        raw (``gate``); a parameter given both ways is a ``UsageError``."""
        self.params()
        named = [f"{n}={self.values[n]}" for n in NAMED_PARAMS if self.values.get(n) is not None]
        return [*self.param_items, *named]

    def request_kwargs(self) -> dict[str, Any]:
        """The ``bench.run.request.RunRequest`` keywords of the options given (run, profile, budget)."""
        names = {
            "mode": "modes",
            "precision": "precisions",
            "checkpointing": "checkpointing",
            "compile": "compile",
            "preset": "preset",
            "device": "device",
            "seed": "seed",
            "parallel": "parallel",
            "nproc": "nproc",
            "microbatches": "microbatches",
            "pipeline_schedule": "pipeline_schedule",
        }
        out: dict[str, Any] = {names[k]: v for k, v in self.values.items() if k in names}
        for flag in ("amp", "channels_last"):
            if flag in self.values:
                out[flag] = True if self.values[flag] else None  # not given: the sweep's or the default
        if "params" in self.values or any(n in self.values for n in NAMED_PARAMS):
            out["params"] = self.params()
        return out


def _once(flag: str, given: Sequence[Any] | None) -> Any:
    """The one value of an option that may be given once; ``UsageError`` when Typer collected several."""
    if not given:
        return None
    if len(given) > 1:
        shown = ", ".join(str(v) for v in given)
        raise UsageError(
            f"{flag}: given {len(given)} times ({shown}); give it once (a comma list gives several values)"
        )
    return given[0]


def _annotation(d: _Def, grid: bool, shown: str | None) -> Any:
    """The Typer annotation of option ``d`` as one command shows it."""
    axis = f" {_AXIS}" if grid else " One value."
    text = d.help.replace("{axis}", axis if d.kind in ("value", "params") else "")
    default = d.default if shown is None else shown
    if default and d.kind != "flag":
        text += f" \\[default: {default}]"
    if d.kind == "flag":
        return Annotated[bool, typer.Option(*d.flags, help=text)]
    # a list, so that a flag given twice reaches the command (Typer would keep only the last); shown
    # as the one value it takes
    typ, metavar = (int, "<int>") if d.kind == "int" else (str, "<str>")
    return Annotated[list[typ] | None, typer.Option(*d.flags, help=text, metavar=metavar)]  # type: ignore[valid-type]


def technique_options(
    *names: str, grid: bool, shown_defaults: Mapping[str, str] | None = None
) -> Callable[[F], F]:
    """Decorator: the named technique options on a Typer command, passed to it as ``techniques``."""
    unknown = [n for n in names if n not in _DEFS]
    if unknown:
        raise ValueError(f"technique_options: unknown option(s) {unknown}; expected some of {list(_DEFS)}")
    defs = [_DEFS[n] for n in names]
    shown = dict(shown_defaults or {})

    def decorate(func: F) -> F:
        sig = inspect.signature(func, eval_str=True)
        if "techniques" not in sig.parameters:
            raise TypeError(
                f"{func.__name__}: a command with technique_options takes `techniques: Techniques`"
            )
        own = [p for p in sig.parameters.values() if p.name != "techniques"]
        clash = {p.name for p in own} & set(names)
        if clash:
            raise TypeError(f"{func.__name__}: declares shared technique option(s) {sorted(clash)} itself")
        added = [
            inspect.Parameter(
                d.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=False if d.kind == "flag" else None,
                annotation=_annotation(d, grid, shown.get(d.name)),
            )
            for d in defs
        ]
        # the command's arguments first, then the shared options, then its own options
        n_args = sum(1 for p in own if _is_argument(p))
        params = [
            *own[:n_args],
            *added,
            *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own[n_args:]),
        ]
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params]

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            from bench.cli import usage_error

            values: dict[str, Any] = {}
            items: tuple[str, ...] = ()
            try:
                for d in defs:
                    raw = kwargs.pop(d.name)
                    if d.kind == "flag":
                        values[d.name] = bool(raw)
                    elif d.kind == "params":
                        items = tuple(raw or ())
                        values[d.name] = items or None
                    else:
                        values[d.name] = _once(d.flags[0], raw)
                techniques = Techniques(values=values, param_items=items)
                if "params" in values or any(n in values for n in NAMED_PARAMS):
                    techniques.params()  # a parameter given twice: refused before the command starts
            except UsageError as exc:
                raise usage_error(str(exc)) from None
            return func(techniques=techniques, **kwargs)

        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        if sig.return_annotation is not inspect.Signature.empty:
            command.__annotations__["return"] = sig.return_annotation
        return command  # type: ignore[return-value]

    return decorate


def _is_argument(p: inspect.Parameter) -> bool:
    """A Typer argument (positional on the command line), from its ``Annotated`` metadata."""
    meta = getattr(p.annotation, "__metadata__", ())
    return any(isinstance(m, typer.models.ArgumentInfo) for m in meta)
