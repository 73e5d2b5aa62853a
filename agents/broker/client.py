"""Kafka client options and small read-only helpers shared by the worker, the admin CLI and
the audit tools. Every client the project opens takes its connection options from here."""

from __future__ import annotations

import logging
import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2
from aiokafka.structs import TopicPartition

from agents.settings import KafkaSecurity, Settings


def partition_of(key: bytes, partitions: int) -> int:
    """The partition aiokafka's default (Java-compatible murmur2) partitioner picks."""
    return (int(murmur2(key)) & 0x7FFFFFFF) % partitions


def ssl_context(security: KafkaSecurity) -> ssl.SSLContext | None:
    if not security.tls:
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=str(security.ca_file) if security.ca_file else None
    )
    return context


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection options for any aiokafka client (bootstrap servers and security)."""
    security = settings.security
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": security.protocol,
    }
    if security.tls:
        options["ssl_context"] = ssl_context(security)
    if security.sasl:
        options["sasl_mechanism"] = security.sasl_mechanism
        options["sasl_plain_username"] = security.username
        options["sasl_plain_password"] = security.password
    return options


def faust_credentials(settings: Settings) -> Any:
    """The same options as Faust's `broker_credentials` (None for plain connections)."""
    import faust  # noqa: PLC0415 - only the worker needs Faust

    security = settings.security
    if security.sasl:
        return faust.SASLCredentials(
            username=security.username,
            password=security.password,
            ssl_context=ssl_context(security),
            mechanism=security.sasl_mechanism,
        )
    if security.tls:
        return faust.SSLCredentials(ssl_context(security))
    return None


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


class _ConnectFailures(logging.Handler):
    """aiokafka logs why it could not connect (e.g. SASL authentication failed) and then
    raises only "Unable to bootstrap"; this keeps the last reason so errors can say it."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Unable connect to") or "Authentication" in message:
            self.last = message


_failures = _ConnectFailures()


def remember_connect_failures() -> None:
    logger = logging.getLogger("aiokafka")
    if _failures not in logger.handlers:
        logger.addHandler(_failures)


def describe(error: BaseException) -> str:
    """One line for a user: the error, and aiokafka's reason when it hid one."""
    text = f"{type(error).__name__}: {error}"
    if _failures.last and _failures.last not in text:
        text += f" ({_failures.last})"
    return text
