"""Outages on a real broker (issue 22, docs/outages.md): 300 connectors behind one
dependency fail within 5 s and come back: one outage, every episode linked to it, resolved
when the last recovers, the log equal to a reference fold, replay showing the outage; two
unrelated failures in the same minute open none."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from agents import admin
from agents.broker.topics import ensure_topics
from agents.policyfile import load_policy
from agents.wire.codec import registry
from streams.evidence import OutageJoined, OutageOpened, OutageResolved, read
from streams.models import AdminAction, AuditEvent, EventType, NotificationRequest, RecoveryMode
from tests.kafka.harness import (
    Namespace,
    Worker,
    compare_with_reference,
    read_audit,
    read_records,
    wait_caught_up,
    wait_for_audit,
)

pytestmark = pytest.mark.kafka

ERP = [f"ERP-{index:03d}" for index in range(300)]
POLICY = """
dependencies:
  sap-prod: {connectors: ["ERP-*"]}
defaults:
  heartbeat_timeout_s: 600
  max_retries: 1
  attempt_timeout_s: 2
  backoff: {base_s: 0.1, cap_s: 0.2}
"""
OUTAGE = "outage:dependency:sap-prod"
OUTAGE_TYPES = {EventType.OUTAGE_OPENED, EventType.OUTAGE_JOINED, EventType.OUTAGE_RESOLVED}


async def publish(
    bootstrap: str, topic: str, connectors: list[str], *, healthy: bool, failure: str = "timeout"
) -> None:
    codec = registry().codec("HealthPing")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all")
    await producer.start()
    try:
        for connector in connectors:
            record = {
                "connector_id": connector,
                "tenant_id": "globex" if connector.startswith(("GLX", "CRM")) else "acme",
                "status": "HEALTHY" if healthy else "UNHEALTHY",
                "failure": None if healthy else failure,
                "retryable": True,
                "checked_at": time.time_ns() // 1_000_000,
                "latency_ms": None,
                "message": None,
                "position": None,
                "dependency": None,
            }
            await producer.send(topic, key=connector.encode(), value=codec.encode(record))
        await producer.flush()
    finally:
        await producer.stop()


def of_type(events: list[AuditEvent], kind: EventType) -> list[AuditEvent]:
    return [e for e in events if e.type is kind]


def test_300_connectors_behind_one_dependency_are_one_outage(
    ns: Namespace, tmp_path: Path, workers: list[Worker]
) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY)
    asyncio.run(ensure_topics(ns.settings()))
    workers.append(Worker(ns, policy=policy_file).start())
    health = ns.topics.health

    began = time.monotonic()
    asyncio.run(publish(ns.bootstrap, health, ERP, healthy=False))
    # two unrelated failures in the same minute: another tenant, two failure kinds
    asyncio.run(publish(ns.bootstrap, health, ["CRM-1"], healthy=False, failure="auth"))
    asyncio.run(publish(ns.bootstrap, health, ["CRM-2"], healthy=False, failure="http_503"))
    assert time.monotonic() - began < 5, "the failures must fall within 5 s"

    def linked(events: list[AuditEvent]) -> bool:
        return sum(1 for e in events if e.type in OUTAGE_TYPES) >= 300 - 4

    events = wait_for_audit(ns, linked, 120, "300 connectors in the outage")
    asyncio.run(publish(ns.bootstrap, health, ERP, healthy=True))
    events = wait_for_audit(
        ns, lambda ev: bool(of_type(ev, EventType.OUTAGE_RESOLVED)), 120, "outage.resolved"
    )
    wait_caught_up(ns)

    (opened,) = of_type(events, EventType.OUTAGE_OPENED)
    assert opened.connector_id == OUTAGE
    first = read(OutageOpened, opened.attributes)
    members = list(first.incidents) + [
        read(OutageJoined, e.attributes).member_incident
        for e in of_type(events, EventType.OUTAGE_JOINED)
    ]
    detections = {
        e.incident_id or "?"
        for e in of_type(events, EventType.FAILURE_DETECTED)
        if e.connector_id in ERP
    }
    assert sorted(members) == sorted(detections)  # 300 episodes, each linked once
    assert len(members) == 300
    # ... and each member's own chain says so: one connector.outage.linked per episode
    links = {
        (e.incident_id, e.attributes["outage_id"]) for e in of_type(events, EventType.OUTAGE_LINKED)
    }
    assert links == {(incident, opened.event_id) for incident in detections}
    (resolved,) = of_type(events, EventType.OUTAGE_RESOLVED)
    view = read(OutageResolved, resolved.attributes)
    assert (view.episodes, view.recovered, view.left) == (300, 300, 0)
    outage_events = [e for e in events if e.connector_id == OUTAGE and e.type in OUTAGE_TYPES]
    # opened (with the first 5), 295 joined, resolved (its pages' outcomes between them)
    assert len(outage_events) == 297
    assert [e.type for e in outage_events[1:-1]] == [EventType.OUTAGE_JOINED] * 295
    assert not any(e.connector_id.startswith("outage:tenant") for e in events)

    figures = compare_with_reference(ns, load_policy(policy_file))
    assert (figures["lost"], figures["conflicting_duplicates"], figures["extra"]) == (0, 0, 0), (
        figures
    )

    reported = ns.cli("report", "--format", "json")
    assert reported.returncode == 0, reported.stderr
    outages = json.loads(reported.stdout)["outages"]
    assert (outages["count"], outages["open"]) == (1, 0)
    (listed,) = outages["outages"]
    assert len(listed["connectors"]) == 300
    assert listed["mttr_seconds"] == (resolved.occurred_at - opened.occurred_at) / 1000
    replayed = ns.cli("replay")
    assert "outages 1, open 0" in replayed.stdout, replayed.stdout


def distinct(events: list[AuditEvent], kind: EventType) -> set[tuple[str, int]]:
    """(chain, sequence) of the events of `kind`: a re-sent copy is the same event."""
    return {(e.connector_id, e.sequence) for e in events if e.type is kind}


def test_an_outage_survives_worker_sigkills(
    ns: Namespace, tmp_path: Path, workers: list[Worker]
) -> None:
    """Killed while the outage forms, and again while its members recover (the second
    time with its local store lost: state comes back from the changelog)."""
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY)
    asyncio.run(ensure_topics(ns.settings()))
    worker = Worker(ns, policy=policy_file).start()
    workers.append(worker)
    health = ns.topics.health

    asyncio.run(publish(ns.bootstrap, health, ERP, healthy=False))
    wait_for_audit(ns, lambda ev: len(ev) > 0, 60, "the first detections")
    worker.kill()
    worker.start(ready_timeout_s=120)
    wait_for_audit(
        ns, lambda ev: len(distinct(ev, EventType.OUTAGE_JOINED)) == 295, 120, "every member"
    )
    asyncio.run(publish(ns.bootstrap, health, ERP, healthy=True))
    wait_for_audit(
        ns,
        lambda ev: bool(distinct(ev, EventType.RECOVERY_COMPLETED)),
        60,
        "the first recoveries",
    )
    worker.kill()
    shutil.rmtree(worker.data_dir, ignore_errors=True)
    worker.start(ready_timeout_s=180)
    events = wait_for_audit(
        ns, lambda ev: bool(distinct(ev, EventType.OUTAGE_RESOLVED)), 120, "outage.resolved"
    )
    wait_caught_up(ns)
    events = read_audit(ns.bootstrap, ns.topics.audit, timeout_s=5)

    assert len(distinct(events, EventType.OUTAGE_OPENED)) == 1  # nothing opened twice
    assert len(distinct(events, EventType.OUTAGE_RESOLVED)) == 1
    assert len(distinct(events, EventType.RECOVERY_COMPLETED)) == 300
    figures = compare_with_reference(ns, load_policy(policy_file))
    assert (figures["lost"], figures["conflicting_duplicates"], figures["extra"]) == (0, 0, 0), (
        figures
    )


PAGING_POLICY = """
dependencies:
  sap-prod: {connectors: ["ERP-*", "GLX-*"]}
