"""Reading the audit log for auditors: from the topic (every partition, from the beginning
to the end offsets captured at start, read-only: no consumer group, no commit) or from an
archive written by `export` (Avro Object Container File + manifest).

Every record is returned with its position (`partition/offset` on the topic, `#index` in an
archive). A record that cannot be decoded is not skipped: it comes back as a finding.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from pydantic import ValidationError
from rich.progress import Progress

from agents.broker.client import client_options, reader, start_client, topic_partitions
from agents.settings import Settings
from agents.wire.codec import AvroCodecError, registry
from agents.wire.records import decode_audit
from schemas import SCHEMA_DIR
from streams.checkpoint import checkpoint_intact, heads_digest
from streams.models import AuditEvent
from streams.projections import tenant_key
from streams.timefmt import iso_from_ms
from streams.verify import Finding

MANIFEST_SUFFIX = ".manifest.json"


@dataclass
class LogRead:
    source: str
    events: list[tuple[str, AuditEvent]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    partitions: dict[int, dict[str, Any]] = field(default_factory=dict)  # topic reads only
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # topic reads only


def _undecodable(position: str, key: bytes | None, error: Exception) -> Finding:
    connector = key.decode(errors="replace") if key else "?"
    return Finding("undecodable", connector, None, position, f"{type(error).__name__}: {error}")


async def _read_topic(settings: Settings, quiet: bool) -> LogRead:
    read = LogRead(f"topic {settings.topics.audit}")
    consumer = reader(settings)
    await start_client(consumer)
    try:
        tps = await topic_partitions(consumer, settings.topics.audit)
        if not tps:
            raise RuntimeError(
                f"no topic {settings.topics.audit!r} on {settings.bootstrap_servers}"
            )
        consumer.assign(tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            read.partitions[tp.partition] = {"count": 0, "end_offset": ends[tp]}
        await consumer.seek_to_beginning(*tps)
        total = sum(ends[tp] - starts[tp] for tp in tps)
        codec = registry()
        with Progress(disable=quiet, transient=True) as progress:
            task = progress.add_task("reading the audit topic", total=total)
            pending = {tp for tp in tps if ends[tp] > starts[tp]}
            while pending:
                batch = await consumer.getmany(*pending, timeout_ms=1000)
                for tp, records in batch.items():
                    info = read.partitions[tp.partition]
                    for record in records:
                        if record.offset >= ends[tp]:
                            continue
                        position = f"{tp.partition}/{record.offset}"
                        info.setdefault("first_offset", record.offset)
                        info["last_offset"] = record.offset
                        info["count"] += 1
                        try:
                            event = decode_audit(codec, record.value)
                        except (AvroCodecError, ValidationError, ValueError) as error:
                            read.findings.append(_undecodable(position, record.key, error))
                            continue
                        read.events.append((position, event))
                        when = iso_from_ms(event.occurred_at)
                        info.setdefault("first_time", when)
                        info["last_time"] = when
                    progress.advance(task, len(records))
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
        read.checkpoints = await _read_checkpoints(consumer, settings)
    finally:
        await consumer.stop()
    return read


async def _read_checkpoints(consumer: AIOKafkaConsumer, settings: Settings) -> list[dict[str, Any]]:
    topic = settings.topics.checkpoints
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return []  # a log written before checkpoints existed
    finally:
        await admin.close()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    end = (await consumer.end_offsets([tp]))[tp]
    codec = registry().codec("AuditCheckpoint")
    checkpoints: list[dict[str, Any]] = []
    while await consumer.position(tp) < end:
        for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
            checkpoints.extend(codec.decode(r.value) for r in records)
    return checkpoints


def check_checkpoints(read: LogRead) -> list[Finding]:
    """The log against the newest checkpoint of each partition: a cut-off tail is found."""
    findings: list[Finding] = []
    latest: dict[int, dict[str, Any]] = {}
    for checkpoint in read.checkpoints:
        if not checkpoint_intact(checkpoint):
            findings.append(
                Finding(
                    "checkpoint_altered",
                    "*",
                    None,
                    f"{checkpoint['partition']}/-",
                    "a checkpoint does not match its own hash",
                )
            )
            continue
        current = latest.get(checkpoint["partition"])
        if current is None or checkpoint["end_offset"] >= current["end_offset"]:
            latest[checkpoint["partition"]] = checkpoint
    for partition, checkpoint in sorted(latest.items()):
        end = read.partitions.get(partition, {}).get("end_offset", 0)
        if end < checkpoint["end_offset"]:
            findings.append(
                Finding(
                    "truncated",
                    "*",
                    None,
                    f"{partition}/{end}",
                    f"partition {partition} holds {end} records; its checkpoint of "
                    f"{iso_from_ms(checkpoint['written_at'])} recorded {checkpoint['end_offset']}",
                )
            )
            continue
        heads: dict[str, tuple[int, str]] = {}
        for position, event in read.events:
            part, offset = position.split("/")
            if int(part) == partition and int(offset) < checkpoint["end_offset"]:
                known = heads.get(event.connector_id)
                if known is None or event.sequence > known[0]:
                    heads[event.connector_id] = (event.sequence, event.hash)
        if heads_digest(heads) != checkpoint["heads_sha256"]:
            findings.append(
                Finding(
                    "checkpoint_mismatch",
                    "*",
                    None,
                    f"{partition}/{checkpoint['end_offset']}",
                    f"the chain heads of partition {partition} differ from its checkpoint",
                )
            )
    return findings


def read_topic(settings: Settings, quiet: bool = False) -> LogRead:
    return asyncio.run(_read_topic(settings, quiet))


def _audit_schema() -> Any:
    return fastavro.schema.load_schema(str(SCHEMA_DIR / "audit_event.avsc"))


def read_archive(path: Path) -> LogRead:
    read = LogRead(f"archive {path}")
    with path.open("rb") as handle:
        try:
            reader = fastavro.reader(handle)
            index = 0
            while True:
                try:
                    record = next(reader)
                except StopIteration:
                    break
                except Exception as error:  # a corrupt block: report it, stop reading there
                    read.findings.append(_undecodable(f"#{index}", None, error))
                    break
                try:
                    read.events.append(
                        (f"#{index}", AuditEvent.model_validate(_plain_times(record)))
                    )
                except ValidationError as error:
                    read.findings.append(_undecodable(f"#{index}", None, error))
                index += 1
        except Exception as error:  # not an Avro container at all
            read.findings.append(_undecodable("#0", None, error))
    return read


def _plain_times(record: Any) -> Any:
    occurred = record.get("occurred_at")
    if hasattr(occurred, "timestamp"):  # fastavro applies the timestamp-millis logical type
        record = {**record, "occurred_at": round(occurred.timestamp() * 1000)}
    return record


def export(read: LogRead, out: Path) -> dict[str, Any]:
    """Write an Avro container (deflate) and its manifest; return the manifest."""
    schema = fastavro.parse_schema(_audit_schema())
    records = [event.model_dump(mode="json") for _, event in read.events]
    for record in records:
        record["occurred_at"] = _to_datetime(record["occurred_at"])
    with out.open("wb") as handle:
        fastavro.writer(handle, schema, records, codec="deflate")
    heads: dict[str, dict[str, Any]] = {}
    for _, event in read.events:
        head = heads.get(event.connector_id)
        if head is None or event.sequence > head["sequence"]:
            heads[event.connector_id] = {"sequence": event.sequence, "hash": event.hash}
    times = [event.occurred_at for _, event in read.events]
    manifest = {
        "file": out.name,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "count": len(records),
        "source": read.source,
        "exported_at": iso_from_ms(time.time_ns() // 1_000_000),
        "first_time": iso_from_ms(min(times)) if times else None,
        "last_time": iso_from_ms(max(times)) if times else None,
        "partitions": {str(p): info for p, info in sorted(read.partitions.items())},
        "chain_heads": dict(sorted(heads.items())),
    }
    Path(str(out) + MANIFEST_SUFFIX).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _to_datetime(epoch_ms: int) -> Any:
    from datetime import UTC, datetime  # noqa: PLC0415

    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)


def check_manifest(path: Path, read: LogRead) -> list[Finding]:
    """Compare an archive with its manifest (when there is one)."""
    manifest_path = Path(str(path) + MANIFEST_SUFFIX)
    if not manifest_path.exists():
        return []
    manifest = json.loads(manifest_path.read_text())
    findings: list[Finding] = []
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != manifest["sha256"]:
        findings.append(
            Finding(
                "archive_altered",
                "*",
                None,
                None,
                f"sha256 {digest[:12]}… differs from the manifest's {manifest['sha256'][:12]}…",
            )
        )
    if len(read.events) + len(read.findings) != manifest["count"]:
        findings.append(
            Finding(
                "archive_count",
                "*",
                None,
                None,
                f"{len(read.events)} records, manifest says {manifest['count']}",
            )
        )
    heads: dict[str, int] = {}
    for _, event in read.events:
        heads[event.connector_id] = max(heads.get(event.connector_id, 0), event.sequence)
    for connector, head in manifest["chain_heads"].items():
        if heads.get(connector, 0) < head["sequence"]:
            findings.append(
                Finding(
                    "truncated",
                    connector,
                    heads.get(connector, 0),
                    None,
                    f"the archive ends at sequence {heads.get(connector, 0)}, the manifest's "
                    f"chain head is {head['sequence']}",
                )
            )
    return findings


@dataclass(frozen=True)
class Scope:
    tenant: str | None = None
    connector: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def connectors(self, events: list[tuple[str, AuditEvent]]) -> set[str]:
        """Connectors in scope (tenant and connector filters act on whole chains)."""
        tenant_of: dict[str, str] = {}
        for _, event in events:
            tenant_of[event.connector_id] = tenant_key(event.tenant_id)
        return {
            c
            for c, t in tenant_of.items()
            if (self.tenant is None or t == self.tenant)
            and (self.connector is None or c == self.connector)
        }

    def in_period(self, at: int) -> bool:
        return (self.since_ms is None or at >= self.since_ms) and (
            self.until_ms is None or at < self.until_ms
        )
