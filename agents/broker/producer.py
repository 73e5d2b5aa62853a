"""Publishing Avro single-object encoded records from the CLI (`publish`, admin commands)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from agents.broker.client import client_options
from agents.settings import Settings
from agents.wire.codec import registry
from streams.models import HealthPing, HealthStatus


def ping_from_fields(fields: dict[str, Any]) -> HealthPing:
    """A ping from loose CLI/JSONL fields: status in any case, checked_at defaults to now."""
    values = dict(fields)
    values["status"] = str(values.get("status", "")).upper()
    values.setdefault("checked_at", time.time_ns() // 1_000_000)
    if values["status"] == HealthStatus.HEALTHY:
        values.setdefault("failure", None)
    return HealthPing.model_validate(values)


def pings_from_jsonl(path: Path) -> list[HealthPing]:
    pings = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            pings.append(ping_from_fields(json.loads(line)))
        except ValueError as error:
            raise ValueError(f"{path}:{number}: {error}") from None
    return pings


async def open_producer(settings: Settings) -> AIOKafkaProducer:
    """A started producer with the project's delivery options (the caller stops it)."""
    producer = AIOKafkaProducer(
        **client_options(settings), acks="all", enable_idempotence=True, linger_ms=5
    )
    try:
        await producer.start()
    except BaseException:
        await producer.stop()  # else asyncio reports an unclosed producer after the error
        raise
    return producer


async def publish_records(
    settings: Settings, topic: str, schema: str, records: Iterable[tuple[str, dict[str, Any]]]
) -> int:
    codec = registry().codec(schema)
    producer = await open_producer(settings)
    sent = 0
    try:
        futures = []
        for key, record in records:
            futures.append(await producer.send(topic, key=key.encode(), value=codec.encode(record)))
            sent += 1
        for future in futures:
            await future
    finally:
        await producer.stop()
    return sent


async def publish_pings(settings: Settings, topic: str, pings: Iterable[HealthPing]) -> int:
    return await publish_records(
        settings, topic, "HealthPing", ((p.connector_id, p.model_dump(mode="json")) for p in pings)
    )
