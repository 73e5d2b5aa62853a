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
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import fastavro
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress

from agents.broker.client import client_options, reader, start_client, topic_partitions
from agents.settings import Settings
from agents.wire.codec import AvroCodecError, SchemaRegistry, registry
from agents.wire.records import audit_event, audit_record, decode_audit
from schemas import SCHEMA_DIR
from streams.checkpoint import checkpoint_intact, heads_digest
from streams.models import AuditEvent
from streams.projections import tenant_key
from streams.timefmt import iso_from_ms
from streams.verify import Finding

_T = TypeVar("_T")

MANIFEST_SUFFIX = ".manifest.json"
PROGRESS_EVERY = 1000  # archive records between two progress-bar updates


@dataclass
class Tally:
    """What one pass over the log learned beside the events (a streamed read has no list
    of events to count afterwards)."""

    records: int = 0  # events and undecodable records
    # archive reads (for the manifest): each connector's newest (sequence, hash)
    heads: dict[str, tuple[int, str]] = field(default_factory=dict)
    # per partition: the chain heads below the end offset of its newest checkpoint
    below_checkpoint: dict[int, dict[str, tuple[int, str]]] = field(default_factory=dict)


def _advance_head(heads: dict[str, tuple[int, str]], event: AuditEvent) -> None:
    known = heads.get(event.connector_id)
    if known is None or event.sequence > known[0]:
        heads[event.connector_id] = (event.sequence, event.hash)


