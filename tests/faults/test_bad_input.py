"""R4: thousands of malformed pings interleaved with good ones: every bad one is on the
dead-letter topic with a reason, every good one is processed, the worker never restarts,
no connector whose pings are all healthy is paged.

Full size: 400,000 good pings of 2,000 connectors and 50,000 bad ones, all waiting when
the worker starts. CI: 2,000 good of 20 connectors, 10,000 bad, produced as it runs."""

from __future__ import annotations

import asyncio
import copy
import functools
import io
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import fastavro
import pytest

from agents.broker.topics import ensure_topics
from agents.wire.codec import crc64_avro, registry
from agents.wire.records import unpack
from schemas import SCHEMA_DIR
from tests.faults.figures import (
    BACKLOG_PINGS,
    FLEET_CONNECTORS,
    FULL,
    TIMEOUT,
    record,
    reference_figures,
)
from tests.kafka.fleet import produce_records
from tests.kafka.harness import (
    Namespace,
    Worker,
    false_pages,
    read_records,
    wait_caught_up,
    wait_for,
)

pytestmark = [pytest.mark.faults, pytest.mark.kafka, TIMEOUT]

# Full size: 400,000 good pings of 2,000 connectors (the fleet's backlog), 50,000 bad.
BAD, GOOD = (50_000, BACKLOG_PINGS) if FULL else (10_000, 2_000)
CONNECTORS = FLEET_CONNECTORS if FULL else 20
PATTERN = 20  # the connectors whose pings say they are down now and then
POLICY = """
defaults:
  failure_threshold: 2
  max_retries: 0
  heartbeat_timeout_s: 600
"""


@functools.cache
def newer_ping_codec() -> tuple[bytes, Any]:
    """A producer ahead of us: HealthPing with a DEGRADED status this worker does not know."""
    schema = json.loads((SCHEMA_DIR / "health_ping.avsc").read_text())
    newer = copy.deepcopy(schema)
    for field in newer["fields"]:
        if field["name"] == "status":
            field["type"]["symbols"].append("DEGRADED")
    parsed = fastavro.parse_schema(newer)
    canonical = fastavro.schema.to_parsing_canonical_form(parsed)
    header = b"\xc3\x01" + crc64_avro(canonical.encode()).to_bytes(8, "little")
    return header, parsed


def ping(connector: str, status: str, checked_at: int) -> dict[str, Any]:
    return {
        "connector_id": connector,
        "tenant_id": "acme",
        "status": status,
        "failure": "timeout" if status == "UNHEALTHY" else None,
        "retryable": True,
        "checked_at": checked_at,
        "latency_ms": 3,
        "message": None,
        "position": None,
    }


def malformed(rng: random.Random, good: bytes, now: int) -> tuple[str, bytes | None]:
    codec = registry().codec("HealthPing")
    kind = rng.choice(
        ["random", "truncated", "fingerprint", "empty-id", "future", "before-2000", "newer-enum",
         "null"]
    )  # fmt: skip
    if kind == "random":
        return kind, rng.randbytes(rng.randrange(0, 120))
    if kind == "truncated":
        return kind, good[: rng.randrange(1, len(good) - 1)]
    if kind == "fingerprint":
        return kind, b"\xc3\x01" + rng.randbytes(8) + good[10:]
    if kind == "empty-id":
        return kind, codec.encode(ping("", "HEALTHY", now))
    if kind == "future":
        return kind, codec.encode(ping("BAD-F", "HEALTHY", 7_258_118_400_000))  # year 2200
    if kind == "before-2000":
        return kind, codec.encode(ping("BAD-P", "HEALTHY", 915_148_800_000))  # 1999
    if kind == "newer-enum":
        header, schema = newer_ping_codec()
        body = io.BytesIO()
        fastavro.schemaless_writer(body, schema, ping("BAD-N", "DEGRADED", now))
        return kind, header + body.getvalue()
    return kind, None


