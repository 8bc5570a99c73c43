"""Text from a results file made inert: in a markdown table, in markdown prose, in HTML, in matplotlib.

A cell of a results CSV (``device_name``, ``reason``, a parameter value) or a ``--title`` is data,
never markup:

- ``md_cell``: one markdown table cell: ``|`` escaped, newlines and ``\\r`` folded to spaces, the
  characters of emphasis (``*``, ``~``, ``_`` where it can delimit) and of links (``](``)
  backslash-escaped, ``<``, ``>`` and ``&`` as HTML entities (a GitHub page renders ``<script>``
  from a cell as text). Backticks stay: a code span is inert;
- ``md_text``: the same for a heading or a list item (one line);
- ``html_text``: ``html.escape`` of the text (quotes too), for the page;
- ``no_mathtext``: matplotlib's ``text.parse_math`` off while a figure is drawn and saved, so a
  ``$`` in a cell is a dollar sign, not the start of a formula that aborts the report.

Torch-free, rich-free.
"""

from __future__ import annotations

import contextlib
import html
import re
from collections.abc import Iterator
from typing import Any

_NEWLINES = re.compile(r"[\r\n\u2028\u2029\x0b\x0c\x85]+")
# ``_`` between two letters or digits never delimits emphasis (CommonMark), so ``device_name`` stays
_MD_PUNCT = re.compile(r"([\\*|~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def one_line(text: Any) -> str:
    """``text`` as one line: every kind of line break folded to one space; control characters dropped."""
    s = _NEWLINES.sub(" ", "" if text is None else str(text))
    return "".join(ch for ch in s if ch >= " " or ch == "\t").replace("\t", " ")


def md_text(text: Any) -> str:
    """Text for one line of markdown (a heading, a list item): inert markdown, inert HTML."""
    s = _MD_PUNCT.sub(r"\\\1", one_line(text)).replace("](", "]\\(")  # no [text](link)
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def md_cell(text: Any) -> str:
    """Text for one cell of a markdown pipe table (``md_text``: ``|`` is escaped there too)."""
    return md_text(text)


def md_code(text: Any) -> str:
    """Text shown as inline code: a code span whose fence is longer than any backtick run inside."""
    s = one_line(text).replace("|", "\\|")
    longest = max((len(m) for m in re.findall(r"`+", s)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def html_text(text: Any) -> str:
    """Text for HTML content or an attribute value."""
    return html.escape("" if text is None else str(text), quote=True)


@contextlib.contextmanager
def no_mathtext() -> Iterator[None]:
    """matplotlib draws ``$...$`` in any text literally while this is active (``text.parse_math``)."""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):
        yield


__all__ = ["html_text", "md_cell", "md_code", "md_text", "no_mathtext", "one_line"]
