"""The router: every external input, validated, onto the internal inputs topic by connector.

It is the sequencer of the pipeline — the order of the inputs topic is the order the
decider applies, and the order a reference fold reproduces — and it is stateless, so it is
a plain aiokafka consume → decode → produce loop in batches rather than a Faust agent.
Faust's per-event stream machinery tops out at ~4,000 events/s on our 2-core machine
(BENCHMARKS.md) and the decider already pays it once; paying it twice starved the decider.

Polls are pipelined: the next poll is decoded and sent while the previous polls' records
are in flight; each poll's source offsets are committed (and count as forwarded, for the
front) only once the broker has acked its batches and every earlier poll is done, in poll
order. At most IN_FLIGHT_POLLS polls are unacked at a time.

It forwards in `InputBatch` records (schemas/input_batch.avsc): the inputs of one poll
bound for one inputs partition, up to BATCH_ITEMS, each with its source
("<topic>/<partition>/<offset>"), so the decider pays Faust's per-event cost once per batch.

Forwarding is at-least-once made idempotent: on assignment the router reads the tail of
the inputs topic back to find what it already forwarded beyond its committed offsets (a
crash between produce and commit), then skips that. So the inputs topic holds each external
input once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from agents.broker.client import client_options, reader, topic_partitions
from agents.settings import Settings
from agents.wire.codec import SchemaRegistry
from agents.wire.partitioning import partition_of
from agents.wire.records import BadInput, batch_origins, decode_input
from streams.models import AdminCommand, DeciderInput, HealthPing, RecoveryResult

log = logging.getLogger("connector_recovery.router")

# How far back (records per inputs partition) the read-back looks for forwarded records
# beyond the committed offsets: far more than one poll's batches, which is all a crash can
# leave.
READ_BACK_RECORDS = 2_000
BATCH_RECORDS = 2_000  # records per poll of the external topics
BATCH_ITEMS = 500  # inputs per InputBatch record (at most agents.wire.records.BATCH_SLOTS)
IN_FLIGHT_POLLS = 4  # polls sent but not yet acked and committed
# A stopping router waits this long for its polls in flight to be acked and committed.
STOP_COMMIT_S = 3.0

DeadLetter = Callable[[ConsumerRecord[bytes, bytes], str], Awaitable[None]]


def source_of(topic: str, partition: int, offset: int) -> str:
    return f"{topic}/{partition}/{offset}"


def parse_source(value: str) -> tuple[str, int, int] | None:
    topic, _, rest = value.rpartition("/")
    topic, _, partition = topic.rpartition("/")
    try:
        return topic, int(partition), int(rest)
    except ValueError:
        return None


class Router:
    def __init__(self, settings: Settings, registry: SchemaRegistry, counters: dict[str, int]):
        self.settings = settings
        self.registry = registry
        self.counters = counters
        t = settings.topics
        self.expected: dict[str, type[DeciderInput]] = {
            t.health: HealthPing,
            t.admin: AdminCommand,
            t.recovery_results: RecoveryResult,
        }
        self.batch_codec = registry.codec("InputBatch")
        self._skip_through: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._forwarded: dict[TopicPartition, int] = {}  # next offset to forward, per source
        self._last_timestamp: dict[TopicPartition, int] = {}  # of the last record forwarded
        self._unacked: dict[TopicPartition, int] = {}  # polls in flight with its records
        self._stopping = False

    def stop(self) -> None:
        """End `run` after the poll at hand is sent, and once what is in flight is acked
        and committed (within STOP_COMMIT_S): nothing forwarded is left uncommitted."""
        self._stopping = True

    async def front(self, now: int) -> int | None:
        """The time up to which every external input on this router's partitions has been
        forwarded (and acked): `now` for a partition it has forwarded to its end offset
        (asked of the broker now), else the timestamp of the last record it forwarded
        from it. None before the router has a position on each of its partitions.

        A tick sent now lands on the inputs topic after all of that; so the clock may fire a
        deadline only up to this front, whatever this process was busy with meanwhile."""
        consumer = self._consumer
        if consumer is None:
            return None
        assigned = consumer.assignment()
        if not assigned:
            return now
        try:
            ends = await consumer.end_offsets(list(assigned))
        except KafkaError as error:  # e.g. amid a rebalance: the next tick asks again
            log.info("no end offsets for the inputs front (%s)", error)
            return None
        front = now
        for tp in assigned:
            forwarded = self._forwarded.get(tp)
            if forwarded is None:
                return None
            if forwarded < ends[tp]:
                last = self._last_timestamp.get(tp)
                if last is None:
                    return None
                front = min(front, last)
        return front

    async def run(self, producer: AIOKafkaProducer) -> None:
        """Route until stopped (`stop`) or cancelled. `producer` is shared with the rest of
        the worker. A cancelled router may leave forwarded records uncommitted (the poll
        being sent): the next owner reads them back."""
        consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            group_id=self.settings.router_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=BATCH_RECORDS,
            fetch_max_wait_ms=50,
            session_timeout_ms=int(self.settings.session_timeout_s * 1000),
            request_timeout_ms=int(self.settings.request_timeout_s * 1000),
            heartbeat_interval_ms=int(min(3.0, self.settings.session_timeout_s / 3) * 1000),
        )
        await consumer.start()
        self._consumer = consumer
        router = self
        in_flight: deque[asyncio.Task[None]] = deque()  # one per poll, in poll order

        class ReadBack(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped base
            async def on_partitions_revoked(self, _revoked: Any) -> None:
                # Commit what is acked before the partitions go; a failure surfaces in
                # the loop below.
                await asyncio.gather(*in_flight, return_exceptions=True)

            async def on_partitions_assigned(self, assigned: Any) -> None:
                await router._read_back(set(assigned))

        consumer.subscribe(list(self.expected), listener=ReadBack())
        try:
            while not self._stopping:
                batch = await consumer.getmany(timeout_ms=100)
                while in_flight and (in_flight[0].done() or len(in_flight) >= IN_FLIGHT_POLLS):
                    await in_flight.popleft()  # raises what failed
                if batch:
                    sent, commit = await self._send(producer, batch)
                    previous = in_flight[-1] if in_flight else None
                    in_flight.append(
                        asyncio.create_task(self._complete(consumer, batch, sent, commit, previous))
                    )
                # A partition with nothing forwarded yet is forwarded up to its position,
                # unless records of it are still in flight (the position is past those).
                for tp in consumer.assignment() - self._forwarded.keys() - self._unacked.keys():
                    self._forwarded[tp] = await consumer.position(tp)
        finally:
            await _settle(in_flight)
            self._consumer = None
            await consumer.stop()

    async def _send(
        self,
        producer: AIOKafkaProducer,
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
    ) -> tuple[list[asyncio.Future[Any]], dict[TopicPartition, int]]:
        """One poll's records onto the inputs topic (and dead letters): the send futures,
        and the offsets to commit once they are acked."""
        pending: list[asyncio.Future[Any]] = []
        commit: dict[TopicPartition, int] = {}
        dlq = self.settings.topics.dlq
        bound: dict[int, tuple[list[bytes], list[str]]] = {}  # inputs partition -> batch
        for tp, records in batch.items():
            skip_through = self._skip_through.get(tp, -1)
            expected = self.expected[tp.topic]
            for record in records:
                commit[tp] = record.offset + 1
                if record.offset <= skip_through:
                    self.counters["router_skipped_forwarded"] += 1
                    continue
                if skip_through >= 0:
                    del self._skip_through[tp]
                    skip_through = -1
                try:
                    message = decode_input(self.registry, record.value)
                    if not isinstance(message, expected):
                        raise BadInput(
                            f"{type(message).__name__} on a topic of {expected.__name__}"
                        )
                except BadInput as error:
                    reason = str(error)
                    self.counters["dead_letters"] += 1
                    log.warning(
                        "dead-lettered %s/%s/%s: %s", tp.topic, tp.partition, record.offset, reason
                    )
                    # Kafka allows a record with neither key nor value; a producer cannot
                    # send one, so it becomes an empty value (the reason says what it was).
                    both_null = record.key is None and record.value is None
                    pending.append(
                        await producer.send(
                            dlq,
                            key=record.key,
                            value=b"" if both_null else record.value,
                            headers=dead_letter_headers(
                                tp.topic, tp.partition, record.offset, reason
                            ),
                        )
                    )
                    continue
                target = partition_of(message.connector_id.encode(), self.settings.partitions)
                items, sources = bound.setdefault(target, ([], []))
                items.append(record.value)
                sources.append(source_of(tp.topic, tp.partition, record.offset))
                if len(items) == BATCH_ITEMS:
                    pending.append(await self._send_batch(producer, target, items, sources))
                    del bound[target]
        for target, (items, sources) in bound.items():
            pending.append(await self._send_batch(producer, target, items, sources))
        for tp in commit:
            self._unacked[tp] = self._unacked.get(tp, 0) + 1
        return pending, commit

    async def _complete(
        self,
        consumer: AIOKafkaConsumer,
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        sent: list[asyncio.Future[Any]],
        commit: dict[TopicPartition, int],
        previous: asyncio.Task[None] | None,
    ) -> None:
        """After the poll before it: await the acks, then count the poll as forwarded and
        commit its offsets (so commits never go back, and never run ahead of the log)."""
        try:
            # Every outcome retrieved (none left to warn "never retrieved"), the first
            # failure raised, once the poll before is done.
            outcomes = await asyncio.gather(*sent, return_exceptions=True)
            if previous is not None:
                await previous
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        finally:
            for tp in commit:
                left = self._unacked.pop(tp) - 1
                if left:
                    self._unacked[tp] = left
        self._forwarded.update(commit)
        for tp, records in batch.items():
            self._last_timestamp[tp] = max(r.timestamp for r in records)
        try:
            await consumer.commit(commit)
        except KafkaError as error:
            # A rebalance took the partitions: the new owner's read-back skips what we sent.
            log.warning("router commit failed (%s); the next owner reads back", error)

    async def _send_batch(
        self, producer: AIOKafkaProducer, partition: int, items: list[bytes], sources: list[str]
    ) -> asyncio.Future[Any]:
        value = self.batch_codec.encode({"items": items, "sources": sources})
        future: asyncio.Future[Any] = await producer.send(
            self.settings.inputs_topic, value=value, partition=partition
        )
        return future

    async def _read_back(self, assigned: set[TopicPartition]) -> None:
        """What was forwarded from `assigned` beyond their committed offsets."""
        self._skip_through = {}
        self._forwarded = {}
        self._last_timestamp = {}
        if not assigned:
            return
        wanted = {(tp.topic, tp.partition) for tp in assigned}
        consumer = reader(self.settings)
        await consumer.start()
        try:
            tps = await topic_partitions(consumer, self.settings.inputs_topic)
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            for tp in tps:
                consumer.seek(tp, max(starts[tp], ends[tp] - READ_BACK_RECORDS))
            remaining = {tp for tp in tps if ends[tp] > starts[tp]}
            highest: dict[TopicPartition, int] = {}
            while remaining:
                got = await consumer.getmany(*remaining, timeout_ms=1000)
                for records in got.values():
                    for record in records:
                        for origin in batch_origins(self.registry, record.value):
                            source = parse_source(origin)
                            if source and (source[0], source[1]) in wanted:
                                tp = TopicPartition(source[0], source[1])
                                highest[tp] = max(highest.get(tp, -1), source[2])
                remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
        finally:
            await consumer.stop()
        self._skip_through = highest
        if highest:
            log.info(
                "router read-back: forwarded through %s", {str(k): v for k, v in highest.items()}
            )


def dead_letter_headers(
    topic: str, partition: int, offset: int, reason: str
) -> list[tuple[str, bytes]]:
    return [
        ("reason", reason.encode()),
        ("source.topic", topic.encode()),
        ("source.partition", str(partition).encode()),
        ("source.offset", str(offset).encode()),
    ]


async def _settle(in_flight: deque[asyncio.Task[None]]) -> None:
    """On the way out: polls acked within STOP_COMMIT_S are committed (a stopped worker
    leaves its successor nothing to read back); the rest are cancelled, uncommitted, and
    the next owner reads them back."""
    if not in_flight:
        return
    _done, late = await asyncio.wait(in_flight, timeout=STOP_COMMIT_S)
    for task in late:
        task.cancel()
    for task in in_flight:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a failure was raised in the loop, or is moot now
