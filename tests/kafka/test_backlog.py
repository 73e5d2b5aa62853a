"""A worker behind on its inputs must not page for connectors that keep pinging.

While the worker is behind, wall-clock ticks find heartbeat deadlines computed from old
pings, whose newer pings sit unread upstream; a tick must wait for them.

The worker starts behind: a backlog of the fleet's history waits on the health topic,
stamped as the fleet stamped it (one ping a second per connector; 20,000 pings of 40
connectors in CI, 400,000 of 2,000 with `CR_FAULTS_FULL=1`). A clock running on wall time
pages every connector as soon as it reads the backlog's first pings.

How long the worker is behind must not depend on how fast this machine drains the backlog
(a backlog sized for a busy machine drained in 5.9 s on a quiet one: no test). So the test
also holds the worker's router back itself (SIGSTOP) for three heartbeat timeouts while the
fleet keeps pinging and the worker's clock keeps running."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest

from agents.broker.topics import ensure_topics
from agents.policyfile import load_policy
from streams.models import EventType
from tests.faults.figures import BACKLOG_ROUNDS, FLEET_CONNECTORS, FULL, TIMEOUT, record
from tests.kafka.fleet import Fleet, produce_backlog
from tests.kafka.harness import (
    Namespace,
    Worker,
    compare_with_reference,
    fleet_policy,
    read_audit,
    wait_for,
    wait_processed,
)

pytestmark = [pytest.mark.kafka, TIMEOUT]

CONNECTORS = [f"ERP-{i:04d}" for i in range(FLEET_CONNECTORS if FULL else 40)]
ROUNDS = BACKLOG_ROUNDS if FULL else 500  # 400,000 or 20,000 pings
HEARTBEAT_MIN_S = 3
# Above the longest a connector goes without a ping as stamped, by more than the live
# fleet's own delays between stamping a round and its records reaching the broker.
HEARTBEAT_MARGIN_S = 0.5


def test_a_worker_behind_on_its_inputs_does_not_page_for_a_pinging_fleet(
    ns: Namespace, tmp_path: Path, workers: list[Worker]
) -> None:
    began = time.monotonic()
    asyncio.run(ensure_topics(ns.settings()))
    backlog = produce_backlog(ns.bootstrap, ns.topics.health, CONNECTORS, ROUNDS)
    fleet = Fleet(ns.bootstrap, ns.topics.health, CONNECTORS, interval_s=1.0).start()
    live_from = wait_for(lambda: fleet.first_at, 30, "the live fleet's first round")
    # The timeout sized from the stamped times: producing the backlog took a while, and
    # the fleet really was silent that long (a timeout under it would page truly).
    silence_s = backlog.longest_silence_ms(live_from) / 1000
    heartbeat_s = max(HEARTBEAT_MIN_S, math.ceil(silence_s + HEARTBEAT_MARGIN_S))
    policy_file = fleet_policy(tmp_path, heartbeat_s=heartbeat_s)
    # A session longer than the freeze below: the router keeps its partitions through it.
    session_s = max(30, 3 * heartbeat_s + 20)
    worker = Worker(ns, policy=policy_file, env={"CR_SESSION_TIMEOUT_S": str(session_s)})
    workers.append(worker)
    try:
        worker.start(ready_timeout_s=120)
        drain_began = time.monotonic()
        wait_processed(ns, timeout_s=600)  # the backlog, drained however fast
        drained_s = time.monotonic() - drain_began
        # The fleet's newer pings pile up unread while the worker's clock runs on: every
        # connector's last processed ping gets older than a heartbeat timeout, twice over.
        with worker.router_frozen():
            frozen_from, rounds = time.monotonic(), fleet.rounds
            wait_for(lambda: fleet.rounds >= rounds + 3 * heartbeat_s, 120, "pings while frozen")
            frozen_s = time.monotonic() - frozen_from
        # Keep pinging a few heartbeat timeouts past the catch-up: ticks in flight land.
        wait_processed(ns, timeout_s=300)
        rounds = fleet.rounds
        wait_for(lambda: fleet.rounds >= rounds + 2 * heartbeat_s, 60, "more fleet rounds")
        wait_processed(ns, timeout_s=300)
        # The worker stops before the fleet does: after that, missed heartbeats are real.
        worker.stop()
    finally:
        sent = fleet.stop()
    assert frozen_s > 2 * heartbeat_s, f"the router was held back {frozen_s:.1f}s only: no test"
    events = read_audit(ns.bootstrap, ns.topics.audit, timeout_s=5)
    detected = sorted({e.connector_id for e in events if e.type is EventType.FAILURE_DETECTED})
    figures = compare_with_reference(ns, load_policy(policy_file))
    record(
        "R7-backlog",
        {
            "connectors": len(CONNECTORS),
            "backlog": backlog.pings,
            "backlog_stamped_s": (backlog.last_at - backlog.first_at) / 1000,
            "backlog_produce_s": round(backlog.produce_s, 1),
            "heartbeat_s": heartbeat_s,
            "drained_s": round(drained_s, 1),
            "frozen_s": round(frozen_s, 1),
            "live_pings": sent,
            "false_pages": len(detected),
            "audit_events": len(events),
            "lost": figures["lost"],
            "extra": figures["extra"],
            "wall_s": round(time.monotonic() - began),
        },
    )
    assert detected == [], f"false pages for {len(detected)} healthy connectors"
    assert events == []
    assert (figures["lost"], figures["conflicting_duplicates"], figures["extra"]) == (0, 0, 0)
