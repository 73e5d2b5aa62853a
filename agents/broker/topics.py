"""The topics the worker owns: created at start-up with their configuration, and the audit
topic's configuration verified (append-only, never compacted, kept forever)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from agents.broker.client import client_options
from agents.settings import Settings

log = logging.getLogger(__name__)

AUDIT_CONFIG = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}
TOPIC_ALREADY_EXISTS = 36
NEW_TOPIC_WAIT_S = 30.0


class AuditTopicMisconfigured(RuntimeError):
    """The audit topic exists but could lose evidence (compaction or finite retention)."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def owned_topics(settings: Settings) -> list[TopicSpec]:
    t = settings.topics
    n = settings.partitions
    week = str(7 * 24 * 3600 * 1000)
    return [
        TopicSpec(t.health, n, {}),
        # The audit topic is co-partitioned with the internal inputs topic (same count).
        TopicSpec(t.audit, n, dict(AUDIT_CONFIG)),
        TopicSpec(settings.inputs_topic, n, {"retention.ms": week}),
        TopicSpec(t.dlq, 1, {"retention.ms": str(30 * 24 * 3600 * 1000)}),
        TopicSpec(t.admin, n, {}),
        TopicSpec(t.recovery_requests, n, {}),
        TopicSpec(t.recovery_results, n, {}),
        TopicSpec(t.notifications, n, {}),
        TopicSpec(t.checkpoints, 1, dict(AUDIT_CONFIG)),
        # Created here, before Faust starts, rather than by Faust: when Faust creates it, its
        # consumer can still see 0 partitions at the first table write on a loaded machine,
        # and the write fails with PartitionsMismatch.
        TopicSpec(settings.state_changelog_topic, n, {"cleanup.policy": "compact"}),
    ]


def _kafka_config(settings: Settings) -> dict[str, object]:
    return {**client_options(settings), "request_timeout_ms": 15000}


async def ensure_topics(settings: Settings) -> list[str]:
    """Create every owned topic that is missing; then verify the audit topic's config.

    Returns the names created. Raises AuditTopicMisconfigured before any processing starts.
    """
    admin = AIOKafkaAdminClient(**_kafka_config(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in owned_topics(settings) if s.name not in existing]
        created: list[str] = []
        if missing:
            response = await admin.create_topics(
                [NewTopic(s.name, s.partitions, 1, topic_configs=s.config) for s in missing]
            )
            for topic, code, message in response.topic_errors:
                if code not in (0, TOPIC_ALREADY_EXISTS):
                    raise RuntimeError(f"cannot create topic {topic}: {message} (error {code})")
                if code == 0:
                    created.append(topic)
        await _wait_for_leaders(settings, admin, created)
        for topic in (settings.topics.audit, settings.topics.checkpoints):
            await verify_audit_topic(admin, topic)
        return created
    finally:
        await admin.close()


async def prepare_worker(settings: Settings) -> str | None:
    """Before a worker starts: its topics (`ensure_topics`), and its consumer groups'
    coordinator found, so that its clients' first requests meet a broker ready for them
    (aiokafka logs a retried coordinator lookup as an ERROR). Returns the id of the Kafka
    cluster (None from a broker too old to say): the worker keys its local state by it
    (`Settings.worker_state_dir`)."""
    await ensure_topics(settings)
    admin = AIOKafkaAdminClient(**_kafka_config(settings))
    await admin.start()
    try:
        for group in (settings.app_id, settings.router_group):
            await _wait_for_coordinator(admin, group)
        return await _cluster_id(admin)
    finally:
        await admin.close()


async def cluster_id(settings: Settings) -> str | None:
    """The Kafka cluster's id (None from a broker too old to say)."""
    admin = AIOKafkaAdminClient(**_kafka_config(settings))
    await admin.start()
    try:
        return await _cluster_id(admin)
    finally:
        await admin.close()


async def _cluster_id(admin: AIOKafkaAdminClient) -> str | None:
    found = (await admin.describe_cluster()).get("cluster_id")
    return str(found) if found else None


async def _wait_for_coordinator(admin: AIOKafkaAdminClient, group: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + NEW_TOPIC_WAIT_S
    while True:
        try:
            await admin.find_coordinator(group)
            return
        except KafkaError as error:
            if not error.retriable or loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _wait_for_leaders(
    settings: Settings, admin: AIOKafkaAdminClient, topics: list[str]
) -> None:
    """Until every partition of the topics just created has a leader that serves it: a
    client that starts sooner (Faust fetching its changelog's offsets) logs
    NotLeaderForPartition errors. The metadata names a leader before that broker serves the
    partition, so this asks each leader for its end offsets too (retried silently)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + NEW_TOPIC_WAIT_S
    while topics and loop.time() < deadline:
        described = await admin.describe_topics(topics)
        if all(
            t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"]) for t in described
        ):
            break
        await asyncio.sleep(0.1)
    else:
        return
    served = [
        TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]
    ]
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None)
    await consumer.start()
    try:
        left_ms = max(1, int((deadline - loop.time()) * 1000))
        await asyncio.wait_for(consumer.end_offsets(served), left_ms / 1000)
    except (TimeoutError, KafkaError):
        pass  # a broker this slow: the clients retry, and log it
    finally:
        await consumer.stop()


async def topic_config(admin: AIOKafkaAdminClient, topic: str) -> dict[str, str]:
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    config: dict[str, str] = {}
    for response in responses:
        for resource in response.resources:
            error_code, error_message = resource[0], resource[1]
            if error_code:
                raise RuntimeError(
                    f"describe configs of {topic}: {error_message or 'no message'} "
                    f"(error {error_code})"
                )
            for entry in resource[4]:
                config[entry[0]] = entry[1]
    return config


async def verify_audit_topic(admin: AIOKafkaAdminClient, topic: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + NEW_TOPIC_WAIT_S
    while True:
        try:
            config = await topic_config(admin, topic)
            break
        except RuntimeError:
            # A topic created a moment ago may not be known to every broker component yet
            # (seconds on a loaded machine).
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.25)
    problems = [
        f"{key}={config.get(key)!r} (must be {want!r})"
        for key, want in AUDIT_CONFIG.items()
        if config.get(key) != want
    ]
    if problems:
        raise AuditTopicMisconfigured(
            f"audit topic {topic!r} could lose evidence: {', '.join(problems)}. "
            "Fix it with kafka-configs --alter, or point the worker at another topic."
        )
