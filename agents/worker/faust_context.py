"""The worker's hold on Faust beyond its public API: the current-event context and the
consumer's fetch wait. The private names themselves are reached through
agents/kafka_internals.py, the one module that names them.

Faust finds the partition of a table read or write (its changelog partition and RocksDB
column) through its current-event context variable, which a `take_events()` batch does not
set for its consumer. `acting_for` sets it to the event whose input produced the write, and
`FaustTableStore` is the processor's `StateStore` over a Faust table with it."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agents.kafka_internals import faust_current_event, faust_fetcher, set_fetch_max_wait

_CURRENT_EVENT = faust_current_event()


@contextmanager
def acting_for(event: Any) -> Iterator[None]:
    token = _CURRENT_EVENT.set(weakref.ref(event))
    try:
        yield
    finally:
        _CURRENT_EVENT.reset(token)


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
    fetcher = faust_fetcher(app)
    if fetcher is None:
        return False
    set_fetch_max_wait(fetcher, wait_ms)
    return True
