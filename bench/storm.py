"""Storms: `CR_BENCH_STORM_CONNECTORS` connectors (default 2,000; the issue asks 2,000 and
10,000) fail at once while one worker runs, black-box: a warm fleet (every connector past
its flap window with healthy pings), then one unhealthy ping each, produced together
(pre-encoded, stamped now). Measured: from the first produce to the last `failure.detected`
readable on the audit topic (detections/s), and per connector from its ping's produce to its
detection's log time (p50, p99). The run asserts its work: exactly one detection, one first
`recovery.started` and one first recovery request per connector, and no other detection (nothing
answers the requests, so an attempt open past its 30 s timeout fails and is retried: a storm
whose first attempts take longer shows retries, counted, not failed).

Beside it in the same run, the ceiling: a raw aiokafka loop on the same records (consume,
decode, a dict of states, produce the same three records per failing ping, await them).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from agents.broker.topics import ensure_topics
from agents.settings import Settings
from agents.testing.kafka import read_records, wait_caught_up
from agents.wire.codec import registry
from agents.wire.records import decode_audit
from bench.env import env_int
from bench.replay import bootstrap
from bench.worker import end_offsets, fresh, policy_file, running_worker
from streams.models import EventType

CONNECTORS = env_int("CR_BENCH_STORM_CONNECTORS", 2000)
WARM_PINGS = 22  # past the flap window (21 checks)


def _ping(codec: Any, connector: str, healthy: bool, at: int) -> bytes:
    encoded: bytes = codec.encode(
        {
            "connector_id": connector,
            "tenant_id": ("acme", "globex", None)[hash(connector) % 3],
            "status": "HEALTHY" if healthy else "UNHEALTHY",
            "failure": None if healthy else "timeout",
            "retryable": True,
            "checked_at": at,
            "latency_ms": None,
            "message": None,
            "position": None,
        }
    )
    return encoded


async def _produce(settings: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    """All at once; returns the time of the first send (perf_counter)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, linger_ms=5, max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        began = time.perf_counter()
        sent = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*sent)
        return began
    finally:
        await producer.stop()


async def _create(settings: Settings, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, settings.partitions, 1) for t in topics])
    finally:
        await admin.close()


async def _detections(
    settings: Settings, since: dict[TopicPartition, int], expected: int, timeout_s: float
) -> tuple[dict[str, int], dict[str, int], Counter[str]]:
    """{connector: log time (ms) of its failure.detected}, events by type, and first
    `recovery.started` per connector, read from the audit topic past `since` until
    `expected` detections and first attempts (each waits for its backoff), or the timeout."""
    codec = registry()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    detected: dict[str, int] = {}
    kinds: dict[str, int] = {}
    first_started: Counter[str] = Counter()
    try:
        consumer.assign(list(since))
        for tp, offset in since.items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout_s
        while (
            len(detected) < expected or len(first_started) < expected
        ) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    event = decode_audit(codec, record.value)
                    kinds[event.type.value] = kinds.get(event.type.value, 0) + 1
                    if event.type is EventType.FAILURE_DETECTED:
                        detected[event.connector_id] = record.timestamp
                    elif event.type is EventType.RECOVERY_STARTED and event.attempt == 1:
                        first_started[event.connector_id] += 1
    finally:
        await consumer.stop()
    return detected, kinds, first_started


def _first_requests(settings: Settings) -> tuple[Counter[str], int]:
    """The recovery requests of first attempts, per connector, and all requests so far."""
    codec = registry().codec("RecoveryRequest")
    records = read_records(
        settings.bootstrap_servers, settings.topics.recovery_requests, timeout_s=60
    )
    requests = [codec.decode(record.value) for record in records]
    first = Counter(r["connector_id"] for r in requests if r["attempt"] == 1)
    return first, len(requests)


