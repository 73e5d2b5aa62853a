"""Rebalance recovery: what a worker does when partitions are assigned to it, a method per
step, in the order `run` calls them. After it, the processor holds the log ahead of the
table (crash repair), the checkpoints their heads and positions, the gap filler its next
offsets, and every owned connector has a heartbeat grace on its way."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from pydantic import ValidationError

from agents.broker.client import client_options, reader
from agents.settings import Settings
from agents.wire.codec import AvroCodecError, SchemaRegistry
from agents.wire.partitioning import partition_of
from agents.wire.records import decode_audit
from agents.worker.checkpoints import AuditCheckpoints, head_sequence, pack_head
from agents.worker.effects import Effects
from agents.worker.graces import Graces
from agents.worker.processor import InputProcessor
from agents.worker.tablescan import OwnedState, scan_owned
from streams.evolve import evolve
from streams.grouping import is_outage_key
from streams.models import AuditEvent
from streams.policy import Policy
from streams.state import ConnectorState

log = logging.getLogger("connector_recovery.worker")

FOLD_AHEAD_SLICE = 500  # audit events read ahead between two turns of the event loop
FREEZE_EVERY = 100_000  # audit events read ahead between two freezes of the heap
HANDED_OVER_SLICE = 5_000  # repaired states handed to the processor between two turns


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
        crash: Callable[[BaseException], Awaitable[None]],
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.registry = registry
        self.processor = processor
        self.checkpoints = checkpoints
        self.effects = effects
        self.raw_producer = raw_producer
        self.stopping = stopping  # a SIGTERM: a long read-ahead is left, not finished
        self.graces = Graces(settings, registry, raw_producer, crash)
        # The offset each owned inputs partition must deliver next (from the committed
        # offsets at assignment): an event past it means Faust skipped inputs (gaps.py).
        self.next_offsets: dict[int, int] = {}
        self._owned_before: set[int] = set()

    async def run(self, owned: set[int], table: Any, now: int) -> None:
        """`table`: the Faust table of connector states (tablescan.py reads it)."""
        began = time.monotonic()
        scan = await scan_owned(
            table, owned, self.settings.partitions, self.processor.deadlines.held
        )
        scanned = time.monotonic()
        committed = await self.committed_inputs(owned)
        self.resume_offsets(owned, committed)
        await self.read_log_ahead(owned, scan)
        self.rebuild_heads(scan)
        await self.checkpoints.read_last(self.settings, self.effects.checkpoint_codec)
        connectors = scan.connectors
        for expected in self.expected_connectors(owned):
            partition = partition_of(expected.encode(), self.settings.partitions)
            connectors.setdefault(partition, set()).add(expected)
        self.processor.keep_owned(owned)
        self.processor.schedule_outages(scan.outages)
        self.graces.give(connectors, now)  # in the background, after the worker is ready
        log.info(
            "partitions %s assigned: %d connectors; table scan %.1fs, log ahead and checkpoints"
            " %.1fs",
            sorted(owned),
            sum(len(c) for c in connectors.values()),
            scanned - began,
            time.monotonic() - scanned,
        )

    async def read_log_ahead(self, owned: set[int], scan: OwnedState) -> None:
        """Crash repair: the audit events written after each owned partition's recorded
        position, by inputs whose state did not reach the table. An event the table's state
        already holds (its sequence at or below the stored head) is skipped. The events of a
        connector the table holds a state for are kept, for its next input to be reconciled
        with (repair.py): a crash's few, whose detector memory only that input's re-judging
        restores; so are an outage's, and any made by an input the worker will apply again
        (its `source` at or past its inputs partition's next offset). The events of a
        connector the table has never seen (a history it did not write: another cluster's
        table, a rebuilt changelog) are folded into a new state now
        (`InputProcessor.repaired`), written with the partition's next batch. So what is
        held follows the connectors, not the length of a history, and what a start repairs
        is written, not repeated by the next start."""
        logged_ahead: dict[str, list[AuditEvent]] = {}
        repaired: dict[str, tuple[ConnectorState, int]] = {}  # state, partition
        positions = {p: scan.checkpoints.get(p, 0) for p in owned}
        self.checkpoints.positions = positions
        self.processor.logged_ahead = logged_ahead
        if not owned:
            return
        skipped = read = 0
        consumer = reader(self.settings, fetch_max_bytes=8 << 20)
        await consumer.start()
        try:
            tps = [TopicPartition(self.settings.topics.audit, p) for p in sorted(owned)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, positions[tp.partition])
            remaining = {tp for tp in tps if ends[tp] > positions[tp.partition]}
            while remaining:
                if self.stopping():
                    log.info("crash repair left unfinished: the worker is stopping")
                    return  # nothing of it was written: the next start reads it again
                # A slice at a time: aiokafka unpacks what `getmany` returns in one piece (a
                # whole fetch, ~20,000 events, held the loop for ~0.8 s).
                batch = await consumer.getmany(
                    *remaining, timeout_ms=1000, max_records=FOLD_AHEAD_SLICE
                )
                await asyncio.sleep(0)
                for tp, records in batch.items():
                    heads = scan.heads.get(tp.partition, {})
                    stored = scan.connectors.get(tp.partition, set())
                    for record in records:
                        read += 1
                        if not read % FREEZE_EVERY:
                            # The states rebuilt from a long history the table never saw grow
                            # to one per connector; each of the collector's full passes would
                            # walk all of them (seconds of a held loop at 322,000): they are
                            # long-lived, out of those passes.
                            gc.freeze()
                        positions[tp.partition] = record.offset + 1
                        event = self._decode_audit(tp.partition, record)
                        if event is None:
                            continue
                        connector_id = event.connector_id
                        head = heads.get(connector_id)
                        if head is not None and event.sequence <= head_sequence(head):
                            skipped += 1
                        elif (
                            connector_id in stored
                            or is_outage_key(connector_id)
                            or self._made_by_input_in_flight(event)
                        ):
                            logged_ahead.setdefault(connector_id, []).append(event)
                        else:
                            self._fold_ahead(repaired, event, tp.partition)
                remaining = {tp for tp in remaining if positions[tp.partition] < ends[tp]}
        finally:
            await consumer.stop()
        await self._hand_over(repaired, scan)
        held = sum(len(events) for events in logged_ahead.values())
        if held or repaired:
            log.warning(
                "crash repair: the audit log is ahead of the state table: %d connectors"
                " folded forward from it, %d events kept for %d re-delivered inputs' connectors"
                " (%d events the table already held)",
                len(repaired),
                held,
                len(logged_ahead),
                skipped,
            )

    async def _hand_over(
        self, repaired: dict[str, tuple[ConnectorState, int]], scan: OwnedState
    ) -> None:
        """The states rebuilt from the log to the processor (written with each partition's
        next batch), their connectors watched, their chain heads known."""
        gc.freeze()  # the last of the states rebuilt: long-lived too
        for row, (state, partition) in enumerate(repaired.values(), 1):
            if not row % HANDED_OVER_SLICE:
                await asyncio.sleep(0)  # 322,000 states held the loop for ~1.5 s
            self.processor.repaired(partition, state, -1)  # no input of it applied here
            record = state.record
            scan.connectors.setdefault(partition, set()).add(record.connector_id)  # watched
            scan.heads.setdefault(partition, {})[record.connector_id] = pack_head(
                record.sequence, record.head_hash
            )

    @staticmethod
    def _fold_ahead(
        repaired: dict[str, tuple[ConnectorState, int]], event: AuditEvent, partition: int
    ) -> None:
        """`event` into the state rebuilt for its connector, which the table never held."""
        connector_id = event.connector_id
        known = repaired.get(connector_id)
        state = known[0] if known is not None else ConnectorState.new(connector_id)
        repaired[connector_id] = (state._replace(record=evolve(state.record, event)), partition)

    def _decode_audit(self, partition: int, record: Any) -> AuditEvent | None:
        try:
            return decode_audit(self.registry, record.value)
        except (AvroCodecError, ValidationError, ValueError) as error:
            # Not ours (a stray producer): `verify` reports it; the worker must not stop.
            log.error("undecodable audit record at %s/%s: %s", partition, record.offset, error)
            return None

    def _made_by_input_in_flight(self, event: AuditEvent) -> bool:
        """Whether the input that made `event` will be applied again: it is at or past its
        inputs partition's next offset (`attributes.source`: topic/partition/offset#item)."""
        source = event.attributes.get("source")
        if not source:
            return False
        record, _, _item = source.partition("#")
        topic, _, offset = record.rpartition("/")
        topic, _, partition = topic.rpartition("/")
        if topic != self.settings.inputs_topic:
            return False
        try:
            start = self.next_offsets.get(int(partition))
            return start is not None and int(offset) >= start
        except ValueError:
            return False

    def resume_offsets(self, owned: set[int], committed: dict[int, int]) -> None:
        """Kept for partitions this process owned before: Faust acks the events it skips as
        "from an old generation" during a rebalance (streams.py, `skipped_value`), and
        commits them, so after a second quick rebalance (a killed member's session expiring)
        the committed offset can be past inputs nobody applied. Our own next offset still
        points at them, and the first event past it makes the gap filler read them."""
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

    def rebuild_heads(self, scan: OwnedState) -> None:
        """Chain heads: the table's (with the repaired states'), moved on by the events kept
        for re-delivered inputs."""
        heads = scan.heads
        for connector_id, events in self.processor.logged_ahead.items():
            partition = partition_of(connector_id.encode(), self.settings.partitions)
            last = events[-1]
            heads.setdefault(partition, {})[connector_id] = pack_head(last.sequence, last.hash)
        self.checkpoints.heads = heads

    def expected_connectors(self, owned: set[int]) -> set[str]:
        """The policy's expected connectors on owned partitions: watched even if silent."""
        return {
            expected
            for expected in self.policy.expected_connectors
            if partition_of(expected.encode(), self.settings.partitions) in owned
        }
