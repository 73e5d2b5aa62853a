"""Issue 21, item 4: starting and stopping are quiet and correct. A worker on fresh topics
logs no ERROR while it starts (it waits for the leaders and coordinators instead), and a
SIGTERM to it and its router (as `systemctl stop` sends one to every process of the
service) stops it with exit code 0 within 10 s, without a restart of its router."""

from __future__ import annotations

import re
import time

import pytest

from tests.kafka.fleet import Fleet
from tests.kafka.harness import Namespace, Worker, wait_caught_up, wait_for

pytestmark = pytest.mark.kafka

LOUD = re.compile(r"\[(ERROR|CRITICAL)\]|Traceback")
STOP_WITHIN_S = 10.0


def test_start_stop_start_on_fresh_topics_is_quiet_and_exits_0(
    ns: Namespace, workers: list[Worker]
) -> None:
    worker = Worker(ns, own_process_group=True)
    workers.append(worker)
    connectors = [f"ERP-{i:02d}" for i in range(20)]
    stops: list[tuple[int, float]] = []
    for _ in range(2):
        worker.start()  # the first start creates every topic
        fleet = Fleet(ns.bootstrap, ns.topics.health, connectors).start()
        wait_for(lambda f=fleet: f.rounds >= 5, 30, "pings while the worker runs")  # type: ignore[misc]
        fleet.stop()
        wait_caught_up(ns, timeout_s=120)
        began = time.monotonic()
        code = worker.stop(timeout_s=30, whole_group=True)
        stops.append((code, time.monotonic() - began))

    log = (ns.tmp / f"{worker.name}.log").read_text()
    loud = [line for line in log.splitlines() if LOUD.search(line)]
    assert loud == [], "\n".join(loud)
    assert "router process exited" not in log
    assert all(code == 0 for code, _ in stops), stops
    assert all(seconds < STOP_WITHIN_S for _, seconds in stops), stops
