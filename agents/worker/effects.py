"""Everything the worker sends, in one place: a batch's outputs (commands, then audit
events), checkpoints, dead letters, the inputs it writes itself (ticks, notification
outcomes); and what the executors and the notifier do with one request
(agents/worker/deliveries.py runs them), whose HTTP calls are the effects of the commands."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from agents.settings import Settings
from agents.wire import cloudevents
from agents.wire.codec import AvroCodecError, SchemaRegistry
from agents.wire.partitioning import partition_of
from agents.wire.records import audit_record, input_record
from agents.worker.alertmanager import AlertLinks
from agents.worker.checkpoints import AuditCheckpoints
from agents.worker.deliveries import OutcomeBatcher
from agents.worker.executors import execute
from agents.worker.notifier import deliver
from agents.worker.processor import Outputs
from agents.worker.router import BATCH_ITEMS, dead_letter_headers
from streams.models import (
    AdminCommand,
    NotificationRequest,
    OutageNotice,
    OutageSignal,
    RecoveryRequest,
    Tick,
)
from streams.policy import Policy

log = logging.getLogger("connector_recovery.worker")

# The `sources` entry of an input the worker writes itself, in an InputBatch.
SIGNAL_SOURCE = "outage-signal"
NOTICE_SOURCE = "outage-notice"
MEMBER_COMMAND_SOURCE = "outage-command"  # an admin's command of an outage, to a member
TICK_SOURCE = "clock"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Effects:
    """`topics`: the Faust topics by role (audit, requests, notifications, checkpoints,
    dlq, inputs, results)."""

    def __init__(
        self,
        *,
        settings: Settings,
        policy: Policy,
        registry: SchemaRegistry,
        topics: dict[str, Any],
        counters: dict[str, int],
        status_url: Callable[[str | None], str],
        raw_producer: Callable[[], Awaitable[AIOKafkaProducer]],
        alert_links: AlertLinks | None = None,
    ) -> None:
        self.settings = settings
        self.alert_links = alert_links
        self.raw_producer = raw_producer
        self.outcomes = OutcomeBatcher(settings, registry, raw_producer)
        self.policy = policy
        self.topics = topics
        self.counters = counters
        self.status_url = status_url
        self.audit_codec = registry.codec("AuditEvent")
        self.input_codecs = {  # graces: graces.py
            "Tick": registry.codec("Tick"),
            "OutageSignal": registry.codec("OutageSignal"),
            "OutageNotice": registry.codec("OutageNotice"),
            "AdminCommand": registry.codec("AdminCommand"),
        }
        self.request_codec = registry.codec("RecoveryRequest")
        self.notification_codec = registry.codec("NotificationRequest")
        self.result_codec = registry.codec("RecoveryResult")
        self.notification_result_codec = registry.codec("NotificationResult")
        self.checkpoint_codec = registry.codec("AuditCheckpoint")
        self.batch_codec = registry.codec("InputBatch")
        self._session: aiohttp.ClientSession | None = None

    # -- a batch's outputs ------------------------------------------------------------------
    async def send_outputs(self, outputs: Outputs, checkpoints: AuditCheckpoints) -> None:
        """Commands first, then events, each awaited until the broker holds it: an event in
        the log implies its commands are too. The events' offsets move the checkpoints.
        Outage signals go with the commands: to the inputs topic, on the outage key's
        partition (docs/outages.md), and so do an outage's notices to its members, on
        theirs; packed in InputBatch records per partition. Sent by a plain producer:
        Faust's send path costs several times aiokafka's per record, and a storm makes
        several records per failing connector."""
        source = self.settings.event_source
        topics = self.settings.topics
        producer = await self.raw_producer()
        send = producer.send
        sent = []
        if outputs.signals:
            sent.extend(await self._send_inputs(outputs.signals, "OutageSignal", SIGNAL_SOURCE))
        if outputs.notices:
            sent.extend(await self._send_inputs(outputs.notices, "OutageNotice", NOTICE_SOURCE))
        if outputs.member_commands:
            sent.extend(
                await self._send_inputs(
                    outputs.member_commands, "AdminCommand", MEMBER_COMMAND_SOURCE
                )
            )
        for key, command in outputs.commands:
            if isinstance(command, RecoveryRequest):
                topic, codec = topics.recovery_requests, self.request_codec
            else:
                topic, codec = topics.notifications, self.notification_codec
            sent.append(
                await send(
                    topic,
                    codec.encode(command.model_dump(mode="json")),
                    key=key,
                    headers=cloudevents.headers(command, source, codec.schema.fingerprint),
                )
            )
        await asyncio.gather(*sent)
        audit_fingerprint = self.audit_codec.schema.fingerprint
        encode = self.audit_codec.encode
        audit_sent = [
            await send(
                topics.audit,
                encode(audit_record(event)),
                key=key,
                partition=partition,
                headers=cloudevents.headers(event, source, audit_fingerprint),
            )
            for key, event, partition in outputs.events
        ]
        written = await asyncio.gather(*audit_sent)
        checkpoints.written(
            ((event, partition) for _key, event, partition in outputs.events),
            (metadata.offset for metadata in written),
        )
        self.counters["events"] += len(outputs.events)

    async def send_checkpoints(self, records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        sent = []
        for record in records:
            await self.topics["checkpoints"].send(
                key=str(record["partition"]).encode(), value=self.checkpoint_codec.encode(record)
            )
            sent.append(record)
        return sent

    async def dead_letter(
        self, source: tuple[str, int, int], key: bytes | None, payload: bytes | None, reason: str
    ) -> None:
        """`source`: topic, partition, offset of the record (or the batch holding it)."""
        topic, partition, offset = source
        self.counters["dead_letters"] += 1
        log.warning("dead-lettered %s/%s/%s: %s", topic, partition, offset, reason)
        headers = dead_letter_headers(topic, partition, offset, reason)
        await self.topics["dlq"].send(key=key, value=payload or b"", headers=headers)

    # -- inputs the worker writes itself ------------------------------------------------------
    async def send_ticks(self, ticks: list[Tick]) -> None:
        await asyncio.gather(*await self._send_inputs(ticks, "Tick", TICK_SOURCE))

    async def _send_inputs(
        self,
        inputs: Sequence[Tick | OutageSignal | OutageNotice | AdminCommand],
        kind: str,
        source: str,
    ) -> list[asyncio.Future[Any]]:
        """Inputs the worker writes itself, onto the inputs topic, packed per partition of
        their key into InputBatch records as the router packs pings: the decider pays
        Faust's per-event cost once per batch. Returns the sends' futures."""
        codec, partitions = self.input_codecs[kind], self.settings.partitions
        by_partition: dict[int, list[bytes]] = {}
        for message in inputs:
            partition = partition_of(message.connector_id.encode(), partitions)
            by_partition.setdefault(partition, []).append(codec.encode(input_record(message)))
        producer = await self.raw_producer()
        sent = []
        for partition, items in by_partition.items():
            for start in range(0, len(items), BATCH_ITEMS):
                chunk = items[start : start + BATCH_ITEMS]
                batch = {"items": chunk, "sources": [source] * len(chunk)}
                sent.append(
                    await producer.send(
                        self.settings.inputs_topic,
                        self.batch_codec.encode(batch),
                        partition=partition,
                    )
                )
        return sent

    # -- executors and notifier (agents/worker/deliveries.py runs them) ---------------------
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def execute_request(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """A recovery request: run its action; its result goes to the results topic."""
        try:
            request = RecoveryRequest.model_validate(self.request_codec.decode(record.value))
        except (AvroCodecError, ValidationError) as error:
            await self._dead_letter_record(record, f"bad recovery request: {error}")
            return
        result = await execute(self.session(), self.policy, request, now_ms)
        if result is not None:
            producer = await self.raw_producer()
            await (
                await producer.send(
                    self.settings.topics.recovery_results,
                    value=self.result_codec.encode(result.model_dump(mode="json")),
                    key=request.connector_id.encode(),
                )
            )

    async def notify(self, record: ConsumerRecord[bytes, bytes]) -> None:
        """A notification: deliver it; its outcome goes back to the decider."""
        try:
            request = NotificationRequest.model_validate(
                self.notification_codec.decode(record.value)
            )
        except (AvroCodecError, ValidationError) as error:
            await self._dead_letter_record(record, f"bad notification: {error}")
            return
        result = await deliver(
            self.session(),
            self.policy,
            request,
            now_ms,
            status_url=self.status_url(request.tenant_id),
            alert_links=self.alert_links,
        )
        await self.outcomes.send(
            request.connector_id,
            self.notification_result_codec.encode(result.model_dump(mode="json")),
        )

    async def _dead_letter_record(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        source = (record.topic, record.partition, record.offset)
        await self.dead_letter(source, record.key, record.value, reason)
