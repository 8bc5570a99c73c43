"""The report's figures: which ones exist, drawing them from the results, saving PNG and SVG.

    from bench.report.plots import draw_figures, save_figure
    for out in draw_figures(df, compare=[("compare", data)]):   # df: the report's rows (build.py)
        if out.drawn:
            save_figure(out.figure, folder, out.name)              # folder/<name>.png and .svg
        else:
            print(out.name, "left out:", out.skipped.reason)

Every figure function (``bench.report.figures_perf``, ``figures_memory``, ``figures_efficiency``,
``figures_energy``, ``figures_compare``, ``figures_budget``) takes the rows and returns a matplotlib
``Figure`` or a ``Skipped(reason)``: a figure whose data is missing (no such column, fewer than 2
comparable points, no ok rows) is left out with a one-line reason, never drawn empty. Figures are
``matplotlib.figure.Figure`` objects (no pyplot, no global backend); nothing here imports torch,
rich or typer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from bench.report.figures_budget import budget_figure, has_budget_rows
from bench.report.figures_common import DPI, Skipped
from bench.report.figures_compare import forest_figure
from bench.report.figures_compile import compile_figure
from bench.report.figures_efficiency import mfu_figure, scaling_figure
from bench.report.figures_energy import energy_figure
from bench.report.figures_memory import checkpointing_figure, memory_figure
from bench.report.figures_perf import amp_figure, throughput_figure


@dataclass(frozen=True)
class FigureSpec:
    """One kind of figure: file stem, the question it answers, how to read it, the function."""

    name: str
    title: str
    caption: str
    draw: Callable[[Any, list[str]], Figure | Skipped]


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec(
        "throughput",
        "Throughput vs problem size",
        "throughput (items_per_step / median step time) against batch_size, param_seq_len or "
        "param_image_size, one line per configuration; error bars from time_ci_low_ms / time_ci_high_ms.",
        throughput_figure,
    ),
    FigureSpec(
        "amp",
        "AMP speed-up and peak-memory ratio",
        "each amp-* row against the fp32 row of the same configuration: fp32 time / AMP time "
        "(bars: from both 95% CIs) and AMP peak_mem_bytes / fp32 peak_mem_bytes.",
        amp_figure,
    ),
    FigureSpec(
        "checkpointing",
        "Activation checkpointing trade-off",
        "peak_mem_bytes against time_median_ms, one point per configuration, an arrow from "
        "checkpointing=none to full; the legend gives the memory and time ratios.",
        checkpointing_figure,
    ),
    FigureSpec(
        "memory",
        "Memory by category at each phase's peak",
        "bars: mem_fwd/bwd/opt_peak_bytes; split by category from the samples sidecar's snapshot at each "
        "phase peak (per_phase.at_peak), else inferred from mem_params/grads/optimizer/activations_bytes.",
        memory_figure,
    ),
    FigureSpec(
        "mfu",
        "Model FLOPs utilisation",
        "mfu (achieved TFLOP/s / peak_tflops_measured) and mfu_datasheet (against peak_tflops_datasheet).",
        mfu_figure,
    ),
    FigureSpec(
        "scaling",
        "Scaling efficiency per parallel mode",
        "scaling_efficiency (job_throughput / (world_size x throughput of the parallel=none row)) per "
        "parallel mode and world_size, computed from those columns where the value is empty; dashed: linear.",
        scaling_figure,
    ),
    FigureSpec(
        "energy",
        "Energy per item",
        "energy_j_per_item (joules over the timed steps / steps / items per step; with --repeat the median "
        "of the repeats), one bar per configuration, annotated with avg_power_w and coloured by "
        "energy_source and energy_scope (the legend names the devices summed). RAPL (cpu-package) counts "
        "the whole CPU package: other processes too. Rows without a figure are left out, never drawn as 0.",
        energy_figure,
    ),
    FigureSpec(
        "compile",
        "What torch.compile buys, and when it pays off",
        "each compiled row against the compile=none row of the same configuration: eager time / compiled "
        "time (bars: from both 95% CIs), compile_time_s (what compiling adds to the first step), and the "
        "break-even step count compile_time_s / (eager step - compiled step); never where the compiled "
        "step is not faster.",
        compile_figure,
    ),
)

# Figures offered only where their rows exist: a report without budget rows does not list this one
BUDGET_FIGURE = FigureSpec(
    "budget",
    "Memory budget: throughput at the max batch, and the Pareto front",
    "rows of dlbench budget: left, job_throughput at max_batch per combination (bars: 95% CI from "
    "time_ci_low_ms / time_ci_high_ms), with its ratio to fp32 without checkpointing; right, the peak "
    "memory the fit rule compared (peak_mem_bytes on CPU, cuda_reserved_peak_bytes on CUDA) against "
    "that throughput, the Pareto front as a line and budget_bytes dashed.",
    budget_figure,
)

COMPARE_CAPTION = (
    "each pair's ratio (diamond) with its CI (bar), coloured by verdict; grey band: the threshold "
    "within which a change counts as 'same'."
)


@dataclass
class FigureOutcome:
    """A figure of the report: drawn (``figure``) or left out (``skipped``), plus its notes."""

    name: str
    title: str
    caption: str
    result: Figure | Skipped
    notes: list[str] = field(default_factory=list)

    @property
    def drawn(self) -> bool:
        return isinstance(self.result, Figure)

    @property
    def figure(self) -> Figure:
        assert isinstance(self.result, Figure), self.result
        return self.result

    @property
    def skipped(self) -> Skipped:
        assert isinstance(self.result, Skipped), self.result
        return self.result


def _safe_draw(draw: Callable[..., Figure | Skipped], *args: Any, **kwargs: Any) -> Figure | Skipped:
    """Run one figure function; a bug in one figure leaves it out with its error instead of no report."""
    try:
        return draw(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - one broken figure must not lose the whole report
        return Skipped(f"could not be drawn: {type(exc).__name__}: {exc}")


def compare_name(path: Path | str, index: int, total: int) -> str:
    """``compare`` for a single compare file, else ``compare_<stem>`` (file-name safe)."""
    if total == 1:
        return "compare"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path).stem) or str(index + 1)
    return f"compare_{stem}"


def draw_figures(df: Any, compare: Sequence[tuple[str, dict[str, Any]]] = ()) -> list[FigureOutcome]:
    """Every figure of the report from the rows ``df`` and the compare files ``(name, data)``."""
    out = []
    for spec in (*FIGURES, BUDGET_FIGURE) if has_budget_rows(df) else FIGURES:
        notes: list[str] = []
        out.append(
            FigureOutcome(spec.name, spec.title, spec.caption, _safe_draw(spec.draw, df, notes), notes)
        )
    if not compare:
        out.append(
            FigureOutcome(
                "compare", "Compare: ratios with CIs", COMPARE_CAPTION, Skipped("no compare JSON given")
            )
        )
    for name, data in compare:
        notes = []
        result = _safe_draw(forest_figure, data, notes, name=name)
        title = f"Compare: {data.get('metric', 'time')} ratios with CIs" + (
            f" ({name})" if name != "compare" else ""
        )
        out.append(FigureOutcome(name, title, COMPARE_CAPTION, result, notes))
    return out


def save_figure(fig: Figure, folder: Path, name: str) -> tuple[Path, Path]:
    """Write ``folder/name.png`` and ``folder/name.svg``; returns both paths.

    The layout is computed once, for the PNG, and then frozen (the figure's layout engine is set to
    "none"), so the SVG has the same layout without paying for it again.
    """
    folder.mkdir(parents=True, exist_ok=True)
    png, svg = folder / f"{name}.png", folder / f"{name}.svg"
    fig.savefig(png, format="png", dpi=DPI, facecolor="white")
    fig.set_layout_engine("none")
    fig.savefig(svg, format="svg", facecolor="white", metadata={"Date": None})
    return png, svg


def figure_size_px(fig: Figure) -> tuple[int, int]:
    """Pixel width and height of the PNG ``save_figure`` writes (no bbox cropping)."""
    w, h = fig.get_size_inches()
    return round(w * DPI), round(h * DPI)


__all__ = [
    "BUDGET_FIGURE",
    "FIGURES",
    "FigureOutcome",
    "FigureSpec",
    "Skipped",
    "compare_name",
    "draw_figures",
    "figure_size_px",
    "save_figure",
]