async def _raw_loop(settings: Settings, topic: str, expected: int) -> float:
    """The ceiling: consume, decode, fold a dict, produce three records per failing ping."""
    codec = registry().codec("HealthPing")
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=f"{settings.app_id}-raw",
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    await consumer.start()
    await producer.start()
    states: dict[str, int] = {}
    out = f"{topic}.raw-out"
    try:
        seen = 0
        began = None
        while seen < expected:
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            if began is None and batch:
                began = time.perf_counter()
            sent = []
            for records in batch.values():
                for record in records:
                    ping = codec.decode(record.value)
                    seen += 1
                    if ping["status"] == "UNHEALTHY":
                        states[ping["connector_id"]] = states.get(ping["connector_id"], 0) + 1
                        for _ in range(3):
                            sent.append(await producer.send(out, record.value, key=record.key))
            await asyncio.gather(*sent)
        return time.perf_counter() - (began or time.perf_counter())
    finally:
        await consumer.stop()
        await producer.stop()


def main(_repeats: int) -> dict[str, Any]:
    ns, settings = fresh(bootstrap())
    asyncio.run(ensure_topics(settings))
    policy = policy_file(ns.tmp, heartbeat_timeout_s=3600)
    codec = registry().codec("HealthPing")
    connectors = [f"STORM-{index:05d}" for index in range(CONNECTORS)]
    now = time.time_ns() // 1_000_000
    warm = [
        (c.encode(), _ping(codec, c, True, now - (WARM_PINGS - i) * 1000))
        for i in range(WARM_PINGS)
        for c in connectors
    ]
    with running_worker(ns, settings, policy=policy):
        asyncio.run(_produce(settings, settings.topics.health, warm))
        wait_caught_up(ns, timeout_s=600)
        since = asyncio.run(end_offsets(settings.bootstrap_servers, settings.topics.audit))
        at = time.time_ns() // 1_000_000
        storm = [(c.encode(), _ping(codec, c, False, at)) for c in connectors]
        produced = asyncio.run(_produce(settings, settings.topics.health, storm))
        produced_ms = time.time_ns() // 1_000_000 - round((time.perf_counter() - produced) * 1000)
        detected, kinds, first_started = asyncio.run(_detections(settings, since, CONNECTORS, 600))
        first_requests, requests = _first_requests(settings)
    if len(detected) != CONNECTORS or set(detected) != set(connectors):
        raise RuntimeError(f"{len(detected)} of {CONNECTORS} connectors detected: {kinds}")
    for what, counted in (("recovery.started", first_started), ("request", first_requests)):
        if set(counted) != set(connectors) or set(counted.values()) != {1}:
            raise RuntimeError(f"not one first {what} per connector: {kinds}")
    retries = requests - CONNECTORS
    complaints = _complaints(ns.tmp / "worker.log")
    latencies = sorted(ts - produced_ms for ts in detected.values())
    seconds = latencies[-1] / 1000
    raw_topic = f"{ns.prefix}storm-raw"
    asyncio.run(_create(settings, [raw_topic, f"{raw_topic}.raw-out"]))
    asyncio.run(_produce(settings, raw_topic, storm))
    raw_s = asyncio.run(_raw_loop(settings, raw_topic, CONNECTORS))
    rate, raw_rate = CONNECTORS / seconds, CONNECTORS / raw_s
    p50 = statistics.median(latencies)
    p99 = latencies[max(0, round(0.99 * len(latencies)) - 1)]
    print(
        f"  {CONNECTORS:,} connectors fail at once: the last detected after {seconds:.2f} s "
        f"= {rate:,.0f} detections/s (p50 {p50:,.0f} ms, p99 {p99:,.0f} ms from produce); "
        f"raw loop {raw_s:.2f} s = {raw_rate:,.0f}/s; ratio {rate / raw_rate:.2f}; "
        f"the worker's log: {len(complaints)} WARNING/ERROR lines; {retries:,} retries "
        f"requested meanwhile"
    )
    for line in complaints[:5]:
        print(f"    {line}")
    return {
        "connectors": CONNECTORS,
        "seconds": seconds,
        "detections_per_s": rate,
        "p50_ms": p50,
        "p99_ms": p99,
        "raw_seconds": raw_s,
        "raw_per_s": raw_rate,
        "events": kinds,
        "warnings_and_errors": len(complaints),
        "retries": retries,
    }


def _complaints(log: Path) -> list[str]:
    """The worker's WARNING and ERROR lines: a storm is the worker's job, not a fault."""
    return [
        line.strip()
        for line in log.read_text(errors="replace").splitlines()
        if "[WARNING]" in line or "[ERROR]" in line or "[CRITICAL]" in line
    ]
