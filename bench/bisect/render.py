"""A bisection's result as data (``to_dict``, the ``--format json`` document) and as markdown.

The JSON (``kind`` "dlbench-bisect", ``version`` 1) holds:

* ``outcome``: ``culprit`` (one commit whose own step is slower), ``steps`` (the slowdown came in
  several smaller steps), ``range`` (the first slower commit is one of ``range``: commits between
  were skipped), ``nothing`` (BAD is not slower than GOOD beyond the threshold); ``exit_code``;
* ``culprit``: the first commit slower than GOOD (hash, short hash, subject, date), with ``step``:
  its ratio against its parent (``parent``), the CI, the verdict;
* ``probes``: the log, one entry per gate: commit, the base it was gated against, ratio and CI
  (null: unbounded), verdict (or ``skipped`` with ``reason``), slices, seconds;
* ``skipped`` (hash -> reason), ``rises`` (steps: where the ratio against GOOD rose),
  ``gates``, ``elapsed_s``, ``good``, ``bad``, ``commits`` (how many lie in GOOD..BAD), ``config``.

Text from the repository (commit subjects, error messages) is data: the markdown escapes it
(``bench.report.escape``). Torch-free, rich-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.bisect.plan import BisectPlan
from bench.bisect.search import SKIPPED, BisectResult, Probe
from bench.report.escape import md_cell, md_text, one_line

KIND = "dlbench-bisect"


def _step(p: Probe | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {
        "parent": p.base.sha,
        "parent_short": p.base.short,
        "ratio": p.ratio,
        "ci_low": p.ci_low,
        "ci_high": p.ci_high,
        "verdict": p.verdict,
        "slices": p.slices,
        "reason": p.reason,
        "gate": p.n,
    }


def to_dict(result: BisectResult, plan: BisectPlan) -> dict[str, Any]:
    """The ``--format json`` document (strict JSON: an unbounded CI end is null)."""
    culprit = None
    if result.culprit is not None:
        culprit = {**result.culprit.to_dict(), "step": _step(result.step)}
    return {
        "kind": KIND,
        "version": 1,
        "scenario": plan.gate.scenario,
        "config": plan.config_dict(),
        "threshold": plan.threshold,
        "good": {**result.good.to_dict(), "ref": plan.good_spec},
        "bad": {**result.bad.to_dict(), "ref": plan.bad_spec},
        "commits": len(result.commits),
        "outcome": result.outcome,
        "exit_code": result.exit_code,
        "culprit": culprit,
        "confirm": result.confirm.to_dict(),
        "range": [c.to_dict() for c in result.range],
        "rises": [r.to_dict() for r in result.rises],
        "skipped": dict(result.skipped),
        "probes": [p.to_dict() for p in result.probes],
        "gates": result.gates,
        "elapsed_s": round(result.elapsed_s, 3),
    }


def ratio_ci(d: Mapping[str, Any]) -> str:
    """``1.302 [1.290, 1.315]`` from a probe or step dict; ``-`` when it was not measured."""
    r = d.get("ratio")
    if r is None:
        return "-"
    lo, hi = d.get("ci_low"), d.get("ci_high")
    return f"{r:.3f} [{f'{lo:.3f}' if lo is not None else '0'}, {f'{hi:.3f}' if hi is not None else 'inf'}]"


def pct(t: float) -> str:
    return f"{t:.1%}".replace(".0%", "%")


def headline(d: Mapping[str, Any]) -> list[str]:
    """The finding in a few plain sentences (no markup): what the table and the markdown both say."""
    t = pct(d["threshold"])
    c, step, conf = d.get("culprit"), (d.get("culprit") or {}).get("step"), d["confirm"]
    if d["outcome"] == "nothing":
        word = conf["verdict"]
        return [
            f"BAD {d['bad']['short']} is not slower than GOOD {d['good']['short']} beyond {t} "
            f"({word}: {ratio_ci(conf)}): nothing to find at this threshold."
            + (" More --slices or --max-slices may decide." if word == "inconclusive" else "")
        ]
    assert c is not None and step is not None
    who = f"{c['short']} {one_line(c['subject'])!r} ({c['date'][:16].replace('T', ' ')})"
    own = f"{ratio_ci(step)} against its parent {step['parent_short']}, {step['verdict']}"
    if step["verdict"] == SKIPPED:
        own = f"not measured against its parent {step['parent_short']}: {one_line(step['reason'])}"
    if d["outcome"] == "culprit":
        return [f"culprit: {who}", f"its own step: {own}"]
    if d["outcome"] == "steps":
        return [
            f"no single commit is slower than its parent beyond {t}: the slowdown came in several steps.",
            f"first commit slower than GOOD: {who}; its own step: {own}",
            "the ratio against GOOD rose: "
            + "; ".join(
                f"{r['from_short']} -> {r['to_short']}: {r['ratio_from']:.3f} -> {r['ratio_to']:.3f}"
                for r in d["rises"]
            ),  # fmt: skip
        ]
    names = ", ".join(x["short"] for x in d["range"])
    return [
        f"the first slower commit is one of {names}: those before {c['short']} could not be measured "
        "(see the log)",
        f"across them: {ratio_ci(step)} against {step['parent_short']}, {step['verdict']}",
    ]


def probe_cells(p: Mapping[str, Any]) -> list[str]:
    """One log row's cells, plain text: gate, role, commit, subject, base, ratio [CI], verdict, slices, s."""
    verdict = p["verdict"] if p["verdict"] != SKIPPED else f"skipped: {one_line(p['reason'])}"
    return [
        str(p["n"]),
        p["role"],
        p["short"],
        one_line(p["subject"]),
        "GOOD" if p["role"] != "step" else p["base_short"],
        ratio_ci(p),
        verdict,
        str(p["slices"]),
        f"{p['seconds']:.1f}",
    ]


