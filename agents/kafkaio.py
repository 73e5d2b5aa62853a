"""Kafka client options and small read-only helpers shared by the worker, the admin CLI and
the audit tools. Every client the project opens takes its connection options from here."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from agents.settings import Settings


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection options for any aiokafka client (bootstrap servers and security)."""
    return {"bootstrap_servers": settings.bootstrap_servers}


def reader(settings: Settings) -> AIOKafkaConsumer:
    """A consumer in no group: it assigns partitions itself and never commits."""
    return AIOKafkaConsumer(
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Every partition of `topic` (empty if it does not exist)."""
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(partitions)]
