"""What a scenario name means, and where a relative one resolves (torch-free).

Forms, tried in this order (built-in names are looked up before any of them):

=============================  ========  ==========================================================
``timm:resnet50``              timm      a timm model name
``hf:gpt2``                    hf        a Hugging Face model type (``AutoConfig.for_model``)
``path/to/file.py:build``      file      a ``.py`` file (or any path with a ``/``) and an attribute
``package.module:build``       module    an importable module and an attribute
``mymodel``                    entry     an entry point of the group ``dlbench.scenarios``
=============================  ========  ==========================================================

The attribute may be dotted (``models.py:Factories.gpt``). ``timm:`` and ``hf:`` always mean the
adapters, even if a module of that name exists.

**Where a relative name resolves.** A relative file path, and a module not otherwise importable,
resolve against one base directory: the working directory of the process that first resolved the
name (the ``dlbench`` command, or the Python process calling ``bench.api``). That process records
it in ``DLBENCH_SCENARIO_DIR``; the processes dlbench starts (run children, torchrun ranks, gate
workers, which run in another tree and another working directory) inherit the variable and resolve
against it, so every process loads the same file. A process that is not a dlbench child always uses
its own working directory (and updates the variable for its children).

**What the results hold.** The ``scenario`` column and ``config_key`` hold the name as given,
normalised (``./models/gpt.py:build`` becomes ``models/gpt.py:build``): the same command gives the
same key on every machine, so ``--resume`` and ``dlbench compare`` match rows across machines and
checkouts. It is relative to the directory the run was started from.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from bench.registry import CHILD_ENV_VAR

SCENARIO_DIR_ENV = "DLBENCH_SCENARIO_DIR"
ENTRY_POINT_GROUP = "dlbench.scenarios"
ADAPTER_PREFIXES: tuple[str, ...] = ("timm", "hf")

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = re.compile(rf"{_IDENT}(\.{_IDENT})*")


@dataclass(frozen=True)
class ParsedName:
    """A scenario name split into its kind and parts; ``canonical`` is what rows record."""

    kind: str  # timm | hf | file | module | entry
    canonical: str
    target: str = ""  # the timm/hf name, the file path, the module name or the entry-point name
    attr: str = ""  # the factory's attribute path (file, module)


def parse_name(name: str) -> ParsedName:
    """The kind and parts of ``name``; ``ValueError`` for a name with a colon that fits no form."""
    text = name.strip()
    head, sep, tail = text.partition(":")
    if sep and head in ADAPTER_PREFIXES:
        if not tail.strip():
            raise ValueError(f"scenario {name!r}: give a model after '{head}:', e.g. {_EXAMPLES[head]}")
        return ParsedName(head, f"{head}:{tail.strip()}", tail.strip())
    if not sep:
        return ParsedName("entry", text, text)
    left, _, attr = text.rpartition(":")
    if not _DOTTED.fullmatch(attr):
        raise ValueError(
            f"scenario {name!r}: after the last ':' give the factory's name (a Python identifier), "
            f"got {attr!r}"
        )
    if left.endswith(".py") or "/" in left or os.sep in left:
        path = os.path.normpath(left)
        return ParsedName("file", f"{path}:{attr}", path, attr)
    if _DOTTED.fullmatch(left):
        return ParsedName("module", f"{left}:{attr}", left, attr)
    raise ValueError(
        f"scenario {name!r}: expected path/to/file.py:factory, package.module:factory, timm:<model> "
        "or hf:<model type>"
    )


_EXAMPLES = {"timm": "timm:resnet50", "hf": "hf:gpt2"}


def looks_foreign(name: str) -> bool:
    """True when ``name`` has one of the colon forms (never a built-in or entry-point name)."""
    return ":" in name


def base_dir() -> Path:
    """The directory relative names resolve against (see the module docstring)."""
    inherited = os.environ.get(SCENARIO_DIR_ENV, "").strip()
    if os.environ.get(CHILD_ENV_VAR) == "1" and inherited:
        return Path(inherited)
    cwd = os.getcwd()
    os.environ[SCENARIO_DIR_ENV] = cwd  # the processes this one starts resolve names as it did
    return Path(cwd)


def resolve_path(path: str) -> Path:
    """``path`` made absolute against ``base_dir()`` (user ``~`` expanded)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir() / p
