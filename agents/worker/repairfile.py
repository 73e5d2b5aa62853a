"""States crash repair folded in a process of its own (repair_process.py), on disk until the
worker writes them to its table: one file per inputs partition, of (key, stored state)
frames, read a chunk at a time. The worker holds none of them in memory (a first start
on 10 million events repairs 300,000), and none is ever needed again once written: a start
that finds this folder clears it (the log is read again)."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

_FRAME = struct.Struct(">II")  # key length, value length


def write_states(path: Path, states: Iterable[tuple[bytes, bytes]]) -> int:
    """(key, stored bytes) frames into `path`: how many."""
    count = 0
    with path.open("wb") as out:
        for key, value in states:
            out.write(_FRAME.pack(len(key), len(value)) + key + value)
            count += 1
    return count


class RepairFile:
    """A partition's repaired states, in the order they were written, a chunk at a time."""

    def __init__(self, path: Path, count: int) -> None:
        self.path = path
        self.remaining = count
        self._file: BinaryIO | None = None
        self._rest: dict[bytes, bytes] | None = None

    def chunk(self, size: int) -> list[tuple[bytes, bytes]]:
        """The next `size` (key, stored bytes), fewer at the end; [] once all were read."""
        if self._rest is not None:
            keys = list(self._rest)[:size]
            taken = [(key, self._rest.pop(key)) for key in keys]
        else:
            taken = []
            for _ in range(min(size, self.remaining)):
                taken.append(self._next())
        self.remaining -= len(taken)
        if not self.remaining:
            self.close()
        return taken

    def get(self, key: bytes) -> bytes | None:
        """A state not yet read out by `chunk`. The worker writes a partition's repaired
        states before it decides for any of its connectors, so this reads the rest of the
        file into memory only if that ever changes: correct, not cheap."""
        if self._rest is None:
            self._rest = dict(self._next() for _ in range(self.remaining))
            self._close_file()
        return self._rest.get(key)

    def close(self) -> None:
        self._close_file()
        self.path.unlink(missing_ok=True)

    def _next(self) -> tuple[bytes, bytes]:
        if self._file is None:
            self._file = self.path.open("rb")
        header = self._file.read(_FRAME.size)
        if len(header) < _FRAME.size:
            raise ValueError(f"{self.path}: ends {self.remaining} states early")
        key_length, value_length = _FRAME.unpack(header)
        key = self._file.read(key_length)
        value = self._file.read(value_length)
        if len(value) < value_length:
            raise ValueError(f"{self.path}: ends inside a state")
        return key, value

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
