"""The admin page without a broker: the routes over a projection fed by the core's own
events. Who sees what (every route, as a property over random fleets), who may act, CSRF,
the chain verdict and the SLO line. The browser tests on the real broker and worker are in
tests/kafka/test_dashboard_browser.py."""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.audit.follow import AuditFollower
from agents.audit.live import status
from agents.audit.log import LogRead
from agents.audit.log import Scope as AuditScope
from agents.audit.report import build
from agents.dashboard.auth import CSRF_HEADER, token_digest
from agents.dashboard.board import STATES, Scope
from agents.dashboard.page import chart_figure, chart_spec, slo_from_alerts
from agents.dashboard.server import ALERT_RULES, Dashboard
from agents.settings import Settings
from agents.testing.driver import T0, Driver
from streams.models import AdminAction, AdminCommand, AuditEvent, EventType
from streams.outages import decide_outage_command
from streams.policy import PolicyError, parse_policy
from streams.projections import PLATFORM_TENANT, tenant_key
from tests.core.test_outages import Fleet

TENANTS = ["acme", "globex", "initech", None]
TOKENS = {"alice": "alice-secret", "tara": "tara-secret"}
POLICY: dict[str, Any] = {
    "defaults": {"failure_threshold": 1, "max_retries": 0},
    "admins": ["alice", "ada", "gus"],
    "dashboard": {
        "trusted_header": "X-Forwarded-User",
        "users": {
            "alice": {"token_sha256": token_digest(TOKENS["alice"])},
            "tara": {"token_sha256": token_digest(TOKENS["tara"]), "tenant": "acme"},
            "ada": {"tenant": "acme"},
            "gus": {"tenant": "globex"},
            "ivy": {"tenant": "initech"},
            "pat": {"tenant": PLATFORM_TENANT},
            "carol": {},
        },
    },
}
SCOPED_USERS = {"ada": "acme", "gus": "globex", "ivy": "initech", "pat": PLATFORM_TENANT}

Send = Callable[[Settings, AdminCommand, float], Awaitable[list[AuditEvent]]]


class Recorder:
    """Stands in for the broker round trip: records each command and answers like the
    decider would (accepted: a `connector.recovery.started` by the command's actor)."""

    def __init__(self, rejection: str | None = None) -> None:
        self.sent: list[AdminCommand] = []
        self.rejection = rejection

    async def __call__(
        self, _settings: Settings, command: AdminCommand, _timeout: float
    ) -> list[AuditEvent]:
        self.sent.append(command)
        driver = Driver(connector_id=command.connector_id)
        driver.ping(False, retryable=False)
        kind = EventType.COMMAND_REJECTED if self.rejection else EventType.RECOVERY_STARTED
        attributes = {"command_id": command.command_id}
        if self.rejection:
            attributes["rejection"] = self.rejection
        model = driver.events[-1]
        return [
            model.model_copy(
                update={"type": kind, "actor": command.actor, "attributes": attributes}
            )
        ]


def fleet_events(fleet: list[tuple[str | None, list[bool]]]) -> tuple[dict[str, str], list[Any]]:
    owners: dict[str, str] = {}
    events: list[AuditEvent] = []
    for index, (tenant, healths) in enumerate(fleet):
        # Ids that are no substring of each other or of any tenant name.
        driver = Driver.with_policy(POLICY, connector_id=f"Q{index}Z", tenant_id=tenant)
        for healthy in healths:
            driver.advance(1)
            events.extend(driver.ping(healthy, retryable=index % 2 == 0))
        if driver.events:  # a connector that was only ever healthy has no audit events
            owners[driver.connector_id] = tenant_key(tenant)
    return owners, events


class MemoryTimelines:
    """Timelines kept in memory as the events are folded (the page reads them from the audit
    topic through an index: tests/kafka/test_dashboard_browser.py)."""

    def __init__(self) -> None:
        self.events: dict[str, list[tuple[str, AuditEvent]]] = {}

    async def newest(self, connector_id: str, limit: int) -> list[tuple[str, AuditEvent]]:
        return list(reversed(self.events.get(connector_id, [])))[:limit]


