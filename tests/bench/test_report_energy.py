"""The report's energy figure on results with known joules (``energy_helpers.write_energy``)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from bench.report.build import load_report_rows
from bench.report.escape import no_mathtext
from bench.report.figures_common import Skipped
from bench.report.figures_energy import RAPL_CAVEAT, energy_figure
from bench.report.plots import draw_figures
from tests.bench.energy_helpers import NO_COUNTER, NVML, write_energy
from tests.bench.results_helpers import FIX

TRAIN, FWD = ("train", "fp32"), ("forward", "fp32")
TRAIN_AMP, FWD_AMP = ("train", "amp-bf16"), ("forward", "amp-bf16")


def widths(fig: Figure) -> list[float]:
    ax = fig.axes[0]
    bars = sorted((p for p in ax.patches if isinstance(p, Rectangle)), key=lambda p: p.get_y())
    return [p.get_width() for p in bars]


def legend_texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_the_figure_draws_each_rows_joules_per_item_with_its_source(tmp_path: Path) -> None:
    evil = r"GPU $\frac{1}{$ <script>x</script>"  # mathtext would abort the figure; HTML stays text

    def name(row: dict[str, str]) -> None:
        row["device_name"] = evil

    path = write_energy(
        tmp_path / "e.csv", {FWD: 0.8e-3, TRAIN: 2.0e-3, FWD_AMP: None, TRAIN_AMP: 1.0e-3}, edit=name
    )
    notes: list[str] = []
    with no_mathtext():
        fig = energy_figure(load_report_rows([path]), notes)
        assert isinstance(fig, Figure)
        fig.savefig(io.BytesIO(), format="png")
    # bars top to bottom in file order, in mJ per token: the cells exactly, the empty row left out
    assert widths(fig) == pytest.approx([0.8, 2.0, 1.0], rel=1e-12)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["forward fp32", "train fp32", "train amp-bf16"]
    assert ax.get_xlabel().startswith("energy per token (mJ;")
    assert ax.get_title() == f"attention on {evil}"
    assert legend_texts(fig) == ["rapl-package (cpu-package) on cpu-package0"]
    assert RAPL_CAVEAT in fig._supxlabel.get_text()  # the caveat is on the figure itself
    assert any(RAPL_CAVEAT in n for n in notes)
    assert any("1 ok row(s) without energy_j_per_item left out" in n for n in notes)
    annotations = [t.get_text() for t in ax.texts]
    assert annotations == ["0.8 mJ, 10 W", "2 mJ, 10 W", "1 mJ, 10 W"]


def test_two_sources_in_one_panel_are_told_apart_and_nvml_has_no_rapl_caveat(tmp_path: Path) -> None:
    path = write_energy(tmp_path / "mixed.csv", {TRAIN: 2.0, TRAIN_AMP: 1.0}, sources={TRAIN_AMP: NVML})
    notes: list[str] = []
    fig = energy_figure(load_report_rows([path]), notes)
    assert isinstance(fig, Figure)
    assert legend_texts(fig) == ["rapl-package (cpu-package) on cpu-package0", "nvml (device) on gpu0"]
    assert any("different sources" in n and "not comparable" in n for n in notes)
    gpu = write_energy(tmp_path / "gpu.csv", {TRAIN: 2.0, TRAIN_AMP: 1.0}, source=NVML)
    notes = []
    fig = energy_figure(load_report_rows([gpu]), notes)
    assert isinstance(fig, Figure) and fig._supxlabel is None and notes == []
    assert widths(fig) == pytest.approx([2.0, 1.0]) and fig.axes[0].get_xlabel().startswith(
        "energy per token (J;"
    )


def test_the_figure_is_left_out_with_the_note_without_energy(tmp_path: Path) -> None:
    before = load_report_rows([FIX / "base.csv"])  # written before energy was measured
    assert "no energy_j_per_item column" in str(energy_figure(before))
    none = write_energy(tmp_path / "none.csv", {TRAIN: None, FWD: None})
    out = energy_figure(load_report_rows([none]))
    assert isinstance(out, Skipped) and "no ok row has an energy figure" in str(out)
    assert "dlbench env" in str(out) and "energy.reason" in str(out)
    short = "energy: the timed window lasted 0.05 s, shorter than the 0.1 s the rapl-package counter needs"
    cut = write_energy(tmp_path / "short.csv", {TRAIN: None}, row_reason=short)
    assert short in str(energy_figure(load_report_rows([cut])))
    # in the report's list of figures: left out with the reason, never drawn empty
    outcome = next(o for o in draw_figures(load_report_rows([none])) if o.name == "energy")
    assert not outcome.drawn and "no ok row has an energy figure" in outcome.skipped.reason
    assert NO_COUNTER not in outcome.skipped.reason  # that reason is in the sidecar, said by compare
