"""P1: pings/s through one worker end to end (Avro in -> route -> decide -> table -> audit
out), with a realistic mix, alternating with its baseline on the same broker: a raw
aiokafka loop that consumes the same pings, decodes them with the same codec, keeps a dict
of states written only on change, and produces one record per input (the ceiling for a
Python process).

The worker is measured from 'ready' until its group has committed every input.

`CR_BENCH_LIVE=cold|warm|both`: the pings produced while the worker runs (pre-encoded, at
full speed, stamped when made), from `CR_BENCH_CONNECTORS` connectors (say 2,000), first
pings (cold) or past the flap window (warm), measured from the first produce until the
worker has committed every ping; the raw loop on pre-produced pings beside it.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import statistics
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from agents.broker.topics import ensure_topics
from agents.settings import Settings
from agents.testing.kafka import Namespace
from agents.wire.codec import registry
from bench.env import env_int
from bench.replay import bootstrap
from bench.worker import audited, end_offsets, fresh, policy_file, running_worker

PINGS = env_int("CR_BENCH_PINGS", 30000)
# 200 connectors x 150 pings each: a fleet mostly past its first 21 pings (which fill the
# flap window and so change the stored state); CR_BENCH_CONNECTORS=1000 gives the cold case.
CONNECTORS = env_int("CR_BENCH_CONNECTORS", 200)


# Pings are stamped one simulated second apart, ending when they are generated; the worker
# reads them minutes later. Its policy's heartbeat timeout outlasts that, so it detects only
# what the pings say (a 60 s timeout made part of the figure spurious heartbeat misses).
HEARTBEAT_TIMEOUT_S = 3600


def pings(seed: int = 11) -> tuple[list[tuple[bytes, bytes]], set[str]]:
    """~3% of connectors failing at any time, as in bench core; and the connectors that
    send an unhealthy ping (the only ones the worker may detect)."""
    rng = random.Random(seed)
    codec = registry().codec("HealthPing")
    failing = [False] * CONNECTORS
    ever_failing: set[str] = set()
    out: list[tuple[bytes, bytes]] = []
    now = time.time_ns() // 1_000_000 - (PINGS // CONNECTORS) * 1000  # the last round is now
    while len(out) < PINGS:
        now += 1000
        for index in range(CONNECTORS):
            failing[index] = rng.random() > 0.05 if failing[index] else rng.random() < 0.0015
            connector = f"TP-{index:04d}"
            if failing[index] and len(out) < PINGS:
                ever_failing.add(connector)
            out.append(
                (
                    connector.encode(),
                    codec.encode(
                        {
                            "connector_id": connector,
                            "tenant_id": "acme",
                            "status": "UNHEALTHY" if failing[index] else "HEALTHY",
                            "failure": "timeout" if failing[index] else None,
                            "retryable": True,
                            "checked_at": now,
                            "latency_ms": 5,
                            "message": None,
                            "position": None,
                        }
                    ),
                )
            )
    return out[:PINGS], ever_failing


def output_topic(settings: Settings) -> str:
    return f"{settings.topics.health}.baseline-out"


async def produce(settings: Settings, records: list[tuple[bytes, bytes]]) -> None:
    await ensure_topics(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(output_topic(settings), settings.partitions, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        linger_ms=20,
        max_batch_size=262144,
        acks="all",
    )
    await producer.start()
    try:
        for key, value in records:
            await producer.send(settings.topics.health, key=key, value=value)
        await producer.flush()
    finally:
        await producer.stop()


async def baseline(settings: Settings, expected: int) -> float:
    registry_ = registry()
    consumer = AIOKafkaConsumer(
        settings.topics.health,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=f"baseline-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        max_poll_records=5000,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        linger_ms=20,
        max_batch_size=262144,
        acks="all",
    )
    await consumer.start()
    await producer.start()
    states: dict[str, tuple[str, int]] = {}
    seen = 0
    started = time.perf_counter()
    try:
        while seen < expected:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    _, ping = registry_.decode_any(record.value)
                    key = ping["connector_id"]
                    state = (ping["status"], ping["checked_at"])
                    if states.get(key, ("", 0))[0] != state[0]:
                        states[key] = state
                    await producer.send(output_topic(settings), key=record.key, value=record.value)
                    seen += 1
        await producer.flush()
        return time.perf_counter() - started
    finally:
        await consumer.stop()
        await producer.stop()


def system(settings: Settings, ns: Namespace) -> float:
    """Seconds from 'ready' until the worker has committed every ping: the router every
    health record, then the decider the inputs topic up to where the last ping landed (the
    clock's ticks keep arriving after it and are not part of the load)."""
    policy = policy_file(ns.tmp, HEARTBEAT_TIMEOUT_S)
    with running_worker(ns, settings, policy=policy):
        return asyncio.run(_until_committed(ns, settings))


async def _until_committed(ns: Namespace, settings: Settings) -> float:
    """Polled every 20 ms through one admin client (a client per poll cost ~0.2 s each,
    a tenth of a 30,000-ping run)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=ns.bootstrap)
    await admin.start()
    started = time.perf_counter()
    try:
        health_end = await end_offsets(ns.bootstrap, settings.topics.health)
        while not await _committed_past(admin, f"{ns.app_id}-router", health_end):  # noqa: ASYNC110 - the broker has no event to await
            await asyncio.sleep(0.02)
        pings_end = await end_offsets(ns.bootstrap, settings.inputs_topic)
        while not await _committed_past(admin, ns.app_id, pings_end):  # noqa: ASYNC110 - as above
            await asyncio.sleep(0.02)
        return time.perf_counter() - started
    finally:
        await admin.close()


async def _committed_past(
    admin: AIOKafkaAdminClient, group: str, ends: dict[TopicPartition, int]
) -> bool:
    committed = await admin.list_consumer_group_offsets(group)
    return all(tp in committed and committed[tp].offset >= end for tp, end in ends.items())


def main(repeats: int) -> dict[str, Any]:
    if LIVE:
        return live_main(repeats)
    records, failing = pings()
    server = bootstrap()
    base_rates: list[float] = []
    system_rates: list[float] = []
    audit: dict[str, int] = {}
    for _ in range(max(1, repeats)):
        ns, settings = fresh(server)
        asyncio.run(produce(settings, records))
        base_rates.append(len(records) / asyncio.run(baseline(settings, len(records))))
        system_rates.append(len(records) / system(settings, ns))
        audit = audited(ns, settings, failing)
        shutil.rmtree(ns.tmp, ignore_errors=True)
    result: dict[str, Any] = {
        "pings": len(records),
        "system_pings_per_s": {"median": statistics.median(system_rates), "all": system_rates},
        "baseline_pings_per_s": {"median": statistics.median(base_rates), "all": base_rates},
        "ratio": statistics.median(system_rates) / statistics.median(base_rates),
        "audit_events_of_the_last_run": audit,
        "goal": {"ratio": 0.5, "pings_per_s": 10_000},
    }
    print(f"P1 throughput: {len(records):,} pings, {len(system_rates)} run(s), alternating")
    print(
        f"  worker  : {result['system_pings_per_s']['median']:>9,.0f} pings/s "
        f"({', '.join(f'{r:,.0f}' for r in system_rates)})"
    )
    print(
        f"  baseline: {result['baseline_pings_per_s']['median']:>9,.0f} pings/s "
        f"({', '.join(f'{r:,.0f}' for r in base_rates)})"
    )
    print(f"  ratio   : {result['ratio']:.3f}")
    print(f"  audit   : {audit} (no false pages)")
    return result


# -- live: the pings produced while the worker runs, as a fleet sends them -------------------
LIVE = os.environ.get("CR_BENCH_LIVE", "")  # "cold": first pings; "warm": past the flap window
WARM_ROUNDS = 22  # a connector's flap window holds 21 checks


def live_pings(connectors: int, rounds: int, stamped_at: int) -> list[tuple[bytes, bytes]]:
    """`rounds` healthy pings per connector, each stamped with the time it is made (a fleet's
    clock: the record's create time is its `checked_at`), round after round."""
    codec = registry().codec("HealthPing")
    out = []
    for round_ in range(rounds):
        for index in range(connectors):
            connector = f"LV-{index:05d}"
            out.append(
                (
                    connector.encode(),
                    codec.encode(
                        {
                            "connector_id": connector,
                            "tenant_id": "acme",
                            "status": "HEALTHY",
                            "failure": None,
                            "retryable": True,
                            "checked_at": stamped_at + round_,
                            "latency_ms": 5,
                            "message": None,
                            "position": None,
                        }
                    ),
                )
            )
    return out


async def _produce_live(settings: Settings, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, linger_ms=5, max_batch_size=262144
    )
    await producer.start()
    try:
        sent = [
            await producer.send(settings.topics.health, key=key, value=value)
            for key, value in records
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def live_run(mode: str) -> dict[str, Any]:
    """Seconds from the first produce until the worker has committed every ping, the pings
    produced (pre-encoded, at full speed) while it runs; `warm`: after every connector is past
    its flap window."""
    ns, settings = fresh(bootstrap())
    asyncio.run(ensure_topics(settings))
    policy = policy_file(ns.tmp, HEARTBEAT_TIMEOUT_S)
    rounds = max(1, PINGS // CONNECTORS)
    with running_worker(ns, settings, policy=policy):
        now = time.time_ns() // 1_000_000
        if mode == "warm":
            asyncio.run(_produce_live(settings, live_pings(CONNECTORS, WARM_ROUNDS, now)))
            asyncio.run(_until_committed(ns, settings))
        load = live_pings(CONNECTORS, rounds, now + WARM_ROUNDS)
        started = time.perf_counter()
        asyncio.run(_produce_live(settings, load))
        asyncio.run(_until_committed(ns, settings))
        seconds = time.perf_counter() - started
    audit = audited(ns, settings, set())
    shutil.rmtree(ns.tmp, ignore_errors=True)
    return {"mode": mode, "pings": len(load), "seconds": seconds, "audit": audit}


def live_main(repeats: int) -> dict[str, Any]:
    modes = ("cold", "warm") if LIVE == "both" else (LIVE,)
    runs = [live_run(mode) for _ in range(max(1, repeats)) for mode in modes]
    records, _ = pings()
    _, settings = fresh(bootstrap())
    asyncio.run(produce(settings, records))
    ceiling = len(records) / asyncio.run(baseline(settings, len(records)))
    for run in runs:
        rate = run["pings"] / run["seconds"]
        run["pings_per_s"] = rate
        print(
            f"  live {run['mode']}: {run['pings']:,} pings from {CONNECTORS:,} connectors "
            f"in {run['seconds']:.1f} s = {rate:,.0f} pings/s ({rate / ceiling:.2f} of the raw "
            f"loop's {ceiling:,.0f}/s); audit {run['audit']}"
        )
    return {"connectors": CONNECTORS, "runs": runs, "baseline_pings_per_s": ceiling}
