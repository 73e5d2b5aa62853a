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
AXIS = (0x33, 0x55, 0x77)  # report.AXIS_COLOUR: the MTTR-over-time axes and their ticks
POINT = (0xD9, 0x82, 0x2B)  # report.POINT_COLOUR


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


def near(pixel: tuple[int, ...], colour: tuple[int, int, int], tolerance: int) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=True))


def runs(flags: list[bool]) -> int:
    """How many separate stretches of True."""
    return sum(1 for k, flag in enumerate(flags) if flag and (k == 0 or not flags[k - 1]))


def assert_axes_with_ticks(image: Image.Image, box: tuple[int, int, int, int]) -> None:
    """An x axis (a long horizontal line) with tick marks below it, and a y axis (a long
    vertical line) with tick marks to its left, all in the axis colour."""
    left, top, right, bottom = box
    pixels = image.load()
    assert pixels is not None

    def axis(x: int, y: int, tolerance: int = 3) -> bool:
        pixel = pixels[x, y]
        assert isinstance(pixel, tuple)  # an RGB image
        return near(pixel, AXIS, tolerance)

    rows = {y: sum(axis(x, y) for x in range(left, right)) for y in range(top, bottom)}
    x_axis = max(rows, key=lambda y: rows[y])
    assert rows[x_axis] > 400, f"no x axis: longest axis-coloured row has {rows[x_axis]} px"
    columns = {x: sum(axis(x, y) for y in range(top, bottom)) for x in range(left, right)}
    y_axis = max(columns, key=lambda x: columns[x])
    assert columns[y_axis] > 120, f"no y axis: longest column has {columns[y_axis]} px"
    # Tick marks stick out 6 px: below the x axis, left of the y axis (anti-aliased, so a
    # looser colour match).
    below = [axis(x, x_axis + 4, 60) for x in range(left, right)]
    assert runs(below) >= 4, f"{runs(below)} ticks under the x axis"
    beside = [axis(y_axis - 4, y, 60) for y in range(top, bottom)]
    assert runs(beside) >= 4, f"{runs(beside)} ticks beside the y axis"


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
    assert dots > 50  # chart labels and text
    assert_axes_with_ticks(image.convert("RGB"), (0, 300, 1200, 700))
    assert count(image, POINT, (0, 300, 1200, 700)) > 6 * 30  # one dot per recovery
    text = page.read_text()
    assert f"failures <b>{built['totals']['failure_count']}</b>" in text
    assert ">recovered at (UTC)</text>" in text
    assert ">MTTR (s)</text>" in text


def test_the_report_lists_incidents_apart_from_automatic_recoveries() -> None:
    built = report.build(as_read(fleet_log()), Scope())
    opened = [i for i in built["incidents"] if i["opened_at"] is not None]
    automatic = [i for i in built["incidents"] if i["opened_at"] is None]
    assert opened
    assert automatic
    page = report.render(built, "html")
    incidents_part, automatic_part = page.split("<h2>Failure episodes recovered automatically")
    incidents_part = incidents_part.split("<h2>Incidents: failures that needed a human")[1]
    assert incidents_part.startswith(f" ({len(opened)})</h2>")
    assert automatic_part.startswith(f" ({len(automatic)})</h2>")
    assert incidents_part.count("<details>") == len(opened)
    assert automatic_part.split("<h2>")[0].count("<details>") == len(automatic)
    markdown = report.render(built, "md")
    assert f"## Incidents: failures that needed a human ({len(opened)})" in markdown
    assert f"## Failure episodes recovered automatically ({len(automatic)})" in markdown
