"""Connector timelines on demand: where each audit event of a connector is in the topic
(partition, offset), kept in a RocksDB index on disk beside the views' snapshot, so a
timeline is read from the topic when someone opens it and no event is held in memory.

Keys are the connector id (length-prefixed) and the event's sequence, big-endian, so a
connector's events are adjacent and ordered; the newest are found by one seek backwards.
Writes are batched and flushed before every snapshot: the index always covers at least what
the snapshot holds, and re-folding the tail after a restart writes the same entries again.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import rocksdict

_SEQUENCE = struct.Struct(">Q")
_WHERE = struct.Struct(">iq")
_NEWEST = b"\xff" * _SEQUENCE.size
FLUSH_EVERY = 20_000


def _options() -> rocksdict.Options:
    """Small memtables: the index is written in batches and read a connector at a time, and
    RocksDB's default (64 MiB each, two of them) would be most of the views' memory."""
    options = rocksdict.Options(raw_mode=True)
    options.set_write_buffer_size(8 << 20)
    options.set_max_write_buffer_number(2)
    return options


def _prefix(connector_id: str) -> bytes:
    name = connector_id.encode()
    return len(name).to_bytes(2, "big") + name


class TimelineIndex:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = rocksdict.Rdict(str(path), _options())
        self._batch = rocksdict.WriteBatch(raw_mode=True)
        self._pending = 0

    def add(self, connector_id: str, sequence: int, partition: int, offset: int) -> None:
        self._batch.put(
            _prefix(connector_id) + _SEQUENCE.pack(sequence), _WHERE.pack(partition, offset)
        )
        self._pending += 1
        if self._pending >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._db.write(self._batch)
            self._batch = rocksdict.WriteBatch(raw_mode=True)
            self._pending = 0

    def newest(self, connector_id: str, limit: int) -> list[tuple[int, int, int]]:
        """(sequence, partition, offset) of the connector's newest `limit` events, newest
        first."""
        self.flush()
        prefix = _prefix(connector_id)
        found: list[tuple[int, int, int]] = []
        iterator = self._db.iter()
        iterator.seek_for_prev(prefix + _NEWEST)
        while len(found) < limit and iterator.valid():
            key = iterator.key()
            if not key.startswith(prefix) or len(key) != len(prefix) + _SEQUENCE.size:
                break
            (sequence,) = _SEQUENCE.unpack_from(key, len(prefix))
            partition, offset = _WHERE.unpack(iterator.value())
            found.append((sequence, partition, offset))
            iterator.prev()
        return found

    def clear(self) -> None:
        """Every entry gone (the views start from the beginning of the topic)."""
        self._db.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self._db = rocksdict.Rdict(str(self.path), _options())
        self._batch = rocksdict.WriteBatch(raw_mode=True)
        self._pending = 0

    def close(self) -> None:
        self.flush()
        self._db.close()