def dashboard_of(events: list[AuditEvent], send: Send | None = None) -> Dashboard:
    follower = AuditFollower(Settings(), Path("/nonexistent/views"))
    dashboard = Dashboard(
        Settings(),
        parse_policy(POLICY),
        follower,
        send=send or Recorder(),
        timelines=MemoryTimelines(),
    )
    fold(dashboard, events)
    follower.caught_up.set()
    return dashboard


def fold(dashboard: Dashboard, events: list[AuditEvent]) -> None:
    """What the follower does with each event read."""
    board = dashboard.board
    timelines = board.timelines
    assert isinstance(timelines, MemoryTimelines)
    for index, event in enumerate(events):
        if board.view.apply(event):
            timelines.events.setdefault(event.connector_id, []).append((f"0/{index}", event))
            board.on_event(f"0/{index}", event)


def timeline(dashboard: Dashboard, scope: Scope, connector_id: str) -> dict[str, Any] | None:
    return asyncio.run(dashboard.board.timeline(scope, connector_id))


async def with_client(
    dashboard: Dashboard, check: Callable[[TestClient[Any, Any]], Awaitable[None]]
) -> None:
    app = web.Application()
    dashboard.mount(app)
    async with TestClient(TestServer(app)) as client:
        await check(client)


def as_user(name: str) -> dict[str, str]:
    return {"X-Forwarded-User": name}


async def csrf_of(client: TestClient[Any, Any], headers: dict[str, str]) -> str:
    page = await (await client.get("/dashboard/", headers=headers)).text()
    found = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page)
    assert found, page[:500]
    return found.group(1)


fleets = st.lists(
    st.tuples(st.sampled_from(TENANTS), st.lists(st.booleans(), min_size=1, max_size=6)),
    min_size=1,
    max_size=6,
)


@settings(max_examples=40, deadline=None)
@given(fleets)
def test_a_tenant_admin_sees_nothing_of_another_tenant_on_any_route(
    fleet: list[tuple[str | None, list[bool]]],
) -> None:
    owners, events = fleet_events(fleet)
    dashboard = dashboard_of(events)
    every_tenant = {tenant_key(t) for t in TENANTS}

    async def check(client: TestClient[Any, Any]) -> None:
        for user, tenant in SCOPED_USERS.items():
            headers = as_user(user)
            foreign = {c for c, t in owners.items() if t != tenant} | (every_tenant - {tenant})
            bodies = [
                await (await client.get(path, headers=headers)).text()
                for path in ("/dashboard/", "/dashboard/fragment", "/dashboard/api/state")
            ]
            for connector_id in owners:
                for path in ("/dashboard/timeline", "/dashboard/api/connector"):
                    response = await client.get(path, params={"id": connector_id}, headers=headers)
                    assert (response.status == 200) == (owners[connector_id] == tenant)
                    bodies.append(await response.text())
            for body in bodies:
                leaked = {word for word in foreign if word in body}
                assert not leaked, (user, leaked)
            state = json.loads(bodies[2])
            assert {c["connector_id"] for c in state["connectors"]} == {
                c for c, t in owners.items() if t == tenant
            }
            assert state["fleet"]["dead_letters"] is None  # platform figures stay hidden

    asyncio.run(with_client(dashboard, check))


def failed_connector(tenant: str | None = "acme", connector_id: str = "SAP-AR") -> list[Any]:
    driver = Driver.with_policy(POLICY, connector_id=connector_id, tenant_id=tenant)
    driver.ping(False, failure="auth", retryable=False)
    return driver.events


def test_an_admin_acts_as_the_signed_in_user_whatever_the_body_says() -> None:
    send = Recorder()
    dashboard = dashboard_of(failed_connector(), send)

    async def check(client: TestClient[Any, Any]) -> None:
        headers = as_user("alice")
        csrf = await csrf_of(client, headers)
        response = await client.post(
            "/dashboard/api/actions",
            json={"action": "RECOVER", "target": "SAP-AR", "actor": "mallory"},
            headers={**headers, CSRF_HEADER: csrf},
        )
        answer = await response.json()
        assert response.status == 200, answer
        assert answer["verdict"] == "accepted"
        assert answer["events"][0]["type"] == "connector.recovery.started"
        assert [(c.action.value, c.actor, c.connector_id) for c in send.sent] == [
            ("RECOVER", "alice", "SAP-AR")
        ]

    asyncio.run(with_client(dashboard, check))


