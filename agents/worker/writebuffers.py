"""The state table's RocksDB write buffers (memtables), flushed once their writes stop.

RocksDB flushes a memtable to disk only when it is full (`write_buffer_size`, 16 MiB per
table partition: app.py), so a burst of writes leaves it in memory for as long as the
worker runs. A first start writes every connector's state twice (the crash repair's, then
its heartbeat grace's: 646,000 writes at 10M events of history), which left 48 MiB in the
memtables of a 4-partition table, a tenth of the worker's memory, and none of it needed
once the burst was over. Every `CHECK_EVERY_S`, a partition whose memtables hold at least
`FLUSH_FROM_BYTES` and have not grown since the last check is flushed (in RocksDB's own
thread); the heap's freed pages are given back at the check after. A worker writing
steadily keeps its buffers: only a pause of one check flushes them.
"""

from __future__ import annotations

from collections.abc import Mapping

CHECK_EVERY_S = 5.0
FLUSH_FROM_BYTES = 1 << 20


class IdleWriteBuffers:
    """Which partitions to flush, from the bytes each one's memtables held at each check."""

    def __init__(self, flush_from: int = FLUSH_FROM_BYTES) -> None:
        self.flush_from = flush_from
        self._before: dict[int, int] = {}
        self.flushed = 0  # partitions flushed at the last check

    def due(self, held: Mapping[int, int]) -> list[int]:
        idle = [
            partition
            for partition, size in held.items()
            if size >= self.flush_from and self._before.get(partition) == size
        ]
        self._before = {p: (0 if p in idle else size) for p, size in held.items()}
        self.flushed = len(idle)
        return idle
