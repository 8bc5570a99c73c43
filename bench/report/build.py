"""``build_report``: a whole report folder from result CSVs (and compare JSONs, profile folders).

    from bench.report.build import build_report
    res = build_report([Path("results/encoder.csv")], Path("reports/encoder"), title="Encoder on H200")
    res.index_html      # reports/encoder/index.html: one self-contained page
    res.summary_md      # reports/encoder/summary.md: markdown tables + notes, for a pull request
    res.figures         # [FigureFile(name, title, png, svg)] under reports/encoder/figures/
    res.skipped         # [(figure name, why it was left out)]

The CLI (``dlbench report RESULTS... -o reports/NAME``) is a thin call to it; bad input raises
``ValueError`` with a one-line message naming the argument (the CLI turns it into exit 2): no CSV
given or not found, a CSV with no ``ok`` rows, an ``out_dir`` that is an existing file, a compare
JSON that is missing or not a compare file, a profile folder that does not exist::

    try:
        res = build_report(csv, out, compare_json=compare, profile_dirs=profile, title=title)
    except ValueError as exc:
        raise usage_error(str(exc)) from None
    typer.echo(res.index_html)

Figures left out (missing columns, too few comparable rows) are not errors: they are in
``res.skipped`` and in the page's notes.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report.figures_common import PER_PHASE, SOURCE, is_noisy, label, varying
from bench.report.figures_compare import load_compare
from bench.report.format import fmt
from bench.report.html import FigureEntry, Page, Profile, read_profile, render_html
from bench.report.markdown import markdown_report
from bench.report.plots import compare_name, draw_figures, figure_size_px, save_figure
from bench.results import load_results, load_samples

ENV_KEYS = (
    "device",
    "device_name",
    "torch_version",
    "cuda_version",
    "cudnn_version",
    "gpu_driver",
    "gpu_count",
    "gpu_clock_sm_mhz",
    "gpu_clock_mem_mhz",
    "cpu_model",
    "cpu_count",
    "threads",
    "allow_tf32",
    "python_version",
    "os",
    "hostname",
    "git_commit",
)
FIGURES_DIR = "figures"


@dataclass(frozen=True)
class FigureFile:
    name: str
    title: str
    png: Path
    svg: Path


@dataclass
class ReportResult:
    """What ``build_report`` wrote."""

    out_dir: Path
    index_html: Path
    summary_md: Path
    figures: list[FigureFile] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (figure name, reason)
    notes: list[str] = field(default_factory=list)


def _load_csv(path: Path) -> Any:
    if not path.is_file():
        raise ValueError(f"results: no such file: {path}")
    try:
        df = load_results(path)
    except Exception as exc:  # noqa: BLE001 - pandas raises many kinds; all mean "not a results CSV"
        raise ValueError(
            f"results: {path} is not a readable results CSV ({type(exc).__name__}: {exc})"
        ) from None
    if "status" not in df.columns or "scenario" not in df.columns:
        raise ValueError(f"results: {path} is not a dlbench results CSV (no status/scenario column)")
    if not (df["status"] == "ok").any():
        statuses = ", ".join(f"{n} {s}" for s, n in df["status"].value_counts().items()) or "no rows"
        raise ValueError(f"results: {path} has no ok rows ({statuses}); nothing to report")
    return df


def _attach_memory_detail(df: Any, path: Path) -> Any:
    """The sidecar's ``memory.per_phase`` of each row (``_per_phase``; None without a sidecar)."""
    by_key: dict[tuple[str, str], Any] = {}
    for rec in load_samples(path):
        mem = rec.get("memory") if isinstance(rec, dict) else None
        if isinstance(mem, dict) and isinstance(mem.get("per_phase"), dict):
            by_key[(str(rec.get("run_id")), str(rec.get("config_key")))] = mem["per_phase"]
    keys = zip(df.get("run_id", [None] * len(df)), df.get("config_key", [None] * len(df)), strict=True)
    df[PER_PHASE] = [by_key.get((str(r), str(k))) for r, k in keys]
    return df


def load_report_rows(results: Sequence[Path]) -> Any:
    """All rows of the CSVs in one DataFrame, with ``_source`` (file name) and ``_per_phase``."""
    import pandas as pd

    if not results:
        raise ValueError("results: no CSV given; pass one or more files written by `dlbench run`")
    frames = []
    for path in results:
        df = _load_csv(Path(path))
        df[SOURCE] = _source_name(results, Path(path))
        frames.append(_attach_memory_detail(df, Path(path)))
    return pd.concat(frames, ignore_index=True, sort=False) if len(frames) > 1 else frames[0]


