"""What a new owner needs from the state table of its partitions: the connectors of each
owned partition, their chain heads, and the audit position recorded per partition.

At a million connectors the scan through the Faust table took 24 s, half of it murmur2 in
pure Python (`partition_of` per key, to drop keys of partitions not owned) and most of the
rest Faust's per-item deserialization layers. With the RocksDB store each partition has its
own database (faust/stores/rocksdb.py: one per changelog partition, and a table write goes
to its event's partition, which is its key's), so the scan reads the owned partitions'
databases directly, raw bytes as stored (the table's serializer is "raw"), and knows each
key's partition from where it found it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from faust.stores.rocksdb import Store as RocksDBStore

from agents.kafka_internals import rocksdb_partition_items
from agents.wire.partitioning import partition_of
from agents.worker.checkpoints import Head, pack_head, partition_of_checkpoint_key
from agents.worker.statecodec import load_head
from streams.grouping import is_outage_key

SCAN_SLICE = 5_000  # rows between two turns of the event loop (~30 ms)


def _as_is(connector_id: str) -> str:
    return connector_id


@dataclass
class OwnedState:
    connectors: dict[int, set[str]] = field(default_factory=dict)  # per owned partition
    heads: dict[int, dict[str, Head]] = field(default_factory=dict)  # packed (checkpoints.py)
    checkpoints: dict[int, int] = field(default_factory=dict)  # next audit offset
    outages: dict[str, bytes] = field(default_factory=dict)  # stored states, a few per group
    # a connector id as the process already holds it (one object per id: `WorkerApp.held_id`)
    ids: Callable[[str], str] = _as_is

    def add(self, partition: int, key: bytes, value: bytes) -> None:
        checkpointed = partition_of_checkpoint_key(key)
        if checkpointed is not None:
            self.checkpoints[checkpointed] = int(value)
            return
        connector_id = self.ids(key.decode())
        if is_outage_key(connector_id):  # no heartbeat to grace; maybe releases to pace
            self.outages[connector_id] = value
        else:
            self.connectors.setdefault(partition, set()).add(connector_id)
        sequence, head_hash = load_head(value)
        if sequence:
            self.heads.setdefault(partition, {})[connector_id] = pack_head(sequence, head_hash)

    def count(self) -> int:
        return sum(len(connectors) for connectors in self.connectors.values())


async def scan_owned(
    table: Any, owned: set[int], partitions: int, ids: Callable[[str], str] = _as_is
) -> OwnedState:
    """`table`: the Faust table of connector states (bytes keys and values). The event
    loop gets a turn every SCAN_SLICE rows: a million rows took 6 s."""
    found = OwnedState(ids=ids)
    store = table.data
    if isinstance(store, RocksDBStore):
        for partition in sorted(owned):
            # Faust opened it on assignment; its offset key is left out.
            for row, (key, value) in enumerate(rocksdb_partition_items(store, partition), 1):
                found.add(partition, key, value)
                if not row % SCAN_SLICE:
                    await asyncio.sleep(0)
        return found
    items: Iterable[tuple[bytes, bytes]] = table.items()
    for row, (key, value) in enumerate(items, 1):
        checkpointed = partition_of_checkpoint_key(key)
        partition = partition_of(key, partitions) if checkpointed is None else checkpointed
        if partition in owned:  # else a standby copy: its owner watches it
            found.add(partition, key, value)
        if not row % SCAN_SLICE:
            await asyncio.sleep(0)
    return found
