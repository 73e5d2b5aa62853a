"""Rules of the core seen end to end through one real worker: heartbeats, flapping,
non-retryable failures, tenant notification (signed webhooks), notification failure and
escalation, silence, and the recovery executors (webhook, Kafka Connect KIP-745).

One worker (module scope) serves every test here; each test uses its own connectors. It
keeps two parsed states (`CR_STATES_CACHED`): each rule also proves the evicting cache."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agents.wire.partitioning import partition_of
from streams.models import AuditEvent, EventType, RecoveryMode
from tests.kafka.harness import Namespace, Worker, read_audit, wait_for, web_get
from tests.kafka.httpstub import HttpStub

pytestmark = pytest.mark.kafka

SECRET = "s3cret-for-acme"  # noqa: S105 - a test secret, checked to never leak


@pytest.fixture(scope="module")
def stub() -> Iterator[HttpStub]:
    server = HttpStub().start()
    server.delays["/slow"] = 8.0
    server.statuses.update(
        {"/broken-tenant": 503, "/connect/connectors/broken": 500, "/connect/": 202}
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def world(
    kafka: str, tmp_path_factory: pytest.TempPathFactory, stub: HttpStub
) -> Iterator[tuple[Namespace, Worker]]:
    tmp = tmp_path_factory.mktemp("behaviours")
    ns = Namespace(kafka, tmp)
    policy = tmp / "policy.yaml"
    policy.write_text(f"""
defaults:
  max_retries: 1
  attempt_timeout_s: 2
  heartbeat_timeout_s: 600
  backoff: {{base_s: 0.1, cap_s: 0.2}}
  flap_window: 7
connectors:
  HB-1: {{heartbeat_timeout_s: 2}}
  NEVER-PINGS: {{heartbeat_timeout_s: 2}}
  WEBHOOK-1: {{recovery_action: {{type: webhook, url: "{stub.url}/restart-hook"}}}}
  CONNECT-1: {{recovery_action: {{type: kafka_connect, url: "{stub.url}/connect",
                                  connector: "sap ar/source"}}}}
  CONNECT-BROKEN: {{recovery_action: {{type: kafka_connect, url: "{stub.url}/connect",
                                       connector: broken}}}}
  ESC-1: {{max_retries: 0}}
tenants:
  acme: {{webhook: "{stub.url}/acme", secret_env: ACME_SECRET}}
  globex: {{webhook: "{stub.url}/globex"}}
  broken: {{webhook: "{stub.url}/broken-tenant"}}
  slowco: {{webhook: "{stub.url}/slow"}}
platform_admin: {{webhook: "{stub.url}/platform"}}
escalation:
  - {{after_s: 3, target: {{webhook: "{stub.url}/oncall"}}}}
