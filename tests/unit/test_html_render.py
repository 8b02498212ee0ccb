"""The HTML report rendered by a real browser (Debian's headless Chromium): the screenshot is not
blank, and after rendering the DOM still holds every plot and the hostile export name as text."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.htmlpages import hostile_capture, write_page

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="needs Debian's chromium package")


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=True)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    tmp = tmp_path_factory.mktemp("render")
    report = tmp / "report.html"
    write_page(hostile_capture(tmp / "hostile.pcap"), report)
    shot = tmp / "shot.png"
    _chromium(tmp, f"--screenshot={shot}", "--window-size=1200,2000", report.as_uri())
    dom = _chromium(tmp, "--dump-dom", report.as_uri()).stdout
    return report, shot, dom


def test_screenshot_is_not_blank(rendered: tuple[Path, Path, str]) -> None:
    from PIL import Image, ImageStat

    _, shot, _ = rendered
    with Image.open(shot) as im:
        assert im.size == (1200, 2000)
        grey = im.convert("L")
        stat = ImageStat.Stat(grey)
        assert stat.var[0] > 200, f"the page looks blank (pixel variance {stat.var[0]:.1f})"
        # the lower part is where the plots are; it must not be empty either
        lower = ImageStat.Stat(grey.crop((0, 1000, 1200, 2000)))
        assert lower.var[0] > 200, f"nothing drawn below the fold (variance {lower.var[0]:.1f})"


def test_plots_are_in_the_rendered_dom(rendered: tuple[Path, Path, str]) -> None:
    _, _, dom = rendered
    figures = re.findall(r'<figure class="plot" id="plot-([a-z-]+)-\d+"[^>]*>(.*?)</figure>', dom, re.S)
    assert sorted(kind for kind, _ in figures) == ["alignment", "iomap", "latency-dist", "latency-time", "sizes",
                                                   "throughput"]
    for kind, body in figures:
        assert "<svg" in body and ("<path" in body or "<image" in body), kind
    assert "<script>alert" not in dom and "<img" not in dom  # the export name was not parsed as markup
    assert "alert(" in dom
