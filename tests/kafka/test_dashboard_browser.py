"""The admin page in a real browser: Debian's headless chromium driven by Playwright, against
the real broker, a worker and `connector-recovery dashboard`. Screenshots of each state go to
.local/screenshots/ (ignored by git)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agents.broker.producer import ping_from_fields, publish_pings
from agents.dashboard.auth import token_digest
from agents.wire.codec import registry
from agents.wire.records import decode_audit
from streams.models import AuditEvent, EventType
from tests.kafka.harness import (
    Namespace,
    Worker,
    free_port,
    read_records,
    wait_for,
    wait_for_audit,
)
from tests.test_report_rendering import assert_every_chart_has_ticks, chromium

pytestmark = pytest.mark.kafka

FAILURE_DETECTED = EventType.FAILURE_DETECTED.value
REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / ".local" / "screenshots"
CAROL_TOKEN = "carol-reads-only"  # noqa: S105 - a throwaway token of this test
POLICY = f"""
defaults:
  max_retries: 1
  attempt_timeout_s: 60  # a manual attempt stays "recovering" while the test looks
  heartbeat_timeout_s: 3600
  backoff: {{base_s: 0.1, cap_s: 0.3}}
admins: [alice, bob]
dashboard:
  trusted_header: X-Forwarded-User
  users:
    alice: {{}}
    bob: {{tenant: globex}}
    carol: {{token_sha256: {token_digest(CAROL_TOKEN)}}}
"""
# Recovered episodes of the last half hour (seconds ago, outage seconds), for the trends.
HISTORY = {
    "acme": [(1800, 40), (1500, 200), (1200, 950), (700, 120), (300, 60)],
    "globex": [(1700, 30), (1100, 1000), (900, 80), (400, 300)],
}
LATENCY_PROBES = ("ACME-ORDERS", "ACME-STOCK", "ACME-LEADS")
ACME_IDS = {
    *LATENCY_PROBES,
    "ACME-BILLING",
    "ACME-LATE",
    "ACME-ACK",
    *(f"ACME-H{i}" for i in range(5)),
}


class DashboardProcess:
    def __init__(self, ns: Namespace, policy: Path) -> None:
        self.port = free_port()
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agents.cli",
                "dashboard",
                "--port",
                str(self.port),
                "--policy",
                str(policy),
            ],
            env=ns.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        try:
            wait_for(
                lambda: "ready\n" in self.lines or self.process.poll() is not None,
                60,
                "the dashboard to catch up",
            )
            assert self.process.poll() is None, "".join(self.lines)
            assert f"admin page: {self.url}\n" in self.lines
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/dashboard/"

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def publish(ns: Namespace, tmp: Path, pings: list[dict[str, Any]]) -> None:
    path = tmp / f"pings-{time.monotonic_ns()}.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in pings))
    result = ns.cli("publish", "--file", str(path))
    assert result.returncode == 0, result.stderr


def failing(connector_id: str, tenant: str, failure: str = "auth") -> dict[str, Any]:
    return {
        "connector_id": connector_id,
        "tenant_id": tenant,
        "status": "unhealthy",
        "failure": failure,
        "retryable": False,  # an incident at once: it waits for a human
        "checked_at": int(time.time() * 1000),
    }


def history() -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    pings = []
    for tenant, episodes in HISTORY.items():
        for index, (ago_s, outage_s) in enumerate(episodes):
            connector = f"{tenant.upper()}-H{index}"
            start = now - ago_s * 1000
            pings.append(
                {
                    "connector_id": connector,
                    "tenant_id": tenant,
                    "status": "unhealthy",
                    "failure": "timeout",
                    "checked_at": start,
                }
            )
            pings.append(
                {
                    "connector_id": connector,
                    "tenant_id": tenant,
                    "status": "healthy",
                    "checked_at": start + outage_s * 1000,
                }
            )
    return pings


@dataclass
class Stack:
    ns: Namespace
    tmp: Path
    dashboard: DashboardProcess
    worker: Worker
    browser: Any


@pytest.fixture(scope="module")
def stack(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only these tests need it

    tmp = tmp_path_factory.mktemp("dashboard")
    ns = Namespace(kafka, tmp)
    policy = tmp / "policy.yaml"
    policy.write_text(POLICY)
    with contextlib.ExitStack() as cleanup:  # whatever fails below, nothing is left running
        worker = Worker(ns, policy=policy).start()
        cleanup.callback(worker.kill)
        publish(ns, tmp, [*history(), failing("GLOBEX-LEDGER", "globex", "schema_mismatch")])
        wait_for_audit(
            ns,
            lambda events: sum(e.type is EventType.RECOVERY_COMPLETED for e in events) == 9,
            120,
            "the history's recoveries",
        )
        dashboard = DashboardProcess(ns, policy)
        cleanup.callback(dashboard.stop)
        SHOTS.mkdir(parents=True, exist_ok=True)
        playwright = cleanup.enter_context(sync_playwright())
        browser = playwright.chromium.launch(
            executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"]
        )
        cleanup.callback(browser.close)
        yield Stack(ns, tmp, dashboard, worker, browser)


def page_as(stack: Stack, user: str | None, width: int = 1400) -> Any:
    headers = {"X-Forwarded-User": user} if user else {}
    context = stack.browser.new_context(
        extra_http_headers=headers, viewport={"width": width, "height": 1000}
    )
    return context.new_page()


def audit_until(
    stack: Stack, predicate: Callable[[list[AuditEvent]], bool], timeout_s: float, what: str
) -> list[AuditEvent]:
    """`wait_for_audit` in a thread: Playwright's sync API keeps an event loop running in
    this one, and the harness's readers start their own."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(wait_for_audit, stack.ns, predicate, timeout_s, what).result()