LOG_COLUMNS = ("gate", "role", "commit", "subject", "against", "ratio [95% CI]", "verdict", "slices", "s")


def title(d: Mapping[str, Any]) -> str:
    cfg = d["config"]
    run = " ".join(str(cfg[k]) for k in ("mode", "precision", "checkpointing") if k in cfg)
    return (
        f"dlbench bisect: {d['scenario']} ({cfg['preset']}, {run}, {cfg['device']}); "
        f"GOOD {d['good']['ref']} ({d['good']['short']}) .. BAD {d['bad']['ref']} ({d['bad']['short']}), "
        f"{d['commits']} commits, threshold {pct(d['threshold'])}"
    )


def footer(d: Mapping[str, Any]) -> str:
    cfg = d["config"]
    return (
        f"{d['gates']} gates in {d['elapsed_s']:.1f} s; each {cfg['pairs']} worker pairs x "
        f"{cfg['slices']} slices of {cfg['slice_time_s']:g} s (inconclusive: again with twice the "
        f"slices, up to {cfg['max_slices']})"
    )


def render_markdown(d: Mapping[str, Any]) -> str:
    """The ``--format markdown`` text (a PR comment, a CI job summary)."""
    lines = [f"### {md_text(title(d))}"]
    for i, text in enumerate(headline(d)):  # one paragraph each
        lines += ["", f"**{md_text(text)}**" if i == 0 else md_text(text)]
    lines += ["", "| " + " | ".join(LOG_COLUMNS) + " |", "|" + "---|" * len(LOG_COLUMNS)]
    for p in d["probes"]:
        cells = probe_cells(p)
        cells[2] = f"`{cells[2]}`"
        lines.append("| " + " | ".join(c if i == 2 else md_cell(c) for i, c in enumerate(cells)) + " |")
    lines += ["", md_text(footer(d))]
    return "\n".join(lines) + "\n"


__all__ = [
    "KIND",
    "LOG_COLUMNS",
    "footer",
    "headline",
    "probe_cells",
    "ratio_ci",
    "render_markdown",
    "title",
    "to_dict",
]
