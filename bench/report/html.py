"""The report's ``index.html``: one self-contained page (inline CSS, figures as base64 PNG, no JS).

Sections, in order: the figures (first, so they are on screen when the page opens), the notes
(figures left out and why), the summary tables (``bench.report.markdown.SummaryTable``: built from
the cells, never from the markdown), the environment of each results file, the rows that did not
run, and the profile summaries. Every text from a results file, a profile or ``--title`` is
escaped (``bench.report.escape.html_text``). Links go
only to files beside the page (``figures/*.svg|png``) and to anchors in it; nothing is fetched.
"""

from __future__ import annotations

import base64
import json
import math
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report.escape import html_text
from bench.report.markdown import SummaryTable

PROFILE_CATEGORIES = (
    "matmul",
    "attention",
    "normalization",
    "elementwise",
    "memory_copy",
    "optimizer",
    "communication",
    "other",
    "idle",
)
PROFILE_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#d9d9d9",
)


@dataclass
class FigureEntry:
    """A drawn figure as the page shows it: PNG bytes inline, the files beside the page linked."""

    name: str
    title: str
    caption: str
    png: bytes
    width: int
    height: int
    png_href: str  # relative to index.html, e.g. figures/amp.png
    svg_href: str
    notes: list[str] = field(default_factory=list)


@dataclass
class Profile:
    """A profile folder's ``summary.json`` (shares of step time by category, top ops)."""

    folder: str
    scenario: str
    device: str
    step_time_ms: float | None
    categories: dict[str, float]
    top_ops: list[dict[str, Any]]


@dataclass
class Page:
    title: str
    sources: list[str]
    counts: dict[str, int]
    figures: list[FigureEntry]
    skipped: list[tuple[str, str]]  # (figure name, reason)
    notes: list[str]
    summaries: list[SummaryTable]
    environment: list[tuple[str, dict[str, str]]]  # (file, key -> value)
    not_run: list[dict[str, str]]  # file, configuration, status, reason
    noisy: list[dict[str, str]]
    profiles: list[Profile] = field(default_factory=list)
    generated: str = ""


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def read_profile(folder: Path) -> Profile | str:
    """The folder's ``summary.json`` as a ``Profile``, or a one-line note saying what is wrong."""
    path = Path(folder) / "summary.json"
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return f"profile {folder}: summary.json is not a regular file"
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"profile {folder}: no summary.json"
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return f"profile {folder}: summary.json is not readable JSON ({type(exc).__name__})"
    if not isinstance(data, dict):
        return f"profile {folder}: summary.json is not a JSON object"
    cats = data.get("categories")
    if not isinstance(cats, dict) or not cats:
        return f"profile {folder}: summary.json has no categories object"
    categories = {str(k): v for k, v in cats.items() if _finite(v) is not None}
    if not categories:
        return f"profile {folder}: summary.json categories hold no numbers"
    ops = data.get("top_ops")
    top_ops = [o for o in ops if isinstance(o, dict) and "name" in o] if isinstance(ops, list) else []
    return Profile(
        folder=str(folder),
        scenario=str(data.get("scenario", "?")),
        device=str(data.get("device", "?")),
        step_time_ms=_finite(data.get("step_time_ms")),
        categories={k: float(v) for k, v in categories.items()},
        top_ops=top_ops,
    )


def _e(text: Any) -> str:
    return html_text(text)


