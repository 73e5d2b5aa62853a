"""The Faust worker: thin agents around the pure core.

    connector.health ──┐
    admin commands ────┼─ route (decode, validate; bad → DLQ) ─▶ <app>-inputs (key = connector)
    recovery results ──┘                                              │
    clock timer (Tick for due deadlines) ──────────────────────────────┤
                                                                       ▼
                          decide (table: connector-state) ─▶ connector.audit + commands

Every decider input is repartitioned by connector id onto one internal topic, whatever
partitioner the producer used, so one partition owner applies a connector's inputs in
order. The audit topic is co-partitioned with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
from aiokafka.partitioner import murmur2

from agents.codec import registry
from agents.deadlines import DeadlineIndex
from agents.settings import Settings
from agents.statecodec import dump_state, load_state
from agents.wire import BadInput, audit_record, decode_input, input_record
from streams.decider import Decision, decide, next_deadline
from streams.models import (
    AdminCommand,
    DeciderInput,
    HealthPing,
    NotificationRequest,
    RecoveryRequest,
    RecoveryResult,
    Tick,
    Watch,
)
from streams.policy import Policy

log = logging.getLogger("connector_recovery.worker")

STATE_TABLE = "connector-state"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def partition_of(key: bytes, partitions: int) -> int:
    """The partition aiokafka's default (Java-compatible murmur2) partitioner picks."""
    return (int(murmur2(key)) & 0x7FFFFFFF) % partitions


class Pipeline:
    def __init__(self, settings: Settings, policy: Policy) -> None:
        self.settings = settings
        self.policy = policy
        self.registry = registry()
        self.audit_codec = self.registry.codec("AuditEvent")
        self.input_codecs = {name: self.registry.codec(name) for name in ("Tick", "Watch")}
        self.request_codec = self.registry.codec("RecoveryRequest")
        self.notification_codec = self.registry.codec("NotificationRequest")
        self.deadlines = DeadlineIndex()
        self.ready = asyncio.Event()
        self.counters = {"dlq": 0, "late_pings": 0, "inputs": 0, "events": 0}
        s = settings
        self.app = faust.App(
            s.app_id,
            broker=f"kafka://{s.bootstrap_servers}",
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
            table_standby_replicas=0,
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
        self.table = self.app.Table(
            STATE_TABLE,
            default=None,
            partitions=s.partitions,
            key_type=bytes,
            value_type=bytes,  # faust picks the "raw" serializer for bytes
        )
        self.app.agent(self.health_topic, name="route-health")(self._route_stream(HealthPing))
        self.app.agent(self.admin_topic, name="route-admin")(self._route_stream(AdminCommand))
        self.app.agent(self.results_topic, name="route-results")(self._route_stream(RecoveryResult))
        self.app.agent(self.inputs_topic, name="decide")(self._decide_stream)
        self.app.timer(s.tick_interval_s, name="clock")(self._clock)
        self.app.task(self._announce_ready)
        self.app.on_rebalance_complete.connect(self._on_rebalance_complete)

    # -- routing: every input onto the internal topic, keyed by connector ---------------------
    def _route_stream(self, expected: type[DeciderInput]) -> Any:
        async def route(stream: Any) -> None:
            async for event in stream.events():
                await self._route(event, expected)

        route.__name__ = f"route_{expected.__name__}"
        return route

    async def _route(self, event: Any, expected: type[DeciderInput]) -> None:
        value = event.value
        try:
            message = decode_input(self.registry, value)
            if not isinstance(message, expected):
                raise BadInput(f"{type(message).__name__} on a topic of {expected.__name__}")
        except BadInput as error:
            await self._dead_letter(event, str(error))
            return
        await self.inputs_topic.send(key=message.connector_id.encode(), value=value)

    async def _dead_letter(self, event: Any, reason: str) -> None:
        msg = event.message
        self.counters["dlq"] += 1
        log.warning("dead-lettered %s/%s/%s: %s", msg.topic, msg.partition, msg.offset, reason)
        headers = [
            ("reason", reason.encode()),
            ("source.topic", msg.topic.encode()),
            ("source.partition", str(msg.partition).encode()),
            ("source.offset", str(msg.offset).encode()),
        ]
        await self.dlq_topic.send(key=msg.key, value=msg.value, headers=headers)

    # -- deciding -----------------------------------------------------------------------------
    async def _decide_stream(self, stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            try:
                message = decode_input(self.registry, event.value)
            except BadInput as error:  # only our own router writes here; keep going anyway
                await self._dead_letter(event, str(error))
                continue
            await self.step(message, f"{msg.topic}/{msg.partition}/{msg.offset}")

    async def step(self, message: DeciderInput, source: str) -> Decision:
        """Decode → core → assign the whole new state → send the outputs."""
        connector_id = message.connector_id
        key = connector_id.encode()
        stored = self.table.get(key)
        from streams.state import ConnectorState  # noqa: PLC0415 - keep module import light

        state = load_state(stored) if stored is not None else ConnectorState.new(connector_id)
        decision = decide(state, message, self.policy, source)
        self.counters["inputs"] += 1
        self.counters["late_pings"] += int(decision.late)
        if decision.state != state:
            self.table[key] = dump_state(decision.state)
        for audit_event in decision.events:
            await self.audit_topic.send(
                key=key, value=self.audit_codec.encode(audit_record(audit_event))
            )
        self.counters["events"] += len(decision.events)
        for command in decision.commands:
            if isinstance(command, RecoveryRequest):
                await self.requests_topic.send(
                    key=key, value=self.request_codec.encode(command.model_dump(mode="json"))
                )
            elif isinstance(command, NotificationRequest):
                await self.notifications_topic.send(
                    key=key, value=self.notification_codec.encode(command.model_dump(mode="json"))
                )
        due = next_deadline(decision.state.record, decision.state.heartbeat_deadline)
        self.deadlines.schedule(connector_id, None if due is None else due[0])
        return decision

    # -- time ---------------------------------------------------------------------------------
    async def _clock(self) -> None:
        now = now_ms()
        for connector_id in self.deadlines.pop_due(now):
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
        """Rebuild the deadline index and give every owned connector a heartbeat grace."""
        owned = self._owned_partitions()
        partitions = self.settings.partitions
        connectors: set[str] = set()
        for key in list(self.table.keys()):
            connectors.add(key.decode())
        for expected in self.policy.expected_connectors:
            if partition_of(expected.encode(), partitions) in owned:
                connectors.add(expected)
        self.deadlines.forget()
        at = now_ms()
        for connector_id in sorted(connectors):
            await self._send_input(Watch(connector_id=connector_id, at=at))
        log.info("partitions %s assigned: watching %d connectors", sorted(owned), len(connectors))
        self.ready.set()

    async def _announce_ready(self) -> None:
        await self.ready.wait()
        # One plain line on stdout that scripts and tests wait for.
        print("ready", flush=True)
