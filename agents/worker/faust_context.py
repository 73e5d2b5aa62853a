"""The one place that uses Faust's private API: the current-event context variable, and
its consumer's fetch wait.

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


# Faust builds its consumer with fetch_max_wait_ms=1500 and no setting to change it. While
# the records of one partition wait to be consumed, aiokafka leaves that partition out of
# the next fetch, which then long-polls the others (nothing new on them) for the whole wait:
# an input arriving meanwhile waits up to 1.5 s (P2's tail, BENCHMARKS.md).
FETCH_MAX_WAIT_MS = 50


def shorten_fetch_wait(app: Any, wait_ms: int = FETCH_MAX_WAIT_MS) -> bool:
    """Set the fetch wait of the app's started consumer; False while it has none yet."""
    consumer = app.consumer._thread._consumer  # aiokafka's AIOKafkaConsumer, once started
    fetcher = None if consumer is None else getattr(consumer, "_fetcher", None)
    if fetcher is None:
        return False
    fetcher._fetch_max_wait_ms = wait_ms
    return True
