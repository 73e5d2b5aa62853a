"""What the demo's screens say (rendered without Kafka): open incidents and outages in the
live view, refused admin commands explained, the closing screen's outages and commands; and
the simulated ERP database's outage, as the demo policy groups it."""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path

import pytest
from rich.console import Console

from agents.demo import run as demo
from agents.demo.simulate import FLEET, Simulation, outage_window
from agents.settings import Settings
from agents.testing.driver import T0
from streams.models import AuditEvent, EventType, NotificationResult
from streams.outages import decide_notification_result
from streams.policy import policy_from_yaml
from streams.projections import Episode, Projection
from streams.timefmt import iso_from_ms
from tests.core.test_outages import Fleet


def rendered(renderable: object) -> str:
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_the_live_view_lists_open_incidents() -> None:
    opened = time.time_ns() // 1_000_000 - 42_000
    status = {
        "connectors": [],
        "open_incidents": [
            {
                "incident_id": "SAP-AR:7",
                "connector_id": "SAP-AR",
                "tenant_id": "acme",
                "failure": "timeout",
                "opened_at": iso_from_ms(opened),
                "acknowledged": True,
                "acknowledged_by": "demo-admin",
            },
            {
                "incident_id": "SFDC-CRM:3",
                "connector_id": "SFDC-CRM",
                "tenant_id": None,
                "failure": "auth",
                "opened_at": iso_from_ms(opened),
                "acknowledged": False,
                "acknowledged_by": None,
            },
        ],
    }
    text = rendered(demo._view(status, "-", Simulation(Settings()), 10, []))
    rows = [line for line in text.splitlines() if "SAP-AR:7" in line or "SFDC-CRM:3" in line]
    assert len(rows) == 2, text
    assert all(word in rows[0] for word in ("SAP-AR", "acme", "demo-admin")), rows[0]
    assert any(f"{age}s" in rows[0] for age in range(42, 50)), rows[0]
    assert "_platform" in rows[1], rows[1]
    assert "nobody yet" in rows[1], rows[1]
    assert "open incidents: 2" in text


def test_the_live_view_says_when_nothing_fails() -> None:
    """Not two tables of headers only: a newcomer reads that all is well."""
    quiet = rendered(
        demo._view({"connectors": [], "open_incidents": []}, "-", Simulation(Settings()), 75, [])
    )
    assert "(none failing)" in quiet
    assert "(none open)" in quiet


def test_the_live_view_lists_open_outages() -> None:
    opened = time.time_ns() // 1_000_000 - 12_000
    status = {
        "connectors": [],
        "open_incidents": [],
        "open_outages": [
            {
                "outage_id": "outage:dependency:erp-db:1",
                "group": "dependency:erp-db",
                "tenant_id": None,
                "opened_at": iso_from_ms(opened),
                "connectors": 7,
            }
        ],
    }
    text = rendered(demo._view(status, "-", Simulation(Settings()), 30, []))
    (row,) = [line for line in text.splitlines() if "outage:dependency:erp-db:1" in line]
    assert "dependency:erp-db" in row.split("outage:dependency:erp-db:1", 1)[1], row
    assert " 7 " in row, row
    assert any(f"{age}s ago" in row for age in range(12, 20)), row
    assert "open outages: 1" in text
    quiet = rendered(
        demo._view({"connectors": [], "open_incidents": []}, "-", Simulation(Settings()), 5, [])
    )
    assert "open outages: 0" in quiet
    assert "paged once" not in quiet  # no table of headers only


def demo_policy_text() -> str:
    inbox = demo.Inbox()
    try:
        return demo._policy(inbox)
    finally:
        inbox.server.shutdown()


OTHER_FAULTS = {"SAP-AR", "SAP-AP", "SFDC-CRM", "HUBSPOT-CRM", "DYNAMICS-SCM"}


@pytest.mark.parametrize("seconds", [30.0, 45.0, 75.0, 300.0])
def test_the_erp_database_is_down_for_a_while_and_the_policy_groups_its_connectors(
    seconds: float,
) -> None:
    policy = policy_from_yaml(demo_policy_text(), source="demo")
    sim = Simulation(Settings(), duration_s=seconds)
    behind = [c for c in sim.connectors.values() if c.fault == "outage"]
    grouped = {c for c, _tenant in FLEET if policy.dependency_of(c) == "erp-db"}
    assert {c.connector_id for c in behind} == grouped
    assert 6 <= len(grouped) <= 7
    assert not grouped & OTHER_FAULTS
    assert {c.tenant_id for c in behind} == {"acme", "globex", "initech"}
    down, up = outage_window(seconds)
    assert seconds * 0.15 <= down  # once the other faults have shown
    assert up - down >= seconds / 4  # a while: long enough to see it on the live view
    assert seconds - up >= seconds / 3  # back well before the demo ends, to see it resolved
    for sim_connector in behind:
        assert sim_connector.status(down - 0.5, 0)[0]
        assert sim_connector.status(down + 0.5, 1) == (False, "timeout", True)
        assert sim_connector.status(up - 0.5, 2) == (False, "timeout", True)
        assert sim_connector.status(up + 0.5, 3)[0]


