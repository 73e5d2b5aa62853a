"""R5: notification and recovery webhooks that hang, answer 500, or refuse connections.
Escalation happens within the policy's bound, and detection for other connectors is not
delayed (measured: detection latency of bystanders before and while the endpoints fail).

Full size: a fleet of 2,000 connectors pings throughout (a ping a second each), and the
worker starts on its backlog of 400,000 pings, drained before the first measurement: the
bystanders are detected amid the fleet's load, and none of the fleet is paged."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import pytest

from agents.broker.topics import ensure_topics
from agents.wire.codec import registry
from agents.wire.records import decode_audit
from streams.models import AuditEvent, EventType
from tests.faults.figures import BACKLOG_ROUNDS, FLEET_CONNECTORS, FULL, TIMEOUT, record
from tests.kafka.fleet import Fleet, produce_backlog
from tests.kafka.harness import (
    Namespace,
    Worker,
    false_pages,
    free_port,
    produce_raw,
    read_records,
    wait_for,
    wait_processed,
)
from tests.kafka.httpstub import HttpStub

pytestmark = [pytest.mark.faults, pytest.mark.kafka, TIMEOUT]

NOTIFY_BOUND_S = 3 * 5.0 + 5.0  # three attempts of 5 s, their backoff, and slack
RECOVERY_BOUND_S = 2 * 2.0 + 4.0  # two attempts of 2 s, their backoff, and slack


def policy(stub: HttpStub, refused: str) -> str:
    return f"""
defaults:
  failure_threshold: 1
  max_retries: 1
  attempt_timeout_s: 2
  heartbeat_timeout_s: 600
  backoff: {{base_s: 0.1, cap_s: 0.2}}
connectors:
  REC-HANG: {{recovery_action: {{type: webhook, url: "{stub.url}/rec-hang"}}}}
  REC-500: {{recovery_action: {{type: webhook, url: "{stub.url}/rec-500"}}}}
  REC-REFUSED: {{recovery_action: {{type: webhook, url: "{refused}/rec"}}}}
tenants:
  hang: {{webhook: "{stub.url}/hang"}}
  err: {{webhook: "{stub.url}/err"}}
  refused: {{webhook: "{refused}/tenant"}}
  ok: {{webhook: "{stub.url}/ok"}}
