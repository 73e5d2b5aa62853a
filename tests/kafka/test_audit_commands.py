"""The auditor's commands against a real topic, and a downstream consumer that is not this
project's code."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka import Consumer, TopicPartition

from agents.broker.topics import ensure_topics
from agents.wire.codec import registry
from schemas import SCHEMA_DIR
from tests.kafka.harness import (
    Namespace,
    Worker,
    produce_raw,
    read_records,
    wait_caught_up,
    wait_for,
)

pytestmark = pytest.mark.kafka


@pytest.fixture
def audited(ns: Namespace, tmp_path: Path) -> Iterator[Worker]:
    policy = tmp_path / "policy.yaml"
    policy.write_text("defaults: {max_retries: 0}\ntenants: {acme: {}, globex: {}}\n")
    worker = Worker(ns, policy=policy, env={"CR_CHECKPOINT_INTERVAL_S": "0.5"}).start()
    pings = []
    for index, tenant in enumerate(["acme", "acme", "globex"]):
        base = 1_800_000_000_000 + index * 60_000
        pings += [
            {
                "connector_id": f"AUD-{index}",
                "tenant_id": tenant,
                "status": "unhealthy",
                "failure": "timeout",
                "checked_at": base,
            },
            {
                "connector_id": f"AUD-{index}",
                "tenant_id": tenant,
                "status": "healthy",
                "checked_at": base + 2_500 * (index + 1),
            },
        ]
    path = tmp_path / "pings.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in pings))
    assert ns.cli("publish", "--file", str(path)).returncode == 0
    wait_caught_up(ns)
    wait_for(
        lambda: len(read_records(ns.bootstrap, ns.topics.audit, timeout_s=1)) >= 18,
        30,
        "the notifications' outcomes too",
    )
    yield worker
    worker.kill()


@pytest.mark.usefixtures("audited")
def test_replay_and_report_on_the_topic(ns: Namespace, tmp_path: Path) -> None:
    replay = ns.cli("replay", "--quiet")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "failures 3, recovered 3, open incidents 0" in replay.stdout
    out = tmp_path / "report.json"
    assert ns.cli("report", "--quiet", "--tenant", "acme", "--out", str(out)).returncode == 0
    built: dict[str, Any] = json.loads(out.read_text())
    assert built["scope"]["tenant"] == "acme"
    assert built["totals"]["mttr_seconds"]["mean"] == pytest.approx((2.5 + 5.0) / 2)
    assert set(built["connectors"]) == {"AUD-0", "AUD-1"}
    assert "globex" not in out.read_text()
    verify = ns.cli("verify", "--quiet")
    assert verify.returncode == 0
    assert "clean" in verify.stdout
    archive = tmp_path / "audit.avro"
    assert ns.cli("export", "--quiet", "--out", str(archive)).returncode == 0
    assert ns.cli("verify", "--archive", str(archive)).returncode == 0
    again = ns.cli("replay", "--archive", str(archive))
    assert again.stdout.splitlines()[1] == replay.stdout.splitlines()[1]  # same figures


@pytest.mark.usefixtures("audited")
def test_verify_finds_a_dropped_event_on_a_topic_copy(ns: Namespace) -> None:
    records = sorted(
        read_records(ns.bootstrap, ns.topics.audit, 18), key=lambda r: (r.partition, r.offset)
    )
    copy = Namespace(ns.bootstrap, ns.tmp, tag=ns.tag + "copy")

    asyncio.run(ensure_topics(copy.settings()))
    dropped = records[2]
    produce_raw(
        copy.bootstrap, copy.topics.audit, [(r.key, r.value) for r in records if r is not dropped]
    )
    verify = copy.cli("verify", "--quiet")
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert "sequence_gap" in verify.stdout
    assert dropped.key.decode() in verify.stdout


@pytest.mark.usefixtures("audited")
def test_a_downstream_consumer_needs_only_the_schemas(ns: Namespace) -> None:
    """librdkafka + fastavro + hashlib: decode every audit event with the .avsc and the
    documented framing, and recompute every hash chain from the documented canonical bytes."""
    schema = fastavro.schema.load_schema(str(SCHEMA_DIR / "audit_event.avsc"))
    fingerprint = bytes.fromhex(
        fastavro.schema.fingerprint(
            fastavro.schema.to_parsing_canonical_form(schema), "CRC-64-AVRO"
        )
    )
    consumer = Consumer(
        {
            "bootstrap.servers": ns.bootstrap,
            "group.id": f"auditor-{ns.tag}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    partitions = consumer.list_topics(ns.topics.audit, timeout=10).topics[ns.topics.audit]
    consumer.assign([TopicPartition(ns.topics.audit, p, 0) for p in partitions.partitions])
    records: list[bytes] = []
    while True:
        message = consumer.poll(2.0)
        if message is None:
            break
        assert message.error() is None
        value = message.value()
        assert value is not None
        records.append(value)
    consumer.close()
    assert len(records) >= 18
    heads: dict[str, str] = {}
    for value in records:
        assert value[:2] == b"\xc3\x01"
        assert value[2:10] == fingerprint
        event = fastavro.schemaless_reader(io.BytesIO(value[10:]), schema, None)
        assert isinstance(event, dict)
        event["occurred_at"] = round(event["occurred_at"].timestamp() * 1000)  # logical type
        body = {k: v for k, v in event.items() if k != "hash"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = hashlib.sha256(event["prev_hash"].encode("ascii") + canonical.encode())
        assert digest.hexdigest() == event["hash"]
        assert event["prev_hash"] == heads.get(event["connector_id"], "0" * 64)
        heads[event["connector_id"]] = event["hash"]
    assert len(heads) == 3


@pytest.mark.usefixtures("audited")
def test_a_cut_off_tail_is_found_by_the_checkpoint(ns: Namespace) -> None:
    records = sorted(
        read_records(ns.bootstrap, ns.topics.audit, 18), key=lambda r: (r.partition, r.offset)
    )
    ends: dict[int, int] = {}
    for record in records:
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)

    def covered() -> bool:
        latest: dict[int, int] = {}
        for c in read_records(ns.bootstrap, ns.topics.checkpoints, timeout_s=1):
            checkpoint = decode_checkpoint(c.value)
            latest[checkpoint["partition"]] = checkpoint["end_offset"]
        return all(latest.get(p) == end for p, end in ends.items())

    wait_for(covered, 30, "checkpoints of every partition's whole log")
    for name, keep in (("whole", records), ("cut", records[:-1])):
        copy = Namespace(ns.bootstrap, ns.tmp, tag=f"{ns.tag}{name}")
        asyncio.run(ensure_topics(copy.settings()))
        produce_raw(copy.bootstrap, copy.topics.audit, [(r.key, r.value) for r in keep])
        produce_raw(
            copy.bootstrap,
            copy.topics.checkpoints,
            [(c.key, c.value) for c in read_records(ns.bootstrap, ns.topics.checkpoints)],
        )
        verify = copy.cli("verify", "--quiet")
        if name == "whole":
            assert verify.returncode == 0, verify.stdout
        else:
            assert verify.returncode == 1, verify.stdout
            assert "truncated" in verify.stdout


def decode_checkpoint(value: bytes) -> dict[str, Any]:
    return registry().codec("AuditCheckpoint").decode(value)
