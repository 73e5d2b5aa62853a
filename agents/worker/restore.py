"""Bulk pre-restore: the state table's changelog into Faust's own RocksDB files, before
Faust opens them.

Faust restores a table one changelog record at a time, through its stream machinery (a
Task and a `wait_first` per record in faust/tables/recovery.py): about 3,600 records/s on
our machine, 275 s for a million connectors, and no setting changes that. A plain consumer
reads the same partitions at ~240,000 records/s. So before the worker joins its group,
this reads every changelog partition from where the local store stops to the end of the
log, applies it in RocksDB write batches exactly as Faust's `apply_changelog_batch` would
(a put per value, a delete per tombstone, raw bytes both), and records the last applied
offset under Faust's own offset key, in the same batch. Faust's recovery seeks to that
offset and replays only what was written after it (faust/tables/recovery.py `_add`,
`_build_offsets`).

Every batch is atomic with its offset, so a worker killed mid-restore leaves a store that
is consistent up to the offset it recorded; the next start carries on from there.

All changelog partitions are restored, not only the ones this worker will own: the
assignment is not known before joining, and a partition this worker gets as a standby (or
later, on a takeover) then needs only its tail as well.

The local store is a cache of the changelog. When a partition's persisted offset does not
fit its changelog (past its end: the topic was re-created, or the store is another
cluster's; before its start: the changelog was truncated past it, and what was written in
between is gone), the partition's store is wiped and rebuilt from the changelog, as Kafka
Streams does with a corrupted task. Faust would raise `ConsistencyError` for the first
(faust/tables/recovery.py) and silently read on from the changelog's start for the second.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faust
import rocksdict
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from faust.stores.rocksdb import Store as RocksDBStore

from agents.broker.client import client_options, topic_partitions
from agents.settings import Settings

log = logging.getLogger("connector_recovery.restore")

# Large fetches: the changelog is read once, front to back, as fast as the broker serves it.
FETCH_MAX_BYTES = 64 << 20
PARTITION_FETCH_MAX_BYTES = 16 << 20


@dataclass(frozen=True)
class Restored:
    """What one changelog partition got: records in offsets [start, end) were read."""

    partition: int
    start: int
    end: int
    records: int


async def pre_restore(table: Any, settings: Settings) -> list[Restored]:
    """Bring the local RocksDB store of `table` (a Faust table) up to the end of its
    changelog. A no-op for other stores (the in-memory store has no files to fill)."""
    store = table.data
    if not isinstance(store, RocksDBStore):
        return []
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=FETCH_MAX_BYTES,
        max_partition_fetch_bytes=PARTITION_FETCH_MAX_BYTES,
    )
    await consumer.start()
    try:
        topic = table.changelog_topic_name
        tps = await topic_partitions(consumer, topic)
        if tps:
            consumer.assign(tps)
            starts = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
        else:
            starts = ends = {}
        # A local partition the changelog does not have (no topic, fewer partitions) is
        # checked against an empty log: stale if it holds anything.
        local = {
            TopicPartition(topic, partition)
            for partition in range(settings.partitions)
            if store.partition_path(partition).exists()
        }
        return [
            await _restore_partition(
                consumer, store, tp, starts.get(tp, 0), ends.get(tp, 0), table_name=table.name
            )
            for tp in sorted(set(tps) | local, key=lambda tp: tp.partition)
        ]
    finally:
        await consumer.stop()


def misfit(persisted: int, first: int, end: int) -> str | None:
    """Why a store whose last applied changelog offset is `persisted` cannot be carried on
    from a changelog partition holding offsets [first, end), or None when it can."""
    if persisted >= end:
        return (
            f"it holds changelog offsets up to {persisted}, past the end of the changelog"
            f" (next offset {end}): the topic was re-created, or the store is from another"
            " cluster"
        )
    if persisted < first - 1:
        return (
            f"it holds changelog offsets up to {persisted}, but the changelog now starts at"
            f" {first}: it was truncated, and the records in between are gone"
        )
    return None


async def _restore_partition(
    consumer: AIOKafkaConsumer,
    store: RocksDBStore,
    tp: TopicPartition,
    first: int,
    end: int,
    *,
    table_name: str,
) -> Restored:
    path = store.partition_path(tp.partition)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = store.rocksdb_options.open(path)
    except Exception as error:  # rocksdict raises a bare Exception; Faust reads its text too
        if "lock" not in str(error):
            raise
        log.warning("%s is open in another process: left to Faust's recovery", path)
        return Restored(tp.partition, first, first, 0)
    try:
        persisted = db.get(store.offset_key)
        reason = None if persisted is None else misfit(int(persisted), first, end)
        if reason is not None:
            log.warning(
                "%s partition %d: the local store does not fit %s: %s. Wiping it (%s) and"
                " rebuilding it from the changelog",
                table_name,
                tp.partition,
                tp.topic,
                reason,
                path,
            )
            db.close()
            shutil.rmtree(path)
            db = store.rocksdb_options.open(path)
            persisted = None
        start = int(persisted) + 1 if persisted is not None else first
        if start >= end:
            return Restored(tp.partition, start, start, 0)
        consumer.seek(tp, start)
        records = 0
        position = start
        while position < end:
            fetched = await consumer.getmany(tp, timeout_ms=1000)
            batch = rocksdict.WriteBatch(raw_mode=True)
            for record in fetched.get(tp, ()):
                if record.offset >= end:
                    break
                if record.key is not None:  # Faust never writes a changelog record without one
                    if record.value is None:
                        batch.delete(record.key)
                    else:
                        batch.put(record.key, record.value)
                records += 1
                position = record.offset + 1
            position = max(position, min(end, await consumer.position(tp)))
            # Faust's offset key holds the last offset applied (it seeks there and skips it).
            batch.put(store.offset_key, str(position - 1).encode())
            db.write(batch)
        return Restored(tp.partition, start, end, records)
    finally:
        db.close()


class RestoringWorker(faust.Worker):
    """A Faust worker that pre-restores every table of its app once, after logging is set
    up and before the app (and with it the consumer and the stores) starts."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        before_start: Callable[[], object] = lambda: None,
        **options: Any,
    ) -> None:
        super().__init__(app, **options)
        self.settings = settings
        self.before_start = before_start  # started on the worker's loop before the app

    async def on_execute(self) -> None:
        await super().on_execute()
        for table in self.app.tables.values():
            began = time.monotonic()
            try:
                restored = await pre_restore(table, self.settings)
            except KafkaError as error:
                # Only a shortcut: every batch written is consistent with its offset, and
                # Faust's own recovery replays the rest.
                log.warning("%s: no pre-restore (%s); Faust restores it", table.name, error)
                continue
            log.info(
                "%s: pre-restored %d changelog records in %.1fs (partition: offsets %s)",
                table.name,
                sum(r.records for r in restored),
                time.monotonic() - began,
                ", ".join(f"{r.partition}: {r.start}..{r.end}" for r in restored),
            )
        self.before_start()