platform_admin: {{webhook: "{stub.url}/platform"}}
"""


def ping(connector: str, tenant: str, at: int) -> bytes:
    return (
        registry()
        .codec("HealthPing")
        .encode(
            {
                "connector_id": connector,
                "tenant_id": tenant,
                "status": "UNHEALTHY",
                "failure": "timeout",
                "retryable": True,
                "checked_at": at,
                "latency_ms": None,
                "message": None,
                "position": None,
            }
        )
    )


def audit(ns: Namespace) -> list[tuple[int, AuditEvent]]:
    """(record timestamp, event): the timestamp is when the worker wrote the event."""
    reg = registry()
    return [
        (r.timestamp, decode_audit(reg, r.value))
        for r in read_records(ns.bootstrap, ns.topics.audit, timeout_s=1)
    ]


def detection_latencies_ms(ns: Namespace, prefix: str, count: int) -> list[int]:
    for index in range(count):
        now = time.time_ns() // 1_000_000
        connector = f"{prefix}-{index:02d}"
        produce_raw(
            ns.bootstrap, ns.topics.health, [(connector.encode(), ping(connector, "ok", now))]
        )
        time.sleep(0.2)  # a steady trickle, not a burst

    def found() -> list[int] | None:
        latencies = [
            written - event.occurred_at
            for written, event in audit(ns)
            if event.type is EventType.FAILURE_DETECTED and event.connector_id.startswith(prefix)
        ]
        return latencies if len(latencies) >= count else None

    return wait_for(found, 60, f"{prefix} detections", interval_s=0.5)


def is_bystander(event: AuditEvent) -> bool:
    """An event of a connector whose every ping says it is down (detection latencies)."""
    return event.connector_id.startswith(("CALM-", "BUSY-"))


def seconds_between(
    events: list[tuple[int, AuditEvent]], connector: str, first: EventType, then: EventType
) -> float | None:
    mine = [e for _, e in events if e.connector_id == connector]
    start = next((e.occurred_at for e in mine if e.type is first), None)
    end = next((e.occurred_at for e in mine if e.type is then), None)
    return None if start is None or end is None else (end - start) / 1000


def test_dead_endpoints_escalate_in_bound_and_delay_no_detection(
    ns: Namespace, tmp_path: Path, http_stub: HttpStub
) -> None:
    refused = f"http://127.0.0.1:{free_port()}"  # nothing listens: refused
    http_stub.delays.update({"/hang": 30.0, "/rec-hang": 30.0})
    http_stub.statuses.update({"/err": 500, "/rec-500": 500})
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(policy(http_stub, refused))
    fleet, backlog = None, None
    if FULL:  # a fleet's history waiting, drained before anything is measured; the fleet
        # pings on meanwhile (healthy, their tenant has no webhook), 2,000 pings a second
        connectors = [f"FLEET-{i:04d}" for i in range(FLEET_CONNECTORS)]
        asyncio.run(ensure_topics(ns.settings()))
        backlog = produce_backlog(ns.bootstrap, ns.topics.health, connectors, BACKLOG_ROUNDS)
        fleet = Fleet(ns.bootstrap, ns.topics.health, connectors, interval_s=1.0).start()
    worker = Worker(ns, policy=policy_file).start(ready_timeout_s=180)
    try:
        if fleet:
            wait_processed(ns, timeout_s=600)
        before = detection_latencies_ms(ns, "CALM", 10)
        now = time.time_ns() // 1_000_000
        failing = [
            ("NOTE-HANG", "hang"), ("NOTE-500", "err"), ("NOTE-REFUSED", "refused"),
            ("REC-HANG", "ok"), ("REC-500", "ok"), ("REC-REFUSED", "ok"),
        ]  # fmt: skip
        produce_raw(
            ns.bootstrap,
            ns.topics.health,
            [(c.encode(), ping(c, tenant, now)) for c, tenant in failing],
        )
        during = detection_latencies_ms(ns, "BUSY", 20)

        def settled() -> list[tuple[int, AuditEvent]] | None:
            events = audit(ns)
            escalated = {
                e.connector_id for _, e in events if e.type is EventType.INCIDENT_ESCALATED
            }
            opened = {e.connector_id for _, e in events if e.type is EventType.INCIDENT_OPENED}
            notes, recs = {c for c, _ in failing[:3]}, {c for c, _ in failing[3:]}
            return events if notes <= escalated and recs <= opened else None

        events = wait_for(settled, 120, "every failing dependency to be escalated")
        notify = {
            c: seconds_between(events, c, EventType.FAILURE_DETECTED, EventType.INCIDENT_ESCALATED)
            for c, _ in failing[:3]
        }
        recovery = {
            c: seconds_between(events, c, EventType.FAILURE_DETECTED, EventType.INCIDENT_OPENED)
            for c, _ in failing[3:]
        }
        sick = {c for c, _ in failing} | {e.connector_id for _, e in events if is_bystander(e)}
        pages = false_pages(ns, sick)
        record(
            "R5-slow-dependencies",
            {
                "connectors": FLEET_CONNECTORS if fleet else 0,
                "backlog": backlog.pings if backlog else 0,
                "live_pings": fleet.sent if fleet else 0,
                **pages,
                "notification_escalated_after_s": notify,
                "recovery_incident_after_s": recovery,
                "bystander_detection_ms_before": {
                    "median": statistics.median(before),
                    "max": max(before),
                },
                "bystander_detection_ms_during": {
                    "median": statistics.median(during),
                    "max": max(during),
                },
            },
        )
        assert all(s is not None and s <= NOTIFY_BOUND_S for s in notify.values()), notify
        assert all(s is not None and s <= RECOVERY_BOUND_S for s in recovery.values()), recovery
        assert max(during) <= max(1000, 3 * max(before)), (before, during)
        failed = [
            e
            for _, e in events
            if e.type is EventType.NOTIFICATION_FAILED and e.connector_id.startswith("NOTE-")
        ]
        assert {e.connector_id for e in failed} == {"NOTE-HANG", "NOTE-500", "NOTE-REFUSED"}
        assert (pages["false_pages"], pages["false_notifications"]) == (0, 0), pages
    finally:
        if fleet:
            fleet.stop()
        worker.kill()
