"""Issue 21, item 4: starting and stopping are quiet and correct. A worker on fresh topics
logs no ERROR while it starts (it waits for the leaders and coordinators instead), and a
SIGTERM to it and its router (as `systemctl stop` sends one to every process of the
service) stops it with exit code 0 within 10 s, without a restart of its router, having
committed every external record its router forwarded."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from agents.wire.codec import registry
from agents.wire.records import batch_origins
from agents.worker.router import parse_source
from tests.kafka.fleet import Fleet
from tests.kafka.harness import Namespace, Worker, read_records, wait_caught_up, wait_for

pytestmark = pytest.mark.kafka

LOUD = re.compile(r"\[(ERROR|CRITICAL)\]|Traceback")
STOP_WITHIN_S = 10.0


def test_start_stop_start_on_fresh_topics_is_quiet_and_exits_0(
    ns: Namespace, workers: list[Worker]
) -> None:
    worker = Worker(ns, own_process_group=True)
    workers.append(worker)
    connectors = [f"ERP-{i:03d}" for i in range(200)]
    stops: list[tuple[int, float]] = []

    worker.start()  # creates every topic
    # Stopped while a busy fleet pings (10,000 pings/s offered): polls are in flight.
    fleet = Fleet(ns.bootstrap, ns.topics.health, connectors, interval_s=0.01).start()
    try:
        wait_for(lambda: fleet.rounds >= 100, 60, "pings while the worker runs")
        stops.append(stop(worker))
    finally:
        fleet.stop()
    assert committed_by_router(ns) == forwarded_by_router(ns)

    worker.start()
    wait_caught_up(ns, timeout_s=120)
    stops.append(stop(worker))

    log = (ns.tmp / f"{worker.name}.log").read_text()
    loud = [line for line in log.splitlines() if LOUD.search(line)]
    assert loud == [], "\n".join(loud)
    assert "router process exited" not in log
    assert all(code == 0 for code, _ in stops), stops
    assert all(seconds < STOP_WITHIN_S for _, seconds in stops), stops


def stop(worker: Worker) -> tuple[int, float]:
    """SIGTERM to the worker's process group: its exit code and how long it took."""
    began = time.monotonic()
    code = worker.stop(timeout_s=30, whole_group=True)
    return code, time.monotonic() - began


def forwarded_by_router(ns: Namespace) -> dict[int, int]:
    """Per health partition, the offset after the last ping on the inputs topic."""
    forwarded: dict[int, int] = {}
    reg = registry()
    for record in read_records(ns.bootstrap, ns.settings().inputs_topic):
        for origin in batch_origins(reg, record.value):
            source = parse_source(origin)
            if source is not None and source[0] == ns.topics.health:
                _, partition, offset = source
                forwarded[partition] = max(forwarded.get(partition, 0), offset + 1)
    return forwarded


def committed_by_router(ns: Namespace) -> dict[int, int]:
    async def read() -> dict[int, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=ns.bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(ns.settings().router_group)
        finally:
            await admin.close()
        return {tp.partition: o.offset for tp, o in offsets.items() if tp.topic == ns.topics.health}

    return asyncio.run(read())
