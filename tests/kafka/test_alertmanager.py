"""Paging through a real Alertmanager (Debian's `prometheus-alertmanager`), end to end on
the broker: a connector fails past its retries -> its alert is in `/api/v2/alerts` with the
labels -> Alertmanager's grouped notification reaches a webhook receiver and an e-mail a real
SMTP server -> the admin recovers it -> the resolved notification arrives. Alertmanager
stopped -> the incident escalates; back -> the open alerts are re-posted; a restarted worker
re-posts them from the log. A tenant's Alertmanager never gets another tenant's connector."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.models import AuditEvent, EventType
from streams.timefmt import iso_from_ms
from tests.kafka.alertmanager import BINARY, PROMETHEUS, Alertmanager, Prometheus, SmtpSink, require
from tests.kafka.harness import Namespace, Worker, wait_for, wait_for_audit
from tests.kafka.httpstub import HttpStub

pytestmark = pytest.mark.kafka

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

POLICY = """
defaults:
  failure_threshold: 1
  max_retries: 0
  attempt_timeout_s: 1
  heartbeat_timeout_s: 600
  backoff: {{base_s: 0.1, cap_s: 0.2}}
admins: [alice]
platform_admin:
  type: alertmanager
  url: "{alertmanager}"
  resend_s: 2
  severity: page
  runbook_url: https://runbooks.example/connectors
tenants:
  acme: {{type: alertmanager, url: "{alertmanager}", resend_s: 2, severity: ticket}}
  globex: {{type: alertmanager, url: "{stub}/globex", resend_s: 2}}
escalation:
  - after_s: 600
    target: {{webhook: "{stub}/oncall"}}
