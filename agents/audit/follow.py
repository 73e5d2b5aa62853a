"""Following the audit topic: every partition from the beginning, then its tail, folded into
a `LiveProjection` — the same fold `replay` uses.

This is what the worker's `/status` and `/metrics`, `connector-recovery status` and the admin
page read. It is a reader in no consumer group, so every process that follows the topic sees
the whole fleet whatever partitions it owns, and a restart rebuilds exactly what a replay of
the same topic shows. `caught_up` is set once everything that was in the topic when the
follower started has been folded; until then the views are incomplete and say so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from pydantic import ValidationError

from agents.audit.live import LiveProjection
from agents.broker.client import reader, start_client, topic_partitions
from agents.settings import Settings
from agents.wire.codec import AvroCodecError, registry
from agents.wire.records import decode_audit
from streams.models import AuditEvent

log = logging.getLogger("connector_recovery.follow")

# How long one fetch waits for new records once caught up: bounds the delay between an event
# reaching the log and the views showing it.
TAIL_WAIT_MS = 100
# How often to look again for an audit topic that does not exist yet.
TOPIC_RETRY_S = 1.0


@dataclass
class FollowProgress:
    """How far the follower is: records read of the end offsets captured at start."""

    read: int = 0
    total: int = 0
    undecodable: int = 0


class AuditFollower:
    def __init__(
        self,
        settings: Settings,
        live: LiveProjection,
        on_event: Callable[[str, AuditEvent], None] | None = None,
    ) -> None:
        self.settings = settings
        self.live = live
        self.on_event = on_event
        self.caught_up = asyncio.Event()
        self.progress = FollowProgress()
        self._codec = registry()

    async def run(self) -> None:
        """Until cancelled."""
        consumer = reader(self.settings)
        await start_client(consumer)
        try:
            tps = await self._wait_for_topic(consumer)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            starts = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
            self.progress.total = sum(ends[tp] - starts[tp] for tp in tps)
            behind = {tp for tp in tps if ends[tp] > starts[tp]}
            if not behind:
                self._announce_caught_up()
            while True:
                batch = await consumer.getmany(timeout_ms=TAIL_WAIT_MS, max_records=10_000)
                for tp, records in batch.items():
                    for record in records:
                        self._fold(tp, record.offset, record.value)
                    self.progress.read += len(records)
                if behind:
                    for tp in list(behind):
                        if await consumer.position(tp) >= ends[tp]:
                            behind.discard(tp)
                    if not behind:
                        self._announce_caught_up()
        finally:
            await consumer.stop()

    def _announce_caught_up(self) -> None:
        log.info("audit views caught up: %d records folded", self.progress.read)
        self.caught_up.set()

    async def _wait_for_topic(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        topic = self.settings.topics.audit
        while True:
            tps = await topic_partitions(consumer, topic)
            if tps:
                return tps
            await asyncio.sleep(TOPIC_RETRY_S)

    def _fold(self, tp: TopicPartition, offset: int, value: bytes | None) -> None:
        try:
            event = decode_audit(self._codec, value or b"")
        except (AvroCodecError, ValidationError, ValueError) as error:
            # Not ours (a stray producer): `verify` reports it; the views must go on.
            self.progress.undecodable += 1
            log.error("undecodable audit record at %s/%s: %s", tp.partition, offset, error)
            return
        if self.live.apply(event) and self.on_event is not None:
            self.on_event(f"{tp.partition}/{offset}", event)