def _summary_html(tables: Sequence[SummaryTable]) -> str:
    """The summary tables, built from their cells (each escaped), never from the markdown."""
    out: list[str] = []
    for t in tables:
        out.append(f"<h3>{_e(t.name)}</h3>")
        if t.total == 0:
            out.append("<p>(no rows)</p>")
            continue
        env = ", ".join(f"{k}={v}" for k, v in t.environment)
        out.append(f"<p>Environment: {_e(env)}</p>")
        head = "".join(f"<th>{_e(c)}</th>" for c in t.head)
        body = ""
        for cells, status in zip(t.rows, t.statuses, strict=True):
            tds = "".join(
                f'<td class="status-{_e(status)}">{_e(c)}</td>' if h == "status" else f"<td>{_e(c)}</td>"
                for h, c in zip(t.head, cells, strict=True)
            )
            body += f"<tr>{tds}</tr>"
        out.append(
            f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
        )
        if len(t.rows) < t.total:
            out.append(f"<p>(showing the first {len(t.rows)} of {t.total} rows; every row is in the CSV)</p>")
        if t.failures:
            items = "".join(
                f"<li><code>{_e(k)}</code>: <strong>{_e(st)}</strong>: {_e(reason)}</li>"
                for k, st, reason in t.failures
            )
            out.append(f"<p>Rows that did not run:</p><ul>{items}</ul>")
    return "\n".join(out)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#222;
