"""The HTML report opened in headless Chromium (Debian's `chromium`, driven by Playwright):
totals and charts are drawn, with labelled ticks, not just written to a file. Screenshots go
to .local/screenshots/."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from agents.audit import report
from agents.audit.log import Scope
from tests.test_auditlog import as_read, fleet_log

BAR = (0x4A, 0x7F, 0xB5)  # the distribution chart's bars
TOTALS = (0xEE, 0xF4, 0xFA)  # the totals block
AXIS = (0x33, 0x55, 0x77)  # report.AXIS_COLOUR: the MTTR-over-time axes and their ticks
POINT = (0xD9, 0x82, 0x2B)  # report.POINT_COLOUR
SHOTS = Path(__file__).resolve().parents[1] / ".local" / "screenshots"


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


def chart_ticks(page: Any) -> list[dict[str, list[str]]]:
    """Per chart on the page (`[data-chart]`, drawn by charts.js), the tick labels each
    axis drew, non-empty ones only."""
    ticks: list[dict[str, list[str]]] = page.evaluate(
        """() => [...document.querySelectorAll("[data-chart]")].map((el) => {
            const axes = {};
            for (const [key, value] of Object.entries(el.dataset)) {
                if (key.startsWith("ticks")) {
                    axes[key.slice(5).toLowerCase()] = JSON.parse(value).filter((t) => t.trim());
                }
            }
            return axes;
        })"""
    )
    return ticks


def assert_every_chart_has_ticks(page: Any, charts: int) -> None:
    """Every chart is drawn (a canvas), with at least 3 labelled ticks on its x axis and
    on its y axis (the left one; a right-hand y axis too, when there is one)."""
    assert page.locator("[data-chart] canvas").count() == charts
    ticks = chart_ticks(page)
    assert len(ticks) == charts
    for axes in ticks:
        assert len(axes["x"]) >= 3, axes
        assert len(axes["y"]) >= 3, axes
        if "y2" in axes:
            assert len(axes["y2"]) >= 3, axes


def report_in_chromium(tmp_path: Path, built: dict[str, Any], name: str) -> tuple[Any, Image.Image]:
    """The HTML report opened from a file in Debian's chromium (Playwright): the page, once
    its charts are drawn, and a screenshot; it must load nothing but itself."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only these tests

    page_file = tmp_path / f"{name}.html"
    page_file.write_text(report.render(built, "html"))
    shot = SHOTS / f"{name}.png"
    SHOTS.mkdir(parents=True, exist_ok=True)
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1600})
            page.on("request", lambda request: requests.append(request.url))
            page.goto(page_file.as_uri())
            page.wait_for_function("document.querySelectorAll('[data-chart] canvas').length > 0")
            page.screenshot(path=str(shot), full_page=True)
            checks = (
                page.content(),
                chart_ticks(page),
                page.locator("[data-chart] canvas").count(),
            )
            assert_every_chart_has_ticks(page, checks[2])
        finally:
            browser.close()
    assert requests == [page_file.as_uri()], requests  # nothing from elsewhere, nothing more
    return checks, Image.open(shot)


def test_the_html_report_renders_totals_and_charts(tmp_path: Path) -> None:
    built = report.build(as_read(fleet_log()), Scope())
    (content, ticks, charts), image = report_in_chromium(tmp_path, built, "report")
    assert charts == 2  # MTTR over time, MTTR distribution
    assert count(image, TOTALS, (0, 0, 1200, 300)) > 5_000  # the totals block, near the top
    assert count(image, BAR, (0, 0, image.width, image.height)) > 2_000  # distribution bars
    assert count(image, POINT, (0, 0, image.width, image.height)) > 6 * 30  # a dot per recovery
    assert count(image, AXIS, (0, 0, image.width, image.height)) > 400  # axes and ticks
    assert f"failures <b>{built['totals']['failure_count']}</b>" in content
    over_time = ticks[0]
    assert all(re.fullmatch(r"\d\d:\d\d(:\d\d)?", label) for label in over_time["x"]), over_time
    assert all(label.endswith(("s", "m", "h")) for label in over_time["y"]), over_time
    assert "recovered at (UTC)" in content
    assert "uPlot" in content  # inlined, with its licence named


def test_one_recovery_still_gets_readable_axes(tmp_path: Path) -> None:
    """A lone recovery: one dot, and still at least 3 labelled ticks on each axis."""
    events = fleet_log()
    first = next(e for e in events if e.type.value == "connector.recovery.completed")
    alone = [e for e in events if e.connector_id == first.connector_id]
    built = report.build(as_read(alone), Scope())
    assert built["totals"]["recovered_count"] == 1
    (_content, _ticks, charts), image = report_in_chromium(tmp_path, built, "report-one-recovery")
    assert charts == 2
    assert count(image, POINT, (0, 0, image.width, image.height)) > 30
