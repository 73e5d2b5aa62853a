"""The HTML report opened in headless Chromium (Debian's `chromium`): totals and charts are
drawn, not just written to a file."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from agents.audit import report
from agents.audit.log import Scope
from tests.test_auditlog import as_read, fleet_log

BAR = (0x4A, 0x7F, 0xB5)  # the distribution chart's bars
TOTALS = (0xEE, 0xF4, 0xFA)  # the totals block


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: scripts/test.sh installs Debian's chromium")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return found


def count(image: Image.Image, colour: tuple[int, int, int], box: tuple[int, int, int, int]) -> int:
    """Pixels within 3 of `colour` in `box`."""
    region = image.convert("RGB").crop(box)
    raw = region.tobytes()
    return sum(
        1
        for k in range(0, len(raw), 3)
        if abs(raw[k] - colour[0]) <= 3
        and abs(raw[k + 1] - colour[1]) <= 3
        and abs(raw[k + 2] - colour[2]) <= 3
    )


def test_the_html_report_renders_totals_and_charts(tmp_path: Path) -> None:
    built = report.build(as_read(fleet_log()), Scope())
    page = tmp_path / "report.html"
    page.write_text(report.render(built, "html"))
    shot = tmp_path / "report.png"
    result = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,1600",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shot.exists(), result.stderr[-2000:]
    image = Image.open(shot)
    assert image.size == (1200, 1600)
    assert count(image, TOTALS, (0, 0, 1200, 300)) > 5_000  # the totals block, near the top
    assert count(image, BAR, (0, 0, 1200, 1600)) > 2_000  # the MTTR distribution bars
    dots = count(image, (0, 0, 0), (0, 300, 1200, 900))
    assert dots > 50  # MTTR-over-time points and text
    text = page.read_text()
    assert f"failures <b>{built['totals']['failure_count']}</b>" in text
