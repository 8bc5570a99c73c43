"""Resolve a name that is not a built-in scenario to a ``ScenarioSpec`` (``bench.registry.get_scenario``).

``resolve(name)`` parses the name (``bench.foreign.names``) and loads what it names: a ``.py`` file
(imported as a module of its own, its directory appended to ``sys.path`` so it can import its
siblings), a module (imported, with the base directory appended to ``sys.path`` when it is not
importable otherwise), an entry point of the group ``dlbench.scenarios``, or the timm / Hugging Face
adapter. Specs are cached per process (a file per resolved path), so the parent's planning and an
in-process run share one load. Every failure is a ``UsageError`` naming the file, the module, the
attribute or the parameter:

- a missing file, a module that is not there, a syntax error (file and line), an exception while
  importing, a missing attribute (with the closest names the module defines), something that is not
  a function;
- a factory parameter without a default or a type hint (``bench.foreign.factory``).

Entry points are listed cheaply (``importlib.metadata.entry_points``, no import); a target is
imported only when its name is resolved or ``dlbench list`` shows it.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.foreign.names import ENTRY_POINT_GROUP, ParsedName, base_dir, parse_name, resolve_path
from bench.registry import ScenarioSpec

_CACHE: dict[str, ScenarioSpec] = {}


def resolve(name: str) -> ScenarioSpec | None:
    """The spec ``name`` stands for; None for a plain name that is no entry point either."""
    try:
        parsed = parse_name(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    key = _cache_key(parsed)
    if key in _CACHE:
        return _CACHE[key]
    spec = _load(parsed)
    if spec is not None:
        _CACHE[key] = spec
    return spec


def _cache_key(parsed: ParsedName) -> str:
    if parsed.kind == "file":
        return f"file:{resolve_path(parsed.target)}:{parsed.attr}"
    return f"{parsed.kind}:{parsed.canonical}"


def _load(parsed: ParsedName) -> ScenarioSpec | None:
    if parsed.kind == "timm":
        from bench.foreign.timm_models import timm_spec

        return timm_spec(parsed.target)
    if parsed.kind == "hf":
        from bench.foreign.hf_models import hf_spec

        return hf_spec(parsed.target)
    from bench.foreign.factory import spec_from_factory

    if parsed.kind == "entry":
        ep = entry_points().get(parsed.target)
        if ep is None:
            return None
        try:
            target = ep.load()
        except Exception as exc:
            raise UsageError(
                f"scenario {parsed.target!r}: loading its entry point {ep.value!r} "
                f"(group {ENTRY_POINT_GROUP}) raised {type(exc).__name__}: {exc}"
            ) from None
        return spec_from_factory(target, parsed.canonical, f"entry point {parsed.target} = {ep.value}")
    if parsed.kind == "file":
        module = load_file(resolve_path(parsed.target), parsed.canonical)
        where = parsed.target
    else:
        module = load_module(parsed.target, parsed.canonical)
        where = f"module {parsed.target}"
    fn = _attribute(module, parsed.attr, where, parsed.canonical)
    return spec_from_factory(fn, parsed.canonical, f"{where}:{parsed.attr}")


def load_file(path: Path, name: str) -> Any:
    """Import the ``.py`` file ``path`` as a module of its own (once per process)."""
    label = f"scenario {name!r}"
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise UsageError(f"{label}: file {path} {what} (relative paths resolve against {base_dir()})")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    mod_name = f"dlbench_user_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}_{digest}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{label}: {path} is not a Python file that can be imported")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.append(folder)  # the file imports its siblings, as when it is run as a script
    sys.modules[mod_name] = module  # dataclasses and pickling look a module up by name
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[mod_name]
        where = f"{exc.filename or path}:{exc.lineno}" if exc.lineno else str(path)
        raise UsageError(f"{label}: syntax error in {where}: {exc.msg}") from None
    except (Exception, SystemExit) as exc:
        del sys.modules[mod_name]
        raise UsageError(f"{label}: importing {path} raised {type(exc).__name__}: {exc}") from None
    return module


def load_module(module_name: str, name: str) -> Any:
    """Import ``module_name``; when it is not importable as installed, from the base directory."""
    label = f"scenario {name!r}"
    top = module_name.split(".")[0]
    try:
        found = importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        folder = str(base_dir())
        if folder not in sys.path:
            sys.path.append(folder)
        importlib.invalidate_caches()
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UsageError(
                f"{label}: no module named {exc.name!r} (not installed, and not under {base_dir()})"
            ) from None
        raise UsageError(f"{label}: importing {module_name} raised ModuleNotFoundError: {exc}") from None
    except SyntaxError as exc:
        raise UsageError(f"{label}: syntax error in {exc.filename}:{exc.lineno}: {exc.msg}") from None
    except (Exception, SystemExit) as exc:
        raise UsageError(f"{label}: importing {module_name} raised {type(exc).__name__}: {exc}") from None


def _attribute(module: Any, attr: str, where: str, name: str) -> Any:
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            defined = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
            close = difflib.get_close_matches(part, defined, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UsageError(
                f"scenario {name!r}: {where} has no attribute {attr!r}; it defines {defined}.{hint}"
            )
        obj = getattr(obj, part)
    return obj


# --- entry points ------------------------------------------------------------------------------------


def entry_points() -> dict[str, Any]:
    """Entry-point name -> ``importlib.metadata.EntryPoint`` of the group ``dlbench.scenarios``."""
    from importlib.metadata import entry_points as _eps

    return {ep.name: ep for ep in _eps(group=ENTRY_POINT_GROUP)}


def entry_point_names() -> list[str]:
    """Names of the installed entry-point scenarios (nothing is imported)."""
    return sorted(entry_points())
