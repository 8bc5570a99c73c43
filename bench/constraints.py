"""Typed parsing and range checks of values from any source: the CLI, a sweep file, the Python API.

One path for every option and scenario parameter: ``parse(kind, name, value)`` converts strings
(from the command line or the environment) and checks values that already have a type (from TOML
or Python), and raises ``UsageError`` naming the key, the value and what is expected:

- booleans from ``true`` / ``false`` only (any case), never from a non-empty string's truthiness;
- integers within int64 (torch's index type), never from a bool or a non-integral float;
- floats finite (``nan`` and ``inf`` are refused);
- ``Check`` adds a range or a set: a positive size, a probability, a non-negative number, a choice.

Torch-free, so the run request and the registry use it in the parent before any child starts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.errors import UsageError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_TRUE, _FALSE = "true", "false"


def _fail(name: str, value: Any, expected: str) -> UsageError:
    return UsageError(f"{name}: expected {expected}, got {value!r}")


def parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in (_TRUE, _FALSE):
        return value.strip().lower() == _TRUE
    raise _fail(name, value, "true or false")


def parse_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise _fail(name, value, "an integer")
    if isinstance(value, int):
        out = value
    elif isinstance(value, float):
        if not value.is_integer():
            raise _fail(name, value, "an integer")
        out = int(value)
    elif isinstance(value, str):
        try:
            out = int(value.strip())
        except ValueError:
            raise _fail(name, value, "an integer") from None
    else:
        raise _fail(name, value, "an integer")
    if not INT64_MIN <= out <= INT64_MAX:
        raise _fail(name, value, "an integer within int64")
    return out


def parse_float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise _fail(name, value, "a number")
    try:
        out = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise _fail(name, value, "a number") from None
    if not math.isfinite(out):
        raise _fail(name, value, "a finite number")
    return out


def parse_str(name: str, value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool) or isinstance(value, dict | list | tuple):
        raise _fail(name, value, "a string")
    return str(value)


PARSERS = {bool: parse_bool, int: parse_int, float: parse_float, str: parse_str}


@dataclass(frozen=True)
class Check:
    """A constraint on one value: ``kind`` is size | size0 | positive | nonneg | probability | choice.

    ``size`` is a positive integer; ``size0`` a positive integer or 0 (where 0 means "as defined
    elsewhere", e.g. resnet's ``width``); ``positive`` / ``nonneg`` a number > 0 / >= 0;
    ``probability`` a number in [0, 1); ``choice`` one of ``choices``; ``fraction`` in (0, 1).
    """

    kind: str
    choices: tuple[Any, ...] = ()

    def describe(self) -> str:
        return {
            "size": "a positive integer",
            "size0": "a positive integer (or 0, its default)",
            "positive": "positive",
            "nonneg": "non-negative",
            "probability": "a probability in [0, 1)",
            "fraction": "between 0 and 1",
            "choice": f"one of {list(self.choices)}",
        }[self.kind]

    def ok(self, value: Any) -> bool:
        k = self.kind
        if k == "size":
            return value > 0
        if k == "size0":
            return value >= 0
        if k == "positive":
            return value > 0
        if k == "nonneg":
            return value >= 0
        if k == "probability":
            return 0 <= value < 1
        if k == "fraction":
            return 0 < value < 1
        if k == "choice":
            return value in self.choices
        raise ValueError(f"unknown check kind {k!r}")

    def __call__(self, name: str, value: Any) -> Any:
        if not self.ok(value):
            if self.kind == "choice":
                raise UsageError(f"{name}: unknown value {value!r}; expected one of {list(self.choices)}")
            raise UsageError(f"{name}: must be {self.describe()}, got {value!r}")
        return value


def parse(typ: type, name: str, value: Any, check: Check | None = None) -> Any:
    """``value`` as ``typ`` (bool, int, float, str), then ``check`` applied; ``UsageError`` if bad."""
    out = PARSERS[typ](name, value)
    return check(name, out) if check is not None else out


def split_list(text: Any) -> list[Any]:
    """``"a, b,c"`` -> ``["a", "b", "c"]`` (empty items dropped); a list or scalar as a list."""
    if isinstance(text, str):
        return [p.strip() for p in text.split(",") if p.strip()]
    if isinstance(text, list | tuple | set | frozenset):
        return list(text)
    return [text]


def parse_list(
    typ: type, name: str, value: Any, check: Check | None = None, *, unique: bool = False
) -> list[Any]:
    """A comma list (or a list) of values of ``typ``, each checked; duplicates dropped, order kept.

    ``unique``: a value given twice is a ``UsageError`` naming it, rather than dropped.
    """
    items = split_list(value)
    if not items:
        raise UsageError(f"{name}: no value given" + (f"; expected {check.describe()}" if check else ""))
    parsed = [parse(typ, name, v, check) for v in items]
    if unique:
        repeated = [v for i, v in enumerate(parsed) if v in parsed[:i]]
        if repeated:
            given = ",".join(str(v) for v in items)
            raise UsageError(f"{name}: {repeated[0]!r} given twice in {given!r}; give each value once")
    return list(dict.fromkeys(parsed))


def choice_list(name: str, value: Any, choices: Sequence[str], *, unique: bool = False) -> list[str]:
    """A comma list of strings, each one of ``choices`` (``unique``: none given twice)."""
    return parse_list(str, name, value, Check("choice", tuple(choices)), unique=unique)


# --- sizes in bytes (dlbench budget --memory) ------------------------------------------------------
BYTE_UNITS: dict[str, int] = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
_BYTES = re.compile(r"(\d+(?:\.\d+)?)([A-Za-z]*)")
# decimal or bare prefixes -> the binary unit suggested instead
_SI_HINT = {p + s: f"{p}iB" for p in "KMGT" for s in ("", "B")}


def parse_bytes(name: str, value: Any) -> int:
    """A size in bytes: a plain integer number of bytes, or a number with B, KiB, MiB, GiB or TiB.

    ``"24GiB"`` -> 25769803776, ``"1.5KiB"`` -> 1536 (rounded down to whole bytes), ``"4096"`` -> 4096.
    The unit is written right after the number (``12 GiB`` with a space is refused, as is any
    whitespace inside), matched without regard to case; decimal units (``GB``, ``MB``) are refused
    with the binary unit suggested, because ``GB`` means 10^9 to some tools and 2^30 to others.
    The result is positive and within int64; ``UsageError`` names ``name`` otherwise.
    """
    expected = (
        "a positive size: a whole number of bytes, or a number with B, KiB, MiB, GiB or TiB written "
        "right after it (e.g. 24GiB, 512MiB, 1073741824)"
    )
    if isinstance(value, bool):
        raise _fail(name, value, expected)
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        text = value.strip()
        m = _BYTES.fullmatch(text)
        if m is None:
            hint = ""
            spaced = re.fullmatch(r"(\d+(?:\.\d+)?)\s+([A-Za-z]+)", text)
            if spaced:
                unit = _SI_HINT.get(spaced.group(2).upper(), spaced.group(2))
                hint = f"; write the number and the unit together, e.g. {spaced.group(1)}{unit}"
            raise UsageError(f"{name}: expected {expected}, got {value!r}{hint}")
        number, unit = m.groups()
        units = {u.lower(): u for u in BYTE_UNITS}
        if unit and unit.lower() not in units:
            si = _SI_HINT.get(unit.upper())
            power = BYTE_UNITS[si].bit_length() - 1 if si else 0
            hint = f"; did you mean {number}{si} ({si} = 2^{power} bytes)?" if si else ""
            raise UsageError(
                f"{name}: unknown unit {unit!r} in {value!r}; expected B, KiB, MiB, GiB or TiB{hint}"
            )
        if not unit and "." in number:
            raise UsageError(f"{name}: a plain number of bytes must be a whole number, got {value!r}")
        scale = BYTE_UNITS[units[unit.lower()]] if unit else 1
        whole, _, frac = number.partition(".")
        # exact integer arithmetic: "1.5KiB" is 1536 bytes, with no float rounding for large sizes
        n = (int(whole) * 10 ** len(frac) + int(frac or 0)) * scale // 10 ** len(frac)
    else:
        raise _fail(name, value, expected)
    if n <= 0:
        raise UsageError(f"{name}: must be a positive size, got {value!r}")
    if n > INT64_MAX:
        raise UsageError(f"{name}: {value!r} is more bytes than int64 holds; expected {expected}")
    return n
