"""R2: stop and restart the broker mid-stream; the worker resumes by itself; 0 lost."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.broker.local import Broker
from tests.faults.figures import FULL, record, reference_figures
from tests.kafka.fleet import Fleet
from tests.kafka.harness import (
    Namespace,
    Worker,
    fleet_policy,
    free_broker_port,
    wait_caught_up,
    wait_for,
)

pytestmark = [pytest.mark.faults, pytest.mark.kafka]

RESTARTS = 3 if FULL else 1


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


def test_the_worker_resumes_by_itself_after_a_broker_restart(
    own_broker: Broker, tmp_path: Path
) -> None:
    ns = Namespace(own_broker.bootstrap, tmp_path)
    policy = fleet_policy(tmp_path, heartbeat_s=120)
    worker = Worker(ns, policy=policy).start()
    try:
        connectors = [f"CRM-{i:02d}" for i in range(20)]
        failing = {c: set(range(20 + 7 * i, 30 + 7 * i)) for i, c in enumerate(connectors[:6])}
        fleet = Fleet(ns.bootstrap, ns.topics.health, connectors, failing=failing).start()
        outages: list[float] = []
        for restart in range(RESTARTS):
            wait_for(lambda r=restart: fleet.rounds >= 15 + 40 * r, 120, "pings to flow")  # type: ignore[misc]  # mypy cannot type a lambda default (it binds the loop value)
            stopped = time.monotonic()
            own_broker.down()
            time.sleep(3)  # a real outage: the broker is gone for a while, not a blip
            own_broker.up(timeout_s=180)
            outages.append(time.monotonic() - stopped)
        wait_for(lambda: fleet.rounds >= 15 + 40 * RESTARTS + 30, 300, "pings after the restart")
        sent = fleet.stop()
        wait_caught_up(ns, timeout_s=300)
        assert worker.process is not None
        assert worker.process.poll() is None, worker.output()[-3000:]  # never restarted
        figures = reference_figures(ns, policy)
        record(
            "R2-broker-restart",
            {
                "pings": sent,
                "restarts": RESTARTS,
                "outage_s": round(max(outages), 1),
                "worker_restarts": 0,
                "reference_events": figures["reference_events"],
                "lost": figures["lost"],
                "conflicting_duplicates": figures["conflicting_duplicates"],
                "extra": figures["extra"],
            },
        )
        assert figures["reference_events"] >= 6
        assert (figures["lost"], figures["conflicting_duplicates"], figures["extra"]) == (0, 0, 0)
    finally:
        worker.kill()
