"""Step definitions for features/connector_recovery.feature (pytest-bdd)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_bdd import given, scenarios, then, when

from agents.wire.codec import registry
from streams.models import AuditEvent, EventType, RecoveryMode
from streams.verify import verify_events
from tests.kafka.harness import Namespace, Worker, read_records, wait_for_audit

pytestmark = pytest.mark.kafka

scenarios("features/connector_recovery.feature")

FAST_POLICY = """
defaults:
  max_retries: 2
  attempt_timeout_s: 1.5
  backoff: {base_s: 0.2, cap_s: 0.5}
admins: [alice]
"""


@pytest.fixture
def spec_worker(ns: Namespace, tmp_path: Path) -> Iterator[Worker]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(FAST_POLICY)
    worker = Worker(ns, policy=policy).start()
    yield worker
    worker.kill()


@pytest.fixture
def context() -> dict[str, Any]:
    return {}


def of_type(events: list[AuditEvent], kind: EventType) -> list[AuditEvent]:
    return [e for e in events if e.type is kind]


def wait_type(ns: Namespace, kind: EventType, what: str, count: int = 1) -> list[AuditEvent]:
    return wait_for_audit(ns, lambda ev: len(of_type(ev, kind)) >= count, 60, what)


@given("a connector fails")
def a_connector_fails(ns: Namespace, spec_worker: Worker, context: dict[str, Any]) -> None:
    assert spec_worker.process is not None
    published = ns.cli(
        "publish",
        "--connector",
        "SAP-AR",
        "--tenant",
        "acme",
        "--status",
        "unhealthy",
        "--failure",
        "timeout",
        "--position",
        "offset-1042",
    )
    assert published.returncode == 0, published.stderr
    events = wait_type(ns, EventType.FAILURE_DETECTED, "the failure to be detected")
    context["incident"] = of_type(events, EventType.FAILURE_DETECTED)[0].incident_id


@when("the retry policy executes")
def the_retry_policy_executes(ns: Namespace, context: dict[str, Any]) -> None:
    events = wait_type(ns, EventType.RECOVERY_STARTED, "an automatic attempt")
    started = of_type(events, EventType.RECOVERY_STARTED)[0]
    assert started.mode is RecoveryMode.AUTO
    assert started.incident_id == context["incident"]
    codec = registry().codec("RecoveryRequest")
    requests = [
        codec.decode(r.value)
        for r in read_records(ns.bootstrap, ns.topics.recovery_requests, 1, 30)
    ]
    assert requests[0]["request_id"] == started.event_id  # the command a runtime acts on


@then("the connector recovers")
def the_connector_recovers(ns: Namespace, context: dict[str, Any]) -> None:
    healthy = ns.cli(
        "publish",
        "--connector",
        "SAP-AR",
        "--tenant",
        "acme",
        "--status",
        "healthy",
        "--position",
        "offset-1042",
    )
    assert healthy.returncode == 0, healthy.stderr
    events = wait_type(ns, EventType.RECOVERY_COMPLETED, "the recovery")
    context["completed"] = of_type(events, EventType.RECOVERY_COMPLETED)[0]
    context["events"] = events


@then("a recovery receipt is recorded")
def a_recovery_receipt_is_recorded(context: dict[str, Any]) -> None:
    receipt = context["completed"].attributes
    assert receipt["connector_id"] == "SAP-AR"
    assert receipt["failure"] == "timeout"
    assert receipt["status"] == "recovered"
    assert int(receipt["retries"]) >= 1
    assert receipt["timestamp"].endswith("Z")
    assert receipt["position_at_failure"] == receipt["position_at_recovery"] == "offset-1042"
    assert context["completed"].incident_id == context["incident"]
    assert [f for f in verify_events(context["events"]) if not f.benign] == []


@given("retries are exhausted")
def retries_are_exhausted(ns: Namespace, context: dict[str, Any]) -> None:
    events = wait_type(ns, EventType.INCIDENT_OPENED, "retries to be exhausted")
    assert of_type(events, EventType.RETRIES_EXHAUSTED)
    automatic = [
        e for e in of_type(events, EventType.RECOVERY_STARTED) if e.mode is RecoveryMode.AUTO
    ]
    assert len(automatic) == 2
    assert of_type(events, EventType.INCIDENT_OPENED)[0].incident_id == context["incident"]


@when("the Platform Admin intervenes")
def the_platform_admin_intervenes(ns: Namespace, context: dict[str, Any]) -> None:
    acknowledged = ns.cli("ack", context["incident"], "--actor", "alice")
    assert acknowledged.returncode == 0, acknowledged.stdout + acknowledged.stderr
    recovered = ns.cli(
        "recover", "SAP-AR", "--actor", "alice", "--reason", "restarted the SAP gateway"
    )
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert "accepted: connector.recovery.started" in recovered.stdout
    refused = ns.cli("recover", "SAP-AR", "--actor", "mallory")
    assert refused.returncode == 1
    assert "not in the policy's admins" in refused.stdout


@then("the connector is recovered manually")
def the_connector_is_recovered_manually(ns: Namespace, context: dict[str, Any]) -> None:
    assert (
        ns.cli(
            "publish", "--connector", "SAP-AR", "--tenant", "acme", "--status", "healthy"
        ).returncode
        == 0
    )
    events = wait_type(ns, EventType.INCIDENT_RESOLVED, "the manual recovery")
    completed = of_type(events, EventType.RECOVERY_COMPLETED)[0]
    assert completed.mode is RecoveryMode.MANUAL
    assert completed.attributes["actor"] == "alice"
    context["events"] = events


@then("an incident is logged")
def an_incident_is_logged(context: dict[str, Any]) -> None:
    events: list[AuditEvent] = context["events"]
    (opened,) = of_type(events, EventType.INCIDENT_OPENED)
    (acknowledged,) = of_type(events, EventType.INCIDENT_ACKNOWLEDGED)
    (resolved,) = of_type(events, EventType.INCIDENT_RESOLVED)
    assert opened.incident_id == acknowledged.incident_id == resolved.incident_id
    assert acknowledged.actor == "alice"
    assert of_type(events, EventType.COMMAND_REJECTED)[0].actor == "mallory"
    assert [f for f in verify_events(events) if not f.benign] == []
