"""P3 memory: peak RSS (`/usr/bin/time -v`) of `connector-recovery replay`, the streamed
fold, over a log of generated, valid, hash-chained events.

* `python -m bench memory` replays archives of growing size (`CR_BENCH_MEMORY_SIZES`,
  comma-separated event counts; default what this machine replays in a few minutes), fits
  a straight line and extrapolates it to 10,000,000 events.
* `python -m bench memory --events 10000000` measures it for real: it writes a fresh audit
  topic of that many events (or an archive, `--source archive`) and replays it once. 10M
  events take about 1.5 GB in an archive and 10 GB on the broker, and minutes to produce.

The events are P3's generated log copied under fresh connector ids, each copy chained anew
(valid hashes, so the fold does all its work). Memory grows per event and per connector, so
the shape matters: `CR_BENCH_MEMORY_EPISODES` failure episodes per connector (default 4,
P3's log: ~31 events per connector).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2

from agents.audit import log as auditlog
from agents.broker.topics import ensure_topics, owned_topics
from agents.settings import Settings, Topics
from agents.wire import cloudevents
from agents.wire.codec import registry
from agents.wire.records import audit_record
from bench.env import env_int, env_ints
from bench.replay import bootstrap, generate
from streams.chain import chain_hash
from streams.models import GENESIS_HASH, AuditEvent

DEFAULT_SIZES = "50000,150000,450000"
TARGET = 10_000_000
GIB = 1 << 30
BATCH_BYTES = 900_000  # a producer batch: under the broker's default message.max.bytes (1 MiB)
MAX_INFLIGHT = 16  # batches sent before waiting for their acknowledgements


def _renamed(text: str | None, original: str, connector: str) -> str | None:
    if text is None or not text.startswith(original):
        return text
    return connector + text[len(original) :]


def copies(template: list[AuditEvent], size: int) -> Iterator[tuple[str, AuditEvent]]:
    """`size` events with their positions: the template again and again, connector ids
    suffixed by the copy, each copy's chains hashed anew."""
    for index, fields in enumerate(wire_copies(template, size)):
        yield f"#{index}", AuditEvent.model_validate(fields)


def wire_copies(template: list[AuditEvent], size: int) -> Iterator[dict[str, Any]]:
    """The events of `copies` as wire records."""
    wire = [audit_record(event) for event in template]
    produced = 0
    copy = 0
    while True:
        heads: dict[str, str] = {}  # a copy's connectors are its own: its heads suffice
        for record in wire:
            if produced == size:
                return
            old = record["connector_id"]
            new = f"{old}-{copy}"
            fields: dict[str, Any] = {
                **record,
                "connector_id": new,
                "event_id": _renamed(record["event_id"], old, new),
                "incident_id": _renamed(record["incident_id"], old, new),
                "attributes": {
                    k: _renamed(v, old, new) or "" for k, v in record["attributes"].items()
                },
                "prev_hash": heads.get(new, GENESIS_HASH),
            }
            fields["hash"] = heads[new] = chain_hash(fields["prev_hash"], fields)
            produced += 1
            yield fields
        copy += 1


def write_archive(template: list[AuditEvent], size: int, archive: Path) -> None:
    auditlog.export(auditlog.LogRead("generated", copies(template, size)), archive)


async def produce_topic(settings: Settings, template: list[AuditEvent], size: int) -> None:
    """The events onto a fresh audit topic, keyed by connector as the worker writes them,
    with their CloudEvents headers, in large per-partition batches."""
    await ensure_topics(settings)
    codec = registry().codec("AuditEvent")
    fingerprint = codec.schema.fingerprint
    topic = settings.topics.audit
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", max_batch_size=BATCH_BYTES
    )
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        batches: dict[int, Any] = {}
        inflight: list[asyncio.Future[Any]] = []

        async def send(partition: int) -> None:
            inflight.append(
                await producer.send_batch(batches.pop(partition), topic, partition=partition)
            )
            if len(inflight) >= MAX_INFLIGHT:
                await asyncio.gather(*inflight)
                inflight.clear()

        started = time.perf_counter()
        for number, fields in enumerate(wire_copies(template, size), 1):
            key = fields["connector_id"].encode()
            partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
            event = AuditEvent.model_validate(fields)
            headers = cloudevents.headers(event, settings.event_source, fingerprint)
            value = codec.encode(fields)
            for _ in range(2):  # into the partition's batch; into a new one when it is full
                batch = batches.get(partition)
                if batch is None:
                    batch = batches[partition] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None, headers=headers):
                    break
                await send(partition)
            else:
                raise RuntimeError("a record larger than a whole batch")
            if number % 500_000 == 0:
                rate = number / (time.perf_counter() - started)
                print(f"    produced {number:,} events ({rate:,.0f}/s)", flush=True)
        for partition in list(batches):
            await send(partition)
        await asyncio.gather(*inflight)
    finally:
        await producer.stop()