def test_the_deciders_rejection_is_the_answer() -> None:
    send = Recorder(rejection="connector 'SAP-AR' is not failed")
    dashboard = dashboard_of(failed_connector(), send)

    async def check(client: TestClient[Any, Any]) -> None:
        headers = as_user("alice")
        response = await client.post(
            "/dashboard/api/actions",
            json={"action": "RECOVER", "target": "SAP-AR"},
            headers={**headers, CSRF_HEADER: await csrf_of(client, headers)},
        )
        answer = await response.json()
        assert answer["verdict"] == "rejected"
        assert answer["reason"] == "connector 'SAP-AR' is not failed"

    asyncio.run(with_client(dashboard, check))


@pytest.mark.parametrize(
    ("user", "csrf", "extra", "status", "reason"),
    [
        ("carol", "own", {}, 403, "user 'carol' is not in the policy's admins"),
        ("alice", None, {}, 403, "CSRF token is missing or stale"),
        ("alice", "other", {}, 403, "CSRF token is missing or stale"),
        ("alice", "own", {"Sec-Fetch-Site": "cross-site"}, 403, "only from the admin page"),
        ("gus", "own", {}, 404, "no such connector: SAP-AR"),  # globex's admin, acme's connector
        ("mallory", None, {}, 403, "'mallory' is not a dashboard user"),
    ],
)
def test_refused_actions_say_why_and_publish_nothing(
    user: str, csrf: str | None, extra: dict[str, str], status: int, reason: str
) -> None:
    send = Recorder()
    dashboard = dashboard_of(failed_connector(), send)

    async def check(client: TestClient[Any, Any]) -> None:
        headers = {**as_user(user), **extra}
        token = {
            "own": lambda: dashboard.gate.csrf_token(dashboard.gate.named(user)),
            "other": lambda: dashboard.gate.csrf_token(dashboard.gate.named("gus")),
        }
        if csrf is not None:
            headers[CSRF_HEADER] = token[csrf]()
        response = await client.post(
            "/dashboard/api/actions",
            json={"action": "RECOVER", "target": "SAP-AR"},
            headers=headers,
        )
        assert response.status == status
        assert reason in (await response.json())["error"]
        assert send.sent == []

    asyncio.run(with_client(dashboard, check))


