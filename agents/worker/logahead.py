"""Crash repair's read of the audit log past each owned partition's recorded position: what
it does with each event (`LogAhead.sort`) and the read itself (`read_ahead`), the same in
the worker and in the process of its own a long repair runs in (repair_process.py)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.structs import TopicPartition
from pydantic import ValidationError

from agents.broker.client import reader
from agents.settings import Settings
from agents.wire.codec import AvroCodecError, SchemaRegistry
from agents.wire.records import decode_audit
from agents.worker.checkpoints import Head, head_sequence
from streams.evolve import evolve
from streams.grouping import is_outage_key
from streams.models import AuditEvent
from streams.state import ConnectorState

log = logging.getLogger("connector_recovery.worker")

FOLD_AHEAD_SLICE = 500  # audit events read ahead between two turns of the event loop
FREEZE_EVERY = 100_000  # audit events read ahead between two freezes of the heap


@dataclass
class LogAhead:
    """What the read ahead found. An event the table's state already holds (its sequence at
    or below the stored head) is skipped. The events of a connector the table holds a state
    for are kept (`logged_ahead`), for its next input to be reconciled with (repair.py): a
    crash's few, whose detector memory only that input's re-judging restores; so are an
    outage's, and any made by an input the worker will apply again (its `source` at or past
    its inputs partition's next offset). The events of a connector the table has never
    seen (a history it did not write: another cluster's table, a rebuilt changelog) are
    folded into a new state (`repaired`: state, partition)."""

    heads: dict[int, dict[str, Head]]  # the table's, per partition (tablescan.py)
    stored: dict[int, set[str]]  # connectors the table holds a state for, per partition
    inputs_topic: str
    next_offsets: dict[int, int]  # per inputs partition, the next input to apply
    logged_ahead: dict[str, list[AuditEvent]] = field(default_factory=dict)
    repaired: dict[str, tuple[ConnectorState, int]] = field(default_factory=dict)
    skipped: int = 0

    def sort(self, partition: int, event: AuditEvent) -> None:
        connector_id = event.connector_id
        head = self.heads.get(partition, {}).get(connector_id)
        if head is not None and event.sequence <= head_sequence(head):
            self.skipped += 1
        elif (
            connector_id in self.stored.get(partition, ())
            or is_outage_key(connector_id)
            or self._made_by_input_in_flight(event)
        ):
            self.logged_ahead.setdefault(connector_id, []).append(event)
        else:
            known = self.repaired.get(connector_id)
            state = known[0] if known is not None else ConnectorState.new(connector_id)
            record = evolve(state.record, event)
            self.repaired[connector_id] = (state._replace(record=record), partition)

    def _made_by_input_in_flight(self, event: AuditEvent) -> bool:
        """Whether the input that made `event` will be applied again: it is at or past its
        inputs partition's next offset (`attributes.source`: topic/partition/offset#item)."""
        source = event.attributes.get("source")
        if not source:
            return False
        record, _, _item = source.partition("#")
        topic, _, offset = record.rpartition("/")
        topic, _, partition = topic.rpartition("/")
        if topic != self.inputs_topic:
            return False
        try:
            start = self.next_offsets.get(int(partition))
            return start is not None and int(offset) >= start
        except ValueError:
            return False


async def audit_ends(settings: Settings, partitions: set[int]) -> dict[int, int]:
    """The audit topic's end offset of each partition."""
    consumer = reader(settings)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topics.audit, p) for p in sorted(partitions)]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def read_ahead(
    settings: Settings,
    registry: SchemaRegistry,
    positions: dict[int, int],
    ends: dict[int, int],
    ahead: LogAhead,
    *,
    stopping: Callable[[], bool],
) -> int | None:
    """Each partition's events from `positions` (moved on as they are read) to `ends`, into
    `ahead`: the events read, or None if `stopping` said so first."""
    read = 0
    tps = [TopicPartition(settings.topics.audit, p) for p in sorted(positions)]
    remaining = {tp for tp in tps if ends[tp.partition] > positions[tp.partition]}
    if not remaining:
        # No consumer started for nothing: aiokafka's `stop` right after `start` raises the
        # CancelledError of a task of its own that never ran (which cancelled the
        # assignment's recovery and left the worker never ready).
        return read
    consumer = reader(settings, fetch_max_bytes=8 << 20)
    await consumer.start()
    try:
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, positions[tp.partition])
        while remaining:
            if stopping():
                return None
            # A slice at a time: aiokafka unpacks what `getmany` returns in one piece (a
            # whole fetch, ~20,000 events, held the loop for ~0.8 s).
            batch = await consumer.getmany(
                *remaining, timeout_ms=1000, max_records=FOLD_AHEAD_SLICE
            )
            await asyncio.sleep(0)
            for tp, records in batch.items():
                for record in records:
                    read += 1
                    if not read % FREEZE_EVERY:
                        # The states rebuilt from a long history the table never saw grow to
                        # one per connector; each of the collector's full passes would walk
                        # all of them (seconds of a held loop at 322,000): they are
                        # long-lived, out of those passes.
                        gc.freeze()
                    positions[tp.partition] = record.offset + 1
                    event = _decode_audit(registry, tp.partition, record)
                    if event is not None:
                        ahead.sort(tp.partition, event)
            remaining = {tp for tp in remaining if positions[tp.partition] < ends[tp.partition]}
    finally:
        await consumer.stop()
    return read


def _decode_audit(registry: SchemaRegistry, partition: int, record: Any) -> AuditEvent | None:
    try:
        return decode_audit(registry, record.value)
    except (AvroCodecError, ValidationError, ValueError) as error:
        # Not ours (a stray producer): `verify` reports it; the worker must not stop.
        log.error("undecodable audit record at %s/%s: %s", partition, record.offset, error)
        return None
