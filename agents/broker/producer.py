"""Publishing Avro single-object encoded records from the CLI (`publish`, admin commands)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.cluster import ClusterMetadata
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from pydantic import ValidationError

from agents.broker.client import client_options, start_client
from agents.kafka_internals import topic_metadata
from agents.settings import Settings
from agents.wire.codec import registry
from streams.models import HealthPing, HealthStatus


def ping_from_fields(fields: dict[str, Any]) -> HealthPing:
    """A ping from loose CLI/JSONL fields: status in any case, checked_at defaults to now.

    `failure` is free text in `schemas/health_ping.avsc`, but only an UNHEALTHY ping has one,
    and a blank one names nothing: both are refused here, before anything is sent."""
    values = dict(fields)
    values["status"] = str(values.get("status", "")).upper()
    values.setdefault("checked_at", time.time_ns() // 1_000_000)
    failure = values.get("failure")
    if failure is not None and not str(failure).strip():
        raise ValueError("failure is blank: name what failed (e.g. timeout, auth, http_503)")
    if values["status"] == HealthStatus.HEALTHY and failure is not None:
        raise ValueError(f"failure {failure!r} on a HEALTHY ping: only an UNHEALTHY ping has one")
    dependency = values.get("dependency")
    if dependency is not None and not str(dependency).strip():
        raise ValueError("dependency is blank: name it (e.g. sap-prod) or leave it out")
    try:
        return HealthPing.model_validate(values)
    except ValidationError as error:
        raise ValueError(
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        ) from None


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


async def open_producer(settings: Settings, **options: Any) -> AIOKafkaProducer:
    """A started producer with the project's delivery options, plus `options` (e.g. a
    shorter linger); the caller stops it."""
    producer = AIOKafkaProducer(
        **client_options(settings),
        **{"acks": "all", "enable_idempotence": True, "linger_ms": 5, **options},
    )
    await start_client(producer)
    return producer


class MissingTopic(RuntimeError):
    """The topic to publish to does not exist (the broker does not create topics)."""


async def require_topic(producer: AIOKafkaProducer, topic: str, bootstrap: str) -> None:
    """Before the first send: aiokafka would wait for the topic's metadata for its whole
    request timeout, logging an ERROR line a few times a second. The topic is asked for by
    name (aiokafka has no public call for that), so the broker says why it is missing:
    unknown, or not this client's to see (an ACL)."""
    metadata = ClusterMetadata()
    cluster_log = logging.getLogger("aiokafka.cluster")
    level = cluster_log.level
    cluster_log.setLevel(logging.CRITICAL)  # its "not found" ERROR line: we say it better below
    try:
        answered = await topic_metadata(producer, metadata, [topic])
    finally:
        cluster_log.setLevel(level)
    if not answered:
        raise KafkaError(f"no broker at {bootstrap} answered a metadata request")
    if topic in metadata.unauthorized_topics:
        raise TopicAuthorizationFailedError(topic)
    if topic not in metadata.topics():
        raise MissingTopic(
            f"no topic {topic!r} on {bootstrap}: a worker creates its topics when it starts "
            "(run connector-recovery worker with the same CR_TOPIC_PREFIX first)"
        )


async def publish_records(
    settings: Settings, topic: str, schema: str, records: Iterable[tuple[str, dict[str, Any]]]
) -> int:
    codec = registry().codec(schema)
    producer = await open_producer(settings)
    sent = 0
    try:
        await require_topic(producer, topic, settings.bootstrap_servers)
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
