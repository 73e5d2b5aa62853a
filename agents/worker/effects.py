"""Everything the worker sends, in one place: a batch's outputs (commands, then audit
events), checkpoints, dead letters, the inputs it writes itself (ticks, heartbeat graces,
notification results); and the executor and notifier streams, whose HTTP calls are the
effects of the commands."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
from pydantic import ValidationError

from agents.broker.client import partition_of
from agents.settings import Settings
from agents.wire import cloudevents
from agents.wire.codec import AvroCodecError, SchemaRegistry
from agents.wire.records import audit_record, input_record
from agents.worker.checkpoints import AuditCheckpoints
from agents.worker.executors import execute
from agents.worker.notifier import deliver
from agents.worker.processor import Outputs
from agents.worker.router import dead_letter_headers
from streams.models import NotificationRequest, RecoveryRequest, Tick
from streams.policy import Policy

log = logging.getLogger("connector_recovery.worker")


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
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.topics = topics
        self.counters = counters
        self.status_url = status_url
        self.audit_codec = registry.codec("AuditEvent")
        self.input_codecs = {  # graces: graces.py
            "Tick": registry.codec("Tick"),
            "OutageSignal": registry.codec("OutageSignal"),
        }
        self.request_codec = registry.codec("RecoveryRequest")
        self.notification_codec = registry.codec("NotificationRequest")
        self.result_codec = registry.codec("RecoveryResult")
        self.notification_result_codec = registry.codec("NotificationResult")
        self.checkpoint_codec = registry.codec("AuditCheckpoint")
        self._session: aiohttp.ClientSession | None = None

    # -- a batch's outputs ------------------------------------------------------------------
    async def send_outputs(self, outputs: Outputs, checkpoints: AuditCheckpoints) -> None:
        """Commands first, then events, each awaited until the broker holds it: an event in
        the log implies its commands are too. The events' offsets move the checkpoints.
        Outage signals go with the commands: to the inputs topic, on the outage key's
        partition (docs/outages.md)."""
        source = self.settings.event_source
        sent = []
        if outputs.signals:
            inputs, signal_codec = self.topics["inputs"], self.input_codecs["OutageSignal"]
            partitions = self.settings.partitions
            for signal in outputs.signals:
                key = signal.connector_id.encode()
                sent.append(
                    await inputs.send(
                        key=key,
                        value=signal_codec.encode(input_record(signal)),
                        partition=partition_of(key, partitions),
                    )
                )
        for key, command in outputs.commands:
            if isinstance(command, RecoveryRequest):
                topic, codec = self.topics["requests"], self.request_codec
            else:
                topic, codec = self.topics["notifications"], self.notification_codec
            sent.append(
                await topic.send(
                    key=key,
                    value=codec.encode(command.model_dump(mode="json")),
                    headers=cloudevents.headers(command, source, codec.schema.fingerprint),
                )
            )
        await asyncio.gather(*sent)
        audit = self.topics["audit"]
        audit_fingerprint = self.audit_codec.schema.fingerprint
        audit_sent = [
            await audit.send(
                key=key,
                value=self.audit_codec.encode(audit_record(event)),
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
    async def send_tick(self, tick: Tick) -> None:
        await self.topics["inputs"].send(
            key=tick.connector_id.encode(),
            value=self.input_codecs["Tick"].encode(input_record(tick)),
        )

    # -- executors and notifier ---------------------------------------------------------------
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def execute_stream(self, stream: Any) -> None:
        async for event in stream.events():
            try:
                request = RecoveryRequest.model_validate(self.request_codec.decode(event.value))
            except (AvroCodecError, ValidationError) as error:
                await self._dead_letter_event(event, f"bad recovery request: {error}")
                continue
            result = await execute(self.session(), self.policy, request, now_ms)
            if result is not None:
                await self.topics["results"].send(
                    key=request.connector_id.encode(),
                    value=self.result_codec.encode(result.model_dump(mode="json")),
                )

    async def notify_stream(self, stream: Any) -> None:
        async for event in stream.events():
            try:
                request = NotificationRequest.model_validate(
                    self.notification_codec.decode(event.value)
                )
            except (AvroCodecError, ValidationError) as error:
                await self._dead_letter_event(event, f"bad notification: {error}")
                continue
            result = await deliver(
                self.session(),
                self.policy,
                request,
                now_ms,
                status_url=self.status_url(request.tenant_id),
            )
            await self.topics["inputs"].send(
                key=request.connector_id.encode(),
                value=self.notification_result_codec.encode(result.model_dump(mode="json")),
            )

    async def _dead_letter_event(self, event: Any, reason: str) -> None:
        msg = event.message
        await self.dead_letter((msg.topic, msg.partition, msg.offset), msg.key, msg.value, reason)