""")
    # Two parsed states cached: every rule here runs with states evicted and read back from
    # the table, their liveness set aside and restored (the other suites keep all parsed).
    env = {"ACME_SECRET": SECRET, "CR_STATES_CACHED": "2"}
    worker = Worker(ns, policy=policy, env=env).start()
    yield ns, worker
    worker.kill()


def events_of(ns: Namespace, connector: str) -> list[AuditEvent]:
    return [
        e
        for e in read_audit(ns.bootstrap, ns.topics.audit, timeout_s=1)
        if e.connector_id == connector
    ]


def wait_events(
    ns: Namespace,
    connector: str,
    done: Callable[[list[AuditEvent]], bool],
    what: str,
    timeout_s: float = 60,
) -> list[AuditEvent]:
    def poll() -> list[AuditEvent] | None:
        events = events_of(ns, connector)
        return events if done(events) else None

    return wait_for(poll, timeout_s, what, interval_s=0.3)


def has(kind: EventType, count: int = 1) -> Callable[[list[AuditEvent]], bool]:
    return lambda events: sum(e.type is kind for e in events) >= count


def publish(ns: Namespace, connector: str, status: str, *extra: str) -> None:
    result = ns.cli("publish", "--connector", connector, "--status", status, *extra)
    assert result.returncode == 0, result.stderr


def test_missed_heartbeat_and_a_silent_expected_connector(world: tuple[Namespace, Worker]) -> None:
    ns, _ = world
    publish(ns, "HB-1", "healthy")
    detected = wait_events(ns, "HB-1", has(EventType.FAILURE_DETECTED), "HB-1 heartbeat miss")
    assert detected[0].failure == "heartbeat_missed"
    never = wait_events(ns, "NEVER-PINGS", has(EventType.FAILURE_DETECTED), "silent connector")
    assert never[0].failure == "heartbeat_missed"


def test_flapping_is_one_episode_with_per_ping_alerts_suppressed(
    world: tuple[Namespace, Worker],
) -> None:
    ns, _ = world
    # A sentinel on the same partitions as FLAP-1, published last: once it is judged, every
    # FLAP-1 ping before it has been judged too (one partition, in order).
    sentinel = next(
        f"FLAP-SENTINEL-{i}"
        for i in range(1000)
        if partition_of(f"FLAP-SENTINEL-{i}".encode(), 4) == partition_of(b"FLAP-1", 4)
    )
    lines = [
        json.dumps(
            {
                "connector_id": "FLAP-1",
                "status": "healthy" if i % 2 else "unhealthy",
                "checked_at": 1_800_000_000_000 + i * 1000,
            }
        )
        for i in range(12)
    ]
    lines.append(json.dumps({"connector_id": sentinel, "status": "unhealthy"}))
    pings = ns.tmp / "flap.jsonl"
    pings.write_text("\n".join(lines))
    assert ns.cli("publish", "--file", str(pings)).returncode == 0
    wait_events(ns, sentinel, has(EventType.FAILURE_DETECTED), "the sentinel")
    events = events_of(ns, "FLAP-1")
    types = [e.type for e in events]
    assert types.count(EventType.FLAPPING_STARTED) == 1
    after = types[types.index(EventType.FLAPPING_STARTED) + 1 :]
    assert EventType.FAILURE_DETECTED not in after
    assert EventType.RECOVERY_COMPLETED not in after
    episode = {
        e.incident_id
        for e in events[types.index(EventType.FLAPPING_STARTED) :]
        if not e.type.value.startswith("notification.")  # late results of older episodes
    }
    assert len(episode) == 1


def test_non_retryable_failure_opens_an_incident_and_notifies(
    world: tuple[Namespace, Worker], stub: HttpStub
) -> None:
    ns, _ = world
    publish(ns, "AUTH-1", "unhealthy", "--failure", "auth", "--not-retryable")
    events = wait_events(ns, "AUTH-1", has(EventType.NOTIFICATION_SENT, 2), "incident notified")
    types = [e.type for e in events]
    assert types[:2] == [EventType.FAILURE_DETECTED, EventType.INCIDENT_OPENED]
    assert EventType.RECOVERY_STARTED not in types
    kinds = {r.json()["kind"] for r in stub.to("/platform") if r.json()["connector_id"] == "AUTH-1"}
    assert {"failure_detected", "incident_opened"} <= kinds


def test_tenant_webhook_is_signed_and_only_the_tenant_gets_it(
    world: tuple[Namespace, Worker], stub: HttpStub
) -> None:
    ns, _ = world
    publish(ns, "ACME-1", "unhealthy", "--tenant", "acme")
    wait_events(
        ns,
        "ACME-1",
        lambda ev: any(
            e.type is EventType.NOTIFICATION_SENT and e.attributes["target"] == "tenant:acme"
            for e in ev
        ),
        "the tenant notification",
    )
    delivered = [r for r in stub.to("/acme") if r.json()["connector_id"] == "ACME-1"]
    assert delivered
    for request in delivered:
        expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
        assert request.headers["X-Connector-Recovery-Signature"] == expected
        body: dict[str, Any] = request.json()
        assert body["tenant_id"] == "acme"
        assert body["links"]["status"].endswith("?tenant=acme")
    assert not [r for r in stub.to("/globex") if r.json()["connector_id"] == "ACME-1"]
    assert all(SECRET not in r.body.decode() for r in stub.received)


def test_failed_tenant_notification_escalates_to_the_platform_admin(
    world: tuple[Namespace, Worker],
) -> None:
    ns, _ = world
    publish(ns, "BROKEN-1", "unhealthy", "--tenant", "broken")
    events = wait_events(ns, "BROKEN-1", has(EventType.INCIDENT_ESCALATED), "the escalation")
    failed = [e for e in events if e.type is EventType.NOTIFICATION_FAILED]
    assert failed[0].attributes["target"] == "tenant:broken"
    assert "503" in failed[0].attributes["detail"]
    escalated = next(e for e in events if e.type is EventType.INCIDENT_ESCALATED)
    assert escalated.attributes["target"] == "platform_admin"
    assert escalated.attributes["reason"] == "tenant_notification_failed"


def test_unacknowledged_incident_escalates_and_ack_stops_it(
    world: tuple[Namespace, Worker], stub: HttpStub
) -> None:
    ns, _ = world
    publish(ns, "ESC-1", "unhealthy")
    events = wait_events(ns, "ESC-1", has(EventType.INCIDENT_ESCALATED), "the timed escalation")
    escalated = next(e for e in events if e.type is EventType.INCIDENT_ESCALATED)
    opened = next(e for e in events if e.type is EventType.INCIDENT_OPENED)
    assert escalated.attributes["target"] == "escalation:1"
    assert escalated.occurred_at - opened.occurred_at == 3000
    wait_for(
        lambda: [r for r in stub.to("/oncall") if r.json()["connector_id"] == "ESC-1"],
        30,
        "the on-call webhook",
    )


def test_silence_suppresses_notifications_but_not_evidence(
    world: tuple[Namespace, Worker], stub: HttpStub
) -> None:
    ns, _ = world
    publish(ns, "QUIET-1", "healthy", "--tenant", "globex")
    wait_for(
        lambda: (
            ns.cli(
                "silence",
                "QUIET-1",
                "--until",
                "2099-01-01T00:00:00Z",
                "--actor",
                "alice",
                "--reason",
                "maintenance",
            ).returncode
            == 0
        ),
        60,
        "the silence to be accepted",
        interval_s=1,
    )
    publish(ns, "QUIET-1", "unhealthy", "--tenant", "globex")
    events = wait_events(ns, "QUIET-1", has(EventType.NOTIFICATION_SUPPRESSED), "suppression")
    assert EventType.FAILURE_DETECTED in {e.type for e in events}
    assert not [r for r in stub.received if r.body and r.json().get("connector_id") == "QUIET-1"]


def test_webhook_executor_posts_the_request(
    world: tuple[Namespace, Worker], stub: HttpStub
) -> None:
    ns, _ = world
    publish(ns, "WEBHOOK-1", "unhealthy")
    events = wait_events(
        ns, "WEBHOOK-1", has(EventType.RECOVERY_ACTION_ACCEPTED), "the webhook action"
    )
    started = next(e for e in events if e.type is EventType.RECOVERY_STARTED)
    (request,) = [r for r in stub.to("/restart-hook") if r.json()["request_id"] == started.event_id]
    assert request.json()["mode"] == RecoveryMode.AUTO.value


def test_kafka_connect_executor_speaks_kip_745(
    world: tuple[Namespace, Worker], stub: HttpStub
) -> None:
    ns, _ = world
    publish(ns, "CONNECT-1", "unhealthy")
    wait_events(ns, "CONNECT-1", has(EventType.RECOVERY_ACTION_ACCEPTED), "the restart")
    paths = [r.path for r in stub.to("/connect/connectors/sap%20ar%2Fsource/")]
    assert (
        paths[0]
        == "/connect/connectors/sap%20ar%2Fsource/restart?includeTasks=true&onlyFailed=true"
    )
    publish(ns, "CONNECT-BROKEN", "unhealthy")
    events = wait_events(ns, "CONNECT-BROKEN", has(EventType.RECOVERY_FAILED), "a failed restart")
    failed = next(e for e in events if e.type is EventType.RECOVERY_FAILED)
    assert failed.attributes["reason"].startswith("action_failed: HTTP 500")


def test_a_hanging_webhook_delays_no_other_connector(world: tuple[Namespace, Worker]) -> None:
    ns, _ = world
    publish(ns, "SLOW-1", "unhealthy", "--tenant", "slowco")
    publish(ns, "FAST-1", "unhealthy", "--tenant", "acme")
    outcomes = (EventType.NOTIFICATION_SENT, EventType.NOTIFICATION_FAILED)

    def outcome(connector: str, target: str) -> AuditEvent | None:
        events = events_of(ns, connector)
        found = [e for e in events if e.type in outcomes and e.attributes["target"] == target]
        return found[0] if found else None

    fast = wait_for(lambda: outcome("FAST-1", "tenant:acme"), 30, "FAST-1's notification")
    slow = wait_for(lambda: outcome("SLOW-1", "tenant:slowco"), 90, "SLOW-1's outcome")

    # a read with a short timeout can come back short on a busy machine: wait for the events
    def first_event(connector: str) -> AuditEvent:
        found: list[AuditEvent] = wait_for(lambda: events_of(ns, connector) or None, 30, connector)
        return found[0]

    first = {connector: first_event(connector) for connector in ("FAST-1", "SLOW-1")}
    fast_ms = fast.occurred_at - first["FAST-1"].occurred_at
    slow_ms = slow.occurred_at - first["SLOW-1"].occurred_at
    print(f"notification outcome after: hanging endpoint {slow_ms} ms, other tenant {fast_ms} ms")
    assert fast.type is EventType.NOTIFICATION_SENT
    assert fast_ms < 3000
    # three attempts of 5 s each, with backoff between them; then it gives up and escalates
    assert slow.type is EventType.NOTIFICATION_FAILED
    assert "timed out" in slow.attributes["detail"]
    assert slow_ms >= 15000
    wait_events(ns, "SLOW-1", has(EventType.INCIDENT_ESCALATED), "the escalation")


def test_this_worker_reads_states_back_from_its_table(world: tuple[Namespace, Worker]) -> None:
    """The module's premise: its policy's six expected connectors alone overflow the two
    parsed states, so the rules here ran on states evicted and read back."""
    _, worker = world
    metrics = web_get(worker, "/metrics").decode()
    evicted = next(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("connector_states_evicted_total ")
    )
    assert evicted > 0