def interleaved(
    rng: random.Random, connectors: list[str]
) -> tuple[list[tuple[bytes | None, bytes | None, int]], Counter[str]]:
    """GOOD pings of `connectors`, a ping a second each up to now, at a fleet's spread
    phases, with BAD malformed records among them: (key, value, timestamp) records, and
    how many of each kind of malformed one."""
    codec = registry().codec("HealthPing")
    rounds = GOOD // len(connectors)
    start = time.time_ns() // 1_000_000 - rounds * 1000
    items: list[tuple[bytes | None, bytes | None, int]] = []
    kinds: Counter[str] = Counter()
    ratio = BAD / GOOD
    for round_ in range(rounds):
        # every 7th round the pattern's connectors are down for two pings: detections
        down = round_ % 7 in (3, 4)
        for index, connector in enumerate(connectors):
            at = start + round_ * 1000 + index * 1000 // len(connectors)
            status = "UNHEALTHY" if down and index < PATTERN else "HEALTHY"
            value = codec.encode(ping(connector, status, at))
            items.append((connector.encode(), value, at))
            for _ in range(int(ratio) + int(rng.random() < ratio % 1)):
                kind, bad = malformed(rng, value, at)
                kinds[kind] += 1
                keys = [connector.encode(), rng.randbytes(4)] + ([None] if bad is not None else [])
                items.append((rng.choice(keys), bad, at))
    return items, kinds


def test_malformed_pings_go_to_the_dlq_and_good_ones_are_processed(
    ns: Namespace, tmp_path: Path
) -> None:
    began = time.monotonic()
    rng = random.Random(404)  # noqa: S311 - reproducible input, not a secret
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    connectors = [f"GOOD-{i:04d}" for i in range(CONNECTORS)]
    items, kinds = interleaved(rng, connectors)
    good_sent = GOOD
    bad_sent = sum(kinds.values())
    # In the full size the worker finds them all waiting; in CI it starts first, as ever.
    if FULL:
        asyncio.run(ensure_topics(ns.settings()))
        produce_records(ns.bootstrap, ns.topics.health, items)
    # With the full backlog waiting, "ready" can take minutes on a busy machine.
    worker = Worker(ns, policy=policy).start(ready_timeout_s=300 if FULL else 90)
    try:
        pid = worker.process.pid if worker.process else None
        if not FULL:
            produce_records(ns.bootstrap, ns.topics.health, items)

        def all_dead_lettered() -> list[Any] | None:
            records = read_records(ns.bootstrap, ns.topics.dlq, bad_sent, 5)
            return records if len(records) >= bad_sent else None

        dead = wait_for(all_dead_lettered, 600, "every malformed ping on the DLQ", interval_s=2)
        wait_caught_up(ns, timeout_s=600)
        forwarded = read_records(ns.bootstrap, f"{ns.app_id}-inputs", 1, 5)
        reg = registry()
        pings_forwarded = sum(
            1
            for r in forwarded
            for item in unpack(reg, r.value, r.topic, r.partition, r.offset)
            if item.origin and item.origin.startswith(ns.topics.health + "/")
        )
        reasons = Counter(
            dict(r.headers).get("reason", b"").decode().split(":")[0][:40] for r in dead
        )
        figures = reference_figures(ns, policy)
        pages = false_pages(ns, set(connectors[:PATTERN]))
        assert worker.process is not None
        alive = worker.process.poll() is None
        record(
            "R4-bad-input",
            {
                "malformed": bad_sent,
                "good": good_sent,
                "dead_lettered": len(dead),
                "without_reason": sum(1 for r in dead if not dict(r.headers).get("reason")),
                "good_forwarded": pings_forwarded,
                "worker_restarts": 0
                if alive and worker.process and worker.process.pid == pid
                else 1,
                "connectors": CONNECTORS,
                "reference_events": figures["reference_events"],
                "lost": figures["lost"],
                **pages,
                "kinds": dict(kinds),
                "wall_s": round(time.monotonic() - began),
            },
        )
        print("reasons:", dict(reasons.most_common(12)))
        assert len(dead) == bad_sent
        assert all(dict(r.headers).get("reason") for r in dead)
        assert pings_forwarded == good_sent
        assert alive
        assert figures["reference_events"] > 0
        assert (figures["lost"], figures["conflicting_duplicates"], figures["extra"]) == (0, 0, 0)
        assert (pages["false_pages"], pages["false_notifications"]) == (0, 0), pages
    finally:
        worker.kill()
