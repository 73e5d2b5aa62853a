"""The one place that uses Faust's private API: the current-event context variable.

Faust finds the partition of a table read or write (its changelog partition and RocksDB
column) through `faust.streams._current_event`, which a `take_events()` batch does not set
for its consumer. `acting_for` sets it to the event whose input produced the write, and
`FaustTableStore` is the processor's `StateStore` over a Faust table with it."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from faust.streams import _current_event


@contextmanager
def acting_for(event: Any) -> Iterator[None]:
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class FaustTableStore:
    """A `StateStore` (agents/worker/processor.py) over a Faust table: reads and writes of
    an inputs partition act for an event of that partition (`acting_for`), which the
    worker names per batch in `events`."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.events: dict[int, Any] = {}  # inputs partition -> a Faust event read from it

    def get(self, key: bytes, partition: int) -> bytes | None:
        with acting_for(self.events[partition]):
            value: bytes | None = self.table.get(key)
            return value

    def put(self, key: bytes, value: bytes, partition: int) -> None:
        with acting_for(self.events[partition]):
            self.table[key] = value
