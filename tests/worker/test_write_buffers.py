"""The state table's memtables flushed once their writes stop (agents/worker/writebuffers.py):
which partitions a check flushes, and the flush itself on a real Faust RocksDB store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import faust

from agents.kafka_internals import rocksdb_flush, rocksdb_memtable_bytes, rocksdb_partition_get
from agents.worker.faust_context import FaustTableStore
from agents.worker.writebuffers import IdleWriteBuffers

MIB = 1 << 20


def test_a_partition_is_flushed_once_its_memtables_stop_growing() -> None:
    buffers = IdleWriteBuffers(flush_from=MIB)
    assert buffers.due({0: 2 * MIB, 1: 3 * MIB}) == []  # first seen: may still be writing
    assert buffers.due({0: 4 * MIB, 1: 3 * MIB}) == [1]  # 0 grew, 1 did not
    assert buffers.flushed == 1
    assert buffers.due({0: 4 * MIB, 1: 3 * MIB}) == [0]  # 1's flush still running: not again
    assert buffers.due({0: 0, 1: 0}) == []
    assert buffers.flushed == 0


def test_small_or_growing_buffers_are_left_alone() -> None:
    buffers = IdleWriteBuffers(flush_from=MIB)
    for _ in range(3):
        assert buffers.due({0: MIB - 1}) == []  # idle, but below the floor
    for size in range(2 * MIB, 10 * MIB, MIB):
        assert buffers.due({0: size}) == []  # a worker writing steadily keeps its buffers


def test_a_partition_a_rebalance_closed_is_forgotten() -> None:
    buffers = IdleWriteBuffers(flush_from=MIB)
    buffers.due({0: 2 * MIB, 1: 2 * MIB})
    assert buffers.due({1: 2 * MIB}) == [1]
    assert buffers.due({0: 2 * MIB, 1: 0}) == []  # 0 is new again: seen once first


def test_the_flush_empties_a_real_stores_memtables_and_keeps_its_data(tmp_path: Path) -> None:
    asyncio.run(_flush_a_real_store(tmp_path))


async def _flush_a_real_store(tmp_path: Path) -> None:
    """In a running loop, as in a worker: Faust's table needs one."""
    app = faust.App("write-buffers", store="rocksdb://", datadir=str(tmp_path))
    table = app.Table("states", partitions=2)
    writes, store = FaustTableStore(table, "inputs"), table.data
    for index in range(20_000):
        writes.put(f"C-{index}".encode(), b"x" * 100, partition=1)
    held = rocksdb_memtable_bytes(store)
    assert held[1] > MIB
    rocksdb_flush(store, 1)
    rocksdb_flush(store, 7)  # a partition not (or no longer) open: nothing to do
    deadline = time.monotonic() + 30
    while rocksdb_memtable_bytes(store)[1] > held[1] // 10:
        assert time.monotonic() < deadline, "the flush never emptied the memtables"
        await asyncio.sleep(0.01)
    assert rocksdb_partition_get(store, 1, b"C-19999") == b"x" * 100