def _text(v: Any) -> str:
    s = "" if v is None else str(v)
    return "" if s in ("nan", "<NA>", "None") else s


def _environment(results: Sequence[Path]) -> list[tuple[str, dict[str, str]]]:
    """The environment columns of each file, as the CSV spells them (distinct values joined)."""
    import pandas as pd

    out = []
    for path in results:
        sub = pd.read_csv(path, dtype=str, keep_default_na=False)
        env: dict[str, str] = {}
        for key in ENV_KEYS:
            if key in sub.columns:
                values = list(dict.fromkeys(v for v in sub[key] if v))
                if values:
                    env[key] = ", ".join(values)
        out.append((_source_name(results, path), env))
    return out


def _row_lists(df: Any) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(rows that did not run, ok rows flagged noisy) as table rows of the page.

    Each row is labelled by its scenario and the configuration columns that vary within its file.
    """
    not_run, noisy = [], []
    for source, sub in df.groupby(SOURCE, sort=False):
        shown = ["scenario", *[c for c in varying(sub) if c not in ("scenario", SOURCE)]]
        for _, r in sub.iterrows():
            entry = {
                "file": str(source),
                "configuration": label(r, shown),
                "status": str(r["status"]),
                "reason": _text(r.get("reason")),
            }
            if r["status"] != "ok":
                not_run.append(entry)
            elif is_noisy(r):
                noisy.append(entry)
    return not_run, noisy


def _fallback_table(path: Path, df: Any, error: Exception) -> str:
    """A plain markdown table of one file, for when ``bench.report.markdown`` cannot read it."""
    shown = ["scenario", *[c for c in varying(df) if c not in ("scenario", SOURCE)]]
    lines = [
        f"## {path.name}",
        "",
        f"(summary table: {type(error).__name__}: {error}; a plain table instead)",
        "",
    ]
    lines += ["| configuration | status | median ms [95% CI] | throughput |", "|---|---|---|---|"]
    for _, r in df.iterrows():
        ok = r["status"] == "ok"
        time = f"{fmt(r.get('time_median_ms'), '.4g')} [{fmt(r.get('time_ci_low_ms'), '.4g')}, "
        time += f"{fmt(r.get('time_ci_high_ms'), '.4g')}]"
        thr = f"{fmt(r.get('throughput'), '.4g')} {_text(r.get('throughput_unit'))}"
        lines.append(f"| {label(r, shown)} | {r['status']} | {time if ok else ''} | {thr if ok else ''} |")
    return "\n".join(lines) + "\n"


def _markdown_tables(results: Sequence[Path], df: Any, title: str) -> str:
    """``bench.report.markdown.markdown_report`` file by file under one title.

    A file it cannot read (it expects every core column, e.g. ``peak_mem_bytes``) gets a plain
    table instead, with the error named, so one odd file never loses the whole report.
    """
    parts = [f"# {title}", ""]
    for path in results:
        try:
            text = markdown_report([path], title)
        except Exception as exc:  # noqa: BLE001 - the markdown module is another layer's; keep going
            parts.append(_fallback_table(path, df[df[SOURCE] == _source_name(results, path)], exc))
            continue
        body = text.split("\n", 1)[1] if text.startswith("# ") else text
        parts.append(body.strip("\n") + "\n")
    return "\n".join(parts)


def _source_name(results: Sequence[Path], path: Path) -> str:
    """The ``_source`` value of ``path``: its file name, or the whole path when two share a name."""
    names = [Path(p).name for p in results]
    return path.name if names.count(path.name) == 1 else str(path)


def _rank_folders(folder: Path) -> list[Path]:
    """``folder``, or its ``rank<r>`` folders (rank order) when it is a parallel profile's top folder."""
    if (folder / "summary.json").exists():
        return [folder]
    ranks = [
        (int(p.name[4:]), p)
        for p in folder.glob("rank*")
        if p.name[4:].isdigit() and (p / "summary.json").is_file()
    ]
    return [p for _, p in sorted(ranks)] or [folder]


