"""``build_report``: a whole report folder from result CSVs (and compare JSONs, profile folders).

    from bench.report.build import build_report
    res = build_report([Path("results/encoder.csv")], Path("reports/encoder"), title="Encoder on H200")
    res.index_html      # reports/encoder/index.html: one self-contained page
    res.summary_md      # reports/encoder/summary.md: markdown tables + notes, for a pull request
    res.figures         # [FigureFile(name, title, png, svg)] under reports/encoder/figures/
    res.skipped         # [(figure name, why it was left out)]

The CLI (``dlbench report RESULTS... -o reports/NAME``) is a thin call to it. Bad input raises
``bench.errors.UsageError`` (a ``ValueError``) with a one-line message naming the argument, before
anything is written (the CLI turns it into exit 2): no CSV given, a CSV the results loader refuses
(``bench.results.loader``: the same checks as compare), the same file twice, a CSV with no ``ok``
rows, an ``out_dir`` the report may not own (``bench.report.folder``), a compare JSON that is
missing or not a compare file, a profile folder that does not exist. A write that fails (a full
disk) raises ``bench.outputs.OutputWriteError`` (exit 1) and leaves the previous report whole::

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

from bench.errors import UsageError
from bench.outputs import OutputWriteError
from bench.report.escape import md_code, md_text, no_mathtext
from bench.report.figures_common import PER_PHASE, SOURCE, label, varying
from bench.report.figures_compare import load_compare
from bench.report.folder import ReportFolder, check_report_dir
from bench.report.html import FigureEntry, Page, Profile, read_profile, render_html
from bench.report.markdown import render_markdown, summarize
from bench.report.plots import compare_name, draw_figures, figure_size_px, save_figure
from bench.results.loader import ResultsInputError, ResultsTable, check_distinct, read_results_files
from bench.results.store import samples_path_for

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
MAX_LISTED = 200  # rows listed on the page as "did not run" or "noisy" (the counts say how many)


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


def _frame_of(table: ResultsTable, name: str) -> Any:
    """A checked file's rows as a DataFrame, with ``_source`` and the sidecar's ``_per_phase``."""
    if not any(v == "ok" for v in table.columns["status"]):
        counts: dict[str, int] = {}
        for v in table.columns["status"]:
            counts[v] = counts.get(v, 0) + 1
        statuses = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no rows"
        raise UsageError(f"results: {table.path} has no ok rows ({statuses}); nothing to report")
    df = table.to_frame()
    df[SOURCE] = name
    by_key: dict[tuple[str, str], Any] = {}
    for key, rec in table.samples().items():
        mem = rec.get("memory")
        if isinstance(mem, dict) and isinstance(mem.get("per_phase"), dict):
            by_key[key] = mem["per_phase"]
    runs = table.columns.get("run_id", [""] * len(table))
    df[PER_PHASE] = [by_key.get((r, k)) for r, k in zip(runs, table.columns["config_key"], strict=True)]
    return df


def load_report_rows(results: Sequence[Path]) -> Any:
    """All rows of the CSVs in one DataFrame, with ``_source`` (file name) and ``_per_phase``.

    Read through the one results loader (``bench.results.loader``): the same checks as compare,
    the same file twice refused, repeated rows counted once.
    """
    return _load(results)[0]


def _load(results: Sequence[Path]) -> tuple[Any, list[ResultsTable]]:
    import pandas as pd

    if not results:
        raise UsageError("results: no CSV given; pass one or more files written by `dlbench run`")
    try:
        tables = read_results_files(results)
    except ResultsInputError as exc:
        raise UsageError(f"results: {exc}") from None
    frames = [_frame_of(t, _source_name(results, t.path)) for t in tables]
    df = pd.concat(frames, ignore_index=True, sort=False) if len(frames) > 1 else frames[0]
    return df, tables


def _environment(tables: Sequence[ResultsTable], results: Sequence[Path]) -> list[tuple[str, dict[str, str]]]:
    """The environment columns of each file, as the CSV spells them (distinct values joined)."""
    out = []
    for t in tables:
        env: dict[str, str] = {}
        for key in ENV_KEYS:
            values = list(dict.fromkeys(v for v in t.columns.get(key, []) if v))
            if values:
                env[key] = ", ".join(values[:8]) + (
                    f", ... ({len(values)} values)" if len(values) > 8 else ""
                )
        out.append((_source_name(results, t.path), env))
    return out


def _row_lists(df: Any) -> tuple[list[dict[str, str]], list[dict[str, str]], int, int]:
    """(rows that did not run, ok rows flagged noisy, how many of each) as table rows of the page.

    Each row is labelled by its scenario and the configuration columns that vary within its file;
    at most ``MAX_LISTED`` of each kind are listed (the counts say how many there are).
    """
    not_run: list[dict[str, str]] = []
    noisy: list[dict[str, str]] = []
    n_not_run = n_noisy = 0
    for source, sub in df.groupby(SOURCE, sort=False):
        shown = ["scenario", *[c for c in varying(sub) if c not in ("scenario", SOURCE)]]
        bad = sub[sub["status"] != "ok"]
        flagged = sub[(sub["status"] == "ok") & _noisy_mask(sub)]
        n_not_run, n_noisy = n_not_run + len(bad), n_noisy + len(flagged)
        for rows, out in ((bad, not_run), (flagged, noisy)):
            for _, r in rows.iloc[: max(0, MAX_LISTED - len(out))].iterrows():
                out.append(
                    {
                        "file": str(source),
                        "configuration": label(r, shown),
                        "status": str(r["status"]),
                        "reason": _text(r.get("reason")),
                    }
                )
    return not_run, noisy, n_not_run, n_noisy


def _text(v: Any) -> str:
    s = "" if v is None else str(v)
    return "" if s in ("nan", "<NA>", "None") else s


def _noisy_mask(df: Any) -> Any:
    if "noisy" not in df.columns:
        return df["status"] != df["status"]
    return df["noisy"].fillna(False).astype(bool)


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
    return f"- {md_text(p.scenario)} on {md_text(p.device)}{step} ({md_code(p.folder)}): {md_text(text)}"


def _summary_md(tables: str, res: ReportResult, profiles: Sequence[Profile] = ()) -> str:
    parts = [tables.rstrip(), "", "## Figures", ""]
    parts += [f"- `{FIGURES_DIR}/{f.png.name}` ({f.svg.name}): {md_text(f.title)}" for f in res.figures] or [
        "(none)"
    ]
    if profiles:
        parts += ["", "## Profiles (share of step time)", ""]
        parts += [_profile_line(p) for p in profiles]
    parts += ["", "## Notes", ""]
    parts += [f"- {md_text(name)} figure left out: {md_text(reason)}" for name, reason in res.skipped]
    parts += [f"- {md_text(n)}" for n in res.notes]
    if not res.skipped and not res.notes:
        parts.append("(none)")
    return "\n".join(parts) + "\n"


def _check_inputs(compare_json: Sequence[Path], profile_dirs: Sequence[Path]) -> None:
    for d in profile_dirs:
        if not Path(d).is_dir():
            raise UsageError(f"profile_dirs: {d} is not a folder")
    try:
        check_distinct(list(compare_json), "compare file")
    except ResultsInputError as exc:
        raise UsageError(f"compare_json: {exc}") from None


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

    ``out_dir`` is checked before anything is read (``bench.report.folder.check_report_dir``: new,
    empty, or a report this tool wrote); the report is built beside it and swapped in whole, so an
    interrupted build leaves the previous report as it was. Bad input: ``UsageError``; a write that
    fails (disk full): ``bench.outputs.OutputWriteError``.
    """
    results = [Path(p) for p in results]
    compare_json = [Path(p) for p in compare_json]
    profile_dirs = [Path(p) for p in profile_dirs]
    sidecars = [samples_path_for(p) for p in results]
    out_dir = check_report_dir(
        out_dir, inputs=[*results, *sidecars, *compare_json, *profile_dirs], flag="out_dir"
    )
    _check_inputs(compare_json, profile_dirs)
    df, tables = _load(results)
    compares = [(compare_name(p, i, len(compare_json)), load_compare(p)) for i, p in enumerate(compare_json)]
    res = ReportResult(out_dir, out_dir / "index.html", out_dir / "summary.md")
    res.notes += [n for t in tables for n in t.notes]
    with ReportFolder(out_dir) as folder, no_mathtext():
        assert folder.path is not None
        entries = _draw(df, compares, folder, res)
        profiles: list[Profile] = []
        for rank_dir in [r for d in profile_dirs for r in _rank_folders(d)]:
            p = read_profile(rank_dir)
            if isinstance(p, str):
                res.notes.append(p)
            else:
                profiles.append(p)
        summaries = [summarize(sub, str(source)) for source, sub in df.groupby(SOURCE, sort=False)]
        tables_md = render_markdown(title, summaries)
        not_run, noisy, n_not_run, n_noisy = _row_lists(df)
        if n_not_run:
            res.notes.append(f"{n_not_run} row(s) did not run (status not ok); listed with their reasons")
        if n_noisy:
            res.notes.append(f"{n_noisy} ok row(s) are flagged noisy: their figures are less certain")
        for what, shown, total in (
            ("rows that did not run", not_run, n_not_run),
            ("noisy rows", noisy, n_noisy),
        ):
            if len(shown) < total:
                res.notes.append(f"{what}: the page lists the first {len(shown)} of {total}")
        page = Page(
            title=title,
            sources=[str(s) for s in dict.fromkeys(df[SOURCE])],
            counts={str(s): int(n) for s, n in df["status"].value_counts().items()},
            figures=entries,
            skipped=res.skipped,
            notes=res.notes,
            summaries=summaries,
            environment=_environment(tables, results),
            not_run=not_run,
            noisy=noisy,
            profiles=profiles,
            generated=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        )
        folder.write_text("index.html", render_html(page))
        folder.write_text("summary.md", _summary_md(tables_md, res, profiles))
        folder.commit()
    res.notes += folder.notes
    return res


