"""The bulk pre-restore (agents/worker/restore.py) on the real broker: after it, Faust's own
store holds exactly the changelog's latest values, and Faust's recovery starts at the end
of what was restored, so it replays only the tail."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import TopicPartition
from faust.stores.rocksdb import Store as RocksDBStore
from faust.tables.manager import TableManager
from faust.types import TP

from agents.broker.client import reader
from agents.settings import Settings
from agents.wire.partitioning import partition_of
from agents.worker.app import WorkerApp
from agents.worker.checkpoints import CHECKPOINT_PREFIX, checkpoint_key, head_sequence
from agents.worker.restore import Restored, pre_restore
from agents.worker.statecodec import dump_state
from agents.worker.tablescan import OwnedState, scan_owned
from streams.policy import parse_policy
from streams.state import ConnectorState
from tests.kafka.harness import Namespace, run

pytestmark = pytest.mark.kafka

KEYS = [f"CONN-{i:03d}".encode() for i in range(120)]
Changelog = dict[int, dict[bytes, bytes]]


@pytest.fixture
def pipeline(ns: Namespace, tmp_path: Path) -> Iterator[WorkerApp]:
    loop = asyncio.new_event_loop()  # Faust binds the app to the current loop
    asyncio.set_event_loop(loop)
    yield WorkerApp(ns.settings().but(data_dir=tmp_path / "data"), parse_policy({}))
    loop.close()


async def create_changelog(settings: Settings, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, settings.partitions, 1, topic_configs={"cleanup.policy": "compact"})]
        )
    finally:
        await admin.close()


def table_partition(key: bytes) -> int:
    """Where the worker writes a table key: a connector's state in its connector's partition,
    an audit position in the partition it describes."""
    if key.startswith(CHECKPOINT_PREFIX):
        return int(key[len(CHECKPOINT_PREFIX) :])
    return partition_of(key, 4)


async def append(
    settings: Settings, topic: str, records: list[tuple[bytes, bytes | None]], latest: Changelog
) -> None:
    """Write `records` as the table would (see `table_partition`) and fold them into
    `latest`, the changelog's latest value per key (a tombstone removes the key)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for key, value in records:
            partition = table_partition(key)
            await producer.send(topic, key=key, value=value, partition=partition)
            if value is None:
                latest.setdefault(partition, {}).pop(key, None)
            else:
                latest.setdefault(partition, {})[key] = value
        await producer.flush()
    finally:
        await producer.stop()


def writes(rng: random.Random, count: int, generation: str) -> list[tuple[bytes, bytes | None]]:
    """Overwrites of a few keys many times over, and tombstones (some for absent keys)."""
    out: list[tuple[bytes, bytes | None]] = []
    for index in range(count):
        key = rng.choice(KEYS)
        value = None if rng.random() < 0.2 else f"{generation}-{index}".encode()
        out.append((key, value))
    return out


def ends_of(restored: list[Restored]) -> dict[int, int]:
    return {r.partition: r.end for r in restored}


def test_the_store_holds_the_latest_values_and_faust_replays_only_the_tail(
    pipeline: WorkerApp,
) -> None:
    settings, table = pipeline.settings, pipeline.table
    topic = table.changelog_topic.get_topic_name()
    rng = random.Random(12)  # noqa: S311 - a reproducible mix, not a secret
    latest: Changelog = {}
    run(create_changelog(settings, topic))
    first = writes(rng, 1_500, "a")
    run(append(settings, topic, first, latest))

    after_first = {key for keys in latest.values() for key in keys}
    restored = run(pre_restore(table, settings))
    assert [r.start for r in restored] == [0, 0, 0, 0]
    assert sum(r.records for r in restored) == len(first)

    # Written after the first restore: overwrites and tombstones of keys it restored.
    tail = writes(rng, 400, "b")
    run(append(settings, topic, tail, latest))
    deleted = after_first - {key for keys in latest.values() for key in keys}
    assert deleted, "the tail deletes keys the first restore wrote"
    again = run(pre_restore(table, settings))
    assert {r.partition: r.start for r in again} == ends_of(restored)  # only the tail is read
    assert sum(r.records for r in again) == len(tail)
    ends = ends_of(again)
    assert sum(ends.values()) == len(first) + len(tail)

    # Faust's own store, opened the way Faust opens it, holds exactly the latest values.
    store = cast(RocksDBStore, table.data)
    for partition in range(settings.partitions):
        held = dict(store._visible_items(store._db_for_partition(partition)))
        assert held == latest.get(partition, {}), f"partition {partition}"

    # And Faust's recovery starts at the last restored offset: it replays only what follows.
    recovery = cast(TableManager, pipeline.app.tables).recovery
    for partition in range(settings.partitions):
        tp = TP(topic, partition)
        assert store.persisted_offset(tp) == ends[partition] - 1
        recovery.add_active(table, tp)
        assert recovery.active_offsets[tp] == ends[partition] - 1


def test_a_new_owner_scans_only_its_partitions_databases(pipeline: WorkerApp) -> None:
    """agents/worker/tablescan.py over the restored store: the connectors of the owned
    partitions, their chain heads (none for a connector without events), and the audit
    positions, exactly as written."""
    settings, table = pipeline.settings, pipeline.table
    topic = table.changelog_topic.get_topic_name()
    owned = {0, 2}
    states: list[tuple[bytes, bytes | None]] = []
    expected = OwnedState()
    for index, key in enumerate(KEYS):
        record = ConnectorState.new(key.decode()).record._replace(
            sequence=index % 3, head_hash=f"{index:064x}"
        )
        value = dump_state(ConnectorState(record), index)
        states.append((key, value))
        partition = partition_of(key, settings.partitions)
        if partition in owned:
            expected.add(partition, key, value)
    for partition in range(settings.partitions):
        states.append((checkpoint_key(partition), str(100 + partition).encode()))
    run(create_changelog(settings, topic))
    run(append(settings, topic, states, {}))
    run(pre_restore(table, settings))

    found = run(scan_owned(table, owned, settings.partitions))

    assert found.connectors == expected.connectors
    assert found.count() == sum(partition_of(k, 4) in owned for k in KEYS)
    assert found.heads == expected.heads
    assert all(head_sequence(head) for heads in found.heads.values() for head in heads.values())
    assert found.checkpoints == {0: 100, 2: 102}


