"""Issue 21, item 3: local state is a cache of the changelog. A worker whose local store
does not fit its changelog (another cluster; the changelog re-created; the changelog
truncated past the store) logs one WARNING per partition naming it and why, wipes that
partition's store and rebuilds it from the changelog; it never crashes on its leftovers."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Callable, Iterator

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import TopicPartition

from agents.broker.local import Broker
from agents.wire.partitioning import partition_of
from streams.models import AuditEvent, EventType
from tests.kafka.harness import (
    Namespace,
    Worker,
    free_broker_port,
    read_audit,
    read_records,
    run,
    wait_caught_up,
    wait_for_audit,
)

pytestmark = pytest.mark.kafka

FAILED = "SAP-1"
LOUD = re.compile(r"\[(ERROR|CRITICAL)\]|Traceback")
STORE_WARNING = re.compile(r"connector-state partition (\d+): the local store does not fit")


@pytest.fixture
def cluster_b() -> Iterator[Broker]:
    """A second, fresh Kafka cluster of this test's own."""
    broker = Broker(free_broker_port())
    shutil.rmtree(broker.data, ignore_errors=True)
    broker.up(timeout_s=180)
    yield broker
    broker.down()
    shutil.rmtree(broker.data, ignore_errors=True)


def publish(ns: Namespace, connector: str, status: str, *extra: str) -> None:
    result = ns.cli("publish", "--connector", connector, "--status", status, *extra)
    assert result.returncode == 0, result.stderr


def open_incident(ns: Namespace, connector: str) -> None:
    publish(ns, connector, "unhealthy", "--failure", "auth", "--not-retryable")
    wait_for_audit(ns, has(connector, EventType.INCIDENT_OPENED), 60, "the incident")


def has(connector: str, kind: EventType) -> Callable[[list[AuditEvent]], bool]:
    return lambda events: any(e.connector_id == connector and e.type is kind for e in events)


def events_of(ns: Namespace, connector: str) -> list[AuditEvent]:
    return [e for e in read_audit(ns.bootstrap, ns.topics.audit) if e.connector_id == connector]


def store_warnings(worker: Worker) -> list[int]:
    """The partitions the last start's store WARNINGs name, one entry per line."""
    return [int(m.group(1)) for line in worker.lines if (m := STORE_WARNING.search(line))]


def assert_quiet(worker: Worker) -> None:
    loud = [line for line in worker.lines if LOUD.search(line)]
    assert loud == [], "\n".join(loud)


def test_the_same_data_dir_on_another_cluster_starts_fresh(
    ns: Namespace, cluster_b: Broker, workers: list[Worker]
) -> None:
    on_a = Worker(ns)
    workers.append(on_a)
    on_a.start()
    open_incident(ns, FAILED)
    assert on_a.stop() == 0

    # The same worker (app id, topics, data dir), pointed at a fresh cluster.
    ns_b = Namespace(cluster_b.bootstrap, ns.tmp, tag=ns.tag)
    on_b = Worker(ns_b, name="b", data_dir=on_a.data_dir)
    workers.append(on_b)
    on_b.start()  # Faust's ConsistencyError would end it before 'ready'
    publish(ns_b, FAILED, "healthy")
    wait_caught_up(ns_b, timeout_s=60)

    assert read_audit(ns_b.bootstrap, ns_b.topics.audit, timeout_s=2) == []  # no incident here
    assert_quiet(on_b)
    states = sorted(path.name for path in on_a.data_dir.iterdir())
    assert len(states) == 2, states  # one per cluster, A's left as it was
    assert all(name.startswith(f"{ns.app_id}@") for name in states)
    assert on_b.stop() == 0


def test_a_changelog_recreated_under_a_stopped_worker(ns: Namespace, workers: list[Worker]) -> None:
    worker = Worker(ns)
    workers.append(worker)
    worker.start()
    open_incident(ns, FAILED)
    assert worker.stop() == 0
    changelog = ns.settings().state_changelog_topic
    run(recreate(ns, changelog))

    worker.start()

    warned = store_warnings(worker)
    assert partition_of(FAILED.encode(), 4) in warned
    assert len(warned) == len(set(warned)), warned  # one per partition
    assert all("past the end of the changelog" in line for line in worker.lines if "fit" in line)
    assert_quiet(worker)
    publish(ns, "SAP-2", "unhealthy")  # the worker works on
    wait_for_audit(ns, has("SAP-2", EventType.FAILURE_DETECTED), 60, "a new detection")
    assert worker.stop() == 0


def test_a_changelog_truncated_past_a_stopped_workers_store(
    ns: Namespace, workers: list[Worker]
) -> None:
    worker = Worker(ns)
    workers.append(worker)
    worker.start()
    open_incident(ns, FAILED)
    assert worker.stop() == 0
    changelog = ns.settings().state_changelog_topic
    partition = partition_of(FAILED.encode(), 4)
    # Another owner wrote on (here: the latest value of every key again, so the changelog
    # keeps the state whole), and the records up to its writes were deleted.
    starts = rewrite_and_truncate(ns, changelog, partition)

    worker.start()

    assert store_warnings(worker) == [partition]
    assert f"the changelog now starts at {starts}: it was truncated" in worker.output()
    assert_quiet(worker)
    # The store was rebuilt from the changelog: the incident is still open.
    publish(ns, FAILED, "healthy")
    wait_for_audit(ns, has(FAILED, EventType.RECOVERY_COMPLETED), 60, "the recovery")
    assert worker.stop() == 0


async def recreate(ns: Namespace, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=ns.bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
        for _ in range(300):
            if topic not in await admin.list_topics():
                break
            await asyncio.sleep(0.1)
        await admin.create_topics(
            [NewTopic(topic, 4, 1, topic_configs={"cleanup.policy": "compact"})]
        )
    finally:
        await admin.close()


def rewrite_and_truncate(ns: Namespace, topic: str, partition: int) -> int:
    """Write the latest value of every key of `partition` twice over, then delete the
    records before the second copy: the changelog's new start, which the store is more
    than one record behind."""
    latest: dict[bytes, bytes | None] = {}
    for record in read_records(ns.bootstrap, topic):
        if record.partition == partition:
            latest[record.key] = record.value
    second: int = run(_rewrite_and_truncate(ns, topic, partition, latest))
    return second


async def _rewrite_and_truncate(
    ns: Namespace, topic: str, partition: int, latest: dict[bytes, bytes | None]
) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=ns.bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in latest.items():
            await producer.send_and_wait(topic, key=key, value=value, partition=partition)
        second: int | None = None
        for key, value in latest.items():
            sent = await producer.send_and_wait(topic, key=key, value=value, partition=partition)
            second = int(sent.offset) if second is None else second
    finally:
        await producer.stop()
    assert second is not None
    admin = AIOKafkaAdminClient(bootstrap_servers=ns.bootstrap)
    await admin.start()
    try:
        # A broker deletes records of a compacted topic only with the delete policy too.
        policy = {"cleanup.policy": "compact,delete"}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, policy)])
        await admin.delete_records({TopicPartition(topic, partition): RecordsToDelete(second)})
    finally:
        await admin.close()
    return second
