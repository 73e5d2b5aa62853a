"""Kafka client options and small read-only helpers shared by the worker, the admin CLI and
the audit tools. Every client the project opens takes its connection options from here."""

from __future__ import annotations

import logging
import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import TopicPartition

from agents.kafka_internals import refresh_metadata
from agents.settings import KafkaSecurity, Settings


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


BOUNDED_FETCH_WAIT_MS = 10


def reader(
    settings: Settings, bounded: bool = False, fetch_max_bytes: int | None = None
) -> AIOKafkaConsumer:
    """A consumer in no group: it assigns partitions itself and never commits. A `bounded`
    reader reads up to end offsets it took beforehand, so it has nothing to long-poll for:
    a fetch left waiting at an end (for 500 ms by default) would hold up the requests queued
    behind it on the connection, such as the next seek. `fetch_max_bytes` bounds what it
    holds fetched ahead (aiokafka's default, 50 MiB, is a long history's reader's memory)."""
    limits: dict[str, int] = {}
    if fetch_max_bytes is not None:
        limits = {
            "fetch_max_bytes": fetch_max_bytes,
            "max_partition_fetch_bytes": max(1 << 20, fetch_max_bytes // 4),
        }
    return AIOKafkaConsumer(
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **({"fetch_max_wait_ms": BOUNDED_FETCH_WAIT_MS} if bounded else {}),
        **limits,
    )


async def start_client(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    """`client.start()`, stopping the client when that fails: one left half-started warns
    "Unclosed AIOKafka..." on the terminal after the command's error line."""
    try:
        await client.start()
    except BaseException:
        await client.stop()
        raise


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Every partition of `topic` (empty if it does not exist)."""
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await refresh_metadata(consumer)
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
        if _is_connect_failure(message):
            self.last = message


def _is_connect_failure(message: str) -> bool:
    return message.startswith("Unable connect to") or "Authentication" in message


class _HideConnectFailures(logging.Filter):
    """The command's own error line says what aiokafka's connect failures said."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith("aiokafka") and _is_connect_failure(record.getMessage()))


_failures = _ConnectFailures()
_hide = _HideConnectFailures()


def remember_connect_failures() -> None:
    logger = logging.getLogger("aiokafka")
    if _failures not in logger.handlers:
        logger.addHandler(_failures)


def hide_reported_connect_failures() -> None:
    """Keep aiokafka's connect failures off the terminal: `describe` and `no_broker` put
    their reason into the one error line a command prints."""
    for handler in logging.getLogger().handlers:
        if _hide not in handler.filters:
            handler.addFilter(_hide)


def no_broker(error: BaseException, bootstrap: str) -> str:
    """One line for a client that could not connect: nothing answers, or who we are was
    refused (then aiokafka's reason is the news)."""
    if _failures.last and "Authentication" in _failures.last:
        return describe(error)
    return f"no Kafka broker at {bootstrap} (start one with: connector-recovery kafka up)"


def describe(error: BaseException) -> str:
    """One line for a user: the error, and aiokafka's reason when it hid one."""
    text = f"{type(error).__name__}: {error}"
    if _failures.last and _failures.last not in text:
        text += f" ({_failures.last})"
    return text
