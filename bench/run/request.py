"""The run request: every option of ``dlbench run`` in one dataclass, with its default and constraint.

The CLI, the sweep file, the Python API and the child process all go through ``RunRequest``:

- each field's metadata (``Opt``) says how a value is parsed (``bench.constraints``), what it must
  satisfy, the CLI flag that names it in error messages, and whether a sweep file may set it
  (under ``[options]``, or under ``[axes]`` for the grid lists);
- ``RunRequest.build(explicit, sweep)`` parses every value from any source through one typed path:
  explicit values (CLI flags, API keywords) win over the sweep file, which wins over the defaults;
  a wrong value is a ``UsageError`` naming the key, the value and what is expected;
- the child receives ``to_dict()`` and rebuilds it with ``from_dict``.

Adding an option means adding a field here and its flag in the CLI; nothing else.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.constraints import Check, choice_list, parse, parse_bytes, split_list
from bench.errors import UsageError
from bench.registry import CHECKPOINTING, COMPILE_MODES, MODES, PRECISIONS

# parallel strategies (dlcore.parallel) and pipeline schedules; torchrun's rendezvous backends
PARALLEL: tuple[str, ...] = ("none", "dp", "ddp", "fsdp", "pipeline")
PIPELINE_SCHEDULES: tuple[str, ...] = ("gpipe", "1f1b")
RDZV_BACKENDS: tuple[str, ...] = ("c10d", "static", "etcd", "etcd-v2")


@dataclass(frozen=True)
class Opt:
    """How one run option is parsed: its type, constraint, CLI flag and where a sweep file sets it."""

    kind: str  # bool | int | float | str | path | bytes (24GiB) | choices (a comma list of choices) | params
    flag: str  # the CLI spelling, used in error messages
    check: Check | None = None
    choices: tuple[str, ...] = ()
    sweep: str | None = None  # "options", "axes", "top" (scenario, preset, device) or None
    sweep_key: str | None = None  # its key in the sweep file when it differs from the field name
    help: str = ""
    unique: bool = False  # choices: a value given twice is an error (else duplicates are dropped)


def _opt(default: Any, opt: Opt) -> Any:
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"opt": opt})
    return field(default=default, metadata={"opt": opt})


@dataclass(frozen=True)
class RunRequest:
    """Everything ``dlbench run`` takes. Defaults are the tool's defaults; see ``--help``."""

    scenario: str | None = _opt(None, Opt("str", "scenario", sweep="top"))
    preset: str = _opt("default", Opt("str", "--preset", sweep="top"))
    device: str | None = _opt(None, Opt("str", "--device", sweep="top", help="None: cuda if available"))
    modes: tuple[str, ...] = _opt(
        ("forward", "train"), Opt("choices", "--mode", choices=MODES, sweep="axes", sweep_key="mode")
    )
    precisions: tuple[str, ...] | None = _opt(
        None,
        Opt("choices", "--precision", choices=PRECISIONS, sweep="axes", sweep_key="precision",
            help="None: fp32, or only the device's AMP with amp=True"),
    )  # fmt: skip
    amp: bool = _opt(False, Opt("bool", "--amp"))
    checkpointing: tuple[str, ...] = _opt(
        ("none",),
        Opt("choices", "--checkpointing", choices=CHECKPOINTING, sweep="axes", sweep_key="checkpointing"),
    )
    # torch.compile modes (a grid axis; bench.compiling): "none" is eager
    compile: tuple[str, ...] = _opt(
        ("none",),
        Opt("choices", "--compile", choices=COMPILE_MODES, sweep="axes", sweep_key="compile", unique=True),
    )
    # scenario parameter -> values (a grid axis); parsed against the scenario by the registry
    params: dict[str, tuple[Any, ...]] = _opt({}, Opt("params", "--param", sweep="axes"))
    out: Path | None = _opt(None, Opt("path", "--out", sweep="options"))
    resume: bool = _opt(False, Opt("bool", "--resume", sweep="options"))
    timeout_s: float = _opt(600.0, Opt("float", "--timeout", Check("positive"), sweep="options"))
    target_rel_ci: float = _opt(0.02, Opt("float", "--target-ci", Check("fraction"), sweep="options"))
    max_time_s: float = _opt(5.0, Opt("float", "--max-time", Check("positive"), sweep="options"))
    seed: int = _opt(0, Opt("int", "--seed", Check("nonneg"), sweep="options"))
    isolation: bool = _opt(True, Opt("bool", "--no-isolation", sweep="options"))
    channels_last: bool = _opt(False, Opt("bool", "--channels-last", sweep="options"))
    # independent child processes per configuration, round-robin over the grid (bench.run.execute)
    repeat: int = _opt(1, Opt("int", "--repeat", Check("size"), sweep="options"))
    # parallel strategies (a grid axis) and how their torchrun job is launched (bench.run.launch).
    # batch_size is the GLOBAL batch of one step: ddp/fsdp ranks each take batch_size / world_size,
    # dp scatters it over the GPUs, a pipeline cuts it into micro-batches. "none" is one process.
    parallel: tuple[str, ...] = _opt(
        ("none",), Opt("choices", "--parallel", choices=PARALLEL, sweep="axes", sweep_key="parallel")
    )
    nproc: int = _opt(2, Opt("int", "--nproc", Check("size"), sweep="options"))  # per node (GPUs for dp)
    microbatches: int = _opt(0, Opt("int", "--microbatches", Check("nonneg"), sweep="options"))  # 0: auto
    pipeline_schedule: tuple[str, ...] = _opt(
        ("gpipe",),
        Opt("choices", "--pipeline-schedule", choices=PIPELINE_SCHEDULES, sweep="axes",
            sweep_key="pipeline_schedule"),
    )  # fmt: skip
    nnodes: int = _opt(1, Opt("int", "--nnodes", Check("size"), sweep="options"))
    node_rank: int = _opt(0, Opt("int", "--node-rank", Check("nonneg"), sweep="options"))
    rdzv_endpoint: str | None = _opt(None, Opt("str", "--rdzv-endpoint", sweep="options"))  # HOST:PORT
    rdzv_backend: str = _opt(
        "c10d", Opt("str", "--rdzv-backend", Check("choice", RDZV_BACKENDS), sweep="options")
    )
    # a multi-node run's id, the same on every node and new for every run (one node: a fresh uuid)
    rdzv_id: str | None = _opt(None, Opt("str", "--rdzv-id", sweep="options"))
    # more ranks on this node than CPU cores (each rank then gets one thread and shares a core)
    oversubscribe: bool = _opt(False, Opt("bool", "--oversubscribe", sweep="options"))
    # the memory budget of one device (``dlbench budget --memory``; None: no cap): on CUDA every child
    # runs under it (``bench.harness.memory.apply_memory_budget``); rows record it as budget_bytes
    budget_bytes: int | None = _opt(None, Opt("bytes", "--memory"))
    warmup_iters: int = _opt(3, Opt("int", "warmup_iters", Check("nonneg")))
    min_samples: int = _opt(10, Opt("int", "min_samples", Check("size")))
    max_samples: int = _opt(10_000, Opt("int", "max_samples", Check("size")))

    def __post_init__(self) -> None:
        """Cross-option rules of a multi-node launch (each option alone is checked by ``build``)."""
        if self.node_rank >= self.nnodes:
            raise UsageError(
                f"--node-rank: got {self.node_rank}, expected 0 <= node rank < --nnodes {self.nnodes}"
            )
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise UsageError(
                f"--rdzv-endpoint: --nnodes {self.nnodes} needs the rendezvous HOST:PORT (node 0's address), "
                "the same on every node"
            )
        if self.rdzv_endpoint is not None:
            host, sep, port = self.rdzv_endpoint.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise UsageError(f"--rdzv-endpoint: expected HOST:PORT, got {self.rdzv_endpoint!r}")
        if self.nnodes > 1 and not (self.rdzv_id or "").strip():
            raise UsageError(
                f"--rdzv-id: --nnodes {self.nnodes} needs a run id, the same on every node and new for "
                "every run (e.g. --rdzv-id $(date +%s) on node 0, passed to the others), so two runs "
                "that share an endpoint never join one rendezvous"
            )
        if self.rdzv_id is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.rdzv_id.strip()):
            raise UsageError(
                f"--rdzv-id: expected 1-64 letters, digits, '.', '_' or '-', got {self.rdzv_id!r}"
            )

    # ---------------------------------------------------------------------------------------
    @classmethod
    def options(cls) -> dict[str, Opt]:
        """Field name -> its ``Opt``."""
        return {f.name: f.metadata["opt"] for f in dataclasses.fields(cls)}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)}

    @classmethod
    def sweep_keys(cls, section: str) -> dict[str, str]:
        """Sweep-file key -> field name, for the fields a sweep file sets in ``section``."""
        return {(o.sweep_key or name): name for name, o in cls.options().items() if o.sweep == section}

    @classmethod
    def parse_value(cls, name: str, value: Any, *, source: str = "") -> Any:
        """``value`` parsed for field ``name``; ``UsageError`` names the option as ``source`` spells it."""
        opt = cls.options()[name]
        label = source or opt.flag
        if opt.kind == "choices":
            return tuple(choice_list(label, value, opt.choices, unique=opt.unique))
        if opt.kind == "params":
            if not isinstance(value, Mapping):
                raise UsageError(f"{label}: expected a table of parameter = value(s), got {value!r}")
            out: dict[str, tuple[Any, ...]] = {}
            for k, v in value.items():
                items = split_list(v)
                if not items:
                    raise UsageError(f"{k}: no value given")
                out[str(k)] = tuple(items)
            return out
        if opt.kind == "path":
            if isinstance(value, Path):
                return value.expanduser()
            if not isinstance(value, str) or not value.strip():
                raise UsageError(f"{label}: expected a file path, got {value!r}")
            return Path(value.strip()).expanduser()
        if opt.kind == "bytes":
            return parse_bytes(label, value)
        if opt.kind == "str" and value is None:
            return None
        typ = {"bool": bool, "int": int, "float": float, "str": str}[opt.kind]
        return parse(typ, label, value, opt.check)

    @classmethod
    def build(
        cls,
        explicit: Mapping[str, Any] | None = None,
        sweep: Mapping[str, Any] | None = None,
        *,
        sweep_label: str = "sweep",
    ) -> RunRequest:
        """Parse explicit values (CLI, API; None = not given) over sweep values over the defaults.

        ``sweep`` maps field names to values from a sweep file (``bench.run.sweep``); its errors
        name the key as the file spells it (``options.timeout_s``).
        """
        fields = cls.options()
        values: dict[str, Any] = {}
        for source, given in (("sweep", sweep or {}), ("explicit", explicit or {})):
            for name, value in given.items():
                if name not in fields:
                    raise UsageError(f"unknown run option {name!r}; expected one of {sorted(fields)}")
                if value is None:
                    continue
                opt = fields[name]
                label = opt.flag
                if source == "sweep":
                    key = opt.sweep_key or name
                    section = "" if opt.sweep in (None, "top") else f"{opt.sweep}."
                    label = f"{sweep_label}: {section}{key}"
                parsed = cls.parse_value(name, value, source=label)
                if name == "params" and "params" in values:
                    # parameters merge per name: the sweep's axes, each overridden by an explicit one
                    parsed = {**values["params"], **parsed}
                values[name] = parsed
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (paths as strings, tuples as lists): what the child process receives."""
        d = dataclasses.asdict(self)
        d["out"] = str(self.out) if self.out is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunRequest:
        """Inverse of ``to_dict`` for a request already checked by ``build``."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        for k in ("modes", "precisions", "checkpointing", "compile", "parallel", "pipeline_schedule"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        if kw.get("params") is not None:
            kw["params"] = {k: tuple(v) for k, v in kw["params"].items()}
        if kw.get("out") is not None:
            kw["out"] = Path(kw["out"])
        return cls(**kw)
