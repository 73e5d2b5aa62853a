"""The recovery executors and the notifier on plain aiokafka clients, not Faust agents.

A Faust agent pays Faust's per-event cost (~250 µs here) for every request, and a storm of
failures makes several requests per failing connector: at Faust's floor the storm ran at a
few hundred detections a second. Here each role is a consumer in a group of its own
(`<app id>-execute`, `<app id>-notify`) that takes requests in batches and runs up to
`concurrency` deliveries at once (a slow or dead endpoint holds one slot for at most its
bounded retries, never the others). An offset is committed once every request below it is
done, so a crash re-delivers at most what was in flight (at least once, as before; the
decider dedupes notification outcomes by their `dedup_key`).

A notification's outcome goes back to the decider as an input. Outcomes are packed into the
router's `InputBatch` records per inputs partition (`OutcomeBatcher`), so the decider pays
Faust's per-event cost once per batch, not once per notification.

On its first start a group has no committed offset: it starts where the Faust agents that
did this before it had committed (the worker's own group), else at the beginning.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError
from aiokafka.structs import ConsumerRecord, TopicPartition

from agents.broker.client import client_options, start_client
from agents.settings import Settings
from agents.wire.codec import SchemaRegistry
from agents.wire.partitioning import partition_of
from agents.worker.router import BATCH_ITEMS

log = logging.getLogger("connector_recovery.deliveries")

OUTCOME_SOURCE = "notifier"  # the `sources` entry of an outcome in an InputBatch
LINGER_S = 0.005  # outcomes wait at most this long for others to share their record
FETCH_RECORDS = 500

Handle = Callable[[ConsumerRecord[bytes, bytes]], Coroutine[Any, Any, None]]


class DeliveryLoop:
    """Requests from `topic`, each handled by `handle` (its outcome sent before it returns),
    up to `concurrency` at a time; offsets committed in order as requests finish."""

    def __init__(
        self, settings: Settings, topic: str, role: str, handle: Handle, concurrency: int
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.group = f"{settings.app_id}-{role}"
        self.handle = handle
        self.concurrency = concurrency

    async def run(self) -> None:
        """Until cancelled; a request whose handling fails stops the loop (the caller
        crashes the worker: requests nobody delivers must not look handled)."""
        consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
            max_poll_records=FETCH_RECORDS,
        )
        inflight: dict[TopicPartition, deque[tuple[int, asyncio.Task[None]]]] = {}
        slots = asyncio.Semaphore(self.concurrency)
        await start_client(consumer)
        try:
            consumer.subscribe([self.topic], listener=_FromLegacyOffsets(self, consumer))
            while True:
                batch = await consumer.getmany(timeout_ms=100, max_records=FETCH_RECORDS)
                for tp, records in batch.items():
                    queue = inflight.setdefault(tp, deque())
                    for record in records:
                        await slots.acquire()
                        task = asyncio.create_task(self.handle(record))
                        task.add_done_callback(lambda _task: slots.release())
                        queue.append((record.offset, task))
                await self._commit_done(consumer, inflight)
        finally:
            for queue in inflight.values():
                for _offset, task in queue:
                    task.cancel()
            await consumer.stop()

    @staticmethod
    async def _commit_done(
        consumer: AIOKafkaConsumer,
        inflight: dict[TopicPartition, deque[tuple[int, asyncio.Task[None]]]],
    ) -> None:
        done: dict[TopicPartition, int] = {}
        assigned = consumer.assignment()
        for tp, queue in list(inflight.items()):
            if tp not in assigned:  # revoked: its new owner takes over from the commit
                del inflight[tp]
                continue
            while queue and queue[0][1].done():
                offset, task = queue.popleft()
                task.result()  # a failed delivery stops the loop
                done[tp] = offset + 1
        if not done:
            return
        try:
            await consumer.commit(done)
        except CommitFailedError:
            # The group rebalanced under the commit (a worker joined or left): the new owner
            # of each partition delivers from the last commit again, and a delivery is
            # idempotent (notifications by dedup key, actions by request id).
            log.info(
                "a commit of %s lost to a rebalance: their new owners deliver from the last",
                ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(done)),
            )

    async def legacy_offsets(self) -> dict[TopicPartition, int]:
        """Where the worker's own group (the Faust agents before) had got to."""
        admin = AIOKafkaAdminClient(**client_options(self.settings))
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(self.settings.app_id)
        finally:
            await admin.close()
        return {
            tp: meta.offset
            for tp, meta in committed.items()
            if tp.topic == self.topic and meta.offset >= 0
        }


class _FromLegacyOffsets(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped base
    def __init__(self, loop: DeliveryLoop, consumer: AIOKafkaConsumer) -> None:
        self.loop = loop
        self.consumer = consumer

    async def on_partitions_revoked(self, _revoked: Any) -> None:
        pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        fresh = [tp for tp in assigned if await self.consumer.committed(tp) is None]
        if not fresh:
            return
        legacy = await self.loop.legacy_offsets()
        for tp in fresh:
            if tp in legacy:
                self.consumer.seek(tp, legacy[tp])


class OutcomeBatcher:
    """Inputs for the decider (encoded), packed per inputs partition into `InputBatch`
    records of up to `BATCH_ITEMS`; `send` returns once the broker holds its record."""

    def __init__(
        self,
        settings: Settings,
        registry: SchemaRegistry,
        producer: Callable[[], Awaitable[AIOKafkaProducer]],
    ) -> None:
        self.settings = settings
        self.batch_codec = registry.codec("InputBatch")
        self.producer = producer
        self._pending: dict[int, list[tuple[bytes, asyncio.Future[None]]]] = {}
        self._flushing: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()  # referenced until done

    async def send(self, connector_id: str, item: bytes) -> None:
        partition = partition_of(connector_id.encode(), self.settings.partitions)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending = self._pending.setdefault(partition, [])
        pending.append((item, done))
        if len(pending) >= BATCH_ITEMS:
            self._start_flush()
        elif self._flushing is None:
            self._flushing = asyncio.get_running_loop().call_later(LINGER_S, self._start_flush)
        await done

    def _start_flush(self) -> None:
        if self._flushing is not None:
            self._flushing.cancel()
            self._flushing = None
        pending, self._pending = self._pending, {}
        flush = asyncio.ensure_future(self._flush(pending))
        self._flushes.add(flush)
        flush.add_done_callback(self._flushes.discard)

    async def _flush(self, pending: dict[int, list[tuple[bytes, asyncio.Future[None]]]]) -> None:
        try:
            producer = await self.producer()
            sent = []
            for partition, items in pending.items():
                for start in range(0, len(items), BATCH_ITEMS):
                    chunk = [item for item, _ in items[start : start + BATCH_ITEMS]]
                    value = self.batch_codec.encode(
                        {"items": chunk, "sources": [OUTCOME_SOURCE] * len(chunk)}
                    )
                    sent.append(
                        await producer.send(
                            self.settings.inputs_topic, value=value, partition=partition
                        )
                    )
            await asyncio.gather(*sent)
        except Exception as error:  # every waiter learns it: their deliveries fail
            for items in pending.values():
                for _item, done in items:
                    if not done.done():
                        done.set_exception(error)
            return
        for items in pending.values():
            for _item, done in items:
                if not done.done():
                    done.set_result(None)