async def delete_topics(settings: Settings) -> None:
    """The run's topics, so ten million events do not stay on the broker's disk."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.delete_topics([spec.name for spec in owned_topics(settings)])
    finally:
        await admin.close()


def peak_rss(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, float, str]:
    """(maximum resident set size in bytes, seconds, stdout) of one CLI command."""
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-m", "agents.cli", *argv, "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    seconds = time.perf_counter() - started
    # 1 = findings: the last copy of the template is cut mid-chain (an incident unnotified)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{argv[0]} exited {done.returncode}:\n{done.stderr[-2000:]}")
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no peak RSS in /usr/bin/time's output:\n{done.stderr}")
    return int(found.group(1)) * 1024, seconds, done.stdout


def _template() -> list[AuditEvent]:
    episodes = env_int("CR_BENCH_MEMORY_EPISODES", 4)
    template = generate(episodes, healthy_between=0 if episodes <= 4 else 42)
    connectors = len({event.connector_id for event in template})
    print(f"  template: {len(template):,} events, {len(template) / connectors:.0f} per connector")
    return template


def measured(events: int, source: str) -> dict[str, Any]:
    """One replay of a log of `events` events, its peak RSS measured."""
    template = _template()
    started = time.perf_counter()
    if source == "archive":
        archive = Path(tempfile.mkdtemp()) / "audit.avro"
        write_archive(template, events, archive)
        argv, env = ["replay", "--archive", str(archive)], None
    else:
        tag = uuid.uuid4().hex[:8]
        settings = Settings(
            bootstrap_servers=bootstrap(),
            app_id=f"bench-mem-{tag}",
            topics=Topics().with_prefix(f"bench-mem-{tag}."),
        )
        asyncio.run(produce_topic(settings, template, events))
        argv = ["replay"]
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "CR_TOPIC_PREFIX": f"bench-mem-{tag}.",
            "CR_APP_ID": settings.app_id,
        }
    written = time.perf_counter() - started
    print(f"  wrote {events:,} events to the {source} in {written:,.0f} s")
    rss, seconds, out = peak_rss(argv, env)
    print(out, end="")
    print(
        f"  {events:>10,} events from the {source}: peak RSS {rss / GIB:.3f} GiB "
        f"({rss / 2**20:,.0f} MiB), {events / seconds:,.0f} ev/s (goal ≤ 1 GiB)"
    )
    if source == "archive":
        archive.unlink()
    else:
        asyncio.run(delete_topics(settings))
    return {
        "events": events,
        "source": source,
        "peak_rss_bytes": rss,
        "seconds": seconds,
        "goal_bytes": GIB,
    }


def extrapolated() -> dict[str, Any]:
    sizes = env_ints("CR_BENCH_MEMORY_SIZES", DEFAULT_SIZES)
    template = _template()
    connectors = len({event.connector_id for event in template})
    folder = Path(tempfile.mkdtemp())
    rows = []
    for size in sizes:
        archive = folder / f"audit-{size}.avro"
        write_archive(template, size, archive)
        rss, seconds, _ = peak_rss(["replay", "--archive", str(archive)])
        rows.append({"events": size, "peak_rss_bytes": rss, "seconds": seconds})
        print(f"  {size:>10,} events: peak RSS {rss / 2**20:8.1f} MiB, {size / seconds:,.0f} ev/s")
        archive.unlink()
    (x0, y0), (x1, y1) = (
        (rows[0]["events"], rows[0]["peak_rss_bytes"]),
        (rows[-1]["events"], rows[-1]["peak_rss_bytes"]),
    )
    per_event = (y1 - y0) / (x1 - x0)
    at_target = y1 + per_event * (TARGET - x1)
    print(
        f"  slope {per_event:,.0f} B/event; extrapolated to {TARGET:,} events: "
        f"{at_target / GIB:.2f} GiB (goal ≤ 1 GiB)"
    )
    return {
        "events_per_connector": len(template) / connectors,
        "runs": rows,
        "bytes_per_event": per_event,
        "extrapolated_events": TARGET,
        "extrapolated_peak_rss_bytes": at_target,
        "goal_bytes": GIB,
    }


def main(_repeats: int, events: int | None = None, source: str = "topic") -> dict[str, Any]:
    return extrapolated() if events is None else measured(events, source)
