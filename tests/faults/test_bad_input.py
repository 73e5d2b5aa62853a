"""R4: thousands of malformed pings interleaved with good ones: every bad one is on the
dead-letter topic with a reason, every good one is processed, the worker never restarts."""

from __future__ import annotations

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

from agents.wire.codec import crc64_avro, registry
from agents.wire.records import unpack
from schemas import SCHEMA_DIR
from tests.faults.figures import FULL, record, reference_figures
from tests.kafka.harness import (
    Namespace,
    Worker,
    produce_raw,
    read_records,
    wait_caught_up,
    wait_for,
)

pytestmark = [pytest.mark.faults, pytest.mark.kafka]

BAD, GOOD = (50_000, 10_000) if FULL else (10_000, 2_000)
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


def test_malformed_pings_go_to_the_dlq_and_good_ones_are_processed(
    ns: Namespace, tmp_path: Path
) -> None:
    rng = random.Random(404)  # noqa: S311 - reproducible input, not a secret
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    worker = Worker(ns, policy=policy).start()
    try:
        pid = worker.process.pid if worker.process else None
        codec = registry().codec("HealthPing")
        now = time.time_ns() // 1_000_000 - GOOD
        connectors = [f"GOOD-{i:02d}" for i in range(20)]
        items: list[tuple[bytes | None, bytes | None]] = []
        kinds: Counter[str] = Counter()
        good_sent = 0
        ratio = BAD / GOOD
        for index in range(GOOD):
            connector = connectors[index % len(connectors)]
            # every 7th round the connector is down for two pings: detections to check
            status = "UNHEALTHY" if (index // len(connectors)) % 7 in (3, 4) else "HEALTHY"
            value = codec.encode(ping(connector, status, now + index))
            items.append((connector.encode(), value))
            good_sent += 1
            for _ in range(int(ratio) + int(rng.random() < ratio % 1)):
                kind, bad = malformed(rng, value, now + index)
                kinds[kind] += 1
                keys = [connector.encode(), rng.randbytes(4)] + ([None] if bad is not None else [])
                items.append((rng.choice(keys), bad))
        bad_sent = sum(kinds.values())
        produce_raw(ns.bootstrap, ns.topics.health, items)

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
                "lost": figures["lost"],
                "kinds": dict(kinds),
            },
        )
        print("reasons:", dict(reasons.most_common(12)))
        assert len(dead) == bad_sent
        assert all(dict(r.headers).get("reason") for r in dead)
        assert pings_forwarded == good_sent
        assert alive
        assert figures["reference_events"] > 0
        assert (figures["lost"], figures["conflicting_duplicates"], figures["extra"]) == (0, 0, 0)
    finally:
        worker.kill()
