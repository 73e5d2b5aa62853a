"""Rebalance recovery: what a worker does when partitions are assigned to it, a method per
step, in the order `run` calls them. After it, the processor holds the log ahead of the
table (crash repair), the checkpoints their heads and positions, the gap filler its next
offsets, and every owned connector has a heartbeat grace on its way."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from pydantic import ValidationError

from agents.broker.client import client_options, partition_of, reader
from agents.settings import Settings
from agents.wire.codec import AvroCodecError, SchemaRegistry
from agents.wire.records import decode_audit
from agents.worker.checkpoints import AuditCheckpoints, partition_of_checkpoint_key
from agents.worker.effects import Effects
from agents.worker.processor import InputProcessor
from agents.worker.statecodec import load_head
from streams.models import AuditEvent, Watch
from streams.policy import Policy

log = logging.getLogger("connector_recovery.worker")


@dataclass
class TableScan:
    """What the owned part of the table says: its connectors, the audit position recorded
    per partition, and the chain heads of the states."""

    connectors: set[str] = field(default_factory=set)
    positions: dict[int, int] = field(default_factory=dict)
    heads: dict[int, dict[str, tuple[int, str]]] = field(default_factory=dict)


class RebalanceRecovery:
    def __init__(
        self,
        *,
        settings: Settings,
        policy: Policy,
        registry: SchemaRegistry,
        processor: InputProcessor,
        checkpoints: AuditCheckpoints,
        effects: Effects,
        raw_producer: Callable[[], Awaitable[AIOKafkaProducer]],
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.registry = registry
        self.processor = processor
        self.checkpoints = checkpoints
        self.effects = effects
        self.raw_producer = raw_producer
        # The offset each owned inputs partition must deliver next (from the committed
        # offsets at assignment): an event past it means Faust skipped inputs (gaps.py).
        self.next_offsets: dict[int, int] = {}
        self._owned_before: set[int] = set()

    async def run(self, owned: set[int], table_items: list[tuple[bytes, bytes]], now: int) -> None:
        began = time.monotonic()
        scan = self.scan_table(owned, table_items)
        scanned = time.monotonic()
        await self.read_log_ahead(owned, scan.positions)
        await self.resume_offsets(owned)
        self.rebuild_heads(scan)
        await self.checkpoints.read_last(self.settings, self.effects.checkpoint_codec)
        connectors = scan.connectors | self.expected_connectors(owned)
        self.processor.keep_owned(owned)
        graces_from = time.monotonic()
        await self.send_graces(connectors, now)
        log.info(
            "partitions %s assigned: %d connectors; table scan %.1fs, log ahead and checkpoints"
            " %.1fs, heartbeat graces sent %.1fs",
            sorted(owned),
            len(connectors),
            scanned - began,
            graces_from - scanned,
            time.monotonic() - graces_from,
        )

    def scan_table(self, owned: set[int], items: list[tuple[bytes, bytes]]) -> TableScan:
        scan = TableScan()
        for key, value in items:
            checkpointed = partition_of_checkpoint_key(key)
            if checkpointed is not None:
                if checkpointed in owned:
                    scan.positions[checkpointed] = int(value)
                continue
            partition = partition_of(key, self.settings.partitions)
            if partition not in owned:
                continue  # a standby copy: its owner watches it
            connector_id = key.decode()
            scan.connectors.add(connector_id)
            sequence, head_hash = load_head(value)
            if sequence:
                scan.heads.setdefault(partition, {})[connector_id] = (sequence, head_hash)
        return scan

    async def read_log_ahead(self, owned: set[int], recorded: dict[int, int]) -> None:
        """Crash repair: the audit events written after each owned partition's recorded
        position (by inputs whose state did not reach the table)."""
        logged_ahead: dict[str, list[AuditEvent]] = {}
        positions = {p: recorded.get(p, 0) for p in owned}
        self.checkpoints.positions = positions
        self.processor.logged_ahead = logged_ahead
        if not owned:
            return
        consumer = reader(self.settings)
        await consumer.start()
        try:
            tps = [TopicPartition(self.settings.topics.audit, p) for p in sorted(owned)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, positions[tp.partition])
            remaining = {tp for tp in tps if ends[tp] > positions[tp.partition]}
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=1000)
                for tp, records in batch.items():
                    for record in records:
                        positions[tp.partition] = record.offset + 1
                        event = self._decode_audit(tp.partition, record)
                        if event is not None:
                            logged_ahead.setdefault(event.connector_id, []).append(event)
                remaining = {tp for tp in remaining if positions[tp.partition] < ends[tp]}
        finally:
            await consumer.stop()
        found = sum(len(events) for events in logged_ahead.values())
        if found:
            log.warning("crash repair: %d audit events ahead of the state table", found)

    def _decode_audit(self, partition: int, record: Any) -> AuditEvent | None:
        try:
            return decode_audit(self.registry, record.value)
        except (AvroCodecError, ValidationError, ValueError) as error:
            # Not ours (a stray producer): `verify` reports it; the worker must not stop.
            log.error("undecodable audit record at %s/%s: %s", partition, record.offset, error)
            return None

    async def resume_offsets(self, owned: set[int]) -> None:
        """Kept for partitions this process owned before: Faust acks the events it skips as
        "from an old generation" during a rebalance (streams.py, `skipped_value`), and
        commits them, so after a second quick rebalance (a killed member's session expiring)
        the committed offset can be past inputs nobody applied. Our own next offset still
        points at them, and the first event past it makes the gap filler read them."""
        committed = await self.committed_inputs(owned)
        self.next_offsets = {
            p: self.next_offsets[p]
            if p in self._owned_before and p in self.next_offsets
            else committed[p]
            for p in owned
        }
        self._owned_before = owned

    async def committed_inputs(self, owned: set[int]) -> dict[int, int]:
        """Where the worker's group resumes each owned inputs partition: its committed
        offset, else the start of the log (the group's reset policy is earliest)."""
        if not owned:
            return {}
        tps = [TopicPartition(self.settings.inputs_topic, p) for p in sorted(owned)]
        admin = AIOKafkaAdminClient(**client_options(self.settings))
        consumer = reader(self.settings)
        await admin.start()
        await consumer.start()
        try:
            committed = await admin.list_consumer_group_offsets(self.settings.app_id)
            starts = await consumer.beginning_offsets(tps)
        finally:
            await consumer.stop()
            await admin.close()
        return {
            tp.partition: committed[tp].offset
            if tp in committed and committed[tp].offset >= 0
            else starts[tp]
            for tp in tps
        }

    def rebuild_heads(self, scan: TableScan) -> None:
        """Chain heads: the table's, moved on by the events logged ahead of it."""
        heads = scan.heads
        for connector_id, events in self.processor.logged_ahead.items():
            partition = partition_of(connector_id.encode(), self.settings.partitions)
            last = events[-1]
            heads.setdefault(partition, {})[connector_id] = (last.sequence, last.hash)
        self.checkpoints.heads = heads

    def expected_connectors(self, owned: set[int]) -> set[str]:
        """The policy's expected connectors on owned partitions: watched even if silent."""
        return {
            expected
            for expected in self.policy.expected_connectors
            if partition_of(expected.encode(), self.settings.partitions) in owned
        }

    async def send_graces(self, connectors: set[str], now: int) -> None:
        """A heartbeat grace (a `Watch`) for every owned connector: the new owner starts
        their liveness from it."""
        producer = await self.raw_producer()
        watches = [Watch(connector_id=c, at=now) for c in sorted(connectors)]
        await self.effects.send_graces(producer, watches)
