"""The memory figure's configuration names fit under their own group of bars."""

from __future__ import annotations

from bench.report.figures_memory import _wrap_group_names


def test_narrow_group_names_are_wrapped_and_wide_ones_kept() -> None:
    names = ["forward none ws=1", "train fsdp ws=2 microbatches=4"]
    # 7 groups' worth of units: a 1-bar group gets about 11 characters a line at 11 inches
    out = _wrap_group_names(names, [1.8, 3.8], total=21.0, fig_width_in=11.0)
    assert out[0].replace("\n", " ") == names[0]
    assert "\n" in out[0]
    assert max(len(line) for line in out[0].splitlines()) <= 12
    wide = _wrap_group_names(["train ddp ws=2"], [3.8], total=4.6, fig_width_in=11.0)
    assert wide == ["train ddp ws=2"]
