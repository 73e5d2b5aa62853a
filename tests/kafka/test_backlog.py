"""A worker draining a backlog must not page for connectors that keep pinging.

While the decider is behind, wall-clock ticks find heartbeat deadlines computed from old
pings, whose newer pings sit unread in the backlog; a tick must wait for them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from agents.broker.topics import ensure_topics
from agents.policyfile import load_policy
from agents.wire.codec import registry
from streams.models import EventType
from tests.kafka.fleet import Fleet
from tests.kafka.harness import (
    Namespace,
    Worker,
    compare_with_reference,
    fleet_policy,
    read_audit,
    wait_caught_up,
    wait_for,
)

pytestmark = pytest.mark.kafka

HEARTBEAT_S = 3
CONNECTORS = [f"ERP-{i:02d}" for i in range(40)]
BACKLOG_ROUNDS = 500  # 20,000 pings: several heartbeat timeouts of work for one worker


async def produce_backlog(bootstrap: str, topic: str, rounds: int) -> None:
    """Healthy pings of the fleet, each round stamped when it is produced: the history of
    a fleet whose worker was away, up to the moment the live fleet takes over."""
    codec = registry().codec("HealthPing")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all")
    await producer.start()
    try:
        for _ in range(rounds):
            checked_at = time.time_ns() // 1_000_000
            for connector in CONNECTORS:
                record = {
                    "connector_id": connector,
                    "tenant_id": "acme",
                    "retryable": True,
                    "status": "HEALTHY",
                    "failure": None,
                    "checked_at": checked_at,
                    "latency_ms": None,
                    "message": None,
                    "position": None,
                }
                await producer.send(topic, key=connector.encode(), value=codec.encode(record))
        await producer.flush()
    finally:
        await producer.stop()


def test_a_worker_behind_on_its_inputs_does_not_page_for_a_pinging_fleet(
    ns: Namespace, tmp_path: Path, workers: list[Worker]
) -> None:
    policy_file = fleet_policy(tmp_path, heartbeat_s=HEARTBEAT_S)
    asyncio.run(ensure_topics(ns.settings()))
    asyncio.run(produce_backlog(ns.bootstrap, ns.topics.health, BACKLOG_ROUNDS))
    fleet = Fleet(ns.bootstrap, ns.topics.health, CONNECTORS, interval_s=1.0).start()
    began = time.monotonic()
    worker = Worker(ns, policy=policy_file).start(ready_timeout_s=120)
    workers.append(worker)
    try:
        wait_caught_up(ns, timeout_s=300)
        drained_s = time.monotonic() - began
        # Keep pinging a few heartbeat timeouts past the drain: ticks still in flight land.
        rounds = fleet.rounds
        wait_for(lambda: fleet.rounds >= rounds + 2 * HEARTBEAT_S, 30, "more fleet rounds")
        wait_caught_up(ns, timeout_s=120)
        # The worker stops before the fleet does: after that, missed heartbeats are real.
        worker.stop()
    finally:
        fleet.stop()
    assert drained_s > 2 * HEARTBEAT_S, f"the backlog drained in {drained_s:.1f}s: no test"
    events = read_audit(ns.bootstrap, ns.topics.audit, timeout_s=5)
    detected = sorted({e.connector_id for e in events if e.type is EventType.FAILURE_DETECTED})
    assert detected == [], f"false pages for {len(detected)} healthy connectors"
    assert events == []
    figures = compare_with_reference(ns, load_policy(policy_file))
    assert (figures["lost"], figures["conflicting_duplicates"], figures["extra"]) == (0, 0, 0)
