"""The Faust worker: thin agents around the pure core.

    connector.health ──┐  router (agents/worker/router.py: aiokafka batches;
    admin commands ────┼─ decode, validate; bad → DLQ) ─────────▶ <app>-inputs (key = connector)
    recovery results ──┘                                              │
    clock timer (Tick for due deadlines) ──────────────────────────────┤
                                                                       ▼
                          decide (table: connector-state) ─▶ connector.audit + commands

Every decider input is repartitioned by connector id onto one internal topic, whatever
partitioner the producer used, so one partition owner applies a connector's inputs in
order. The audit topic is co-partitioned with it. The decider takes its inputs in batches
(`take_events`): one await for a batch's outputs, then its table writes, and a table write
only when the record or detector memory changed (a steady ping changes only liveness).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import aiohttp
import faust
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from faust.streams import _current_event
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from agents.audit.follow import AuditFollower
from agents.audit.live import LiveProjection, exposition, metrics_registry
from agents.broker.client import client_options, faust_credentials, partition_of, reader
from agents.settings import Settings
from agents.wire.codec import AvroCodecError, registry
from agents.wire.records import audit_record, decode_audit, input_record, unpack
from agents.worker.clock import DeadlineIndex, due_ticks
from agents.worker.executors import execute
from agents.worker.graces import Graces
from agents.worker.notifier import deliver
from agents.worker.repair import reconcile
from agents.worker.router import Router, dead_letter_headers
from agents.worker.statecodec import dump_state, load_state
from agents.worker.tablescan import scan_owned
from streams.checkpoint import checkpoint_record
from streams.decider import decide, next_deadline
from streams.models import (
    GENESIS_HASH,
    AuditEvent,
    Command,
    DeciderInput,
    NotificationRequest,
    RecoveryRequest,
    Tick,
    Watch,
)
from streams.policy import Policy
from streams.projections import tenant_key
from streams.state import ConnectorState

log = logging.getLogger("connector_recovery.worker")

STATE_TABLE = "connector-state"
CHECKPOINT_PREFIX = b"\x00audit-position:"


def checkpoint_key(partition: int) -> bytes:
    """Per-partition table key (never a connector id: those are non-empty text)."""
    return CHECKPOINT_PREFIX + str(partition).encode()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _view(page: Any) -> Any:
    """faust calls a function view as fun(view, request); a bound method needs a shim."""

    async def view(web: Any, request: Any) -> Any:
        return await page(web, request)

    view.__name__ = page.__name__
    return view


DECIDE_BATCH = 1000
DECIDE_WITHIN_S = 0.01
# A partition more than this many inputs behind gets no ticks (agents/worker/clock.py): about
# a second of work; a caught-up worker stays well below it between batches.
CLOCK_LAG_LIMIT = 2 * DECIDE_BATCH


@contextmanager
def acting_for(event: Any) -> Iterator[None]:
    """Faust finds the partition of a table write (its changelog partition and RocksDB
    column) through the current-event context variable, which a `take_events()` batch does
    not set for its consumer; we set it to the event whose input produced the write."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class _PendingState(NamedTuple):
    state: ConnectorState
    applied: int  # offset of the last input applied, stored beside the state
    event: Any  # the Faust event of that input: its partition is where the write goes


@dataclass
class _Batch:
    states: dict[bytes, _PendingState] = field(default_factory=dict)
    commands: list[tuple[bytes, Command]] = field(default_factory=list)
    events: list[tuple[bytes, AuditEvent, int]] = field(default_factory=list)
    audit_partitions: dict[int, Any] = field(default_factory=dict)


