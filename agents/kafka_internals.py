"""The one door to Faust's and aiokafka's private names: nothing else in the project names
an underscored attribute of either library. Each function says why the public API does not
do; `PRIVATE_NAMES` lists every name used here, and tests/test_kafka_internals.py checks
each still exists in the installed libraries (pinned in pyproject.toml to the tested
ranges), so an upgrade that drops one fails a test rather than a worker.

Faust is imported only where a Faust object is at hand (the worker): the command line's
broker clients use this module too and start without it.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.cluster import ClusterMetadata


class PrivateName(NamedTuple):
    """`attribute` of `owner` (a class, or a module for a module-level name), in `module`.
    `assigned_in`: for an instance attribute, the method that assigns it (None for a class
    or module attribute)."""

    module: str
    owner: str | None  # None: a module attribute
    attribute: str
    assigned_in: str | None = None


PRIVATE_NAMES = (
    PrivateName("faust.streams", None, "_current_event"),
    PrivateName("faust.transport.drivers.aiokafka", "Consumer", "_thread", "__init__"),
    PrivateName(
        "faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "_consumer", "on_start"
    ),
    PrivateName("aiokafka.consumer.consumer", "AIOKafkaConsumer", "_fetcher", "start"),
    PrivateName("aiokafka.consumer.fetcher", "Fetcher", "_fetch_max_wait_ms", "__init__"),
    PrivateName("aiokafka.consumer.consumer", "AIOKafkaConsumer", "_client", "__init__"),
    PrivateName("aiokafka.client", "AIOKafkaClient", "_metadata_update"),
    PrivateName("faust.stores.rocksdb", "Store", "_db_for_partition"),
    PrivateName("faust.stores.rocksdb", "Store", "_visible_items"),
    PrivateName("faust.stores.rocksdb", "Store", "_dbs", "__init__"),
)


# -- Faust ------------------------------------------------------------------------------------


def faust_current_event() -> ContextVar[Any]:
    """The context variable through which Faust finds the partition of a table read or
    write (its changelog partition and RocksDB column). A `take_events()` batch does not
    set it for its consumer, and Faust offers no call that does."""
    from faust import streams  # noqa: PLC0415 - Faust loads only in the worker (module doc)

    current: ContextVar[Any] = streams._current_event
    return current


def faust_fetcher(app: Any) -> Any | None:
    """aiokafka's fetcher under a Faust app's consumer (None until the consumer started):
    Faust builds its consumer with `fetch_max_wait_ms=1500` and no setting to change it."""
    consumer = app.consumer._thread._consumer  # aiokafka's AIOKafkaConsumer, once started
    return None if consumer is None else getattr(consumer, "_fetcher", None)


def set_fetch_max_wait(fetcher: Any, wait_ms: int) -> None:
    fetcher._fetch_max_wait_ms = wait_ms


def rocksdb_partition_items(store: Any, partition: int) -> Iterable[tuple[bytes, bytes]]:
    """Raw keys and values of one partition of a Faust RocksDB store (each changelog
    partition has its own database), without Faust's offset key and its per-item
    deserialization: iterating the table reads every partition through several layers."""
    items: Iterable[tuple[bytes, bytes]] = store._visible_items(store._db_for_partition(partition))
    return items


def rocksdb_partition_get(store: Any, partition: int, key: bytes) -> bytes | None:
    """One key of one partition of a Faust RocksDB store, read outside stream iteration,
    where Faust's own reads find no event to take the partition from."""
    value: bytes | None = store._db_for_partition(partition).get(key)
    return value


def rocksdb_memtable_bytes(store: Any) -> dict[int, int]:
    """Bytes in the memtables of each partition database a Faust RocksDB store has open:
    Faust offers no view of its databases."""
    return {
        partition: int(db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0)
        for partition, db in store._dbs.items()
    }


def rocksdb_flush(store: Any, partition: int) -> None:
    """Flush one partition database's memtables to disk, in RocksDB's own thread (no
    wait): Faust flushes only when it closes a database."""
    db = store._dbs.get(partition)
    if db is not None:  # closed by a rebalance since its size was read
        db.flush(wait=False)


# -- aiokafka ---------------------------------------------------------------------------------


async def refresh_metadata(consumer: AIOKafkaConsumer) -> None:
    """Fetch the cluster's metadata now: a consumer that has not subscribed knows of no
    topic until its next periodic refresh."""
    await consumer._client.force_metadata_update()


async def topic_metadata(
    producer: AIOKafkaProducer, metadata: ClusterMetadata, topics: list[str]
) -> bool:
    """Ask for the metadata of `topics` by name into `metadata` (aiokafka has no public
    call for that); False when no broker answered."""
    answered: bool = await producer.client._metadata_update(metadata, topics)
    return answered