background:#fff;line-height:1.4}
main{max-width:1240px;margin:0 auto;padding:12px 20px 40px}
h1{font-size:24px;margin:4px 0 2px}h2{font-size:19px;border-bottom:1px solid #ddd;padding-bottom:3px;
margin-top:28px}h3{font-size:15px;margin:18px 0 6px}
.meta{color:#555;font-size:13px;margin:0 0 6px}nav a{margin-right:12px;font-size:13px}
figure{margin:14px 0 22px;padding:0}figure img{display:block;max-width:100%;height:auto;
border:1px solid #e3e3e3}figcaption{font-size:13px;color:#444;margin-top:4px}
figcaption b{color:#222}figcaption a{margin-left:8px}
table{border-collapse:collapse;font-size:12px;margin:4px 0 10px}th,td{border:1px solid #ddd;
padding:3px 6px;text-align:left;vertical-align:top}th{background:#f4f4f4}
.scroll{overflow-x:auto}code{font-size:12px;background:#f4f4f4;padding:0 2px}
#summary p,.notes li{font-size:13px}
.bar{display:flex;height:22px;width:100%;max-width:900px;border:1px solid #ccc}
.bar span{display:block;height:100%}.legend span{display:inline-block;margin-right:12px;font-size:12px}
.legend i{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}
.status-error,.status-oom,.status-timeout{color:#b00020;font-weight:600}.status-skipped{color:#666}
"""


def _figure_html(f: FigureEntry) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    notes = "".join(f"<br><small>{_e(n)}</small>" for n in f.notes)
    return (
        f'<figure id="fig-{_e(f.name)}">'
        f'<img src="data:image/png;base64,{data}" width="{f.width}" height="{f.height}" alt="{_e(f.title)}">'
        f"<figcaption><b>{_e(f.title)}</b>: {_e(f.caption)}"
        f'<a href="{_e(f.svg_href)}">SVG</a><a href="{_e(f.png_href)}">PNG</a>{notes}</figcaption></figure>'
    )


def _table(rows: Sequence[dict[str, str]], cols: Sequence[str]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = ""
    for r in rows:
        cells = ""
        for c in cols:
            cls = f' class="status-{_e(r.get(c, ""))}"' if c == "status" else ""
            cells += f"<td{cls}>{_e(r.get(c, ''))}</td>"
        body += f"<tr>{cells}</tr>"
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _profile_html(p: Profile) -> str:
    names = [c for c in PROFILE_CATEGORIES if c in p.categories]
    names += [c for c in p.categories if c not in PROFILE_CATEGORIES]
    total = sum(max(v, 0.0) for v in p.categories.values()) or 1.0
    spans, legend = "", ""
    for i, name in enumerate(names):
        share = max(p.categories[name], 0.0)
        color = PROFILE_COLORS[i % len(PROFILE_COLORS)]
        spans += (
            f'<span style="width:{100 * share / total:.2f}%;background:{color}" '
            f'title="{_e(name)} {share:.1%}"></span>'
        )
        legend += f'<span><i style="background:{color}"></i>{_e(name)} {share:.1%}</span>'
    step = f", step {p.step_time_ms:.4g} ms" if p.step_time_ms is not None else ""
    ops = [
        {
            "op": str(o.get("name", "")),
            "self time (us)": _num_text(o.get("self_time_us"), ".4g"),
            "calls": _num_text(o.get("calls"), ".0f"),
            "share of step": _num_text(o.get("share"), ".1%"),
        }
        for o in p.top_ops
    ]
    table = _table(ops, ["op", "self time (us)", "calls", "share of step"]) if ops else "<p>(no top ops)</p>"
    return (
        f"<h3>{_e(p.scenario)} on {_e(p.device)}{_e(step)} <small>({_e(p.folder)})</small></h3>"
        f'<div class="bar" role="img" aria-label="share of step time by category">{spans}</div>'
        f'<div class="legend">{legend}</div>{table}'
    )


def _num_text(v: Any, spec: str) -> str:
    x = _finite(v)
    return "" if x is None else format(x, spec)


def render_html(page: Page) -> str:
    """The whole page as text."""
    counts = ", ".join(f"{n} {s}" for s, n in page.counts.items())
    sections = [
        ("figures", "Figures"),
        ("notes", "Notes"),
        ("summary", "Summary"),
        ("environment", "Environment"),
        ("not-run", "Rows that did not run"),
    ]
    if page.profiles or any(n.startswith("profile ") for n in page.notes):
        sections.append(("profiles", "Profiles"))
    nav = "".join(f'<a href="#{k}">{_e(v)}</a>' for k, v in sections)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(page.title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{_e(page.title)}</h1>",
        f'<p class="meta">{_e(", ".join(page.sources))}: {_e(counts)}'
        + (f"; generated {_e(page.generated)}" if page.generated else "")
        + f"</p><nav>{nav}</nav>",
        '<section id="figures"><h2>Figures</h2>',
    ]
    if page.skipped:
        left = ", ".join(f'<a href="#notes">{_e(n)}</a>' for n, _ in page.skipped)
        parts.append(f'<p class="meta">{len(page.figures)} figure(s) drawn; left out (see Notes): {left}</p>')
    parts += [_figure_html(f) for f in page.figures] or [
        "<p>No figure could be drawn from these results.</p>"
    ]
    parts.append("</section>")
    notes = [f"<li><b>{_e(n)}</b> left out: {_e(r)}</li>" for n, r in page.skipped]
    notes += [f"<li>{_e(n)}</li>" for n in page.notes]
    parts.append(
        f'<section id="notes" class="notes"><h2>Notes</h2><ul>{"".join(notes) or "<li>none</li>"}</ul>'
    )
    parts.append("</section>")
    parts.append(f'<section id="summary"><h2>Summary</h2>{_summary_html(page.summaries)}</section>')
    parts.append('<section id="environment"><h2>Environment</h2>')
    for source, env in page.environment:
        rows = [{"key": k, "value": v} for k, v in env.items()]
        parts.append(f"<h3>{_e(source)}</h3>" + _table(rows, ["key", "value"]))
    parts.append("</section>")
    parts.append('<section id="not-run"><h2>Rows that did not run</h2>')
    cols = ["file", "configuration", "status", "reason"]
    parts.append(_table(page.not_run, cols) if page.not_run else "<p>Every row ran (status ok).</p>")
    if page.noisy:
        parts.append(f"<h3>ok rows flagged noisy ({len(page.noisy)})</h3>" + _table(page.noisy, cols))
    parts.append("</section>")
    if ("profiles", "Profiles") in sections:
        parts.append('<section id="profiles"><h2>Profiles</h2>')
        parts += [_profile_html(p) for p in page.profiles]
        parts += [f"<p>{_e(n)}</p>" for n in page.notes if n.startswith("profile ")]
        parts.append("</section>")
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


__all__ = ["FigureEntry", "Page", "Profile", "read_profile", "render_html"]