def test_a_token_signs_in_and_the_cookie_carries_the_session() -> None:
    dashboard = dashboard_of(failed_connector("acme") + failed_connector("globex", "GLOBEX-1"))

    async def check(client: TestClient[Any, Any]) -> None:
        anonymous = await client.get("/dashboard/")
        assert anonymous.status == 401
        assert 'name="token"' in await anonymous.text()
        assert (await client.get("/dashboard/api/state")).status == 401
        wrong = await client.post("/dashboard/login", data={"token": "guess"})
        assert wrong.status == 401
        signed_in = await client.post("/dashboard/login", data={"token": TOKENS["tara"]})
        assert signed_in.status == 200  # followed the redirect to the page
        cookie = signed_in.history[0].headers["Set-Cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        page = await signed_in.text()
        assert "SAP-AR" in page
        assert "GLOBEX-1" not in page  # tara is acme's
        bearer = {"Authorization": f"Bearer {TOKENS['alice']}"}
        state = await (await client.get("/dashboard/api/state", headers=bearer)).json()
        assert {c["connector_id"] for c in state["connectors"]} == {"SAP-AR", "GLOBEX-1"}

    asyncio.run(with_client(dashboard, check))


def test_the_timeline_shows_receipt_fields_and_a_broken_chain() -> None:
    driver = Driver.with_policy(POLICY, connector_id="SAP-AR", tenant_id="acme")
    driver.ping(False)
    driver.advance(5)
    driver.ping(True)
    events = list(driver.events)
    completed = next(e for e in events if e.type is EventType.RECOVERY_COMPLETED)
    intact = timeline(dashboard_of(events), Scope(), "SAP-AR")
    assert intact is not None
    assert intact["chain"]["verdict"] == "intact"
    shown = next(e for e in intact["events"] if e["type"] == "connector.recovery.completed")
    assert shown["attributes"] == dict(sorted(completed.attributes.items()))
    tampered = [
        e.model_copy(update={"failure": "edited"}) if e.sequence == 1 else e for e in events
    ]
    broken = timeline(dashboard_of(tampered), Scope(), "SAP-AR")
    assert broken is not None
    assert broken["chain"]["verdict"] == "broken"
    assert "sequence 1 does not match its hash" in broken["chain"]["problem"]


def test_the_slo_line_comes_from_the_alert_rules(tmp_path: Path) -> None:
    assert slo_from_alerts(ALERT_RULES) == 900
    rules = tmp_path / "alerts.yml"
    rules.write_text(
        ALERT_RULES.read_text().replace('quantile="0.9"}) > 900', 'quantile="0.9"}) > 300')
    )
    assert slo_from_alerts(rules) == 300
    assert slo_from_alerts(tmp_path / "missing.yml") is None


def test_the_chart_carries_mttr_failures_and_the_slo() -> None:
    """The server renders each tenant's trend as data for `static/charts.js` (uPlot); the
    browser tests check what it draws."""
    events = []
    for index, outage_s in enumerate((4, 10, 1000)):  # the last one beyond the SLO
        driver = Driver.with_policy(POLICY, connector_id=f"C{index}", tenant_id="acme")
        driver.advance(index * 60)
        driver.ping(False)
        driver.advance(outage_s)
        driver.ping(True)
        events.extend(driver.events)
    dashboard = dashboard_of(events)

    async def check(client: TestClient[Any, Any]) -> None:
        page = await (await client.get("/dashboard/fragment", headers=as_user("alice"))).text()
        found = re.search(r'<figure class="chart" data-tenant="acme" data-chart="([^"]*)"', page)
        assert found, page
        spec = json.loads(html.unescape(found.group(1)))
        assert spec["kind"] == "trend"
        for series in ("mean", "p50", "p90"):
            assert sum(v is not None for v in spec[series]) == 3, spec
        assert sum(spec["failures"]) == 3
        assert len(spec["starts"]) == len(spec["failures"])
        assert spec["slo_s"] == 900
        assert spec["slo_in_view"]
        page = await (await client.get("/dashboard/", headers=as_user("alice"))).text()
        for script in ("vendor/uPlot.iife.min.js", "charts.js", "dashboard.js"):
            assert f'<script src="/dashboard/static/{script}"></script>' in page
            response = await client.get(f"/dashboard/static/{script}")
            assert response.status == 200
        assert "http://" not in page.split("</head>")[0]  # nothing loaded from elsewhere
        assert "https://" not in page

    asyncio.run(with_client(dashboard, check))


def test_an_slo_far_above_every_value_is_marked_above_the_chart() -> None:
    points = [
        {"start": "2026-01-01T00:00:00.000Z", "failures": 2, "mttr_mean_s": 12.0,
         "mttr_p50_s": 10.0, "mttr_p90_s": 30.0},
    ]  # fmt: skip
    assert not chart_spec("acme", points, 10, 900.0)["slo_in_view"]
    assert "SLO 15m 00s is above the chart" in chart_figure("acme", points, 10, 900.0)
    assert chart_spec("acme", points, 10, 60.0)["slo_in_view"]
    assert "above the chart" not in chart_figure("acme", points, 10, 60.0)


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ("dashboard: {colour: blue}", "dashboard.colour"),
        ("dashboard: {users: {bob: {token: plain}}}", "dashboard.users.bob.token"),
        ("dashboard: {users: {bob: {token_sha256: abc}}}", "dashboard.users.bob.token_sha256"),
        ("dashboard: {trusted_header: 'X Forwarded'}", "dashboard.trusted_header"),
    ],
)
def test_bad_dashboard_sections_name_the_key(document: str, path: str) -> None:
    with pytest.raises(PolicyError, match=path.replace(".", r"\.")):
        parse_policy(yaml.safe_load(document))