def _profile_line(p: Profile) -> str:
    """``- attention on cpu, step 12.3 ms (reports/x): matmul 41%, attention 18%, ...`` (largest first)."""
    step = f", step {p.step_time_ms:.4g} ms" if p.step_time_ms is not None else ""
    shares = sorted(p.categories.items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{name} {share:.0%}" for name, share in shares if share >= 0.005)
    return f"- {p.scenario} on {p.device}{step} (`{p.folder}`): {text}"


def _summary_md(tables: str, res: ReportResult, profiles: Sequence[Profile] = ()) -> str:
    parts = [tables.rstrip(), "", "## Figures", ""]
    parts += [f"- `{FIGURES_DIR}/{f.png.name}` ({f.svg.name}): {f.title}" for f in res.figures] or ["(none)"]
    if profiles:
        parts += ["", "## Profiles (share of step time)", ""]
        parts += [_profile_line(p) for p in profiles]
    parts += ["", "## Notes", ""]
    parts += [f"- {name} figure left out: {reason}" for name, reason in res.skipped]
    parts += [f"- {n}" for n in res.notes]
    if not res.skipped and not res.notes:
        parts.append("(none)")
    return "\n".join(parts) + "\n"


def build_report(
    results: Sequence[Path],
    out_dir: Path,
    *,
    compare_json: Sequence[Path] = (),
    profile_dirs: Sequence[Path] = (),
    title: str = "dlbench report",
) -> ReportResult:
    """Write ``out_dir/index.html``, ``out_dir/summary.md`` and ``out_dir/figures/*.png|svg``.

    ``results``: CSVs of ``dlbench run`` (each needs an ok row); ``compare_json``: ``dlbench compare``
    JSON files, one forest plot each; ``profile_dirs``: folders holding a profile's
    ``summary.json`` (a missing or malformed one is a note, not an error). A parallel profile's
    folder (``dlbench profile --parallel``: no summary.json of its own, one ``rank<r>/summary.json``
    per rank) stands for its ranks, one profile each in rank order; a ``rank<r>`` folder alone is one.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir: {out_dir} is a file; give a folder for the report")
    blocked = next((p for p in out_dir.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise ValueError(f"out_dir: {blocked} is a file, so {out_dir} cannot be a folder")
    results = [Path(p) for p in results]
    df = load_report_rows(results)
    compares = [
        (compare_name(p, i, len(compare_json)), load_compare(Path(p))) for i, p in enumerate(compare_json)
    ]
    for d in profile_dirs:
        if not Path(d).is_dir():
            raise ValueError(f"profile_dirs: {d} is not a folder")

    fig_dir = out_dir / FIGURES_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    for old in [*fig_dir.glob("*.png"), *fig_dir.glob("*.svg")]:
        old.unlink()  # figures of an earlier build that this one may leave out

    res = ReportResult(out_dir, out_dir / "index.html", out_dir / "summary.md")
    entries = []
    for outcome in draw_figures(df, compares):
        if not outcome.drawn:
            res.skipped.append((outcome.name, outcome.skipped.reason))
            res.notes += outcome.notes
            continue
        png, svg = save_figure(outcome.figure, fig_dir, outcome.name)
        width, height = figure_size_px(outcome.figure)
        res.figures.append(FigureFile(outcome.name, outcome.title, png, svg))
        res.notes += outcome.notes
        entries.append(
            FigureEntry(
                outcome.name,
                outcome.title,
                outcome.caption,
                png.read_bytes(),
                width,
                height,
                f"{FIGURES_DIR}/{png.name}",
                f"{FIGURES_DIR}/{svg.name}",
                outcome.notes,
            )
        )

    profiles: list[Profile] = []
    for folder in [r for d in profile_dirs for r in _rank_folders(Path(d))]:
        p = read_profile(folder)
        if isinstance(p, str):
            res.notes.append(p)
        else:
            profiles.append(p)

    tables = _markdown_tables(results, df, title)
    not_run, noisy = _row_lists(df)
    if not_run:
        res.notes.append(f"{len(not_run)} row(s) did not run (status not ok); listed with their reasons")
    if noisy:
        res.notes.append(f"{len(noisy)} ok row(s) are flagged noisy: their figures are less certain")
    page = Page(
        title=title,
        sources=[str(s) for s in dict.fromkeys(df[SOURCE])],
        counts={str(s): int(n) for s, n in df["status"].value_counts().items()},
        figures=entries,
        skipped=res.skipped,
        notes=res.notes,
        summary_markdown=tables,
        environment=_environment(results),
        not_run=not_run,
        noisy=noisy,
        profiles=profiles,
        generated=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    res.index_html.write_text(render_html(page), encoding="utf-8")
    res.summary_md.write_text(_summary_md(tables, res, profiles), encoding="utf-8")
    return res


__all__ = ["FigureFile", "ReportResult", "build_report", "load_report_rows"]
