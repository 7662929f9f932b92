"""The HTML report in a real browser: headless Chromium draws the plots (not blank images)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from fedpit.report.collect import collect_runs
from fedpit.report.render import render
from tests.report import write_grid

CHROMIUM = Path("/usr/bin/chromium")
WIDTH, HEIGHT = 1200, 2000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless Chromium is not installed (Debian: apt-get install chromium)",
)


def screenshot(html: Path, png: Path, profile: Path) -> np.ndarray:
    """Render ``html`` in headless Chromium; the screenshot as an RGB float array."""
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{HEIGHT}",
        f"--screenshot={png}",
        f"file://{html}",
    ]
    env = {**os.environ, "HOME": str(profile)}
    subprocess.run(cmd, check=True, capture_output=True, timeout=120, env=env)
    return imread(png)[..., :3]


def non_white(image: np.ndarray) -> int:
    """How many pixels are not (almost) white."""
    return int((image.min(axis=2) < 0.9).sum())


def test_chromium_draws_the_plots(tmp_path: Path) -> None:
    """Screenshots of the page with and without its images differ by the drawn plots."""
    runs = collect_runs([write_grid(tmp_path / "grid")])
    html, _ = render(runs, tmp_path / "out")
    # the same page with the images removed: what the page looks like if no plot is drawn
    bare = html.with_name("bare.html")
    bare.write_text(re.sub(r"<img [^>]*>", "", html.read_text()))

    with_plots = screenshot(html, tmp_path / "page.png", tmp_path / "profile1")
    without = screenshot(bare, tmp_path / "bare.png", tmp_path / "profile2")

    assert with_plots.shape[:2] == (HEIGHT, WIDTH)
    # the table and text alone draw few pixels; the plots (lines, bands, axes, legends) many
    drawn, text_only = non_white(with_plots), non_white(without)
    assert drawn > text_only + 40_000, (drawn, text_only)
    # below the table the plots fill the page
    lower = slice(HEIGHT // 2, HEIGHT)
    assert float(np.var(with_plots[lower])) > 0.01
    # a plot drawn, not a broken-image icon: many distinct colours (the series' palette)
    colours = {tuple(p) for p in (with_plots[lower] * 255).astype(int).reshape(-1, 3)[::7]}
    assert len(colours) > 50