def _draw(
    df: Any, compares: Sequence[tuple[str, dict[str, Any]]], folder: ReportFolder, res: ReportResult
) -> list[FigureEntry]:
    """Every figure drawn and saved into the folder being built; the page's entries for them."""
    assert folder.path is not None
    fig_dir = folder.path / FIGURES_DIR
    entries = []
    for outcome in draw_figures(df, compares):
        if not outcome.drawn:
            res.skipped.append((outcome.name, outcome.skipped.reason))
            res.notes += outcome.notes
            continue
        try:
            png, svg = save_figure(outcome.figure, fig_dir, outcome.name)
        except OSError as exc:  # a full disk while matplotlib writes
            raise OutputWriteError(
                f"cannot write the report (figure {outcome.name}): {exc.strerror or exc}; "
                "the previous report is unchanged",
                exc.errno,
            ) from None
        folder.sync([f"{FIGURES_DIR}/{png.name}", f"{FIGURES_DIR}/{svg.name}"])
        width, height = figure_size_px(outcome.figure)
        final_png = folder.add(f"{FIGURES_DIR}/{png.name}")
        final_svg = folder.add(f"{FIGURES_DIR}/{svg.name}")
        res.figures.append(FigureFile(outcome.name, outcome.title, final_png, final_svg))
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
        outcome.figure.clear()
    return entries


__all__ = ["FigureFile", "ReportResult", "build_report", "load_report_rows"]