def row(connector_id: str, *states: str) -> str:
    chosen = ",".join(f'[data-state="{s}"]' for s in states)
    return f'tr.connector[data-connector="{connector_id}"]:is({chosen})'


def publish_in_process(stack: Stack, ping: dict[str, Any]) -> None:
    """Like `publish`, without starting a process: a CLI's start-up competes for the CPU
    with the worker and the page during the very moments measured."""
    pings = [ping_from_fields(ping)]
    settings = stack.ns.settings()
    with ThreadPoolExecutor(1) as pool:  # an event loop of its own, beside Playwright's
        pool.submit(asyncio.run, publish_pings(settings, settings.topics.health, pings)).result()


def applied_at(stack: Stack, connector_id: str) -> float:
    """When the worker applied the connector's failure: the producer's timestamp (wall clock,
    this machine) on the `connector.failure.detected` record it wrote to the audit topic."""

    def find() -> float | None:
        codec = registry()
        for record in read_records(stack.ns.bootstrap, stack.ns.topics.audit, timeout_s=1):
            event = decode_audit(codec, record.value)
            if event.connector_id == connector_id and event.type.value == FAILURE_DETECTED:
                return float(record.timestamp) / 1000
        return None

    with ThreadPoolExecutor(1) as pool:  # the harness's readers need a loop of their own
        return pool.submit(wait_for, find, 10, f"{connector_id}'s failure in the log").result()


def test_a_failing_ping_shows_on_the_page_within_two_seconds(stack: Stack) -> None:
    page = page_as(stack, "alice")
    page.goto(stack.dashboard.url)
    page.wait_for_selector("#live-status:text('live')")
    delays = []
    for connector_id in LATENCY_PROBES:
        published = time.time()
        publish_in_process(stack, failing(connector_id, "acme"))
        page.wait_for_selector(row(connector_id, "failing"), timeout=15_000)
        shown = time.time()
        applied = applied_at(stack, connector_id)
        delays.append(shown - applied)
        print(
            f"{connector_id}: applied {applied - published:.2f}s after `publish` started,"
            f" on the page {shown - applied:.2f}s after being applied"
        )
    page.screenshot(path=str(SHOTS / "1-failing-ping-shown.png"), full_page=True)
    assert max(delays) <= 2.0, delays
    assert page.locator("#incidents tr.open", has_text="ACME-ORDERS").count() == 1