def test_silence_takes_minutes_and_refuses_nonsense() -> None:
    send = Recorder()
    dashboard = dashboard_of(failed_connector(), send)

    async def check(client: TestClient[Any, Any]) -> None:
        headers = as_user("alice")
        headers[CSRF_HEADER] = await csrf_of(client, headers)
        for minutes in (0, "soon", 7 * 24 * 60 + 1):
            response = await client.post(
                "/dashboard/api/actions",
                json={"action": "SILENCE", "target": "SAP-AR", "minutes": minutes},
                headers=headers,
            )
            assert response.status == 400
            assert "bad action request" in (await response.json())["error"]
        retire = await client.post(
            "/dashboard/api/actions", json={"action": "RETIRE", "target": "SAP-AR"}, headers=headers
        )
        assert retire.status == 400
        assert send.sent == []
        before = time.time_ns() // 1_000_000
        await client.post(
            "/dashboard/api/actions",
            json={"action": "SILENCE", "target": "SAP-AR", "minutes": 30, "reason": "maintenance"},
            headers=headers,
        )
        (command,) = send.sent
        assert command.reason == "maintenance"
        assert command.until is not None
        assert 0 <= command.until - (before + 30 * 60_000) < 5_000

    asyncio.run(with_client(dashboard, check))


def test_a_tenant_admins_event_stream_wakes_for_their_tenant_only() -> None:
    dashboard = dashboard_of(failed_connector("globex", "GLOBEX-1"))
    acme = failed_connector("acme", "ACME-1")
    globex = Driver.with_policy(POLICY, connector_id="GLOBEX-2", tenant_id="globex")
    globex.ping(False, failure="auth", retryable=False)

    async def check(client: TestClient[Any, Any]) -> None:
        response = await client.get("/dashboard/events", headers=as_user("gus"))
        assert response.headers["Content-Type"].startswith("text/event-stream")

        async def next_change(timeout_s: float) -> str | None:
            """The live part of the page a `change` event carries."""
            try:
                while True:
                    line = await asyncio.wait_for(response.content.readline(), timeout_s)
                    if line.startswith(b"event: change"):
                        data = await response.content.readline()
                        fragment: str = json.loads(data.decode().removeprefix("data: "))
                        return fragment
            except TimeoutError:
                return None

        first = await next_change(5)  # the page as it is now
        assert first is not None
        assert "GLOBEX-1" in first
        fold(dashboard, acme)
        assert await next_change(1.0) is None  # acme's events do not reach globex's admin
        fold(dashboard, globex.events)
        second = await next_change(5)
        assert second is not None
        assert "GLOBEX-2" in second
        assert "ACME-1" not in second
        response.close()

    asyncio.run(with_client(dashboard, check))


