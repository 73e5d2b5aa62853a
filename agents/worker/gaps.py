"""The gap filler. Faust can hand a stream an event past offsets it never delivered around a
rebalance (faust-streaming #216, #221, and skipped old-generation events that it acks; seen
here in the SIGKILL test): the inputs topic has no gaps of its own, so the worker reads the
missing records directly and applies them first, in order."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiokafka.structs import ConsumerRecord, TopicPartition

from agents.broker.client import reader
from agents.settings import Settings

log = logging.getLogger("connector_recovery.worker")


async def read_gap(
    settings: Settings, topic: str, partition: int, start: int, end: int
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """The records of `topic`/`partition` from offset `start` up to `end` (exclusive)."""
    log.warning(
        "%s/%s: offsets %d..%d were not delivered by Faust; reading them directly",
        topic,
        partition,
        start,
        end - 1,
    )
    consumer = reader(settings)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        while await consumer.position(tp) < end:
            for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
                for record in records:
                    if record.offset < end:
                        yield record
    finally:
        await consumer.stop()