def test_an_admins_recover_click_starts_a_recovery_as_that_admin(stack: Stack) -> None:
    publish(stack.ns, stack.tmp, [failing("ACME-BILLING", "acme")])
    page = page_as(stack, "alice")
    page.goto(stack.dashboard.url)
    page.wait_for_selector(row("ACME-BILLING", "failing"), timeout=15_000)
    incident = page.locator("#incidents tr.open", has_text="ACME-BILLING")
    incident.locator('button[data-action="RECOVER"]').click()
    answer = page.locator("#answer.accepted")
    answer.wait_for(timeout=40_000)
    assert "recover ACME-BILLING: accepted as alice" in answer.inner_text()
    assert "connector.recovery.started" in answer.inner_text()
    page.wait_for_selector(row("ACME-BILLING", "recovering"), timeout=15_000)
    page.screenshot(path=str(SHOTS / "2-recover-accepted.png"), full_page=True)
    events = audit_until(
        stack,
        lambda evs: any(
            e.connector_id == "ACME-BILLING" and e.type is EventType.RECOVERY_STARTED for e in evs
        ),
        20,
        "the manual recovery",
    )
    started = [
        e
        for e in events
        if e.connector_id == "ACME-BILLING" and e.type is EventType.RECOVERY_STARTED
    ]
    assert [(e.actor, e.mode.value if e.mode else None) for e in started] == [("alice", "MANUAL")]
    page.locator('tr.connector[data-connector="ACME-BILLING"]').click()
    page.wait_for_selector('.timeline[data-connector="ACME-BILLING"] .chain.ok')
    assert "connector.recovery.started" in page.locator(".timeline").inner_text()
    page.screenshot(path=str(SHOTS / "3-timeline.png"), full_page=True)


def test_an_acknowledgement_shows_who_acknowledged(stack: Stack) -> None:
    publish(stack.ns, stack.tmp, [failing("ACME-ACK", "acme")])
    page = page_as(stack, "alice")
    page.goto(stack.dashboard.url)
    incident = page.locator("#incidents tr.open", has_text="ACME-ACK")
    incident.locator('button[data-action="ACKNOWLEDGE"]').click()
    page.locator("#answer.accepted").wait_for(timeout=40_000)
    assert "incident.acknowledged" in page.locator("#answer").inner_text()
    # The row is redrawn from the audit topic: acknowledged by alice, no acknowledge button.
    page.wait_for_selector(
        '#incidents tr.open[data-connector="ACME-ACK"] td:text-is("alice")', timeout=10_000
    )
    assert incident.locator('button[data-action="ACKNOWLEDGE"]').count() == 0


def test_a_tenant_admins_page_never_shows_another_tenants_connectors(stack: Stack) -> None:
    page = page_as(stack, "bob")
    page.goto(stack.dashboard.url)
    page.wait_for_selector(row("GLOBEX-LEDGER", "failing"), timeout=15_000)
    contents = [page.content()]
    # A live update of another tenant while bob looks, then one of his own.
    publish(stack.ns, stack.tmp, [failing("ACME-LATE", "acme")])
    admin = page_as(stack, "alice")
    admin.goto(stack.dashboard.url)
    admin.wait_for_selector(row("ACME-LATE", "failing"), timeout=15_000)
    publish(stack.ns, stack.tmp, [failing("GLOBEX-PAYROLL", "globex")])
    page.wait_for_selector(row("GLOBEX-PAYROLL", "failing"), timeout=15_000)
    contents.append(page.content())
    page.locator('tr.connector[data-connector="GLOBEX-LEDGER"]').click()
    page.wait_for_selector('.timeline[data-connector="GLOBEX-LEDGER"]')
    contents.append(page.content())
    page.screenshot(path=str(SHOTS / "4-tenant-admin-globex.png"), full_page=True)
    for json_path in ("api/state", "api/connector?id=ACME-ORDERS", "fragment"):
        response = page.request.get(stack.dashboard.url + json_path)
        contents.append(response.text())
    for content in contents:
        leaked = {c for c in ACME_IDS if c in content}
        assert not leaked, leaked
        assert "acme" not in content
    assert page.locator("figure.chart").count() == 1  # globex's trends only
    assert admin.locator("figure.chart").count() == 2