def test_the_closing_summary_shows_the_outage_and_the_pages_it_stood_for() -> None:
    fleet = Fleet.with_policy({"dependencies": {"erp-db": {"connectors": ["SAP-G*", "ERP-*"]}}})
    members = [("SAP-GL", "acme"), ("ERP-1", "globex"), ("ERP-2", "initech")]
    members += [(f"ERP-{i}", "acme") for i in range(3, 8)]
    for index, (connector, tenant) in enumerate(members):
        fleet.ping(connector, False, T0 + index * 100, tenant_id=tenant)
    fleet.ping("SAP-AR", False, T0, tenant_id="acme")  # another cause: no outage's
    key = "outage:dependency:erp-db"

    def deliver_pages(start: int) -> None:
        """Each page's outcome, escalations included, recorded on the outage's chain."""
        while start < len(fleet.pages):
            page = fleet.pages[start]
            start += 1
            result = NotificationResult(
                dedup_key=page.dedup_key,
                connector_id=key,
                incident_id=page.incident_id,
                target=page.target,
                level=page.level,
                delivered=page.target != "tenant:initech",  # its webhook is down
                detail=None,
                finished_at=T0 + 2_000,
            )
            decision = decide_notification_result(fleet.outages[key], result, fleet.policy)
            fleet.outages[key] = decision.state
            fleet.log.extend(decision.events)
            fleet.pages.extend(decision.commands)

    deliver_pages(0)
    opening_pages = len(fleet.pages)
    for connector, tenant in members:
        fleet.ping(connector, True, T0 + 30_000, tenant_id=tenant)
    deliver_pages(opening_pages)
    lines = demo._outage_lines(fleet.log, Projection().apply_all(fleet.log))
    assert lines[0] == "outages: 1 opened, 1 resolved, 0 open"
    assert lines[1].startswith(
        "  outage:dependency:erp-db:1: 8 connectors of acme, globex, initech failing for one"
        " cause (dependency:erp-db: ERP-1, ERP-2, ERP-3, ERP-4, ERP-5, ERP-6, ERP-7, SAP-GL),"
        " resolved after "
    )
    assert lines[1].endswith(" (8 recovered)")
    paged, held = lines[2].split("; ")
    # initech's pages of the outage failed and escalated: how many escalations the log
    # records is the outage's business (their outcomes share one dedup key); that they are
    # told apart from the pages for the outage itself is the summary's
    assert paged.startswith(
        "  the Platform Admin was paged once when it opened, not once per connector, and once"
        " when it was resolved, and "
    )
    assert paged.endswith(" because a tenant's notification of it failed"), paged
    assert held == (
        "16 pages of its connectors were held for it (notification.suppressed, reason outage)"
    )
    assert len(lines) == 3


def test_a_refused_admin_command_says_why() -> None:
    rejected = AuditEvent.model_validate(
        {
            "event_id": "e1",
            "type": EventType.COMMAND_REJECTED,
            "connector_id": "SAP-AR",
            "tenant_id": "acme",
            "sequence": 9,
            "occurred_at": 0,
            "prev_hash": "0" * 64,
            "hash": "1" * 64,
            "attributes": {"rejection": "SAP-AR is not failed"},
        }
    )
    verdict = demo._verdict([rejected])
    assert verdict == ("command.rejected: the worker refused it, because SAP-AR is not failed")
    # so the demo's admin resolves the incident itself, rather than leave it open
    assert demo._recovered_meanwhile([rejected])
    in_flight = rejected.model_copy(update={"attributes": {"rejection": "attempt 2 is in flight"}})
    assert not demo._recovered_meanwhile([in_flight])
    assert not demo._recovered_meanwhile([])