"""


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def alertmanager(tmp_path: Path, http_stub: HttpStub, smtp: SmtpSink) -> Iterator[Alertmanager]:
    require(BINARY, "prometheus-alertmanager")
    running = Alertmanager(tmp_path / "alertmanager", f"{http_stub.url}/am", smtp.port).start()
    yield running
    running.stop()


def publish(ns: Namespace, connector: str, tenant: str, status: str) -> None:
    args = ["publish", "--connector", connector, "--tenant", tenant, "--status", status]
    if status == "unhealthy":
        args += ["--failure", "timeout"]
    published = ns.cli(*args)
    assert published.returncode == 0, published.stdout + published.stderr


def firing(alertmanager: Alertmanager, connector: str, alertname: str) -> dict[str, Any] | None:
    """The alert Alertmanager holds for a connector's incident, as the Platform Admin's
    target posted it (severity `page`)."""
    for alert in alertmanager.alerts(connector=connector, severity="page"):
        if alert["labels"]["alertname"] == alertname and alert["status"]["state"] == "active":
            return alert
    return None


def notified(stub: HttpStub, connector: str, status: str) -> dict[str, Any] | None:
    """Alertmanager's webhook notification with the connector's alert in that status."""
    for received in stub.to("/am"):
        body = received.json()
        for alert in body["alerts"]:
            if alert["labels"]["connector"] == connector and alert["status"] == status:
                return dict(body)
    return None


def of(events: list[AuditEvent], connector: str, kind: EventType) -> list[AuditEvent]:
    return [e for e in events if e.connector_id == connector and e.type is kind]


def test_incidents_page_through_alertmanager_to_a_webhook_and_email_and_resolve(
    ns: Namespace,
    http_stub: HttpStub,
    smtp: SmtpSink,
    alertmanager: Alertmanager,
    workers: list[Worker],
) -> None:
    policy = ns.tmp / "policy.yaml"
    policy.write_text(POLICY.format(alertmanager=alertmanager.url, stub=http_stub.url))
    worker = Worker(ns, policy=policy)
    workers.append(worker.start())

    publish(ns, "ACME-1", "acme", "unhealthy")
    publish(ns, "GLOBEX-1", "globex", "unhealthy")
    events = wait_for_audit(
        ns,
        lambda es: bool(of(es, "ACME-1", EventType.INCIDENT_OPENED)),
        60,
        "ACME-1's retries to be spent",
    )
    incident = of(events, "ACME-1", EventType.INCIDENT_OPENED)[0].incident_id
    detected = of(events, "ACME-1", EventType.FAILURE_DETECTED)[0]

    alert = wait_for(
        lambda: firing(alertmanager, "ACME-1", "ConnectorIncident"), 30, "ACME-1's alert"
    )
    assert alert["labels"] == {
        "alertname": "ConnectorIncident",
        "connector": "ACME-1",
        "tenant": "acme",
        "incident_id": incident,
        "failure": "timeout",
        "severity": "page",
    }
    assert alert["annotations"]["runbook_url"] == "https://runbooks.example/connectors"
    assert "/dashboard/timeline?id=ACME-1" in alert["annotations"]["dashboard"]
    assert alert["startsAt"].startswith(iso_from_ms(detected.occurred_at)[:19])  # detected
    # The tenant's own target (severity `ticket`) holds acme's connectors and no others.
    tenant_alerts = alertmanager.alerts(severity="ticket")
    assert {a["labels"]["connector"] for a in tenant_alerts} == {"ACME-1"}

    grouped = wait_for(
        lambda: notified(http_stub, "ACME-1", "firing"), 30, "Alertmanager's webhook"
    )
    assert grouped["groupLabels"] == {"tenant": "acme"}
    mail = wait_for(
        lambda: next((m for m in smtp.mails() if "ACME-1" in m.text), None), 30, "the e-mail"
    )
    assert "acme" in mail.text
    assert mail.recipients == ["oncall@example.test"]

    recovered = ns.cli("recover", "ACME-1", "--actor", "alice", "--reason", "restarted it")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    publish(ns, "ACME-1", "acme", "healthy")
    resolved = wait_for(
        lambda: notified(http_stub, "ACME-1", "resolved"), 30, "the resolved notification"
    )
    assert resolved["groupLabels"] == {"tenant": "acme"}
    wait_for(
        lambda: any("ACME-1" in m.text and "RESOLVED" in m.text for m in smtp.mails()),
        30,
        "the resolved e-mail",
    )

    # Alertmanager down: the notification fails after its retries and the incident
    # escalates, as a failed webhook's does.
    alertmanager.stop()
    publish(ns, "ACME-2", "acme", "unhealthy")
    events = wait_for_audit(
        ns,
        lambda es: bool(of(es, "ACME-2", EventType.INCIDENT_ESCALATED)),
        60,
        "ACME-2's incident to escalate",
    )
    assert of(events, "ACME-2", EventType.NOTIFICATION_FAILED)
    wait_for(
        lambda: any(r.json()["connector_id"] == "ACME-2" for r in http_stub.to("/oncall")),
        30,
        "the escalation step's webhook",
    )
    # Back (empty: its alerts were in memory): the open alerts are re-posted.
    alertmanager.start()
    wait_for(
        lambda: firing(alertmanager, "ACME-2", "ConnectorIncident"),
        30,
        "ACME-2's alert re-posted",
    )
    assert firing(alertmanager, "ACME-1", "ConnectorIncident") is None  # resolved stays so

    # A restarted worker (and an emptied Alertmanager) re-posts them from the log.
    worker.stop()
    alertmanager.stop()
    alertmanager.start()
    assert alertmanager.alerts() == []
    workers.append(worker.start())
    wait_for(
        lambda: firing(alertmanager, "ACME-2", "ConnectorIncident"),
        60,
        "ACME-2's alert re-posted after the worker's restart",
    )
    assert firing(alertmanager, "ACME-1", "ConnectorIncident") is None

    # Tenant isolation: globex's Alertmanager got globex's connectors only.
    globex = [a for r in http_stub.to("/globex") for a in r.json()]
    assert globex
    assert {a["labels"]["connector"] for a in globex} == {"GLOBEX-1"}
    assert {a["labels"]["tenant"] for a in globex} == {"globex"}


def test_a_failing_fleet_fires_the_documented_rule_in_a_real_prometheus(
    ns: Namespace, http_stub: HttpStub, alertmanager: Alertmanager, workers: list[Worker]
) -> None:
    """deploy/prometheus/alerts.yml loaded in Debian's Prometheus, scraping a worker's
    /metrics: open incidents fire ConnectorRetriesExhausted for their tenant, and Prometheus
    hands it to Alertmanager, which notifies the receiver."""
    require(PROMETHEUS, "prometheus")
    policy = ns.tmp / "policy.yaml"
    policy.write_text(
        "defaults: {max_retries: 0, attempt_timeout_s: 1, heartbeat_timeout_s: 600}\n"
    )
    worker = Worker(ns, policy=policy)
    workers.append(worker.start())
    prometheus = Prometheus(
        ns.tmp / "prometheus",
        f"127.0.0.1:{worker.web_port}",
        DEPLOY / "prometheus" / "alerts.yml",
        f"127.0.0.1:{alertmanager.port}",
    ).start()
    try:
        for index in range(3):
            publish(ns, f"PROM-{index}", "acme", "unhealthy")

        def fired() -> dict[str, Any] | None:
            return next(
                (
                    a
                    for a in prometheus.alerts()
                    if a["labels"]["alertname"] == "ConnectorRetriesExhausted"
                    and a["state"] == "firing"
                    and float(a["value"]) == 3  # every incident open
                ),
                None,
            )

        rule = wait_for(fired, 60, "ConnectorRetriesExhausted to fire in Prometheus")
        assert rule["labels"]["tenant"] == "acme"
        assert rule["labels"]["severity"] == "critical"
        assert "3 incident(s) need a Platform Admin" in rule["annotations"]["summary"]

        def handed_on() -> bool:
            return any(
                alert["labels"]["alertname"] == "ConnectorRetriesExhausted"
                for received in http_stub.to("/am")
                for alert in received.json()["alerts"]
            )

        wait_for(handed_on, 30, "Alertmanager to notify the rule's alert")
    finally:
        prometheus.stop()
