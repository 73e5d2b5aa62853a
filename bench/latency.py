"""P2: detection latency at a steady 1,000 pings/s (CR_BENCH_RATE): time from a failing
ping's `checked_at` to its `connector.failure.detected` being readable on the audit topic;
p50/p90/p99, and the same split at the router's `InputBatch` (the hops).

Baseline, same broker, same load: the raw loop of P1 (consume, decode, produce one record per
input), timed from `checked_at` to its output record being readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agents.settings import Settings
from agents.testing.kafka import read_records
from agents.wire.codec import registry
from agents.wire.records import decode_audit
from bench.env import env_int
from bench.replay import bootstrap
from bench.throughput import output_topic, produce
from bench.worker import audited, fresh, policy_file, running_worker
from streams.models import EventType
from streams.projections import nearest_rank

RATE = env_int("CR_BENCH_RATE", 1000)  # pings/s
SECONDS = env_int("CR_BENCH_SECONDS", 30)
# The fleet's shape: 200 connectors pinging 5 times a second each at 1,000 pings/s, or (the
# issue's fleet) CR_BENCH_CONNECTORS=1000, one ping a second each, warmed past their flap
# window (CR_BENCH_WARM_S=25) before the first failure, with CR_BENCH_SECONDS=50.
CONNECTORS = env_int("CR_BENCH_CONNECTORS", 200)
WARM_S = int(os.environ.get("CR_BENCH_WARM_S") or 0)
SAMPLES = min(200, CONNECTORS)  # one new failing connector every 100 ms, up to this many


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def load(settings: Settings, failing: dict[str, int]) -> None:
    """RATE pings/s; after WARM_S, every 100 ms one more connector starts failing (recorded
    in `failing`), SAMPLES of them."""
    codec = registry().codec("HealthPing")
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=2)
    await producer.start()
    try:
        started = time.monotonic()
        sent = 0
        down: set[str] = set()
        next_failure = 0
        while time.monotonic() - started < SECONDS:
            elapsed = time.monotonic() - started
            if (elapsed - WARM_S) * 10 >= next_failure and next_failure < SAMPLES:
                down.add(f"LAT-{next_failure:04d}")
                next_failure += 1
            due = int(elapsed * RATE)
            while sent < due:
                connector = f"LAT-{sent % CONNECTORS:04d}"
                unhealthy = connector in down
                at = now_ms()
                if unhealthy and connector not in failing:
                    failing[connector] = at
                await producer.send(
                    settings.topics.health,
                    key=connector.encode(),
                    value=codec.encode(
                        {
                            "connector_id": connector,
                            "tenant_id": None,
                            "status": "UNHEALTHY" if unhealthy else "HEALTHY",
                            "failure": "timeout" if unhealthy else None,
                            "retryable": True,
                            "checked_at": at,
                            "latency_ms": None,
                            "message": None,
                            "position": None,
                        }
                    ),
                )
                sent += 1
            await asyncio.sleep(0.005)
        await producer.flush()
    finally:
        await producer.stop()


@dataclass
class Watch:
    """What a watcher looks for on `topic`, and what it has seen (arrival times, ms)."""

    topic: str
    detected: bool  # a failure.detected audit event (else: an UNHEALTHY record)
    failing: dict[str, int] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def wanted(self, value: dict[str, Any]) -> bool:
        if self.detected:
            return bool(value.get("type") == "connector.failure.detected")
        return bool(value.get("status") == "UNHEALTHY")


async def watch(settings: Settings, spec: Watch) -> None:
    consumer = AIOKafkaConsumer(
        spec.topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        auto_offset_reset="latest",
    )
    await consumer.start()
    reg = registry()
    try:
        while not spec.done.is_set():
            for records in (await consumer.getmany(timeout_ms=100)).values():
                arrived = now_ms()
                for record in records:
                    _, value = reg.decode_any(record.value)
                    connector = value["connector_id"]
                    if (
                        connector not in spec.seen
                        and connector in spec.failing
                        and (spec.wanted(value))
                    ):
                        spec.seen[connector] = arrived
            if spec.loaded.is_set() and len(spec.seen) >= len(spec.failing):
                spec.done.set()
    finally:
        await consumer.stop()


async def measure(settings: Settings, topic: str, detected: bool) -> list[float]:
    spec = Watch(topic, detected)
    watcher = asyncio.create_task(watch(settings, spec))
    await asyncio.sleep(2)  # the watcher is at the end of the topic before the load starts
    await load(settings, spec.failing)
    spec.loaded.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(spec.done.wait()), 60)
    spec.done.set()
    await watcher
    return sorted(float(spec.seen.get(c, now_ms()) - at) for c, at in spec.failing.items())


async def raw_loop(settings: Settings, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        settings.topics.health,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=f"{settings.app_id}-raw",
        auto_offset_reset="latest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=2)
    await consumer.start()
    await producer.start()
    reg = registry()
    try:
        while not stop.is_set():
            for records in (await consumer.getmany(timeout_ms=50)).values():
                for record in records:
                    reg.decode_any(record.value)
                    await producer.send(output_topic(settings), key=record.key, value=record.value)
    finally:
        await consumer.stop()
        await producer.stop()


async def baseline(settings: Settings) -> list[float]:
    stop = asyncio.Event()
    loop = asyncio.create_task(raw_loop(settings, stop))
    await asyncio.sleep(3)
    latencies = await measure(settings, output_topic(settings), detected=False)
    stop.set()
    await loop
    return latencies


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": nearest_rank(values, 50),
        "p90": nearest_rank(values, 90),
        "p99": nearest_rank(values, 99),
        "mean": statistics.mean(values),
    }


def hops(settings: Settings) -> dict[str, list[float]]:
    """Where each detection's time went, from the records' create times: ping checked →
    the router's `InputBatch` holding it (router), → the `failure.detected` record
    (decider: its consumer, batch, commands acked, event sent)."""
    reg = registry()
    records = {
        topic: {(r.partition, r.offset): r for r in read_records(settings.bootstrap_servers, topic)}
        for topic in (settings.topics.health, settings.inputs_topic)
    }
    router: list[float] = []
    decider: list[float] = []
    for record in read_records(settings.bootstrap_servers, settings.topics.audit):
        event = decode_audit(reg, record.value)
        if event.type is not EventType.FAILURE_DETECTED:
            continue
        # attributes.source: "<inputs topic>/<partition>/<offset>#<item>"
        _topic, partition, offset_item = event.attributes["source"].rsplit("/", 2)
        offset, _, item = offset_item.partition("#")
        batch = records[settings.inputs_topic][(int(partition), int(offset))]
        origin = reg.codec("InputBatch").decode(batch.value)["sources"][int(item or 0)]
        _health, health_partition, health_offset = origin.rsplit("/", 2)
        ping = records[settings.topics.health][(int(health_partition), int(health_offset))]
        checked_at = reg.codec("HealthPing").decode(ping.value)["checked_at"]
        router.append(float(batch.timestamp - checked_at))
        decider.append(float(record.timestamp - batch.timestamp))
    return {"router": sorted(router), "decider": sorted(decider)}


def main(_repeats: int) -> dict[str, Any]:
    server = bootstrap()
    # Topics of their own for the baseline: the worker must not start on the baseline's
    # pings (they fail every connector once, 30 s before its own load).
    _base_ns, base_settings = fresh(server)
    asyncio.run(produce(base_settings, []))  # topics only
    base = summary(asyncio.run(baseline(base_settings)))
    ns, settings = fresh(server)
    asyncio.run(produce(settings, []))
    policy = policy_file(ns.tmp, heartbeat_timeout_s=3600)  # a warm-up outlasts the default
    with running_worker(ns, settings, policy=policy):
        system = summary(asyncio.run(measure(settings, settings.topics.audit, detected=True)))
    # The load makes LAT-0000..LAT-0199 fail one after another, all pinging until the end.
    audit = audited(ns, settings, {f"LAT-{index:04d}" for index in range(SAMPLES)})
    by_hop = {hop: summary(values) for hop, values in hops(settings).items()}
    print(
        f"P2 detection latency at {RATE} pings/s for {SECONDS} s ({CONNECTORS} connectors, "
        f"after {WARM_S} s one new failure every 100 ms, {SAMPLES} of them), ms:"
    )
    rows = [
        ("worker", system),
        ("  router", by_hop["router"]),
        ("  decider", by_hop["decider"]),
        ("raw loop", base),
    ]
    for name, figures in rows:
        print(
            f"  {name:9s} p50 {figures['p50']:>8,.0f}  p90 {figures['p90']:>8,.0f}  "
            f"p99 {figures['p99']:>8,.0f}"
        )
    print("  (router: ping checked -> its InputBatch sent; decider: -> failure.detected sent)")
    return {
        "rate": RATE,
        "seconds": SECONDS,
        "worker_ms": system,
        "hops_ms": by_hop,
        "baseline_ms": base,
        "audit_events": audit,
        "goal_p99_ms": 100 if RATE <= 1000 else 250,
    }