@pytest.mark.parametrize(
    ("policy", "argv", "message"),
    [
        ("admins: [alice]\n", [], "nobody could sign in: POLICY has no dashboard.users: add one"),
        (
            "dashboard: {users: {alice: {token: s3cret}}}\n",
            [],
            "dashboard.users.alice.token: Extra inputs are not permitted"
            " (did you mean token_sha256?",
        ),
        ("dashboard: {colour: red}\n", [], "invalid policy: dashboard.colour"),
        ("dashboard: {users: {alice: {}}}\n", ["--port", "TAKEN"], "cannot serve on"),
        (
            "dashboard: {users: {alice: {}}}\n",
            ["--alert-rules", "missing.yml"],
            "no ConnectorMTTRAboveSLO threshold in missing.yml",
        ),
    ],
)
def test_the_dashboard_command_says_what_is_wrong(
    tmp_path: Path, policy: str, argv: list[str], message: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(policy)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = subprocess.run(
            [sys.executable, "-m", "agents.cli", "dashboard", "--policy", str(path)]
            + [port if a == "TAKEN" else a for a in argv],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
        )
    assert result.returncode == 2
    assert message.replace("POLICY", str(path)) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "pass --policy" not in result.stderr  # it was passed


def test_the_dashboard_command_without_a_policy_says_to_pass_one() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CR_POLICY"}
    result = subprocess.run(
        [sys.executable, "-m", "agents.cli", "dashboard"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**env, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: nobody could sign in: no policy given: pass --policy")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_timeline_shows_only_the_events_of_the_users_tenant() -> None:
    """A corrupted log can move a connector between tenants (seen: re-decided events without
    the tenant); neither tenant then sees the other's events in its timeline."""
    events = failed_connector("globex", "HUBSPOT-CRM")
    moved = [e.model_copy(update={"tenant_id": None}) for e in failed_connector(None, "X")]
    last = events[-1]
    orphan = moved[0].model_copy(
        update={
            "connector_id": "HUBSPOT-CRM",
            "sequence": last.sequence + 1,
            "prev_hash": last.hash,
        }
    )
    dashboard = dashboard_of([*events, orphan])
    platform = timeline(dashboard, Scope(PLATFORM_TENANT), "HUBSPOT-CRM")
    assert platform is not None
    assert [e["sequence"] for e in platform["events"]] == [orphan.sequence]
    assert "globex" not in json.dumps(platform)
    assert timeline(dashboard, Scope("globex"), "HUBSPOT-CRM") is None


def test_a_read_only_user_sees_no_action_buttons() -> None:
    """carol may look, not act: no buttons on the page, its live part or a timeline (the
    server still refuses her actions: `test_refused_actions_say_why_and_publish_nothing`)."""
    dashboard = dashboard_of(failed_connector())

    async def check(client: TestClient[Any, Any]) -> None:
        for user, buttons in (("alice", True), ("carol", False)):
            for path in ("/dashboard/", "/dashboard/fragment", "/dashboard/timeline?id=SAP-AR"):
                body = await (await client.get(path, headers=as_user(user))).text()
                assert ('class="act"' in body) == buttons, (user, path)
        page = await (await client.get("/dashboard/", headers=as_user("carol"))).text()
        assert "read-only: you may look, not act" in page
        assert "<th>actions</th>" not in page

    asyncio.run(with_client(dashboard, check))


def test_a_tenant_users_tenant_filter_shows_their_tenant() -> None:
    dashboard = dashboard_of(failed_connector())

    async def check(client: TestClient[Any, Any]) -> None:
        ada = await (await client.get("/dashboard/", headers=as_user("ada"))).text()
        assert (
            '<select id="f-tenant" disabled title="you see tenant acme only">'
            '<option value="acme" selected>acme</option></select>'
        ) in ada
        alice = await (await client.get("/dashboard/", headers=as_user("alice"))).text()
        assert '<select id="f-tenant"><option value="">all</option></select>' in alice

    asyncio.run(with_client(dashboard, check))


def test_the_page_and_the_sign_in_form_have_a_favicon() -> None:
    dashboard = dashboard_of([])

    async def check(client: TestClient[Any, Any]) -> None:
        link = '<link rel="icon" type="image/svg+xml" href="/dashboard/static/favicon.svg">'
        assert link in await (await client.get("/dashboard/", headers=as_user("alice"))).text()
        assert link in await (await client.get("/dashboard/login")).text()
        icon = await client.get("/dashboard/static/favicon.svg")
        assert icon.status == 200
        assert icon.content_type == "image/svg+xml"
        assert (await icon.text()).startswith("<svg")

    asyncio.run(with_client(dashboard, check))


def test_a_command_naming_an_unknown_connector_or_incident_adds_no_connector() -> None:
    """`recover NO-SUCH-CONNECTOR` and `ack NOPE:1` are rejected, and their rejections are in
    the log; neither id is a connector of `/status`, of the page (nor counted healthy) or of
    the report."""
    real = failed_connector("acme", "SAP-AR")
    rejected = []
    for connector_id, action, incident in (
        ("NO-SUCH-CONNECTOR", AdminAction.RECOVER, None),
        ("NOPE", AdminAction.ACKNOWLEDGE, "NOPE:1"),
    ):
        driver = Driver.with_policy(POLICY, connector_id=connector_id, tenant_id=None)
        driver.admin(action, "alice", incident=incident)
        assert [e.type for e in driver.events] == [EventType.COMMAND_REJECTED]
        rejected.extend(driver.events)
    events = [*rejected, *real]
    dashboard = dashboard_of(events)
    shown = dashboard.board.snapshot(Scope())
    assert [c["connector_id"] for c in shown["connectors"]] == ["SAP-AR"]
    assert sum(shown["fleet"][state] for state in STATES) == 1
    assert [c["connector_id"] for c in status(dashboard.board.view)["connectors"]] == ["SAP-AR"]
    read = LogRead(source="test", events=[(f"0/{i}", e) for i, e in enumerate(events)])
    assert set(build(read, AuditScope())["connectors"]) == {"SAP-AR"}


def test_a_page_restarted_on_another_port_keeps_its_views_folder(tmp_path: Path) -> None:
    """The snapshot is found again whatever the port; a second page running beside the
    first on the same data dir gets a folder of its own (one process holds one)."""
    code = (
        "import sys, time; from pathlib import Path; from agents.settings import Settings;"
        "from agents.dashboard.server import views_dir;"
        "print(views_dir(Settings(data_dir=Path(sys.argv[1])), int(sys.argv[2])).name,"
        " flush=True); time.sleep(float(sys.argv[3]))"
    )

    def page(port: int, hold_s: float) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path), str(port), str(hold_s)],
            stdout=subprocess.PIPE,
            text=True,
        )

    first = page(8001, 0)
    assert first.communicate(timeout=60)[0].strip() == "dashboard"
    running = page(8002, 60)
    assert running.stdout is not None
    assert running.stdout.readline().strip() == "dashboard"  # the first has gone
    beside = page(8003, 0)
    assert beside.communicate(timeout=60)[0].strip() == "dashboard-8003"
    running.kill()
    running.communicate()
    again = page(8004, 0)
    assert again.communicate(timeout=60)[0].strip() == "dashboard"