@dataclass
class LogRead:
    """The events of an audit log with their positions. `events` is a list, or a stream
    that reads the log again on every pass (`read_topic`/`read_archive` with
    `stream=True`): then `findings` and `tally` describe the last pass, and `close` ends
    the read."""

    source: str
    events: Iterable[tuple[str, AuditEvent]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    partitions: dict[int, dict[str, Any]] = field(default_factory=dict)  # topic reads only
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # topic reads only
    tally: Tally = field(default_factory=Tally)

    def close(self) -> None:
        close = getattr(self.events, "close", None)
        if close is not None:
            close()


def _undecodable(position: str, key: bytes | None, error: Exception) -> Finding:
    connector = key.decode(errors="replace") if key else "?"
    return Finding("undecodable", connector, None, position, f"{type(error).__name__}: {error}")


@contextmanager
def _progress(quiet: bool, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal only (stderr, so piped output stays clean)."""
    if quiet or not sys.stderr.isatty():
        yield lambda _count: None
        return
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda count: progress.advance(task, count)


class _TopicEvents:
    """The audit topic, every partition from the beginning to the end offsets captured when
    opened (read-only: no consumer group, no commit), decoded one fetch at a time; each
    iteration is a new pass over the same records."""

    def __init__(self, settings: Settings, read: LogRead, quiet: bool) -> None:
        self.settings = settings
        self.read = read
        self.quiet = quiet
        self.loop = asyncio.new_event_loop()
        self.consumer: AIOKafkaConsumer | None = None
        try:
            self.loop.run_until_complete(self._open())
        except BaseException:
            self.close()
            raise

    async def _open(self) -> None:
        settings = self.settings
        self.consumer = consumer = reader(settings, bounded=True)
        await start_client(consumer)
        self.tps = await topic_partitions(consumer, settings.topics.audit)
        if not self.tps:
            raise RuntimeError(
                f"no topic {settings.topics.audit!r} on {settings.bootstrap_servers}"
            )
        self.starts = await consumer.beginning_offsets(self.tps)
        self.ends = await consumer.end_offsets(self.tps)
        self.read.checkpoints = await _read_checkpoints(consumer, settings)
        self.cuts = {
            partition: checkpoint["end_offset"]
            for partition, checkpoint in _newest_intact(self.read.checkpoints).items()
        }

    async def _rewind(self) -> None:
        assert self.consumer is not None  # noqa: S101 - only called from __iter__
        self.consumer.assign(self.tps)  # aiokafka builds its futures in the running loop
        await self.consumer.seek_to_beginning(*self.tps)

    def _run(self, step: Awaitable[_T]) -> _T:
        return self.loop.run_until_complete(step)

    def __iter__(self) -> Iterator[tuple[str, AuditEvent]]:
        assert self.consumer is not None, "iterated after close"  # noqa: S101 - a caller bug
        consumer, read, ends = self.consumer, self.read, self.ends
        read.findings = []
        read.tally = Tally()
        read.partitions = {tp.partition: {"count": 0, "end_offset": ends[tp]} for tp in self.tps}
        self._run(self._rewind())
        codec = registry()
        shared: dict[object, object] = {}  # see `audit_event`
        total = sum(ends[tp] - self.starts[tp] for tp in self.tps)
        with _progress(self.quiet, "reading the audit topic", total) as advance:
            pending = {tp for tp in self.tps if ends[tp] > self.starts[tp]}
            while pending:
                batch = self._run(consumer.getmany(*pending, timeout_ms=1000))
                for tp, fetched in batch.items():
                    end = ends[tp]
                    records = [r for r in fetched if r.offset < end]
                    if records:
                        yield from self._decoded(tp.partition, records, codec, shared)
                    advance(len(fetched))
                pending = {tp for tp in pending if self._run(consumer.position(tp)) < ends[tp]}
        for info in read.partitions.values():
            for name in ("first", "last"):
                if f"{name}_ms" in info:
                    info[f"{name}_time"] = iso_from_ms(info.pop(f"{name}_ms"))

    def _decoded(
        self,
        partition: int,
        records: list[Any],
        codec: SchemaRegistry,
        shared: dict[object, object],
    ) -> Iterator[tuple[str, AuditEvent]]:
        """The events of one fetch of one partition; what it tallies is per fetch."""
        read, tally = self.read, self.read.tally
        info = read.partitions[partition]
        info.setdefault("first_offset", records[0].offset)
        info["last_offset"] = records[-1].offset
        info["count"] += len(records)
        tally.records += len(records)
        cut = self.cuts.get(partition, 0)
        below = tally.below_checkpoint.setdefault(partition, {})
        first: AuditEvent | None = None
        event: AuditEvent | None = None
        for record in records:
            position = f"{partition}/{record.offset}"
            try:
                event = decode_audit(codec, record.value, shared)
            except (AvroCodecError, ValidationError, ValueError) as error:
                read.findings.append(_undecodable(position, record.key, error))
                continue
            if first is None:
                first = event
            if record.offset < cut:
                _advance_head(below, event)
            yield position, event
        if first is not None and event is not None:
            info.setdefault("first_ms", first.occurred_at)
            info["last_ms"] = event.occurred_at

    def close(self) -> None:
        if self.consumer is not None:
            self._run(self.consumer.stop())
            self.consumer = None
        if not self.loop.is_closed():
            self.loop.close()


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
    # the end first, while nothing is assigned: no fetch of this partition is in flight yet
    end = (await consumer.end_offsets([tp]))[tp]
    if end == 0:
        return []
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    codec = registry().codec("AuditCheckpoint")
    checkpoints: list[dict[str, Any]] = []
    while await consumer.position(tp) < end:
        for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
            checkpoints.extend(codec.decode(r.value) for r in records)
    return checkpoints


def _newest_intact(checkpoints: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    latest: dict[int, dict[str, Any]] = {}
    for checkpoint in checkpoints:
        if not checkpoint_intact(checkpoint):
            continue
        current = latest.get(checkpoint["partition"])
        if current is None or checkpoint["end_offset"] >= current["end_offset"]:
            latest[checkpoint["partition"]] = checkpoint
    return latest


def check_checkpoints(read: LogRead) -> list[Finding]:
    """The log against the newest checkpoint of each partition: a cut-off tail is found.
    Uses what the last pass over the topic tallied, so call it after reading the events."""
    findings = [
        Finding(
            "checkpoint_altered",
            "*",
            None,
            f"{checkpoint['partition']}/-",
            "a checkpoint does not match its own hash",
        )
        for checkpoint in read.checkpoints
        if not checkpoint_intact(checkpoint)
    ]
    for partition, checkpoint in sorted(_newest_intact(read.checkpoints).items()):
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
        heads = read.tally.below_checkpoint.get(partition, {})
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


def read_topic(settings: Settings, quiet: bool = False, stream: bool = False) -> LogRead:
    """The audit topic; `stream`: events are read while they are folded, not held."""
    read = LogRead(f"topic {settings.topics.audit}")
    events = _TopicEvents(settings, read, quiet)
    if stream:
        read.events = events
    else:
        try:
            read.events = list(events)
        finally:
            events.close()
    return read


def _audit_schema() -> Any:
    return fastavro.schema.load_schema(str(SCHEMA_DIR / "audit_event.avsc"))


class _ArchiveEvents:
    """An archive written by `export`, decoded record by record on every iteration."""

    def __init__(self, path: Path, read: LogRead, quiet: bool) -> None:
        self.path = path
        self.read = read
        self.quiet = quiet

    def __iter__(self) -> Iterator[tuple[str, AuditEvent]]:
        read = self.read
        read.findings = []
        read.tally = tally = Tally()
        with self.path.open("rb") as handle:
            try:
                records = fastavro.reader(handle)
            except Exception as error:  # not an Avro container at all
                tally.records += 1
                read.findings.append(_undecodable("#0", None, error))
                return
            build = _event_builder(records)
            with _progress(
                self.quiet, "reading the archive", _manifest_count(self.path)
            ) as advance:
                index = 0
                while True:
                    try:
                        record = next(records)
                    except StopIteration:
                        break
                    except Exception as error:  # a corrupt block: report it, stop reading there
                        read.findings.append(_undecodable(f"#{index}", None, error))
                        break
                    tally.records += 1
                    try:
                        event = build(_plain_times(record))
                    except ValidationError as error:
                        read.findings.append(_undecodable(f"#{index}", None, error))
                    else:
                        _advance_head(tally.heads, event)
                        yield f"#{index}", event
                    index += 1
                    if index % PROGRESS_EVERY == 0:
                        advance(PROGRESS_EVERY)


def _event_builder(records: Any) -> Callable[[dict[str, Any]], AuditEvent]:
    """How an archive's records become events: those of an archive written with the current
    schema hold the Avro types `audit_event` relies on; any other writer schema (an older
    version, or a file that only claims to be an archive) is validated field by field."""
    codec = registry()
    try:
        version = codec.version_of(json.loads(records.metadata["avro.schema"]))
    except (KeyError, TypeError, ValueError):
        version = None
    if version is not codec.current["AuditEvent"]:
        return AuditEvent.model_validate
    shared: dict[object, object] = {}
    return lambda record: audit_event(record, shared)


def _manifest_count(path: Path) -> int | None:
    try:
        count = json.loads(Path(str(path) + MANIFEST_SUFFIX).read_text())["count"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no (readable) manifest: the bar shows the pace, not the share
    return count if isinstance(count, int) else None


def read_archive(path: Path, quiet: bool = True, stream: bool = False) -> LogRead:
    """An exported archive; `stream`: events are read while they are folded, not held."""
    read = LogRead(f"archive {path}")
    events = _ArchiveEvents(path, read, quiet)
    read.events = events if stream else list(events)
    return read


def _plain_times(record: Any) -> Any:
    occurred = record.get("occurred_at")
    if hasattr(occurred, "timestamp"):  # fastavro applies the timestamp-millis logical type
        record["occurred_at"] = round(occurred.timestamp() * 1000)  # a fresh dict per record
    return record


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export(
    read: LogRead, out: Path, in_scope: Callable[[str], bool] | None = None
) -> dict[str, Any]:
    """Write an Avro container (deflate) and its manifest, streaming the events through;
    return the manifest. `in_scope` picks connectors (all when None)."""
    schema = fastavro.parse_schema(_audit_schema())
    heads: dict[str, tuple[int, str]] = {}
    count = 0
    first: int | None = None
    last: int | None = None

    def records() -> Iterator[dict[str, Any]]:
        nonlocal count, first, last
        for _, event in read.events:
            if in_scope is not None and not in_scope(event.connector_id):
                continue
            count += 1
            _advance_head(heads, event)
            first = event.occurred_at if first is None else min(first, event.occurred_at)
            last = event.occurred_at if last is None else max(last, event.occurred_at)
            yield audit_record(event)  # fastavro writes timestamp-millis from epoch ms ints

    with out.open("wb") as handle:
        fastavro.writer(handle, schema, records(), codec="deflate")
    manifest = {
        "file": out.name,
        "sha256": _sha256_of(out),
        "count": count,
        "source": read.source,
        "exported_at": iso_from_ms(time.time_ns() // 1_000_000),
        "first_time": None if first is None else iso_from_ms(first),
        "last_time": None if last is None else iso_from_ms(last),
        "partitions": {str(p): info for p, info in sorted(read.partitions.items())},
        "chain_heads": {
            connector: {"sequence": sequence, "hash": head_hash}
            for connector, (sequence, head_hash) in sorted(heads.items())
        },
    }
    Path(str(out) + MANIFEST_SUFFIX).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def check_manifest(path: Path, read: LogRead) -> list[Finding]:
    """Compare an archive with its manifest (when there is one). Uses what the last pass
    over the archive tallied, so call it after reading the events."""
    manifest_path = Path(str(path) + MANIFEST_SUFFIX)
    if not manifest_path.exists():
        return []
    manifest = json.loads(manifest_path.read_text())
    findings: list[Finding] = []
    digest = _sha256_of(path)
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
    if read.tally.records != manifest["count"]:
        findings.append(
            Finding(
                "archive_count",
                "*",
                None,
                None,
                f"{read.tally.records} records, manifest says {manifest['count']}",
            )
        )
    heads = read.tally.heads
    for connector, head in manifest["chain_heads"].items():
        reached = heads[connector][0] if connector in heads else 0
        if reached < head["sequence"]:
            findings.append(
                Finding(
                    "truncated",
                    connector,
                    reached,
                    None,
                    f"the archive ends at sequence {reached}, the manifest's "
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

    def connectors(self, events: Iterable[tuple[str, AuditEvent]]) -> set[str] | None:
        """Connectors in scope, None for all. Tenant and connector filters act on whole
        chains (a connector belongs to the tenant of its newest event), so a tenant scope
        reads the events once before the fold."""
        if self.tenant is None:
            return None if self.connector is None else {self.connector}
        tenant_of: dict[str, str] = {}
        for _, event in events:
            tenant_of[event.connector_id] = tenant_key(event.tenant_id)
        return {
            c
            for c, t in tenant_of.items()
            if t == self.tenant and (self.connector is None or c == self.connector)
        }

    def in_period(self, at: int) -> bool:
        return (self.since_ms is None or at >= self.since_ms) and (
            self.until_ms is None or at < self.until_ms
        )
