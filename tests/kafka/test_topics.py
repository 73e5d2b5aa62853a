"""The worker creates its topics with their configuration and refuses an audit topic that
could lose evidence."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agents.broker.local import SERVER_PROPERTIES
from agents.broker.topics import AUDIT_CONFIG, ensure_topics, topic_config
from tests.kafka.harness import Namespace

pytestmark = pytest.mark.kafka


async def _config(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await topic_config(admin, topic)
    finally:
        await admin.close()


async def _create(bootstrap: str, topic: str, config: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 4, 1, topic_configs=config)])
    finally:
        await admin.close()


def test_audit_topic_is_created_append_only_and_kept_forever(ns: Namespace) -> None:
    created = asyncio.run(ensure_topics(ns.settings()))
    assert ns.topics.audit in created
    config = asyncio.run(_config(ns.bootstrap, ns.topics.audit))
    assert {k: config[k] for k in AUDIT_CONFIG} == AUDIT_CONFIG
    assert asyncio.run(ensure_topics(ns.settings())) == []  # idempotent


def test_the_state_changelog_exists_compacted_before_faust_starts(ns: Namespace) -> None:
    """Faust creating it itself left its consumer seeing 0 partitions at the first table
    write on a loaded machine (PartitionsMismatch, and the decider restarting mid-batch)."""
    settings = ns.settings()
    assert settings.state_changelog_topic == f"{ns.app_id}-connector-state-changelog"
    assert settings.state_changelog_topic in asyncio.run(ensure_topics(settings))
    config = asyncio.run(_config(ns.bootstrap, settings.state_changelog_topic))
    assert config["cleanup.policy"] == "compact"


@pytest.mark.parametrize(
    "bad",
    [
        {"cleanup.policy": "compact"},
        {"retention.ms": "604800000"},
        {"retention.bytes": "1073741824"},
    ],
)
def test_worker_refuses_an_audit_topic_that_could_lose_evidence(
    ns: Namespace, bad: dict[str, str]
) -> None:
    asyncio.run(_create(ns.bootstrap, ns.topics.audit, {**AUDIT_CONFIG, **bad}))
    result = ns.cli("worker", "--web-port", "0", timeout_s=60)
    assert result.returncode == 2
    key = next(iter(bad))
    assert "could lose evidence" in result.stderr
    assert key in result.stderr


def test_topic_auto_creation_is_disabled_on_the_local_broker(ns: Namespace) -> None:
    assert "auto.create.topics.enable=false" in SERVER_PROPERTIES
    published = ns.cli(
        "publish",
        "--connector",
        "X",
        "--status",
        "healthy",
        timeout_s=90,
        CR_TOPIC_PREFIX=f"{ns.prefix}nope.",
    )
    assert published.returncode != 0