outages:
  group_wait_s: 30
defaults:
  heartbeat_timeout_s: 600
  max_retries: 1
  attempt_timeout_s: 2
  backoff: {base_s: 0.1, cap_s: 0.2}
"""


def read_notifications(ns: Namespace) -> list[NotificationRequest]:
    codec = registry().codec("NotificationRequest")
    return [
        NotificationRequest.model_validate(codec.decode(record.value))
        for record in read_records(ns.bootstrap, ns.topics.notifications, timeout_s=5)
    ]


def test_an_outage_pages_once_and_its_members_page_nobody(
    ns: Namespace, tmp_path: Path, workers: list[Worker]
) -> None:
    """60 connectors of one dependency, of two tenants, fail within a few seconds: one
    outage; one Platform Admin page and one notification per tenant when it opens, one
    each when it is resolved; no page of any member of its own (failure, recovery, the
    probe's incident), each suppression on the member's chain with its reason."""
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(PAGING_POLICY)
    asyncio.run(ensure_topics(ns.settings()))
    workers.append(Worker(ns, policy=policy_file).start())
    health = ns.topics.health
    members = [f"ERP-{i:02d}" for i in range(30)] + [f"GLX-{i:02d}" for i in range(30)]

    began = time.monotonic()
    asyncio.run(publish(ns.bootstrap, health, members, healthy=False))
    assert time.monotonic() - began < 5, "the failures must fall within 5 s"

    def every_member_linked_and_the_probe_retried_out(events: list[AuditEvent]) -> bool:
        linked = {e.connector_id for e in of_type(events, EventType.OUTAGE_LINKED)}
        return linked == set(members) and bool(of_type(events, EventType.INCIDENT_OPENED))

    wait_for_audit(ns, every_member_linked_and_the_probe_retried_out, 120, "every member linked")
    asyncio.run(publish(ns.bootstrap, health, members, healthy=True))

    def closed_and_told(events: list[AuditEvent]) -> bool:
        outage_outcomes = [
            e for e in of_type(events, EventType.NOTIFICATION_SENT) if e.connector_id == OUTAGE
        ]
        return bool(of_type(events, EventType.OUTAGE_RESOLVED)) and len(outage_outcomes) >= 6

    events = wait_for_audit(ns, closed_and_told, 120, "outage.resolved and its notifications")
    wait_caught_up(ns)
    events = read_audit(ns.bootstrap, ns.topics.audit, timeout_s=5)

    assert len(distinct(events, EventType.OUTAGE_OPENED)) == 1
    pages = {p.dedup_key: p for p in read_notifications(ns)}.values()  # a re-send: one page
    outage_id = f"{OUTAGE}:1"
    assert sorted((p.notification_kind.value, p.target) for p in pages) == [
        ("outage_opened", "platform_admin"),
        ("outage_opened", "tenant:acme"),
        ("outage_opened", "tenant:globex"),
        ("outage_resolved", "platform_admin"),
        ("outage_resolved", "tenant:acme"),
        ("outage_resolved", "tenant:globex"),
    ]
    assert {(p.connector_id, p.incident_id) for p in pages} == {(OUTAGE, outage_id)}
    for member in members:
        own = [e for e in events if e.connector_id == member]
        suppressed = {
            e.attributes["notification_kind"]
            for e in own
            if e.type is EventType.NOTIFICATION_SUPPRESSED and e.attributes["reason"] == "outage"
        }
        assert {"failure_detected", "recovered"} <= suppressed, member
        if any(e.type is EventType.INCIDENT_OPENED for e in own):  # the probe, retried out
            assert "incident_opened" in suppressed, member
        assert all(e.attributes.get("outage_id", outage_id) == outage_id for e in own)
    figures = compare_with_reference(ns, load_policy(policy_file))
    assert (figures["lost"], figures["conflicting_duplicates"], figures["extra"]) == (0, 0, 0), (
        figures
    )


def test_a_lone_grouped_failure_is_paged_after_the_group_wait(
    ns: Namespace, tmp_path: Path, workers: list[Worker]
) -> None:
    """No outage links it: the clock fires its `notify_at`, and its own page goes out."""
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(PAGING_POLICY.replace("group_wait_s: 30", "group_wait_s: 2"))
    asyncio.run(ensure_topics(ns.settings()))
    workers.append(Worker(ns, policy=policy_file).start())

    began = time.monotonic()
    asyncio.run(publish(ns.bootstrap, ns.topics.health, ["ERP-LONE"], healthy=False))

    def paged(events: list[AuditEvent]) -> bool:
        return any(
            e.type is EventType.NOTIFICATION_SENT and e.connector_id == "ERP-LONE" for e in events
        )

    events = wait_for_audit(ns, paged, 60, "the held page delivered")
    assert time.monotonic() - began >= 2  # not before the group wait
    (detected,) = of_type(events, EventType.FAILURE_DETECTED)
    (released,) = of_type(events, EventType.NOTIFICATION_RELEASED)
    assert released.occurred_at - detected.occurred_at >= 2_000
    first = [
        (p.notification_kind.value, p.target, p.cause_event_id)
        for p in read_notifications(ns)
        if p.connector_id == "ERP-LONE" and p.notification_kind.value == "failure_detected"
    ]
    assert sorted(set(first)) == [
        ("failure_detected", "platform_admin", released.event_id),
        ("failure_detected", "tenant:acme", released.event_id),
    ]
    assert of_type(events, EventType.OUTAGE_OPENED) == []


BREAKER_POLICY = """
dependencies:
  sap-prod: {connectors: ["ERP-*"]}
outages:
  release_per_s: 10
defaults:
  heartbeat_timeout_s: 600
  max_retries: 3
  attempt_timeout_s: 1
  backoff: {base_s: 1, cap_s: 2}
"""


def test_an_outage_holds_restarts_but_its_probe_and_releases_them_paced(
    ns: Namespace, tmp_path: Path, workers: list[Worker]
) -> None:
    """50 connectors of one dependency fail: once linked, none but the probe starts a
    restart while the dependency is down; when one recovers, the others are released at
    most `release_per_s` (10) per second, each restarted at its release."""
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(BREAKER_POLICY)
    asyncio.run(ensure_topics(ns.settings()))
    workers.append(Worker(ns, policy=policy_file).start())
    health = ns.topics.health
    members = [f"ERP-{i:02d}" for i in range(50)]
    asyncio.run(publish(ns.bootstrap, health, members, healthy=False))

    def probe_retried_out(events: list[AuditEvent]) -> bool:
        linked = {e.connector_id for e in of_type(events, EventType.OUTAGE_LINKED)}
        return linked == set(members) and bool(of_type(events, EventType.RETRIES_EXHAUSTED))

    events = wait_for_audit(ns, probe_retried_out, 120, "the probe's retries used up")
    links = {e.connector_id: e for e in of_type(events, EventType.OUTAGE_LINKED)}
    (probe,) = [c for c, e in links.items() if e.attributes.get("held") != "true"]
    (exhausted,) = of_type(events, EventType.RETRIES_EXHAUSTED)
    assert exhausted.connector_id == probe
    restarts = of_type(events, EventType.RECOVERY_STARTED)
    assert len([e for e in restarts if e.connector_id == probe]) == 3
    # the others: none started once linked (one may have begun before its link)
    assert [
        e.connector_id
        for e in restarts
        if e.connector_id != probe and e.sequence > links[e.connector_id].sequence
    ] == []

    answering = next(c for c in members if c != probe)
    asyncio.run(publish(ns.bootstrap, health, [answering], healthy=True))
    held = set(members) - {probe, answering}

    def all_released_and_restarted(events: list[AuditEvent]) -> bool:
        released = {e.connector_id for e in of_type(events, EventType.OUTAGE_RELEASED)}
        after = {
            e.connector_id
            for e in of_type(events, EventType.RECOVERY_STARTED)
            if e.connector_id in held and e.sequence > links[e.connector_id].sequence
        }
        return released == after == held

    events = wait_for_audit(ns, all_released_and_restarted, 120, "every held member released")
    released_at = sorted(e.occurred_at for e in of_type(events, EventType.OUTAGE_RELEASED))
    # each one's first restart since its link (later ones follow its own backoff, as
    # they would without an outage: here the connectors stay down, so they fail)
    first_restart: dict[str, int] = {}
    for e in of_type(events, EventType.RECOVERY_STARTED):
        if e.connector_id in held and e.sequence > links[e.connector_id].sequence:
            first_restart.setdefault(e.connector_id, e.occurred_at)
    restarted_at = sorted(first_restart.values())
    assert restarted_at == released_at
    for instants in (released_at, restarted_at):
        busiest = max(sum(1 for t in instants if start <= t < start + 1_000) for start in instants)
        assert busiest <= 10, instants
    assert released_at[-1] - released_at[0] >= (len(held) - 1) * 100

    asyncio.run(publish(ns.bootstrap, health, members, healthy=True))
    wait_for_audit(
        ns, lambda ev: bool(of_type(ev, EventType.OUTAGE_RESOLVED)), 60, "outage.resolved"
    )
    wait_caught_up(ns)
    figures = compare_with_reference(ns, load_policy(policy_file))
    assert (figures["lost"], figures["conflicting_duplicates"], figures["extra"]) == (0, 0, 0), (
        figures
    )


ADMIN_POLICY = """
dependencies:
  sap-prod: {connectors: ["ERP-*"]}
defaults:
  heartbeat_timeout_s: 600
  max_retries: 3
  attempt_timeout_s: 5
  backoff: {base_s: 120, cap_s: 120}
"""


def test_an_admin_acks_recovers_and_resolves_a_whole_outage(
    ns: Namespace, tmp_path: Path, workers: list[Worker]
) -> None:
    """`ack`, `recover`, `resolve` of an outage id through the broker, as the CLI sends
    them: answered on the outage's chain; `recover` a manual attempt on each member's."""
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(ADMIN_POLICY)
    asyncio.run(ensure_topics(ns.settings()))
    workers.append(Worker(ns, policy=policy_file).start())
    members = ERP[:5]
    asyncio.run(publish(ns.bootstrap, ns.topics.health, members, healthy=False))

    def opened(events: list[AuditEvent]) -> bool:
        return bool(of_type(events, EventType.OUTAGE_OPENED))

    wait_for_audit(ns, opened, 60, "the outage opened")
    outage_id = f"{OUTAGE}:1"

    def send(action: AdminAction) -> list[AuditEvent]:
        command = admin.build_command(action, outage_id, "bob")
        return asyncio.run(admin.send_and_wait(ns.settings(), command, 30))

    (acked,) = send(AdminAction.ACKNOWLEDGE)
    assert (acked.type, acked.connector_id, acked.actor) == (
        EventType.OUTAGE_ACKNOWLEDGED,
        OUTAGE,
        "bob",
    )
    (requested,) = send(AdminAction.RECOVER)
    assert requested.type is EventType.OUTAGE_RECOVERY_REQUESTED

    def every_member_started(events: list[AuditEvent]) -> bool:
        manual = {
            e.connector_id
            for e in of_type(events, EventType.RECOVERY_STARTED)
            if e.mode is RecoveryMode.MANUAL and e.actor == "bob"
        }
        return manual == set(members)

    wait_for_audit(ns, every_member_started, 60, "a manual attempt of each member")
    (resolved,) = send(AdminAction.RESOLVE)
    assert (resolved.type, resolved.actor) == (EventType.OUTAGE_RESOLVED, "bob")
    assert resolved.attributes["resolution"] == "manual"
    (again,) = send(AdminAction.ACKNOWLEDGE)
    assert again.type is EventType.COMMAND_REJECTED
    assert "is not open" in admin.rejection(again)
