"""index.html renders its figures in a real browser (Debian's Chromium, headless).

The page is screenshotted twice at 1280x2400: as written, and with every figure's base64 PNG
swapped for a 1x1 white pixel. The ``<img>`` tags carry their width and height, so the layout of
the two is the same and the pixels that differ are exactly the rendered figures: they must cover a
good part of the page, start near its top (the figures come first) and hold ink, not background.
Skipped only when no chromium binary is installed (CI installs Debian's ``chromium``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from bench.report.build import build_report

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "report"
# a 1x1 RGB PNG of one white pixel (PIL: Image.new("RGB", (1, 1), "white"))
WHITE_PIXEL = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4//8/AAX+Av4N70a4AAAAAElFTkSuQmCC"
)
WIDTH, HEIGHT = 1280, 2400


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(browser: str, page: Path, out: Path, profile: Path) -> np.ndarray:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
    flags += ["--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}"]
    cmd = [browser, *flags, f"--screenshot={out}", page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and out.is_file(), done.stderr[-2000:]
    img = imread(out)[..., :3]
    assert img.shape[:2] == (HEIGHT, WIDTH), img.shape
    return img


@pytest.mark.skipif(chromium() is None, reason="no chromium or chromium-browser binary on PATH")
def test_index_html_renders_its_figures_in_chromium(tmp_path: Path) -> None:
    browser = chromium()
    assert browser is not None
    res = build_report([FIX / "attention.csv", FIX / "encoder_batch.csv"], tmp_path / "report")
    assert len(res.figures) >= 3
    page = res.index_html
    blank = page.with_name("blank.html")
    text, n = re.subn(r'src="data:image/png;base64,[^"]*"', f'src="{WHITE_PIXEL}"', page.read_text())
    assert n == len(res.figures)
    blank.write_text(text)

    shown = screenshot(browser, page, tmp_path / "page.png", tmp_path / "profile")
    empty = screenshot(browser, blank, tmp_path / "blank.png", tmp_path / "profile")
    differs = np.abs(shown - empty).sum(axis=2) > 0.15
    # measured here: 16.6% of the page changes (the figures' ink; their white background equals the blank)
    assert differs.mean() > 0.05, f"only {differs.mean():.1%} of the page changed with the figures"
    ys, xs = np.nonzero(differs)
    assert ys.min() < 300, f"the first figure starts at y={ys.min()}, expected near the top"
    assert xs.max() - xs.min() > 600, "the figures span less than half the page width"
    first = slice(ys.min(), ys.min() + 300), slice(xs.min(), xs.max())  # the top of the first figure
    # measured here: variance 0.011 with the figure, 2e-5 without; 1.6% dark pixels
    assert shown[first].mean(axis=2).var() > 0.003, "the first figure region is flat: nothing drawn"
    assert empty[first].mean(axis=2).var() < 0.001, "the blank page already had content where the figure is"
    assert (shown[first].mean(axis=2) < 0.5).mean() > 0.003, "no dark ink (text, axes) in the first figure"
