"""A worker behind on its inputs must not page for connectors that keep pinging.

While the worker is behind, wall-clock ticks find heartbeat deadlines computed from old
pings, whose newer pings sit unread upstream; a tick must wait for them.

How long the worker is behind must not depend on how fast this machine drains a backlog
(a backlog sized for a busy machine drained in 5.9 s on a quiet one: no test). So besides
draining a backlog at start, the test holds the worker's router back itself (SIGSTOP) for
longer than two heartbeat timeouts while the fleet keeps pinging and the worker's clock
keeps running."""

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
FROZEN_ROUNDS = 3 * HEARTBEAT_S  # the fleet pings once a second
CONNECTORS = [f"ERP-{i:02d}" for i in range(40)]
BACKLOG_ROUNDS = 500  # 20,000 pings


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
                # Stamped as a fleet stamps them: the record's time is the check's.
                await producer.send(
                    topic,
                    key=connector.encode(),
                    value=codec.encode(record),
                    timestamp_ms=checked_at,
                )
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
    # A session longer than the freeze below: the router keeps its partitions through it.
    worker = Worker(ns, policy=policy_file, env={"CR_SESSION_TIMEOUT_S": "30"})
    workers.append(worker)
    worker.start(ready_timeout_s=120)
    try:
        wait_caught_up(ns, timeout_s=300)  # the backlog, drained however fast
        # The fleet's newer pings pile up unread while the worker's clock runs on: every
        # connector's last processed ping gets older than a heartbeat timeout, twice over.
        with worker.router_frozen():
            began, rounds = time.monotonic(), fleet.rounds
            wait_for(lambda: fleet.rounds >= rounds + FROZEN_ROUNDS, 60, "pings while frozen")
            frozen_s = time.monotonic() - began
        # Keep pinging a few heartbeat timeouts past the catch-up: ticks in flight land.
        wait_caught_up(ns, timeout_s=120)
        rounds = fleet.rounds
        wait_for(lambda: fleet.rounds >= rounds + 2 * HEARTBEAT_S, 30, "more fleet rounds")
        wait_caught_up(ns, timeout_s=120)
        # The worker stops before the fleet does: after that, missed heartbeats are real.
        worker.stop()
    finally:
        fleet.stop()
    assert frozen_s > 2 * HEARTBEAT_S, f"the router was held back {frozen_s:.1f}s only: no test"
    events = read_audit(ns.bootstrap, ns.topics.audit, timeout_s=5)
    detected = sorted({e.connector_id for e in events if e.type is EventType.FAILURE_DETECTED})
    assert detected == [], f"false pages for {len(detected)} healthy connectors"
    assert events == []
    figures = compare_with_reference(ns, load_policy(policy_file))
    assert (figures["lost"], figures["conflicting_duplicates"], figures["extra"]) == (0, 0, 0)
