"""R2: stop and restart the broker mid-stream; the worker resumes by itself; 0 lost.

Full size: 2,000 connectors with a backlog of 400,000 pings (a third of the connectors
failing for a while in it) waiting when the worker starts; each restart lands while that
backlog is being drained, the fleet pinging live meanwhile. CI: 20 connectors pinging live."""

from __future__ import annotations

import asyncio
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.broker.local import Broker
from agents.broker.topics import ensure_topics
from tests.faults.figures import (
    BACKLOG_ROUNDS,
    FLEET_CONNECTORS,
    FULL,
    TIMEOUT,
    record,
    reference_figures,
)
from tests.kafka.fleet import Fleet, produce_backlog
from tests.kafka.harness import (
    Namespace,
    Worker,
    false_pages,
    fleet_policy,
    free_broker_port,
    processed_inputs,
    routed,
    wait_for,
    wind_down,
)

pytestmark = [pytest.mark.faults, pytest.mark.kafka, TIMEOUT]

RESTARTS = 3 if FULL else 1
CONNECTORS = FLEET_CONNECTORS if FULL else 20
HEARTBEAT_S = 120  # far above any gap between a connector's stamped pings (asserted)


@pytest.fixture
def own_broker() -> Iterator[Broker]:
    """A broker of this test's own: restarting the shared one would disturb nothing here,
    but the shared one may be a cluster we do not control (KAFKA_BOOTSTRAP_SERVERS)."""
    broker = Broker(free_broker_port())
    shutil.rmtree(broker.data, ignore_errors=True)
    broker.up(timeout_s=180)
    yield broker
    broker.down()
    shutil.rmtree(broker.data, ignore_errors=True)


def restart(broker: Broker) -> float:
    """The broker stopped (SIGTERM) and started again; the outage's length."""
    stopped = time.monotonic()
    broker.down()
    time.sleep(3)  # a real outage: the broker is gone for a while, not a blip
    broker.up(timeout_s=180)
    return time.monotonic() - stopped


def test_the_worker_resumes_by_itself_after_a_broker_restart(
    own_broker: Broker, tmp_path: Path
) -> None:
    began = time.monotonic()
    ns = Namespace(own_broker.bootstrap, tmp_path)
    policy = fleet_policy(tmp_path, heartbeat_s=HEARTBEAT_S)
    connectors = [f"CRM-{i:04d}" for i in range(CONNECTORS)]
    # Live failure windows, as in CI, and in the full size a third of the fleet failing
    # in its history too.
    failing = {c: set(range(20 + 7 * i, 30 + 7 * i)) for i, c in enumerate(connectors[:6])}
    rng = random.Random(2)  # noqa: S311 - a reproducible schedule, not a secret
    history = {
        c: set(range(start, start + rng.randrange(5, 30)))
        for c in rng.sample(connectors[6:], CONNECTORS // 3 if FULL else 0)
        for start in [rng.randrange(0, BACKLOG_ROUNDS - 30)]
    }
    backlog = None
    if FULL:
        asyncio.run(ensure_topics(ns.settings()))
        backlog = produce_backlog(
            ns.bootstrap, ns.topics.health, connectors, BACKLOG_ROUNDS, failing=history
        )
    worker = Worker(ns, policy=policy).start(ready_timeout_s=180)
    routed_at_restarts = []
    try:
        fleet = Fleet(
            ns.bootstrap,
            ns.topics.health,
            connectors,
            failing=failing,
            interval_s=1.0 if FULL else 0.2,
        ).start()
        outages: list[float] = []
        for index in range(RESTARTS):
            if backlog:  # at even steps through the backlog, while it is being drained
                point = backlog.pings * (index + 1) // (RESTARTS + 1)
                wait_for(lambda p=point: routed(ns) >= p, 600, "the backlog to drain", 0.25)  # type: ignore[misc]  # mypy cannot type a lambda default (it binds the loop value)
            else:
                wait_for(lambda r=index: fleet.rounds >= 15 + 40 * r, 120, "pings to flow")  # type: ignore[misc]  # mypy cannot type a lambda default (it binds the loop value)
            routed_at_restarts.append(routed(ns))
            outages.append(restart(own_broker))
        # Pings after the last restart, past the last failure window.
        after = fleet.rounds + 30 if backlog else 15 + 40 * RESTARTS + 30
        last_window = max(max(w) for w in failing.values())
        wait_for(lambda: fleet.rounds >= max(after, last_window + 20), 300, "pings after it")
        assert worker.process is not None
        assert worker.process.poll() is None, worker.output()[-3000:]  # never restarted
        sent = wind_down(ns, worker, fleet) + (backlog.pings if backlog else 0)
        assert fleet.first_at is not None
        # The backlog's last round to the live fleet's first ping: a worker slow to start
        # stretches it, and past the heartbeat timeout every healthy connector is missed.
        largest_gap_s = backlog.longest_silence_ms(fleet.first_at) / 1000 if backlog else 0.2
        figures = reference_figures(ns, policy, processed_inputs(ns))
        pages = false_pages(ns, set(failing) | (set(history) if backlog else set()))
        after_backlog = [n for n in routed_at_restarts if backlog and n >= backlog.pings]
        record(
            "R2-broker-restart",
            {
                "pings": sent,
                "connectors": CONNECTORS,
                "backlog": backlog.pings if backlog else 0,
                "restarts": RESTARTS,
                "routed_at_restarts": routed_at_restarts,
                "outage_s": round(max(outages), 1),
                "largest_stamped_gap_s": round(largest_gap_s, 1),
                "worker_restarts": 0,
                "reference_events": figures["reference_events"],
                "lost": figures["lost"],
                "conflicting_duplicates": figures["conflicting_duplicates"],
                "extra": figures["extra"],
                **pages,
                "wall_s": round(time.monotonic() - began),
            },
        )
        assert after_backlog == [], "a restart landed after the backlog was drained: no test"
        assert largest_gap_s < HEARTBEAT_S / 2, "the heartbeat timeout is no longer above the gaps"
        assert figures["reference_events"] >= 6
        assert (figures["lost"], figures["conflicting_duplicates"], figures["extra"]) == (0, 0, 0)
        assert (pages["false_pages"], pages["false_notifications"]) == (0, 0), pages
    finally:
        worker.kill()
