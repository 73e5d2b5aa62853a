"""The Faust worker: the wiring of the parts around the broker-free processor.

    connector.health ──┐  router (router.py: aiokafka batches;
    admin commands ────┼─ decode, validate; bad → DLQ) ─────────▶ <app>-inputs (key = connector)
    recovery results ──┘                                              │
    clock timer (clock.py: Tick for due deadlines) ────────────────────┤
                                                                       ▼
          InputProcessor (processor.py; table: connector-state) ─▶ effects.py: audit + commands

Every decider input is repartitioned by connector id onto one internal topic, whatever
partitioner the producer used, so one partition owner applies a connector's inputs in
order. The audit topic is co-partitioned with it. The decider takes its inputs in batches
(`take_events`): the processor turns a batch into outputs, effects.py sends them and awaits
the broker, then the batch's new states are written (only those that changed).

The other parts: rebalance recovery (recovery.py), the gap filler (gaps.py), crash repair
(repair.py), audit checkpoints (checkpoints.py), web endpoints (web.py), Faust's private
API (faust_context.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlencode

import faust
from aiokafka import AIOKafkaProducer
from faust.stores.rocksdb import Store as RocksDBStore

from agents.audit.follow import AuditFollower
from agents.broker.client import faust_credentials
from agents.broker.producer import open_producer
from agents.kafka_internals import rocksdb_flush, rocksdb_memtable_bytes
from agents.settings import STATE_TABLE, Settings
from agents.wire.codec import registry
from agents.wire.partitioning import partition_of
from agents.wire.records import unpack
from agents.worker import heap, writebuffers
from agents.worker.alertmanager import AlertLinks, AlertResender
from agents.worker.checkpoints import AuditCheckpoints, checkpoint_key
from agents.worker.clock import Clock
from agents.worker.deliveries import DeliveryLoop
from agents.worker.effects import Effects, now_ms
from agents.worker.faust_context import (
    FaustTableStore,
    changelog_backlog,
    quiet_changelog_backpressure,
    shorten_fetch_wait,
)
from agents.worker.gaps import read_gap
from agents.worker.heldids import SHARE_IDS_SLICE, HeldIds
from agents.worker.looplag import LoopLag
from agents.worker.processor import Input, InputProcessor, Outputs
from agents.worker.recovery import RebalanceRecovery
from agents.worker.router_process import ROUTER_PRODUCER, RouterProcess
from agents.worker.web import WebEndpoints
from streams.models import Tick
from streams.policy import Policy
from streams.projections import tenant_key
from streams.views import OpenEpisode

log = logging.getLogger("connector_recovery.worker")

# RocksDB per table partition (Faust opens one database for each, standbys included): its
# defaults (three 64 MiB memtables, a 2 GiB block cache, per database) let a worker's memory
# grow with the partitions, not with what it holds; a state is ~35 B on disk (P5).
TABLE_ROCKSDB = {
    "write_buffer_size": 16 << 20,  # flushed once idle: writebuffers.py
    "max_write_buffer_number": 2,
    "block_cache_size": 8 << 20,
}
DECIDE_BATCH = 1000
REPAIR_CHUNK = 500  # repaired states written between two flushes of the changelog
CHANGELOG_FLUSH_AT = 5_000  # table writes Faust holds unsent past which `_write` flushes
# The longest the decider holds the event loop between two turns, deciding or writing. Its
# turns queue behind each other's and the views' (a late wake-up is their sum), so a first
# start's graces at 50 ms each still stalled the loop past 200 ms in a slow window (P6).
TURN_S = 0.02
WRITES_BETWEEN_CLOCK_READS = 100
DECIDE_WITHIN_S = 0.01
FIRST_START_HOLD_S = 30 * 60  # Faust's stall warnings wait this long (see faust.App below)


class WorkerApp:
    def __init__(self, settings: Settings, policy: Policy, loglevel: str = "warning") -> None:
        self.settings = settings
        self.policy = policy
        self.registry = registry()
        self.ready = asyncio.Event()
        self.repairs_written = asyncio.Event()  # no state repaired at assignment waits unwritten
        self.counters = {
            "dead_letters": 0,
            "events": 0,
            "router_skipped_forwarded": 0,
            "gap_inputs": 0,
        }
        self._producer: AIOKafkaProducer | None = None
        self._producer_lock = asyncio.Lock()  # binds to the worker's loop on first use
        self.positions: dict[int, int] = {}  # last inputs offset processed, per partition
        self.write_buffers = writebuffers.IdleWriteBuffers()
        # The worker's indexes (deadlines, chain heads) keyed on the ids the views hold: at
        # 322k connectors, 20 MiB per copy not held.
        self.held_id = HeldIds(lambda: self.follower.view.records)
        s = settings
        self.app = faust.App(
            s.app_id,
            broker=f"kafka://{s.bootstrap_servers}",
            broker_credentials=faust_credentials(s),
            store=s.store,
            datadir=str(s.worker_state_dir),
            web_enabled=True,
            web_host=s.web_host,
            web_port=s.web_port,
            topic_partitions=s.partitions,
            broker_session_timeout=s.session_timeout_s,
            # Faust refuses a session timeout above its request timeout (90 s by default).
            broker_request_timeout=s.request_timeout_s,
            broker_heartbeat_interval=min(3.0, s.session_timeout_s / 3),
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            producer_linger_ms=5,
            # Faust's default, 2.8 s, is what a restart re-reads (repair skips it) and what a
            # caught-up worker's committed offsets trail by; committing is one request.
            broker_commit_interval=0.5,
            # Faust logs an ERROR per partition every few seconds once a stream has not
            # processed or committed for 5 minutes: the crash repair of a long history the
            # table never saw holds every partition at assignment about that long, once
            # (docs/views.md; 5.9 min at 10M events). A worker really stuck shows in
            # `connector_inputs_lag` and its alert, ConnectorWorkerLagging.
            stream_processing_timeout=FIRST_START_HOLD_S,
            broker_commit_livelock_soft_timeout=FIRST_START_HOLD_S,
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
        self.inputs_topic = self.app.topic(s.inputs_topic, partitions=s.partitions, **raw)
        self.table = self.app.Table(
            STATE_TABLE,
            default=None,
            partitions=s.partitions,
            key_type=bytes,
            value_type=bytes,  # faust picks the "raw" serializer for bytes
            options=dict(TABLE_ROCKSDB),
        )
        self.store = FaustTableStore(self.table, s.inputs_topic)
        self.processor = InputProcessor(
            policy,
            self.store,
            s.partitions,
            self.counters,
            states_cached=s.states_cached,
            ids=self.held_id,
        )
        self.checkpoints = AuditCheckpoints()
        self.effects = Effects(
            settings=s,
            policy=policy,
            registry=self.registry,
            topics={
                "inputs": self.inputs_topic,
                "checkpoints": self.app.topic(t.checkpoints, **raw),
                "dlq": self.app.topic(t.dlq, **raw),
            },
            counters=self.counters,
            status_url=self._status_url,
            raw_producer=self._raw_producer,
            alert_links=AlertLinks(self._dashboard_url, self._episode),
        )
        self.deliveries = [
            DeliveryLoop(s, t.recovery_requests, "execute", self.effects.execute_request, 8),
            DeliveryLoop(s, t.notifications, "notify", self.effects.notify, 64),
        ]
        self.recovery = RebalanceRecovery(
            settings=s,
            policy=policy,
            registry=self.registry,
            processor=self.processor,
            checkpoints=self.checkpoints,
            effects=self.effects,
            raw_producer=self._raw_producer,
            crash=self.app.crash,
            stopping=lambda: self.app.should_stop,
        )
        self.router = RouterProcess(
            s, loglevel, self.counters, stopping=lambda: self.app.should_stop
        )
        # One follower of the audit topic feeds /status, /metrics and the admin page.
        self.follower = AuditFollower(s, s.worker_state_dir / "views")
        self.loop_lag = LoopLag(self.counters)
        self.web = WebEndpoints(self.follower, self.counters, self.ready, self._inputs_lag)
        self.alerts = AlertResender(
            policy,
            view=lambda: self.follower.view,
            owned=self._owns,
            session=self.effects.session,
            dashboard_url=self._dashboard_url,
            counters=self.counters,
        )
        self.clock = Clock(
            deadlines=self.processor.deadlines,
            front=self.router.front,
            highwaters=self._inputs_highwaters,
            next_offsets=lambda: self.recovery.next_offsets,
            partition_of=lambda connector_id: partition_of(connector_id.encode(), s.partitions),
            retry_ms=round(s.tick_interval_s * 1000),
            send_ticks=self._send_ticks,
        )
        self._register()

    def _register(self) -> None:
        """Agents, pages, timers and signals of the Faust app."""
        s = self.settings
        quiet_changelog_backpressure()
        self.app.task(self._run_router)
        self.app.agent(self.inputs_topic, name="decide")(self._decide_stream)
        for deliveries in self.deliveries:
            self.app.task(self._deliver(deliveries))
        self.app.task(self.web.follow_audit)
        self.app.task(self._resend_alerts)
        self.web.register(self.app)
        self.app.timer(s.tick_interval_s, name="clock")(self._clock)
        self.app.timer(s.checkpoint_interval_s, name="checkpoint")(self._checkpoint)
        self.app.timer(heap.GIVE_BACK_EVERY_S, name="give_back")(self._give_back)
        self.app.timer(writebuffers.CHECK_EVERY_S, name="write_buffers")(
            self._flush_idle_write_buffers
        )
        self.app.task(self._announce_ready)
        self.app.on_rebalance_complete.connect(self._on_rebalance_complete)
        self.app.on_partitions_revoked.connect(self._on_partitions_revoked)

    # -- routing: see router.py ---------------------------------------------------------------
    async def _run_router(self) -> None:
        try:
            await self.router.run()
        except Exception as error:
            # A worker that no longer routes must not look healthy: crash it, loudly.
            log.exception("the router stopped")
            await self.app.crash(error)
            raise
        finally:
            # This task lives as long as the worker: the graces' producer closes with it.
            if self._producer is not None:
                await self._producer.stop()

    def _deliver(self, deliveries: DeliveryLoop) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            try:
                await deliveries.run()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # Requests nobody delivers must not look handled: crash it, loudly.
                log.exception("the %s deliveries stopped", deliveries.group)
                await self.app.crash(error)
                raise

        run.__name__ = f"deliver_{deliveries.group}"
        return run

    async def _resend_alerts(self) -> None:
        """Once this worker owns its partitions and its views have caught up with the log:
        before, an open incident would look closed."""
        caught_up = asyncio.Event()

        async def when_ready() -> None:
            await self.ready.wait()
            await self.follower.caught_up.wait()
            caught_up.set()

        waiting = asyncio.create_task(when_ready())
        try:
            await self.alerts.run(caught_up)
        finally:
            waiting.cancel()

    async def _raw_producer(self) -> AIOKafkaProducer:
        """A plain aiokafka producer for the heartbeat graces (batches of inputs, as the
        router writes them), started on first use."""
        async with self._producer_lock:
            if self._producer is None:
                self._producer = await open_producer(self.settings, **ROUTER_PRODUCER)
            return self._producer

    # -- deciding -----------------------------------------------------------------------------
    async def _decide_stream(self, stream: Any) -> None:
        # Batches, not one event at a time: the outputs of a whole batch are awaited once,
        # and its table writes follow. `within` bounds the latency a batch adds when traffic
        # is light.
        try:
            async for events in stream.take_events(DECIDE_BATCH, DECIDE_WITHIN_S):
                await self.decide_batch(events)
        except Exception as error:
            # Faust would restart the agent in this process and go on from the table as it
            # was, though the batch's events may be in the log already: the next decision
            # would conflict with them. Crash repair runs at assignment, so crash the worker.
            log.exception("the decider stopped")
            await self.app.crash(error)
            raise

    async def decide_batch(self, events: list[Any]) -> None:
        """Decode → processor → send the outputs → write the whole new states.

        Outputs are awaited before any state is written, so the table is never ahead of
        the log; a re-delivered input is reconciled against the log (repair.py)."""
        outputs = Outputs()
        repaired = await self._write_repairs({event.message.partition for event in events})
        # the last event of each partition so far: where a dead letter of it came from
        last_events: dict[int, Any] = {}
        turn = time.monotonic()
        for event in events:
            msg = event.message
            expected = self.recovery.next_offsets.get(msg.partition)
            if expected is not None and msg.offset > expected:
                async for record in read_gap(
                    self.settings, msg.topic, msg.partition, expected, msg.offset
                ):
                    self._apply_record(
                        msg.topic, msg.partition, record.offset, record.value, outputs
                    )
                    self.counters["gap_inputs"] += 1
            partition = msg.partition
            for item in unpack(self.registry, event.value, msg.topic, partition, msg.offset):
                if time.monotonic() - turn > TURN_S:
                    # A batch of thousands of inputs (a new owner's heartbeat graces, 500 to
                    # a record, each reading a state; a backlog) gives the loop a turn:
                    # heartbeats, pages, the clock.
                    await asyncio.sleep(0)
                    turn = time.monotonic()
                self.processor.apply(Input(item, partition), outputs)
            self._applied(partition, msg.offset)
            last_events[partition] = event
            if len(outputs.states) >= self.settings.states_unsent:
                # A start's heartbeat graces decide a new state for every connector: sent
                # and written a part at a time, between two inputs records, as smaller
                # batches would be.
                await self._send_and_write(outputs, last_events, repaired)
                outputs, repaired = Outputs(), set()
                turn = time.monotonic()
        await self._send_and_write(outputs, last_events, repaired)
        if not self.processor.repairs_pending:
            self.repairs_written.set()

    async def _send_and_write(
        self, outputs: Outputs, last_events: dict[int, Any], repaired: set[int]
    ) -> None:
        """The outputs' commands and events to the broker, then their states into the table
        (never ahead of the log), then the audit positions of the partitions they moved."""
        self.counters["states_unsent_max"] = max(
            self.counters.get("states_unsent_max", 0), len(outputs.states)
        )
        await self._dead_letters(outputs, last_events)
        await self.effects.send_outputs(outputs, self.checkpoints)
        await self._write(outputs)
        for partition in outputs.audit_partitions() | repaired:
            position = str(self.checkpoints.positions[partition]).encode()
            self.store.put(checkpoint_key(partition), position, partition)

    def _apply_record(
        self, topic: str, partition: int, offset: int, value: bytes | None, outputs: Outputs
    ) -> None:
        for item in unpack(self.registry, value, topic, partition, offset):
            self.processor.apply(Input(item, partition), outputs)
        self._applied(partition, offset)

    def _applied(self, partition: int, offset: int) -> None:
        self.positions[partition] = offset
        self.recovery.next_offsets[partition] = offset + 1

    async def _write(self, outputs: Outputs) -> None:
        """The batch's state writes, the loop given a turn every `TURN_S`, and the changelog
        flushed once Faust holds `CHANGELOG_FLUSH_AT` writes unsent (flushing at every turn
        halved a storm of 10,000: it waits for the broker)."""
        turn = time.monotonic()
        for _slice in self.processor.write_in_slices(outputs, WRITES_BETWEEN_CLOCK_READS):
            if time.monotonic() - turn <= TURN_S:
                continue
            if changelog_backlog(self.app) > CHANGELOG_FLUSH_AT:
                await self.app.producer.flush()
            else:
                await asyncio.sleep(0)
            turn = time.monotonic()
        # Batches one after another (a start's graces, in parts of `states_unsent`) would
        # leave Faust a changelog record per write unsent: 97,000 peaked 450 MB higher.
        if changelog_backlog(self.app) > CHANGELOG_FLUSH_AT:
            await self.app.producer.flush()

    async def _write_repairs(self, partitions: Iterable[int]) -> set[int]:
        """The states crash repair folded from the log (recovery.py) for `partitions`, in
        chunks, each flushed to the changelog before the next: Faust buffers a changelog
        record per table write, and 322,000 repaired states written at once peaked at 5 GB.
        Returns the partitions written (their audit position is written after them)."""
        written = set()
        for partition in partitions:
            while (chunk := self.processor.repairs_chunk(partition, REPAIR_CHUNK)) is not None:
                self.processor.write(chunk)
                written.add(partition)
                await self.app.producer.flush()
        return written

    async def _dead_letters(self, outputs: Outputs, last_events: dict[int, Any]) -> None:
        for letter in outputs.dead_letters:
            event = last_events[letter.partition]
            msg = event.message
            payload = letter.data if letter.data is not None else msg.value
            source = (msg.topic, msg.partition, msg.offset)
            await self.effects.dead_letter(source, msg.key, payload, letter.problem)

    # -- checkpoints --------------------------------------------------------------------------
    async def _checkpoint(self) -> None:
        records = await self.checkpoints.due(self._owned_partitions(), now_ms())
        for record in await self.effects.send_checkpoints(records):
            self.checkpoints.sent(record)

    async def _give_back(self) -> None:
        heap.give_back()

    async def _flush_idle_write_buffers(self) -> None:
        store = self.table.data
        if not isinstance(store, RocksDBStore):
            return
        if self.write_buffers.flushed:  # the memtables the last check flushed are freed
            heap.give_back()
        held = rocksdb_memtable_bytes(store)
        for partition in self.write_buffers.due(held):
            rocksdb_flush(store, partition)
        self.counters["write_buffer_bytes"] = sum(held.values())
        self.counters["write_buffer_flushes"] = (
            self.counters.get("write_buffer_flushes", 0) + self.write_buffers.flushed
        )

    # -- time ---------------------------------------------------------------------------------
    async def _clock(self) -> None:
        await self.clock.tick(now_ms())

    async def _send_ticks(self, connector_ids: list[str], now: int) -> None:
        await self.effects.send_ticks([Tick(connector_id=c, now=now) for c in connector_ids])

    def _inputs_highwaters(self) -> dict[int, int | None]:
        consumer = self.app.consumer
        return {
            tp.partition: consumer.highwater(tp)
            for tp in consumer.assignment()
            if tp.topic == self.settings.inputs_topic
        }

    def _inputs_lag(self) -> int:
        """Inputs-topic records not yet applied on this worker's partitions."""
        return sum(
            max(0, (highwater or 0) - self.positions.get(partition, -1) - 1)
            for partition, highwater in self._inputs_highwaters().items()
        )

    @property
    def web_app(self) -> Any:
        """The aiohttp application of the worker's web server, where the CLI mounts the
        admin page (the worker runs without it)."""
        return self.app.web.web_app  # type: ignore[attr-defined]  # Faust's default web driver is aiohttp; its base class does not name the app

    def _dashboard_url(self, connector_id: str) -> str:
        base = f"http://{self.settings.web_host}:{self.settings.web_port}/dashboard"
        return f"{base}/timeline?{urlencode({'id': connector_id})}"

    def _episode(self, incident_id: str) -> OpenEpisode | None:
        return self.follower.view.episodes.get(incident_id)

    def _owns(self, connector_id: str) -> bool:
        partition = partition_of(connector_id.encode(), self.settings.partitions)
        return partition in self._owned_partitions()

    def _status_url(self, tenant_id: str | None) -> str:
        base = f"http://{self.settings.web_host}:{self.settings.web_port}/status"
        return f"{base}?tenant={tenant_key(tenant_id)}"

    # -- rebalance ----------------------------------------------------------------------------
    def _owned_partitions(self) -> set[int]:
        assignment = self.app.consumer.assignment()
        return {tp.partition for tp in assignment if tp.topic == self.settings.inputs_topic}

    async def _on_partitions_revoked(self, *args: Any, **_details: Any) -> None:
        """Faust sends (sender, revoked topic-partitions)."""
        _sender, revoked = args
        inputs = self.settings.inputs_topic
        self.processor.forget_partitions(tp.partition for tp in revoked if tp.topic == inputs)
        if not self.processor.repairs_pending:  # the new owners repair theirs
            self.repairs_written.set()

    async def _on_rebalance_complete(self, *_signal: Any, **_details: Any) -> None:
        """Crash repair, checkpoints, the gap filler's offsets, and a heartbeat grace for
        every owned connector (recovery.py)."""
        shorten_fetch_wait(self.app)
        # Faust starts app tasks only after its own recovery: measured from here, the lag
        # covers the assignment's table scan too.
        self.loop_lag.start()
        # The scan keys its indexes on the views' connector ids (`held_id`): with the
        # snapshot restored first, it holds no ids of its own (begun before Faust started,
        # by `RestoringWorker`; a first start's fold of the whole log is not waited for).
        self.follower.begin()
        await self.follower.restored.wait()
        follower = self.follower
        first_start = not (follower.progress.restored_events or follower.caught_up.is_set())
        if first_start and self.held_id.first is None:  # the views fold the log later
            self.held_id.first = follower.known_ids = {}
        await self.recovery.run(self._owned_partitions(), self.table, now_ms())
        # What the assignment built (the table's scan, a first start's repaired states, the
        # chain heads) is long-lived: out of the collector's full passes before the graces'
        # decisions begin (at 322,000 repaired connectors, passes of 0.5-1.5 s between them).
        heap.settle()
        if self.processor.repairs_pending:
            self.repairs_written.clear()
        else:
            self.repairs_written.set()
        self.ready.set()

    async def _announce_ready(self) -> None:
        await self.ready.wait()
        await self.web.follower.caught_up.wait()
        # What crash repair folded from the log is written with each partition's first
        # batch (the graces bring one): a worker stopped right after 'ready' keeps it.
        await self.repairs_written.wait()
        # A first start keyed the chain heads, deadlines and liveness on the first ids it met,
        # before the views held the fleet. The views' snapshot shares them; views folded here
        # (a short history, or the fold's own process failed) do not: re-keyed on theirs.
        if self.held_id.first is not None:
            await self.checkpoints.share_ids(self.held_id)
            for _slice in self.processor.share_ids(SHARE_IDS_SLICE):
                await asyncio.sleep(0)
            self.held_id.first = self.follower.known_ids = None
        heap.settle()  # before 'ready': the first pings meet no pass over a fresh heap
        # One plain line on stdout that scripts and tests wait for.
        print("ready", flush=True)