def test_an_outage_is_a_row_that_opens_to_its_connectors_of_the_users_scope() -> None:
    """The ERP behind seven connectors of two tenants goes down: one outage, the
    platform's (a shared dependency); each tenant admin sees it with their connectors only,
    and someone with no connector in it does not see it."""
    fleet = Fleet()
    for index in range(7):
        tenant = "acme" if index < 4 else "globex"
        fleet.ping(f"SAP-{index}", False, T0 + index * 100, tenant_id=tenant, dependency="erp")
    dashboard = dashboard_of(fleet.log)
    board = dashboard.board
    [outage] = board.snapshot(Scope())["outages"]
    assert outage["group"] == "dependency:erp"
    assert outage["tenant"] is None
    assert (outage["connectors_total"], outage["failing"]) == (7, 7)
    assert [c["connector_id"] for c in outage["connectors"]] == [f"SAP-{i}" for i in range(7)]
    [globex] = board.snapshot(Scope("globex"))["outages"]
    assert [c["connector_id"] for c in globex["connectors"]] == ["SAP-4", "SAP-5", "SAP-6"]
    assert board.snapshot(Scope("initech"))["outages"] == []

    async def check(client: TestClient[Any, Any]) -> None:
        page = await (await client.get("/dashboard/fragment", headers=as_user("gus"))).text()
        assert page.count('class="outage"') == 1
        assert "3 of 3 connectors failing" in page
        assert 'data-connector="SAP-5"' in page
        assert 'data-connector="SAP-1"' not in page
        nothing = await (await client.get("/dashboard/fragment", headers=as_user("ivy"))).text()
        assert 'class="outage"' not in nothing

    asyncio.run(with_client(dashboard, check))