@pytest.mark.parametrize(
    ("env", "local_port", "expected_prefix", "stop"),
    [
        ({}, 9092, "CR_TOPIC_PREFIX=demo-1.", "stop it with: connector-recovery kafka down"),
        (
            {"KAFKA_PORT": "9100"},
            9100,
            "KAFKA_PORT=9100 CR_TOPIC_PREFIX=demo-1.",
            "stop it with: KAFKA_PORT=9100 connector-recovery kafka down",
        ),
        (
            {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"},
            None,
            "KAFKA_BOOTSTRAP_SERVERS=kafka:9092 CR_TOPIC_PREFIX=demo-1.",
            None,
        ),
    ],
)
def test_the_closing_screen_names_the_topics_and_the_broker(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    local_port: int | None,
    expected_prefix: str,
    stop: str | None,
) -> None:
    for name in ("KAFKA_PORT", "KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    lines = demo.next_steps("demo-1", local_port, Path("/state/demo-1"))
    commands = [line.strip() for line in lines if "connector-recovery " in line][:4]
    assert commands == [
        f"{expected_prefix} connector-recovery report --format html --out demo-report.html",
        f"{expected_prefix} connector-recovery verify",
        f"{expected_prefix} connector-recovery replay --connector SAP-AR",
        f"{expected_prefix} connector-recovery dashboard --policy /state/demo-1/policy.yaml"
        " --port 6070",
    ]
    assert "http://127.0.0.1:6070/dashboard/ (token: demo)" in lines[5]
    running = [line for line in lines if "still running" in line]
    if stop is None:
        assert not running  # not a local broker: nothing to say about it
    else:
        assert len(running) == 1
        assert running[0].endswith(stop)


def test_the_closing_screen_leaves_a_broker_started_elsewhere_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    lines = demo.next_steps("demo-1", 9092, Path("/state/demo-1"), ours=False)
    assert not [line for line in lines if "kafka down" in line]
    assert lines[-1].endswith(
        "not started from this copy of the project: stop it from where it was started"
    )


def open_incident(connector: str = demo.LEFT_FOR_YOU) -> Episode:
    return Episode(
        incident_id=f"{connector}:1",
        connector_id=connector,
        tenant_id="acme",
        failure="auth",
        detected_at=1,
        first_failing_at=1,
        opened_at=1,
    )


def test_with_keep_the_closing_screen_says_how_to_act_on_the_incident_left_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    lines = demo.act_on_it(open_incident(), "demo-1", None, 6391, keep=True)
    assert lines[0].startswith("Left open for you: incident SFDC-CRM:1: SFDC-CRM (tenant acme)")
    assert "http://127.0.0.1:6391/dashboard/ (token: demo): Acknowledge SFDC-CRM:1" in lines[1]
    prefix = "KAFKA_BOOTSTRAP_SERVERS=kafka:9092 CR_TOPIC_PREFIX=demo-1."
    assert [line.strip() for line in lines[2:5]] == [
        f"{prefix} connector-recovery ack SFDC-CRM:1 --actor demo-admin",
        f"{prefix} connector-recovery recover SFDC-CRM --actor demo-admin",
        "connector-recovery status --web-port 6391",
    ]
    assert lines[-1] == "The worker, the fleet and the admin page stay up until Ctrl-C."


def test_without_keep_the_closing_screen_names_the_incident_and_points_to_keep() -> None:
    lines = demo.act_on_it(open_incident(), "demo-1", 9092, 6391, keep=False)
    assert lines[0].startswith("Left open for you: incident SFDC-CRM:1")
    assert "run `connector-recovery demo --keep`" in lines[1]
    assert not [line for line in lines if "recover SFDC-CRM" in line]  # no worker to answer


def test_the_incident_left_open_is_found_in_the_log() -> None:
    from agents.testing.driver import Driver  # noqa: PLC0415 - the decider, without Kafka

    left = Driver(connector_id=demo.LEFT_FOR_YOU, tenant_id="acme")
    left.ping(True)
    left.ping(False, failure="auth", retryable=False)
    left.deliver_pending()
    episode = demo.left_open(left.events)
    assert episode is not None
    assert episode.connector_id == demo.LEFT_FOR_YOU
    assert episode.incident_open


def test_the_demo_serves_on_cr_web_port(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    monkeypatch.setenv("CR_WEB_PORT", str(free))
    assert demo.web_port() == free
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("CR_WEB_PORT", str(taken.getsockname()[1]))
        with pytest.raises(demo.DemoError, match="set CR_WEB_PORT to a free port"):
            demo.web_port()
    monkeypatch.delenv("CR_WEB_PORT")
    assert demo.web_port() > 0
