"""Faust's floor: events/s that an agent doing nothing at all receives, against a raw
aiokafka consumer loop reading the same records. It bounds what any Faust agent can reach
on this machine, whatever the agent does (BENCHMARKS.md, P1)."""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.env import env_int
from bench.replay import bootstrap

EVENTS = env_int("CR_BENCH_PINGS", 60000)


async def fill(server: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=server)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 4, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=server, linger_ms=20, max_batch_size=262144)
    await producer.start()
    try:
        for index in range(EVENTS):
            await producer.send(topic, key=b"k%d" % (index % 1000), value=b"x" * 150)
        await producer.flush()
    finally:
        await producer.stop()


async def raw(server: str, topic: str) -> float:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=server, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    seen, started = 0, 0.0
    try:
        while seen < EVENTS:
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                if not seen:
                    started = time.perf_counter()
                seen += len(records)
        return EVENTS / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def faust_agent(server: str, topic: str) -> float:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": server,
        "CR_FLOOR_TOPIC": topic,
        "CR_FLOOR_EVENTS": str(EVENTS),
        "CR_FLOOR_DATA": tempfile.mkdtemp(),
    }
    out = subprocess.run(
        [sys.executable, "-m", "bench.floor_app"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    # Faust redirects stdout to its log, so the line may carry a log prefix.
    found = re.search(r"\brate (\d+)", out.stdout + out.stderr)
    if found:
        return float(found.group(1))
    raise RuntimeError(f"the Faust agent gave no rate:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")


def main(repeats: int) -> dict[str, Any]:
    server = bootstrap()
    agent_rates: list[float] = []
    raw_rates: list[float] = []
    for _ in range(max(1, repeats)):
        topic = f"floor-{uuid.uuid4().hex[:8]}"
        asyncio.run(fill(server, topic))
        raw_rates.append(asyncio.run(raw(server, topic)))
        agent_rates.append(faust_agent(server, topic))
    result: dict[str, Any] = {
        "events": EVENTS,
        "faust_empty_agent_events_per_s": {
            "median": statistics.median(agent_rates),
            "all": agent_rates,
        },
        "raw_consumer_events_per_s": {"median": statistics.median(raw_rates), "all": raw_rates},
        "ratio": statistics.median(agent_rates) / statistics.median(raw_rates),
    }
    print(f"Faust floor: {EVENTS:,} events, {len(agent_rates)} run(s), alternating")
    print(f"  empty Faust agent : {result['faust_empty_agent_events_per_s']['median']:>9,.0f}/s")
    print(f"  raw aiokafka loop : {result['raw_consumer_events_per_s']['median']:>9,.0f}/s")
    print(f"  ratio             : {result['ratio']:.3f}")
    return result
