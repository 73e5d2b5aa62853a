"""P3: audit events/s for `verify`, `report --format json` and `replay` (each the CLI command
itself, run in this process with its output discarded), from the topic and from an archive,
side by side in the same run with the ceiling: a raw loop that only fetches and
fastavro-decodes the same records (topic), or only reads the container (archive).

Starts the local Kafka unless KAFKA_BOOTSTRAP_SERVERS is set; writes a fresh audit topic of
generated, valid, hash-chained events (the core's own decider over a simulated fleet).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import fastavro
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from agents import cli
from agents.broker.local import Broker
from agents.broker.topics import ensure_topics
from agents.kafka_internals import refresh_metadata
from agents.settings import Settings, Topics
from agents.testing.driver import Driver
from agents.wire import cloudevents
from agents.wire.codec import registry
from agents.wire.records import audit_record
from bench.env import env_int
from schemas import SCHEMA_DIR
from streams.models import AuditEvent

EVENTS_TARGET = 20_000


def generate(episodes_per_connector: int = 4, healthy_between: int = 0) -> list[AuditEvent]:
    """~20,000 events: connectors that fail and recover `episodes_per_connector` times, with
    `healthy_between` healthy checks after each recovery (enough of them keep a connector
    that fails often from being judged flapping, which would end its chain of episodes)."""
    events: list[AuditEvent] = []
    index = 0
    while len(events) < EVENTS_TARGET:
        d = Driver.with_policy(
            {"defaults": {"max_retries": 2, "attempt_timeout_s": 5}},
            connector_id=f"BENCH-{index:05d}",
            tenant_id=["acme", "globex", None][index % 3],
        )
        for _ in range(episodes_per_connector):
            d.ping(False)
            d.run_for(20, step=5)
            d.ping(True)
            d.deliver_pending()
            d.advance(30)
            for _ in range(healthy_between):
                d.ping(True)
                d.advance(5)
        events.extend(d.events)
        index += 1
    return events


def bootstrap() -> str:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        return configured

    broker = Broker(env_int("KAFKA_PORT", 9092))
    broker.up()
    return broker.bootstrap


async def publish(settings: Settings, events: list[AuditEvent]) -> None:
    await ensure_topics(settings)
    codec = registry().codec("AuditEvent")
    fingerprint = codec.schema.fingerprint
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, linger_ms=20, acks="all"
    )
    await producer.start()
    try:
        for event in events:
            await producer.send(
                settings.topics.audit,
                key=event.connector_id.encode(),
                value=codec.encode(audit_record(event)),
                headers=cloudevents.headers(event, settings.event_source, fingerprint),
            )
        await producer.flush()
    finally:
        await producer.stop()


async def raw_topic_loop(settings: Settings) -> int:
    """Fetch every record and fastavro-decode its body: the ceiling."""
    schema = fastavro.parse_schema(
        fastavro.schema.load_schema(str(SCHEMA_DIR / "audit_event.avsc"))
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    count = 0
    try:
        await refresh_metadata(consumer)
        partitions = consumer.partitions_for_topic(settings.topics.audit) or set()
        tps = [TopicPartition(settings.topics.audit, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            for records in (await consumer.getmany(*pending, timeout_ms=1000)).values():
                for record in records:
                    fastavro.schemaless_reader(io.BytesIO(record.value[10:]), schema, None)
                    count += 1
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return count


def raw_archive_loop(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in fastavro.reader(handle))


COMMANDS = {
    "verify": ["verify"],
    "report": ["report", "--format", "json"],
    "replay": ["replay"],
}


def timed(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def run_command(argv: list[str]) -> None:
    """One audit command as a user runs it (minus the interpreter start), output discarded."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        code = cli.main([*argv, "--quiet"])
    if code != 0:
        raise RuntimeError(f"`connector-recovery {' '.join(argv)}` exited {code}")


def main(repeats: int) -> dict[str, Any]:
    events = generate()
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        bootstrap_servers=bootstrap(),
        app_id=f"bench-{tag}",
        topics=Topics().with_prefix(f"bench-{tag}."),
    )
    asyncio.run(publish(settings, events))
    # the CLI reads its settings from the environment, as it does for a user
    os.environ.update(
        KAFKA_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        CR_TOPIC_PREFIX=f"bench-{tag}.",
        CR_APP_ID=settings.app_id,
    )
    archive = Path(tempfile.mkdtemp()) / "audit.avro"
    run_command(["export", "--out", str(archive)])
    sources = {"topic": [], "archive": ["--archive", str(archive)]}
    runs: dict[str, list[float]] = {"raw_topic": [], "raw_archive": []}
    for _ in range(repeats):
        seconds, count = timed(lambda: asyncio.run(raw_topic_loop(settings)))
        runs["raw_topic"].append(count / seconds)
        seconds, count = timed(lambda: raw_archive_loop(archive))
        runs["raw_archive"].append(count / seconds)
        for source, where in sources.items():
            for command, argv in COMMANDS.items():
                seconds, _ = timed(lambda argv=argv, where=where: run_command([*argv, *where]))
                runs.setdefault(f"{command}_{source}", []).append(len(events) / seconds)
    medians = {name: statistics.median(rates) for name, rates in runs.items()}
    ratios = {
        f"{command}_{source}": medians[f"{command}_{source}"] / medians[f"raw_{source}"]
        for source in sources
        for command in COMMANDS
    }
    result = {
        "events": len(events),
        "events_per_s": {
            name: {"median": medians[name], "min": min(rates), "max": max(rates)}
            for name, rates in runs.items()
        },
        "ratios": ratios,
        "ratio_topic": min(ratios[f"{c}_topic"] for c in COMMANDS),
        "ratio_archive": min(ratios[f"{c}_archive"] for c in COMMANDS),
        "goal_ratio": 0.5,
    }
    print(f"P3: {len(events):,} audit events, {repeats} repeats (medians, events/s)")
    for source in sources:
        print(f"  {source:8s} raw ceiling {medians['raw_' + source]:>9,.0f}")
        for command in COMMANDS:
            name = f"{command}_{source}"
            print(f"    {command:7s} {medians[name]:>9,.0f}   ratio {ratios[name]:.2f}")
    return result