def test_a_read_only_user_sees_no_buttons_and_the_server_refuses_her(stack: Stack) -> None:
    page = page_as(stack, None)
    page.goto(stack.dashboard.url)
    page.screenshot(path=str(SHOTS / "0-sign-in.png"))
    page.fill('input[name="token"]', CAROL_TOKEN)
    page.click('button[type="submit"]')
    page.wait_for_selector(row("GLOBEX-LEDGER", "failing"), timeout=15_000)
    assert "carol · read-only · every tenant" in page.locator("header").inner_text()
    page.locator('tr.connector[data-connector="GLOBEX-LEDGER"]').click()
    page.wait_for_selector('.timeline[data-connector="GLOBEX-LEDGER"]')
    assert page.locator("button.act").count() == 0  # no buttons she may not use
    # The server refuses her all the same: the request a button would have sent.
    page.evaluate(
        """async () => {
            const csrf = document.querySelector('meta[name="csrf-token"]').content;
            const response = await fetch("api/actions", {
                method: "POST",
                headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
                body: JSON.stringify({action: "RECOVER", target: "GLOBEX-LEDGER"}),
            });
            const reply = await response.json();
            document.getElementById("answer").className = "refused";
            document.getElementById("answer").textContent = response.status + " " + reply.error;
        }"""
    )
    answer = page.locator("#answer.refused")
    answer.wait_for(timeout=10_000)
    assert answer.inner_text() == (
        "403 user 'carol' is not in the policy's admins: ask a Platform Admin to act"
    )
    page.screenshot(path=str(SHOTS / "5-non-admin-refused.png"), full_page=True)
    audit = audit_until(stack, bool, 10, "the audit log")
    assert not [e for e in audit if e.actor == "carol"]


def test_a_timeline_fits_a_1024_px_window(stack: Stack) -> None:
    """Every column of a connector's timeline, hash and log position included, is inside a
    1,024 px window: the page never scrolls sideways."""
    page = page_as(stack, "alice", width=1024)
    page.goto(stack.dashboard.url)
    page.locator('tr.connector[data-connector="ACME-H2"]').click()  # a receipt: long rows
    page.wait_for_selector('.timeline[data-connector="ACME-H2"] .chain.ok')
    page.locator(".timeline").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "6-timeline-at-1024.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= 1024
    for header in ("hash", "log position"):
        cell = page.locator(".timeline th", has_text=header)
        box = cell.bounding_box()
        assert box is not None
        assert box["x"] + box["width"] <= 1024, (header, box)
    rows = page.locator(".timeline tbody tr")
    assert rows.count() >= 4
    last = rows.first.locator("td").last.bounding_box()
    assert last is not None
    assert last["x"] + last["width"] <= 1024


def test_a_tenant_users_filter_shows_their_tenant(stack: Stack) -> None:
    page = page_as(stack, "bob")
    page.goto(stack.dashboard.url)
    page.wait_for_selector(row("GLOBEX-LEDGER", "failing"), timeout=15_000)
    tenant = page.locator("#f-tenant")
    assert tenant.input_value() == "globex"
    assert tenant.locator("option:checked").inner_text() == "globex"
    assert tenant.is_disabled()
    page.screenshot(path=str(SHOTS / "7-tenant-filter-globex.png"))