def _outage_fleet() -> Fleet:
    """Seven connectors down: five of acme's behind the dependency `erp` (with two of
    globex's: the platform's outage) and five of acme's failing alike (acme's own)."""
    fleet = Fleet()
    for index in range(7):
        tenant = "acme" if index < 4 else "globex"
        fleet.ping(f"SAP-{index}", False, T0 + index * 100, tenant_id=tenant, dependency="erp")
    for index in range(5):
        fleet.ping(f"CRM-{index}", False, T0 + index * 100, tenant_id="acme", failure="http_503")
    return fleet


ERP_OUTAGE = "outage:dependency:erp:1"
ACME_OUTAGE = "outage:tenant:acme/failure:http_503:1"


def test_an_outage_row_has_its_actions_for_users_who_may_act_on_it() -> None:
    dashboard = dashboard_of(_outage_fleet().log)

    async def check(client: TestClient[Any, Any]) -> None:
        def outage_buttons(page: str, outage_id: str) -> list[str]:
            row = page.split(f'data-outage="{outage_id}"', 1)[1].split("</details>", 1)[0]
            return re.findall(rf'data-action="(\w+)" data-target="{re.escape(outage_id)}"', row)

        everything = ["ACKNOWLEDGE", "RECOVER", "RESOLVE"]
        platform = await (await client.get("/dashboard/fragment", headers=as_user("alice"))).text()
        assert outage_buttons(platform, ERP_OUTAGE) == everything
        assert outage_buttons(platform, ACME_OUTAGE) == everything
        assert "Recover all" in platform
        tenant = await (await client.get("/dashboard/fragment", headers=as_user("ada"))).text()
        assert outage_buttons(tenant, ACME_OUTAGE) == everything
        assert outage_buttons(tenant, ERP_OUTAGE) == []  # spans tenants: the platform's
        reader = await (await client.get("/dashboard/fragment", headers=as_user("carol"))).text()
        assert 'data-target="outage:' not in reader  # may look, not act

    asyncio.run(with_client(dashboard, check))


@pytest.mark.parametrize(
    ("user", "action", "target", "status", "error"),
    [
        ("alice", "RECOVER", ERP_OUTAGE, 200, None),
        ("alice", "ACKNOWLEDGE", ACME_OUTAGE, 200, None),
        ("ada", "RESOLVE", ACME_OUTAGE, 200, None),
        ("ada", "RECOVER", ERP_OUTAGE, 403, "only a platform user acts on it"),
        ("gus", "ACKNOWLEDGE", ACME_OUTAGE, 404, f"no such open outage: {ACME_OUTAGE}"),
        ("gus", "RESOLVE", ERP_OUTAGE, 403, "only a platform user acts on it"),
        ("alice", "RESOLVE", "outage:dependency:erp:9", 404, "no such open outage"),
        ("alice", "SILENCE", ERP_OUTAGE, 400, "an outage is not silenced"),
    ],
)
def test_an_outage_action_is_scoped_and_keyed_by_the_outage(
    user: str, action: str, target: str, status: int, error: str | None
) -> None:
    fleet = _outage_fleet()
    sent: list[AdminCommand] = []

    async def send(_settings: Settings, command: AdminCommand, _t: float) -> list[AuditEvent]:
        """The outage's decider answers, as the worker would."""
        sent.append(command)
        state = fleet.outages[command.connector_id]
        return list(decide_outage_command(state, command, fleet.policy).events)

    dashboard = dashboard_of(fleet.log, send)

    async def check(client: TestClient[Any, Any]) -> None:
        headers = as_user(user)
        response = await client.post(
            "/dashboard/api/actions",
            json={"action": action, "target": target},
            headers={**headers, CSRF_HEADER: await csrf_of(client, headers)},
        )
        answer = await response.json()
        assert response.status == status, answer
        if error is not None:
            assert error in answer["error"]
            assert sent == []
            return
        assert [(c.action.value, c.connector_id, c.incident_id, c.actor) for c in sent] == [
            (action, target.rpartition(":")[0], target, user)
        ]
        assert answer["verdict"] == "accepted", answer
        assert [e["actor"] for e in answer["events"]] == [user]

    asyncio.run(with_client(dashboard, check))