def test_a_store_open_elsewhere_is_left_to_faust(pipeline: WorkerApp) -> None:
    settings, table = pipeline.settings, pipeline.table
    topic = table.changelog_topic.get_topic_name()
    run(create_changelog(settings, topic))
    run(append(settings, topic, writes(random.Random(3), 200, "a"), {}))  # noqa: S311 - data
    store = cast(RocksDBStore, table.data)
    held = store._db_for_partition(0)  # as a second worker on the same data dir would
    restored = {r.partition: r for r in run(pre_restore(table, settings))}
    assert restored[0].records == 0
    assert held.get(store.offset_key) is None
    assert sum(r.records for r in restored.values()) == 200 - run(count(settings, topic, 0))


async def count(settings: Settings, topic: str, partition: int) -> int:
    consumer = reader(settings)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


def test_nothing_to_restore_without_a_changelog(pipeline: WorkerApp) -> None:
    assert run(pre_restore(pipeline.table, pipeline.settings)) == []


def held_by(table: Any, partitions: int) -> Changelog:
    """What Faust's own store holds per partition, opened the way Faust opens it."""
    store = cast(RocksDBStore, table.data)
    return {
        partition: dict(store._visible_items(store._db_for_partition(partition)))
        for partition in range(partitions)
    }


async def recreate_changelog(settings: Settings, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.delete_topics([topic])
        await wait_until_gone(admin, topic)
    finally:
        await admin.close()
    await create_changelog(settings, topic)


async def wait_until_gone(admin: AIOKafkaAdminClient, topic: str) -> None:
    for _ in range(300):
        if topic not in await admin.list_topics():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"topic {topic} still listed 30 s after its deletion")


async def truncate(settings: Settings, topic: str, before: dict[int, int]) -> None:
    """Delete the records before `before[partition]` (the log start offset moves there), as
    retention or an operator's kafka-delete-records would."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        # A broker deletes records of a compacted topic only with the delete policy too.
        policy = {"cleanup.policy": "compact,delete"}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, policy)])
        await admin.delete_records(
            {TopicPartition(topic, p): RecordsToDelete(offset) for p, offset in before.items()}
        )
    finally:
        await admin.close()


def test_a_store_past_the_end_of_a_recreated_changelog_is_wiped_and_rebuilt(
    pipeline: WorkerApp, caplog: pytest.LogCaptureFixture
) -> None:
    settings, table = pipeline.settings, pipeline.table
    topic = table.changelog_topic.get_topic_name()
    rng = random.Random(5)  # noqa: S311 - a reproducible mix, not a secret
    run(create_changelog(settings, topic))
    run(append(settings, topic, writes(rng, 600, "a"), {}))
    run(pre_restore(table, settings))
    run(recreate_changelog(settings, topic))
    latest: Changelog = {}
    fresh: list[tuple[bytes, bytes | None]] = [
        (key, f"b-{index}".encode()) for index, key in enumerate(KEYS[:30])
    ]
    run(append(settings, topic, fresh, latest))

    with caplog.at_level("WARNING", logger="connector_recovery.restore"):
        restored = run(pre_restore(table, settings))

    assert held_by(table, settings.partitions) == {p: latest.get(p, {}) for p in range(4)}
    assert [r.start for r in restored] == [0, 0, 0, 0]
    warnings = restore_warnings(caplog)
    assert len(warnings) == 4, warnings  # one per partition, each named
    for partition, warning in enumerate(warnings):
        assert f"partition {partition}:" in warning
        assert "past the end of the changelog" in warning


def test_a_store_behind_a_truncated_changelog_is_wiped_and_rebuilt(
    pipeline: WorkerApp, caplog: pytest.LogCaptureFixture
) -> None:
    """The records between the store's offset and the changelog's new start are gone: a
    tombstone among them must not leave its key in the store."""
    settings, table = pipeline.settings, pipeline.table
    topic = table.changelog_topic.get_topic_name()
    latest: Changelog = {}
    run(create_changelog(settings, topic))
    run(append(settings, topic, [(key, b"a") for key in KEYS], latest))
    run(pre_restore(table, settings))
    gone = [key for key in KEYS if table_partition(key) == 1][:5]
    run(append(settings, topic, [(key, None) for key in gone], latest))  # then truncated
    copy_starts = {p: run(count(settings, topic, p)) for p in range(settings.partitions)}
    # Every other key again, as a compacted changelog keeps each key's latest value.
    run(append(settings, topic, [(key, b"c") for key in KEYS if key not in gone], latest))
    run(truncate(settings, topic, copy_starts))

    with caplog.at_level("WARNING", logger="connector_recovery.restore"):
        run(pre_restore(table, settings))

    assert held_by(table, settings.partitions) == {p: latest.get(p, {}) for p in range(4)}
    warnings = restore_warnings(caplog)
    assert len(warnings) == 1, warnings  # only partition 1 lost records it had not applied
    assert "partition 1:" in warnings[0]
    assert f"the changelog now starts at {copy_starts[1]}: it was truncated" in warnings[0]


def restore_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "connector_recovery.restore" and r.levelname == "WARNING"
    ]