def test_the_page_has_a_favicon(stack: Stack) -> None:
    page = page_as(stack, "alice")
    page.goto(stack.dashboard.url)
    href = page.locator('link[rel="icon"]').get_attribute("href")
    assert href == "/dashboard/static/favicon.svg"
    icon = page.request.get(f"http://127.0.0.1:{stack.dashboard.port}{href}")
    assert icon.status == 200
    assert icon.headers["content-type"] == "image/svg+xml"


def test_every_trend_chart_has_axes_ticks_a_legend_apart_and_a_tooltip(stack: Stack) -> None:
    """The trends, drawn by the vendored uPlot: labelled ticks on every axis (time in UTC,
    MTTR with units, failures), the legend below the plot (never over it or the SLO line),
    a tooltip with the window's figures; and nothing loaded from another site."""
    page = page_as(stack, "alice")
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(stack.dashboard.url)
    page.wait_for_function("document.querySelectorAll('[data-chart] canvas').length === 2")
    assert_every_chart_has_ticks(page, 2)
    for chart in page.locator("figure.chart").all():
        plot = chart.locator("canvas").bounding_box()
        legend = chart.locator(".u-legend").bounding_box()
        assert plot is not None
        assert legend is not None
        assert legend["y"] >= plot["y"] + plot["height"], (plot, legend)
        for series in ("mean", "p50", "p90", "failures", "SLO"):
            assert series in chart.locator(".u-legend").inner_text()
    acme = page.locator('figure.chart[data-tenant="acme"]')
    tip = acme.locator(".chart-tip")

    def hover_a_recovery() -> str | None:
        """Sweep the plot until the cursor is on a window with a recovery: its tooltip."""
        acme.scroll_into_view_if_needed()  # the mouse reaches only what is in the viewport
        box = acme.locator(".u-over").bounding_box()
        assert box is not None
        for step in range(1, 40):
            page.mouse.move(box["x"] + box["width"] * step / 40, box["y"] + box["height"] / 2)
            if tip.is_visible():
                shown = str(tip.inner_text())
                if "p90 -" not in shown:
                    return shown
        return None

    # A live update that changes the data redraws the chart: then sweep again.
    text = wait_for(hover_a_recovery, 20, "a tooltip with a recovery's figures")
    assert text.startswith("window 20"), text
    assert "failures " in text
    assert "p90 " in text
    page.screenshot(path=str(SHOTS / "8-trends-with-tooltip.png"), full_page=True)
    local = f"http://127.0.0.1:{stack.dashboard.port}/"
    assert [url for url in requests if not url.startswith(local)] == []


def test_the_worker_serves_the_same_page(stack: Stack) -> None:
    """Mounted in the worker's web server, the page folds the same topic the same way."""

    def state(url: str) -> dict[str, Any]:
        # http URLs of our own two servers
        request = urllib.request.Request(url + "api/state", headers={"X-Forwarded-User": "alice"})  # noqa: S310 - the test's own http URL
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - as above
            body: dict[str, Any] = json.load(response)
        return body

    mounted = f"http://127.0.0.1:{stack.worker.web_port}/dashboard/"

    def same() -> bool:
        ours, theirs = state(stack.dashboard.url), state(mounted)
        return bool(ours["connectors"] == theirs["connectors"] and ours["fleet"] == theirs["fleet"])

    wait_for(same, 20, "the worker's page to show what the dashboard shows")
    page = page_as(stack, "alice")
    page.goto(mounted)
    page.wait_for_selector(row("GLOBEX-LEDGER", "failing"), timeout=15_000)


def test_the_worker_stops_promptly_with_a_page_open(stack: Stack) -> None:
    """An open event stream must not hold the worker's web server at shutdown."""
    page = page_as(stack, "alice")
    page.goto(f"http://127.0.0.1:{stack.worker.web_port}/dashboard/")
    page.wait_for_selector("#live-status:text('live')")
    began = time.monotonic()
    stack.worker.stop(timeout_s=30)
    assert time.monotonic() - began < 15