class Pipeline:
    def __init__(self, settings: Settings, policy: Policy) -> None:
        self.settings = settings
        self.policy = policy
        self.registry = registry()
        self.audit_codec = self.registry.codec("AuditEvent")
        self.input_codecs = {name: self.registry.codec(name) for name in ("Tick", "Watch")}
        self.request_codec = self.registry.codec("RecoveryRequest")
        self.notification_codec = self.registry.codec("NotificationRequest")
        self.result_codec = self.registry.codec("RecoveryResult")
        self.notification_result_codec = self.registry.codec("NotificationResult")
        self.checkpoint_codec = self.registry.codec("AuditCheckpoint")
        self.deadlines = DeadlineIndex()
        self._session: aiohttp.ClientSession | None = None
        self.ready = asyncio.Event()
        self.counters = {
            "dead_letters": 0,
            "late_pings": 0,
            "inputs": 0,
            "events": 0,
            "skipped_redeliveries": 0,
            "repaired_dropped": 0,
            "router_skipped_forwarded": 0,
            "gap_inputs": 0,
        }
        # Liveness (last ping time, heartbeat deadline) per connector: in memory only.
        self.liveness: dict[str, tuple[int | None, int | None]] = {}
        self._producer: AIOKafkaProducer | None = None
        self._producer_lock = asyncio.Lock()  # binds to the worker's loop on first use
        # Crash repair: per connector, audit events found after the table's audit position
        # (written by inputs whose state did not reach the table); per partition, the next
        # audit offset, recorded in the table beside the state.
        self.logged_ahead: dict[str, list[AuditEvent]] = {}
        self.audit_positions: dict[int, int] = {}
        self.positions: dict[int, int] = {}  # last inputs offset processed, per partition
        # The offset each owned inputs partition must deliver next (from the committed
        # offsets at assignment): an event past it means Faust skipped inputs.
        self.next_offsets: dict[int, int] = {}
        self._owned_before: set[int] = set()
        # Checkpoints: chain heads per audit partition, and what was last checkpointed.
        self.heads: dict[int, dict[str, tuple[int, str]]] = {}
        self.checkpointed: dict[int, int] = {}
        self.checkpoint_prev: dict[int, str] = {}
        self.live = LiveProjection()
        self.follower = AuditFollower(settings, self.live)
        self.metrics = metrics_registry(self.live, self.counters_view())
        s = settings
        self.app = faust.App(
            s.app_id,
            broker=f"kafka://{s.bootstrap_servers}",
            broker_credentials=faust_credentials(s),
            store=s.store,
            datadir=str(s.data_dir),
            web_enabled=True,
            web_host=s.web_host,
            web_port=s.web_port,
            topic_partitions=s.partitions,
            broker_session_timeout=s.session_timeout_s,
            broker_heartbeat_interval=min(3.0, s.session_timeout_s / 3),
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            producer_linger_ms=5,
            table_standby_replicas=1,
            web_in_thread=False,
        )
        raw: dict[str, Any] = {
            "key_type": bytes,
            "value_type": bytes,
            "key_serializer": "raw",
            "value_serializer": "raw",
            "allow_empty": True,
        }
        t = s.topics
        self.health_topic = self.app.topic(t.health, **raw)
        self.admin_topic = self.app.topic(t.admin, **raw)
        self.results_topic = self.app.topic(t.recovery_results, **raw)
        self.inputs_topic = self.app.topic(s.inputs_topic, partitions=s.partitions, **raw)
        self.audit_topic = self.app.topic(t.audit, partitions=s.partitions, **raw)
        self.dlq_topic = self.app.topic(t.dlq, **raw)
        self.requests_topic = self.app.topic(t.recovery_requests, **raw)
        self.notifications_topic = self.app.topic(t.notifications, **raw)
        self.checkpoints_topic = self.app.topic(t.checkpoints, **raw)
        self.table = self.app.Table(
            STATE_TABLE,
            default=None,
            partitions=s.partitions,
            key_type=bytes,
            value_type=bytes,  # faust picks the "raw" serializer for bytes
        )
        self.router = Router(s, self.registry, self.counters)
        self.graces = Graces(s, self.registry, self._raw_producer, self.app.crash)
        self._register()

    def _register(self) -> None:
        """Agents, pages, timers and signals of the Faust app."""
        s = self.settings
        self.app.task(self._run_router)
        self.app.agent(self.inputs_topic, name="decide")(self._decide_stream)
        # Each delivery is awaited by one of N agent instances: a slow or dead endpoint holds
        # one instance for at most its bounded retries, never the other connectors.
        self.app.agent(self.requests_topic, name="execute", concurrency=8)(self._execute_stream)
        self.app.agent(self.notifications_topic, name="notify", concurrency=16)(self._notify_stream)
        self.app.task(self._follow_audit)
        for path, page in (
            ("/metrics", self._metrics_page),
            ("/status", self._status_page),
            ("/healthz", self._healthz_page),
        ):
            self.app.page(path)(_view(page))
        self.app.timer(s.tick_interval_s, name="clock")(self._clock)
        self.app.timer(s.checkpoint_interval_s, name="checkpoint")(self._checkpoint)
        self.app.task(self._announce_ready)
        self.app.on_rebalance_complete.connect(self._on_rebalance_complete)

    # -- routing: see agents/worker/router.py ------------------------------------------------------
    async def _run_router(self) -> None:
        producer = await self._raw_producer()
        try:
            await self.router.run(producer)
        except Exception as error:
            # A worker that no longer routes must not look healthy: crash it, loudly.
            log.exception("the router stopped")
            await self.app.crash(error)
            raise
        finally:
            await producer.stop()

    async def _raw_producer(self) -> AIOKafkaProducer:
        """A plain aiokafka producer for the router and the heartbeat graces, started by
        whichever needs it first (Faust starts app tasks only after the first assignment)."""
        async with self._producer_lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    **client_options(self.settings),
                    acks="all",
                    enable_idempotence=True,
                    linger_ms=2,
                    max_batch_size=262_144,
                )
                await producer.start()
                self._producer = producer
            return self._producer

    async def _dead_letter(self, event: Any, reason: str, value: bytes | None = None) -> None:
        """`value`: the bad part of the record (one item of an InputBatch), else all of it."""
        msg = event.message
        self.counters["dead_letters"] += 1
        log.warning("dead-lettered %s/%s/%s: %s", msg.topic, msg.partition, msg.offset, reason)
        headers = dead_letter_headers(msg.topic, msg.partition, msg.offset, reason)
        payload = value if value is not None else msg.value
        await self.dlq_topic.send(key=msg.key, value=payload or b"", headers=headers)

    # -- deciding -----------------------------------------------------------------------------
    async def _decide_stream(self, stream: Any) -> None:
        # Batches, not one event at a time: the outputs of a whole batch are awaited once,
        # and its table writes follow (see `decide_batch`). `within` bounds the latency a
        # batch adds when traffic is light.
        async for events in stream.take_events(DECIDE_BATCH, DECIDE_WITHIN_S):
            await self.decide_batch(events)

    async def decide_batch(self, events: list[Any]) -> None:
        """Decode → core → send the outputs → assign the whole new states.

        Outputs are awaited before any state is written, so the table is never ahead of
        the log; a re-delivered input is reconciled against the log (agents/worker/repair.py).
        """
        batch = _Batch()
        for event in events:
            msg = event.message
            expected = self.next_offsets.get(msg.partition)
            if expected is not None and msg.offset > expected:
                await self._fill_gap(event, expected, batch)
            await self._apply_record(event, event.value, msg.offset, batch)
        await self._send_outputs(batch)
        for key, pending in batch.states.items():
            with acting_for(pending.event):
                # The whole new value, never a mutation in place; written only on change.
                self.table[key] = dump_state(pending.state, pending.applied)
        for partition, event in batch.audit_partitions.items():
            with acting_for(event):
                position = str(self.audit_positions[partition]).encode()
                self.table[checkpoint_key(partition)] = position

    async def _apply_record(self, event: Any, value: bytes, offset: int, batch: _Batch) -> None:
        """One record of the inputs partition of `event` (which carries the partition for
        the table writes; `offset` is the record's own)."""
        partition = event.message.partition
        for item in unpack(self.registry, value, event.message.topic, partition, offset):
            if item.message is None:  # only our own router writes here; keep going anyway
                await self._dead_letter(event, item.problem or "?", item.data)
                continue
            with acting_for(event):  # table reads then look in the event's partition only
                self._decide_one(item.message, event, batch, item.position, item.source)
        self.positions[partition] = offset
        self.next_offsets[partition] = offset + 1

    async def _fill_gap(self, event: Any, start: int, batch: _Batch) -> None:
        """Faust can hand a stream an event past offsets it never delivered around a
        rebalance (faust-streaming #216, #221, and skipped old-generation events that it
        acks; seen here in the SIGKILL test): the inputs topic has no gaps of its own, so
        read the missing records directly and apply them first, in order."""
        msg = event.message
        end = msg.offset
        log.warning(
            "%s/%s: offsets %d..%d were not delivered by Faust; reading them directly",
            msg.topic,
            msg.partition,
            start,
            end - 1,
        )
        consumer = reader(self.settings)
        await consumer.start()
        try:
            tp = TopicPartition(msg.topic, msg.partition)
            consumer.assign([tp])
            consumer.seek(tp, start)
            while await consumer.position(tp) < end:
                for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
                    for record in records:
                        if record.offset < end:
                            await self._apply_record(event, record.value, record.offset, batch)
                            self.counters["gap_inputs"] += 1
        finally:
            await consumer.stop()

    def _decide_one(
        self, message: DeciderInput, event: Any, batch: _Batch, position: int, source: str
    ) -> None:
        connector_id = message.connector_id
        key = connector_id.encode()
        partition = event.message.partition
        pending = batch.states.get(key)
        if pending is not None:
            state, applied = pending.state, pending.applied
        else:
            stored = self.table.get(key)
            if stored is None:
                state, applied = ConnectorState.new(connector_id), -1
            else:
                state, applied = load_state(stored)
            live = self.liveness.get(connector_id)
            if live is not None:
                state = state._replace(last_checked_at=live[0], heartbeat_deadline=live[1])
        if position <= applied:
            self.counters["skipped_redeliveries"] += 1
            return  # case (b): the state already holds this input
        decision = decide(state, message, self.policy, source)
        self.counters["inputs"] += 1
        self.counters["late_pings"] += int(decision.late)
        events, commands, new_state = decision.events, decision.commands, decision.state
        logged = self.logged_ahead.get(connector_id)
        if logged:
            fixed = reconcile(state, decision, logged)
            events, commands, new_state = fixed.events, fixed.commands, fixed.state
            self.counters["repaired_dropped"] += fixed.dropped
            log.info(
                "crash repair for %s at %s: %d re-derived events already logged",
                connector_id,
                source,
                fixed.dropped,
            )
            if fixed.diverged:
                log.warning(
                    "%s: the audit log diverges from the re-derived decision; the log wins",
                    connector_id,
                )
            remaining = [e for e in logged if e.sequence > new_state.record.sequence]
            self.logged_ahead[connector_id] = remaining
        self.liveness[connector_id] = (new_state.last_checked_at, new_state.heartbeat_deadline)
        if (
            pending is not None
            or events
            or new_state.record != state.record
            or new_state.memory != state.memory
        ):
            batch.states[key] = _PendingState(new_state, position, event)
        for command in commands:
            batch.commands.append((key, command))
        for audit_event in events:
            batch.events.append((key, audit_event, partition))
        if events:
            batch.audit_partitions[partition] = event
        due = next_deadline(new_state.record, new_state.heartbeat_deadline)
        self.deadlines.schedule(connector_id, None if due is None else due[0])

    async def _send_outputs(self, batch: _Batch) -> None:
        """Commands first, then events, each awaited until the broker holds it: an event in
        the log implies its commands are too."""
        sent = []
        for key, command in batch.commands:
            if isinstance(command, RecoveryRequest):
                topic, codec = self.requests_topic, self.request_codec
            else:
                topic, codec = self.notifications_topic, self.notification_codec
            sent.append(
                await topic.send(key=key, value=codec.encode(command.model_dump(mode="json")))
            )
        await asyncio.gather(*sent)
        audit_sent = [
            await self.audit_topic.send(
                key=key, value=self.audit_codec.encode(audit_record(event)), partition=partition
            )
            for key, event, partition in batch.events
        ]
        written = await asyncio.gather(*audit_sent)
        # Positions and chain heads move together (no await in between): a checkpoint taken
        # at any moment describes exactly the log below its position.
        for (_key, event, partition), metadata in zip(batch.events, written, strict=True):
            self.audit_positions[partition] = max(
                self.audit_positions.get(partition, 0), metadata.offset + 1
            )
            self.heads.setdefault(partition, {})[event.connector_id] = (event.sequence, event.hash)
        self.counters["events"] += len(batch.events)

    # -- checkpoints --------------------------------------------------------------------------
    async def _checkpoint(self) -> None:
        """Per owned audit partition whose log grew: the heads of its chains, digested."""
        for partition in sorted(self._owned_partitions()):
            position = self.audit_positions.get(partition, 0)
            if position == self.checkpointed.get(partition) or partition not in self.heads:
                continue
            record = checkpoint_record(
                partition,
                position,
                self.heads[partition],
                now_ms(),
                self.checkpoint_prev.get(partition, GENESIS_HASH),
            )
            await self.checkpoints_topic.send(
                key=str(partition).encode(), value=self.checkpoint_codec.encode(record)
            )
            self.checkpointed[partition] = position
            self.checkpoint_prev[partition] = record["hash"]

    async def _read_last_checkpoints(self) -> None:
        consumer = reader(self.settings)
        await consumer.start()
        try:
            tp = TopicPartition(self.settings.topics.checkpoints, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            while await consumer.position(tp) < end:
                for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
                    for record in records:
                        checkpoint = self.checkpoint_codec.decode(record.value)
                        self.checkpointed[checkpoint["partition"]] = checkpoint["end_offset"]
                        self.checkpoint_prev[checkpoint["partition"]] = checkpoint["hash"]
        finally:
            await consumer.stop()

    # -- executors and notifier ---------------------------------------------------------------
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _execute_stream(self, stream: Any) -> None:
        async for event in stream.events():
            try:
                request = RecoveryRequest.model_validate(self.request_codec.decode(event.value))
            except (AvroCodecError, ValidationError) as error:
                await self._dead_letter(event, f"bad recovery request: {error}")
                continue
            result = await execute(self.session(), self.policy, request, now_ms)
            if result is not None:
                await self.results_topic.send(
                    key=request.connector_id.encode(),
                    value=self.result_codec.encode(result.model_dump(mode="json")),
                )

    async def _notify_stream(self, stream: Any) -> None:
        async for event in stream.events():
            try:
                request = NotificationRequest.model_validate(
                    self.notification_codec.decode(event.value)
                )
            except (AvroCodecError, ValidationError) as error:
                await self._dead_letter(event, f"bad notification: {error}")
                continue
            result = await deliver(
                self.session(),
                self.policy,
                request,
                now_ms,
                status_url=self._status_url(request.tenant_id),
            )
            await self.inputs_topic.send(
                key=request.connector_id.encode(),
                value=self.notification_result_codec.encode(result.model_dump(mode="json")),
            )

    def _status_url(self, tenant_id: str | None) -> str:
        base = f"http://{self.settings.web_host}:{self.settings.web_port}/status"
        return f"{base}?tenant={tenant_key(tenant_id)}"

    # -- live view of the audit log -----------------------------------------------------------
    async def _follow_audit(self) -> None:
        """The whole audit topic from the beginning (agents/audit/follow.py): a restarted
        worker, or one owning other partitions, shows what a replay shows."""
        await self.follower.run()

    def counters_view(self) -> dict[str, int]:
        return self.counters

    def _partition_lags(self) -> dict[int, int]:
        """Inputs not yet applied, per owned inputs partition."""
        consumer = self.app.consumer
        lags: dict[int, int] = {}
        for tp in consumer.assignment():
            if tp.topic == self.settings.inputs_topic:
                highwater = consumer.highwater(tp) or 0
                lags[tp.partition] = max(0, highwater - self.positions.get(tp.partition, -1) - 1)
        return lags

    def _inputs_lag(self) -> int:
        return sum(self._partition_lags().values())

    async def _metrics_page(self, web: Any, _request: Any) -> Any:
        self.counters["inputs_lag"] = self._inputs_lag()
        return web.bytes(exposition(self.metrics), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _status_page(self, web: Any, request: Any) -> Any:
        tenant = request.query.get("tenant")
        return web.json(self.live.status(tenant))

    async def _healthz_page(self, web: Any, _request: Any) -> Any:
        processing, views = self.ready.is_set(), self.follower.caught_up.is_set()
        ok = processing and views
        body = {"ready": ok, "processing": processing, "views_caught_up": views}
        return web.json(body, status=200 if ok else 503)

    # -- time ---------------------------------------------------------------------------------
    async def _clock(self) -> None:
        now = now_ms()
        partitions = self.settings.partitions
        lagging = {p for p, lag in self._partition_lags().items() if lag > CLOCK_LAG_LIMIT}
        due = due_ticks(
            self.deadlines,
            now,
            lagging,
            lambda connector_id: partition_of(connector_id.encode(), partitions),
            retry_ms=round(self.settings.tick_interval_s * 1000),
        )
        for connector_id in due:
            await self._send_input(Tick(connector_id=connector_id, now=now))

    async def _send_input(self, message: Tick | Watch) -> None:
        codec = self.input_codecs[type(message).__name__]
        await self.inputs_topic.send(
            key=message.connector_id.encode(), value=codec.encode(input_record(message))
        )

    def _owned_partitions(self) -> set[int]:
        assignment = self.app.consumer.assignment()
        return {tp.partition for tp in assignment if tp.topic == self.settings.inputs_topic}

    async def _on_rebalance_complete(self, *_signal: Any, **_details: Any) -> None:
        """Read the log ahead of the table (crash repair), rebuild the deadline index, and
        give every owned connector a heartbeat grace."""
        began = time.monotonic()
        owned = self._owned_partitions()
        partitions = self.settings.partitions
        found = scan_owned(self.table, owned, partitions, CHECKPOINT_PREFIX)
        connectors, heads = found.connectors, found.heads
        scanned = time.monotonic()
        await self._read_log_ahead(owned, found.checkpoints)
        # Kept for partitions this process owned before: Faust acks the events it skips as
        # "from an old generation" during a rebalance (streams.py, `skipped_value`), and
        # commits them, so after a second quick rebalance (a killed member's session expiring)
        # the committed offset can be past inputs nobody applied. Our own next offset still
        # points at them, and the first event past it triggers `_fill_gap`.
        committed = await self._committed_inputs(owned)
        self.next_offsets = {
            p: self.next_offsets[p]
            if p in self._owned_before and p in self.next_offsets
            else committed[p]
            for p in owned
        }
        self._owned_before = owned
        for connector_id, events in self.logged_ahead.items():
            partition = partition_of(connector_id.encode(), self.settings.partitions)
            last = events[-1]
            heads.setdefault(partition, {})[connector_id] = (last.sequence, last.hash)
        self.heads = heads
        await self._read_last_checkpoints()
        for expected in self.policy.expected_connectors:
            partition = partition_of(expected.encode(), partitions)
            if partition in owned:
                connectors.setdefault(partition, set()).add(expected)
        self.deadlines.forget()
        self.liveness = {
            connector_id: live
            for connector_id, live in self.liveness.items()
            if partition_of(connector_id.encode(), partitions) in owned
        }
        self.graces.give(connectors, now_ms())  # in the background, after this
        log.info(
            "partitions %s assigned: %d connectors; table scan %.1fs, log ahead and checkpoints"
            " %.1fs",
            sorted(owned),
            sum(len(c) for c in connectors.values()),
            scanned - began,
            time.monotonic() - scanned,
        )
        self.ready.set()

    async def _committed_inputs(self, owned: set[int]) -> dict[int, int]:
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

    async def _read_log_ahead(self, owned: set[int], checkpoints: dict[int, int]) -> None:
        """Audit events written after each owned partition's recorded position."""
        self.logged_ahead = {}
        self.audit_positions = {p: checkpoints.get(p, 0) for p in owned}
        if not owned:
            return
        consumer = reader(self.settings)
        await consumer.start()
        try:
            tps = [TopicPartition(self.settings.topics.audit, p) for p in sorted(owned)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, self.audit_positions[tp.partition])
            remaining = {tp for tp in tps if ends[tp] > self.audit_positions[tp.partition]}
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=1000)
                for tp, records in batch.items():
                    for record in records:
                        self.audit_positions[tp.partition] = record.offset + 1
                        try:
                            event = decode_audit(self.registry, record.value)
                        except (AvroCodecError, ValidationError, ValueError) as error:
                            # Not ours (a stray producer): `verify` reports it; the worker
                            # must not stop over it.
                            log.error(
                                "undecodable audit record at %s/%s: %s",
                                tp.partition,
                                record.offset,
                                error,
                            )
                            continue
                        self.logged_ahead.setdefault(event.connector_id, []).append(event)
                remaining = {
                    tp for tp in remaining if self.audit_positions[tp.partition] < ends[tp]
                }
        finally:
            await consumer.stop()
        found = sum(len(events) for events in self.logged_ahead.values())
        if found:
            log.warning("crash repair: %d audit events ahead of the state table", found)

    async def _announce_ready(self) -> None:
        await self.ready.wait()
        await self.follower.caught_up.wait()
        # One plain line on stdout that scripts and tests wait for.
        print("ready", flush=True)
